"""Saving and restoring training state, each kind by its most faithful method.

Three steps, split so training waits only for the first: ``capture`` makes an
in-memory copy on the training thread (a tensor clone, an array copy, a pickle);
``serialise`` turns it into bytes on the background writer; ``restore`` puts a
saved state back *in place* where the object allows it, so every reference the
training script holds (``opt`` holding ``model.parameters()``, an alias of a
list) stays valid. torch and numpy are never imported here: an object can only
be a tensor if the script already imported torch.
"""

from __future__ import annotations

import copy
import ctypes
import io
import pickle
import random
import sys
import types
from typing import Any

PICKLE = pickle.HIGHEST_PROTOCOL


class Unsaveable(Exception):
    """This object cannot be saved; the message says why."""


def _torch() -> Any:
    return sys.modules.get("torch")


def _numpy() -> Any:
    return sys.modules.get("numpy")


def capture(obj: Any, reuse: Any = None) -> tuple[str, Any]:
    """(serializer, in-memory snapshot) of ``obj``'s current state. Raises Unsaveable.

    ``reuse`` is an earlier snapshot of the same object whose write has finished:
    copying into its memory instead of fresh pages avoids the page faults that make
    a first copy of a large state several times slower than a memcpy.
    """
    torch, np = _torch(), _numpy()
    try:
        if torch is not None and isinstance(obj, torch.Tensor):
            return "torch_tensor", _copy_tensor(obj, reuse)
        if np is not None and isinstance(obj, np.ndarray):
            if isinstance(reuse, np.ndarray) and reuse.shape == obj.shape and reuse.dtype == obj.dtype:
                np.copyto(reuse, obj)
                return "numpy", reuse
            return "numpy", obj.copy()
        if np is not None and isinstance(obj, np.random.Generator):
            return "np_generator", copy.deepcopy(obj.bit_generator.state)
        if torch is not None and isinstance(obj, torch.Generator):
            return "torch_generator", obj.get_state()
        if isinstance(obj, random.Random):
            return "py_random", obj.getstate()
        if callable(getattr(obj, "state_dict", None)) and callable(getattr(obj, "load_state_dict", None)):
            return "state_dict", _clone_tree(obj.state_dict(), reuse)
        return "pickle", pickle.dumps(obj, protocol=PICKLE)
    except Unsaveable:
        raise
    except Exception as exc:  # unpicklable, or a state_dict that fails
        raise Unsaveable(f"{type(exc).__name__}: {exc}") from None


def capture_attrs(obj: Any, skip: set[int]) -> tuple[str, Any]:
    """An object of the script's own classes (a trainer on ``self``), attribute by attribute.

    Each attribute is captured by its own most faithful method, so a restore puts the
    state back *into* the attributes' objects: the scheduler keeps driving the optimizer
    that trains, the optimizer keeps the model's parameters. Attributes that are objects
    registered on their own (``skip``: their ids) are restored as such.
    """
    parts: dict[str, tuple[str, Any]] = {}
    for key, value in vars(obj).items():
        if id(value) in skip or isinstance(value, (types.FunctionType, types.MethodType, types.ModuleType, type)):
            continue
        parts[key] = capture(value)
    return "attrs", parts


def reusable(serializer: str) -> bool:
    """Whether a written snapshot of this kind can take the next copy (see ``capture``)."""
    return serializer in ("numpy", "torch_tensor", "state_dict")


def prefault(obj: Any) -> Any:
    """A snapshot-shaped buffer with its pages already touched, or None.

    Meant for a background thread when objects are registered: numpy's and
    torch's fills release the GIL, so the first checkpoint then costs a plain
    copy on the training thread.
    """
    torch, np = _torch(), _numpy()
    if np is not None and isinstance(obj, np.ndarray) and not obj.dtype.hasobject:
        buf = np.empty_like(obj, order="C")
        ctypes.memset(buf.ctypes.data, 0, buf.nbytes)  # a foreign call: the GIL is released
        return buf
    if torch is not None and isinstance(obj, torch.Tensor):
        return torch.zeros_like(obj)
    if callable(getattr(obj, "state_dict", None)) and callable(getattr(obj, "load_state_dict", None)):
        try:
            return _clone_tree(obj.state_dict(), None)
        except Exception:
            return None
    return None


def serialise(serializer: str, snapshot: Any) -> list[Any]:
    """The payload as a list of buffers (large arrays as zero-copy memoryviews)."""
    if serializer == "pickle":
        return [snapshot]
    if serializer == "attrs":
        parts = {k: (ser, b"".join(bytes(b) for b in serialise(ser, snap))) for k, (ser, snap) in snapshot.items()}
        return [pickle.dumps(parts, protocol=PICKLE)]
    if serializer == "numpy":
        np = _numpy()
        buf = io.BytesIO()
        if snapshot.dtype.hasobject:
            pickle.dump(snapshot, buf, protocol=PICKLE)
            return [b"P", buf.getvalue()]
        if snapshot.flags.c_contiguous:
            header = np.lib.format.header_data_from_array_1_0(snapshot)
            np.lib.format.write_array_header_2_0(buf, header)
            return [b"N", buf.getvalue(), memoryview(snapshot.reshape(-1).view(np.uint8))]
        np.save(buf, snapshot, allow_pickle=False)
        return [b"N", buf.getvalue()]
    torch = _torch()
    if serializer in ("torch_tensor", "state_dict", "torch_generator") and torch is not None:
        buf = io.BytesIO()
        torch.save(snapshot, buf)
        return [buf.getbuffer()]
    return [pickle.dumps(snapshot, protocol=PICKLE)]


def deserialise(serializer: str, data: bytes) -> Any:
    if serializer == "pickle":
        return pickle.loads(data)
    if serializer == "attrs":
        return {k: (ser, deserialise(ser, raw)) for k, (ser, raw) in pickle.loads(data).items()}
    if serializer == "numpy":
        if data[:1] == b"P":
            return pickle.loads(data[1:])
        import numpy as np

        return np.load(io.BytesIO(data[1:]), allow_pickle=False)
    if serializer in ("torch_tensor", "state_dict", "torch_generator") and data[:2] == b"PK":
        import torch

        try:
            return torch.load(io.BytesIO(data), weights_only=True)
        except Exception:  # e.g. a scheduler state holding a plain Python object
            return torch.load(io.BytesIO(data), weights_only=False)
    return pickle.loads(data)


def standalone(serializer: str, data: bytes) -> tuple[memoryview, str]:
    """A payload as a file that tools knowing nothing of git-flor read, and the call that reads it.

    torch payloads already are ``torch.save`` files; a numpy payload is an ``.npy``
    file (or a pickle, for object arrays) behind a one-byte tag; the rest are pickles.
    No copy, no deserialising: exporting a model needs neither torch nor numpy.
    """
    view = memoryview(data)
    if serializer == "numpy":
        return view[1:], ("numpy.load" if data[:1] == b"N" else "pickle.load")
    if serializer in ("torch_tensor", "state_dict", "torch_generator") and data[:2] == b"PK":
        return view, "torch.load"
    return view, "pickle.load"


def restore(obj: Any, serializer: str, value: Any) -> Any:
    """Put ``value`` back into ``obj`` in place when possible; return the object to bind."""
    if serializer == "state_dict":
        obj.load_state_dict(value)
        return obj
    if serializer == "torch_tensor":
        torch = _torch()
        if obj is not None and isinstance(obj, torch.Tensor) and obj.shape == value.shape and obj.dtype == value.dtype:
            with torch.no_grad():
                obj.copy_(value)
            return obj
        return value
    if serializer == "numpy":
        np = _numpy()
        if np is not None and isinstance(obj, np.ndarray) and obj.shape == value.shape and obj.dtype == value.dtype and obj.flags.writeable:
            np.copyto(obj, value)
            return obj
        return value
    if serializer == "np_generator":
        obj.bit_generator.state = value
        return obj
    if serializer == "torch_generator":
        obj.set_state(value)
        return obj
    if serializer == "py_random":
        obj.setstate(value)
        return obj
    if serializer == "attrs":
        for key, (ser, part) in value.items():
            current = getattr(obj, key, None)
            restored = restore(current, ser, part)
            if restored is not current:
                setattr(obj, key, restored)
        return obj
    return _restore_pickled(obj, value)


def _restore_pickled(obj: Any, value: Any) -> Any:
    if type(obj) is not type(value):
        return value
    if isinstance(obj, dict):
        obj.clear()
        obj.update(value)
        return obj
    if isinstance(obj, list):
        obj[:] = value
        return obj
    if isinstance(obj, set):
        obj.clear()
        obj.update(value)
        return obj
    state = getattr(value, "__dict__", None)
    if state is not None and hasattr(obj, "__dict__"):
        obj.__dict__.clear()
        obj.__dict__.update(state)
        return obj
    return value  # immutable (int, float, str, tuple, ...): rebinding is the only way


def _copy_tensor(t: Any, reuse: Any) -> Any:
    torch = _torch()
    src = t.detach()
    if isinstance(reuse, torch.Tensor) and reuse.shape == src.shape and reuse.dtype == src.dtype and reuse.device == src.device:
        reuse.copy_(src)
        return reuse
    return src.clone()


def _clone_tree(value: Any, reuse: Any) -> Any:
    """Copy a state_dict: tensors copied (into ``reuse``'s tensors when they match), the rest deep-copied."""
    torch = _torch()
    if torch is not None and isinstance(value, torch.Tensor):
        return _copy_tensor(value, reuse)
    if isinstance(value, dict):
        old = reuse if isinstance(reuse, dict) else {}
        return type(value)((k, _clone_tree(v, old.get(k))) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        old = reuse if isinstance(reuse, (list, tuple)) and len(reuse) == len(value) else [None] * len(value)
        return type(value)(_clone_tree(v, o) for v, o in zip(value, old))
    return copy.deepcopy(value)


# -- RNG --------------------------------------------------------------------------------------


def capture_rng() -> dict[str, Any]:
    """The global RNG states a resumed iteration needs to draw the same batches."""
    state: dict[str, Any] = {"random": random.getstate()}
    np, torch = _numpy(), _torch()
    if np is not None:
        state["numpy"] = np.random.get_state()
    if torch is not None:
        state["torch"] = torch.get_rng_state()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_if(state: dict[str, Any] | None) -> None:
    """:func:`restore_rng`, when there is a state."""
    if state is not None:
        restore_rng(state)


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(state["random"])
    if "numpy" in state:
        import numpy as np

        np.random.set_state(state["numpy"])
    if "torch" in state:
        import torch

        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
