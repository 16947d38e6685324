"""Reading files as they were: at a revision, in a run's snapshot, or in the working tree."""

from __future__ import annotations

import pygit2

from .records import SRC_DIR
from .revs import resolve_commit


def tree_at(repo: pygit2.Repository, rev: str, run_shadow: str | None = None) -> pygit2.Tree:
    """The tree of a revision, or a run's snapshot (``src/`` of its shadow commit)."""
    if run_shadow is not None:
        return repo[repo[run_shadow].peel(pygit2.Commit).tree[SRC_DIR].id]
    return repo[resolve_commit(repo, rev)].peel(pygit2.Tree)


def read(repo: pygit2.Repository, tree: pygit2.Tree, path: str) -> str | None:
    try:
        return repo[tree[path].id].data.decode("utf-8", "replace")
    except KeyError:
        return None


def python_paths(repo: pygit2.Repository, tree: pygit2.Tree, prefix: str = "") -> list[str]:
    out: list[str] = []
    for entry in tree:
        path = prefix + entry.name
        if entry.type_str == "tree":
            out.extend(python_paths(repo, repo[entry.id], path + "/"))
        elif entry.name.endswith(".py"):
            out.append(path)
    return out
