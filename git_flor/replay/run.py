"""Carrying out a replay plan: scratch copies, child processes, and one shadow commit per run.

Each job runs the propagated old version in its own scratch directory (never
the user's tree) with ``FLOR_REPLAY`` pointing at its spec; the child writes
its hindsight records to a file there. When all jobs of a run have finished,
their records are merged and written as one shadow commit whose ``src/`` is
the propagated code that produced them — every hindsight value keeps its
provenance — and the run's note is updated. A run with a failed job is
reported and written as far as it got; other runs are unaffected.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pygit2
from pygit2.enums import FileMode

from ..runtime.replay import ReplaySpec
from ..storage.checkpoints import read_manifest, store_for
from ..storage.records import SRC_DIR, Record, RunData, decode_records
from ..storage.remote_store import ensure_payloads
from ..storage.repo import common_dir, workdir
from ..storage.shadow import commit_run
from .execute import Executor, Outcome, Task
from .materialise import materialise
from .plan import Job, Plan, Target


@dataclass
class Result:
    run: str
    shadow: str | None = None
    values: int = 0
    failures: list[str] = field(default_factory=list)


class Monitor(Protocol):
    """Shows how a replay goes (the command's progress bars); execution does not depend on it."""

    def begin(self, jobs: list[tuple[Job, Path, int]]) -> None:
        """Every job, with the file its child counts iterations in and how many it will run."""

    def end(self, key: int, job: Job, outcome: Outcome) -> None:
        """Job ``key`` (its index in ``begin``'s list) finished."""


def execute(
    repo: pygit2.Repository,
    plan: Plan,
    executor: Executor,
    monitor: Monitor | None = None,
) -> list[Result]:
    base = Path(tempfile.mkdtemp(prefix="git-flor-replay-"))
    user_root = workdir(repo)
    store = store_for(common_dir(repo))
    tasks: list[Task] = []
    where: dict[int, tuple[Target, Job, Path]] = {}
    try:
        for target in plan.targets:
            tree = _propagated_tree(repo, target)
            manifest = read_manifest(repo, target.run)
            for job in target.jobs:
                needed = _needed(manifest, job)
                if executor.local_payloads:
                    # With a shared payload store (git config flor.store), bring them here first.
                    ensure_payloads(repo, [p.sha256 for e in needed.values() for p in e["objects"].values()])
                key = len(tasks)
                scratch = base / target.run / str(key)
                materialise(repo, repo[tree].peel(pygit2.Tree), {}, user_root, scratch)
                spec = ReplaySpec(
                    run=target.run, names=job.names, mode=job.mode, epochs=job.epochs,
                    start_from=job.start_from, args=target.meta.get("args", {}), store=str(store.root),
                    out=str(scratch / ".git-flor-replay.out"), user_root=str(user_root),
                    scratch_root=str(scratch), checkpoints=needed,
                    progress=str(scratch / ".git-flor-replay.progress"),
                )
                spec_path = scratch / ".git-flor-replay.json"
                spec_path.write_text(spec.to_json())
                env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
                env.update(FLOR_REPLAY=str(spec_path), FLOR_QUIET="1")
                argv = target.meta.get("argv") or [target.meta["script"]]
                cwd = scratch / (target.meta.get("cwd") or ".")
                gpus = 1 if target.meta.get("cuda") else 0  # a cluster schedules it where a GPU is
                tasks.append(Task(key, [sys.executable, *argv], str(cwd), env, gpus=gpus))
                where[key] = (target, job, scratch)
        if monitor is not None:
            monitor.begin([(where[k][1], where[k][2] / ".git-flor-replay.progress", _length(where[k][1]))
                           for k in range(len(tasks))])
        collected: dict[str, list[Record]] = {t.run: [] for t in plan.targets}
        results = {t.run: Result(t.run) for t in plan.targets}
        started = {t.run: time.time() for t in plan.targets}
        remaining = {t.run: len(t.jobs) for t in plan.targets}
        try:
            for outcome in executor.run(tasks):
                target, job, scratch = where[outcome.key]
                out = scratch / ".git-flor-replay.out"
                if outcome.returncode == 0:
                    if out.is_file():  # absent when the script never reached a flor call
                        collected[target.run].extend(_read(out))
                else:
                    last = (outcome.stderr.strip().splitlines() or ["no output"])[-1]
                    results[target.run].failures.append(f"{job.describe()}: exit {outcome.returncode}: {last}")
                if monitor is not None:
                    monitor.end(outcome.key, job, outcome)
                remaining[target.run] -= 1
                if remaining[target.run] == 0:
                    _write_back(repo, target, collected[target.run], results[target.run], started[target.run])
        except KeyboardInterrupt:
            executor.cancel()
            for target in plan.targets:  # keep what finished
                if 0 < remaining[target.run] < len(target.jobs) and collected[target.run]:
                    results[target.run].failures.append("interrupted")
                    _write_back(repo, target, collected[target.run], results[target.run], started[target.run])
            raise
        return list(results.values())
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _length(job: Job) -> int:
    """Outer iterations the job's child will run (its progress bar's total)."""
    if job.mode == "reexec":
        return max(job.epochs) - job.start_from
    return len(job.epochs) if job.mode in ("skip", "full") else 0


def _needed(manifest: dict[int, dict[str, Any]], job: Job) -> dict[int, dict[str, Any]]:
    if job.mode == "reexec":
        keys = {job.start_from}
    elif job.mode == "skip":
        keys = {i - 1 for i in job.epochs} | set(job.epochs)
    elif job.mode == "suffix":
        keys = {max(manifest)} if manifest else set()
    else:
        keys = set()
    return {i: manifest[i] for i in keys if i in manifest}


def _read(path: Path) -> list[Record]:
    return decode_records(path.read_bytes(), origin=str(path))


def _propagated_tree(repo: pygit2.Repository, target: Target) -> pygit2.Oid:
    """The run's ``src/`` tree with the propagated files in place of the old ones."""
    tree = repo[target.shadow].peel(pygit2.Commit).tree[SRC_DIR].id
    for path, text in (target.sources or {target.meta["script"]: target.source}).items():
        tree = _replace(repo, repo[tree], path.split("/"), repo.create_blob(text.encode()))
    return tree


def _replace(repo: pygit2.Repository, tree: pygit2.Tree, path: list[str], blob: pygit2.Oid) -> pygit2.Oid:
    builder = repo.TreeBuilder(tree)
    head, rest = path[0], path[1:]
    if rest:
        builder.insert(head, _replace(repo, repo[tree[head].id], rest, blob), FileMode.TREE)
    else:
        mode = tree[head].filemode if head in tree else FileMode.BLOB
        builder.insert(head, blob, mode)
    return builder.write()


def _write_back(repo: pygit2.Repository, target: Target, records: list[Record], result: Result, started: float) -> None:
    seen: set[tuple[str, tuple[Any, ...]]] = set()
    merged: list[Record] = []
    for name, value, pos in sorted(records, key=lambda r: tuple(f[1] for f in r[2])):
        key = (name, tuple((f[0], f[1]) for f in pos))
        if key not in seen:
            seen.add(key)
            merged.append((name, value, pos))
    result.values = len(merged)
    if not merged:
        return
    meta = target.meta
    end = time.time()
    data = RunData(
        meta={
            "id": uuid.uuid4().hex[:12], "replay_of": target.run, "commit": meta.get("commit"),
            "branch": meta.get("branch"), "dirty": meta.get("dirty"),
            "tree": str(_propagated_tree(repo, target)), "script": meta.get("script"), "cwd": meta.get("cwd"),
            "argv": meta.get("argv"), "args": meta.get("args", {}), "names": target.names,
            "jobs": [{"mode": j.mode, "epochs": j.epochs, "start_from": j.start_from} for j in target.jobs],
            "start": started, "end": end, "duration": end - started,
            "status": "partial" if result.failures else "ok", "errors": result.failures,
        },
        records=merged,
    )
    result.shadow = str(commit_run(repo, data))


def describe_failures(results: list[Result]) -> list[str]:
    return [f"run {r.run}: {f}" for r in results for f in r.failures]

