"""What every command does first: open the repository and recover crashed runs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

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
