"""Printing tables: aligned text for eyes, csv/json/jsonl for programs.

Missing is not NaN: in a nullable ``Float64`` column (``git flor log``) a logged
NaN prints as ``nan`` (table, csv) and a missing value as an empty cell; in json
and jsonl missing is ``null`` and the non-finite floats, which JSON has no
spelling for, are the strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` —
strict JSON that every parser accepts. In a plain float64 column NaN means missing.

A million-row table must print in about a second, which neither pandas'
``to_csv`` (it formats datetimes per row) nor a ``json.dumps`` per row does. So
each column is turned into a list of ready-made text tokens once — formatting
each *distinct* value once, since run, commit and loop columns repeat — and rows
are then plain string joins. Floats print as their shortest exact repr, so a
value read back equals the value logged.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from typing import Any, TextIO

import numpy as np
import pandas as pd

from .strict_json import LOGGED_NAN, strict_dumps

FORMATS = ("table", "csv", "json", "jsonl")


def emit(frame: pd.DataFrame, fmt: str, out: TextIO | None = None, empty: str = "") -> None:
    out = out if out is not None else sys.stdout
    if fmt == "table" and frame.empty:
        if empty:
            print(empty, file=sys.stderr)
        else:
            out.write("  ".join(map(str, frame.columns)) + "\n")
        return
    if fmt == "csv":
        cols = [_tokens(frame[c], _csv_token) for c in frame.columns]
        out.write(",".join(_csv_quote(str(c)) for c in frame.columns) + "\n")
        _write_rows(out, cols, ",", "", "")
    elif fmt in ("json", "jsonl"):
        keys = [json.dumps(str(c), ensure_ascii=False) + ":" for c in frame.columns]
        cols = [[k + t for t in _tokens(frame[c], _json_token)] for k, c in zip(keys, frame.columns)]
        if fmt == "json":
            out.write("[")
            _write_rows(out, cols, ",", "{", "}", sep=",\n")
            out.write("]\n")
        else:
            _write_rows(out, cols, ",", "{", "}")
    else:
        _write_table(out, frame)


def _write_rows(
    out: TextIO, cols: list[list[str]], joiner: str, open_: str, close: str, sep: str = "\n"
) -> None:
    rows = zip(*cols)
    step = 65536
    first = True
    while True:
        batch = [open_ + joiner.join(r) + close for _, r in zip(range(step), rows)]
        if not batch:
            break
        if not first and sep != "\n":
            out.write(sep)
        out.write(sep.join(batch) + ("\n" if sep == "\n" else ""))
        first = False


def _write_table(out: TextIO, frame: pd.DataFrame) -> None:
    cols = [_tokens(frame[c], _text_token) for c in frame.columns]
    right = [pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c]) for c in frame.columns]
    widths = [max([len(str(c))] + [len(t) for t in set(col)]) for c, col in zip(frame.columns, cols)]
    header = [str(c).rjust(w) if r else str(c).ljust(w) for c, w, r in zip(frame.columns, widths, right)]
    padded = [
        [t.rjust(w) if r else t.ljust(w) for t in col] for col, w, r in zip(cols, widths, right)
    ]
    out.write(" ".join(header).rstrip() + "\n")
    _write_rows(out, padded, " ", "", "")


def _tokens(col: pd.Series, token: Callable[[Any], str]) -> list[str]:
    """Format every distinct value once, then spread the tokens over the rows."""
    if not isinstance(col.dtype, pd.Float64Dtype):
        token = _nan_missing(token)  # float64 (and objects): NaN is pandas' "missing"
    try:
        codes, uniques = pd.factorize(col, use_na_sentinel=True)
    except TypeError:  # unhashable (lists, dicts): format each
        return [token(v) for v in col.to_numpy(dtype=object, na_value=None).tolist()]
    distinct = uniques.to_numpy(dtype=object, na_value=None).tolist()
    table = np.array([token(v) for v in distinct] + [token(None)], dtype=object)
    return table[codes].tolist()  # code -1 (missing) picks the last entry


def _nan_missing(token: Callable[[Any], str]) -> Callable[[Any], str]:
    def wrapped(v: Any) -> str:
        if isinstance(v, float) and math.isnan(v):
            return token(None)
        return token(math.nan if v is LOGGED_NAN else v)

    return wrapped


def _csv_token(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, (list, dict)):
        return _csv_quote(json.dumps(v, ensure_ascii=False))
    if isinstance(v, pd.Timestamp):
        return v.isoformat()
    if isinstance(v, float):
        return repr(v)
    return _csv_quote(str(v))


def _csv_quote(s: str) -> str:
    if any(ch in s for ch in ',"\n\r'):
        return '"' + s.replace('"', '""') + '"'
    return s


def _json_token(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, pd.Timestamp):
        return '"' + v.isoformat() + '"'
    if isinstance(v, np.generic):
        v = v.item()
    return strict_dumps(v, ensure_ascii=False)


def _text_token(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, (list, dict)):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def short_time(ts: pd.Series) -> pd.Series:
    """Local time to the second, for tables meant for eyes (json/csv keep full precision)."""
    return ts.dt.strftime("%Y-%m-%d %H:%M:%S")
