"""``git flor log [NAME...]``: the wide table across versions."""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import EXIT_OK
from ..query.output import emit, short_time
from ..query.table import dataframe
from ..storage.index import connect
from .common import open_session


def log(
    names: Sequence[str],
    *,
    rev: str | None = None,
    runs: Sequence[str] = (),
    where: str | None = None,
    fmt: str = "table",
    provenance: bool = False,
    scripts: Sequence[str] = (),
    join: bool | None = None,
) -> int:
    repo = open_session()
    table = dataframe(*names, rev=rev, run=list(runs) or None, where=where, provenance=provenance,
                      script=list(scripts) or None, repo=repo, nan_distinct=True, join=join)
    if fmt == "table":
        table = table.assign(commit=table["commit"].str.slice(0, 8), tstamp=short_time(table["tstamp"]))
    emit(table, fmt, empty="no values recorded for these runs yet")
    return EXIT_OK


def reindex() -> int:
    """Rebuild the derived query index from the refs (it is only a cache)."""
    from ..storage.index import rebuild

    repo = open_session()
    rebuild(repo).close()
    connect(repo).close()
    return EXIT_OK
