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

import json
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

from ..runtime.replay import DIVERGED, ReplaySpec
from ..storage.checkpoints import read_manifest, store_for
from ..storage.records import SRC_DIR, Record, RunData, decode_records
from ..storage.remote_store import ensure_payloads
from ..storage.repo import common_dir, workdir
from ..storage.shadow import commit_run
from . import verify
from .execute import Executor, Outcome, Task
from .guard import guard
from .materialise import materialise
from .plan import Job, Plan, Target


@dataclass
class Result:
    run: str
    shadow: str | None = None
    values: int = 0
    failures: list[str] = field(default_factory=list)
    #: witnesses that agreed: the original's records recomputed, fingerprints matched
    checked_values: int = 0
    checked_fps: int = 0
    #: segments re-planned because a witness disagreed (why, per fallback)
    fallbacks: list[str] = field(default_factory=list)
    #: why values from the start were not reproducible (the script is not deterministic)
    unverified: list[str] = field(default_factory=list)
    unverified_values: int = 0
    #: what each job did, for the replay commit's provenance
    jobs: list[dict[str, Any]] = field(default_factory=list)


class Monitor(Protocol):
    """Shows how a replay goes (the command's progress bars); execution does not depend on it."""

    def begin(self, jobs: list[tuple[Job, Path, int]]) -> None:
        """Every job of a round, with the file its child counts iterations in and how many it will run."""

    def end(self, key: int, job: Job, outcome: Outcome) -> None:
        """Job ``key`` (its index in this round's ``begin`` list) finished."""


#: Rounds of fallbacks at most: skip → re-execution from a checkpoint → from the start.
MAX_ROUNDS = 4


def execute(
    repo: pygit2.Repository,
    plan: Plan,
    executor: Executor,
    monitor: Monitor | None = None,
) -> list[Result]:
    """Run every job; re-plan the ones whose witnesses disagree; write each run back once."""
    base = Path(tempfile.mkdtemp(prefix="git-flor-replay-"))
    collected: dict[str, list[tuple[Record, bool]]] = {t.run: [] for t in plan.targets}
    results = {t.run: Result(t.run) for t in plan.targets}
    started = {t.run: time.time() for t in plan.targets}
    remaining = {t.run: len(t.jobs) for t in plan.targets}
    pending = [(t, j) for t in plan.targets for j in t.jobs]
    rounds = 0
    try:
        while pending:
            rounds += 1
            tasks, where = _prepare(repo, pending, base / str(rounds))
            if monitor is not None:
                monitor.begin([(where[k][1], where[k][2] / PROGRESS, _length(where[k][1]))
                               for k in range(len(tasks))])
            pending = []
            try:
                for outcome in executor.run(tasks):
                    target, job, scratch = where[outcome.key]
                    status = _status(scratch)
                    result = results[target.run]
                    if monitor is not None:
                        monitor.end(outcome.key, job, outcome)
                    diverged = status.get("diverged") if outcome.returncode == DIVERGED else None
                    if diverged and job.strict and rounds < MAX_ROUNDS:
                        pending.append((target, _fall_back(target, job, diverged, result)))
                        continue
                    _collect(job, outcome, status, scratch, collected[target.run], result)
                    remaining[target.run] -= 1
                    if remaining[target.run] == 0:
                        _write_back(repo, target, collected[target.run], result, started[target.run])
            except KeyboardInterrupt:
                executor.cancel()
                for target in plan.targets:  # keep what finished
                    if remaining[target.run] > 0 and collected[target.run]:
                        results[target.run].failures.append("interrupted")
                        _write_back(repo, target, collected[target.run], results[target.run], started[target.run])
                raise
        return list(results.values())
    finally:
        shutil.rmtree(base, ignore_errors=True)


OUT, SPEC, PROGRESS, STATUS = (".git-flor-replay.out", ".git-flor-replay.json", ".git-flor-replay.progress",
                               ".git-flor-replay.status")


def _prepare(
    repo: pygit2.Repository, jobs: list[tuple[Target, Job]], base: Path
) -> tuple[list[Task], dict[int, tuple[Target, Job, Path]]]:
    """Materialise a scratch copy and write a spec per job: the tasks an executor runs."""
    user_root = workdir(repo)
    store = store_for(common_dir(repo))
    tasks: list[Task] = []
    where: dict[int, tuple[Target, Job, Path]] = {}
    trees: dict[str, pygit2.Oid] = {}
    manifests: dict[str, dict[int, dict[str, Any]]] = {}
    for target, job in jobs:
        if target.run not in trees:
            trees[target.run] = _propagated_tree(repo, target, guarded=True)
            manifests[target.run] = read_manifest(repo, target.run)
        needed = _needed(manifests[target.run], job)
        # With a shared payload store (git config flor.store), bring them here first.
        ensure_payloads(repo, [p.sha256 for e in needed.values() for p in e["objects"].values()])
        key = len(tasks)
        scratch = base / target.run / str(key)
        materialise(repo, repo[trees[target.run]].peel(pygit2.Tree), {}, user_root, scratch)
        w = target.witnesses(job)
        spec = ReplaySpec(
            run=target.run, names=job.names, mode=job.mode, epochs=job.epochs,
            start_from=job.start_from, args=target.meta.get("args", {}), store=str(store.root),
            out=str(scratch / OUT), user_root=str(user_root),
            scratch_root=str(scratch), checkpoints=needed, progress=str(scratch / PROGRESS),
            expect_records=w.records, expect_fps=w.fingerprints, strict=job.strict,
            status=str(scratch / STATUS), recorded_names=sorted({r[0] for r in target.recorded}),
            expect_nested=w.nested, skip_ignore=job.skip_ignore,
        )
        spec_path = scratch / SPEC
        spec_path.write_text(spec.to_json())
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
        env.update(FLOR_REPLAY=str(spec_path), FLOR_QUIET="1")
        argv = target.meta.get("argv") or [target.meta["script"]]
        cwd = scratch / (target.meta.get("cwd") or ".")
        tasks.append(Task(key, [sys.executable, *argv], str(cwd), env))
        where[key] = (target, job, scratch)
    return tasks, where


def _status(scratch: Path) -> dict[str, Any]:
    """What the child verified (absent when it died before writing it)."""
    try:
        raw = json.loads((scratch / STATUS).read_text())
    except (OSError, ValueError):
        return {}
    return raw if isinstance(raw, dict) else {}


def _fall_back(target: Target, job: Job, diverged: dict[str, Any], result: Result) -> Job:
    """The job re-planned more conservatively after a witness disagreed (see .verify)."""
    why = f"{job.describe()}: {diverged.get('why', 'diverged')}"
    mode, start = verify.fallback(job.mode, job.epochs, job.start_from, str(diverged.get("at", "run")),
                                  target.safe)
    result.fallbacks.append(why)
    new = Job(target.run, mode, job.names, list(job.epochs), start, job.estimate, fallbacks=[*job.fallbacks, why])
    new.witnesses = target.witnesses(new).count
    return new


def _collect(
    job: Job, outcome: Outcome, status: dict[str, Any], scratch: Path,
    collected: list[tuple[Record, bool]], result: Result,
) -> None:
    """Take a finished job's records (marked verified or not) and what it says about itself."""
    unverified = status.get("unverified")
    entry: dict[str, Any] = {
        "mode": job.mode, "epochs": job.epochs, "start_from": job.start_from,
        "verified_by": {"values": int(status.get("values", 0)), "fingerprints": int(status.get("fingerprints", 0))},
        "status": "unverified" if unverified else "verified", "fallbacks": job.fallbacks,
    }
    if outcome.returncode != 0:
        last = (outcome.stderr.strip().splitlines() or ["no output"])[-1]
        result.failures.append(f"{job.describe()}: exit {outcome.returncode}: {last}")
        entry["status"] = "failed"
        result.jobs.append(entry)
        return
    out = scratch / OUT
    if out.is_file():  # absent when the script never reached a flor call
        records = _read(out)
        collected.extend((r, not unverified) for r in records)
        if unverified:
            result.unverified.append(f"{job.describe()}: {unverified}")
    result.checked_values += entry["verified_by"]["values"]
    result.checked_fps += entry["verified_by"]["fingerprints"]
    for name, error in sorted((status.get("failed") or {}).items()):
        result.failures.append(f"`{name}` raised {error} in this version (its values only)")
    if unverified:
        entry["why"] = unverified
    result.jobs.append(entry)


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


def _propagated_tree(repo: pygit2.Repository, target: Target, guarded: bool = False) -> pygit2.Oid:
    """The run's ``src/`` tree with the propagated files in place of the old ones.

    ``guarded``: as executed, each requested statement wrapped so that its failure is
    its own (see .guard); the provenance stored with the values is the unguarded code.
    """
    tree = repo[target.shadow].peel(pygit2.Commit).tree[SRC_DIR].id
    for path, text in (target.sources or {target.meta["script"]: target.source}).items():
        if guarded:
            text = guard(text, target.names)
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


def _write_back(
    repo: pygit2.Repository, target: Target, records: list[tuple[Record, bool]], result: Result, started: float
) -> None:
    """One replay commit for the run: verified values, and apart from them the unverified ones."""
    seen: set[tuple[str, tuple[Any, ...]]] = set()
    merged: list[Record] = []
    unverified: list[Record] = []
    # Verified first, so where two jobs produced a value the verified one is kept.
    for (name, value, pos), ok in sorted(records, key=lambda r: (not r[1], tuple(f[1] for f in r[0][2]))):
        key = (name, tuple((f[0], f[1]) for f in pos))
        if key not in seen:
            seen.add(key)
            (merged if ok else unverified).append((name, value, pos))
    merged.sort(key=lambda r: tuple(f[1] for f in r[2]))
    unverified.sort(key=lambda r: tuple(f[1] for f in r[2]))
    result.values = len(merged) + len(unverified)
    result.unverified_values = len(unverified)
    if not merged and not unverified:
        return
    meta = target.meta
    end = time.time()
    data = RunData(
        meta={
            "id": uuid.uuid4().hex[:12], "replay_of": target.run, "commit": meta.get("commit"),
            "branch": meta.get("branch"), "dirty": meta.get("dirty"),
            "tree": str(_propagated_tree(repo, target)), "script": meta.get("script"), "cwd": meta.get("cwd"),
            "argv": meta.get("argv"), "args": meta.get("args", {}), "names": target.names,
            "jobs": result.jobs,
            "verified_by": {"values": result.checked_values, "fingerprints": result.checked_fps},
            "start": started, "end": end, "duration": end - started,
            "status": "partial" if result.failures else "ok", "errors": result.failures,
        },
        records=merged,
        unverified=unverified,
    )
    result.shadow = str(commit_run(repo, data))


def describe_failures(results: list[Result]) -> list[str]:
    return [f"run {r.run}: {f}" for r in results for f in r.failures]

