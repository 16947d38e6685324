"""Snapshot of the working tree as a run saw it, written as a git tree.

The tree holds every tracked file with its *working-tree* content, so
uncommitted edits are captured, while git's object store dedups every blob that
did not change. It is built in a private in-memory copy of the index: the
user's index file, working tree, HEAD and branches are never written.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

import pygit2
from pygit2.enums import FileMode, FileStatus

_CHANGED = FileStatus.WT_MODIFIED | FileStatus.WT_TYPECHANGE
_GONE = FileStatus.WT_DELETED


@dataclass(frozen=True)
class Snapshot:
    tree: pygit2.Oid
    head: pygit2.Oid | None  # None on an unborn branch
    branch: str | None  # None when HEAD is detached
    dirty: bool  # tracked content differs from HEAD's tree


def head_state(repo: pygit2.Repository) -> tuple[pygit2.Oid | None, str | None]:
    if repo.head_is_unborn:
        return None, None
    branch = None if repo.head_is_detached else repo.head.shorthand
    return repo.head.target, branch


def snapshot_worktree(repo: pygit2.Repository, extra: tuple[str, ...] = ()) -> Snapshot:
    """``extra``: untracked paths to include anyway — the script that runs, so that even a
    run of a never-committed script keeps the code that produced it (and can be replayed)."""
    head, branch = head_state(repo)
    index_path = Path(repo.path) / "index"
    private = pygit2.Index(str(index_path)) if index_path.exists() else pygit2.Index()
    root = Path(repo.workdir)
    for path, flags in repo.status(untracked_files="no").items():
        if flags & _GONE:
            _drop(private, path)
        elif flags & _CHANGED:
            _from_workdir(repo, private, root, path)
    for path in extra:
        if path not in private and (root / path).is_file():
            _from_workdir(repo, private, root, path)
    for path in _conflicted(private):
        _drop(private, path)
        if os.path.lexists(root / path):
            _from_workdir(repo, private, root, path)
    tree = private.write_tree(repo)
    dirty = head is None and len(private) > 0 or (
        head is not None and repo[head].peel(pygit2.Tree).id != tree
    )
    return Snapshot(tree=tree, head=head, branch=branch, dirty=bool(dirty))


def _from_workdir(repo: pygit2.Repository, index: pygit2.Index, root: Path, path: str) -> None:
    full = root / path
    st = os.lstat(full)
    if stat.S_ISLNK(st.st_mode):
        oid = repo.create_blob(os.fsencode(os.readlink(full)))
        mode = FileMode.LINK
    else:
        oid = repo.create_blob_fromworkdir(path)
        mode = FileMode.BLOB_EXECUTABLE if st.st_mode & stat.S_IXUSR else FileMode.BLOB
    index.add(pygit2.IndexEntry(path, oid, mode))


def _drop(index: pygit2.Index, path: str) -> None:
    try:
        index.remove(path)
    except (OSError, KeyError):
        pass


def _conflicted(index: pygit2.Index) -> list[str]:
    conflicts = index.conflicts
    if conflicts is None:
        return []
    paths = set()
    for ancestor, ours, theirs in conflicts:
        for entry in (ancestor, ours, theirs):
            if entry is not None:
                paths.add(entry.path)
    for path in paths:
        del conflicts[path]
    return sorted(paths)
