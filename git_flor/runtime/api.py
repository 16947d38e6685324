"""The training-script API: ``log``, ``arg``, ``loop``, ``checkpointing``, ``commit``.

Same names as FlorDB so a FlorDB script migrates by changing its import. The
run starts at the first call, not at import, so importing ``git_flor`` costs
nothing; the repository is opened then.
"""

from __future__ import annotations

import linecache
import os
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, TypeVar

from ..errors import BadArgument, UnloggableValue
from . import serial
from .carried import LoopScope, analyse
from .imports import ImportClock
from .kwargs import cast, split_argv
from .sandbox import route_torch_save
from .session import Run
from .state_scope import EMPTY, StateScope
from .state_scope import analyse as analyse_state
from .values import PLAIN, to_json_value

T = TypeVar("T")

_IMPORT_TIME = time.time()
_ARGV = list(sys.argv)


def _start_rng() -> dict[str, Any] | None:
    """The global RNGs where the script imports git-flor: kept with the run, put back in its replays.

    An unseeded script (torch seeds itself from the OS in every process, so does numpy's
    legacy generator) draws different numbers in every process: its replay could not
    reproduce what the code before the loop drew (``W_target = torch.randn(4, 1)``), and
    every value would be unverifiable. A replay child sets the states the run had at this
    very point of the script instead (``ReplaySpec.rng_start``) and returns None.
    """
    spec = os.environ.get("FLOR_REPLAY")
    if not spec:
        return serial.capture_rng()
    from .replay_mode import start_rng  # noqa: PLC0415 (a replay child only)

    serial.restore_rng_if(start_rng(spec))
    return None


_IMPORT_RNG = _start_rng()
#: the script's imports until its outer loop begins (a replay's cost model; see .imports)
_IMPORTS = ImportClock()
if not os.environ.get("FLOR_REPLAY"):
    _IMPORTS.install()
sys.argv[:], _KWARGS, _KWARGS_ERROR = split_argv(sys.argv)
_run: Run | None = None
_started = False


def _current() -> Run:
    global _run, _started
    if _run is None:
        # The first run of a process started when the script did; one after
        # flor.commit() starts now.
        _run = Run(start=time.time() if _started else _IMPORT_TIME, argv=_ARGV)
        _run.start_rng = None if _started else _IMPORT_RNG  # (a run after flor.commit() starts mid-script)
        _run.kwargs = _KWARGS
        _started = True
        _run.attach()
        if _loads:
            _run.set_meta(loads=[*_run.meta.get("loads", []), *_loads])
            _loads.clear()
    return _run


def log(name: str, value: T) -> T:
    """Record ``value`` under ``name`` at the current loop position and return it unchanged."""
    run = _run if _run is not None else _current()
    if type(name) is not str:
        run.warn_once(f"name:{name!r}", f"flor.log: the name must be a str, got {name!r}; "
                      "that call records nothing (training goes on)")
        return value
    if type(value) in PLAIN:
        stored = value
    else:
        try:
            stored = to_json_value(name, value)
        except UnloggableValue as exc:
            # A logging call never ends a training run: say it once per name, with the fix.
            run.warn_once(f"value:{name}", f"{exc} — not recorded; training goes on")
            return value
    if run.keep is not None and not run.keep(name, stored, run.ctx):
        return value  # replay: a recorded statement (checked against the original), or not requested
    run.records.append((name, stored, run.ctx))
    if run.echo:
        sys.stdout.write(f"{name}: {stored}\n")
    return value


def arg(name: str, default: Any = None) -> Any:
    """A run parameter: ``--kwargs name=value`` overrides ``default`` (cast to its type); recorded.

    In replay, the value the recorded run used.
    """
    run = _current()
    if _KWARGS_ERROR:
        run.usage_error(_KWARGS_ERROR)
    if run.recorded_args is not None and name in run.recorded_args:
        value = run.recorded_args[name]
    else:
        try:
            value = cast(name, _KWARGS[name], default) if name in _KWARGS else default
        except BadArgument as exc:
            run.usage_error(str(exc))
    run.set_arg(name, to_json_value(name, value))
    return value


def loop(name: str, iterable: Iterable[T]) -> Iterator[T]:
    """Iterate while giving every ``flor.log`` inside its position (index, and value if scalar).

    The outermost ``flor.loop`` is the checkpoint boundary: its per-iteration wall
    times are recorded for replay's cost model, each iteration end pushes the
    journal and may take a checkpoint.

    Not a generator itself: the script's frame is taken *here*, where the loop is
    written, because the generator's body first runs wherever it is first advanced —
    inside ``tqdm.__iter__`` for ``tqdm(flor.loop(...))``.
    """
    run = _current()
    return _loop(run, name, iterable, _caller_frame())


def _loop(run: Run, name: str, iterable: Iterable[T], frame: FrameType | None) -> Iterator[T]:
    parent = run.ctx
    if parent:
        top = len(parent) == 1  # directly in the outer loop's body (or in a helper it calls)
        if top and run.replayer is not None and run.replayer.skip_nested(run.objects):
            return  # replay: this nested loop is replaced by a checkpoint restore
        t0 = time.perf_counter()
        try:
            for i, item in enumerate(iterable):
                run.ctx = parent + ((name, i, item if type(item) in PLAIN else None),)
                yield item
        finally:
            run.ctx = parent
            if top:
                run.inner_seconds += time.perf_counter() - t0  # what a skip would not run
            if top and run.checkpointer is not None and run.outer_g is not None:
                run.nested_rng.append(serial.capture_rng())
                run.checkpointer.nested_end(run.outer_g, len(run.nested_rng) - 1)
        return
    yield from _outer(run, name, iterable, frame)


def _outer(run: Run, name: str, iterable: Iterable[T], frame: FrameType | None) -> Iterator[T]:
    scope = _scope(frame)
    state = _state_scope(frame)
    total = len(iterable) if hasattr(iterable, "__len__") else None  # type: ignore[arg-type]
    seq = run.loop_begin(name)
    items = iter(iterable)
    entry: int | None = run.loops[seq].get("entry")
    if run.replayer is not None and entry is not None:
        yield from _replay_outer(run, name, items, frame, scope, state, seq, entry)
        return
    # Checkpoints and fingerprints are keyed by flat iteration numbers (the entry's offset plus
    # the index), so a second phase never overwrites — and replay never restores — the first
    # phase's iteration i as if it were its own. Another top-level loop (a differently named
    # fine-tuning phase, ``entry`` None) is code after the outer loop: no checkpoints.
    offset: int | None = run.loops[seq].get("offset")
    if offset == 0:
        run.set_meta(prefix_imports=_IMPORTS.remove())
    ckpt = run.checkpointer if offset is not None else None
    if ckpt is not None:
        ckpt.loop_begin(name, frame, scope, state)
    mark = (entry,) if entry else ()
    clock = time.perf_counter
    i = -1
    t0 = clock()
    try:
        for i, item in enumerate(items):
            run.ctx = ((name, i, item if type(item) in PLAIN else None, *mark),)
            run.outer_g = None if offset is None else offset + i
            run.nested_rng = []
            run.inner_seconds = 0.0
            t0 = clock()
            try:
                yield item
            except GeneratorExit:
                # The body left the loop (``break``, early stopping, an exception) part-way
                # through iteration i: replay may enter it, never go past it.
                run.loop_broke(seq, clock() - t0)
                raise
            dt = clock() - t0
            run.iteration_done(seq, dt, round(run.inner_seconds, 6) if offset is not None else None)
            if ckpt is not None and offset is not None:
                last = total is not None and i == total - 1
                ckpt.iteration_end(name, offset + i, dt, frame, scope, state, last, run.nested_rng)
        if ckpt is not None and offset is not None and i >= 0 and offset + i not in ckpt.iterations \
                and total is None:
            # The last iteration, now known: a checkpoint of it, and the witness of its end.
            ckpt.iteration_end(name, offset + i, 0.0, frame, scope, state, True, run.nested_rng)
    finally:
        run.ctx = ()
        run.outer_g = None
        run.loop_end(seq)


def _replay_outer(
    run: Run,
    name: str,
    items: Iterator[T],
    frame: FrameType | None,
    scope: LoopScope | None,
    state: StateScope,
    seq: int,
    entry: int,
) -> Iterator[T]:
    replayer = run.replayer
    assert replayer is not None
    # Each entry runs in its own frame (``fit()`` called twice): restores write into this one.
    replayer.frame, replayer.scope, replayer.state = frame, scope, state
    replayer.outer_name = name
    if entry == 0:
        replayer.loop_begin(run.objects)
    if run.sandbox is not None:
        route_torch_save(run.sandbox)  # torch may have been imported after git_flor
    mark = (entry,) if entry else ()
    try:
        for i, g, item in replayer.outer(items, run.objects, entry):
            run.ctx = ((name, i, item if type(item) in PLAIN else None, *mark),)
            run.outer_g = g
            try:
                yield item
            except GeneratorExit:
                replayer.left_loop(g)
                raise
            replayer.iteration_end(g, run.objects)
            replayer.tick()
    finally:
        run.ctx = ()
        run.outer_g = None
        run.loop_end(seq)


def _caller_frame() -> FrameType | None:
    """The training script's frame running the ``for`` over ``flor.loop`` (outside this module)."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename == __file__:
        frame = frame.f_back
    return frame


def _scope(frame: FrameType | None) -> LoopScope | None:
    if frame is None:
        return None
    lines = linecache.getlines(frame.f_code.co_filename, frame.f_globals)
    return analyse("".join(lines), frame.f_lineno) if lines else None


def _state_scope(frame: FrameType | None) -> StateScope:
    if frame is None:
        return EMPTY
    lines = linecache.getlines(frame.f_code.co_filename, frame.f_globals)
    return analyse_state("".join(lines), frame.f_lineno) if lines else EMPTY


@contextmanager
def checkpointing(**objects: Any) -> Iterator[None]:
    """Register the objects whose state checkpoints save and replay restores (model, optimizer, ...)."""
    run = _current()
    registered = dict(run.meta.get("checkpointing", {}))
    for key, obj in objects.items():
        registered[key] = f"{type(obj).__module__}.{type(obj).__qualname__}"
    run.objects.update(objects)
    if run.checkpointer is not None:
        run.checkpointer.register(objects)
    run.set_meta(checkpointing=registered)
    yield


#: ``flor.load`` calls made before the run started (it starts at its first other flor call)
_loads: list[dict[str, Any]] = []


def note_load(entry: dict[str, Any]) -> None:
    """Record what a ``flor.load`` resolved to, in the run (``loads`` of ``run.json``): a replay
    of the run loads exactly that again. Never starts a run itself (a notebook loading a model
    is not training)."""
    if _run is None:
        _loads.append(entry)
    else:
        _run.set_meta(loads=[*_run.meta.get("loads", []), entry])


def recorded_load(args: dict[str, Any]) -> tuple[Any, bytes] | None:
    """In a replay: (what, bytes) of the original run's ``flor.load`` with these arguments, the
    n-th such call getting the n-th such load; None when not replaying."""
    if _run is None and not os.environ.get("FLOR_REPLAY"):
        return None
    run = _current()
    if run.replayer is None:
        return None
    return run.replayer.recorded_load(args)


def _hindsight_failed(name: str, exc: BaseException) -> None:
    """Called by the guard replay wraps around a requested statement that raised (see replay.guard).

    Outside replay there is no guard, so this is never reached from recorded code.
    """
    run = _current()
    if run.replayer is not None:
        run.replayer.statement_failed(name, exc)


def _skip_call(line: int, after: int = 0) -> bool:
    """Asked by the replay's executed copy before a call statement it may skip (see replay.guard.skippable).

    True when this is a skip job and the call was replaced by a restore of the end of the
    iteration; False (run the call) in a recorded run and in every other replay mode.
    ``after``: the line of the skippable statement right before this one, if any.
    """
    run = _current()
    return run.replayer is not None and run.replayer.skip_call(line, run.objects, after)


def commit() -> str | None:
    """Write the run so far to git now; later calls belong to a new run. Returns the shadow commit."""
    global _run
    if _run is None:
        return None
    run, _run = _run, None
    return run.finish()
