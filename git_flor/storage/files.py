"""Reading files as they were: at a revision, in a run's snapshot, or in HEAD.

Other rooms get a :class:`SourceTree` — read a file, list the Python files,
put propagated files in, write the tree out to a scratch directory — and never
see a git object. Where a run's snapshot lives in its shadow commit is this
module's business (with :mod:`.shadow`), nobody else's.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pygit2
from pygit2.enums import FileMode

from .records import SRC_DIR
from .revs import resolve_commit
from .trees import put_texts

#: What :meth:`SourceTree.write_to` wrote, as the tracked names of each directory:
#: name → the same shape for a subdirectory, None for anything else (a file, a
#: symlink, a submodule). Replay links the user's untracked inputs around it.
Tracked = dict[str, "Tracked | None"]


@dataclass(frozen=True)
class SourceTree:
    """The files of one tree of the repository (read-only: writing gives a new tree)."""

    repo: pygit2.Repository
    tree: pygit2.Tree

    @property
    def id(self) -> str:
        return str(self.tree.id)

    def read(self, path: str) -> str | None:
        """The text of ``path`` (``/``-separated), None when the tree has no such file."""
        try:
            return self.repo[self.tree[path].id].data.decode("utf-8", "replace")
        except KeyError:
            return None

    def file_id(self, path: str) -> str | None:
        """The blob id of ``path``: equal ids, equal contents (one check per version, not per run)."""
        try:
            entry = self.tree[path]
        except KeyError:
            return None
        return str(entry.id) if entry.type_str == "blob" else None

    def python_paths(self) -> list[str]:
        """Every ``.py`` file of the tree, as repository paths."""
        return _python_paths(self.repo, self.tree, "")

    def with_texts(self, texts: Mapping[str, str]) -> SourceTree:
        """This tree with ``texts[path]`` in place of each file (the propagated sources); stored in git."""
        if not texts:
            return self
        return SourceTree(self.repo, self.repo[put_texts(self.repo, self.tree, texts)])

    def write_to(self, dest: Path) -> Tracked:
        """Write every file into ``dest`` (created), as a checkout would but touching no index or worktree.

        Symlinks stay symlinks, executables executable; submodules are not
        written. Returns what was written, for the caller to fill in around it.
        """
        dest.mkdir(parents=True, exist_ok=True)
        return _write_tree(self.repo, self.tree, dest)


def tree_at(repo: pygit2.Repository, rev: str) -> SourceTree:
    """The files of revision ``rev`` (raises UsageError for an unknown one)."""
    return SourceTree(repo, repo[resolve_commit(repo, rev)].peel(pygit2.Tree))


def head_tree(repo: pygit2.Repository) -> SourceTree | None:
    """The files of HEAD; None on an unborn branch."""
    if repo.head_is_unborn:
        return None
    return SourceTree(repo, repo.head.peel(pygit2.Tree))


def run_snapshot(repo: pygit2.Repository, shadow: str) -> SourceTree:
    """The working tree as the run of shadow commit ``shadow`` saw it (its ``src/``).

    Raises KeyError when the commit is not in this clone or has no snapshot.
    """
    commit = repo[pygit2.Oid(hex=shadow)].peel(pygit2.Commit)
    return SourceTree(repo, repo[commit.tree[SRC_DIR].id])


def _python_paths(repo: pygit2.Repository, tree: pygit2.Tree, prefix: str) -> list[str]:
    out: list[str] = []
    for entry in tree:
        path = prefix + entry.name
        if entry.type_str == "tree":
            out.extend(_python_paths(repo, repo[entry.id], path + "/"))
        elif entry.name.endswith(".py"):
            out.append(path)
    return out


def _write_tree(repo: pygit2.Repository, tree: pygit2.Tree, dest: Path) -> Tracked:
    tracked: Tracked = {}
    for entry in tree:
        path = dest / entry.name
        tracked[entry.name] = None
        if entry.filemode == FileMode.TREE:
            path.mkdir(exist_ok=True)
            tracked[entry.name] = _write_tree(repo, repo[entry.id], path)
        elif entry.filemode == FileMode.LINK:
            os.symlink(repo[entry.id].data, path)
        elif entry.filemode in (FileMode.BLOB, FileMode.BLOB_EXECUTABLE):
            path.write_bytes(repo[entry.id].data)
            if entry.filemode == FileMode.BLOB_EXECUTABLE:
                path.chmod(0o755)
        # submodules (commits) are not written
    return tracked
