"""The derived query index: SQLite under ``$GIT_COMMON_DIR/flor/index.sqlite``.

Git holds the truth (shadow commits); this file only caches it in a shape that
is fast to query: one row per run and one row per logged value, with a column
per loop name. It is brought up to date whenever the shadow refs moved (a run
finished, a fetch brought a teammate's runs) by walking only the new commits,
and it is rebuilt from scratch when missing, stale in schema, or when a ref
was rewritten. Deleting it loses nothing.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pygit2

from .records import LOGS_FILE, decode_records, warn
from .refs import shadow_refs
from .repo import flor_dir
from .shadow import read_blob, read_meta, walk

SCHEMA = 3
INDEX_FILE = "index.sqlite"

#: Value kinds: how a stored SQLite value maps back to the logged JSON value.
PLAIN, BOOL, JSON = 0, 1, 2
#: Provenance of a value in the table.
RECORDED, HINDSIGHT, ARG = 0, 1, 2

_DDL = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS tips(ref TEXT PRIMARY KEY, tip TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS commits(
    rid INTEGER PRIMARY KEY, shadow TEXT UNIQUE NOT NULL, ref TEXT NOT NULL,
    run TEXT NOT NULL, kind TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs(
    run TEXT PRIMARY KEY, rid INTEGER NOT NULL, shadow TEXT NOT NULL, commit_ TEXT,
    tstamp REAL, script TEXT, status TEXT, dirty INTEGER, duration REAL,
    args TEXT, meta TEXT);
CREATE TABLE IF NOT EXISTS loopcols(name TEXT PRIMARY KEY, col TEXT UNIQUE NOT NULL, depth INTEGER);
CREATE TABLE IF NOT EXISTS recs(rid INTEGER NOT NULL, run TEXT NOT NULL, name TEXT NOT NULL,
    value, kind INTEGER NOT NULL, src INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS recs_name ON recs(name);
CREATE INDEX IF NOT EXISTS recs_rid ON recs(rid);
"""


def connect(repo: pygit2.Repository) -> sqlite3.Connection:
    """Open the index and bring it up to date with the shadow refs."""
    path = flor_dir(repo) / INDEX_FILE
    conn = _open(path)
    if _schema(conn) != SCHEMA:
        conn.close()
        path.unlink(missing_ok=True)
        conn = _open(path)
    sync(repo, conn)
    return conn


def rebuild(repo: pygit2.Repository) -> sqlite3.Connection:
    (flor_dir(repo) / INDEX_FILE).unlink(missing_ok=True)
    return connect(repo)


def _open(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=60, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(_DDL)
    conn.execute("INSERT OR IGNORE INTO meta VALUES('schema', ?)", (str(SCHEMA),))
    return conn


def _schema(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
    return int(row[0]) if row else -1


def sync(repo: pygit2.Repository, conn: sqlite3.Connection) -> None:
    current = {ref: str(oid) for ref, oid in shadow_refs(repo).items()}
    if dict(conn.execute("SELECT ref, tip FROM tips").fetchall()) == current:
        return
    conn.execute("BEGIN IMMEDIATE")  # one updater at a time; readers keep reading (WAL)
    try:
        known = dict(conn.execute("SELECT ref, tip FROM tips").fetchall())
        for ref in set(known) - set(current):
            _drop_ref(conn, ref)
        for ref, tip in current.items():
            old = known.get(ref)
            if old == tip:
                continue
            stop = None
            if old is not None:
                old_oid, tip_oid = pygit2.Oid(hex=old), pygit2.Oid(hex=tip)
                if old_oid in repo and repo.descendant_of(tip_oid, old_oid):
                    stop = old_oid
                else:
                    _drop_ref(conn, ref)  # rewritten: re-read it all
            commits = list(walk(repo, pygit2.Oid(hex=tip), stop))
            for commit in reversed(commits):  # oldest first: later replays override earlier
                _ingest(repo, conn, ref, commit)
            conn.execute("INSERT OR REPLACE INTO tips VALUES(?, ?)", (ref, tip))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _drop_ref(conn: sqlite3.Connection, ref: str) -> None:
    rids = "SELECT rid FROM commits WHERE ref = ?"
    conn.execute(f"DELETE FROM recs WHERE rid IN ({rids})", (ref,))
    conn.execute(f"DELETE FROM runs WHERE rid IN ({rids})", (ref,))
    conn.execute("DELETE FROM commits WHERE ref = ?", (ref,))
    conn.execute("DELETE FROM tips WHERE ref = ?", (ref,))


def _ingest(repo: pygit2.Repository, conn: sqlite3.Connection, ref: str, commit: pygit2.Commit) -> None:
    try:
        meta = read_meta(repo, commit)
        run_id = str(meta["id"])
    except (KeyError, ValueError, TypeError):
        warn(f"skipping shadow commit {str(commit.id)[:10]}: unreadable run.json")
        return
    kind = "replay" if meta.get("replay_of") else "run"
    target = str(meta["replay_of"]) if kind == "replay" else run_id
    cur = conn.execute(
        "INSERT OR IGNORE INTO commits(shadow, ref, run, kind) VALUES(?, ?, ?, ?)",
        (str(commit.id), ref, target, kind),
    )
    if cur.rowcount == 0:
        return
    rid = cur.lastrowid
    if kind == "run":
        conn.execute(
            "INSERT OR REPLACE INTO runs VALUES(?,?,?,?,?,?,?,?,?,?,?)",
            (
                run_id, rid, str(commit.id), meta.get("commit"), meta.get("start"),
                meta.get("script"), meta.get("status"), int(bool(meta.get("dirty"))),
                meta.get("duration"), json.dumps(meta.get("args", {})), json.dumps(meta),
            ),
        )
        args = meta.get("args") or {}
        _insert(conn, rid, target, ((k, v, ()) for k, v in args.items()), ARG)
    else:
        # A newer replay of the same names replaces the older one's values.
        names = [r[0] for r in decode_records(read_blob(repo, commit, LOGS_FILE))]
        conn.executemany(
            "DELETE FROM recs WHERE run = ? AND name = ? AND src = ?",
            [(target, n, HINDSIGHT) for n in set(names)],
        )
    origin = f"{str(commit.id)[:10]}:{LOGS_FILE}"
    records = decode_records(read_blob(repo, commit, LOGS_FILE), origin=origin)
    _insert(conn, rid, target, records, RECORDED if kind == "run" else HINDSIGHT)


def _insert(conn: sqlite3.Connection, rid: int, run: str, records: Iterable[Any], src: int) -> None:
    by_shape: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
    for name, value, pos in records:
        shape = tuple(f[0] for f in pos)
        stored, kind = encode_value(value)
        by_shape.setdefault(shape, []).append(
            (rid, run, name, stored, kind, src, *(f[1] for f in pos))
        )
    for shape, rows in by_shape.items():
        cols = [loop_column(conn, loop, depth) for depth, loop in enumerate(shape)]
        if len(set(cols)) != len(cols):
            warn(f"run {run}: loop names repeat in one position {shape}; keeping the outermost")
            seen: dict[str, int] = {}
            for i, c in enumerate(cols):
                seen.setdefault(c, i)
            keep = sorted(seen.values())
            cols = [cols[i] for i in keep]
            rows = [r[:6] + tuple(r[6 + i] for i in keep) for r in rows]
        names = ", ".join(["rid", "run", "name", "value", "kind", "src", *cols])
        marks = ", ".join("?" * (6 + len(cols)))
        conn.executemany(f"INSERT INTO recs({names}) VALUES({marks})", rows)


def loop_column(conn: sqlite3.Connection, loop: str, depth: int) -> str:
    row = conn.execute("SELECT col FROM loopcols WHERE name = ?", (loop,)).fetchone()
    if row:
        return row[0]
    col = f"d{conn.execute('SELECT COUNT(*) FROM loopcols').fetchone()[0]}"
    conn.execute(f"ALTER TABLE recs ADD COLUMN {col} INTEGER")
    conn.execute("INSERT INTO loopcols VALUES(?, ?, ?)", (loop, col, depth))
    return col


def loop_columns(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    """(loop name, column) ordered by nesting depth, then first appearance."""
    return conn.execute("SELECT name, col FROM loopcols ORDER BY depth, rowid").fetchall()


def encode_value(value: Any) -> tuple[Any, int]:
    if value is True or value is False:
        return int(value), BOOL
    if (
        isinstance(value, (list, dict))
        or (isinstance(value, int) and abs(value) >= 2**63)
        or value != value  # NaN: SQLite would store NULL, and NaN is not None
    ):
        return json.dumps(value), JSON
    return value, PLAIN


def decode_value(stored: Any, kind: int) -> Any:
    if kind == BOOL:
        return bool(stored)
    if kind == JSON:
        return json.loads(stored)
    return stored
