"""``git flor check …``: gates for CI, answered by the exit code.

``check propagate`` dry-runs the propagation of today's flor statements into
the snapshot of every recorded version (the code each run actually ran, from
its shadow commit): exit 0 when they fit everywhere, 3 with a report of which
statement failed in which version, so a CI job catches a statement that
replay could not carry back before anyone relies on it.

``check metric NAME --min/--max [--rev R]`` judges the latest run (at R, when
given) that has NAME by the last value it logged: exit 0 when the bound holds,
1 when it does not, 3 when no selected run has NAME — "nothing to judge" must
not pass a gate silently, and must not look like a failed metric either.
"""

from __future__ import annotations

import math
import sys
from typing import Any

from ..errors import EXIT_CHECK_FAILED, EXIT_OK, EXIT_PARTIAL, UsageError
from ..query.runs import run_ids
from ..query.strict_json import strict_dumps
from ..storage import index
from ..storage.files import SourceTree, run_snapshot
from ..storage.repo import workdir
from .common import open_session


def check_propagate(*, names: list[str] | None = None, rev: str | None = None, fmt: str = "text") -> int:
    """Propagate today's statements into every recorded version's snapshot, without writing anything.

    Every file replay would carry statements into is checked — the script and the modules
    of the snapshot that hold today's statements — chosen by the same `propagate.Carrier`
    replay uses. Drift (a name the statement reads is computed differently in that version)
    is reported as a warning and does not fail the gate.
    """
    from ..propagate import Carrier

    repo = open_session()
    conn = index.connect(repo)
    try:
        chosen = set(run_ids(repo, conn, rev=rev))
        rows = [r for r in conn.execute("SELECT run, commit_, shadow, script FROM runs ORDER BY tstamp, run")
                if r[0] in chosen]
    finally:
        conn.close()
    root = workdir(repo)

    def today_of(path: str) -> str | None:
        full = root / path
        return full.read_text(errors="replace") if full.is_file() else None

    carrier = Carrier(today_of, names or None)
    # One check per distinct snapshot (script, tree of src/): many runs share a version.
    versions: dict[tuple[str, str], dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    for run, commit, shadow, script in rows:
        if not script or not str(script).endswith(".py"):
            continue
        if not (root / script).is_file():
            skipped[script] = "not in today's working tree"
            continue
        try:
            snapshot = run_snapshot(repo, shadow)
        except (KeyError, ValueError):
            skipped[script] = "a run's snapshot cannot be read"
            continue
        if snapshot.file_id(script) is None:
            skipped[script] = "a run's snapshot lacks it"
            continue
        version = versions.get((script, snapshot.id))
        if version is None:
            version = versions[(script, snapshot.id)] = {
                "script": script, "snapshot": snapshot.id, "runs": [], "commits": [],
                **_carry_report(carrier, script, snapshot)}
        version["runs"].append(run)
        if commit and commit not in version["commits"]:
            version["commits"].append(commit)
    failed = [v for v in versions.values() if not v["ok"]]
    code = EXIT_OK if versions and not failed else EXIT_PARTIAL
    if fmt == "json":
        sys.stdout.write(strict_dumps({"check": "propagate", "ok": code == EXIT_OK, "rev": rev,
                                     "versions": list(versions.values()), "skipped": skipped}) + "\n")
        return code
    for v in versions.values():
        where = f"{v['script']} as run at {', '.join(c[:8] for c in v['commits']) or 'no commit'} ({len(v['runs'])} run(s))"
        if v["ok"]:
            into = f" into {', '.join(v['files'])}" if len(v["files"]) > 1 else ""
            print(f"ok      {where}: {len(v['placed'])} statement(s) placed{into}")
        else:
            for f in v["failures"]:
                print(f"FAILED  {where}: {f['path']}: {f['name']}: {f['reason']}")
        for w in v["warnings"]:
            print(f"warning {where}: {w['path']}: {w['message']}")
    for script, why in skipped.items():
        print(f"skipped {script}: {why}")
    if not versions:
        print("no recorded version of a script to propagate into; nothing to check", file=sys.stderr)
    elif failed:
        example = failed[0]
        path = example["failures"][0]["path"] if example["failures"] else example["script"]
        print(f"{len(failed)} of {len(versions)} version(s) cannot take today's statements; to see one: "
              f"git flor propagate {example['runs'][0]} --diff -- {path}", file=sys.stderr)
    return code


def _carry_report(carrier: Any, script: str, snapshot: SourceTree) -> dict[str, Any]:
    """Carry today's statements into one snapshot (the files replay would) and say how it went."""
    carried = carrier.carry(script, snapshot.python_paths(), snapshot.read)
    if carried.unreadable:
        raise UsageError(f"{carried.unreadable[0]}; fix it, then check again")
    results = carried.results
    unknown = [{"path": script, "name": n, "reason": "today's code has no flor.log statement with this name"}
               for n in carrier.names or [] if n not in carried.found]
    return {
        "ok": carried.ok and not unknown,
        "files": list(results),
        "placed": [p.name for r in results.values() for p in r.placements],
        "failures": [{"path": path, "name": f.name, "reason": f.reason}
                     for path, r in results.items() for f in r.failures] + unknown,
        "warnings": [{"path": path, "name": w.name, "variable": w.variable, "past": w.past,
                      "today": w.today, "message": str(w)}
                     for path, r in results.items() for w in r.warnings],
    }


def check_metric(
    name: str, *, minimum: float | None = None, maximum: float | None = None,
    rev: str | None = None, fmt: str = "text",
) -> int:
    if minimum is None and maximum is None:
        raise UsageError("give a bound to check: --min X, --max Y or both")
    repo = open_session()
    conn = index.connect(repo)
    try:
        chosen = set(run_ids(repo, conn, rev=rev))
        rows = [(r, c) for r, c in conn.execute("SELECT run, commit_ FROM runs ORDER BY tstamp DESC, run DESC")
                if r in chosen]
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
        sys.stdout.write(strict_dumps({"check": "metric", **info, "message": text}) + "\n")
    else:
        print(text, file=sys.stdout if code == EXIT_OK or code == EXIT_CHECK_FAILED else sys.stderr)
    return code
