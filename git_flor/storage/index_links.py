"""Which commits each run belongs to, read from ``refs/notes/flor`` into the query index.

A run *ran at* one commit (``run.json``'s ``commit``: HEAD when it started),
but it can belong to more:

- the commit that captured its dirty tree (the post-commit hook adds the run's
  note line, with ``"ran_at"``, to a new commit whose tree equals the run's
  snapshot);
- the rewrites of either (``notes.rewriteRef`` and the post-rewrite hook copy
  note lines to amended and rebased commits, with a ``{"rewritten_from": …}``
  line recording the mapping).

So the rule is simply: a run is at every commit whose flor note names it, and at
every rewrite of such a commit or of the commit it ran at (a note lists only
the first runs of a commit, :mod:`.notes`, so a rewrite's note cannot carry
them all: the ``rewritten_from`` line is followed here instead). The
notes are the durable, shared truth (they travel and merge with push/pull);
this table is a cache of them, refreshed by diffing the notes tree whenever
``refs/notes/flor`` moved, so it costs nothing when nothing changed.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

import pygit2

from .notes import iter_notes
from .records import warn
from .refs import NOTES_REF, ref_target
from .schema import valid_run_id

_DDL = """
CREATE TABLE IF NOT EXISTS links(
    run TEXT NOT NULL, commit_ TEXT NOT NULL, ran_at TEXT, rewritten_from TEXT,
    PRIMARY KEY(run, commit_));
CREATE INDEX IF NOT EXISTS links_commit ON links(commit_);
CREATE TABLE IF NOT EXISTS link_notes(commit_ TEXT PRIMARY KEY, blob TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rewrites(commit_ TEXT NOT NULL, from_ TEXT NOT NULL, PRIMARY KEY(commit_, from_));
"""
_TIP_KEY = "notes_tip"


@dataclass(frozen=True)
class Link:
    """One commit a run belongs to besides the one it ran at, and why."""

    commit: str
    ran_at: str | None  # set when this commit captured the run's dirty tree
    rewritten_from: str | None  # set when this commit is an amend/rebase of one the run was at


def sync(repo: pygit2.Repository, conn: sqlite3.Connection) -> None:
    """Bring the links table up to date with ``refs/notes/flor`` (only changed notes are read)."""
    conn.executescript(_DDL)
    tip = ref_target(repo, NOTES_REF)
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (_TIP_KEY,)).fetchone()
    if (row[0] if row else "") == (str(tip) if tip is not None else ""):
        return
    try:
        tree = repo[tip].peel(pygit2.Tree) if tip is not None else None
    except (KeyError, ValueError, pygit2.GitError, pygit2.InvalidSpecError):
        warn(f"{NOTES_REF} does not point at a notes commit, so runs are listed only at the "
             f"commits they ran at; inspect it with `git log {NOTES_REF}`")
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        now = {hexid: str(blob) for hexid, _, blob in iter_notes(repo, tree)} if tree is not None else {}
        before = dict(conn.execute("SELECT commit_, blob FROM link_notes").fetchall())
        for hexid in set(before) - set(now):
            conn.execute("DELETE FROM links WHERE commit_ = ?", (hexid,))
            conn.execute("DELETE FROM rewrites WHERE commit_ = ?", (hexid,))
            conn.execute("DELETE FROM link_notes WHERE commit_ = ?", (hexid,))
        for hexid, blob in now.items():
            if before.get(hexid) == blob:
                continue
            conn.execute("DELETE FROM links WHERE commit_ = ?", (hexid,))
            conn.execute("DELETE FROM rewrites WHERE commit_ = ?", (hexid,))
            try:
                data = repo[pygit2.Oid(hex=blob)].data
            except (KeyError, ValueError, AttributeError):
                warn(f"skipping the flor note on commit {hexid[:10]}: its blob {blob[:10]} is missing")
                continue
            rows = _rows(hexid, data)
            conn.executemany("INSERT OR REPLACE INTO links VALUES(?, ?, ?, ?)", rows)
            conn.executemany("INSERT OR IGNORE INTO rewrites VALUES(?, ?)",
                             {(hexid, r[3]) for r in rows if r[3]} | _rewritten(hexid, data))
            conn.execute("INSERT OR REPLACE INTO link_notes VALUES(?, ?)", (hexid, blob))
        conn.execute("INSERT OR REPLACE INTO meta VALUES(?, ?)", (_TIP_KEY, str(tip) if tip else ""))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _well_formed(obj: dict[str, object]) -> bool:
    """A note line git-flor can use: the fields it reads have their types (others are ignored)."""
    if "rewritten_from" in obj:
        return isinstance(obj["rewritten_from"], str)
    if "run" in obj:
        return valid_run_id(obj["run"]) and (obj.get("ran_at") is None or isinstance(obj["ran_at"], str))
    return True  # an env line, or a kind a newer git-flor writes


def _rewritten(commit: str, data: bytes) -> set[tuple[str, str]]:
    """(commit, the commit it was rewritten from) for each mapping line of the note."""
    out = set()
    for line in data.decode("utf-8", "replace").splitlines():
        if '"rewritten_from"' in line:
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict) and isinstance(obj.get("rewritten_from"), str):
                out.add((commit, obj["rewritten_from"]))
    return out


def _rewrites_of(conn: sqlite3.Connection) -> dict[str, list[str]]:
    """Commit → the commits rewritten from it (amends, rebases)."""
    out: dict[str, list[str]] = {}
    for commit, old in conn.execute("SELECT commit_, from_ FROM rewrites"):
        out.setdefault(old, []).append(commit)
    return out


def _descendants(start: Iterable[str], forward: dict[str, list[str]]) -> list[str]:
    """Every rewrite of ``start``, of those rewrites, and so on (in discovery order)."""
    seen = set(start)
    queue, out = list(seen), []
    while queue:
        for new in forward.get(queue.pop(0), []):
            if new not in seen:
                seen.add(new)
                out.append(new)
                queue.append(new)
    return out


def _rows(commit: str, data: bytes) -> list[tuple[str, str, str | None, str | None]]:
    runs: dict[str, str | None] = {}
    rewritten_from = None
    bad = 0
    for line in data.decode("utf-8", "replace").splitlines():
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            obj = None
        if not isinstance(obj, dict) or not _well_formed(obj):
            bad += 1
            continue
        if "rewritten_from" in obj:
            rewritten_from = obj["rewritten_from"]
        elif "run" in obj:
            ran_at = obj.get("ran_at")
            runs[obj["run"]] = runs.get(obj["run"]) or ran_at
    if bad:
        warn(f"skipping {bad} corrupt line{'s' if bad != 1 else ''} of the flor note on commit "
             f"{commit[:10]} (`git notes --ref=flor show {commit[:10]}`)")
    return [(run, commit, ran_at, rewritten_from) for run, ran_at in runs.items()]


def runs_at(conn: sqlite3.Connection, commits: Iterable[str]) -> set[str]:
    """Runs at any of ``commits``: named by their notes, or at a commit they are rewrites of."""
    wanted = set(commits)
    back: dict[str, list[str]] = {}
    for commit, old in conn.execute("SELECT commit_, from_ FROM rewrites"):
        back.setdefault(commit, []).append(old)
    origins = wanted | set(_descendants(wanted, back))
    found = {run for run, commit in conn.execute("SELECT run, commit_ FROM links") if commit in origins}
    if origins - wanted:
        found |= {run for run, commit in conn.execute("SELECT run, commit_ FROM runs")
                  if commit in origins - wanted}
    return found


def links_of(conn: sqlite3.Connection, run: str, own_commit: str | None) -> list[Link]:
    """The commits ``run`` belongs to besides ``own_commit``, oldest link first."""
    rows = conn.execute(
        "SELECT commit_, ran_at, rewritten_from FROM links WHERE run = ? ORDER BY rowid", (run,)
    ).fetchall()
    out = [Link(c, r, w) for c, r, w in rows if c != own_commit]
    forward = _rewrites_of(conn)
    if forward:
        have = {link.commit for link in out} | ({own_commit} if own_commit else set())
        back = {new: old for old, news in forward.items() for new in news}
        for commit in _descendants(have, forward):
            out.append(Link(commit, None, back.get(commit)))
    return out


def also_at(conn: sqlite3.Connection) -> dict[str, list[str]]:
    """For each run with any, the commits it belongs to besides its own (captures, rewrites)."""
    out: dict[str, list[str]] = {}
    for run, commit in conn.execute(
        "SELECT links.run, links.commit_ FROM links JOIN runs ON runs.run = links.run "
        "WHERE links.commit_ != IFNULL(runs.commit_, '') ORDER BY links.rowid"
    ):
        out.setdefault(run, []).append(commit)
    forward = _rewrites_of(conn)
    if forward:
        for run, own in conn.execute("SELECT run, commit_ FROM runs"):
            start = set(out.get(run, [])) | ({own} if own else set())
            if start & forward.keys():
                more = [c for c in _descendants(start, forward) if c not in out.get(run, [])]
                if more:
                    out.setdefault(run, []).extend(more)
    return out


def captured_at(conn: sqlite3.Connection) -> dict[str, str]:
    """For each run made on uncommitted edits that a commit captured, that commit (the first noted).

    That commit's tree is the run's snapshot, so it is the version the run ran,
    where the commit the run started on is only its parent.
    """
    out: dict[str, str] = {}
    for run, commit in conn.execute("SELECT run, commit_ FROM links WHERE ran_at IS NOT NULL ORDER BY rowid"):
        out.setdefault(run, commit)
    return out
