"""``git flor check …``: gates for CI, answered by the exit code.

``check metric NAME --min/--max [--rev R]`` judges the latest run (at R, when
given) that has NAME by the last value it logged: exit 0 when the bound holds,
1 when it does not, 3 when no selected run has NAME — "nothing to judge" must
not pass a gate silently, and must not look like a failed metric either.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

from ..errors import EXIT_CHECK_FAILED, EXIT_OK, EXIT_PARTIAL, UsageError
from ..storage import index, links
from ..storage.revs import commits_in
from .common import open_session


def check_metric(
    name: str, *, minimum: float | None = None, maximum: float | None = None,
    rev: str | None = None, fmt: str = "text",
) -> int:
    if minimum is None and maximum is None:
        raise UsageError("give a bound to check: --min X, --max Y or both")
    repo = open_session()
    conn = index.connect(repo)
    try:
        rows = conn.execute("SELECT run, commit_ FROM runs ORDER BY tstamp DESC, run DESC").fetchall()
        if rev is not None:
            commits = commits_in(repo, rev)
            linked = links.runs_at(conn, commits)
            rows = [(r, c) for r, c in rows if c in commits or r in linked]
        found = None
        for run, commit in rows:
            value = _last_value(conn, name, run)
            if value is not _MISSING:
                found = (run, commit, value)
                break
    finally:
        conn.close()
    where = f" at {rev}" if rev else ""
    if found is None:
        return _report(fmt, EXIT_PARTIAL, f"no run{where} logged {name!r}; nothing to check "
                       "(see `git flor log` for the names runs logged)",
                       {"name": name, "rev": rev, "run": None, "ok": None})
    run, commit, value = found
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(f"{name!r} of run {run} is {value!r} ({type(value).__name__}), not a number; "
                         "check a numeric name")
    failures = []
    if math.isnan(value):
        failures.append("it is NaN")
    if minimum is not None and not value >= minimum:
        failures.append(f"below --min {minimum:g}")
    if maximum is not None and not value <= maximum:
        failures.append(f"above --max {maximum:g}")
    bounds = " and ".join(b for b in (f">= {minimum:g}" if minimum is not None else "",
                                      f"<= {maximum:g}" if maximum is not None else "") if b)
    context = f"run {run} at {(commit or 'no commit')[:8]}"
    info = {"name": name, "rev": rev, "run": run, "commit": commit, "value": value,
            "min": minimum, "max": maximum, "ok": not failures}
    if failures:
        return _report(fmt, EXIT_CHECK_FAILED, f"FAILED: {name} = {value:g}, {', '.join(failures)} ({context})", info)
    return _report(fmt, EXIT_OK, f"ok: {name} = {value:g}, {bounds} ({context})", info)


_MISSING = object()


def _last_value(conn: Any, name: str, run: str) -> Any:
    """The last value ``run`` logged for ``name`` (a recorded or hindsight value, else an argument)."""
    chunks = index.chunks(conn, [name], [run])
    best = [c for c in chunks if c.src != index.ARG] or chunks
    if not best:
        return _MISSING
    values = best[-1].values
    last = values[-1]
    return last.item() if hasattr(last, "item") else last


def _report(fmt: str, code: int, text: str, info: dict[str, Any]) -> int:
    if fmt == "json":
        sys.stdout.write(json.dumps({"check": "metric", **info, "message": text}) + "\n")
    else:
        print(text, file=sys.stdout if code == EXIT_OK or code == EXIT_CHECK_FAILED else sys.stderr)
    return code
