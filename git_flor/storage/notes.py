"""``refs/notes/flor``: JSON lines on the commits runs ran on, bounded per commit.

The note is the human-readable index (``git log --notes=flor``): the first
:data:`INLINE_RUNS` runs of a commit get one line each; later ones add only an
overflow line per clone (and per dirty snapshot) naming the shadow ref that holds
them, written once. A note blob is rewritten whole by every write, so this is
what keeps the bytes a run writes, and all versions of the notes together,
linear in runs instead of quadratic in runs per commit; the runs themselves are
always the shadow commits (``git flor runs --rev COMMIT`` lists them all). Lines are kept
sorted and unique, which is exactly what git's ``cat_sort_uniq`` notes merge
produces, so concurrent histories merge into a union. Notes are written with
plumbing and compare-and-swap (libgit2's note writer and ``git notes add`` move
the ref without checking its old value, so concurrent writers lose notes).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import pygit2

from .refs import NOTES_REF, cas_update
from .repo import signature
from .trees import put_blobs


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
    """Union ``lines`` into the note on ``target`` (one notes commit, even when nothing is new)."""
    _add(repo, {str(target): lines}, ref, "Notes added by 'git flor'", skip_unchanged=False)


#: How many runs of one commit get a line of their own in its note.
INLINE_RUNS = 64
#: The key of the overflow line: the shadow ref that holds a commit's further runs.
MORE_RUNS = "more_runs_in"


def add_run_line(repo: pygit2.Repository, target: pygit2.Oid, line: str, overflow: str,
                 ref: str = NOTES_REF) -> None:
    """Add a run's ``line`` to ``target``'s note, or ``overflow`` once it holds :data:`INLINE_RUNS` runs.

    Both writers of a race may each add a run line at ``INLINE_RUNS - 1``: the bound
    is soft by the number of concurrent writers, and the union stays a union.
    """
    sig = signature(repo)
    hexid = str(target)

    def build(old: pygit2.Oid | None) -> pygit2.Oid:
        tree = repo[old].peel(pygit2.Tree) if old is not None else None
        found = _find(tree, hexid) if tree is not None else None
        existing = _lines(repo, found[1]) if found else []
        runs = sum(1 for ln in existing if ln.startswith('{') and '"run":' in ln and MORE_RUNS not in ln)
        new = line if runs < INLINE_RUNS else overflow
        if new in existing:
            return old  # type: ignore[return-value]  # already said: no notes commit
        blob = _blob(repo, _union(existing, [new]))
        new_tree = put_blobs(repo, tree, {tuple(found[0]) if found else (hexid,): blob})
        return repo.create_commit(None, sig, sig, "Notes added by 'git flor'", new_tree,
                                  [old] if old is not None else [])

    cas_update(repo, ref, build)


def add_many(
    repo: pygit2.Repository, lines: Mapping[pygit2.Oid | str, list[str]], ref: str = NOTES_REF,
    message: str = "Notes added by 'git flor'",
) -> None:
    """Union ``lines[target]`` into each target's note, all in one notes commit.

    The hooks write several notes at once (a rebase rewrites many commits); one
    commit keeps ``git log refs/notes/flor`` readable and costs one ref update.
    """
    wanted = {str(k): v for k, v in lines.items() if v}
    if wanted:
        _add(repo, wanted, ref, message, skip_unchanged=True)


def _add(
    repo: pygit2.Repository, wanted: Mapping[str, list[str]], ref: str, message: str, *, skip_unchanged: bool
) -> None:
    sig = signature(repo)

    def build(old: pygit2.Oid | None) -> pygit2.Oid:
        tree = repo[old].peel(pygit2.Tree) if old is not None else None
        puts: dict[tuple[str, ...], pygit2.Oid] = {}
        for hexid, new in wanted.items():
            found = _find(tree, hexid) if tree is not None else None
            existing = _lines(repo, found[1]) if found else []
            merged = _union(existing, new)
            if skip_unchanged and found and merged == existing:
                continue
            puts[tuple(found[0]) if found else (hexid,)] = _blob(repo, merged)
        if not puts:
            return old  # type: ignore[return-value]  # nothing new: leave the ref as it is
        new_tree = put_blobs(repo, tree, puts)
        parents = [old] if old is not None else []
        return repo.create_commit(None, sig, sig, message, new_tree, parents)

    cas_update(repo, ref, build)


def _lines(repo: pygit2.Repository, blob: pygit2.Oid) -> list[str]:
    return repo[blob].data.decode("utf-8", "replace").splitlines()


def _union(*parts: list[str]) -> list[str]:
    """Lines sorted and unique, blank ones dropped: git's ``cat_sort_uniq``."""
    return sorted({line for part in parts for line in part if line.strip()})


def _blob(repo: pygit2.Repository, lines: list[str]) -> pygit2.Oid:
    return repo.create_blob(("\n".join(lines) + "\n").encode())


def iter_notes(repo: pygit2.Repository, tree: pygit2.Tree) -> Iterator[tuple[str, tuple[str, ...], pygit2.Oid]]:
    """Every note of a notes tree as (annotated commit hex, path in the tree, blob id), any fan-out."""

    def walk(node: pygit2.Tree, prefix: tuple[str, ...]) -> Iterator[tuple[str, tuple[str, ...], pygit2.Oid]]:
        for entry in node:
            path = (*prefix, entry.name)
            if entry.type_str == "tree":
                yield from walk(repo[entry.id], path)
            elif entry.type_str == "blob":
                hexid = "".join(path)
                if len(hexid) in (40, 64) and all(c in "0123456789abcdef" for c in hexid):
                    yield hexid, path, entry.id

    yield from walk(tree, ())


def union_trees(repo: pygit2.Repository, ours: pygit2.Tree, theirs: pygit2.Tree) -> pygit2.Oid:
    """Our notes tree with theirs unioned in line by line: git's ``cat_sort_uniq`` merge.

    Their notes land at our path for the same commit when we have one (fan-outs
    may differ between clones), else at theirs.
    """
    mine = {hexid: (path, blob) for hexid, path, blob in iter_notes(repo, ours)}
    puts: dict[tuple[str, ...], pygit2.Oid] = {}
    for hexid, path, blob in iter_notes(repo, theirs):
        have = mine.get(hexid)
        if have is None:
            puts[path] = blob
        elif have[1] != blob:
            puts[have[0]] = _blob(repo, _union(_lines(repo, have[1]), _lines(repo, blob)))
    return put_blobs(repo, ours, puts) if puts else ours.id


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
