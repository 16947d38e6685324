"""``refs/notes/flor``: one JSON line per run on the commit it ran on.

The note is the human-readable index (``git log --notes=flor``). Lines are kept
sorted and unique, which is exactly what git's ``cat_sort_uniq`` notes merge
produces, so concurrent histories merge into a union. Notes are written with
plumbing and compare-and-swap (libgit2's note writer and ``git notes add`` move
the ref without checking its old value, so concurrent writers lose notes).
"""

from __future__ import annotations

import pygit2
from pygit2.enums import FileMode

from .refs import NOTES_REF, cas_update
from .repo import signature


def read_note(repo: pygit2.Repository, target: pygit2.Oid, ref: str = NOTES_REF) -> str | None:
    tip = repo.references.get(ref)
    if tip is None:
        return None
    tree = repo[tip.target].peel(pygit2.Tree)
    found = _find(tree, str(target))
    if found is None:
        return None
    return repo[found[1]].data.decode("utf-8", "replace")


def add_lines(
    repo: pygit2.Repository, target: pygit2.Oid, lines: list[str], ref: str = NOTES_REF
) -> None:
    """Union ``lines`` into the note on ``target``."""
    sig = signature(repo)

    def build(old: pygit2.Oid | None) -> pygit2.Oid:
        tree = repo[old].peel(pygit2.Tree) if old is not None else None
        hexid = str(target)
        found = _find(tree, hexid) if tree is not None else None
        existing = repo[found[1]].data.decode("utf-8", "replace").splitlines() if found else []
        merged = sorted({line for line in existing + lines if line.strip()})
        blob = repo.create_blob(("\n".join(merged) + "\n").encode())
        path = found[0] if found else [hexid]
        new_tree = _put(repo, tree, path, blob)
        parents = [old] if old is not None else []
        return repo.create_commit(None, sig, sig, "Notes added by 'git flor'", new_tree, parents)

    cas_update(repo, ref, build)


def _find(tree: pygit2.Tree, hexid: str) -> tuple[list[str], pygit2.Oid] | None:
    """Locate a note blob at any fan-out depth (git switches to ``ab/cdef…`` when notes grow)."""
    for split in range(0, len(hexid) // 2):
        parts = [hexid[2 * i : 2 * i + 2] for i in range(split)] + [hexid[2 * split :]]
        node: pygit2.Object = tree
        for part in parts:
            if not isinstance(node, pygit2.Tree) or part not in node:
                node = None
                break
            node = node[part]
        if node is not None and isinstance(node, pygit2.Blob):
            return parts, node.id
        if split >= 3:
            break
    return None


def _put(
    repo: pygit2.Repository, tree: pygit2.Tree | None, path: list[str], blob: pygit2.Oid
) -> pygit2.Oid:
    builder = repo.TreeBuilder(tree) if tree is not None else repo.TreeBuilder()
    head, rest = path[0], path[1:]
    if not rest:
        builder.insert(head, blob, FileMode.BLOB)
    else:
        sub = tree[head] if tree is not None and head in tree else None
        builder.insert(head, _put(repo, sub, rest, blob), FileMode.TREE)
    return builder.write()
