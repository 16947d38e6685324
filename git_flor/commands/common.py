"""What every command does first: open the repository and recover crashed runs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UsageError
from ..storage.journal import JOURNAL_DIR, recover_orphans
from ..storage.records import warn
from ..storage.repo import ensure_flor_dir, flor_dir, open_repo

if TYPE_CHECKING:
    from ..storage.repo import Repository

ERROR_LOG = "error.log"


def open_session() -> Repository:
    """Open the repository and turn any journal whose process died into an ``interrupted`` run."""
    repo = open_repo()
    for run_id in recover_orphans(repo, flor_dir(repo) / JOURNAL_DIR):
        warn(f"recovered run {run_id}, whose process died, as 'interrupted'")
    return repo


def error_log_path() -> Path:
    """Where an internal error's traceback goes: ``$GIT_COMMON_DIR/flor/error.log`` (raises outside a repository)."""
    return ensure_flor_dir(open_repo()) / ERROR_LOG


def parse_iters(specs: Sequence[str]) -> dict[str, set[int]]:
    """``epoch=3,7`` / ``epoch=0..9`` (inclusive) → {"epoch": {...}}."""
    out: dict[str, set[int]] = {}
    for spec in specs:
        name, sep, values = spec.partition("=")
        if not sep or not name:
            raise UsageError(f"--iter expects NAME=SPEC, e.g. epoch=3,7 or epoch=0..9; got {spec!r}")
        chosen = out.setdefault(name, set())
        for part in values.split(","):
            lo, dots, hi = part.partition("..")
            try:
                chosen.update(range(int(lo), int(hi) + 1) if dots else [int(part)])
            except ValueError:
                raise UsageError(f"--iter {spec!r}: {part!r} is not an iteration or a range like 0..9") from None
    return out
