"""State fingerprints: the witnesses a recorded run leaves for verified replay (docs/design.md §7).

At the end of an outer-loop iteration the run hashes, per component, the state
a later iteration can depend on:

``obj:NAME``   objects registered with ``flor.checkpointing`` (state_dict, tensors, arrays)
``var:NAME``   the loop frame's variables that are not iteration temporaries
               (the loop-carried ones, models, optimizers, data, RNG objects...)
``mod:NAME``   the loop's module's variables (when the loop runs in a function)
``rng:KIND``   the global RNG states (``random``, numpy, torch, CUDA)

A replay computes the same components where it reaches the same point and
compares: a difference means the replayed state is not the original one, so its
values must not be published. Each component is a short blake2b digest of a
canonical encoding: small values exactly (floats bit for bit, NaN equal to NaN),
large arrays and tensors by shape, dtype and a fixed, evenly spaced sample of
at most :data:`SAMPLE` elements, torch modules by their state_dict *and* their
train/eval flags, RNG objects and the global RNGs by their whole state (a torch
generator's 5 KB state moves only a counter for a few draws: a sample misses it),
dicts whatever the order of their keys (``load_state_dict`` rebuilds an optimizer's
param groups with ``params`` last). Runs recorded with the first encoding
(``storage.records.WITNESS_FORMAT`` 1: RNG states sampled, dicts in key order) are
checked in theirs. Objects of the script's own
classes are hashed attribute by attribute; third-party objects only through the
RNGs, modules and tensors they hold (a DataLoader's generator, a sampler's), so
host details inside them (file handles, paths, thread ids) never make two
recordings of one deterministic computation differ. What is left out by name is
decided by :mod:`.state_scope` (temporaries, host- and clock-derived values).
"""

from __future__ import annotations

import hashlib
import io
import math
import random
import struct
import sys
from collections.abc import Iterator
from types import BuiltinFunctionType, FrameType, FunctionType, MethodType, ModuleType
from typing import Any

from ..storage.records import WITNESS_FORMAT
from . import serial
from .carried import LoopScope
from .state_scope import StateScope

#: Elements of a large array or tensor that enter its digest.
SAMPLE = 1024
#: How deep containers and the script's own objects are followed.
MAX_DEPTH = 6
#: Items of a list/dict that enter a digest (evenly spaced beyond this).
MAX_ITEMS = 2048

_SKIP_TYPES = (ModuleType, FunctionType, BuiltinFunctionType, MethodType, type)


def _np() -> Any:
    return sys.modules.get("numpy")


def _torch() -> Any:
    return sys.modules.get("torch")


def is_rng(value: Any) -> bool:
    """An RNG object whose state decides what a script draws next."""
    if isinstance(value, random.Random):
        return True
    np, torch = _np(), _torch()
    if np is not None and isinstance(value, (np.random.Generator, np.random.RandomState)):
        return True
    return torch is not None and isinstance(value, torch.Generator)


class _Hasher:
    def __init__(self, own: frozenset[str], fmt: int = WITNESS_FORMAT) -> None:
        self.own = own  # module names whose classes are the script's own
        self.exact = fmt >= 2  # RNG states whole, dicts in any order (see module doc)
        # Looked up once per fingerprint, not once per value: a fingerprint is taken on the
        # training thread between epochs, where every tenth of a millisecond is charged.
        self.np, self.torch = _np(), _torch()
        self.numpy_dtypes = _numpy_dtypes() if self.torch is not None else frozenset()

    def digest(self, value: Any) -> str:
        h = hashlib.blake2b(digest_size=8)
        self.feed(h, value, 0, set())
        return h.hexdigest()

    # -- the canonical encoding ------------------------------------------------------------

    def feed(self, h: Any, v: Any, depth: int, seen: set[int]) -> None:
        kind = type(v)
        if v is None or kind is bool:
            h.update(b"c" + repr(v).encode())
            return
        if kind is int:
            h.update(b"i" + str(v).encode() + b";")
            return
        if kind is float:
            h.update(b"f" + (b"nan" if math.isnan(v) else struct.pack("<d", v)))
            return
        if kind is str:
            data = v.encode("utf-8", "surrogatepass")
            h.update(b"s" + str(len(data)).encode() + b":" + data)
            return
        if kind is bytes:
            h.update(b"b" + str(len(v)).encode() + b":" + v)
            return
        if depth > MAX_DEPTH:
            h.update(b"deep")
            return
        if id(v) in seen:
            h.update(b"cycle")
            return
        np, torch = self.np, self.torch
        if torch is not None and isinstance(v, torch.Tensor):
            self._tensor(h, v)
            return
        # Containers before the rarer kinds below (none of which is a list or a dict):
        # an optimizer's state_dict is mostly small dicts and lists.
        if kind is dict or kind is list or kind is tuple:
            self._container(h, v, kind is dict, depth, seen | {id(v)})
            return
        if np is not None and isinstance(v, (np.ndarray, np.generic)):
            self._array(h, np.asarray(v))
            return
        if is_rng(v):
            h.update(b"rng" + type(v).__name__.encode())
            state = _rng_state(v)
            self.feed(h, exact(state) if self.exact else state, depth + 1, seen)
            return
        if isinstance(v, _SKIP_TYPES):
            h.update(b"code")
            return
        seen = seen | {id(v)}
        if isinstance(v, (list, tuple)):
            self._container(h, v, False, depth, seen)
            return
        if isinstance(v, dict):
            self._container(h, v, True, depth, seen)
            return
        if isinstance(v, (set, frozenset)):
            h.update(b"S" + ",".join(sorted(self.digest(x) for x in v)).encode())
            return
        if torch is not None and isinstance(v, torch.nn.Module):
            h.update(b"M" + "".join("1" if m.training else "0" for m in v.modules()).encode())
            self.feed(h, v.state_dict(), depth + 1, seen)
            return
        if callable(getattr(v, "state_dict", None)) and callable(getattr(v, "load_state_dict", None)):
            try:
                state = v.state_dict()
            except Exception:
                state = None
            if state is not None:
                h.update(b"D")
                self.feed(h, state, depth + 1, seen)
                return
        attrs = getattr(v, "__dict__", None)
        if not isinstance(attrs, dict):
            h.update(b"o" + type(v).__name__.encode())
            return
        if (kind.__module__ or "") in self.own:
            h.update(b"O" + kind.__qualname__.encode())
            for key, item in attrs.items():
                self.feed(h, key, depth + 1, seen)
                self.feed(h, item, depth + 1, seen)
            return
        # A third-party object: only the training state it holds (RNGs, modules, tensors).
        h.update(b"T" + kind.__qualname__.encode())
        for key, item in attrs.items():
            if _holds_state(item):
                self.feed(h, key, depth + 1, seen)
                self.feed(h, item, depth + 1, seen)
            elif depth < 3 and getattr(item, "__dict__", None) is not None and not isinstance(item, _SKIP_TYPES):
                inner = hashlib.blake2b(digest_size=8)
                self.feed(inner, item, depth + 1, seen)
                h.update(key.encode() if isinstance(key, str) else b"?")
                h.update(inner.digest())

    def _container(self, h: Any, v: Any, is_dict: bool, depth: int, seen: set[int]) -> None:
        """A list, tuple or dict (``seen`` already holds it)."""
        if not is_dict:
            h.update(b"l" + str(len(v)).encode())
            items = _sample(v)
            if all(type(item) is int for item in items):
                # (Python's RNG state: 625 ints per fingerprint) the bytes item by item would feed
                h.update(b"".join(b"i%d;" % item for item in items))
                return
            for item in items:
                self.feed(h, item, depth + 1, seen)
            return
        h.update(b"d" + str(len(v)).encode())
        pairs = list(v.items())
        if self.exact:  # equal dicts are equal state, in whatever order their keys were set
            pairs.sort(key=lambda kv: self._key(kv[0]))
        for key, item in _sample(pairs):
            self.feed(h, key, depth + 1, seen)
            self.feed(h, item, depth + 1, seen)

    def _key(self, key: Any) -> str:
        """A dict key's digest (the sort order of an exact dict); str and int keys cached."""
        if type(key) is str or type(key) is int:
            cached = _KEYS.get((type(key), key))
            if cached is None:
                if len(_KEYS) > 4096:
                    _KEYS.clear()
                cached = _KEYS[(type(key), key)] = self.digest(key)
            return cached
        return self.digest(key)

    def _array(self, h: Any, a: Any) -> None:
        np = _np()
        h.update(b"A" + str(a.shape).encode() + a.dtype.str.encode())
        if a.dtype.hasobject:
            for item in _sample(a.reshape(-1).tolist()):
                h.update(self.digest(item).encode())
            return
        n = a.size
        if n <= SAMPLE:
            h.update(np.ascontiguousarray(a).tobytes())
        else:
            idx = np.linspace(0, n - 1, SAMPLE).astype(np.int64)
            h.update(np.ascontiguousarray(a.flat[idx]).tobytes() if not a.flags.c_contiguous
                     else a.reshape(-1)[idx].tobytes())

    def _tensor(self, h: Any, t: Any) -> None:
        torch = self.torch
        t = t.detach()
        h.update(b"T" + str(tuple(t.shape)).encode() + str(t.dtype).encode())
        if t.device.type == "cpu" and t.layout == torch.strided and not t.is_conj() and not t.is_neg() \
                and t.dtype in self.numpy_dtypes:
            # numpy's view of a CPU tensor: the same bytes as below, a few torch calls fewer
            # (each costs microseconds, and a model has dozens of tensors)
            flat = t.numpy().reshape(-1)
            n = flat.size
            h.update((flat[_sample_index(n)] if n > SAMPLE else flat).tobytes() if n else b"")
            return
        if t.is_sparse or t.layout != torch.strided:
            t = t.to_dense()
        flat = t.reshape(-1)
        n = flat.numel()
        if n > SAMPLE:
            flat = flat[torch.linspace(0, n - 1, SAMPLE, device=flat.device).long()]
        flat = flat.cpu().contiguous()
        h.update(flat.view(torch.uint8).numpy().tobytes() if n else b"")


#: digests of str and int dict keys (an optimizer's state_dict sorts the same keys every epoch)
_KEYS: dict[tuple[type, Any], str] = {}
_INDEX: dict[int, Any] = {}
_DTYPES: list[frozenset[Any]] = []


def _numpy_dtypes() -> frozenset[Any]:
    """torch dtypes whose CPU tensors numpy views byte for byte (bfloat16 and friends are not)."""
    if not _DTYPES:
        torch = _torch()
        names = ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool",
                 "complex64", "complex128")
        _DTYPES.append(frozenset(getattr(torch, n) for n in names if hasattr(torch, n)))
    return _DTYPES[0]


def _sample_index(n: int) -> Any:
    """The elements a tensor of ``n`` elements is hashed by: torch's float32 linspace, as numpy indices."""
    idx = _INDEX.get(n)
    if idx is None:
        if len(_INDEX) > 256:
            _INDEX.clear()
        torch = _torch()
        idx = _INDEX[n] = torch.linspace(0, n - 1, SAMPLE).long().numpy()
    return idx


def _sample(items: Any) -> Any:
    n = len(items)
    if n <= MAX_ITEMS:
        return items
    step = n / MAX_ITEMS
    return [items[int(k * step)] for k in range(MAX_ITEMS)]


def exact(state: Any) -> Any:
    """An RNG state with its arrays and tensors as bytes, so a digest takes all of it, not a sample."""
    np, torch = _np(), _torch()
    if torch is not None and isinstance(state, torch.Tensor):
        return str(state.dtype).encode() + state.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes()
    if np is not None and isinstance(state, np.ndarray):
        return state.dtype.str.encode() + np.ascontiguousarray(state).tobytes()
    if isinstance(state, (list, tuple)):
        return list(state) if all(type(x) is int for x in state) else [exact(x) for x in state]
    if isinstance(state, dict):
        return {k: exact(x) for k, x in state.items()}
    return state


def _rng_state(v: Any) -> Any:
    if isinstance(v, random.Random):
        return v.getstate()
    np = _np()
    if np is not None and isinstance(v, np.random.Generator):
        return v.bit_generator.state
    if np is not None and isinstance(v, np.random.RandomState):
        return v.get_state(legacy=False)
    return v.get_state()


def _holds_state(value: Any) -> bool:
    np, torch = _np(), _torch()
    if is_rng(value):
        return True
    if np is not None and isinstance(value, np.ndarray):
        return True
    return torch is not None and isinstance(value, (torch.Tensor, torch.nn.Module))


# -- what a fingerprint covers -------------------------------------------------------------


def watched(
    frame: FrameType | None, scope: LoopScope | None, state: StateScope
) -> Iterator[tuple[str, Any]]:
    """(component, value) pairs of the loop's frame and module that are state (see module doc)."""
    if frame is None:
        return
    carried = set(scope.names) if scope is not None else set()
    target = ({scope.target} | set(scope.targets)) if scope is not None and scope.target else (
        set(scope.targets) if scope is not None else set())
    module_level = scope.module_level if scope is not None else frame.f_code.co_name == "<module>"

    def keep(name: str, value: Any) -> bool:
        if name.startswith("__") or name in state.host_derived or name in target:
            return False
        if name in state.body_writes and name not in carried:
            return False  # an iteration temporary
        return not isinstance(value, _SKIP_TYPES) and not _is_flor(value) and not closed_file(value)

    if module_level:
        for name, value in list(frame.f_globals.items()):
            if keep(name, value):
                yield f"var:{name}", value
        return
    for name, value in list(frame.f_locals.items()):
        if keep(name, value):
            yield f"var:{name}", value
    for name, value in list(frame.f_globals.items()):
        if not name.startswith("__") and name not in state.host_derived and not isinstance(value, _SKIP_TYPES) \
                and not _is_flor(value) and not closed_file(value):
            yield f"mod:{name}", value


def closed_file(value: Any) -> bool:
    """A file the body opened and closed (``with open(args.save, "wb") as f: torch.save(model, f)``).

    Its name stays bound after the ``with`` (only in the iterations that took that branch),
    but nothing can be read or written through it: no state to witness or to checkpoint.
    """
    return isinstance(value, io.IOBase) and value.closed


def _is_flor(value: Any) -> bool:
    return (type(value).__module__ or "").startswith("git_flor")


def own_modules(frame: FrameType | None) -> frozenset[str]:
    """Module names whose classes count as the script's own (hashed attribute by attribute)."""
    out = {"__main__", "__mp_main__"}
    if frame is not None:
        out.add(frame.f_globals.get("__name__", "__main__"))
    return frozenset(out)


def fingerprint(
    objects: dict[str, Any], frame: FrameType | None, scope: LoopScope | None, state: StateScope,
    fmt: int = WITNESS_FORMAT,
) -> dict[str, str]:
    """The components of the current state, each a 16-hex digest (see module doc), in encoding ``fmt``."""
    hasher = _Hasher(own_modules(frame), fmt)
    out: dict[str, str] = {}
    registered = {id(o) for o in objects.values()}
    for name, obj in objects.items():
        out[f"obj:{name}"] = _safe(hasher, obj)
    for comp, value in watched(frame, scope, state):
        if id(value) in registered:
            continue  # hashed as obj:...
        out[comp] = _safe(hasher, value)
    rng = serial.capture_rng()
    for kind, value in rng.items():
        out[f"rng:{kind}"] = _safe(hasher, exact(value) if hasher.exact else value)
    return out


def _safe(hasher: _Hasher, value: Any) -> str:
    try:
        return hasher.digest(value)
    except Exception as exc:  # a state_dict that raises, a tensor on a lost device
        return f"error:{type(exc).__name__}"


def differences(expected: dict[str, str], actual: dict[str, str]) -> list[str]:
    """Components whose digests differ, or that the original had and the replay lacks."""
    return sorted(k for k, v in expected.items() if actual.get(k) != v)
