"""Carrying out a replay plan: a scratch copy and a child process per job, results written per run.

Each job runs the propagated old version in its own scratch directory (never
the user's tree) with ``FLOR_REPLAY`` pointing at its spec; the child writes
its hindsight records to a file there (:mod:`git_flor.runtime.replay_mode` is
the child's side). :mod:`.writeback` turns each run's records into one shadow
commit when its last job finishes; Ctrl-C stops the children and keeps what
finished.

Jobs run in rounds: a strict job whose child reports that the original run's
witnesses disagree (:data:`~git_flor.runtime.replay_mode.DIVERGED`) is re-planned
more conservatively (:func:`.verify.fallback`) and run in the next round; its
values are never collected.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Protocol

from ..runtime.launch import thread_env
from ..runtime.replay_mode import DIVERGED, ReplaySpec
from ..storage.checkpoints import Manifest, read_manifest, store_for
from ..storage.files import SourceTree, run_snapshot
from ..storage.remote_store import PayloadMissing, ensure_payloads
from ..storage.repo import common_dir, workdir
from .executors import Executor, Outcome, Task
from .guard import guard, skippable
from .isolation import (
    Isolation,
    changed,
    choose,
    created_files,
    fingerprint,
    outside_dirs,
    rmtree,
    walked,
)
from .isolation import launch_spec as isolation_spec
from .launcher import command, launch_spec, warm_imports
from .materialise import materialise
from .plan import Job, Plan, Target
from .writeback import Result, WriteBack

if TYPE_CHECKING:
    from ..storage.repo import Repository

#: Files of the parent ↔ child protocol, in the job's scratch directory.
SPEC_FILE = ".git-flor-replay.json"
OUT_FILE = ".git-flor-replay.out"
PROGRESS_FILE = ".git-flor-replay.progress"
STATUS_FILE = ".git-flor-replay.status"
#: Rounds at most: skip → re-execution from a checkpoint → from the start (→ one spare).
MAX_ROUNDS = 4


class Monitor(Protocol):
    """Shows how a replay goes (the command's progress bars); execution does not depend on it."""

    def begin(self, jobs: list[tuple[Job, Path, int]]) -> None:
        """Every job of a round (the first, or fallbacks), with the file its child counts
        iterations in and how many it will run."""

    def end(self, key: int, job: Job, outcome: Outcome) -> None:
        """Job ``key`` (its index in this round's ``begin`` list) finished."""


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

    def status(self) -> dict[str, Any]:
        """What the child verified and how it ended (empty when it died before writing it)."""
        try:
            raw = json.loads((self.scratch / STATUS_FILE).read_text())
        except (OSError, ValueError):
            return {}
        return raw if isinstance(raw, dict) else {}


def execute(
    repo: Repository,
    plan: Plan,
    executor: Executor,
    monitor: Monitor | None = None,
    isolation: Isolation | None = None,
    violations: list[str] | None = None,
) -> list[Result]:
    """Run every job of ``plan`` on ``executor``, fall back where witnesses disagree, write each run back.

    ``violations`` receives the user's files that changed meanwhile (there should be none).
    """
    base = Path(tempfile.mkdtemp(prefix="git-flor-replay-"))
    user_root = workdir(repo)
    outside = outside_dirs(user_root, [t.meta for t in plan.targets])
    iso = isolation or choose(user_root, outside)
    watched = sorted({p for t in plan.targets for p in _absolute_outputs(t.meta)})
    before = fingerprint(user_root, walked(outside), watched, exclude=base)
    try:
        trees = {t.run: propagated_tree(repo, t) for t in plan.targets}
        executed = {t.run: propagated_tree(repo, t, guarded=True) for t in plan.targets}
        writeback = WriteBack(repo, plan.targets, {run: tree.id for run, tree in trees.items()})
        pending = [(t, j) for t in plan.targets for j in t.jobs]
        rounds = 0
        try:
            while pending:
                rounds += 1
                prepared = prepare(repo, pending, executed, base / str(rounds), iso, base, outside,
                                   local_payloads=executor.local_payloads)
                if monitor is not None:
                    monitor.begin([(p.job, p.progress, _length(p.job)) for p in prepared])
                pending = []
                for outcome in executor.run([p.task for p in prepared]):
                    done = prepared[outcome.key]
                    status = done.status()
                    if monitor is not None:
                        monitor.end(outcome.key, done.job, outcome)
                    diverged = status.get("diverged") if outcome.returncode == DIVERGED else None
                    if diverged and done.job.strict and rounds < MAX_ROUNDS:
                        pending.append((done.target, writeback.fall_back(done.target, done.job, diverged)))
                        continue
                    writeback.collect(done.target, done.job, outcome, done.out, status)
                    writeback.job_done(done.target)
        except KeyboardInterrupt:
            executor.cancel()
            writeback.interrupted()  # keep what finished
            raise
        return writeback.all_results()
    finally:
        if violations is not None:
            violations.extend(changed(before, fingerprint(user_root, walked(outside), watched, exclude=base)))
        rmtree(base)


def _absolute_outputs(meta: dict[str, Any]) -> list[str]:
    files = (meta.get("outputs") or {}).get("files") or {}
    return [p for p in files if os.path.isabs(p)]


def propagated_tree(repo: Repository, target: Target, guarded: bool = False) -> SourceTree:
    """The run's snapshot with the propagated files in place of the old ones (stored in git).

    ``guarded``: as executed, each requested statement wrapped so that its failure is its
    own (see .guard); the provenance stored with the values is the unguarded code.
    """
    texts = target.sources or {target.meta["script"]: target.source}
    if guarded:
        script = target.meta["script"]
        texts = {script: target.source, **texts}
        texts = {path: guard(skippable(text, target.skip_calls) if path == script else text, target.names)
                 for path, text in texts.items()}
    return run_snapshot(repo, target.shadow).with_texts(texts)


def prepare(
    repo: Repository, jobs: list[tuple[Target, Job]], trees: dict[str, SourceTree], base: Path,
    iso: Isolation, root: Path, outside: list[str], *, local_payloads: bool = True,
) -> list[Prepared]:
    """Per job, in order: its payloads here, its scratch copy written, its spec and command line.

    ``local_payloads=False``: the executor's workers fetch payloads from ``flor.store``
    themselves (they have no ``.git``), so none are brought into this clone.

    ``root``: the replay's scratch root (kept out of the isolation's view of the user's files).
    """
    user_root = workdir(repo)
    store = store_for(common_dir(repo))
    prepared: list[Prepared] = []
    manifests: dict[str, Manifest] = {}
    warm: dict[str, tuple[str, ...]] = {}  # run → the libraries its warm worker imports
    rngs: dict[str, str] = {}  # run → its start RNG states for the spec (read once, not per job)
    for target, job in jobs:
        if target.run not in manifests:
            manifests[target.run] = read_manifest(repo, target.run)
            rngs[target.run] = _rng_start(repo, store, target.meta, local_payloads)
        needed = _needed(manifests[target.run], job, target.entries.lasts())
        loads = [e for e in target.meta.get("loads") or [] if isinstance(e, dict) and isinstance(e.get("resolved"), dict)]
        if local_payloads:
            # With a shared payload store (git config flor.store), bring them here first.
            ensure_payloads(repo, [p.sha256 for e in needed.values() for p in e["objects"].values()]
                            + [e["resolved"]["sha256"] for e in loads])
        key = len(prepared)
        scratch = base / target.run / str(key)
        created = created_files(target.meta)
        prior = _priors(repo, target.meta, store, local_payloads)
        hidden_rel = {p for p in created if not os.path.isabs(p)} | set(prior)
        hide = sorted({p for p in created if os.path.isabs(p)} | {str(user_root / p) for p in hidden_rel})
        materialise(trees[target.run], user_root, scratch, hidden=hidden_rel, prior=prior)
        w = target.witnesses(job)
        spec = ReplaySpec(
            run=target.run, names=job.names, mode=job.mode, epochs=job.epochs,
            start_from=job.start_from, args=target.meta.get("args", {}), store=str(store.root),
            out=str(scratch / OUT_FILE), user_root=str(user_root),
            scratch_root=str(scratch), checkpoints=needed,
            progress=str(scratch / PROGRESS_FILE),
            expect_records=w.records, expect_fps=w.fingerprints, strict=job.strict,
            status=str(scratch / STATUS_FILE), recorded_names=sorted({r[0] for r in target.recorded}),
            expect_nested=w.nested, skip_ignore=job.skip_ignore,
            skip_calls=job.skip_calls, skip_logged=job.skip_logged, skip_keep=job.skip_keep,
            rng_start=rngs[target.run], run_full=job.run_full,
            iterations=target.iterations, entries=list(target.entries.sizes),
            limit=target.iterations if target.ending != "done" else -1, reentered=target.entries.legacy,
            witness_format=target.witness_format, broken=sorted(target.entries.broken), loads=loads,
        )
        spec_path = scratch / SPEC_FILE
        spec_path.write_text(spec.to_json())
        # Started the way the run was (a path, or -m), always the scratch copy, isolated.
        launch = launch_spec(target.meta, scratch, user_root, isolation_spec(iso, scratch, root, hide, outside))
        launch_path = scratch / ".git-flor-launch.json"
        launch_path.write_text(json.dumps(launch))
        cwd = Path(launch["cwd"])
        cwd.mkdir(parents=True, exist_ok=True)
        if target.run not in warm:
            warm[target.run] = warm_imports(target.source, [user_root, root])
        task = Task(key, command(launch_path, launch["script"]), str(cwd), job_env(target.meta, spec_path),
                    gpus=1 if target.meta.get("cuda") else 0,  # a cluster schedules it where a GPU is
                    warm=warm[target.run], launch=str(launch_path))
        prepared.append(Prepared(target, job, scratch, task))
    return prepared


def _priors(repo: Repository, meta: dict[str, Any], store: Any, fetch: bool) -> dict[str, Path]:
    """The repository files the run found and overwrote, as it found them: path → the payload's file.

    One whose payload is neither here nor (``fetch``) in ``flor.store`` is hidden like a file
    the run created: the replay then writes its own before reading it, or fails loudly.
    """
    out: dict[str, Path] = {}
    for path, sha in ((meta.get("outputs") or {}).get("prior") or {}).items():
        if not isinstance(path, str) or os.path.isabs(path) or ".." in PurePosixPath(path).parts \
                or not isinstance(sha, str):
            continue  # (a teammate's run.json cannot make a replay write outside its scratch)
        if fetch:
            try:
                ensure_payloads(repo, [sha])
            except (PayloadMissing, OSError):  # costs this file only
                continue
        found = store.find(sha)
        if found is not None:
            out[path] = found
    return out


def _rng_start(repo: Repository, store: Any, meta: dict[str, Any], local_payloads: bool) -> str:
    """The run's RNG states at its ``import git_flor``, for the spec (base64 of the pickled payload).

    Missing (a run recorded before they were kept, payloads deleted, a teammate's store not
    configured): the replay draws its own, and verification says whether anything used them.
    """
    sha = meta.get("rng_start")
    if not isinstance(sha, str) or not sha:
        return ""
    try:
        if local_payloads:
            ensure_payloads(repo, [sha])
        return base64.b64encode(store.get(sha)).decode()
    except (OSError, PayloadMissing):
        return ""


def job_env(meta: dict[str, Any], spec_path: Path) -> dict[str, str]:
    """A job's environment: :func:`child_env` with the run's thread settings."""
    return thread_env(meta.get("threads"), child_env(spec_path))


def warm_server(meta: dict[str, Any], source: str, user_root: Path) -> tuple[tuple[str, ...], dict[str, str]]:
    """(imports, environment) a warm server for a job of this run will most likely have, known
    before planning (``source``: today's script): for :meth:`.executors.LocalExecutor.prestart`."""
    return warm_imports(source, [user_root]), job_env(meta, Path(os.devnull))


def child_env(spec_path: Path) -> dict[str, str]:
    """Our environment minus git's repository-pinning variables, plus the replay spec."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(FLOR_REPLAY=str(spec_path), FLOR_QUIET="1")
    return env


def _length(job: Job) -> int:
    """Outer iterations the job's child will run (its progress bar's total)."""
    if job.mode == "reexec":
        return max(job.epochs) - job.start_from
    if job.mode == "skip":
        return len(set(job.epochs) | set(job.run_full))
    return len(job.epochs) if job.mode == "full" else 0


def _needed(manifest: Manifest, job: Job, lasts: list[int]) -> Manifest:
    """The checkpoints the job's child restores from; ``lasts``: each entry's last iteration of
    the outer loop, restored where the child passes over an entry (see ``Replayer._pass``)."""
    if job.mode == "reexec":
        keys = {job.start_from} | {g for g in lasts if g < job.start_from}
    elif job.mode == "skip":
        full = set(job.run_full)
        ran = set(job.epochs) | full
        # (an iteration after one run in full starts from the state that one left)
        keys = {i - 1 for i in ran if i - 1 not in full} | (set(job.epochs) - full) \
            | {g for g in lasts if g < max(ran)}
    elif job.mode == "suffix":
        keys = set(lasts) or ({max(manifest)} if manifest else set())
    else:
        keys = set()
    return {i: manifest[i] for i in keys if i in manifest}
