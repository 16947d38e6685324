"""``git flor replay``: fill in hindsight values for past runs."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import EXIT_OK, EXIT_PARTIAL, CheckFailed, Partial, Unverified, UsageError
from ..query.runs import resolve_run, run_ids
from ..query.strict_json import strict_dumps
from ..replay.executors import LocalExecutor, Outcome, kept_alive
from ..replay.isolation import Isolation, choose, outside_dirs
from ..replay.jobs import execute, warm_server
from ..replay.plan import Job, Plan, plan
from ..replay.writeback import describe_failures
from ..runtime.replay_mode import DIVERGED
from ..storage.index import connect, stored_run
from ..storage.repo import config_value
from .common import open_session, parse_iters

#: when this module was imported (the fallback origin of :func:`_elapsed`)
_IMPORTED = time.monotonic()

if TYPE_CHECKING:
    from ..replay.ray_executor import RayExecutor


def replay(
    selectors: Sequence[str],
    apply: Sequence[str],
    *,
    iters: Sequence[str] = (),
    where: str | None = None,
    workers: int | None = None,
    dry_run: bool = False,
    force: bool = False,
    trust_checkpoints: bool = False,
    fmt: str = "table",
    confirm: Callable[[str], bool] | None = None,
    executor: str | None = None,
) -> int:
    names = [n for spec in apply for n in spec.split(",") if n]
    if not names:
        raise UsageError("say which values to fill in: --apply NAME[,NAME...]")
    chosen_iters = parse_iters(iters)
    repo = open_session()
    kind = executor or config_value(repo, "flor.executor") or "local"
    if kind not in EXECUTORS:
        raise UsageError(f"unknown executor {kind!r} (from --executor or `git config flor.executor`): "
                         f"use one of {', '.join(EXECUTORS)}")
    runner: RayExecutor | None = None
    if kind == "ray" and not dry_run:
        runner = _ray(repo, workers)
        if runner.address and not workers:  # a cluster: its CPUs say how finely to split the work
            workers = runner.cpus()  # (a local Ray gets the cores, and starts only when there is work)
    workers = workers or os.cpu_count() or 1
    # (a warm worker started early dies with this process if planning fails; a kept one idles out)
    local = LocalExecutor(workers) if runner is None and not dry_run else None
    conn = connect(repo)
    try:
        run_ids = _select(repo, conn, selectors, where)
        _check_names(repo, conn, run_ids, names)
        selected = _elapsed()  # where the first warm worker starts (the estimate counts it from here)
        first = _first_warm(repo, conn, run_ids[0]) if run_ids else None
        warm_ready = first is not None and kept_alive(*first)
        if local is not None and first is not None:
            local.prestart(*first)
        the_plan = plan(repo, conn, run_ids, names, iters=chosen_iters or None, force=force, workers=workers,
                        trust_checkpoints=trust_checkpoints, fit_threads=runner is None)
    finally:
        conn.close()
    isolation = _isolation(repo, the_plan) if the_plan.jobs else None
    the_plan.overhead = _elapsed()  # what the replay pays before its first job (the estimate's start)
    the_plan.selected = selected
    the_plan.warm_ready = warm_ready
    _show(the_plan, fmt, isolation)
    if dry_run or not the_plan.jobs:
        _close(runner, local)
        return EXIT_PARTIAL if the_plan.failed else EXIT_OK
    total = the_plan.wall()
    where_to = "on the Ray cluster's" if kind == "ray" else "on"
    if confirm is not None and not confirm(f"Replay {len(the_plan.jobs)} job(s), about {total:.0f} s {where_to} {workers} worker(s)?"):
        _close(runner, local)
        print("nothing replayed", file=sys.stderr)
        return EXIT_OK
    violations: list[str] = []
    with _Progress() as progress:
        try:
            results = execute(repo, the_plan, runner or local or LocalExecutor(workers), progress, isolation,
                              violations)
        finally:
            _close(runner, local)  # a local Ray started for this command stops here
    failures = describe_failures(results) + [f"run {r}: {w}" for r, w in the_plan.failed]
    _summary(results)
    if violations:
        for failure in failures:
            print(f"git flor replay: {failure}", file=sys.stderr)
        for path in violations:
            print(f"git flor replay: ISOLATION VIOLATED: {path} changed while the replay ran", file=sys.stderr)
        raise CheckFailed(
            f"{len(violations)} of your files changed during the replay ({isolation.mode if isolation else '?'} "
            "isolation); restore them from your backups or VCS and report this"
        )
    if failures:
        raise Partial("; ".join(failures) + " (the other runs' values were kept)")
    unverified = [f"run {r.run}: {why}" for r in results for why in r.unverified]
    if unverified:
        n = sum(r.unverified_values for r in results)
        raise Unverified(
            f"{n} value(s) are unverified: re-executed from the start, the script did not reproduce its own "
            f"recorded values or state, so it is not deterministic ({unverified[0]}); they are stored and "
            "show as 'hindsight (unverified)' in git flor log --provenance — seed every RNG to make them exact"
        )
    return EXIT_OK


def _check_names(repo: Any, conn: Any, ids: list[str], names: list[str]) -> None:
    """Refuse (exit 2) a name today's code never logs, naming the ones it does: a typo in
    --apply would otherwise read as "nothing to replay"."""
    if not ids:
        return
    from ..propagate import flor_statement_names
    from ..storage.gitcmd import git
    from ..storage.repo import workdir

    root = workdir(repo)
    listed = git(["ls-files", "-z", "-c", "-o", "--exclude-standard", "--", "*.py"], root, check=False)
    texts: dict[str, str] = {}
    for path in filter(None, listed.stdout.split("\0")):
        try:
            texts[path] = (root / path).read_text(errors="replace")
        except OSError:
            continue
    logged: dict[str, list[str]] = {}

    def names_in(path: str) -> list[str]:
        if path not in logged:
            logged[path] = flor_statement_names(texts[path]) if path in texts else []
        return logged[path]

    unknown = [n for n in names if not any(n in text and n in names_in(p) for p, text in texts.items())]
    if not unknown:
        return
    scripts = sorted({json.loads(m).get("script") or "" for (m,) in conn.execute(
        f"SELECT meta FROM runs WHERE run IN ({', '.join('?' * len(ids))})", ids)})
    have = sorted({n for script in scripts for n in names_in(script)})
    raise UsageError(
        f"today's code has no flor.log of {', '.join(map(repr, unknown))}; "
        f"{', '.join(scripts) or 'the scripts'} log{'s' if len(scripts) == 1 else ''}: "
        f"{', '.join(have) or 'nothing'} — add the flor.log statement first, then replay"
    )


def _summary(results: list[Any]) -> None:
    """What was written and what it was verified by; every fallback with its first mismatch."""
    values = sum(r.values for r in results)
    checked = sum(r.checked_values for r in results)
    fps = sum(r.checked_fps for r in results)
    print(f"replayed {len(results)} run(s): {values} hindsight value(s) written, verified by {checked} "
          f"recorded value(s) and {fps} state fingerprint(s) of the original runs", file=sys.stderr)
    fallbacks = [(r.run, why) for r in results for why in r.fallbacks]
    if fallbacks:
        print(f"{len(fallbacks)} segment(s) fell back to a more conservative plan because the replay differed "
              "from the original run:", file=sys.stderr)
        for run, why in fallbacks:
            print(f"  run {run}: {why}", file=sys.stderr)


#: What ``--executor`` / ``git config flor.executor`` may name.
EXECUTORS = ("local", "ray")


def _ray(repo: object, workers: int | None) -> RayExecutor:
    """The Ray executor for RAY_ADDRESS or ``flor.ray.address``, else for a local Ray started when jobs run."""
    from ..replay.ray_executor import RayExecutor  # imports ray: only when asked for
    from ..storage.remote_store import store_url

    address = os.environ.get("RAY_ADDRESS") or config_value(repo, "flor.ray.address")  # type: ignore[arg-type]
    return RayExecutor(address, store_url(repo), workers or os.cpu_count() or 1)  # type: ignore[arg-type]


def _close(runner: RayExecutor | None, local: LocalExecutor | None = None) -> None:
    if runner is not None:
        runner.close()
    if local is not None:
        local.close()  # (a warm server started early that no job used)


def _first_warm(repo: Any, conn: Any, run_id: str) -> tuple[tuple[str, ...], dict[str, str]] | None:
    """(imports, environment) of the first run's warm server, known before planning: it starts
    then (``LocalExecutor.prestart``), or an earlier command's kept one is there already."""
    from ..storage.repo import workdir

    root = workdir(repo)
    try:
        meta = stored_run(conn, run_id).meta
        source = (root / str(meta.get("script") or "")).read_text(errors="replace")
    except (KeyError, OSError, ValueError):
        return None  # nothing to guess from: the server starts with the first job
    return warm_server(meta, source, root)


def _select(repo: object, conn: object, selectors: Sequence[str], where: str | None) -> list[str]:
    ids = run_ids(repo, conn)  # type: ignore[arg-type]
    if selectors:
        chosen: set[str] = set()
        for sel in selectors:
            if ".." not in sel and any(r.startswith(sel) for r in ids):
                chosen.add(resolve_run(ids, sel))
            else:
                chosen.update(run_ids(repo, conn, rev=sel))  # type: ignore[arg-type]
        ids = [r for r in ids if r in chosen]
    if where:
        from ..query.table import build  # pandas only when a --where needs it

        table = build(repo, conn, [], where=where, runs=ids or None)  # type: ignore[arg-type]
        ids = [r for r in ids if r in set(table["run"])]
    return ids


def _elapsed() -> float:
    """Seconds since this process started (Linux: its start time in /proc; elsewhere since the
    CLI was imported, which leaves out only the interpreter's own start)."""
    try:
        with open("/proc/self/stat") as fh:
            ticks = int(fh.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime
        with open("/proc/uptime") as fh:
            uptime = float(fh.read().split()[0])
        return max(0.0, uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.monotonic() - _IMPORTED


def _isolation(repo: Any, the_plan: Plan) -> Isolation:
    """How the jobs' children will be kept away from the user's files (a probe in a throwaway child)."""
    from ..storage.repo import workdir

    root = workdir(repo)
    return choose(root, outside_dirs(root, [t.meta for t in the_plan.targets]))


def _show(the_plan: Plan, fmt: str, isolation: Isolation | None = None) -> None:
    if isolation is not None:
        print(isolation.describe(), file=sys.stderr)
    if fmt == "json":
        data = the_plan.to_json()
        if isolation is not None:
            data["isolation"] = isolation.to_json()
        sys.stdout.write(strict_dumps(data, indent=2) + "\n")
        return
    rows = [(j.run, j.mode, ",".join(j.names), j.describe(), f"{j.estimate:.1f}s", _verified_by(j))
            for j in the_plan.jobs]
    if rows:
        header = ("run", "mode", "names", "plan", "estimate", "verified by")
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
        for row in [header, *rows]:
            print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
        total = sum(j.estimate for j in the_plan.jobs)
        print(f"{len(rows)} job(s), estimated {total:.1f} s of work, about {the_plan.wall():.1f} s on "
              f"{min(the_plan.workers, len(rows))} worker(s)")
    for run, why in the_plan.skipped:
        print(f"skip {run}: {why}", file=sys.stderr)
    for run, why in the_plan.failed:
        print(f"cannot replay {run}: {why}", file=sys.stderr)
    if not rows:
        print("nothing to replay", file=sys.stderr)


def _verified_by(job: Job) -> str:
    if not job.strict:
        return "from the start" + (f" ({job.fallbacks[0]})" if job.fallbacks else "")
    return f"{job.witnesses} witness(es)"


class _Progress:
    """One progress bar per replay job on a terminal; a line per finished job otherwise.

    Children count their outer iterations in a small file each; a thread polls those
    files and moves the bars (tqdm), so no pipe to the children is needed.
    """

    def __init__(self) -> None:
        self.bars: list[Any] = []
        self.files: list[Path] = []
        self.live = sys.stderr.isatty()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.total = self.done = 0  # jobs of every round so far, and how many finished
        self.offset = 0  # the first bar of the current round

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        for bar in self.bars:
            bar.close()

    def begin(self, jobs: list[tuple[Job, Path, int]]) -> None:
        """A round of jobs (the first, or the fallbacks of segments that diverged)."""
        self.offset = len(self.bars)
        self.total += len(jobs)
        if not self.live:
            return
        from tqdm import tqdm

        for pos, (job, path, length) in enumerate(jobs, self.offset):
            label = f"{job.run} {job.describe()}"
            self.bars.append(tqdm(total=max(length, 1), desc=label[:48], position=pos, unit="it",
                                  leave=True, file=sys.stderr, dynamic_ncols=True))
            self.files.append(path)
        if self._thread is None:
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(0.2):
            for bar, path in zip(self.bars, self.files):
                try:
                    count = int(path.read_text() or 0)
                except (OSError, ValueError):
                    continue
                if count > bar.n:
                    bar.update(min(count, bar.total) - bar.n)

    def end(self, key: int, job: Job, outcome: Outcome) -> None:
        self.done += 1
        state = "ok" if outcome.returncode == 0 else (
            "diverged from the original run: falling back" if outcome.returncode == DIVERGED
            else f"FAILED (exit {outcome.returncode})")
        if self.live:
            bar = self.bars[self.offset + key]
            bar.update(bar.total - bar.n)
            bar.set_postfix_str(f"{state} {outcome.seconds:.2f}s")
            return
        print(f"[{self.done}/{self.total}] run {job.run} {job.describe()}: {state} in {outcome.seconds:.2f}s",
              file=sys.stderr, flush=True)
