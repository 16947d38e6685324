"""Checkpoints of the outermost loop: what to save, when, and how without slowing training.

At the end of an outer-loop iteration the checkpointer may snapshot every
registered object, the loop-carried variables (see :mod:`.carried`) and the
global RNG states. Taking the in-memory copy is all the training thread pays;
serialising and writing happen on a background thread, one write pending at
most (bounded memory). Which iterations are saved is adaptive: a checkpoint is
taken when the time the *training thread* spent on checkpoints and fingerprints
so far plus the expected cost of this copy stays within ``bound`` (default 1 %,
``FLOR_CKPT_BOUND``) of the compute time so far. The background write is not
charged: it overlaps training (a 2.3 MB state after a 0.7 s epoch is copied in
about a millisecond, so every such epoch is saved); a write still pending when
the next checkpoint is due skips that one instead, so a slow disk costs
checkpoints, never training time. The first iteration that ends after the copy buffers are ready
(the first, unless the state is large) and the last are always saved. A bound
of 1 or more means every iteration (waiting for the previous write if need be).
"""

from __future__ import annotations

import os
import pickle
import queue
import random
import sys
import threading
import time
from types import FrameType, FunctionType, ModuleType
from typing import Any

from ..storage.checkpoints import PayloadStore, Pointer
from ..storage.records import warn
from . import reachable, serial
from .carried import LoopScope
from .fingerprint import closed_file, fingerprint, own_modules, watched
from .state_scope import StateScope

DEFAULT_BOUND = 0.01
RNG = "rng"
#: RNG states at the end of each nested loop of the iteration: replay's skip mode
#: restores them so code after a skipped nested loop draws what it drew originally.
NESTED_RNG = "rng@nested"
#: The fingerprint key of the state where the outer loop begins (before iteration 0).
BEGIN = -1


def default_bound() -> float:
    try:
        return float(os.environ.get("FLOR_CKPT_BOUND", DEFAULT_BOUND))
    except ValueError:
        return DEFAULT_BOUND


class Checkpointer:
    def __init__(self, store: PayloadStore, journal_event: Any, bound: float | None = None) -> None:
        self.store = store
        self.bound = default_bound() if bound is None else bound
        self.objects: dict[str, Any] = {}
        self.iterations: dict[int, dict[str, Any]] = {}
        #: iteration → state fingerprint at its end: the witnesses verified replay checks against
        self.fingerprints: dict[int, dict[str, str]] = {}
        #: iteration → fingerprints where each nested loop of its body ended: a replay that
        #: skips that loop checks the state it restores there against them
        self.nested: dict[int, list[dict[str, str]]] = {}
        self._fp_cost = 0.0
        self._where: tuple[FrameType | None, LoopScope | None, StateScope] | None = None
        self._rng_begin: dict[str, str] = {}
        #: FLOR_WITNESS=0 turns fingerprints off (replays then cannot verify resumed segments
        #: and re-execute them from the start unless told --trust-checkpoints)
        self.witness = os.environ.get("FLOR_WITNESS", "1") not in ("0", "false", "no")
        self._event = journal_event  # callable(kind, **fields): appends to the run's journal
        #: one writer thread for the whole run, fed through a queue: starting a thread per
        #: checkpoint cost the training thread ~0.6 ms (more than the copy of a 1 MB state)
        self._writer: threading.Thread | None = None
        self._queue: queue.Queue[tuple | None] = queue.Queue()
        self._lock = threading.Lock()
        self._compute = 0.0
        self._last_dt = 0.0
        self._spent = 0.0
        self._last_cost = 0.0
        self._warned: set[str] = set()
        self._reuse: dict[str, Any] = {}  # name → a written snapshot whose memory the next copy takes
        self._prefaulting = 0  # registrations whose copy buffers are still being readied

    def register(self, objects: dict[str, Any]) -> None:
        self.objects.update(objects)
        self._prefaulting += 1
        threading.Thread(target=self._prefault, args=(dict(objects),), name="git-flor-prefault",
                         daemon=True).start()

    def _prefault(self, objects: dict[str, Any]) -> None:
        """Ready a copy buffer per large object off the training thread (see serial.capture)."""
        try:
            for name, obj in objects.items():
                try:
                    buf = serial.prefault(obj)
                except Exception:
                    continue
                if buf is not None:
                    with self._lock:
                        self._reuse.setdefault(name, buf)
        finally:
            with self._lock:
                self._prefaulting -= 1

    # -- policy --------------------------------------------------------------------------

    def iteration_end(
        self,
        loop: str,
        i: int,
        dt: float,
        frame: FrameType | None,
        scope: LoopScope | None,
        state: StateScope,
        last: bool,
        nested_rng: list[Any] | None = None,
    ) -> None:
        """Called by the outer ``flor.loop`` between iterations, with the script's frame.

        ``i`` is the flat iteration number: the entry's offset plus its index, so the
        iterations of a second entry of the outer loop (a fine-tuning phase) have their own.

        Takes the iteration's fingerprint when the overhead bound allows it (always
        with a checkpoint, so every restore can be verified, and at the first and
        last iteration), then maybe a checkpoint.
        """
        self._compute += dt
        self._last_dt = dt
        due = self._checkpoint_due(last)
        if self.witness and i not in self.fingerprints and (
            due or last or not self.fingerprints or self.bound >= 1
            or self._spent + self._fp_cost <= self.bound * self._compute
        ):
            t0 = _clocks()
            fp = self._moved(fingerprint(self.objects, frame, scope, state))
            self._fp_cost = _charged(t0)
            with self._lock:
                self._spent += self._fp_cost
                self.fingerprints[i] = fp
            self._event("fp", i=i, loop=loop, fp=fp)
        if not due:
            return
        if self._queue.unfinished_tasks:
            if not last and self.bound < 1:
                return  # one pending write at most: skip rather than stall training
            self._queue.join()  # the last one, or a bound of 1 (100 %): every iteration
        self._take(loop, i, frame, scope, state, nested_rng or [])

    def loop_begin(self, loop: str, frame: FrameType | None, scope: LoopScope | None, state: StateScope) -> None:
        """The state where the outer loop begins: a replay from the start compares its own with it.

        Called at every entry of the outer loop: each entry runs in its own frame (``fit()``
        called twice), where the fingerprints of its nested loops' ends are taken.
        """
        if not self.witness:
            return
        self._where = (frame, scope, state)
        if BEGIN in self.fingerprints:
            return  # the outer loop entered again (a second phase): the first beginning counts
        fp = fingerprint(self.objects, frame, scope, state)
        # A global RNG nobody seeded differs from process to process; it witnesses something
        # only once the loop draws from it, so it enters a fingerprint only when it moved.
        self._rng_begin = {k: v for k, v in fp.items() if k.startswith("rng:")}
        fp = {k: v for k, v in fp.items() if not k.startswith("rng:")}
        self.fingerprints[BEGIN] = fp
        self._event("fp", i=BEGIN, loop=loop, fp=fp)

    def nested_end(self, i: int, k: int) -> None:
        """Nested loop ``k`` of outer iteration ``i`` ended: its fingerprint, when affordable."""
        if self._where is None or len(self.nested.get(i, [])) != k:
            return
        if self.bound < 1 and self.fingerprints:
            # Only from what the bound leaves once this iteration's checkpoint and its
            # fingerprint are paid for (estimated with the last iteration's time): a skip
            # needs the checkpoint; this fingerprint is one more witness of it.
            room = self.bound * (self._compute + self._last_dt) - self._spent
            if self._fp_cost + self._fp_cost + self._last_cost > room:
                return
        t0 = _clocks()
        fp = self._moved(fingerprint(self.objects, *self._where))
        cost = _charged(t0)
        with self._lock:
            self._spent += cost
            self.nested.setdefault(i, []).append(fp)
        self._event("nfp", i=i, k=k, fp=fp)

    def _moved(self, fp: dict[str, str]) -> dict[str, str]:
        """``fp`` without the global RNGs that have not moved since the loop began (see loop_begin)."""
        return {k: v for k, v in fp.items() if not (k.startswith("rng:") and self._rng_begin.get(k) == v)}

    def _checkpoint_due(self, last: bool) -> bool:
        if not self.iterations and self._writer is None:
            # The first checkpoint waits (a few iterations at most) for its copy buffers:
            # copying a large state into fresh memory costs page faults on this thread.
            return last or self.bound >= 1 or not self._prefaulting
        return last or self.bound >= 1 or self._spent + self._last_cost <= self.bound * self._compute

    def _take(
        self, loop: str, i: int, frame: FrameType | None, scope: LoopScope | None, state: StateScope,
        nested_rng: list[Any],
    ) -> None:
        t0 = _clocks()
        snaps: dict[str, tuple[str, str, Any]] = {}
        unsaved: list[str] = []
        registered_ids = {id(o) for o in self.objects.values()}
        own = own_modules(frame)
        for name, obj in self.objects.items():
            self._capture(snaps, unsaved, name, obj, "object")
            flags = reachable.train_flags(obj)
            if flags is not None:  # state_dict does not hold train/eval
                snaps[f"train:{name}"] = ("pickle", "train", pickle.dumps(flags, protocol=serial.PICKLE))
        if scope is None:
            unsaved.append("<loop-carried state: the loop body could not be analysed>")
        elif frame is not None:
            from .carried import read_vars

            saved_ids = set(registered_ids)
            for name, value in read_vars(frame, scope.names).items():
                if id(value) in registered_ids or isinstance(value, _NOT_STATE) or closed_file(value):
                    continue
                saved_ids.add(id(value))
                self._capture(snaps, unsaved, f"var:{name}", value, "var", own, registered_ids)
            optional: list[str] = []  # (what cannot be saved only keeps a skip from using it)
            for name, value in read_vars(frame, scope.left).items():
                if id(value) not in registered_ids and not isinstance(value, _NOT_STATE) and not closed_file(value):
                    self._capture(snaps, optional, f"var:{name}", value, "var", own, registered_ids, quiet=True)
            for name, value in read_vars(frame, scope.passed).items():
                if id(value) not in registered_ids and _advances(value):
                    saved_ids.add(id(value))
                    self._capture(snaps, unsaved, f"var:{name}", value, "var")
            # Module-level names helpers assign through `global` (a step counter).
            for name in sorted(state.declared_global):
                value = frame.f_globals.get(name)
                if name in frame.f_globals and not isinstance(value, _NOT_STATE) and id(value) not in saved_ids:
                    saved_ids.add(id(value))
                    self._capture(snaps, unsaved, f"glob:{name}", value, "global", own, registered_ids)
            # RNG objects held inside the loop's objects (a loader's generator, data.rng).
            roots = {comp.split(":", 1)[1]: v for comp, v in watched(frame, scope, state)}
            for path, rng in reachable.rng_paths(roots, saved_ids):
                self._capture(snaps, unsaved, f"rngobj:{path}", rng, "rngobj")
        # Fresh copies (getstate tuples, new tensors): pickled by the writer, off this thread.
        snaps[RNG] = ("pickle", RNG, _Later(serial.capture_rng()))
        snaps[NESTED_RNG] = ("pickle", RNG, _Later(nested_rng))
        capture_time = _charged(t0)
        with self._lock:
            self._spent += capture_time  # the training thread's cost: what the bound accounts
            self._last_cost = capture_time
        if self._writer is None:
            self._writer = threading.Thread(target=self._drain, name="git-flor-ckpt", daemon=True)
            self._writer.start()
        self._queue.put((loop, i, snaps, unsaved, capture_time))

    def _drain(self) -> None:
        """The writer thread: one checkpoint after another until :meth:`finish` says stop."""
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                self._write(*item)
            finally:
                self._queue.task_done()

    def _capture(
        self, snaps: dict, unsaved: list[str], name: str, obj: Any, kind: str,
        own: frozenset[str] = frozenset(), registered_ids: set[int] | None = None, quiet: bool = False,
    ) -> None:
        with self._lock:
            reuse = self._reuse.pop(name, None)
        try:
            if (type(obj).__module__ or "") in own and isinstance(getattr(obj, "__dict__", None), dict) \
                    and not callable(getattr(obj, "state_dict", None)):
                # The script's own object (a trainer on `self`): restored attribute by
                # attribute, in place, so the objects it links stay the ones training uses.
                serializer, snap = serial.capture_attrs(obj, registered_ids or set())
            else:
                serializer, snap = serial.capture(obj, reuse)
        except serial.Unsaveable as exc:
            unsaved.append(name)
            if name not in self._warned and not quiet:
                self._warned.add(name)
                warn(f"cannot checkpoint {name} ({exc}); replay will not resume past it")
            return
        snaps[name] = (serializer, kind, snap)

    def _write(self, loop: str, i: int, snaps: dict, unsaved: list[str], capture_time: float) -> None:
        t0 = time.perf_counter()
        pointers: dict[str, Pointer] = {}
        for name, (serializer, kind, snap) in snaps.items():
            try:
                if isinstance(snap, _Later):
                    snap = pickle.dumps(snap.value, protocol=serial.PICKLE)
                sha, size = self.store.put(serial.serialise(serializer, snap))
            except Exception as exc:  # disk full, a serialiser error: training goes on
                unsaved.append(name)
                if name not in self._warned:
                    self._warned.add(name)
                    warn(f"cannot write checkpoint of {name} ({type(exc).__name__}: {exc})")
                continue
            pointers[name] = Pointer(sha, size, serializer, kind)
            if serial.reusable(serializer):
                with self._lock:
                    self._reuse[name] = snap
        write_time = time.perf_counter() - t0
        entry = {"loop": loop, "objects": pointers, "unsaved": sorted(set(unsaved)),
                 "seconds": round(capture_time + write_time, 6)}
        with self._lock:
            self.iterations[i] = entry
        self._event(
            "ckpt", i=i, loop=loop, unsaved=entry["unsaved"], seconds=entry["seconds"],
            objects={n: p.__dict__ for n, p in pointers.items()},
        )

    def finish(self) -> dict[int, dict[str, Any]]:
        """Wait for the pending write; the manifest entries, by iteration (see also ``fingerprints``)."""
        if self._writer is not None:
            self._queue.put(None)
            self._writer.join()
            self._writer = None
        with self._lock:
            return dict(self.iterations)


_NOT_STATE = (ModuleType, FunctionType, type)


class _Later:
    """A captured value the writer pickles (an RNG state: pickling torch's costs ~0.2 ms)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def _clocks() -> tuple[float, float]:
    """(wall, this thread's CPU) now: what :func:`_charged` measures from."""
    return time.perf_counter(), time.thread_time()


def _charged(start: tuple[float, float]) -> float:
    """Seconds the training thread spent since ``start``, as the overhead bound charges them.

    Wall time, but no more than this thread's CPU time times the threads a copy may use
    (torch copies a large tensor on its intra-op threads): on a shared machine a
    millisecond's copy or fingerprint that the scheduler preempted would otherwise be
    charged ten milliseconds, and the bound would skip the next few checkpoints for
    time the training lost to other processes, not to git-flor.
    """
    wall = time.perf_counter() - start[0]
    cpu = time.thread_time() - start[1]
    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch is not None and hasattr(torch, "get_num_threads") else 1
    return min(wall, cpu * max(1, threads))



def _advances(value: Any) -> bool:
    """An iterator or RNG passed to a call in the loop body is state the call may advance."""
    kind = type(value)
    if hasattr(kind, "__next__") or isinstance(value, random.Random):
        return True
    module = kind.__module__ or ""
    return (module.startswith("numpy.random") and kind.__name__ in ("Generator", "RandomState")) or (
        module.startswith("torch") and kind.__name__ == "Generator"
    )


def restore(
    store: PayloadStore,
    entry: dict[str, Any],
    objects: dict[str, Any],
    frame: FrameType | None,
    scope: LoopScope | None,
) -> None:
    """Put registered objects, loop-carried variables and RNG back to a checkpoint, in place."""
    from .carried import read_vars, write_vars

    pointers: dict[str, Pointer] = entry["objects"]
    for name, obj in objects.items():
        ptr = pointers.get(name)
        if ptr is None:
            raise RuntimeError(f"checkpoint has no saved state for {name!r}")
        serial.restore(obj, ptr.serializer, serial.deserialise(ptr.serializer, store.get(ptr.sha256)))
        flags = pointers.get(f"train:{name}")
        if flags is not None:
            reachable.set_train_flags(obj, pickle.loads(store.get(flags.sha256)))
    if frame is not None and scope is not None:
        current = read_vars(frame, scope.names + scope.passed + scope.left)
        rebound: dict[str, Any] = {}
        for key, ptr in pointers.items():
            if ptr.kind != "var":
                continue
            name = key[len("var:") :]
            value = serial.deserialise(ptr.serializer, store.get(ptr.sha256))
            rebound[name] = serial.restore(current.get(name), ptr.serializer, value)
        write_vars(frame, rebound, scope.module_level)
        for key, ptr in pointers.items():
            if ptr.kind == "global":
                name = key[len("glob:") :]
                value = serial.deserialise(ptr.serializer, store.get(ptr.sha256))
                frame.f_globals[name] = serial.restore(frame.f_globals.get(name), ptr.serializer, value)
        roots = {**frame.f_globals, **read_vars(frame, tuple(frame.f_locals))}
        for key, ptr in pointers.items():
            if ptr.kind == "rngobj":
                target = reachable.resolve(roots, key[len("rngobj:") :])
                if target is not None:
                    serial.restore(target, ptr.serializer, serial.deserialise(ptr.serializer, store.get(ptr.sha256)))
    rng = pointers.get(RNG)
    if rng is not None:
        serial.restore_rng(pickle.loads(store.get(rng.sha256)))
