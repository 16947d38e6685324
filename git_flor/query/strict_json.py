"""Strict JSON out: NaN and the infinities as strings, because JSON has no spelling for them.

Python's ``json`` writes ``NaN``/``Infinity``, which strict parsers reject (and jq
turns into 1.79e308). git-flor writes ``"NaN"``, ``"Infinity"``, ``"-Infinity"``;
a missing value is ``null``. No pandas here: replay and check use it too.
"""

from __future__ import annotations

import json
import math
from typing import Any


def finite(v: Any) -> Any:
    """``v`` with non-finite floats as strings, at any depth."""
    if v is LOGGED_NAN:
        return "NaN"
    if isinstance(v, float) and not math.isfinite(v):
        return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
    if isinstance(v, (list, tuple)):
        return [finite(x) for x in v]
    if isinstance(v, dict):
        return {k: finite(x) for k, x in v.items()}
    return v


def strict_dumps(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` that never writes NaN/Infinity."""
    return json.dumps(finite(obj), allow_nan=False, **kwargs)


class _LoggedNaN:
    """A logged NaN in an object column, where pandas would read a float NaN as "missing"."""

    _instance: _LoggedNaN | None = None

    def __new__(cls) -> _LoggedNaN:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "nan"

    def __float__(self) -> float:
        return math.nan


LOGGED_NAN = _LoggedNaN()
