"""The wide table across versions (docs/design.md §5).

One row per (run, loop position) at the finest loop depth among the requested
names; a value logged at a coarser position (an epoch's ``val_acc`` among
per-step ``loss`` rows, a run's ``lr``) is broadcast over the finer rows it
contains, exactly as run-level values broadcast over a run's rows. Values logged
in loops that do not contain one another (a training ``epoch`` loop, then a test
``batch`` loop) are on rows of their own. Values keep their logged types: a float
column is float64, an int column Int64.

Pipelines (several scripts of one repository run at the same version, prepare →
train → evaluate) are joined into one row per commit and shared loop position
(:func:`_pipelines`), so that values the scripts logged separately read side by side.
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
from ..storage import index_links as links
from ..storage.repo import open_repo
from ..storage.revs import commits_in
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
    script: str | Sequence[str] | None = None,
    repo: Repository | None = None,
    nan_distinct: bool = False,
    join: bool | None = None,
) -> pd.DataFrame:
    """The table for ``names`` (all names when none) over the selected runs (of ``script`` only, when given).

    ``join``: ``True`` joins the runs of different scripts at one commit into one
    row per commit and loop position, ``False`` keeps one row per run; by default
    they are joined when the names asked for were logged by more than one script
    and none of them by two (see :func:`_pipelines`).

    Float columns are float64 with NaN for a missing value (pandas' convention),
    unless ``nan_distinct``: then they are nullable ``Float64``, where a logged NaN
    stays NaN and a missing value is ``<NA>`` (what ``git flor log`` prints).
    """
    repo = repo if repo is not None else open_repo()
    conn = index.connect(repo)
    try:
        runs = [run] if isinstance(run, str) else run
        scripts = [script] if isinstance(script, str) else script
        table = build(repo, conn, list(names), rev=rev, runs=runs, where=where, provenance=provenance,
                      scripts=scripts, join=join)
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
    scripts: Sequence[str] | None = None,
    join: bool | None = None,
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
    if scripts:
        selected = selected[_of_scripts(selected["script"], scripts)].reset_index(drop=True)
    chunks = index.chunks(conn, fetch, list(selected["run"]) if (rev or runs or scripts) else None)
    dims = _dim_order(chunks)
    age = {r: i for i, r in enumerate(selected["run"])}
    if join or (join is None and names and _is_pipeline(chunks, selected, wanted)):
        rows, order = _pipelines(selected, chunks, links.captured_at(conn),
                                 commits_in(repo, rev) if rev is not None else None)
    else:
        rows, order = selected, age
    wide = _widen(chunks, order, age, dims, fetch, provenance)
    wide = wide.sort_values(["_order", *dims], kind="stable", ignore_index=True)
    info = rows[INFO].iloc[wide["_order"].to_numpy()].reset_index(drop=True)
    table = pd.concat([info, wide.drop(columns="_order")], axis=1)
    if where:
        try:
            table = table.query(where, engine="python")
        except Exception as exc:
            raise UsageError(f"bad --where expression {where!r}: {exc}") from None
    dims = [d for d in dims if table[d].notna().any()]
    shown = [c for n in wanted for c in ([n, f"{n}@"] if provenance else [n])]
    return table[INFO + dims + shown].reset_index(drop=True)


def _of_scripts(column: pd.Series, scripts: Sequence[str]) -> pd.Series:
    """Runs of these scripts: a script is named by its recorded path or by its file name."""
    wanted = {s.removeprefix("./") for s in scripts}
    recorded = column.fillna("").astype(str)
    return recorded.isin(wanted) | recorded.map(lambda p: p.rsplit("/", 1)[-1] in wanted)


def _is_pipeline(chunks: list[index.Chunk], selected: pd.DataFrame, wanted: list[str]) -> bool:
    """Whether the names asked for come from several scripts, each name from one of them.

    A name logged by two scripts (``train.py`` and ``train_v2.py`` both log ``loss``)
    means alternatives rather than stages of a pipeline, so those runs keep rows of
    their own unless ``join`` asks otherwise.
    """
    script = dict(zip(selected["run"], selected["script"]))
    by_name: dict[str, set[Any]] = {}
    for ch in chunks:
        if ch.run in script and ch.name in wanted:
            by_name.setdefault(ch.name, set()).add(script[ch.run])
    return all(len(s) == 1 for s in by_name.values()) and len(set().union(*by_name.values())) > 1


def _pipelines(
    selected: pd.DataFrame, chunks: list[index.Chunk], captured: dict[str, str], commits: set[str] | None
) -> tuple[pd.DataFrame, dict[str, int]]:
    """One row per version joining the latest run of each script there that has any value asked for.

    A run's version is its commit, or for a run on uncommitted edits the commit
    that captured them (``captured``, from the post-commit hook's notes), so that
    running the pipeline and then committing joins those runs at the new commit.
    The latest, because re-running a step at the same version (a fixed data
    path, a longer training) supersedes the earlier run, and pairing runs any
    other way (every combination, the first) would join values no single pass
    through the pipeline produced. A row's ``commit`` is that version, its
    ``run`` and ``script`` list the joined runs and their scripts in the order
    they started, comma-separated, and ``tstamp`` is the start of the first.
    With ``commits`` (``--rev``), only those versions. Returns those rows and the
    row number of each joined run.
    """
    with_values = {ch.run for ch in chunks}
    runs = selected[selected["run"].isin(with_values)]
    runs = runs.assign(commit=[captured.get(r, c) if d else c
                               for r, c, d in zip(runs["run"], runs["commit"], runs["dirty"])])
    if commits is not None:
        runs = runs[runs["commit"].isin(commits)]
    # selected is oldest first, so the last run of each (version, script) is its latest.
    latest = runs.drop_duplicates(["commit", "script"], keep="last")
    groups = sorted((g for _, g in latest.groupby("commit", sort=False, dropna=False)), key=lambda g: g.index[0])
    rows = pd.DataFrame({
        "run": [",".join(g["run"]) for g in groups],
        "commit": [g["commit"].iloc[0] for g in groups],
        "tstamp": pd.Series([g["tstamp"].iloc[0] for g in groups], dtype=selected["tstamp"].dtype),
        "script": [",".join(g["script"].fillna("").astype(str)) for g in groups],
    })
    order = {run: i for i, g in enumerate(groups) for run in g["run"]}
    return rows, order


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
    chunks: list[index.Chunk],
    order: dict[str, int],
    age: dict[str, int],
    dims: list[str],
    names: list[str],
    provenance: bool,
) -> pd.DataFrame:
    """One row per (row of ``order``, position); coarse values broadcast over the finer rows they contain.

    ``order`` gives each run its row (several runs share one when scripts are
    joined); where two of them logged one name at one position, the value of the
    run that started later (``age``) is kept, among values equally direct.
    """
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
            group.sort(key=lambda c: (_PRIORITY[c.src], age[c.run], c.rid))
            part = _frame(group, shape, order, name, provenance).drop_duplicates(keys, keep="last")
            wide = part if wide is None else wide.merge(part, on=keys, how="outer")
        assert wide is not None
        if result is None:
            result = wide
            continue
        for d in shape:  # a loop not among the rows so far: its values get rows of their own
            if d not in result:
                result[d] = pd.array([pd.NA] * len(result), dtype="Int64")
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

