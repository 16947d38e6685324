"""A scratch copy of a run's version to replay in: written from git objects, never a checkout.

The tree is the run's snapshot with the propagated script in place of its old
one; nothing is registered as a worktree and no index is touched. The user's
untracked and ignored inputs (data folders, caches) are made reachable at the
same relative paths: directories as links (writes through them are copied up
by the replay sandbox), small files as private copies, large files as links.

Files the original run itself created (``hidden``: its ``best.npy``, its
``out/model.pt``) are *not* made reachable: today's copy may be another run's,
and the replay must read the one it writes itself (or fail loudly), never that.
A linked directory holding such a file becomes a real directory of links.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path, PurePosixPath

import pygit2
from pygit2.enums import FileMode

#: Untracked files up to this size are copied rather than linked: a copy cannot
#: be clobbered by a writer the sandbox does not see (C code opening the path).
COPY_LIMIT = 64 * 1024 * 1024


def materialise(
    repo: pygit2.Repository, tree: pygit2.Tree, overrides: dict[str, str], user_root: Path, dest: Path,
    hidden: set[str] | frozenset[str] = frozenset(),
) -> None:
    """Write ``tree`` (with ``overrides``) to ``dest`` and reach the user's untracked files but ``hidden``."""
    dest.mkdir(parents=True, exist_ok=True)
    _write_tree(repo, tree, dest)
    for rel, text in overrides.items():
        path = dest / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    holders = {str(PurePosixPath(h).parents[k]) for h in hidden for k in range(len(PurePosixPath(h).parents) - 1)}
    _link_untracked(user_root, dest, tree, repo, frozenset(hidden), holders, "")


def _write_tree(repo: pygit2.Repository, tree: pygit2.Tree, dest: Path) -> None:
    for entry in tree:
        path = dest / entry.name
        if entry.filemode == FileMode.TREE:
            path.mkdir(exist_ok=True)
            _write_tree(repo, repo[entry.id], path)
        elif entry.filemode == FileMode.LINK:
            os.symlink(repo[entry.id].data, path)
        elif entry.filemode in (FileMode.BLOB, FileMode.BLOB_EXECUTABLE):
            path.write_bytes(repo[entry.id].data)
            if entry.filemode == FileMode.BLOB_EXECUTABLE:
                path.chmod(0o755)
        # submodules (commits) are not materialised


def _link_untracked(
    user: Path, dest: Path, tree: pygit2.Tree | None, repo: pygit2.Repository,
    hidden: frozenset[str], holders: set[str], rel: str,
) -> None:
    try:
        entries = list(os.scandir(user))
    except OSError:
        return
    for entry in entries:
        if entry.name == ".git":
            continue
        target = dest / entry.name
        path = f"{rel}/{entry.name}" if rel else entry.name
        tracked = tree[entry.name] if tree is not None and entry.name in tree else None
        if tracked is not None:
            if tracked.filemode == FileMode.TREE and entry.is_dir(follow_symlinks=False):
                _link_untracked(Path(entry.path), target, repo[tracked.id], repo, hidden, holders, path)
            continue
        if path in hidden or os.path.lexists(target):
            continue
        if path in holders and entry.is_dir(follow_symlinks=False):
            target.mkdir()
            _link_untracked(Path(entry.path), target, None, repo, hidden, holders, path)
            continue
        if entry.is_file(follow_symlinks=False) and entry.stat().st_size <= COPY_LIMIT:
            shutil.copy2(entry.path, target)
        else:
            os.symlink(entry.path, target)
