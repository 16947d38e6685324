"""Writing a replay back: each run's hindsight records, merged, as one shadow commit.

Jobs of one run finish in any order (and on any worker). Their records are
collected per run; when the run's last job is in, they are merged — one value
per (name, loop position), in loop order — and handed to storage as a
:class:`~git_flor.storage.hindsight.ReplayResult`. A run with a failed job is
written as far as it got and marked partial; other runs are unaffected.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..storage.hindsight import ReplayResult, commit_replay
from ..storage.records import Record, decode_records
from .executors import Outcome
from .plan import Job, Target

if TYPE_CHECKING:
    from ..storage.repo import Repository


@dataclass
class Result:
    """What replaying one run did: the shadow commit written (if any), how many values, what failed."""

    run: str
    shadow: str | None = None
    values: int = 0
    failures: list[str] = field(default_factory=list)


class WriteBack:
    """Collects each run's records as its jobs finish; writes the run when its last job is in."""

    def __init__(self, repo: Repository, targets: list[Target], trees: dict[str, str]) -> None:
        self.repo = repo
        self.trees = trees  # run → the propagated source tree its jobs ran
        self.targets = targets
        self.collected: dict[str, list[Record]] = {t.run: [] for t in targets}
        self.results = {t.run: Result(t.run) for t in targets}
        self.started = {t.run: time.time() for t in targets}
        self.remaining = {t.run: len(t.jobs) for t in targets}

    def collect(self, target: Target, job: Job, outcome: Outcome, out: Path) -> None:
        """Take one finished job's records (from its ``out`` file), or note its failure."""
        if outcome.returncode == 0:
            if out.is_file():  # absent when the script never reached a flor call
                self.collected[target.run].extend(decode_records(out.read_bytes(), origin=str(out)))
        else:
            last = (outcome.stderr.strip().splitlines() or ["no output"])[-1]
            self.results[target.run].failures.append(f"{job.describe()}: exit {outcome.returncode}: {last}")

    def job_done(self, target: Target) -> None:
        """One job of ``target`` is accounted for; the last one writes the run back."""
        self.remaining[target.run] -= 1
        if self.remaining[target.run] == 0:
            self._write(target)

    def interrupted(self) -> None:
        """Ctrl-C: write back what finished of runs that were part-way through."""
        for target in self.targets:
            if 0 < self.remaining[target.run] < len(target.jobs) and self.collected[target.run]:
                self.results[target.run].failures.append("interrupted")
                self._write(target)

    def all_results(self) -> list[Result]:
        return list(self.results.values())

    def _write(self, target: Target) -> None:
        result = self.results[target.run]
        merged = merge_records(self.collected[target.run])
        result.values = len(merged)
        if not merged:
            return
        result.shadow = commit_replay(self.repo, ReplayResult(
            replay_of=target.run, meta=target.meta, tree=self.trees[target.run], names=target.names,
            jobs=[{"mode": j.mode, "epochs": j.epochs, "start_from": j.start_from} for j in target.jobs],
            records=merged, start=self.started[target.run], end=time.time(), errors=result.failures,
        ))


def merge_records(records: list[Record]) -> list[Record]:
    """One record per (name, loop position), in loop order: jobs may overlap (a segment's first epoch)."""
    seen: set[tuple[str, tuple[Any, ...]]] = set()
    merged: list[Record] = []
    for name, value, pos in sorted(records, key=lambda r: tuple(f[1] for f in r[2])):
        key = (name, tuple((f[0], f[1]) for f in pos))
        if key not in seen:
            seen.add(key)
            merged.append((name, value, pos))
    return merged


def describe_failures(results: list[Result]) -> list[str]:
    return [f"run {r.run}: {f}" for r in results for f in r.failures]
