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
from ..storage.records import Record, decode_records, position_key, position_order
from . import verify
from .executors import Outcome
from .expect import shortfall
from .plan import Job, Target

if TYPE_CHECKING:
    from ..storage.repo import Repository


@dataclass
class Result:
    """What replaying one run did: the shadow commit written (if any), how many values, what failed,
    and what verified it (docs/design.md §4)."""

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


class WriteBack:
    """Collects each run's records as its jobs finish; writes the run when its last job is in."""

    def __init__(self, repo: Repository, targets: list[Target], trees: dict[str, str]) -> None:
        self.repo = repo
        self.trees = trees  # run → the propagated source tree its jobs ran
        self.targets = targets
        #: per run, each job's records, with whether that job was verified
        self.collected: dict[str, list[tuple[list[Record], bool]]] = {t.run: [] for t in targets}
        self.results = {t.run: Result(t.run) for t in targets}
        self.started = {t.run: time.time() for t in targets}
        self.remaining = {t.run: len(t.jobs) for t in targets}

    def fall_back(self, target: Target, job: Job, diverged: dict[str, Any]) -> Job:
        """``job`` re-planned more conservatively after a witness disagreed (see .verify); it
        replaces the job, so the run still waits for the same number of jobs."""
        why = f"{job.describe()}: {diverged.get('why', 'diverged')}"
        mode, start = verify.fallback(job.mode, job.epochs, job.start_from, str(diverged.get("at", "run")),
                                      target.safe, job.run_full)
        self.results[target.run].fallbacks.append(why)
        new = Job(target.run, mode, job.names, list(job.epochs), start, job.estimate,
                  fallbacks=[*job.fallbacks, why])
        new.witnesses = target.witnesses(new).count
        return new

    def collect(self, target: Target, job: Job, outcome: Outcome, out: Path, status: dict[str, Any]) -> None:
        """Take one finished job's records (from its ``out`` file, marked verified or not), what its
        child says it verified, or note its failure."""
        result = self.results[target.run]
        unverified = status.get("unverified")
        checked = {"values": int(status.get("values", 0)), "fingerprints": int(status.get("fingerprints", 0))}
        entry: dict[str, Any] = {
            "mode": job.mode, "epochs": job.epochs, "run_full": job.run_full, "start_from": job.start_from,
            "verified_by": checked,
            "status": "unverified" if unverified else "verified", "fallbacks": job.fallbacks,
        }
        if unverified:
            entry["why"] = unverified
        result.jobs.append(entry)
        if outcome.returncode != 0:
            last = (outcome.stderr.strip().splitlines() or ["no output"])[-1]
            result.failures.append(f"{job.describe()}: exit {outcome.returncode}: {last}")
            entry["status"] = "failed"
            return
        # the out file is absent when the script never reached a flor call
        records = decode_records(out.read_bytes(), origin=str(out)) if out.is_file() else []
        self.collected[target.run].append((records, not unverified))
        if unverified and records:
            result.unverified.append(f"{job.describe()}: {unverified}")
        short = shortfall(target, job, records)
        if short:  # never "0 values, exit 0"
            result.failures.append(f"{job.describe()}: {short}")
        result.checked_values += checked["values"]
        result.checked_fps += checked["fingerprints"]
        for name, error in sorted((status.get("failed") or {}).items()):
            result.failures.append(f"`{name}` raised {error} in this version (its values only)")

    def job_done(self, target: Target) -> None:
        """One job of ``target`` is accounted for; the last one writes the run back."""
        self.remaining[target.run] -= 1
        if self.remaining[target.run] == 0:
            self._write(target)

    def interrupted(self) -> None:
        """Ctrl-C: write back what finished of runs that were part-way through."""
        for target in self.targets:
            if self.remaining[target.run] > 0 and self.collected[target.run]:
                self.results[target.run].failures.append("interrupted")
                self._write(target)

    def all_results(self) -> list[Result]:
        return list(self.results.values())

    def _write(self, target: Target) -> None:
        result = self.results[target.run]
        records = self.collected[target.run]
        # Verified first: where two jobs produced a value, the verified one is kept.
        merged = merge_records([rs for rs, ok in records if ok])
        have = {(n, position_key(pos)) for n, _, pos in merged}
        unverified = [r for r in merge_records([rs for rs, ok in records if not ok])
                      if (r[0], position_key(r[2])) not in have]
        result.values = len(merged) + len(unverified)
        result.unverified_values = len(unverified)
        if not merged and not unverified:
            return
        result.shadow = commit_replay(self.repo, ReplayResult(
            replay_of=target.run, meta=target.meta, tree=self.trees[target.run], names=target.names,
            jobs=result.jobs, records=merged, start=self.started[target.run], end=time.time(),
            errors=result.failures, unverified=unverified,
            verified_by={"values": result.checked_values, "fingerprints": result.checked_fps},
        ))


def merge_records(jobs: list[list[Record]]) -> list[Record]:
    """Each job's records merged in loop order: jobs may overlap (a segment's first epoch).

    A (name, loop position) comes from the first job that has it, with *all* its values
    there: a statement in a plain ``for`` (or ``while``) of the epoch body logs many
    values at one position, as the recorded run would have.
    """
    owner: dict[tuple[str, tuple[Any, ...]], int] = {}
    kept: list[Record] = []
    for k, records in enumerate(jobs):
        for name, value, pos in records:
            key = (name, position_key(pos))  # the two phases' epoch 0 are two positions
            if owner.setdefault(key, k) == k:
                kept.append((name, value, pos))
    return sorted(kept, key=lambda r: position_order(r[2]))  # stable: a position's values keep their order


def describe_failures(results: list[Result]) -> list[str]:
    return [f"run {r.run}: {f}" for r in results for f in r.failures]
