"""The training-script API: ``log``, ``arg``, ``loop``, ``checkpointing``, ``commit``.

Same names as FlorDB so a FlorDB script migrates by changing its import. The
run starts at the first call, not at import, so importing ``git_flor`` costs
nothing; the repository is opened then.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from ..errors import BadArgument, UnloggableValue
from .kwargs import cast, split_argv
from .run import Run
from .values import PLAIN, to_json_value

T = TypeVar("T")

_IMPORT_TIME = time.time()
_ARGV = list(sys.argv)
sys.argv[:], _KWARGS, _KWARGS_ERROR = split_argv(sys.argv)
_run: Run | None = None
_started = False


def _current() -> Run:
    global _run, _started
    if _run is None:
        # The first run of a process started when the script did; one after
        # flor.commit() starts now.
        _run = Run(start=time.time() if _started else _IMPORT_TIME, argv=_ARGV)
        _started = True
        _run.attach()
    return _run


def log(name: str, value: T) -> T:
    """Record ``value`` under ``name`` at the current loop position and return it unchanged."""
    run = _run if _run is not None else _current()
    if type(name) is not str:
        raise UnloggableValue(f"flor.log: the name must be a str, got {name!r}")
    stored = value if type(value) in PLAIN else to_json_value(name, value)
    run.records.append((name, stored, run.ctx))
    if run.echo:
        sys.stdout.write(f"{name}: {stored}\n")
    return value


def arg(name: str, default: Any = None) -> Any:
    """A run parameter: ``--kwargs name=value`` overrides ``default`` (cast to its type); recorded."""
    run = _current()
    if _KWARGS_ERROR:
        raise BadArgument(_KWARGS_ERROR)
    value = cast(name, _KWARGS[name], default) if name in _KWARGS else default
    run.set_arg(name, to_json_value(name, value))
    return value


def loop(name: str, iterable: Iterable[T]) -> Iterator[T]:
    """Iterate while giving every ``flor.log`` inside its position (index, and value if scalar).

    The outermost ``flor.loop`` is the checkpoint boundary; its per-iteration wall
    times are recorded for replay's cost model and each iteration end pushes the
    journal.
    """
    run = _current()
    parent = run.ctx
    seq = run.loop_begin(name) if not parent else None
    clock = time.perf_counter
    try:
        for i, item in enumerate(iterable):
            run.ctx = parent + ((name, i, item if type(item) in PLAIN else None),)
            t0 = clock()
            yield item
            if seq is not None:
                run.iteration_done(seq, clock() - t0)
    finally:
        run.ctx = parent
        if seq is not None:
            run.loop_end(seq)


@contextmanager
def checkpointing(**objects: Any) -> Iterator[None]:
    """Register the objects whose state replay restores (model, optimizer, scheduler, ...)."""
    run = _current()
    registered = dict(run.meta.get("checkpointing", {}))
    for key, obj in objects.items():
        registered[key] = f"{type(obj).__module__}.{type(obj).__qualname__}"
    run.set_meta(checkpointing=registered)
    yield


def commit() -> str | None:
    """Write the run so far to git now; later calls belong to a new run. Returns the shadow commit."""
    global _run
    if _run is None:
        return None
    run, _run = _run, None
    return run.finish()
