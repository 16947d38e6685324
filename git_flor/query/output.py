"""Printing tables: aligned text for eyes, csv/json/jsonl for programs (floats exact)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any, TextIO

import pandas as pd

FORMATS = ("table", "csv", "json", "jsonl")


def emit(frame: pd.DataFrame, fmt: str, out: TextIO | None = None, empty: str = "") -> None:
    out = out if out is not None else sys.stdout
    if fmt == "csv":
        frame.to_csv(out, index=False)
    elif fmt == "json":
        out.write("[" + ",\n".join(_json_rows(frame)) + "]\n")
    elif fmt == "jsonl":
        for line in _json_rows(frame):
            out.write(line + "\n")
    elif frame.empty and empty:
        print(empty, file=sys.stderr)
    else:
        out.write(frame.to_string(index=False, na_rep="") + "\n")


def _json_rows(frame: pd.DataFrame) -> Iterator[str]:
    """Rows as JSON with every float exact (pandas' to_json rounds to 15 digits)."""
    columns = list(frame.columns)
    encode = json.JSONEncoder(ensure_ascii=False, default=_jsonable).encode
    for row in frame.itertuples(index=False, name=None):
        yield encode({c: _cell(v) for c, v in zip(columns, row)})


def _cell(value: Any) -> Any:
    if value is None or isinstance(value, (list, dict, str)):
        return value
    try:
        if value is pd.NA or value is pd.NaT or (isinstance(value, float) and value != value):
            return None
    except TypeError:
        pass
    return value


def _jsonable(value: Any) -> Any:
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"cannot encode {type(value).__name__}")


def short_time(ts: pd.Series) -> pd.Series:
    """Local time to the second, for tables meant for eyes (json/csv keep full precision)."""
    return ts.dt.strftime("%Y-%m-%d %H:%M:%S")
