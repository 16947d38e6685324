"""The wide table across versions (DESIGN §5).

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
from typing import Any

import numpy as np
import pandas as pd
import pygit2

from ..errors import UsageError
from ..storage import index
from ..storage.repo import open_repo
from .runs import select_runs

INFO = ["run", "commit", "tstamp", "script"]
_PROVENANCE = {index.RECORDED: "recorded", index.HINDSIGHT: "hindsight", index.ARG: "arg"}
# When one name has several values at one position, the one kept is the most
# direct: a recorded value over a hindsight one over an argument of that name.
_PRIORITY = {index.ARG: 0, index.HINDSIGHT: 1, index.RECORDED: 2}


def dataframe(
    *names: str,
    rev: str | None = None,
    run: str | Sequence[str] | None = None,
    where: str | None = None,
    provenance: bool = False,
    repo: pygit2.Repository | None = None,
) -> pd.DataFrame:
    """The table for ``names`` (all names when none) over the selected runs."""
    repo = repo if repo is not None else open_repo()
    conn = index.connect(repo)
    try:
        runs = [run] if isinstance(run, str) else run
        return build(repo, conn, list(names), rev=rev, runs=runs, where=where, provenance=provenance)
    finally:
        conn.close()


def build(
    repo: pygit2.Repository,
    conn: sqlite3.Connection,
    names: list[str],
    *,
    rev: str | None = None,
    runs: Sequence[str] | None = None,
    where: str | None = None,
    provenance: bool = False,
) -> pd.DataFrame:
    known = [r[0] for r in conn.execute("SELECT DISTINCT name FROM recs ORDER BY rowid")]
    missing = [n for n in names if n not in set(known)]
    if missing:
        raise UsageError(
            f"no run has a value named {', '.join(map(repr, missing))}; known names: "
            f"{', '.join(sorted(set(known))[:20]) or '(none yet)'} (hindsight values appear "
            "after `git flor replay --apply NAME`)"
        )
    wanted = list(dict.fromkeys(names or known))
    fetch = wanted + [n for n in _referenced(where, known) if n not in wanted]
    selected = select_runs(repo, conn, rev=rev, runs=runs)
    loops = index.loop_columns(conn)
    long = _fetch(conn, fetch, list(selected["run"]) if (rev or runs) else None, loops)
    table = _widen(long, [name for name, _ in loops], fetch, provenance)
    order = selected[INFO].assign(_order=range(len(selected)))  # runs oldest first
    table = order.merge(table, on="run", how="inner")
    table = table.sort_values(["_order", *[c for c, _ in loops if c in table]], kind="stable")
    if where:
        try:
            table = table.query(where, engine="python")
        except Exception as exc:
            raise UsageError(f"bad --where expression {where!r}: {exc}") from None
    dims = [name for name, _ in loops if name in table and table[name].notna().any()]
    shown = [c for n in wanted for c in ([n, f"{n}@"] if provenance else [n]) if c in table]
    return table[INFO + dims + shown].reset_index(drop=True)


def _referenced(expr: str | None, known: list[str]) -> list[str]:
    if not expr:
        return []
    tokens = set(re.findall(r"`([^`]+)`|([A-Za-z_][A-Za-z0-9_]*)", expr))
    found = {a or b for a, b in tokens}
    return [n for n in known if n in found]


def _fetch(
    conn: sqlite3.Connection, names: list[str], runs: list[str] | None, loops: list[tuple[str, str]]
) -> pd.DataFrame:
    cols = ["run", "name", "value", "kind", "src", *[col for _, col in loops]]
    sql = f"SELECT {', '.join(cols)} FROM recs WHERE name IN ({', '.join('?' * len(names))})"
    params: list[Any] = list(names)
    if runs is not None:
        sql += f" AND run IN ({', '.join('?' * len(runs))})"
        params += runs
    rows = conn.execute(sql + " ORDER BY rowid", params).fetchall() if names else []
    long = pd.DataFrame.from_records(rows, columns=["run", "name", "value", "kind", "src", *[n for n, _ in loops]])
    # Keep each value's own type: a column of ints and floats must not become all floats.
    long["value"] = pd.Series([r[2] for r in rows], dtype=object)
    for name, _ in loops:
        long[name] = long[name].astype("Int64")
    odd = long["kind"] != index.PLAIN
    if odd.any():
        long["value"] = long["value"].astype(object)
        long.loc[odd, "value"] = [
            index.decode_value(v, k) for v, k in zip(long.loc[odd, "value"], long.loc[odd, "kind"])
        ]
    return long


def _widen(long: pd.DataFrame, dims: list[str], names: list[str], provenance: bool) -> pd.DataFrame:
    """Pivot long records to one row per position, broadcasting coarse values over finer rows."""
    if long.empty:
        return pd.DataFrame(columns=["run", *dims, *names])
    sig = np.zeros(len(long), dtype=np.int64)
    for k, d in enumerate(dims):
        sig |= long[d].notna().to_numpy().astype(np.int64) << k
    long = long.assign(_sig=sig, _prio=long["src"].map(_PRIORITY))
    shapes = sorted(set(sig.tolist()), key=lambda s: (-bin(s).count("1"), s))
    result: pd.DataFrame | None = None
    for shape in shapes:
        keys = ["run"] + [d for k, d in enumerate(dims) if shape >> k & 1]
        part = long[long["_sig"] == shape].sort_values("_prio", kind="stable")
        part = part.drop_duplicates(keys + ["name"], keep="last").set_index(keys + ["name"])
        wide = part["value"].unstack("name")
        if provenance:
            src = part["src"].map(_PROVENANCE).unstack("name")
            wide = wide.join(src.rename(columns=lambda c: f"{c}@"))
        wide = wide.reset_index()
        wide.columns.name = None
        if result is None:
            result = wide
            continue
        clash = [c for c in wide.columns if c in result.columns and c not in keys]
        wide = wide.rename(columns={c: f"{c}\0coarse" for c in clash})
        result = result.merge(wide, on=keys, how="outer")
        for c in clash:
            coarse = result.pop(f"{c}\0coarse")
            result[c] = result[c].where(result[c].notna(), coarse)
    assert result is not None
    for name in names:
        if name not in result:
            result[name] = pd.Series([pd.NA] * len(result), dtype=object)
        result[name] = _typed(result[name])
    for d in dims:
        if d not in result:
            result[d] = pd.Series([pd.NA] * len(result), dtype="Int64")
        result[d] = result[d].astype("Int64")
    return result


def _typed(col: pd.Series) -> pd.Series:
    """Give a column the dtype its values have: float64, Int64, boolean, or object."""
    kind = pd.api.types.infer_dtype(col, skipna=True)
    if kind in ("floating", "mixed-integer-float") or (
        kind == "empty" and len(col) and all(isinstance(v, float) for v in col)
    ):
        return col.astype("float64")
    if kind == "integer":
        try:
            return col.astype("Int64")
        except OverflowError:  # beyond int64: keep Python ints
            return col.astype(object).where(col.notna(), None)
    if kind == "boolean":
        return col.astype("boolean")
    return col.astype(object).where(col.notna(), None)

