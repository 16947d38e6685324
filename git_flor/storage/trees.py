"""Writing git trees: blobs put at paths, without an index or a checkout.

Three writers need "this tree, with these blobs at these paths": the notes
(one blob per annotated commit, at any fan-out depth), and replay (a run's
snapshot with the propagated files in place of the old ones). This is the one
implementation: each touched subtree is rewritten once, untouched subtrees are
shared by id, and an existing file keeps its mode (an executable script stays
executable).
"""

from __future__ import annotations

from collections.abc import Mapping

import pygit2
from pygit2.enums import FileMode

#: A path inside a tree, one component per element: ("ab", "cdef…") or ("pkg", "model.py").
TreePath = tuple[str, ...]


def put_blobs(
    repo: pygit2.Repository, tree: pygit2.Tree | None, puts: Mapping[TreePath, pygit2.Oid]
) -> pygit2.Oid:
    """The id of ``tree`` (None: an empty tree) with each ``puts[path]`` blob at ``path``.

    A path through a non-tree entry replaces that entry with a tree; a blob put
    over an existing file keeps the file's mode, a new one is a plain file.
    """
    builder = repo.TreeBuilder(tree) if tree is not None else repo.TreeBuilder()
    nested: dict[str, dict[TreePath, pygit2.Oid]] = {}
    for path, blob in puts.items():
        if len(path) == 1:
            old = tree[path[0]] if tree is not None and path[0] in tree else None
            mode = old.filemode if old is not None and old.type_str == "blob" else FileMode.BLOB
            builder.insert(path[0], blob, mode)
        else:
            nested.setdefault(path[0], {})[path[1:]] = blob
    for head, sub_puts in nested.items():
        sub = tree[head] if tree is not None and head in tree else None
        sub_tree = repo[sub.id] if sub is not None and sub.type_str == "tree" else None
        builder.insert(head, put_blobs(repo, sub_tree, sub_puts), FileMode.TREE)
    return builder.write()


def put_texts(repo: pygit2.Repository, tree: pygit2.Tree, texts: Mapping[str, str]) -> pygit2.Oid:
    """``tree`` with each ``texts[path]`` (a ``/``-separated path) written as a UTF-8 blob there."""
    return put_blobs(
        repo, tree, {tuple(path.split("/")): repo.create_blob(text.encode()) for path, text in texts.items()}
    )
