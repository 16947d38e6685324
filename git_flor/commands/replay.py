"""``git flor replay``: fill in hindsight values for past runs."""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import EXIT_OK, EXIT_PARTIAL, Partial, UsageError
from ..query.runs import resolve_run, run_ids
from ..replay.executors import LocalExecutor, Outcome
from ..replay.jobs import execute
from ..replay.plan import Job, Plan, plan
from ..replay.writeback import describe_failures
from ..storage.index import connect
from .common import open_session, parse_iters


def replay(
    selectors: Sequence[str],
    apply: Sequence[str],
    *,
    iters: Sequence[str] = (),
    where: str | None = None,
    workers: int | None = None,
    dry_run: bool = False,
    force: bool = False,
    fmt: str = "table",
    confirm: Callable[[str], bool] | None = None,
) -> int:
    names = [n for spec in apply for n in spec.split(",") if n]
    if not names:
        raise UsageError("say which values to fill in: --apply NAME[,NAME...]")
    workers = workers or os.cpu_count() or 1
    chosen_iters = parse_iters(iters)
    repo = open_session()
    conn = connect(repo)
    try:
        run_ids = _select(repo, conn, selectors, where)
        the_plan = plan(repo, conn, run_ids, names, iters=chosen_iters or None, force=force, workers=workers)
    finally:
        conn.close()
    _show(the_plan, fmt)
    if dry_run or not the_plan.jobs:
        return EXIT_PARTIAL if the_plan.failed else EXIT_OK
    total = sum(j.estimate for j in the_plan.jobs)
    if confirm is not None and not confirm(f"Replay {len(the_plan.jobs)} job(s), about {total:.0f} s on {workers} worker(s)?"):
        print("nothing replayed", file=sys.stderr)
        return EXIT_OK
    with _Progress() as progress:
        results = execute(repo, the_plan, LocalExecutor(workers), progress)
    failures = describe_failures(results) + [f"run {r}: {w}" for r, w in the_plan.failed]
    values = sum(r.values for r in results)
    print(f"replayed {len(results)} run(s): {values} hindsight value(s) written", file=sys.stderr)
    if failures:
        raise Partial("; ".join(failures) + " (the other runs' values were kept)")
    return EXIT_OK


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


def _show(the_plan: Plan, fmt: str) -> None:
    if fmt == "json":
        sys.stdout.write(json.dumps(the_plan.to_json(), indent=2) + "\n")
        return
    rows = [(j.run, j.mode, ",".join(j.names), j.describe(), f"{j.estimate:.1f}s") for j in the_plan.jobs]
    if rows:
        header = ("run", "mode", "names", "plan", "estimate")
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
        for row in [header, *rows]:
            print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
        total = sum(j.estimate for j in the_plan.jobs)
        print(f"{len(rows)} job(s), estimated {total:.1f} s of work")
    for run, why in the_plan.skipped:
        print(f"skip {run}: {why}", file=sys.stderr)
    for run, why in the_plan.failed:
        print(f"cannot replay {run}: {why}", file=sys.stderr)
    if not rows:
        print("nothing to replay", file=sys.stderr)


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

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        for bar in self.bars:
            bar.close()

    def begin(self, jobs: list[tuple[Job, Path, int]]) -> None:
        self.total = len(jobs)
        self.done = 0
        if not self.live:
            return
        from tqdm import tqdm

        for pos, (job, path, length) in enumerate(jobs):
            label = f"{job.run} {job.describe()}"
            self.bars.append(tqdm(total=max(length, 1), desc=label[:48], position=pos, unit="it",
                                  leave=True, file=sys.stderr, dynamic_ncols=True))
            self.files.append(path)
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
        state = "ok" if outcome.returncode == 0 else f"FAILED (exit {outcome.returncode})"
        if self.live:
            bar = self.bars[key]
            bar.update(bar.total - bar.n)
            bar.set_postfix_str(f"{state} {outcome.seconds:.2f}s")
            return
        print(f"[{self.done}/{self.total}] run {job.run} {job.describe()}: {state} in {outcome.seconds:.2f}s",
              file=sys.stderr, flush=True)
