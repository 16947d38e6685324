"""What every command does first, and how listings are printed."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, TextIO

from ..storage.journal import JOURNAL_DIR, recover_orphans
from ..storage.records import warn
from ..storage.repo import flor_dir, open_repo

if TYPE_CHECKING:
    import pandas as pd
    import pygit2

FORMATS = ("table", "csv", "json", "jsonl")


def open_session() -> pygit2.Repository:
    """Open the repository and turn any journal whose process died into an ``interrupted`` run."""
    repo = open_repo()
    for run_id in recover_orphans(repo, flor_dir(repo) / JOURNAL_DIR):
        warn(f"recovered run {run_id}, whose process died, as 'interrupted'")
    return repo


def emit(frame: pd.DataFrame, fmt: str, out: TextIO | None = None, empty: str = "") -> None:
    out = out if out is not None else sys.stdout
    if fmt == "csv":
        frame.to_csv(out, index=False)
    elif fmt == "json":
        out.write(frame.to_json(orient="records", date_format="iso", force_ascii=False) + "\n")
    elif fmt == "jsonl":
        if len(frame):
            frame.to_json(out, orient="records", lines=True, date_format="iso", force_ascii=False)
    elif frame.empty and empty:
        print(empty, file=sys.stderr)
    else:
        out.write(frame.to_string(index=False, na_rep="") + "\n")


def short_time(ts: pd.Series) -> pd.Series:
    """Local time to the second, for tables meant for eyes (json/csv keep full precision)."""
    return ts.dt.strftime("%Y-%m-%d %H:%M:%S")
