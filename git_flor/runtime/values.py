"""Typed values: what ``flor.log`` and ``flor.arg`` accept and how they are stored.

Values are kept as JSON types (int, float, bool, str, None, and lists/dicts of
those) so that a float logged today is a float64 column tomorrow, not a string
to be re-parsed (FlorDB stores strings). numpy and torch scalars are unwrapped;
anything else is refused with an error naming the statement, because a value
silently turned into ``repr`` text is a value lost.
"""

from __future__ import annotations

from typing import Any

from ..errors import UnloggableValue

#: Types that need no conversion: the hot path of ``flor.log`` checks ``type(v) in PLAIN``.
PLAIN: frozenset[type] = frozenset({int, float, str, bool, type(None)})


def to_json_value(name: str, value: Any) -> Any:
    """Return ``value`` as a JSON-typed Python value, or raise :class:`UnloggableValue`."""
    return _convert(name, value, "")


def _convert(name: str, value: Any, where: str) -> Any:
    if type(value) in PLAIN:
        return value
    # Subclasses of the plain types (IntEnum, numpy.float64, str enums): keep the base type.
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_convert(name, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise UnloggableValue(
                    f"flor.log({name!r}): dict key {k!r}{where and ' at ' + where} is not a str; "
                    "use string keys so the value can be stored as JSON"
                )
            out[k] = _convert(name, v, f"{where}[{k!r}]")
        return out
    scalar = _array_scalar(value)
    if scalar is not _NO:
        return _convert(name, scalar, where)
    raise UnloggableValue(
        f"flor.log({name!r}): cannot store a {type(value).__module__}.{type(value).__qualname__}"
        f"{where and ' at ' + where}; log an int, float, bool, str, None or a list/dict of "
        "those (e.g. call .item() or .tolist() first)"
    )


_NO = object()


def _array_scalar(value: Any) -> Any:
    """Unwrap numpy/torch scalars (0-d or one-element with ndim 0) without importing either."""
    module = type(value).__module__ or ""
    if not (module.startswith("numpy") or module.startswith("torch")):
        return _NO
    ndim = getattr(value, "ndim", None)
    item = getattr(value, "item", None)
    if ndim == 0 and callable(item):
        return item()
    return _NO

