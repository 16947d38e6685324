"""Verified replay, the parent's half: what witnesses each job is checked by, and what to do on a mismatch.

Static analysis plans; the original run judges (docs/design.md §7). A job is
*strict* when it starts from a checkpoint or skips work: its child compares
every recorded value it recomputes and the state fingerprint at every restore
and iteration end it reaches against the original run's, and stops at the first
difference (``runtime.replay_mode.DIVERGED``). Its values are then discarded and the
job is re-planned more conservatively — a skip becomes a re-execution from a
checkpoint, a re-execution from a checkpoint becomes one from the start — so a
wrong value is never published. A job from the start cannot fall back further:
a difference there means the script is not deterministic, and its values are
kept marked ``unverified``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..storage.records import Record, dumps, position_key

if TYPE_CHECKING:
    from .plan import Entries


@dataclass
class Witnesses:
    """The original run's records and fingerprints, as a job's child needs them."""

    records: list[list[Any]] = field(default_factory=list)  # [name, [[loop, index], ...], JSON value]
    fingerprints: dict[int, dict[str, str]] = field(default_factory=dict)
    #: skip jobs: per iteration, the state where each nested loop ended (what a skip restores)
    nested: dict[int, list[dict[str, str]]] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.records) + len(self.fingerprints) + sum(len(v) for v in self.nested.values())


def strict(mode: str, start_from: int) -> bool:
    """Whether a job rests on a checkpoint or on skipped work (and so can fall back)."""
    return mode in ("skip", "suffix") or (mode == "reexec" and start_from >= 0)


def covered(mode: str, epochs: list[int], start_from: int, n: int, run_full: list[int] | None = None) -> list[int]:
    """Outer iterations (flat numbers) a job's child executes (in full or with nested loops skipped)."""
    if mode == "full":
        return list(range(n))
    if mode == "skip":
        return sorted(set(epochs) | set(run_full or []))
    if mode == "reexec" and epochs:
        return list(range(start_from + 1, max(epochs) + 1))
    return []


def witnesses(
    mode: str,
    epochs: list[int],
    start_from: int,
    entries: Entries,
    outer: str | None,
    records: list[Record],
    fingerprints: dict[int, dict[str, str]],
    nested: dict[int, list[dict[str, str]]] | None = None,
    run_full: list[int] | None = None,
) -> Witnesses:
    """What a job is verified by: the records it passes and the fingerprints it reaches.

    ``entries``: the original's outer loop entry by entry (``replay.plan.Entries``): iterations
    are numbered flat across entries, as checkpoints and fingerprints are. Every job runs the
    script's prefix, so the records logged outside the outer loop are always witnesses
    (checked in order as they are logged again); so is the code between two entries, which a
    child runs after passing over an entry by restoring its last iteration's checkpoint.
    """
    n = entries.total
    its = set(covered(mode, epochs, start_from, n, run_full))
    full = set(run_full or []) if mode == "skip" else set()
    out = Witnesses()
    for name, value, pos in records:
        if mode == "skip" and len(pos) > 1 and (pos[0][0] != outer or entries.flat_of(pos) not in full):
            continue  # inside a nested loop the skip does not run (it runs where run_full says)
        # another loop entered at the top level runs in a full job, and after the outer loop in a suffix
        if not pos or (pos[0][0] == outer and entries.flat_of(pos) in its) \
                or (mode in ("full", "suffix") and pos[0][0] != outer):
            out.records.append([name, [list(f) for f in position_key(pos)], dumps(value)])
    reach = set(its) | {-1}  # -1: where the loop began (see runtime.checkpoint.BEGIN)
    last = max(epochs) if epochs else n - 1
    passed = {g for g in entries.lasts() if g < last}  # entries a child passes over before its work
    if mode == "skip":
        reach |= {i - 1 for i in its if i > 0} | passed  # each restore of the previous iteration's end
    elif mode == "reexec" and start_from >= 0:
        reach |= {start_from} | {g for g in passed if g < start_from}
    elif mode == "suffix" and n:
        reach |= set(entries.lasts())
    out.fingerprints = {i: fingerprints[i] for i in sorted(reach) if i in fingerprints}
    if mode == "skip" and nested:
        out.nested = {i: nested[i] for i in epochs if i in nested and i not in full}
    return out


def fallback(mode: str, epochs: list[int], start_from: int, at: str, safe: list[int],
             run_full: list[int] | None = None) -> tuple[str, int]:
    """The more conservative (mode, start) after a strict job diverged ``at`` "restore" or "run".

    A checkpoint whose restored state already differs is not trusted again (nor are
    later ones: they were taken the same way), so that goes back to the start. A
    skip that diverged while running re-executes from the nearest checkpoint before
    its first iteration; anything else goes to the start.
    """
    if mode == "suffix":
        return "full", -1
    if mode == "skip" and at == "run" and epochs:
        first = min([*epochs, *(run_full or [])])
        start = max((s for s in safe if s < first), default=-1)
        return "reexec", start
    return "reexec", -1


def without_witness(job_mode: str, start_from: int, w: Witnesses) -> bool:
    """A strict job nothing could verify (e.g. a run recorded before fingerprints existed)."""
    return strict(job_mode, start_from) and w.count == 0
