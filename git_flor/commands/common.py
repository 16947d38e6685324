"""What every command does first: open the repository and recover crashed runs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..storage.journal import JOURNAL_DIR, recover_orphans
from ..storage.records import warn
from ..storage.repo import flor_dir, open_repo

if TYPE_CHECKING:
    import pygit2


def open_session() -> pygit2.Repository:
    """Open the repository and turn any journal whose process died into an ``interrupted`` run."""
    repo = open_repo()
    for run_id in recover_orphans(repo, flor_dir(repo) / JOURNAL_DIR):
        warn(f"recovered run {run_id}, whose process died, as 'interrupted'")
    return repo
