"""The shadow branch: one commit per run on ``refs/flor/shadow/<clone-id>``.

A run commit's tree is ``src/`` (the working tree as the run saw it) plus the
run's records; its first parent is the previous run of this clone and its
second the user's HEAD at run start, so ``git log`` of the shadow ref reads as
a history of runs and every run keeps the code it ran reachable. The chain
starts at a parentless root commit, which is how a reader knows where the runs
end and the user's history begins.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, NamedTuple

import pygit2
from pygit2.enums import FileMode

from . import notes
from .checkpoints import write_manifest
from .records import (
    LOGS_FILE,
    LOOPS_FILE,
    RUN_FILE,
    SRC_DIR,
    UNVERIFIED_FILE,
    WITNESS_FILE,
    WITNESS_FORMAT,
    LoopTiming,
    Record,
    RunData,
    decode_records,
    dumps,
    encode_records,
)
from .refs import cas_update, shadow_ref
from .repo import clone_id, signature
from .schema import RUN_FORMAT, BadRecord, check_meta


def commit_run(repo: pygit2.Repository, data: RunData) -> pygit2.Oid:
    """Write ``data`` as a run commit on this clone's shadow ref, then its note line."""
    meta = data.meta
    meta.setdefault("format", RUN_FORMAT)
    sig = signature(repo)
    builder = repo.TreeBuilder()
    builder.insert(SRC_DIR, pygit2.Oid(hex=meta["tree"]), FileMode.TREE)
    run_json = json.dumps(meta, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    builder.insert(RUN_FILE, repo.create_blob(run_json.encode()), FileMode.BLOB)
    logs = data.logs if data.logs is not None else encode_records(data.records)
    builder.insert(LOGS_FILE, repo.create_blob(logs), FileMode.BLOB)
    builder.insert(LOOPS_FILE, repo.create_blob(dumps(data.loops).encode()), FileMode.BLOB)
    if data.unverified:
        builder.insert(UNVERIFIED_FILE, repo.create_blob(encode_records(data.unverified)), FileMode.BLOB)
    if data.fingerprints:
        witness = {"format": WITNESS_FORMAT, "fingerprints": {str(i): fp for i, fp in sorted(data.fingerprints.items())},
                   "nested": {str(i): fps for i, fps in sorted(data.nested_fps.items())}}
        builder.insert(WITNESS_FILE, repo.create_blob(dumps(witness).encode()), FileMode.BLOB)
    tree = builder.write()
    head = pygit2.Oid(hex=meta["commit"]) if meta.get("commit") else None
    message = f"flor run {meta['id']}: {meta.get('script')} ({meta.get('status')})\n"
    ref = shadow_ref(clone_id(repo))

    def build(old: pygit2.Oid | None) -> pygit2.Oid:
        if old is None:
            old = repo.create_commit(
                None, sig, sig, "git-flor shadow branch\n", repo.TreeBuilder().write(), []
            )
        parents = [old] + ([head] if head is not None else [])
        return repo.create_commit(None, sig, sig, message, tree, parents)

    if data.checkpoints:  # before the run commit: a listed run's manifest is already there
        write_manifest(repo, meta["id"], data.checkpoints)
    shadow = cas_update(repo, ref, build)
    if head is not None:
        notes.add_run_line(repo, head, note_line(data, shadow), overflow_line(repo, data))
    return shadow


def overflow_line(repo: pygit2.Repository, data: RunData) -> str:
    """What a run adds to a note that already lists :data:`.notes.INLINE_RUNS` runs.

    One line per clone (and per dirty snapshot, which the post-commit hook looks
    for when a commit captures it): the same for every further run, so written once.
    """
    line: dict[str, Any] = {notes.MORE_RUNS: shadow_ref(clone_id(repo))}
    if data.meta.get("dirty") and data.meta.get("tree"):
        line["dirty_tree"] = data.meta["tree"]
    return dumps(line)


def note_line(data: RunData, shadow: pygit2.Oid) -> str:
    meta = data.meta
    summary: dict[str, Any] = {
        "run": meta["id"],
        "shadow": str(shadow),
        "script": meta.get("script"),
        "status": meta.get("status"),
        "dirty": meta.get("dirty"),
        "start": meta.get("start"),
        "args": meta.get("args", {}),
        "final": data.final_values(),
    }
    if meta.get("replay_of"):
        summary["replay_of"] = meta["replay_of"]
    return dumps(summary)


def walk(repo: pygit2.Repository, tip: pygit2.Oid, stop: pygit2.Oid | None = None) -> Iterator[pygit2.Commit]:
    """Run commits from ``tip`` back along first parents, newest first, until ``stop`` or the root."""
    commit = repo[tip]
    while commit.parents and commit.id != stop:
        yield commit
        commit = commit.parents[0]


def read_meta(repo: pygit2.Repository, commit: pygit2.Commit) -> dict[str, Any]:
    """The run's ``run.json``, checked (:func:`.schema.check_meta`); :class:`.schema.BadRecord` if unusable."""
    if RUN_FILE not in commit.tree:
        raise BadRecord(f"no {RUN_FILE}")
    try:
        meta = json.loads(repo[commit.tree[RUN_FILE].id].data)
    except ValueError as exc:
        raise BadRecord(f"{RUN_FILE} is not JSON ({exc})") from None
    return check_meta(meta)


def read_blob(repo: pygit2.Repository, commit: pygit2.Commit, name: str) -> bytes:
    tree = commit.tree
    return repo[tree[name].id].data if name in tree else b""


def loop_timings(repo: pygit2.Repository, shadow: str) -> list[LoopTiming]:
    """The ``flor.loop`` timings of the run at shadow commit ``shadow`` (empty for a run without any)."""
    data = read_blob(repo, repo[pygit2.Oid(hex=shadow)].peel(pygit2.Commit), LOOPS_FILE)
    return json.loads(data) if data else []


def read_records(repo: pygit2.Repository, shadow: str, *, unverified: bool = False) -> list[Record]:
    """The values the run at shadow commit ``shadow`` logged (a replay's witnesses); with
    ``unverified``, a replay's values stored apart as not reproducible too."""
    commit = repo[pygit2.Oid(hex=shadow)].peel(pygit2.Commit)
    out = decode_records(read_blob(repo, commit, LOGS_FILE), origin=f"{shadow[:10]}:{LOGS_FILE}")
    if unverified:
        out += decode_records(read_blob(repo, commit, UNVERIFIED_FILE), origin=f"{shadow[:10]}:{UNVERIFIED_FILE}")
    return out


class Witness(NamedTuple):
    """A run's state fingerprints (``witness.json``): by outer-loop iteration (flat numbers), where
    its nested loops ended, and the encoding they were computed with (see ``WITNESS_FORMAT``)."""

    fingerprints: dict[int, dict[str, str]]
    nested: dict[int, list[dict[str, str]]]
    format: int = WITNESS_FORMAT


def read_witness(repo: pygit2.Repository, commit: pygit2.Commit | str) -> Witness:
    """The run's state fingerprints by outer-loop iteration, and where its nested loops ended.

    ``commit``: the run's shadow commit (or its id). Empty for runs recorded without
    them, or in an encoding this version does not know; a damaged file costs
    verification, never the run.
    """
    if isinstance(commit, str):
        commit = repo[commit].peel(pygit2.Commit)
    try:
        raw = json.loads(read_blob(repo, commit, WITNESS_FILE) or b"{}")
        fmt = raw.get("format", 1)
        if fmt not in (1, 2):
            return Witness({}, {})
        fps = {int(i): {str(k): str(v) for k, v in fp.items()} for i, fp in raw.get("fingerprints", {}).items()}
        nested = {int(i): [{str(k): str(v) for k, v in fp.items()} for fp in lst]
                  for i, lst in raw.get("nested", {}).items()}
        return Witness(fps, nested, int(fmt))
    except (ValueError, TypeError, AttributeError):
        return Witness({}, {})


def find_run(repo: pygit2.Repository, run_id: str) -> pygit2.Commit | None:
    """This clone's shadow commit of ``run_id``, if any (recovery must not duplicate runs)."""
    tip = repo.references.get(shadow_ref(clone_id(repo)))
    if tip is None:
        return None
    prefix = f"flor run {run_id}:"
    return next((c for c in walk(repo, tip.target) if c.message.startswith(prefix)), None)


def ensure_note(repo: pygit2.Repository, commit: pygit2.Commit) -> None:
    """Write the note line of a stored run again (a union: harmless when it is there)."""
    meta = read_meta(repo, commit)
    if meta.get("commit"):
        records = list(decode_records(read_blob(repo, commit, LOGS_FILE)))
        data = RunData(meta=meta, records=records)
        notes.add_run_line(repo, pygit2.Oid(hex=meta["commit"]), note_line(data, commit.id),
                           overflow_line(repo, data))
