"""Checkpoints as a model registry: any run's saved object, by name and iteration.

Every run that registered objects with ``flor.checkpointing`` already saved them
at the end of outer-loop iterations (docs/design.md §1, §3), so "the model of the
run with the best ``val_acc``" needs no second copy: ``flor.load`` finds that
run's manifest, the iteration, the object's payload — in this clone, or fetched
from the configured ``flor.store`` — and restores it with the same serialiser
that saved it (``serial.restore``, in place, as replay does). ``git flor ckpt
export`` writes the same payload as a plain ``torch.load``/``numpy.load``/pickle
file for tools that know nothing of git-flor.

Only the iterations the checkpoint policy saved can be loaded (the first, the
last, and as many between as ``FLOR_CKPT_BOUND`` allowed); asking for another
says which exist rather than handing over a neighbour's state.

Nothing here runs at ``import git_flor``: the package's ``load`` imports this
module on first use, and this module opens the repository only when called.
"""

from __future__ import annotations

import operator
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from ..storage.checkpoints import IterationCheckpoint, Manifest, Pointer
from . import serial
from .checkpoint import NESTED_RNG, RNG

if TYPE_CHECKING:
    from ..storage.repo import Repository

#: ``iter=`` as the API takes it: the outer loop's index (``7``), ``{"epoch": 7}``, or None for the last.
IterSpec = int | Mapping[str, int] | None

#: RNG states: what replay restores, not something to load.
INTERNAL = (RNG, NESTED_RNG)


@dataclass(frozen=True)
class Saved:
    """One saved object of one run at one outer-loop iteration: where its payload is and how it was saved."""

    run: str
    loop: str
    iteration: int
    name: str  # the manifest's key: a registered name, or "var:NAME" for a loop-carried variable
    pointer: Pointer

    def describe(self) -> str:
        return f"{self.name} of run {self.run[:12]} at {self.loop}={self.iteration}"


def find(repo: Repository, name: str, run: str | None = None, iteration: IterSpec = None) -> Saved:
    """The saved object ``name`` of ``run`` (an id or a unique prefix; the newest run that saved ``name``
    when None) at ``iteration`` (the last saved one when None). Raises UsageError saying what exists."""
    from ..storage.checkpoints import read_manifest, run_ids_with_checkpoints
    from ..storage.index import connect, runs_by_start

    with_ckpts = set(run_ids_with_checkpoints(repo))
    conn = connect(repo)
    try:
        by_start = runs_by_start(conn)
    finally:
        conn.close()
    if run is None:
        newest_first = [r for r in reversed(by_start) if r in with_ckpts]
        newest_first += sorted(with_ckpts - set(by_start))  # a manifest whose run was not fetched
        for run_id in newest_first:
            manifest = read_manifest(repo, run_id)
            if any(_key(e, name) for e in manifest.values()):
                return _pick(run_id, manifest, name, iteration)
        raise UsageError(
            f"no run saved a checkpoint of {name!r}; register it with "
            f"`with flor.checkpointing({name}=...)` (see `git flor ckpt list RUN`)"
        )
    run_id = _resolve(sorted(with_ckpts), by_start, run)
    return _pick(run_id, read_manifest(repo, run_id), name, iteration)


def checkpointed_run(repo: Repository, run: str) -> str:
    """The full id of the run ``run`` names (a unique prefix), which must have checkpoints."""
    from ..storage.checkpoints import run_ids_with_checkpoints
    from ..storage.index import connect, runs_by_start

    conn = connect(repo)
    try:
        by_start = runs_by_start(conn)
    finally:
        conn.close()
    return _resolve(sorted(run_ids_with_checkpoints(repo)), by_start, run)


def _resolve(with_ckpts: list[str], every: list[str], run: str) -> str:
    from ..storage.revs import resolve_run

    if not any(c.startswith(run) for c in with_ckpts) and any(r.startswith(run) for r in every):
        raise UsageError(
            f"run {run!r} saved no checkpoints: its script registered nothing with flor.checkpointing "
            "(or `git flor gc` removed them); pick another run (`git flor runs`)"
        )
    return resolve_run(with_ckpts, run)


def _key(entry: IterationCheckpoint, name: str) -> str | None:
    """The manifest key ``name`` means: a registered object, else a loop-carried variable."""
    objects = entry.get("objects", {})
    for key in (name, f"var:{name}"):
        if key in objects and key not in INTERNAL:
            return key
    return None


def _pick(run_id: str, manifest: Manifest, name: str, iteration: IterSpec) -> Saved:
    if not manifest:
        raise UsageError(f"run {run_id[:12]} has no checkpoints left; pick another run (`git flor runs`)")
    loop = str(next(iter(manifest.values())).get("loop", "loop"))
    saved = sorted(manifest)
    shown = ", ".join(map(str, saved))
    if iteration is None:
        i = saved[-1]
    else:
        i = _index(iteration, loop)
        if i not in manifest:
            raise UsageError(
                f"run {run_id[:12]} saved checkpoints of {loop} {shown} only, not {loop}={i} "
                "(FLOR_CKPT_BOUND=1 saves every iteration); load one of those"
            )
    entry = manifest[i]
    key = _key(entry, name)
    if key is None:
        names = sorted(k[4:] if k.startswith("var:") else k for k in entry.get("objects", {}) if k not in INTERNAL)
        why = " (it could not be saved there)" if name in entry.get("unsaved", []) else ""
        raise UsageError(
            f"run {run_id[:12]} has no saved {name!r} at {loop}={i}{why}; "
            f"saved there: {', '.join(names) or '(nothing)'}"
        )
    return Saved(run_id, loop, i, key, entry["objects"][key])


def _index(iteration: int | Mapping[str, int], loop: str) -> int:
    if isinstance(iteration, Mapping):
        if len(iteration) != 1:
            raise UsageError(f"iter= names one outer-loop iteration, e.g. {{{loop!r}: 7}}; got {dict(iteration)!r}")
        (key, value), = iteration.items()
        if key != loop:
            raise UsageError(f"checkpoints are taken per {loop!r} (the outer flor.loop), not {key!r}: "
                             f"use iter={{{loop!r}: N}}")
        iteration = value
    try:  # numpy and pandas integers too: iter={"epoch": row["epoch"]} from flor.dataframe
        if isinstance(iteration, bool):
            raise TypeError
        return operator.index(iteration)
    except TypeError:
        raise UsageError(f"an iteration is an int index of the outer loop, got {iteration!r}") from None


def payload(repo: Repository, saved: Saved) -> bytes:
    """The saved bytes, from this clone or fetched from ``flor.store`` (checked against their sha256)."""
    from ..storage.remote_store import read_payload

    return read_payload(repo, saved.pointer.sha256)


def load(name: str, run: str | None = None, iteration: IterSpec = None, into: Any = None) -> Any:
    """See ``git_flor.load``.

    A training run records what each call resolved to (which run, iteration and payload):
    a replay of it (which opens no repository, and would find a newer "newest run" today)
    loads exactly those bytes again (see ``api.recorded_load``).
    """
    from . import api

    args = {"name": name, "run": run, "iter": _plain(iteration)}
    replayed = api.recorded_load(args)
    if replayed is not None:
        saved, data = replayed
    else:
        from ..storage.repo import open_repo

        repo = open_repo()
        saved = find(repo, name, run, iteration)
        data = payload(repo, saved)
        api.note_load({**args, "resolved": {"run": saved.run, "loop": saved.loop, "iteration": saved.iteration,
                                            "key": saved.name, **saved.pointer.__dict__}})
    try:
        state = serial.deserialise(saved.pointer.serializer, data)
    except AttributeError as exc:  # pickle: a class of the training script's __main__, absent here
        if into is None or saved.pointer.serializer != "pickle":
            raise UsageError(
                f"{saved.describe()} is an object of a class this program does not define ({exc}); "
                "pass into= an instance of that class, or define it here first"
            ) from None
        state = _unpickle_as(data, type(into))
    if into is None:
        return user_state(saved.pointer.serializer, state)
    restored = serial.restore(into, saved.pointer.serializer, state)
    if restored is not into:
        raise UsageError(
            f"cannot restore {saved.describe()} in place into {_shape(into)}: it is {_shape(state)}; "
            "call flor.load without into= to get the saved value"
        )
    return into



def _plain(iteration: IterSpec) -> Any:
    """``iter=`` as JSON (a record of the call): an int, {loop: int}, or None."""
    if isinstance(iteration, Mapping):
        return {str(k): _plain(v) for k, v in iteration.items()}
    try:
        return None if iteration is None else operator.index(iteration)
    except TypeError:
        return repr(iteration)


def saved_of(resolved: dict[str, Any]) -> Saved:
    """The ``Saved`` a recorded load resolved to (see ``load``)."""
    return Saved(str(resolved["run"]), str(resolved["loop"]), int(resolved["iteration"]), str(resolved["key"]),
                 Pointer.from_json(resolved))


def _unpickle_as(data: bytes, cls: type) -> Any:
    """Unpickle, resolving the training script's own class (pickled as ``__main__.Name``) to ``cls``
    when it has that name: a notebook that defines or imports the class elsewhere can still load it."""

    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            try:
                return super().find_class(module, name)
            except AttributeError:
                if module == "__main__" and name == cls.__name__:
                    return cls
                raise UsageError(f"the saved object needs class {module}.{name}, which this program lacks; "
                                 "define or import it first") from None

    import io

    return Unpickler(io.BytesIO(data)).load()


def user_state(serializer: str, state: Any) -> Any:
    """The saved state as a user holds it: an object of the script's own class, saved attribute by
    attribute, is {attribute: state} (without the serialiser tags that restoring needs)."""
    if serializer == "attrs":
        return {key: user_state(ser, part) for key, (ser, part) in state.items()}
    return state


def export_bytes(saved: Saved, data: bytes) -> tuple[bytes | memoryview, str]:
    """The payload as a file that ``torch.load``/``numpy.load``/``pickle.load`` reads, and which one."""
    if saved.pointer.serializer == "attrs":  # nested payloads: only a pickle of the states reads as one file
        state = user_state("attrs", serial.deserialise("attrs", data))
        return pickle.dumps(state, protocol=serial.PICKLE), "pickle.load"
    return serial.standalone(saved.pointer.serializer, data)


def _shape(value: Any) -> str:
    """A value's type, with shape and dtype for arrays and tensors (what decides whether it fits in place)."""
    shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
    extra = f" of shape {tuple(shape)} and dtype {dtype}" if shape is not None and dtype is not None else ""
    return f"a {type(value).__name__}{extra}"
