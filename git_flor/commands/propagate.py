"""``git flor propagate REV``: today's flor statements carried into the files as of REV.

Drift warnings (a name a statement reads is computed by another expression in that version)
go to stderr, so `--diff` output stays a clean diff, and into `--json`.
"""

from __future__ import annotations

import difflib
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..errors import EXIT_OK, EXIT_PARTIAL, UsageError
from ..propagate import PropagationError, flor_statement_names, propagate_source
from ..query.runs import resolve_run
from ..storage import files
from ..storage.index import connect, stored_run
from ..storage.repo import workdir
from .common import open_session

if TYPE_CHECKING:
    from ..storage.repo import Repository


def propagate(
    rev: str,
    paths: Sequence[str] = (),
    *,
    source_rev: str | None = None,
    names: Sequence[str] = (),
    diff: bool = False,
    as_json: bool = False,
    force: bool = False,
) -> int:
    repo = open_session()
    root = workdir(repo)
    shadow = _run_shadow(repo, rev)
    past_tree = files.run_snapshot(repo, shadow) if shadow is not None else files.tree_at(repo, rev)
    today_tree = files.tree_at(repo, source_rev) if source_rev else None

    def today(path: str) -> str | None:
        if today_tree is not None:
            return today_tree.read(path)
        full = root / path
        return full.read_text() if full.is_file() else None

    wanted = [n for spec in names for n in spec.split(",") if n] or None
    if not paths:
        listed = today_tree or files.head_tree(repo)
        candidates = listed.python_paths() if listed is not None else []
        paths = [p for p in candidates if _has_new(today(p), past_tree.read(p), wanted)]
        if not paths:
            print("nothing to propagate: no file has flor statements that REV lacks", file=sys.stderr)
            return EXIT_OK
    report, failures, outputs, warnings = [], [], [], []
    for path in paths:
        now, past = today(path), past_tree.read(path)
        if now is None:
            raise UsageError(f"{path} is not in {'the working tree' if not source_rev else source_rev}")
        if past is None:
            failures.append(f"{path}: not in {rev}")
            continue
        try:
            result = propagate_source(now, past, wanted, force=force)
        except PropagationError as exc:
            raise UsageError(f"{path}: today's version cannot be parsed ({exc}); fix it first") from None
        failures.extend(f"{path}: {f}" for f in result.failures)
        warnings.extend(f"{path}: {w}" for w in result.warnings)
        report.append({
            "path": path,
            "placements": [p.__dict__ for p in result.placements],
            "failures": [f.__dict__ for f in result.failures],
            # A name the statement reads is computed differently there than today: the value
            # will not mean the same; placed anyway (not a failure).
            "warnings": [{**w.__dict__, "message": str(w)} for w in result.warnings],
        })
        outputs.append((path, past, result.source))
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    elif diff or len(outputs) > 1:
        for path, past, new in outputs:
            sys.stdout.writelines(difflib.unified_diff(
                past.splitlines(keepends=True), new.splitlines(keepends=True), f"a/{path}", f"b/{path}"))
    elif outputs:
        sys.stdout.write(outputs[0][2])
    for line in warnings:
        print(f"git-flor: warning: {line}", file=sys.stderr)
    for line in failures:
        print(f"git-flor: could not place {line}", file=sys.stderr)
    return EXIT_PARTIAL if failures else EXIT_OK


def _has_new(now: str | None, past: str | None, wanted: list[str] | None) -> bool:
    if now is None or past is None or now == past:
        return False
    new = set(flor_statement_names(now)) - set(flor_statement_names(past))
    return bool(new if wanted is None else new & set(wanted))


def _run_shadow(repo: Repository, rev: str) -> str | None:
    """A run id (or unique prefix) names that run's snapshot; anything else is a revision."""
    conn = connect(repo)
    try:
        ids = [r[0] for r in conn.execute("SELECT run FROM runs")]
        if not any(i.startswith(rev) for i in ids):
            return None
        return stored_run(conn, resolve_run(ids, rev)).shadow
    finally:
        conn.close()
