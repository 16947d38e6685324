"""The wide table across versions (docs/design.md §5).

One row per (run, loop position) at the finest loop depth among the requested
names; a value logged at a coarser position (an epoch's ``val_acc`` among
per-step ``loss`` rows, a run's ``lr``) is broadcast over the finer rows it
contains, exactly as run-level values broadcast over a run's rows. Values keep
their logged types: a float column is float64, an int column Int64.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pandas.arrays import FloatingArray

from ..errors import UsageError
from ..storage import index
from ..storage.repo import open_repo
from .runs import select_runs
from .strict_json import LOGGED_NAN

if TYPE_CHECKING:
    from ..storage.repo import Repository

INFO = ["run", "commit", "tstamp", "script"]
_PROVENANCE = {index.RECORDED: "recorded", index.HINDSIGHT: "hindsight", index.ARG: "arg",
               index.UNVERIFIED: "hindsight (unverified)"}
# When one name has several values at one position, the one kept is the most
# direct: a recorded value over a hindsight one over an argument of that name.
_PRIORITY = {index.ARG: 0, index.UNVERIFIED: 1, index.HINDSIGHT: 2, index.RECORDED: 3}


def dataframe(
    *names: str,
    rev: str | None = None,
    run: str | Sequence[str] | None = None,
    where: str | None = None,
    provenance: bool = False,
    repo: Repository | None = None,
    nan_distinct: bool = False,
) -> pd.DataFrame:
    """The table for ``names`` (all names when none) over the selected runs.

    Float columns are float64 with NaN for a missing value (pandas' convention),
    unless ``nan_distinct``: then they are nullable ``Float64``, where a logged NaN
    stays NaN and a missing value is ``<NA>`` (what ``git flor log`` prints).
    """
    repo = repo if repo is not None else open_repo()
    conn = index.connect(repo)
    try:
        runs = [run] if isinstance(run, str) else run
        table = build(repo, conn, list(names), rev=rev, runs=runs, where=where, provenance=provenance)
    finally:
        conn.close()
    if not nan_distinct:
        floats = [c for c in table.columns if isinstance(table[c].dtype, pd.Float64Dtype)]
        table = table.astype({c: "float64" for c in floats}) if floats else table
        for c in table.columns:
            if table[c].dtype == object:
                table[c] = table[c].map(lambda v: float("nan") if v is LOGGED_NAN else v)
    return table


def build(
    repo: Repository,
    conn: sqlite3.Connection,
    names: list[str],
    *,
    rev: str | None = None,
    runs: Sequence[str] | None = None,
    where: str | None = None,
    provenance: bool = False,
) -> pd.DataFrame:
    known = index.names(conn)
    missing = [n for n in names if n not in set(known)]
    if missing:
        raise UsageError(
            f"no run has a value named {', '.join(map(repr, missing))}; known names: "
            f"{', '.join(sorted(known)[:20]) or '(none yet)'} (hindsight values appear "
            "after `git flor replay --apply NAME`)"
        )
    wanted = list(dict.fromkeys(names or known))
    fetch = wanted + [n for n in _referenced(where, known) if n not in wanted]
    selected = select_runs(repo, conn, rev=rev, runs=runs)
    chunks = index.chunks(conn, fetch, list(selected["run"]) if (rev or runs) else None)
    dims = _dim_order(chunks)
    wide = _widen(chunks, {r: i for i, r in enumerate(selected["run"])}, dims, fetch, provenance)
    wide = wide.sort_values(["_order", *dims], kind="stable", ignore_index=True)
    info = selected[INFO].iloc[wide["_order"].to_numpy()].reset_index(drop=True)
    table = pd.concat([info, wide.drop(columns="_order")], axis=1)
    if where:
        try:
            table = table.query(where, engine="python")
        except Exception as exc:
            raise UsageError(f"bad --where expression {where!r}: {exc}") from None
    dims = [d for d in dims if table[d].notna().any()]
    shown = [c for n in wanted for c in ([n, f"{n}@"] if provenance else [n])]
    return table[INFO + dims + shown].reset_index(drop=True)


def _referenced(expr: str | None, known: list[str]) -> list[str]:
    if not expr:
        return []
    tokens = set(re.findall(r"`([^`]+)`|([A-Za-z_][A-Za-z0-9_]*)", expr))
    found = {a or b for a, b in tokens}
    return [n for n in known if n in found]


def _dim_order(chunks: list[index.Chunk]) -> list[str]:
    """Loop names ordered outermost first (by nesting depth, then first appearance)."""
    depth: dict[str, int] = {}
    for ch in chunks:
        for d, name in enumerate(ch.dims):
            depth[name] = min(d, depth.get(name, d))
    return sorted(depth, key=lambda n: depth[n])


def _widen(
    chunks: list[index.Chunk], order: dict[str, int], dims: list[str], names: list[str], provenance: bool
) -> pd.DataFrame:
    """One row per (run, position); coarse values broadcast over the finer rows they contain."""
    rank = {d: i for i, d in enumerate(dims)}
    shapes: dict[tuple[str, ...], dict[str, list[index.Chunk]]] = {}
    for ch in chunks:
        if ch.run in order:
            shape = tuple(sorted(ch.dims, key=rank.__getitem__))
            shapes.setdefault(shape, {}).setdefault(ch.name, []).append(ch)
    result: pd.DataFrame | None = None
    for shape in sorted(shapes, key=lambda s: (-len(s), [rank[d] for d in s])):
        keys = ["_order", *shape]
        wide: pd.DataFrame | None = None
        for name, group in shapes[shape].items():
            group.sort(key=lambda c: (_PRIORITY[c.src], c.rid))
            part = _frame(group, shape, order, name, provenance).drop_duplicates(keys, keep="last")
            wide = part if wide is None else wide.merge(part, on=keys, how="outer")
        assert wide is not None
        if result is None:
            result = wide
            continue
        clash = [c for c in wide.columns if c in result.columns and c not in keys]
        wide = wide.rename(columns={c: f"{c}\0coarse" for c in clash})
        result = result.merge(wide, on=keys, how="outer")
        for c in clash:
            coarse = result.pop(f"{c}\0coarse")
            result[c] = result[c].where(result[c].notna(), coarse)
    if result is None:
        result = pd.DataFrame({"_order": pd.Series([], dtype="int64")})
    for d in dims:
        result[d] = result[d].astype("Int64") if d in result else pd.array([pd.NA] * len(result), dtype="Int64")
    for name in names:
        if name not in result:
            result[name] = pd.Series([None] * len(result), dtype=object)
        elif result[name].dtype == object:
            result[name] = _typed(result[name])
        if provenance and f"{name}@" not in result:
            result[f"{name}@"] = pd.Series([None] * len(result), dtype=object)
    return result


def _frame(
    group: list[index.Chunk], shape: tuple[str, ...], order: dict[str, int], name: str, provenance: bool
) -> pd.DataFrame:
    """One name's values at one loop shape, across runs, as columns (no Python object per value)."""
    cols: dict[str, Any] = {
        "_order": np.concatenate([np.full(len(c.pos), order[c.run], dtype=np.int64) for c in group])
    }
    for d in shape:
        cols[d] = np.concatenate([c.pos[:, c.dims.index(d)] for c in group])
    cols[name] = _values(group)
    if provenance:
        cols[f"{name}@"] = np.concatenate(
            [np.full(len(c.pos), _PROVENANCE[c.src], dtype=object) for c in group]
        )
    return pd.DataFrame(cols)


def _values(group: list[index.Chunk]) -> Any:
    """Concatenate chunk values keeping their type: float64, Int64, boolean, else objects."""
    kinds = {c.vtype for c in group}
    if kinds <= {"f8", "i8"} and "f8" in kinds:
        data = np.concatenate([np.asarray(c.values, dtype=np.float64) for c in group])
        return FloatingArray(data, np.zeros(len(data), dtype=bool))  # NaN stays a value, not missing
    if kinds == {"i8"}:
        return pd.array(np.concatenate([c.values for c in group]), dtype="Int64")
    if kinds == {"b1"}:
        return pd.array(np.concatenate([c.values for c in group]), dtype="boolean")
    out: list[Any] = []
    for c in group:
        out.extend(c.values if isinstance(c.values, list) else c.values.tolist())
    # Among objects pandas reads a float NaN as "missing": keep a logged one visibly a value.
    return pd.Series([LOGGED_NAN if type(v) is float and v != v else v for v in out], dtype=object)
def _typed(col: pd.Series) -> pd.Series:
    """Give a column the dtype its values have: float64, Int64, boolean, or object."""
    kind = pd.api.types.infer_dtype(col, skipna=True)
    if kind in ("floating", "mixed-integer-float") or (
        kind == "empty" and len(col) and all(isinstance(v, float) for v in col)
    ):
        missing = np.array([v is None or v is pd.NA for v in col], dtype=bool)
        data = np.array([0.0 if m else float(v) for v, m in zip(col, missing)], dtype=np.float64)
        return pd.Series(FloatingArray(data, missing), index=col.index)
    if kind == "integer":
        try:
            return col.astype("Int64")
        except OverflowError:  # beyond int64: keep Python ints
            return col.astype(object).where(col.notna(), None)
    if kind == "boolean":
        return col.astype("boolean")
    return col.astype(object).where(col.notna(), None)

