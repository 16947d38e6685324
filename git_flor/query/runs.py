"""Runs as a table: selection by revision and run id, and the ``git flor runs`` listing."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..storage import index_links as links
from ..storage.revs import commits_in, resolve_run

if TYPE_CHECKING:
    import pandas as pd

    from ..storage.repo import Repository

__all__ = ["RUN_COLUMNS", "resolve_run", "run_ids", "select_runs"]

RUN_COLUMNS = ["run", "commit", "dirty", "script", "tstamp", "duration", "status", "args"]


def run_ids(
    repo: Repository,
    conn: sqlite3.Connection,
    *,
    rev: str | None = None,
    runs: Sequence[str] | None = None,
) -> list[str]:
    """Run ids (oldest first) at the commits ``rev`` names and/or matching the given ids or prefixes.

    Plain SQL, no pandas: ``git flor replay`` selects runs this way and starts faster.
    """
    rows = conn.execute("SELECT run, commit_ FROM runs ORDER BY tstamp, run").fetchall()
    ids = [r[0] for r in rows]
    if rev is not None:
        commits = commits_in(repo, rev)
        # A run is also at the commits that captured its dirty tree and their rewrites.
        linked = set(links.runs_at(conn, commits))
        ids = [run for run, commit in rows if commit in commits or run in linked]
    if runs:
        every = [r[0] for r in rows]
        chosen = {resolve_run(ids, r, every=every) for r in runs}
        ids = [r for r in ids if r in chosen]
    return ids


def select_runs(
    repo: Repository,
    conn: sqlite3.Connection,
    *,
    rev: str | None = None,
    runs: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The runs of :func:`run_ids` as a table (one row per run, oldest first)."""
    import pandas as pd

    rows = conn.execute(
        "SELECT run, commit_, dirty, script, tstamp, duration, status, args FROM runs "
        "ORDER BY tstamp, run"
    ).fetchall()
    table = pd.DataFrame.from_records(rows, columns=RUN_COLUMNS)
    if rev is not None or runs:
        table = table[table["run"].isin(run_ids(repo, conn, rev=rev, runs=runs))]
    table = table.assign(
        dirty=table["dirty"].astype(bool),
        args=[json.loads(a) if a else {} for a in table["args"]],
        tstamp=_local_time(table["tstamp"]),
    )
    return table.reset_index(drop=True)


def _local_time(ts: pd.Series) -> pd.Series:
    from datetime import datetime

    import pandas as pd

    tz = datetime.now().astimezone().tzinfo
    return pd.to_datetime(ts.astype("float64"), unit="s", utc=True).dt.tz_convert(tz)
