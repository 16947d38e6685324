"""What the hooks write: dirty runs linked to the commit that captured them, rewrites followed.

Both only *add* note lines to ``refs/notes/flor`` (one notes commit per hook,
compare-and-swap), so they merge as a union with every other writer and the
run's own record never changes: a run keeps the commit it ran at, and the
notes say which other commits it belongs to (see :mod:`.index_links`).

Line shapes (JSON, keys sorted so identical facts dedupe):

- run line on the captured commit: the run's own note line plus
  ``"ran_at": <the commit it ran at>``;
- environment line: ``{"env": {"python", "platform", "packages", "source"}}``;
- rewrite line on a rewritten commit: ``{"rewritten_from": OLD, "by": "amend"|"rebase"}``.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Iterable
from typing import Any

import pygit2

from . import notes
from .records import LOGS_FILE, RUN_FILE, SRC_DIR, RunData, decode_records
from .refs import SHADOW_PREFIX, shadow_refs
from .schema import BadRecord
from .shadow import note_line, read_blob, read_meta, walk


def _line(obj: dict[str, Any]) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _note_objects(repo: pygit2.Repository, target: pygit2.Oid) -> list[tuple[str, dict[str, Any]]]:
    text = notes.read_note(repo, target) or ""
    out = []
    for line in text.splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            out.append((line, obj))
    return out


def _shadow(repo: pygit2.Repository, shadow_hex: object) -> pygit2.Commit | None:
    if not isinstance(shadow_hex, str):
        return None
    try:
        shadow = repo[pygit2.Oid(hex=shadow_hex)]
    except (KeyError, ValueError):
        return None  # a teammate's run whose shadow ref was not fetched
    if not isinstance(shadow, pygit2.Commit) or SRC_DIR not in shadow.tree or RUN_FILE not in shadow.tree:
        return None
    return shadow


#: How far back the hook looks for dirty runs: edits made at an ancestor are often
#: committed in several steps (``git add -p``), and the run matches the last one.
ANCESTORS = 20


def _dirty_runs_at(repo: pygit2.Repository, commit: pygit2.Commit) -> Iterable[dict[str, Any]]:
    """The note objects of the dirty runs at the nearest ``ANCESTORS`` ancestors of ``commit``."""
    seen: set[pygit2.Oid] = set()
    queue = list(commit.parent_ids)
    while queue and len(seen) < ANCESTORS:
        oid = queue.pop(0)
        if oid in seen:
            continue
        seen.add(oid)
        parent = repo.get(oid)
        for _, obj in _note_objects(repo, oid):
            if obj.get("dirty") and isinstance(obj.get("run"), str) and not obj.get("ran_at"):
                yield obj
            elif obj.get("dirty_tree") == str(commit.tree_id) and isinstance(parent, pygit2.Commit):
                yield from _overflow_runs(repo, obj.get(notes.MORE_RUNS), parent, commit.tree_id)
        if isinstance(parent, pygit2.Commit):
            queue.extend(parent.parent_ids)


#: Clock skew allowed between the commit a run ran at and the run's own commit time.
_SKEW = 86400


def _overflow_runs(
    repo: pygit2.Repository, ref: object, at: pygit2.Commit, tree: pygit2.Oid
) -> Iterable[dict[str, Any]]:
    """The dirty runs at ``at`` whose snapshot is ``tree``, from a note's overflow line's shadow ref.

    Their note has no line of their own (it lists only the first runs of a commit),
    so the shadow ref is walked back only as far as ``at``'s commit time: a run at
    ``at`` started after ``at`` was made.
    """
    tip = repo.references.get(ref) if isinstance(ref, str) and ref.startswith(SHADOW_PREFIX) else None
    if tip is None:
        return
    oldest = at.commit_time - _SKEW
    for shadow in walk(repo, tip.target):
        if shadow.commit_time < oldest:
            break
        if SRC_DIR not in shadow.tree or shadow.tree[SRC_DIR].id != tree or RUN_FILE not in shadow.tree:
            continue
        try:
            meta = read_meta(repo, shadow)
        except BadRecord:
            continue
        if meta.get("commit") == str(at.id) and meta.get("dirty") and not meta.get("replay_of"):
            records = decode_records(read_blob(repo, shadow, LOGS_FILE))
            yield json.loads(note_line(RunData(meta=meta, records=records), shadow.id))


def _unborn_runs(repo: pygit2.Repository) -> Iterable[dict[str, Any]]:
    """Runs made before the first commit (they have no note to find them by): a root commit only."""
    for tip in shadow_refs(repo).values():
        for shadow in walk(repo, tip):
            if len(shadow.parent_ids) == 1 and RUN_FILE in shadow.tree:
                try:
                    meta = read_meta(repo, shadow)
                except BadRecord:
                    continue  # the index says so, with the ref; the hook stays quiet
                if meta.get("commit") is None and not meta.get("replay_of"):
                    records = decode_records(read_blob(repo, shadow, LOGS_FILE))
                    yield json.loads(note_line(RunData(meta=meta, records=records), shadow.id))


def link_head(repo: pygit2.Repository) -> list[str]:
    """:func:`link_commit` for the commit just made (HEAD); nothing on an unborn branch."""
    return [] if repo.head_is_unborn else link_commit(repo, repo.head.target)


def link_commit(repo: pygit2.Repository, target: pygit2.Oid) -> list[str]:
    """Link dirty runs whose snapshot equals ``target``'s tree to it; record the environment.

    Returns the ids of the runs linked. Candidates are the dirty runs at the
    commit's nearest ancestors (read from their notes: a few blobs, however many
    runs the repository has), or, for a root commit, the runs made before any commit.
    """
    commit = repo[target].peel(pygit2.Commit)
    candidates = _dirty_runs_at(repo, commit) if commit.parent_ids else _unborn_runs(repo)
    lines: list[str] = []
    metas: list[dict[str, Any]] = []
    seen: set[str] = set()
    for obj in candidates:
        if obj.get("run") in seen:
            continue
        seen.add(obj.get("run"))  # type: ignore[arg-type]
        shadow = _shadow(repo, obj.get("shadow"))
        if shadow is None or shadow.tree[SRC_DIR].id != commit.tree_id:
            continue
        try:
            meta = read_meta(repo, shadow)
        except BadRecord:
            continue
        lines.append(_line({**obj, "ran_at": meta["commit"]}) if meta.get("commit") else _line(obj))
        metas.append(meta)
    lines.append(_line({"env": environment(metas)}))
    notes.add_many(repo, {target: lines})
    return [meta["id"] for meta in metas]


def link_finished_run(repo: pygit2.Repository, data: RunData, shadow: pygit2.Oid) -> list[str]:
    """Link a dirty run that was still going when its code was committed; return the commits.

    The post-commit hook only sees runs that had finished (their note lines are
    how it finds them), so a run finishing after the commit that captures its
    tree looks for that commit itself: HEAD's nearest ``ANCESTORS`` commits down
    to the one the run started on, whose tree is exactly the run's snapshot.
    """
    meta = data.meta
    if not meta.get("dirty") or meta.get("replay_of") or repo.head_is_unborn:
        return []
    tree, ran_at = meta.get("tree"), meta.get("commit")
    line = _line({**json.loads(note_line(data, shadow)), **({"ran_at": ran_at} if ran_at else {})})
    found: list[str] = []
    commit = repo.head.peel(pygit2.Commit)
    for _ in range(ANCESTORS):
        if str(commit.id) == ran_at:
            break
        if str(commit.tree_id) == tree:
            found.append(str(commit.id))
        if not commit.parent_ids:
            break
        commit = commit.parents[0]
    if found:
        notes.add_many(repo, {hexid: [line] for hexid in found})
    return found


def environment(metas: list[dict[str, Any]]) -> dict[str, Any]:
    """Python, platform and imported package versions: of the linked runs, else of this interpreter.

    A run records the versions of the packages it imported (``packages`` in
    ``run.json``); when the commit captured runs, their environment is the one
    the code demonstrably ran in. Otherwise the hook's own interpreter, which is
    the environment git-flor (and so the training scripts) are installed in.
    """
    if not metas:
        return {"python": platform.python_version(), "platform": platform.platform(terse=True),
                "source": "hook"}
    latest = max(metas, key=lambda m: m.get("start") or 0)
    packages: dict[str, str] = {}
    for meta in sorted(metas, key=lambda m: m.get("start") or 0):
        packages.update(meta.get("packages") or {})
    env: dict[str, Any] = {"python": latest.get("python"), "platform": latest.get("platform"),
                           "source": "runs"}
    if packages:
        env["packages"] = dict(sorted(packages.items()))
    return env


def amend_from_reflog(repo: pygit2.Repository) -> list[tuple[str, str]]:
    """The (old, new) pair of the amend that just happened, read from HEAD's reflog.

    For a post-rewrite hook started without git's "old new" lines on stdin
    (pre-commit runs legacy hooks with an empty stdin).
    """
    head = repo.references.get("HEAD")
    if head is None:
        return []
    for entry in head.log():  # newest first
        if entry.message.startswith("commit (amend)"):
            return [(str(entry.oid_old), str(entry.oid_new))]
        return []
    return []


def follow_rewrites(repo: pygit2.Repository, kind: str, pairs: list[tuple[str, str]]) -> int:
    """Carry each rewritten commit's note lines to its new commit and record the mapping.

    git copies notes itself when ``notes.rewriteRef`` includes ours (``git flor
    init`` sets it); this makes the copy certain whatever the user's
    ``notes.rewrite.*`` say, and adds the old→new mapping git does not keep.
    Returns how many commits got lines.
    """
    updates: dict[str, list[str]] = {}
    for old, new in pairs:
        if old == new:
            continue
        try:
            # Earlier mappings stay on the commits they describe; each note says one step.
            old_lines = [line for line, obj in _note_objects(repo, pygit2.Oid(hex=old))
                         if "rewritten_from" not in obj]
        except ValueError:
            continue
        if not old_lines:
            continue
        mapping = _line({"by": kind, "rewritten_from": old})
        updates.setdefault(new, []).extend([*old_lines, mapping])
    for new, lines in list(updates.items()):
        have = {line for line, _ in _note_objects(repo, pygit2.Oid(hex=new))}
        missing = sorted(set(lines) - have)
        if missing:
            updates[new] = missing
        else:
            del updates[new]
    notes.add_many(repo, updates, message="Notes carried over a rewrite by 'git flor'")
    return len(updates)
