"""Replay results in git: one shadow commit per replayed run, the code that produced them as ``src/``.

A replay's hindsight values are stored like a run (``run.json`` + ``logs.jsonl``
on this clone's shadow ref, a note line on the user's commit) with
``replay_of`` naming the run they belong to, so the query index files them
under that run. Its ``src/`` is the run's snapshot with the propagated files in
place: every hindsight value keeps the exact code that made it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import pygit2

from .records import Record, RunData
from .shadow import commit_run


@dataclass
class ReplayResult:
    """What one replay of one run produced, ready to be written back."""

    replay_of: str  # the run replayed
    meta: dict[str, Any]  # that run's ``run.json``
    tree: str  # the propagated source tree the values came from (a git tree id)
    names: list[str]  # the statements requested
    #: how it was replayed, per job: {"mode", "epochs", "start_from", "verified_by", "status", "fallbacks"}
    jobs: list[dict[str, Any]]
    records: list[Record]  # the hindsight values, one per (name, loop position)
    start: float
    end: float
    errors: list[str] = field(default_factory=list)  # failed jobs: the result is partial
    #: values whose job re-ran from the start without reproducing the original (not deterministic)
    unverified: list[Record] = field(default_factory=list)
    #: how many of the original's recorded values and fingerprints the replay reproduced
    verified_by: dict[str, int] = field(default_factory=dict)


def commit_replay(repo: pygit2.Repository, result: ReplayResult) -> str:
    """Write ``result`` as a shadow commit (and its note line); returns the commit id."""
    meta = result.meta
    data = RunData(
        meta={
            "id": uuid.uuid4().hex[:12], "replay_of": result.replay_of, "commit": meta.get("commit"),
            "branch": meta.get("branch"), "dirty": meta.get("dirty"),
            "tree": result.tree, "script": meta.get("script"), "cwd": meta.get("cwd"),
            "argv": meta.get("argv"), "args": meta.get("args", {}), "names": result.names,
            "jobs": result.jobs, "verified_by": result.verified_by,
            "start": result.start, "end": result.end, "duration": result.end - result.start,
            "status": "partial" if result.errors else "ok", "errors": result.errors,
        },
        records=result.records,
        unverified=result.unverified,
    )
    return str(commit_run(repo, data))
