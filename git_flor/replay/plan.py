"""Planning a replay: which runs, which iterations, which strategy, what it will cost.

For each recorded run the requested statements are carried into the run's own
snapshot (its shadow commit's ``src/``, uncommitted edits included), their
positions read (:mod:`.strategy`), and jobs made: each job is one process that
replays one run in one mode over some iterations. Independent jobs — different
runs, different iterations of a skip, different re-execution segments each
starting from its own checkpoint — run in parallel.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..propagate import Carrier
from ..runtime.launch import cores, job_threads, thread_env
from ..storage.checkpoints import Manifest, read_manifest
from ..storage.files import SourceTree, run_snapshot
from ..storage.index import HINDSIGHT, RECORDED, UNVERIFIED, chunks, replays_of, stored_run
from ..storage.records import LoopTiming, Record, entry_of
from ..storage.remote_store import local_payload, store_url
from ..storage.repo import workdir
from ..storage.shadow import loop_timings, read_records, read_witness
from . import verify
from .expect import expectations
from .launcher import warm_imports
from .strategy import Shape, analyse

if TYPE_CHECKING:
    import sqlite3

    from ..storage.repo import Repository

#: Seconds a job costs beyond its own compute: a fork from a warm worker, its isolation, the
#: child's start of git-flor, its exit and the parent's collecting (measured: 0.1-0.2 s on 2 cores).
STARTUP = 0.1
#: Restoring a checkpoint: per payload (a file read, its sha256, unpickling, a fingerprint's
#: share), and per byte (reading, hashing, ``torch.load``, copying into the live objects).
RESTORE_PER_PAYLOAD = 0.0005
RESTORE_BYTES_PER_SECOND = 0.5e9
#: Seconds to start a warm worker: Python itself, then each library it imports (priors,
#: measured with ``python -X importtime`` on 2 cores; unknown libraries count as light).
INTERPRETER = 0.1
#: Seconds after the last job's child exits: its run's write-back commit and the summary.
FINISH = 0.1
HEAVY_IMPORTS = {"torch": 1.5, "tensorflow": 3.0, "jax": 1.2, "sklearn": 0.6, "pandas": 0.4, "scipy": 0.3,
                 "matplotlib": 0.3, "transformers": 2.0, "torchvision": 0.5, "numpy": 0.1}


@dataclass
class Job:
    run: str
    mode: str  # prefix | suffix | skip | reexec | full
    names: list[str]
    epochs: list[int] = field(default_factory=list)
    start_from: int = -1
    estimate: float = 0.0
    #: how many of the original run's records and fingerprints the job is checked against
    witnesses: int = 0
    #: why earlier plans of this work were abandoned (a witness disagreed), oldest first
    fallbacks: list[str] = field(default_factory=list)
    #: skip: variables whose early restore no requested statement can see (see strategy.Position)
    skip_ignore: list[str] = field(default_factory=list)
    #: skip: lines of the script's call statements replaced by a restore (strategy.Position.skip_calls)
    skip_calls: list[int] = field(default_factory=list)
    #: skip: names logged only inside those calls: not produced, so not expected
    skip_logged: list[str] = field(default_factory=list)
    #: skip: loop-carried variables a skip's restore leaves as computed (strategy.Position.keep)
    skip_keep: list[str] = field(default_factory=list)
    #: skip: iterations run in full instead (no checkpoint to skip to; see :func:`_mixed`)
    run_full: list[int] = field(default_factory=list)

    @property
    def strict(self) -> bool:
        return verify.strict(self.mode, self.start_from)

    def describe(self) -> str:
        if self.mode in ("prefix", "suffix", "full"):
            return self.mode
        span = _span(self.epochs)
        if self.mode == "reexec":
            origin = "start" if self.start_from < 0 else f"checkpoint {self.start_from}"
            return f"re-execute {span} from {origin}"
        if self.run_full:
            skipped = [i for i in self.epochs if i not in set(self.run_full)]
            return f"restore+skip {_span(skipped)}, re-execute {_span(self.run_full)}"
        return f"restore+skip {span}"


@dataclass
class Target:
    run: str
    meta: dict[str, Any]
    shadow: str
    source: str  # the propagated script
    names: list[str]
    loop: str | None
    #: every file the statements were carried into (the script, modules it imports), by path
    sources: dict[str, str] = field(default_factory=dict)
    jobs: list[Job] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)  # name → why it is not skipped
    #: the original run's witnesses: its records, its fingerprints, its outer loop and length
    recorded: list[Record] = field(default_factory=list)
    fingerprints: dict[int, dict[str, str]] = field(default_factory=dict)
    nested_fps: dict[int, list[dict[str, str]]] = field(default_factory=dict)
    #: how the fingerprints are encoded (a replay computes its own the same way)
    witness_format: int = 1
    outer_name: str | None = None
    #: the outer loop's entries in the original run, in flat iteration numbers (see :func:`extent`)
    entries: Entries = field(default_factory=lambda: Entries())
    #: checkpoints that are safe resume points a child can reach (fallbacks choose among them)
    safe: list[int] = field(default_factory=list)
    #: why there is nothing to replay other than "already computed"
    idle: str = ""
    #: lines of the script's call statements some skip job replaces by a restore: the executed
    #: copy asks the runtime before each of them (see .guard.skippable)
    skip_calls: list[int] = field(default_factory=list)
    #: name → "each"/"once": how many values a job must bring back (see .expect)
    expect: dict[str, str] = field(default_factory=dict)

    @property
    def iterations(self) -> int:
        """Outer iterations the original run entered, over all entries."""
        return self.entries.total

    @property
    def ending(self) -> str:
        """How the original's last entry of the outer loop ended (see :func:`extent`)."""
        return self.entries.ending

    def witnesses(self, job: Job) -> verify.Witnesses:
        return verify.witnesses(job.mode, job.epochs, job.start_from, self.entries, self.outer_name,
                                self.recorded, self.fingerprints, self.nested_fps, job.run_full)


@dataclass
class Plan:
    targets: list[Target]
    skipped: list[tuple[str, str]]  # (run, why nothing to do)
    failed: list[tuple[str, str]]  # (run, why it cannot be replayed)
    workers: int = 1
    #: seconds the command spent before its first job can start — its own start, finding the
    #: runs, carrying the statements, the isolation probe — measured where it planned: a
    #: ``--dry-run`` and the replay pay the same (0 when not measured)
    overhead: float = 0.0
    #: seconds after the command's start when it knew the runs: where the first warm worker
    #: starts, while the rest is planned (see ``LocalExecutor.prestart``; None: not measured)
    selected: float | None = None
    #: a kept warm worker (``FLOR_WARM_KEEP``) for the first run was waiting: no warm-up to count
    warm_ready: bool = False

    @property
    def jobs(self) -> list[Job]:
        return [j for t in self.targets for j in t.jobs]

    def wall(self) -> float:
        """Seconds the replay should take on ``workers`` slots, end to end: the command's own
        start and planning, the warm-up, the jobs in order, each on the first slot free (what
        the local executor does), then the last write-back."""
        if not self.jobs:
            return self.overhead
        slots = [0.0] * max(1, min(self.workers, len(self.jobs)))
        for job in self.jobs:
            i = slots.index(min(slots))
            slots[i] += job.estimate
        warm = 0.0 if self.warm_ready else warmup([t.meta for t in self.targets])
        # the first warm worker imports while the command plans
        ready = self.overhead + warm if self.selected is None else max(self.overhead, self.selected + warm)
        return ready + max(slots) + FINISH

    def to_json(self) -> dict[str, Any]:
        return {
            "jobs": [
                {"run": j.run, "mode": j.mode, "names": j.names, "epochs": j.epochs,
                 "run_full": j.run_full, "start_from": j.start_from, "estimate_seconds": round(j.estimate, 3), "plan": j.describe(),
                 "verified_by": j.witnesses, "strict": j.strict, "skip_calls": j.skip_calls}
                for j in self.jobs
            ],
            "skipped": [{"run": r, "why": w} for r, w in self.skipped],
            "failed": [{"run": r, "why": w} for r, w in self.failed],
            "estimate_seconds": round(sum(j.estimate for j in self.jobs), 3),
            "wall_seconds": round(self.wall(), 3),
            "overhead_seconds": round(self.overhead, 3),
            "selected_seconds": None if self.selected is None else round(self.selected, 3),
            "workers": self.workers,
        }


def warmup(metas: list[dict[str, Any]]) -> float:
    """Seconds to start the warm workers: an interpreter and the heaviest libraries the runs imported.

    Workers start in parallel, so the slowest counts; the run's ``packages`` (what it had
    imported when it ended) say which libraries those are.
    """
    def one(meta: dict[str, Any]) -> float:
        packages = meta.get("packages") or {}
        return INTERPRETER + sum(t for name, t in HEAVY_IMPORTS.items() if name in packages)

    return max((one(m) for m in metas), default=0.0)


def plan(
    repo: Repository,
    conn: sqlite3.Connection,
    runs: list[str],
    names: list[str],
    *,
    iters: dict[str, set[int]] | None = None,
    force: bool = False,
    workers: int = 1,
    trust_checkpoints: bool = False,
    fit_threads: bool = True,
) -> Plan:
    """Plan the replay of ``names`` in ``runs`` on ``workers`` slots.

    ``fit_threads``: the jobs run here, each with its run's thread counts, and only as
    many at once as fit in this machine's cores — so that is how many slots there are.
    """
    targets: list[Target] = []
    skipped: list[tuple[str, str]] = []
    failed: list[tuple[str, str]] = []
    root = workdir(repo)
    store = store_url(repo)
    # With as many runs as workers (or more), each run is one job: splitting a run only
    # pays when a worker would otherwise be idle.
    slots = workers
    today_cache: dict[str, str | None] = {}  # path → today's text
    for run_id in runs:
        run = stored_run(conn, run_id)
        meta = run.meta
        script = meta.get("script") or ""
        if not (root / script).is_file():
            skipped.append((run_id, f"its script {script!r} is not in today's working tree"))
            continue
        snapshot = run_snapshot(repo, run.shadow)
        sources, wanted, problems = _carry(snapshot, script, names, lambda p: _today(root, p, today_cache))
        if problems:
            # One statement's failure is its own: the others of this run are still replayed.
            rest = f" (replaying {', '.join(wanted)})" if wanted else ""
            failed.append((run_id, "; ".join(problems) + rest))
            if not wanted:
                continue
        if not wanted:
            skipped.append((run_id, f"today's code of {script} has no flor.log of {', '.join(names)}"))
            continue
        past_script = snapshot.read(script)
        if past_script is None:
            failed.append((run_id, f"{script} is not in the run's snapshot"))
            continue
        script_source = sources.get(script, past_script)
        manifest = _available(repo, read_manifest(repo, run_id), store)
        saved_vars = frozenset(
            k[len("var:"):] for e in manifest.values() for k, p in e["objects"].items() if p.kind == "var"
        )
        try:
            shape = analyse(script_source, wanted, saved_vars, meta.get("checkpointing") or {})
        except SyntaxError as exc:
            failed.append((run_id, f"the propagated {script} does not parse: {exc}"))
            continue
        loops = loop_timings(repo, run.shadow)
        target = Target(run_id, meta, run.shadow, script_source, wanted, shape.outer_loop, sources)
        target.recorded = read_records(repo, run.shadow)
        target.fingerprints, target.nested_fps, target.witness_format = read_witness(repo, run.shadow)
        target.outer_name = loops[0]["name"] if loops else shape.outer_loop
        target.entries = extent(meta, loops)
        target.safe = target.entries.resumable(sorted(i for i, e in manifest.items() if not e.get("unsaved")))
        existing = _existing(conn, run_id, wanted)
        if len(target.entries.sizes) > 1 and not target.entries.legacy:
            existing = _existing_by_entry(repo, conn, target, wanted)
        fit = workers
        if fit_threads:  # a run that used every core's threads replays one job at a time
            fit = min(workers, max(1, cores() // job_threads(thread_env(meta.get("threads"), dict(os.environ)))))
        slots = min(slots, fit)
        share = max(1, fit // max(1, len(runs)))
        # jobs forked from a warm worker (local, FLOR_WARM not 0) do not import its libraries again
        warm = warm_imports(script_source, [root]) if fit_threads and os.environ.get("FLOR_WARM", "1") != "0" else ()
        _jobs(target, shape, manifest, loops, existing, iters, force, share, warm)
        _own_outputs(target)
        _witness(target, trust_checkpoints)
        target.expect = expectations(script_source, shape.positions)
        if target.jobs:
            targets.append(target)
        elif target.idle:
            skipped.append((run_id, target.idle))
        else:
            skipped.append((run_id, "already computed (use --force to recompute)"))
    return Plan(targets, skipped, failed, max(1, min(workers, slots)))


@dataclass(frozen=True)
class Entries:
    """The original run's outer loop, entry by entry, in the flat iteration numbers its
    checkpoints and fingerprints are keyed by (entry k's iteration i is ``offsets[k] + i``).

    A run enters the outer loop once, or again for a second phase (``fit()`` called twice).
    ``sizes``: the iterations replay may enter per entry. ``ending``: how the last one ended
    (see :func:`extent`). ``broken``: flat iterations a ``break`` left part-way (no checkpoint
    holds their end, so replay never passes over them). ``legacy``: the loop was entered
    again in a run recorded before entries were keyed — only the first entry has
    checkpoints, and the later ones logged at its positions.
    """

    sizes: tuple[int, ...] = ()
    ending: str = "done"
    broken: frozenset[int] = frozenset()
    legacy: bool = False

    @property
    def offsets(self) -> list[int]:
        return [sum(self.sizes[:k]) for k in range(len(self.sizes))]

    @property
    def total(self) -> int:
        return sum(self.sizes)

    def entry(self, g: int) -> int:
        """The entry flat iteration ``g`` belongs to."""
        for k, off in reversed(list(enumerate(self.offsets))):
            if g >= off:
                return k
        return 0

    def local(self, g: int) -> int:
        """Flat iteration ``g`` as the index the table (and ``--iter``) shows."""
        return g - self.offsets[self.entry(g)] if self.sizes else g

    def lasts(self) -> list[int]:
        """Each entry's last flat iteration (entries without iterations have none)."""
        return [off + n - 1 for off, n in zip(self.offsets, self.sizes) if n]

    def resumable(self, safe: list[int]) -> list[int]:
        """Safe checkpoints a child can reach: each entry before one's own is passed over by
        restoring its last iteration, which must be a safe checkpoint too."""
        ok: list[int] = []
        passable = True
        for k, (off, n) in enumerate(zip(self.offsets, self.sizes)):
            if not passable:
                break
            ok += [g for g in safe if off <= g < off + n]
            passable = n == 0 or off + n - 1 in safe
        return ok if self.sizes else list(safe)

    def flat_of(self, pos: tuple[Any, ...] | list[Any]) -> int:
        """The flat iteration of a record's position whose first frame is the outer loop."""
        k = 0 if self.legacy else entry_of(pos[0])
        return (self.offsets[k] if k < len(self.sizes) else self.total) + int(pos[0][1])


def extent(meta: dict[str, Any], loops: list[LoopTiming]) -> Entries:
    """How the original run's outer loop ran, entry by entry, and how many iterations replay may enter.

    The last entry's ending: ``done``: it ran out of items; every iteration finished,
    and what follows it ran. ``broke``: the run left it part-way through one more
    iteration (``break``, early stopping) and went on: that iteration is entered too —
    it has no checkpoint, so what follows the loop is replayed by re-executing it.
    ``stopped``: the run was killed or failed inside the loop: only the iterations
    it finished are replayed, and nothing after the loop ran, so nothing there is.
    Replay never enters an iteration the original did not (an ``itertools.count()``
    loop would otherwise never end). An earlier entry the run went on from counts the
    iteration a ``break`` left too.
    """
    if not loops:
        return Entries()
    outer = [lp for lp in loops if lp.get("name") == loops[0].get("name")]
    legacy = len(outer) > 1 and "offset" not in outer[1]
    if legacy:
        outer = outer[:1]
    ok = meta.get("status") == "ok"
    sizes: list[int] = []
    broken: set[int] = set()
    ending = "done"
    for k, lp in enumerate(outer):
        n = len(lp.get("iters", []))
        off = sum(sizes)
        if k < len(outer) - 1:
            if "broke" in lp:
                broken.add(off + n)
            sizes.append(n + ("broke" in lp))
        elif "broke" in lp:
            ending = "broke" if ok else "stopped"
            if ok:
                broken.add(off + n)
            sizes.append(n + ok)
        else:
            stopped = lp.get("end") is None or (not ok and not _after_loop_ran(meta, lp))
            ending = "stopped" if stopped else "done"
            sizes.append(n)
    return Entries(tuple(sizes), ending, frozenset(broken), legacy)


def _after_loop_ran(meta: dict[str, Any], outer: LoopTiming) -> bool:
    """A failed run whose loop ended normally failed after it (its ``end`` is before the run's)."""
    end, run_end = outer.get("end"), meta.get("end")
    return end is not None and run_end is not None and float(end) < float(run_end) - 1e-3


def _witness(target: Target, trust_checkpoints: bool) -> None:
    """Count each job's witnesses; a strict job with none re-executes from the start instead.

    Nothing could tell whether such a job's restored or skipped state is right (a run
    recorded before fingerprints existed, with no recorded values in those iterations),
    so unless the user trusts checkpoints explicitly it runs where it needs no trust.
    """
    for job in target.jobs:
        w = target.witnesses(job)
        if not trust_checkpoints and verify.without_witness(job.mode, job.start_from, w):
            job.fallbacks.append("no witness: the original run recorded nothing to verify this segment by")
            job.mode, job.start_from = ("full", -1) if job.mode == "suffix" else ("reexec", -1)
            w = target.witnesses(job)
        job.witnesses = w.count


def _today(root: Path, path: str, cache: dict[str, str | None]) -> str | None:
    if path not in cache:
        full = root / path
        cache[path] = full.read_text(errors="replace") if full.is_file() else None
    return cache[path]


def _carry(
    snapshot: SourceTree, script: str, names: list[str], today_of: Callable[[str], str | None]
) -> tuple[dict[str, str], list[str], list[str]]:
    """Propagate today's statements into every file of the run's snapshot that has them today.

    Which files, and how, is `propagate.Carrier`'s to decide (`git flor check propagate`
    asks it the same). Returns (propagated sources by path, the names found, problems).
    """
    carried = Carrier(today_of, names).carry(script, snapshot.python_paths(), snapshot.read)
    return carried.sources, carried.names, carried.problems


def _available(repo: Repository, manifest: Manifest, store: str | None) -> Manifest:
    """Checkpoints replay can restore: payloads here, or (with ``flor.store``) fetched on demand.

    A clone that pulled a teammate's runs without their payloads plans as if those
    checkpoints did not exist: re-execution from an earlier one or from the start.
    """
    if store is not None:
        return manifest
    return {
        i: e for i, e in manifest.items()
        if all(local_payload(repo, p.sha256) is not None for p in e["objects"].values())
    }


def _existing(conn: sqlite3.Connection, run_id: str, names: list[str]) -> dict[str, set[int] | None]:
    """Per name, the outer-loop iterations that already have a value (None: a value outside loops)."""
    out: dict[str, set[int] | None] = {}
    for ch in chunks(conn, names, [run_id]):
        if ch.src not in (RECORDED, HINDSIGHT, UNVERIFIED):
            continue
        if not ch.dims:
            out[ch.name] = None
        elif out.get(ch.name, set()) is not None:
            out.setdefault(ch.name, set()).update(int(v) for v in ch.pos[:, 0])  # type: ignore[union-attr]
    return out


def _existing_by_entry(
    repo: Repository, conn: sqlite3.Connection, target: Target, names: list[str]
) -> dict[str, set[int] | None]:
    """:func:`_existing` for a run that entered its outer loop more than once, in flat numbers.

    The index keeps a value's loop indices, not which entry of the loop it was logged in
    (the table shows both phases' epoch 0 as epoch 0), so the positions are read from the
    run's records and its replays' in git, with the index's rule: a later replay's values
    of a name replace an earlier one's.
    """
    per_source: list[list[Record]] = [target.recorded]
    latest: dict[str, list[Record]] = {}
    for shadow in replays_of(conn, target.run):
        records = read_records(repo, shadow, unverified=True)
        for name in {r[0] for r in records} & set(names):
            latest[name] = [r for r in records if r[0] == name]
    per_source += list(latest.values())
    out: dict[str, set[int] | None] = {}
    for records in per_source:
        for name, _, pos in records:
            if name not in names:
                continue
            if not pos:
                out[name] = None
            elif out.get(name, set()) is not None and pos[0][0] == target.outer_name:
                out.setdefault(name, set()).add(target.entries.flat_of(pos))  # type: ignore[union-attr]
    return out


@dataclass(frozen=True)
class CostModel:
    """Seconds a job will take, from the original run's loop timings and checkpoint costs.

    Every job pays a process start and the script's code before the outer loop;
    re-executing an iteration costs what it cost originally; restoring a
    checkpoint costs about what saving it did; a skipped iteration runs ~5% of
    its body (the nested loops are restored, not run).
    """

    times: list[float]  # seconds of each outer-loop iteration of the original run
    #: seconds of each iteration spent in its nested loops (what a skip does not run); may be short
    inner: list[float]
    pre: float  # seconds from the run's start to its outer loop, less the imports a warm worker did
    duration: Any  # the original run's total seconds, as run.json has it (read only for ``full``)
    restore_cost: dict[int, float]  # iteration → seconds to restore its checkpoint

    @classmethod
    def of(cls, meta: dict[str, Any], loops: list[LoopTiming], manifest: Manifest,
           warm: tuple[str, ...] = ()) -> CostModel:
        """``warm``: the libraries the jobs' warm worker imports (``launcher.warm_imports``): what the
        run spent importing them before its loop (``run.json`` ``prefix_imports``) a job does not."""
        outer: LoopTiming = loops[0] if loops else {"iters": [], "start": meta.get("start", 0)}
        entries = extent(meta, loops)
        times: list[float] = []  # flat, as the entries' iterations are numbered
        inner: list[float] = []
        for lp, size in zip([lp for lp in loops if lp.get("name") == outer.get("name")], entries.sizes):
            its = (list(lp.get("iters", [])) + [float(lp.get("broke", 0.0))])[:size]
            times += its
            inner += (list(lp.get("inner", [])) + [0.0] * len(its))[: len(its)]
        pre = float(outer.get("start", 0)) - float(meta.get("start", 0))
        imports = meta.get("prefix_imports")
        if isinstance(imports, dict):
            pre -= warmed(imports, warm)
        return cls(
            times=times,
            inner=inner,
            pre=max(0.0, pre),
            duration=meta.get("duration", 0),
            restore_cost={i: _restore_seconds(e) for i, e in manifest.items()},
        )

    def estimate(self, mode: str, epochs: list[int], start: int = -1, run_full: list[int] | None = None) -> float:
        times, n = self.times, len(self.times)
        base = STARTUP + self.pre
        if mode == "prefix":
            return base
        if mode == "full":
            return base + sum(times) + float(self.duration) * 0.05
        if mode == "suffix":
            return base + self.restore_cost.get(n - 1, 0.0)
        if mode == "reexec":
            return base + self.restore_cost.get(start, 0.0) + sum(times[start + 1 : max(epochs) + 1])
        full = set(run_full or [])
        skipped = [i for i in epochs if i < n and i not in full]
        # a skipped iteration restores the previous one's end and its own, and runs its body
        # but the nested loops; one run in full costs what it cost originally (and a restore
        # where it does not follow one run in full)
        return base + sum(2 * self.restore_cost.get(i, 0.0) + self._rest(i) for i in skipped) + sum(
            times[i] + (0.0 if i - 1 in full else self.restore_cost.get(i - 1, 0.0)) for i in full if i < n)

    def _rest(self, i: int) -> float:
        """Seconds of iteration ``i`` outside its nested loops: what a skip still runs. Without
        nested loop times (a run recorded before they were, or a skipped helper call with no
        ``flor.loop`` inside) a twentieth of the iteration."""
        inner = self.inner[i] if i < len(self.inner) else 0.0
        return max(0.0, self.times[i] - inner) if inner > 0 else 0.05 * self.times[i]


def warmed(imports: dict[str, Any], warm: tuple[str, ...]) -> float:
    """Seconds of a run's ``prefix_imports`` (``runtime/imports.py``) a warm worker importing ``warm``
    has already spent. Only exact names count: a submodule the run loaded lazily
    (``torch.distributions``) was not imported by its package's import, so the warm worker does
    not have it either unless it imports it by name (``torch._dynamo``)."""
    names = set(warm)
    return sum(float(v) for k, v in imports.items() if k in names and isinstance(v, (int, float)))


def _restore_seconds(entry: dict[str, Any]) -> float:
    """What restoring this checkpoint costs a replay child (see ``RESTORE_*``): its payloads'
    count and bytes. (Its recorded ``seconds`` are the run's capture and background write.)"""
    pointers = list(entry.get("objects", {}).values())
    size = sum(int(getattr(p, "size", 0) or 0) for p in pointers)
    return RESTORE_PER_PAYLOAD * len(pointers) + size / RESTORE_BYTES_PER_SECOND


def _jobs(
    target: Target,
    shape: Shape,
    manifest: Manifest,
    loops: list[LoopTiming],
    existing: dict[str, set[int] | None],
    iters: dict[str, set[int]] | None,
    force: bool,
    workers: int,
    warm: tuple[str, ...] = (),
) -> None:
    """Fill in ``target.jobs`` (and ``target.reasons``): choose each name's strategy, then cut jobs."""
    cost = CostModel.of(target.meta, loops, manifest, warm)
    n = len(cost.times)
    requested = set(range(n))
    if iters and target.loop in iters:  # `--iter epoch=3` is epoch 3 of every entry of the loop
        requested = {g for g in requested if target.entries.local(g) in iters[target.loop]}
    kinds, todo, reasons = _strategies(target.names, shape, existing, requested, force)
    if target.entries.legacy:
        # Recorded before entries were keyed: the loop ran again later (a second phase) at the
        # same positions, and checkpoints exist for the first entry only. Re-run it whole.
        for k, kind in kinds.items():
            if kind in ("skip", "reexec"):
                kinds[k] = "full"
                reasons[k] = "the outer loop is entered more than once (recorded before entries were told apart)"
    if len(target.entries.sizes) > 1 or target.entries.legacy:
        # Code before the outer loop may run again before a later entry (``fit()`` called twice):
        # a statement there is replayed through every entry, like one after the loop — or in
        # full when the run stopped inside the loop (nothing after it ran; what preceded did).
        for k, kind in kinds.items():
            if kind == "prefix":
                kinds[k] = "full" if target.ending == "stopped" else "suffix"
                reasons[k] = "the outer loop is entered more than once: code before it runs before each entry"
    if target.ending == "stopped":
        dropped = [k for k, kind in kinds.items() if kind == "suffix"]
        for k in dropped:
            del kinds[k]
        if dropped and not kinds:
            target.idle = "the run stopped inside its loop: nothing after the loop ran"
    target.reasons.update(reasons)
    target.jobs.extend(_cut(target.run, kinds, todo, manifest, cost, workers, target.safe,
                            broke=target.ending == "broke"))
    # What a skip may restore early because no requested statement reads it (see verification).
    ignore = [p.ignore for k in kinds for p in shape.positions.get(k) or [] if p.where == "epoch"]
    epoch_positions = [p for k in kinds for p in shape.positions.get(k) or [] if p.where == "epoch"]
    for job in target.jobs:
        if job.mode == "skip" and ignore:
            job.skip_ignore = sorted(frozenset.intersection(*ignore))
        if job.mode == "skip" and epoch_positions:
            # A call is skipped only where every requested statement allows it.
            job.skip_calls = sorted(frozenset.intersection(*(p.skip_calls for p in epoch_positions)))
            job.skip_logged = sorted(frozenset().union(*(p.skip_logged for p in epoch_positions)))
            job.skip_keep = sorted(frozenset.intersection(*(p.keep for p in epoch_positions)))
    target.skip_calls = sorted({line for job in target.jobs for line in job.skip_calls})


def _strategies(
    names: list[str],
    shape: Shape,
    existing: dict[str, set[int] | None],
    requested: set[int],
    force: bool,
) -> tuple[dict[str, str], dict[str, list[int]], dict[str, str]]:
    """Per name still to compute: its strategy (prefix, suffix, skip, reexec, full) and the iterations
    it needs; names already computed are left out. Also why a name is re-executed, not skipped."""
    todo: dict[str, list[int]] = {}
    kinds: dict[str, str] = {}
    reasons: dict[str, str] = {}
    for name in names:
        positions = shape.positions.get(name) or []
        where = {p.where for p in positions}
        if "unknown" in where or not positions:
            kinds[name] = "full"
        elif where & {"step"} or any(p.where == "epoch" and not p.skip_safe for p in positions):
            kinds[name] = "reexec"
            reasons[name] = next((p.reason for p in positions if p.reason), "")
        elif "epoch" in where:
            kinds[name] = "skip"
        else:
            kinds[name] = "suffix" if where == {"suffix"} else "prefix"
        have = existing.get(name, set())
        if kinds[name] in ("prefix", "suffix", "full"):
            if have is None and not force:
                del kinds[name]
            continue
        missing = sorted(requested if force or have is None else requested - have)
        if missing:
            todo[name] = missing
        else:
            del kinds[name]
    return kinds, todo, reasons


def _cut(
    run: str,
    kinds: dict[str, str],
    todo: dict[str, list[int]],
    manifest: Manifest,
    cost: CostModel,
    workers: int,
    safe: list[int],
    broke: bool = False,
) -> list[Job]:
    """The jobs for the chosen strategies: skipped iterations in ``workers`` chunks, re-executed ones
    in segments from safe checkpoints, one prefix/suffix/full job where needed.

    ``broke``: the loop was left part-way through its last iteration; what follows it is
    replayed by re-executing that iteration from the checkpoint before it (no checkpoint
    holds the state where the ``break`` left the loop). ``safe``: the checkpoints a child can
    resume from (see :meth:`Entries.resumable`)."""
    if not kinds:
        return []
    n = len(cost.times)
    est = cost.estimate
    if "full" in kinds.values():
        return [Job(run, "full", sorted(kinds), list(range(n)), -1, est("full", []))]
    jobs: list[Job] = []
    loop_names = [k for k, v in kinds.items() if v in ("skip", "reexec")]
    prefix_names = [k for k, v in kinds.items() if v == "prefix"]
    if loop_names:
        epochs = sorted(set().union(*(todo[k] for k in loop_names)))
        skip_ok = all(kinds[k] == "skip" for k in loop_names)
        skippable = {i for i in epochs if i in manifest and not manifest[i].get("unsaved")} if skip_ok else set()
        names = loop_names + prefix_names
        if skippable:
            # One job per chunk skips what it can and re-executes the rest, each iteration from
            # the state the one before left (no second job re-running up to the same epochs).
            for chunk in _split(epochs, workers):
                full = _mixed(chunk, skippable, safe)
                jobs.append(Job(run, "skip", names, chunk, -1, est("skip", chunk, -1, full), run_full=full))
        else:
            for start, seg in _segments(epochs, safe, cost.times, cost.restore_cost, workers):
                jobs.append(Job(run, "reexec", names, seg, start, est("reexec", seg, start)))
    elif prefix_names:
        jobs.append(Job(run, "prefix", prefix_names, [], -1, est("prefix", [])))
    suffix_names = [k for k, v in kinds.items() if v == "suffix"]
    if suffix_names:
        if broke and n:
            start = max((c for c in safe if c < n - 1), default=-1)
            jobs.append(Job(run, "reexec", suffix_names, [n - 1], start, est("reexec", [n - 1], start)))
        elif n and n - 1 in safe:
            jobs.append(Job(run, "suffix", suffix_names, [], -1, est("suffix", [])))
        else:
            jobs.append(Job(run, "full", suffix_names, [], -1, est("full", [])))
    return jobs


def _own_outputs(target: Target) -> None:
    """Re-plan jobs that would read a file the original run wrote *before* where the job starts.

    Such a job would read whatever is on disk today — maybe another run's ``best.npy``.
    It must start from before the write so that it reads the one it writes itself:
    a re-execution from the latest safe checkpoint before it (or from the start);
    a suffix job becomes a full re-execution. Positions: -1 before the outer loop,
    ``i`` in (flat) iteration ``i``, ``n`` after the loop, -2 unknown (see ``runtime.outputs``).
    """
    pairs = _reads_of_own_writes(target.meta)
    if not pairs or not target.jobs:
        return
    entries = target.entries
    n = entries.total
    # Between two entries of the outer loop the code runs at the next entry's first number: a
    # child that passes over entries runs it there (an iteration with that number may not run).
    between = set(entries.offsets[1:])
    safe = target.safe
    jobs: list[Job] = []
    for job in target.jobs:
        if job.mode == "reexec":
            last = max(job.epochs)
            ran = set(range(job.start_from + 1, last + 1)) | {-1} | {b for b in between if b <= last}
            bad = [w for r, w in pairs if r in ran and w not in ran]
        elif job.mode == "skip":  # a write in this iteration may be inside a skipped loop
            full = set(job.run_full)
            bad = [w for r, w in pairs if r in set(job.epochs) - full and w != -1]
            # an iteration run in full reads what the job wrote, if it ran the write itself
            bad += [w for r, w in pairs if r in full and w != -1 and w not in full]
        elif job.mode == "suffix":
            ran = {-1, n} | between
            bad = [w for r, w in pairs if r in ran and w not in ran]
        else:
            bad = []
        if not bad:
            jobs.append(job)
        elif job.mode == "suffix":
            jobs.append(Job(job.run, "full", job.names, [], -1, job.estimate))
            target.reasons.update({k: "reads a file the run wrote in its loop" for k in job.names})
        else:
            # (before the write, and before every iteration the job was to cover)
            start = max((c for c in safe if c < min([*bad, *job.epochs, *job.run_full])), default=-1)
            start = min(start, job.start_from) if job.mode == "reexec" else start
            jobs.append(Job(job.run, "reexec", job.names, job.epochs, start, job.estimate))
            target.reasons.update({k: "reads a file the run wrote earlier" for k in job.names})
    target.jobs[:] = jobs


def _reads_of_own_writes(meta: dict[str, Any]) -> list[tuple[int, int]]:
    """(position of a read, position of the write it depends on) for files the run read back."""
    files = (meta.get("outputs") or {}).get("files") or {}
    pairs: set[tuple[int, int]] = set()
    for events in files.values():
        last_w: int | None = None
        first: int | None = None
        for pos, kind in events:
            if kind == "r":
                dep = last_w if last_w is not None else first
                if dep is not None:
                    pairs.add((int(pos), int(dep)))
                continue
            first = int(pos) if first is None else first
            if kind == "w":
                last_w = int(pos)
    return sorted(pairs)


def _mixed(epochs: list[int], skippable: set[int], safe: list[int]) -> list[int]:
    """The iterations a skip job over ``epochs`` (sorted) runs in full: every requested one without
    a checkpoint of its own to skip to, and those that lead to a requested one whose previous
    iteration the job neither ran nor can restore — from the latest safe checkpoint before it
    (or the last iteration the job ran, if later; or the loop's beginning)."""
    ok = set(safe)
    full: list[int] = []
    have = -1  # the job's state is the end of this iteration (-1: where the loop begins)
    for i in epochs:
        if i != have + 1 and i - 1 not in ok:
            start = max((s for s in safe if have < s < i - 1), default=have)
            full.extend(range(start + 1, i))
        if i not in skippable:
            full.append(i)
        have = i
    return full


def _segments(
    epochs: list[int], safe: list[int], times: list[float], restore_cost: dict[int, float], workers: int
) -> list[tuple[int, list[int]]]:
    """Re-execution jobs: (checkpoint to start from, requested iterations it covers).

    An iteration joins the previous job when executing the gap up to it costs no
    more than a new job (process start, restore); then, while there are fewer jobs
    than workers (this run's share of them), the costliest job is cut in two at a
    safe checkpoint inside it — only when running the halves side by side saves
    more than the new job's start and restore.
    """

    def span(a: int, b: int) -> float:
        return sum(times[max(a, 0) : max(b, 0)])

    segs: list[tuple[int, list[int]]] = []
    for i in epochs:
        start = max((s for s in safe if s < i), default=-1)
        if segs:
            last = segs[-1][1][-1]
            if span(last + 1, i) <= STARTUP + restore_cost.get(start, 0.0) + span(start + 1, i):
                segs[-1][1].append(i)
                continue
        segs.append((start, [i]))
    while len(segs) < workers:
        best: tuple[float, int, int] | None = None
        for idx, (st, eps) in enumerate(segs):
            if len(eps) < 2:
                continue
            mid = eps[len(eps) // 2]
            cut = max((s for s in safe if eps[0] <= s < mid), default=None)
            if cut is None:
                continue
            whole = span(st + 1, eps[-1] + 1)
            # The two halves run side by side: the split saves the whole minus the longer half,
            # and the new job pays a start and a restore: only a net saving is worth a job.
            saved = whole - max(span(st + 1, cut + 1), restore_cost.get(cut, 0.0) + span(cut + 1, eps[-1] + 1))
            if saved > STARTUP + restore_cost.get(cut, 0.0) and (best is None or whole > best[0]):
                best = (whole, idx, cut)
        if best is None:
            break
        _, idx, cut = best
        st, eps = segs[idx]
        segs[idx : idx + 1] = [(st, [e for e in eps if e <= cut]), (cut, [e for e in eps if e > cut])]
    return segs


def _split(epochs: list[int], parts: int) -> list[list[int]]:
    if not epochs:
        return []
    parts = max(1, min(parts, len(epochs)))
    size = -(-len(epochs) // parts)
    return [epochs[k : k + size] for k in range(0, len(epochs), size)]


def _span(epochs: list[int]) -> str:
    if not epochs:
        return "-"
    if epochs == list(range(epochs[0], epochs[-1] + 1)):
        return f"{epochs[0]}" if len(epochs) == 1 else f"{epochs[0]}..{epochs[-1]}"
    return ",".join(map(str, epochs))
