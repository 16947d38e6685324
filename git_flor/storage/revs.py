"""Revisions as users type them: ``HEAD~3`` (that commit) or ``A..B`` / ``A...B`` (a range)."""

from __future__ import annotations

import pygit2
from pygit2.enums import RevSpecFlag, SortMode

from ..errors import UsageError


def resolve_commit(repo: pygit2.Repository, rev: str) -> pygit2.Oid:
    try:
        return repo.revparse_single(rev).peel(pygit2.Commit).id
    except (KeyError, ValueError, pygit2.GitError, pygit2.InvalidSpecError):
        raise UsageError(
            f"unknown revision {rev!r}: no such commit here; use a commit, branch or tag name "
            "(see `git log --oneline`)"
        ) from None


def commits_in(repo: pygit2.Repository, spec: str) -> set[str]:
    """The commits a rev spec names: one commit, or every commit of a range."""
    if ".." not in spec:
        return {str(resolve_commit(repo, spec))}
    try:
        parsed = repo.revparse(spec)
    except (KeyError, ValueError, pygit2.GitError, pygit2.InvalidSpecError):
        # Say which end is wrong: `HEAD~3..HEAD` in a two-commit history is not a syntax error.
        sep = "..." if "..." in spec else ".."
        ends = spec.split(sep, 1)
        for end in ends:
            if end:
                resolve_commit(repo, end)  # raises "unknown revision 'HEAD~3'"
        raise UsageError(f"unknown revision range {spec!r}; write it as A..B or A...B") from None
    walker = repo.walk(parsed.to_object.peel(pygit2.Commit).id, SortMode.TOPOLOGICAL)
    start = parsed.from_object.peel(pygit2.Commit).id
    if parsed.flags & RevSpecFlag.MERGE_BASE:
        base = repo.merge_base(start, parsed.to_object.peel(pygit2.Commit).id)
        walker.push(start)
        if base is not None:
            walker.hide(base)
    else:
        walker.hide(start)
    return {str(c.id) for c in walker}


def newest_commit(repo: pygit2.Repository, commits: list[str]) -> str:
    """The most recently committed of ``commits`` (after an amend: the amended one); absent ones last."""

    def when(hexid: str) -> int:
        obj = repo.get(hexid)
        return getattr(obj, "commit_time", -1)

    return max(commits, key=when)
