"""A scratch copy of a run's version to replay in: written from git objects, never a checkout.

The tree is the run's snapshot with the propagated files in place of the old
ones; nothing is registered as a worktree and no index is touched. The user's
untracked and ignored inputs (data folders, caches) are made reachable at the
same relative paths: directories as links (writes through them are copied up
by the replay sandbox), small files as private copies, large files as links.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..storage.files import SourceTree, Tracked

#: Untracked files up to this size are copied rather than linked: a copy cannot
#: be clobbered by a writer the sandbox does not see (C code opening the path).
COPY_LIMIT = 64 * 1024 * 1024


def materialise(tree: SourceTree, user_root: Path, dest: Path) -> None:
    """Write ``tree`` into ``dest`` and make the user's untracked inputs reachable around it."""
    _link_untracked(user_root, dest, tree.write_to(dest))


def _link_untracked(user: Path, dest: Path, tracked: Tracked) -> None:
    try:
        entries = list(os.scandir(user))
    except OSError:
        return
    for entry in entries:
        if entry.name == ".git":
            continue
        target = dest / entry.name
        if entry.name in tracked:
            sub = tracked[entry.name]
            if sub is not None and entry.is_dir(follow_symlinks=False):
                _link_untracked(Path(entry.path), target, sub)
            continue
        if os.path.lexists(target):
            continue
        if entry.is_file(follow_symlinks=False) and entry.stat().st_size <= COPY_LIMIT:
            shutil.copy2(entry.path, target)
        else:
            os.symlink(entry.path, target)
