"""Replay mode: a training script re-run by ``git flor replay`` to compute hindsight values.

The parent process (``git_flor.replay``) plans the work and starts the script in
a scratch copy of its old version with ``FLOR_REPLAY=<spec.json>``. In that mode
the runtime:

- never opens the repository: results go to the spec's ``out`` file and the
  parent writes them to git (a replay can write nothing of the user's);
- returns the recorded run's values from ``flor.arg`` and records only the
  requested names, at the requested iterations;
- drives the outermost ``flor.loop`` by the spec's mode — every entry of it (a second
  training phase enters it again), its iterations numbered flat across entries as the
  original run's checkpoints and fingerprints are (``ReplaySpec.entries``); an entry before
  the work is passed over by restoring its last iteration, so the code between entries
  runs from the state it ran from originally:
  ``prefix``  stop when the loop begins (the statements are before it);
  ``suffix``  skip every iteration, restore the end of the last, go on after the loop;
  ``skip``    per requested iteration: restore the end of the previous one, run the
              body with its nested ``flor.loop``s skipped, each replaced by a restore
              of the end of this iteration (RNG as it was when that nested loop ended);
              the iterations in ``run_full`` (those without a checkpoint to skip to,
              and those leading to them) run in full instead, each from the state the
              iteration before left — so one job per run mixes skipping and re-executing;
  ``reexec``  restore the checkpoint before the segment, run the segment's iterations
              in full;
  ``full``    run everything (a statement whose position could not be placed).
  The process exits as soon as the last needed iteration is done.

Verification (docs/design.md §7): the spec carries the
original run's witnesses for what this job covers — its recorded values and its
state fingerprints. Every recorded statement the job passes is compared bit for
bit (as its JSON encoding), every fingerprinted iteration end it reaches, and
the state right after every checkpoint restore. In a *strict* job (one that
starts from a checkpoint or skips work) the first mismatch ends the process at
once with :data:`DIVERGED` and a status naming it, so the parent discards the
job's values and re-plans it more conservatively. A job that runs from the
start is not strict: a mismatch there means the script is not deterministic,
and its values are kept marked ``unverified``.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import pickle
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from ..storage.checkpoints import PayloadStore, Pointer
from ..storage.records import dumps, entry_of, position_key
from . import serial
from .carried import LoopScope, write_vars
from .checkpoint import BEGIN, NESTED_RNG, RNG, restore
from .fingerprint import differences, fingerprint
from .state_scope import EMPTY, StateScope

#: Exit status of a strict job whose replayed state or values differ from the original run's.
DIVERGED = 86
#: A recorded value's position: the loop frames as (loop name, index), the outer one with its
#: entry when it is not the first (see ``storage.records.position_key``).
Key = tuple[str, tuple[tuple[Any, ...], ...]]


@dataclass
class ReplaySpec:
    run: str
    names: list[str]
    mode: str
    epochs: list[int]
    start_from: int  # reexec: the checkpoint iteration to restore first (-1: from the start)
    args: dict[str, Any]
    store: str
    out: str
    user_root: str
    scratch_root: str
    checkpoints: dict[int, dict[str, Any]] = field(default_factory=dict)
    progress: str = ""  # a file the parent polls: how many outer iterations are done
    #: the original's records this job may pass: [name, [[loop, index], ...], JSON of the value]
    expect_records: list[list[Any]] = field(default_factory=list)
    #: the original's fingerprints at the iteration ends (and restores) this job reaches
    expect_fps: dict[int, dict[str, str]] = field(default_factory=dict)
    #: stop at the first mismatch (a job that starts from a checkpoint or skips work)
    strict: bool = True
    status: str = ""  # where the child writes what it verified (JSON)
    #: every name the original run logged: a statement of another name is hindsight, not a witness
    recorded_names: list[str] = field(default_factory=list)
    #: skip: per iteration, the original's state where each nested loop ended
    expect_nested: dict[int, list[dict[str, str]]] = field(default_factory=dict)
    #: skip: variables no requested statement reads, changed after the skipped loop (not compared there)
    skip_ignore: list[str] = field(default_factory=list)
    #: outer iterations the original run entered, over all entries of the outer loop
    iterations: int = 0
    #: per entry of the outer loop, the iterations the original entered (flat numbers follow:
    #: entry k's iteration i is sum(entries[:k]) + i); empty: one entry of ``iterations``
    entries: list[int] = field(default_factory=list)
    #: the original run entered no more outer iterations than this (-1: its loop ran out of items);
    #: a run killed inside ``itertools.count()`` must not be replayed forever
    limit: int = -1
    #: recorded before entries were keyed: a later entry logged at the first one's positions and
    #: has no checkpoints (such runs are replayed ``full``; entries beyond the first run as they are)
    reentered: bool = False
    #: skip: lines of call statements replaced by a restore of the end of the iteration
    skip_calls: list[int] = field(default_factory=list)
    #: skip: names logged only inside those calls (not produced here, so not expected)
    skip_logged: list[str] = field(default_factory=list)
    #: skip: loop-carried variables no skipped loop or call writes and code after it changes:
    #: a skip's restore leaves them as this job computed them, so that code changes them once
    skip_keep: list[str] = field(default_factory=list)
    #: the encoding of the original's fingerprints (``storage.records.WITNESS_FORMAT``): compared in it
    witness_format: int = 1
    #: flat iterations the original left part-way (``break``, early stopping): only there may this one
    broken: list[int] = field(default_factory=list)
    #: the original's ``flor.load`` calls: their arguments and what they resolved to (``run.json`` ``loads``)
    loads: list[dict[str, Any]] = field(default_factory=list)
    #: the run's global RNG states where its script imported git-flor, pickled, base64 ("": none kept)
    rng_start: str = ""
    #: skip: iterations run in full, not skipped (requested ones without a checkpoint of their
    #: own, and those that lead to one whose previous iteration has no checkpoint either)
    run_full: list[int] = field(default_factory=list)

    @classmethod
    def load(cls, path: str) -> ReplaySpec:
        raw = json.loads(Path(path).read_text())
        raw["checkpoints"] = {
            int(i): {**e, "objects": {n: Pointer.from_json(p) for n, p in e["objects"].items()}}
            for i, e in raw.get("checkpoints", {}).items()
        }
        raw["expect_fps"] = {int(i): fp for i, fp in raw.get("expect_fps", {}).items()}
        raw["expect_nested"] = {int(i): fps for i, fps in raw.get("expect_nested", {}).items()}
        return cls(**raw)

    def to_json(self) -> str:
        data = dict(self.__dict__)
        data["checkpoints"] = {
            str(i): {**e, "objects": {n: p.__dict__ for n, p in e["objects"].items()}}
            for i, e in self.checkpoints.items()
        }
        return json.dumps(data)


class Stop(SystemExit):
    """Raised from the loop when the last needed iteration is done: the run ends normally."""

    def __init__(self) -> None:
        super().__init__(0)


class Replayer:
    """The replay-mode half of a run: which values to keep, and how the outer loop goes."""

    def __init__(self, spec: ReplaySpec) -> None:
        self.spec = spec
        self.names = frozenset(spec.names)
        self.epochs = frozenset(spec.epochs)
        self.store = PayloadStore(Path(spec.store))
        self.skip_entry: dict[str, Any] | None = None  # the end-of-iteration checkpoint (skip mode)
        self.nested_seen = 0
        self.skip_calls = frozenset(spec.skip_calls)
        self.skip_logged = frozenset(spec.skip_logged)
        self.calls_skipped = 0  # skip: call statements replaced by a restore in this iteration
        self._last_skip: tuple[int, int] = (-1, 0)  # (iteration, line) of the last skipped call
        self.current = -1  # skip: the outer iteration running
        self.run_full = frozenset(spec.run_full)
        #: skip: whether the current iteration's nested loops and calls are skipped (it is not
        #: one of ``run_full``): only then are its nested values and skip-ignored state excused
        self.skipping = False
        self.frame: FrameType | None = None
        self.scope: LoopScope | None = None
        self.state: StateScope = EMPTY
        self.done = 0
        self.outer_name: str | None = None
        sizes = spec.entries or [spec.iterations]
        #: flat number of each entry's first iteration, and one past the last entry's last
        self.offsets = [sum(sizes[:k]) for k in range(len(sizes) + 1)]
        self.sizes = sizes
        self.expected: dict[Key, list[str]] = {}
        self.by_iteration: dict[int, list[Key]] = {}
        for name, pos, value in spec.expect_records:
            key: Key = (name, tuple(tuple(f) for f in pos))
            self.expected.setdefault(key, []).append(value)
        self._outer_keys: list[Key] = [k for k in self.expected if k[1]]  # grouped once the loop is named
        self.recorded_names = frozenset(spec.recorded_names)
        #: components that differed already where the loop began in a job from the start: the
        #: prefix does not reproduce them (an unseeded RNG nothing uses), so they witness nothing
        self.ignored: frozenset[str] = frozenset()
        self.produced: dict[Key, int] = {}
        self.covered: set[int] = set()  # outer iterations this job has entered
        self.checked_values = 0
        self.checked_fps = 0
        self.unverified: str | None = None
        #: requested statements that raised here: name → the error (their own loss only)
        self.failed: dict[str, str] = {}
        self._loads_seen: dict[str, int] = {}

    def tick(self) -> None:
        """One outer iteration done: tell the parent's progress bar (a tiny file it polls)."""
        self.done += 1
        if self.spec.progress:
            with open(self.spec.progress, "w") as fh:
                fh.write(str(self.done))

    def flat(self, entry: int, i: int) -> int:
        """The flat number of iteration ``i`` of entry ``entry`` (as the original run keyed it)."""
        return self.offsets[min(entry, len(self.sizes))] + i

    def _key(self, name: str, ctx: tuple[Any, ...]) -> Key:
        pos = position_key(ctx)
        if self.spec.reentered and pos:  # recorded before entries: every entry logged at entry 0's keys
            pos = (pos[0][:2], *pos[1:])
        return (name, pos)

    def keep(self, name: str, value: Any, ctx: tuple[Any, ...]) -> bool:
        """Only requested names, at requested iterations; a recorded one is checked instead."""
        if name in self.recorded_names:  # also a requested one recomputed with --force: a witness too
            self._check_record(name, value, ctx)
        if name in self.names:
            # (a later top-level loop — a fine-tuning phase after the outer loop — runs in full)
            return not ctx or self.spec.mode == "full" or ctx[0][0] != self.outer_name \
                or self.flat(entry_of(ctx[0]), ctx[0][1]) in self.epochs
        return False

    # -- verification ----------------------------------------------------------------------

    def _check_record(self, name: str, value: Any, ctx: tuple[Any, ...]) -> None:
        key = self._key(name, ctx)
        expected = self.expected.get(key)
        if expected is None:
            if not ctx or (ctx[0][0] == self.outer_name
                           and self.flat(entry_of(ctx[0]), ctx[0][1]) in self.covered):
                self.diverge("run", f"`{name}` was logged at {_where(key)}, where the original run logged nothing")
            return
        k = self.produced.get(key, 0)
        self.produced[key] = k + 1
        if k >= len(expected):
            self.diverge("run", f"`{name}` was logged more often at {_where(key)} than in the original run")
        elif dumps(value) != expected[k]:
            self.diverge("run", f"`{name}` at {_where(key)} is {dumps(value)[:40]}, the original run logged "
                                f"{expected[k][:40]}")
        else:
            self.checked_values += 1

    def loop_begin(self, objects: dict[str, Any]) -> None:
        """Where the outer loop begins: note what the prefix did not reproduce (see ``ignored``)."""
        for key in self._outer_keys:  # the original's values of each outer iteration, by flat number
            first = key[1][0]
            if first[0] == self.outer_name:
                g = self.flat(first[2] if len(first) > 2 else 0, first[1])
                self.by_iteration.setdefault(g, []).append(key)
        self._outer_keys = []
        expected = self.spec.expect_fps.get(BEGIN)
        if expected is None or self.spec.strict:
            return
        begin = fingerprint(objects, self.frame, self.scope, self.state, self.spec.witness_format)
        self.ignored = frozenset(differences(expected, begin))

    def _check_state(self, i: int, objects: dict[str, Any], where: str) -> None:
        expected = self.spec.expect_fps.get(i)
        if expected is None:
            return
        ignored = set(self.ignored)
        if where == "run" and self.skipping:
            # Code after a skipped loop or call that changes restored state (``lr *= 0.9``)
            # changes it a second time; the next iteration starts from a restore, so that
            # state is discarded — and the planner proved no requested statement reads it.
            ignored |= self._skip_ignored(objects)
        diffs = [d for d in differences(expected, fingerprint(objects, self.frame, self.scope, self.state,
                                                                  self.spec.witness_format))
                 if d not in ignored]
        if diffs:
            at = "after restoring the checkpoint of" if where == "restore" else "at the end of"
            self.diverge(where, f"state `{diffs[0]}` differs {at} {self.outer_name or 'iteration'} {i}")
        else:
            self.checked_fps += 1

    def left_loop(self, i: int) -> None:
        """The body left the outer loop part-way through iteration ``i`` (``break``, ``return``, an
        exception): a divergence unless the original left it there too (control flow that
        followed a different state — the rest of this job would not be the original's)."""
        if i not in self.spec.broken and not self.spec.reentered:
            self.diverge("run", f"the replay left the loop in {self.outer_name or 'iteration'} {i}, "
                                "where the original run went on")

    def iteration_end(self, i: int, objects: dict[str, Any]) -> None:
        """Outer iteration ``i`` is done: every value it should have logged, and its fingerprint."""
        for key in self.by_iteration.get(i, []):
            if self.skipping and (
                    len(key[1]) > 1 or (key[0] in self.skip_logged and self.calls_skipped)):
                continue  # a skipped nested loop's (or call's) values are not recomputed
            missing = len(self.expected[key]) - self.produced.get(key, 0)
            if missing > 0 and not self.spec.reentered:  # a later entry logs at these positions too
                self.diverge("run", f"`{key[0]}` was not logged at {_where(key)} as in the original run")
        if self.skipping and self.spec.skip_ignore and i == self.current and i in self.spec.checkpoints:
            # The code after a skipped loop ran on the restored end-of-iteration state and changed
            # what the planner proved no requested statement reads (``bad += 1`` of early stopping)
            # a second time: the iteration ends where the original's did, its checkpoint (checked).
            self.restore(i, objects)
        else:
            self._check_state(i, objects, "run")

    def diverge(self, where: str, why: str) -> None:
        """A witness disagrees: a strict job stops now; a job from the start goes on, unverified."""
        if not self.spec.strict:
            if self.unverified is None:
                self.unverified = why
            return
        self._write_status({"diverged": {"at": where, "why": why}})
        sys.stdout.flush()
        sys.stderr.write(f"git-flor replay: diverged: {why}\n")
        sys.stderr.flush()
        os._exit(DIVERGED)  # no atexit: this job's values must not be written

    def _write_status(self, extra: dict[str, Any]) -> None:
        if not self.spec.status:
            return
        status = {"values": self.checked_values, "fingerprints": self.checked_fps,
                  "unverified": self.unverified, "failed": self.failed, **extra}
        with open(self.spec.status, "w") as fh:
            fh.write(json.dumps(status))

    def restore(self, i: int, objects: dict[str, Any]) -> None:
        restore(self.store, self.spec.checkpoints[i], objects, self.frame, self.scope)
        self._check_state(i, objects, "restore")

    def outer(self, items: Iterator[Any], objects: dict[str, Any], entry: int = 0) -> Iterator[tuple[int, int, Any]]:
        """The (index, flat number, item) triples entry ``entry`` of the outer loop yields in this mode."""
        for i, g, item in self._outer(items, objects, entry):
            self.covered.add(g)
            yield i, g, item

    def _outer(self, items: Iterator[Any], objects: dict[str, Any], entry: int) -> Iterator[tuple[int, int, Any]]:
        spec = self.spec
        if spec.mode == "prefix":
            raise Stop()
        if entry >= len(self.sizes):
            # An entry the original run's keys do not know (recorded before entries were keyed):
            # it runs as it is, and only a full job keeps its values.
            for i, item in enumerate(items):
                yield i, self.flat(entry, i), item
            return
        off, size = self.offsets[entry], self.sizes[entry]
        last = off + size - 1  # this entry's last iteration
        if spec.mode == "full":
            for i, item in enumerate(items):
                if 0 <= spec.limit <= off + i:
                    raise Stop()  # the original run never got here: nothing after this ran either
                yield i, off + i, item
            return
        if spec.mode == "suffix":
            self._pass(items, objects, entry)
            return
        todo = sorted(spec.epochs)
        if spec.mode == "reexec":
            start = spec.start_from
            if start >= last:  # the segment starts in a later entry (or at this one's end)
                self._pass(items, objects, entry)
                return
            for i, item in enumerate(items):
                g = off + i
                if g <= start:
                    if g == start:
                        self.restore(g, objects)
                    continue
                yield i, g, item
                if g >= todo[-1]:
                    raise Stop()
            return
        # skip, with the iterations of run_full run in full
        ran, seen, item = -1, -1, None
        last_needed = max(todo[-1], max(self.run_full, default=-1))
        for seen, item in enumerate(itertools.islice(items, size)):
            g = off + seen
            full = g in self.run_full
            if g not in self.epochs and not full:
                continue
            # An entry's first iteration starts from where the code before it left; after an
            # iteration run in full here the state is the one it left; otherwise (a skipped
            # one, or a gap) the previous iteration's checkpoint.
            if seen > 0 and not (ran == seen - 1 and g - 1 in self.run_full):
                self.restore(g - 1, objects)
            self.skipping = not full
            self.skip_entry = None if full else spec.checkpoints.get(g)
            self.nested_seen = 0
            self.calls_skipped = 0
            self.current = g
            yield seen, g, item
            self.skip_entry = None
            self.skipping = False
            if g >= last_needed:
                raise Stop()
            ran = seen
        if seen > ran:  # the entry's last iterations were passed over, not run
            self._ended(off + seen, item, objects)

    def _pass(self, items: Iterator[Any], objects: dict[str, Any], entry: int) -> None:
        """Pass over entry ``entry``: its items are taken as the original took them, not run."""
        seen, item = -1, None
        for seen, item in enumerate(itertools.islice(items, self.sizes[entry])):
            pass
        if seen >= 0:
            self._ended(self.offsets[entry] + seen, item, objects)

    def _ended(self, g: int, item: Any, objects: dict[str, Any]) -> None:
        """The loop leaves an entry whose last iteration ``g`` was not run here: restore its end,
        and the loop variable the body would leave, so the code after the loop — and the next
        entry — starts from the original run's state."""
        self.restore(g, objects)
        if self.frame is not None and self.scope is not None and self.scope.target:
            write_vars(self.frame, {self.scope.target: item}, self.scope.module_level)

    def skip_nested(self, objects: dict[str, Any]) -> bool:
        """In skip mode, a nested loop of the outer body does not run: restore what it would leave."""
        entry = self.skip_entry
        if entry is None:
            return False
        k = self.nested_seen
        self.nested_seen += 1
        pointers = self._kept(entry)["objects"]
        state = {n: p for n, p in pointers.items() if n not in (RNG, NESTED_RNG)}
        restore(self.store, {"objects": state}, objects, self.frame, self.scope)
        rngs = pickle.loads(self.store.get(pointers[NESTED_RNG].sha256)) if NESTED_RNG in pointers else []
        if k >= len(rngs):
            # The recorded iteration ended fewer nested loops than this one starts: the
            # RNG that follows is unknown, and a guess could give a wrong value.
            raise RuntimeError(
                "git-flor replay: this iteration's checkpoint has no RNG state for nested loop "
                f"{k}; replay it with re-execution (--force after removing its checkpoints)"
            )
        serial.restore_rng(rngs[k])
        self._check_skip(k, objects)
        return True

    def skip_call(self, line: int, objects: dict[str, Any], after: int = 0) -> bool:
        """In skip mode, the call statement at ``line`` does not run: restore the end of the iteration.

        Everything the checkpoint holds — objects, loop-carried variables, globals, RNG
        objects, and the global RNGs as they were at the iteration's end — since the
        original's state right after the call is not saved anywhere. Whether that was right
        is judged by the witnesses after it: the original's values logged later in the
        iteration and its iteration-end fingerprint (a strict job diverges on a mismatch and
        the parent re-executes the segment).
        """
        entry = self.skip_entry
        if entry is None or line not in self.skip_calls:
            return False
        if not (after and self._last_skip == (self.current, after)):
            # (right after another skipped call nothing ran: the state is that restore's)
            restore(self.store, self._kept(entry), objects, self.frame, self.scope)
        self._last_skip = (self.current, line)
        self.calls_skipped += 1
        return True

    def _kept(self, entry: dict[str, Any]) -> dict[str, Any]:
        """The end-of-iteration checkpoint without the variables a skip leaves as computed
        (``ReplaySpec.skip_keep``): the code after the skipped loop then changes them from the
        value the original had there, not a second time; ``_check_skip`` and the witnesses
        after it confirm that value."""
        if not self.spec.skip_keep:
            return entry
        kept = {f"var:{n}" for n in self.spec.skip_keep} | {f"glob:{n}" for n in self.spec.skip_keep}
        return {**entry, "objects": {n: p for n, p in entry["objects"].items() if n not in kept}}

    def _skip_ignored(self, objects: dict[str, Any]) -> set[str]:
        """Fingerprint components of the variables the planner proved no requested statement reads."""
        names = set(self.spec.skip_ignore) - set(self.spec.skip_keep)  # kept ones must agree
        ignored = {f"var:{n}" for n in names} | {f"mod:{n}" for n in names}
        if self.frame is not None and names:
            scope = self.frame.f_globals if self.scope is None or self.scope.module_level else self.frame.f_locals
            ids = {id(scope[n]) for n in names if n in scope}
            ignored |= {f"obj:{key}" for key, obj in objects.items() if id(obj) in ids}
        return ignored

    def _check_skip(self, k: int, objects: dict[str, Any]) -> None:
        """The state a skip restored must be the state the original had where that loop ended.

        Code after the loop (``np.clip(w, out=w)``, ``sched.step()``) may have changed it
        before the checkpoint was taken; a statement placed before that code would then
        read the wrong state. Variables the planner proved no requested statement reads
        are not compared (``lr /= 4`` after the loop does not spoil ``flor.log("w", w)``).
        """
        fps = self.spec.expect_nested.get(self.current, [])
        if k >= len(fps):
            return
        ignored = self._skip_ignored(objects)
        actual = fingerprint(objects, self.frame, self.scope, self.state, self.spec.witness_format)
        diffs = [d for d in differences(fps[k], actual) if d not in ignored and d not in self.ignored]
        if diffs:
            self.diverge("run", f"state `{diffs[0]}` restored for skipped nested loop {k} of "
                                f"{self.outer_name or 'iteration'} {self.current} is not the state that loop left")
        else:
            self.checked_fps += 1

    def write(self, records: list[Any], meta: dict[str, Any]) -> None:
        """Append this run's records to the spec's file (a script may ``flor.commit()`` twice)."""
        from ..storage.records import encode_record

        with open(self.spec.out, "a") as fh:
            fh.write("".join(encode_record(r) + "\n" for r in records))
        self._write_status({})

    def recorded_load(self, args: dict[str, Any]) -> tuple[Any, bytes]:
        """The original run's ``flor.load`` with these arguments — the n-th such call here gets
        the n-th such load there — as (what it resolved to, its bytes): never a newer run's
        model, and no repository needed."""
        from .registry import saved_of

        key = dumps(args)
        k = self._loads_seen.get(key, 0)
        self._loads_seen[key] = k + 1
        same = [e for e in self.spec.loads if dumps({a: e.get(a) for a in args}) == key]
        if k >= len(same):
            why = f"flor.load({args['name']!r}) was called more often than in the original run"
            self.diverge("run", why)
            raise RuntimeError(f"git-flor replay: {why}: nothing recorded to load")
        resolved = same[k]["resolved"]
        return saved_of(resolved), self.store.get(resolved["sha256"])

    def statement_failed(self, name: str, exc: BaseException) -> None:
        """A requested statement raised in this version: only its own values are lost."""
        self.failed.setdefault(name, f"{type(exc).__name__}: {exc}"[:300])


def _where(key: Key) -> str:
    """``epoch 3, step 2``; ``epoch 1 (entry 2)`` in a later entry of the outer loop."""
    return ", ".join(f"{f[0]} {f[1]}" + (f" (entry {f[2] + 1})" if len(f) > 2 else "") for f in key[1]) \
        or "the top level"


def start_rng(spec_path: str) -> dict[str, Any] | None:
    """The RNG states a replay child sets where its script imports git-flor (see api._start_rng)."""
    raw = json.loads(Path(spec_path).read_text()).get("rng_start") or ""
    return pickle.loads(base64.b64decode(raw)) if raw else None
