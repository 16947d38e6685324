"""Carrying out a replay plan: a scratch copy and a child process per job, results written per run.

Each job runs the propagated old version in its own scratch directory (never
the user's tree) with ``FLOR_REPLAY`` pointing at its spec; the child writes
its hindsight records to a file there (:mod:`git_flor.runtime.replay_mode` is
the child's side). :mod:`.writeback` turns each run's records into one shadow
commit when its last job finishes; Ctrl-C stops the children and keeps what
finished.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..runtime.replay_mode import ReplaySpec
from ..storage.checkpoints import Manifest, read_manifest, store_for
from ..storage.files import SourceTree, run_snapshot
from ..storage.remote_store import ensure_payloads
from ..storage.repo import common_dir, workdir
from .executors import Executor, Outcome, Task
from .materialise import materialise
from .plan import Job, Plan, Target
from .writeback import Result, WriteBack

if TYPE_CHECKING:
    from ..storage.repo import Repository

#: Files of the parent ↔ child protocol, in the job's scratch directory.
SPEC_FILE = ".git-flor-replay.json"
OUT_FILE = ".git-flor-replay.out"
PROGRESS_FILE = ".git-flor-replay.progress"


class Monitor(Protocol):
    """Shows how a replay goes (the command's progress bars); execution does not depend on it."""

    def begin(self, jobs: list[tuple[Job, Path, int]]) -> None:
        """Every job, with the file its child counts iterations in and how many it will run."""

    def end(self, key: int, job: Job, outcome: Outcome) -> None:
        """Job ``key`` (its index in ``begin``'s list) finished."""


@dataclass(frozen=True)
class Prepared:
    """One job ready to start: its scratch copy is written and its command line made."""

    target: Target
    job: Job
    scratch: Path
    task: Task

    @property
    def out(self) -> Path:
        return self.scratch / OUT_FILE

    @property
    def progress(self) -> Path:
        return self.scratch / PROGRESS_FILE


def execute(repo: Repository, plan: Plan, executor: Executor, monitor: Monitor | None = None) -> list[Result]:
    """Run every job of ``plan`` on ``executor`` and write each run's values back as it completes."""
    base = Path(tempfile.mkdtemp(prefix="git-flor-replay-"))
    try:
        trees = {t.run: propagated_tree(repo, t) for t in plan.targets}
        prepared = prepare(repo, plan, trees, base, local_payloads=executor.local_payloads)
        if monitor is not None:
            monitor.begin([(p.job, p.progress, _length(p.job)) for p in prepared])
        writeback = WriteBack(repo, plan.targets, {run: tree.id for run, tree in trees.items()})
        try:
            for outcome in executor.run([p.task for p in prepared]):
                done = prepared[outcome.key]
                writeback.collect(done.target, done.job, outcome, done.out)
                if monitor is not None:
                    monitor.end(outcome.key, done.job, outcome)
                writeback.job_done(done.target)
        except KeyboardInterrupt:
            executor.cancel()
            writeback.interrupted()  # keep what finished
            raise
        return writeback.all_results()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def propagated_tree(repo: Repository, target: Target) -> SourceTree:
    """The run's snapshot with the propagated files in place of the old ones (stored in git)."""
    return run_snapshot(repo, target.shadow).with_texts(target.sources or {target.meta["script"]: target.source})


def prepare(
    repo: Repository, plan: Plan, trees: dict[str, SourceTree], base: Path, *, local_payloads: bool = True
) -> list[Prepared]:
    """Per job, in plan order: its payloads here, its scratch copy written, its spec and command line.

    ``local_payloads=False``: the executor's workers fetch payloads from ``flor.store``
    themselves (they have no ``.git``), so none are brought into this clone.
    """
    user_root = workdir(repo)
    store = store_for(common_dir(repo))
    prepared: list[Prepared] = []
    for target in plan.targets:
        manifest = read_manifest(repo, target.run)
        for job in target.jobs:
            needed = _needed(manifest, job)
            if local_payloads:
                # With a shared payload store (git config flor.store), bring them here first.
                ensure_payloads(repo, [p.sha256 for e in needed.values() for p in e["objects"].values()])
            key = len(prepared)
            scratch = base / target.run / str(key)
            materialise(trees[target.run], user_root, scratch)
            spec = ReplaySpec(
                run=target.run, names=job.names, mode=job.mode, epochs=job.epochs,
                start_from=job.start_from, args=target.meta.get("args", {}), store=str(store.root),
                out=str(scratch / OUT_FILE), user_root=str(user_root),
                scratch_root=str(scratch), checkpoints=needed,
                progress=str(scratch / PROGRESS_FILE),
            )
            spec_path = scratch / SPEC_FILE
            spec_path.write_text(spec.to_json())
            task = Task(key, child_argv(target.meta), str(scratch / (target.meta.get("cwd") or ".")),
                        child_env(spec_path), gpus=1 if target.meta.get("cuda") else 0)  # a cluster finds a GPU
            prepared.append(Prepared(target, job, scratch, task))
    return prepared


def child_argv(meta: dict[str, Any]) -> list[str]:
    """The run's own command line (``sys.argv`` as it was), run by this interpreter."""
    return [sys.executable, *(meta.get("argv") or [meta["script"]])]


def child_env(spec_path: Path) -> dict[str, str]:
    """Our environment minus git's repository-pinning variables, plus the replay spec."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(FLOR_REPLAY=str(spec_path), FLOR_QUIET="1")
    return env


def _length(job: Job) -> int:
    """Outer iterations the job's child will run (its progress bar's total)."""
    if job.mode == "reexec":
        return max(job.epochs) - job.start_from
    return len(job.epochs) if job.mode in ("skip", "full") else 0


def _needed(manifest: Manifest, job: Job) -> Manifest:
    """The checkpoints the job's child restores from."""
    if job.mode == "reexec":
        keys = {job.start_from}
    elif job.mode == "skip":
        keys = {i - 1 for i in job.epochs} | set(job.epochs)
    elif job.mode == "suffix":
        keys = {max(manifest)} if manifest else set()
    else:
        keys = set()
    return {i: manifest[i] for i in keys if i in manifest}
