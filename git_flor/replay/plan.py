"""Planning a replay: which runs, which iterations, which strategy, what it will cost.

For each recorded run the requested statements are carried into the run's own
snapshot (its shadow commit's ``src/``, uncommitted edits included), their
positions read (:mod:`.strategy`), and jobs made: each job is one process that
replays one run in one mode over some iterations. Independent jobs — different
runs, different iterations of a skip, different re-execution segments each
starting from its own checkpoint — run in parallel.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pygit2

from ..propagate import PropagationError, flor_statement_names, propagate_source
from ..storage import files
from ..storage.checkpoints import read_manifest
from ..storage.index import HINDSIGHT, RECORDED, chunks
from ..storage.records import LOOPS_FILE, SRC_DIR
from ..storage.remote_store import local_payload, store_url
from ..storage.repo import workdir
from .expect import expectations
from .strategy import analyse

#: Seconds to start Python and import a training script's libraries (a rough prior).
STARTUP = 0.6


@dataclass
class Job:
    run: str
    mode: str  # prefix | suffix | skip | reexec | full
    names: list[str]
    epochs: list[int] = field(default_factory=list)
    start_from: int = -1
    estimate: float = 0.0

    def describe(self) -> str:
        if self.mode in ("prefix", "suffix", "full"):
            return self.mode
        span = _span(self.epochs)
        if self.mode == "reexec":
            origin = "start" if self.start_from < 0 else f"checkpoint {self.start_from}"
            return f"re-execute {span} from {origin}"
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
    #: name → "each"/"once": how many values a job must bring back (see .expect)
    expect: dict[str, str] = field(default_factory=dict)


@dataclass
class Plan:
    targets: list[Target]
    skipped: list[tuple[str, str]]  # (run, why nothing to do)
    failed: list[tuple[str, str]]  # (run, why it cannot be replayed)

    @property
    def jobs(self) -> list[Job]:
        return [j for t in self.targets for j in t.jobs]

    def to_json(self) -> dict[str, Any]:
        return {
            "jobs": [
                {"run": j.run, "mode": j.mode, "names": j.names, "epochs": j.epochs,
                 "start_from": j.start_from, "estimate_seconds": round(j.estimate, 3), "plan": j.describe()}
                for j in self.jobs
            ],
            "skipped": [{"run": r, "why": w} for r, w in self.skipped],
            "failed": [{"run": r, "why": w} for r, w in self.failed],
            "estimate_seconds": round(sum(j.estimate for j in self.jobs), 3),
        }


def plan(
    repo: pygit2.Repository,
    conn: Any,
    runs: list[str],
    names: list[str],
    *,
    iters: dict[str, set[int]] | None = None,
    force: bool = False,
    workers: int = 1,
) -> Plan:
    targets: list[Target] = []
    skipped: list[tuple[str, str]] = []
    failed: list[tuple[str, str]] = []
    root = workdir(repo)
    store = store_url(repo)
    today_cache: dict[str, str | None] = {}  # path → today's text
    for run_id in runs:
        row = conn.execute("SELECT shadow, meta FROM runs WHERE run = ?", (run_id,)).fetchone()
        shadow, meta = row[0], json.loads(row[1])
        script = meta.get("script") or ""
        if not (root / script).is_file():
            skipped.append((run_id, f"its script {script!r} is not in today's working tree"))
            continue
        commit = repo[shadow].peel(pygit2.Commit)
        sources, wanted, problems = _carry(repo, commit, script, names, lambda p: _today(root, p, today_cache))
        if problems:
            failed.append((run_id, "; ".join(problems)))
            continue
        if not wanted:
            skipped.append((run_id, f"today's code of {script} has no flor.log of {', '.join(names)}"))
            continue
        past_script = files.read(repo, repo[commit.tree[SRC_DIR].id], script)
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
        loops = json.loads(repo[commit.tree[LOOPS_FILE].id].data) if LOOPS_FILE in commit.tree else []
        target = Target(run_id, meta, shadow, script_source, wanted, shape.outer_loop, sources)
        _jobs(target, shape, manifest, loops, _existing(conn, run_id, wanted), iters, force, workers)
        _own_outputs(target, manifest, loops)
        target.expect = expectations(script_source, shape.positions)
        if target.jobs:
            targets.append(target)
        else:
            skipped.append((run_id, "already computed (use --force to recompute)"))
    return Plan(targets, skipped, failed)


def _today(root: Path, path: str, cache: dict[str, str | None]) -> str | None:
    if path not in cache:
        full = root / path
        cache[path] = full.read_text(errors="replace") if full.is_file() else None
    return cache[path]


def _carry(
    repo: pygit2.Repository, commit: pygit2.Commit, script: str, names: list[str], today_of: Any
) -> tuple[dict[str, str], list[str], list[str]]:
    """Propagate today's statements into every file of the run's snapshot that has them today.

    A statement added in a module the script imports (``model.py``) is carried there too.
    Returns (propagated sources by path, the names found, problems).
    """
    src = repo[commit.tree[SRC_DIR].id]
    sources: dict[str, str] = {}
    wanted: list[str] = []
    problems: list[str] = []
    for path in [script] + [p for p in files.python_paths(repo, src) if p != script]:
        today = today_of(path)
        if today is None or not any(n in today for n in names):  # cheap before parsing
            continue
        here = [n for n in names if n in set(flor_statement_names(today))]
        past = files.read(repo, src, path)
        if not here or past is None:
            continue
        try:
            result = propagate_source(today, past, here)
        except PropagationError as exc:
            problems.append(f"today's {path} cannot be read: {exc}")
            continue
        if not result.ok:
            problems.extend(f"{path}: {f}" for f in result.failures)
            continue
        sources[path] = result.source
        wanted.extend(n for n in here if n not in wanted)
    return sources, wanted, problems


def _available(
    repo: pygit2.Repository, manifest: dict[int, dict[str, Any]], store: str | None
) -> dict[int, dict[str, Any]]:
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


def _existing(conn: Any, run_id: str, names: list[str]) -> dict[str, set[int] | None]:
    """Per name, the outer-loop iterations that already have a value (None: a value outside loops)."""
    out: dict[str, set[int] | None] = {}
    for ch in chunks(conn, names, [run_id]):
        if ch.src not in (RECORDED, HINDSIGHT):
            continue
        if not ch.dims:
            out[ch.name] = None
        elif out.get(ch.name, set()) is not None:
            out.setdefault(ch.name, set()).update(int(v) for v in ch.pos[:, 0])  # type: ignore[union-attr]
    return out


def _jobs(
    target: Target,
    shape: Any,
    manifest: dict[int, dict[str, Any]],
    loops: list[dict[str, Any]],
    existing: dict[str, set[int] | None],
    iters: dict[str, set[int]] | None,
    force: bool,
    workers: int,
) -> None:
    outer = loops[0] if loops else {"iters": [], "start": target.meta.get("start", 0)}
    n = len(outer.get("iters", []))
    times = outer.get("iters", [])
    pre = max(0.0, float(outer.get("start", 0)) - float(target.meta.get("start", 0)))
    requested = set(range(n))
    if iters and target.loop in iters:
        requested &= iters[target.loop]
    safe = sorted(i for i, e in manifest.items() if not e.get("unsaved"))
    restore_cost = {i: float(e.get("seconds", 0.0)) for i, e in manifest.items()}

    def est(mode: str, epochs: list[int], start: int = -1) -> float:
        base = STARTUP + pre
        if mode == "prefix":
            return base
        if mode == "full":
            return base + sum(times) + float(target.meta.get("duration", 0)) * 0.05
        if mode == "suffix":
            return base + restore_cost.get(n - 1, 0.0)
        if mode == "reexec":
            return base + restore_cost.get(start, 0.0) + sum(times[start + 1 : max(epochs) + 1])
        return base + sum(2 * restore_cost.get(i, 0.0) + 0.05 * times[i] for i in epochs if i < n)

    todo: dict[str, list[int]] = {}
    kinds: dict[str, str] = {}
    for name in target.names:
        positions = shape.positions.get(name) or []
        where = {p.where for p in positions}
        if "unknown" in where or not positions:
            kinds[name] = "full"
        elif where & {"step"} or any(p.where == "epoch" and not p.skip_safe for p in positions):
            kinds[name] = "reexec"
            target.reasons[name] = next((p.reason for p in positions if p.reason), "")
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
    if not kinds:
        return
    if "full" in kinds.values():
        target.jobs.append(Job(target.run, "full", sorted(kinds), list(range(n)), -1, est("full", [])))
        return
    loop_names = [k for k, v in kinds.items() if v in ("skip", "reexec")]
    prefix_names = [k for k, v in kinds.items() if v == "prefix"]
    if loop_names:
        epochs = sorted(set().union(*(todo[k] for k in loop_names)))
        skip_ok = all(kinds[k] == "skip" for k in loop_names)
        skip_epochs = [
            i for i in epochs
            if skip_ok and (i == 0 or i - 1 in safe) and i in manifest and not manifest[i].get("unsaved")
        ] if skip_ok else []
        rest = [i for i in epochs if i not in set(skip_epochs)]
        names = loop_names + prefix_names
        for chunk in _split(skip_epochs, workers):
            target.jobs.append(Job(target.run, "skip", names, chunk, -1, est("skip", chunk)))
        for start, seg in _segments(rest, safe, times, restore_cost, workers):
            target.jobs.append(Job(target.run, "reexec", names, seg, start, est("reexec", seg, start)))
    elif prefix_names:
        target.jobs.append(Job(target.run, "prefix", prefix_names, [], -1, est("prefix", [])))
    suffix_names = [k for k, v in kinds.items() if v == "suffix"]
    if suffix_names:
        if n and n - 1 in safe:
            target.jobs.append(Job(target.run, "suffix", suffix_names, [], -1, est("suffix", [])))
        else:
            target.jobs.append(Job(target.run, "full", suffix_names, [], -1, est("full", [])))


def _own_outputs(target: Target, manifest: dict[int, dict[str, Any]], loops: list[dict[str, Any]]) -> None:
    """Re-plan jobs that would read a file the original run wrote *before* where the job starts.

    Such a job would read whatever is on disk today — maybe another run's ``best.npy``.
    It must start from before the write so that it reads the one it writes itself:
    a re-execution from the latest safe checkpoint before it (or from the start);
    a suffix job becomes a full re-execution. Positions: -1 before the outer loop,
    ``i`` in iteration ``i``, ``n`` after the loop, -2 unknown (see ``runtime.outputs``).
    """
    pairs = _reads_of_own_writes(target.meta)
    if not pairs or not target.jobs:
        return
    n = len(loops[0].get("iters", [])) if loops else 0
    safe = sorted(i for i, e in manifest.items() if not e.get("unsaved"))
    jobs: list[Job] = []
    for job in target.jobs:
        if job.mode == "reexec":
            ran = set(range(job.start_from + 1, max(job.epochs) + 1)) | {-1}
            bad = [w for r, w in pairs if r in ran and w not in ran]
        elif job.mode == "skip":  # a write in this iteration may be inside a skipped loop
            bad = [w for r, w in pairs if r in set(job.epochs) and w != -1]
        elif job.mode == "suffix":
            bad = [w for r, w in pairs if r >= n and w not in (-1, n)]
        else:
            bad = []
        if not bad:
            jobs.append(job)
        elif job.mode == "suffix":
            jobs.append(Job(job.run, "full", job.names, [], -1, job.estimate))
            target.reasons.update({k: "reads a file the run wrote in its loop" for k in job.names})
        else:
            start = max((c for c in safe if c < min(bad)), default=-1)
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


def _segments(
    epochs: list[int], safe: list[int], times: list[float], restore_cost: dict[int, float], workers: int
) -> list[tuple[int, list[int]]]:
    """Re-execution jobs: (checkpoint to start from, requested iterations it covers).

    An iteration joins the previous job when executing the gap up to it costs no
    more than a new job (process start, restore); then, while there are fewer jobs
    than workers, the costliest job is cut in two at a safe checkpoint inside it.
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
            if cut is not None and (best is None or span(st + 1, eps[-1] + 1) > best[0]):
                best = (span(st + 1, eps[-1] + 1), idx, cut)
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


def scratch_path(base: Path, target: Target, index: int) -> Path:
    return base / target.run / str(index)
