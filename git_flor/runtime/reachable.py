"""State a checkpoint must hold that no variable names: RNG objects inside objects, train/eval flags.

A data module's ``self.rng``, a ``DataLoader(generator=g)``'s generator reached
through the loader, a sampler's ``random.Random``: each decides which batches
the next iteration draws, yet the loop body never names it, so the
carried-variable analysis cannot see it. The checkpoint saves every RNG object
reachable from the loop's variables by attribute paths (``loader.generator``,
``data.rng``) and restores it *in place* along the same path. Likewise the
train/eval flags of registered torch modules: ``state_dict`` does not hold them,
and ``net.eval()`` left on by an ``evaluate()`` changes what the next iteration
computes.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import FunctionType, ModuleType
from typing import Any

from .fingerprint import is_rng

#: How many attributes deep RNG objects are looked for (``trainer.loader.sampler.generator``).
DEPTH = 4
_LEAF = (int, float, str, bytes, bool, type(None), ModuleType, FunctionType, type)


def rng_paths(roots: dict[str, Any], skip: set[int]) -> Iterator[tuple[str, Any]]:
    """(``name.attr.attr``, rng) for every RNG object reachable from ``roots`` by attributes."""
    seen = set(skip)

    def walk(path: str, value: Any, depth: int) -> Iterator[tuple[str, Any]]:
        if id(value) in seen or isinstance(value, _LEAF):
            return
        seen.add(id(value))
        if is_rng(value):
            yield path, value
            return
        if depth >= DEPTH:
            return
        attrs = getattr(value, "__dict__", None)
        if not isinstance(attrs, dict) or _is_tensorish(value):
            return
        for key, item in list(attrs.items()):
            if isinstance(key, str) and key.isidentifier():
                yield from walk(f"{path}.{key}", item, depth + 1)

    for name, value in roots.items():
        # An RNG that is a variable itself is saved here unless ``skip`` has it (a carried
        # var:NAME): a module-level ``g = torch.Generator()`` a loop in ``fit()`` draws from
        # is neither carried nor declared ``global``, yet decides the next epoch's batches.
        yield from walk(name, value, 0)


def resolve(roots: dict[str, Any], path: str) -> Any:
    """The object at ``path`` (see ``rng_paths``), or None when it is no longer there."""
    head, *rest = path.split(".")
    obj = roots.get(head)
    for key in rest:
        obj = getattr(obj, key, None)
        if obj is None:
            return None
    return obj


def _is_tensorish(value: Any) -> bool:
    module = type(value).__module__ or ""
    return module.startswith(("numpy", "torch")) and type(value).__name__ in ("ndarray", "Tensor", "Parameter")


def train_flags(obj: Any) -> list[bool] | None:
    """The train/eval flag of every submodule of a torch module, in ``modules()`` order."""
    modules = getattr(obj, "modules", None)
    if not callable(modules) or not hasattr(obj, "training"):
        return None
    try:
        return [bool(m.training) for m in modules()]
    except Exception:
        return None


def set_train_flags(obj: Any, flags: list[bool]) -> None:
    subs = list(obj.modules())
    if len(subs) == len(flags):
        for m, flag in zip(subs, flags):
            m.training = flag
