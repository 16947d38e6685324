"""Replay mode: a training script re-run by ``git flor replay`` to compute hindsight values.

The parent process (``git_flor.replay``) plans the work and starts the script in
a scratch copy of its old version with ``FLOR_REPLAY=<spec.json>``. In that mode
the runtime:

- never opens the repository: results go to the spec's ``out`` file and the
  parent writes them to git (a replay can write nothing of the user's);
- returns the recorded run's values from ``flor.arg`` and records only the
  requested names, at the requested iterations;
- drives the outermost ``flor.loop`` by the spec's mode:
  ``prefix``  stop when the loop begins (the statements are before it);
  ``suffix``  skip every iteration, restore the end of the last, go on after the loop;
  ``skip``    per requested iteration: restore the end of the previous one, run the
              body with its nested ``flor.loop``s skipped, each replaced by a restore
              of the end of this iteration (RNG as it was when that nested loop ended);
  ``reexec``  restore the checkpoint before the segment, run the segment's iterations
              in full;
  ``full``    run everything (a statement whose position could not be placed).
  The process exits as soon as the last needed iteration is done.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from ..storage.checkpoints import PayloadStore, Pointer
from . import serial
from .carried import LoopScope, write_vars
from .checkpoint import NESTED_RNG, RNG, restore


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

    @classmethod
    def load(cls, path: str) -> ReplaySpec:
        raw = json.loads(Path(path).read_text())
        raw["checkpoints"] = {
            int(i): {**e, "objects": {n: Pointer(**p) for n, p in e["objects"].items()}}
            for i, e in raw.get("checkpoints", {}).items()
        }
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
        self.frame: FrameType | None = None
        self.scope: LoopScope | None = None
        self.done = 0

    def tick(self) -> None:
        """One outer iteration done: tell the parent's progress bar (a tiny file it polls)."""
        self.done += 1
        if self.spec.progress:
            with open(self.spec.progress, "w") as fh:
                fh.write(str(self.done))

    def keep(self, name: str, ctx: tuple[Any, ...]) -> bool:
        """Only requested names; inside the outer loop, only at requested iterations."""
        return name in self.names and (not ctx or ctx[0][1] in self.epochs or self.spec.mode == "full")

    def restore(self, i: int, objects: dict[str, Any]) -> None:
        restore(self.store, self.spec.checkpoints[i], objects, self.frame, self.scope)

    def outer(self, items: Iterator[Any], objects: dict[str, Any]) -> Iterator[tuple[int, Any]]:
        """The (index, item) pairs the outer loop yields in this mode."""
        spec = self.spec
        if spec.mode == "full":
            yield from enumerate(items)
            return
        if spec.mode == "prefix":
            raise Stop()
        if spec.mode == "suffix":
            last, item = -1, None
            for last, item in enumerate(items):
                pass
            if last >= 0:
                self.restore(last, objects)
                if self.frame is not None and self.scope is not None and self.scope.target:
                    write_vars(self.frame, {self.scope.target: item}, self.scope.module_level)
            return
        todo = sorted(spec.epochs)
        if spec.mode == "reexec":
            for i, item in enumerate(items):
                if i <= spec.start_from:
                    if i == spec.start_from:
                        self.restore(i, objects)
                    continue
                yield i, item
                if i >= todo[-1]:
                    raise Stop()
            return
        # skip
        for i, item in enumerate(items):
            if i not in self.epochs:
                continue
            if i > 0:
                self.restore(i - 1, objects)
            self.skip_entry = spec.checkpoints.get(i)
            self.nested_seen = 0
            yield i, item
            self.skip_entry = None
            if i >= todo[-1]:
                raise Stop()

    def skip_nested(self, objects: dict[str, Any]) -> bool:
        """In skip mode, a nested loop of the outer body does not run: restore what it would leave."""
        entry = self.skip_entry
        if entry is None:
            return False
        k = self.nested_seen
        self.nested_seen += 1
        pointers = entry["objects"]
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
        return True

    def write(self, records: list[Any], meta: dict[str, Any]) -> None:
        """Append this run's records to the spec's file (a script may ``flor.commit()`` twice)."""
        from ..storage.records import encode_record

        with open(self.spec.out, "a") as fh:
            fh.write("".join(encode_record(r) + "\n" for r in records))
