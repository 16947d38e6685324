"""Runs as a table: selection by revision and run id, and the ``git flor runs`` listing."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

import pandas as pd
import pygit2

from ..errors import UsageError
from ..storage import links
from ..storage.revs import commits_in

RUN_COLUMNS = ["run", "commit", "dirty", "script", "tstamp", "duration", "status", "args"]


def select_runs(
    repo: pygit2.Repository,
    conn: sqlite3.Connection,
    *,
    rev: str | None = None,
    runs: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Runs (oldest first) at the commits ``rev`` names and/or with the given ids or id prefixes."""
    rows = conn.execute(
        "SELECT run, commit_, dirty, script, tstamp, duration, status, args FROM runs "
        "ORDER BY tstamp, run"
    ).fetchall()
    table = pd.DataFrame.from_records(rows, columns=RUN_COLUMNS)
    if rev is not None:
        commits = commits_in(repo, rev)
        # A run is also at the commits that captured its dirty tree and their rewrites.
        table = table[table["commit"].isin(commits) | table["run"].isin(links.runs_at(conn, commits))]
    if runs:
        ids = [resolve_run(table["run"].tolist(), r, every=list(r[0] for r in rows)) for r in runs]
        table = table[table["run"].isin(ids)]
    table = table.assign(
        dirty=table["dirty"].astype(bool),
        args=[json.loads(a) if a else {} for a in table["args"]],
        tstamp=_local_time(table["tstamp"]),
    )
    return table.reset_index(drop=True)


def resolve_run(candidates: list[str], prefix: str, every: list[str] | None = None) -> str:
    """A run id from a unique prefix (like git's abbreviated hashes)."""
    hits = [c for c in candidates if c.startswith(prefix)]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        hint = "it exists but is outside --rev; " if every and any(c.startswith(prefix) for c in every) else ""
        raise UsageError(f"unknown run {prefix!r}; {hint}see `git flor runs` for run ids")
    raise UsageError(f"run id {prefix!r} is ambiguous ({', '.join(hits[:5])}); give more characters")


def _local_time(ts: pd.Series) -> pd.Series:
    from datetime import datetime

    tz = datetime.now().astimezone().tzinfo
    return pd.to_datetime(ts.astype("float64"), unit="s", utc=True).dt.tz_convert(tz)
