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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pygit2

from . import index_links
from .records import LOGS_FILE, UNVERIFIED_FILE, decode_lines, warn
from .refs import shadow_ref, shadow_refs
from .repo import clone_id, ensure_flor_dir, flor_dir
from .schema import BadRecord
from .shadow import read_blob, read_meta, walk

SCHEMA = 7  # 7: rewrites table (index_links); 6: run.json checked on ingest, runs of one id never replaced
INDEX_FILE = "index.sqlite"

#: Provenance of a value in the table (UNVERIFIED: hindsight that a non-deterministic script
#: did not reproduce its own recorded values for, see docs/design.md §7).
RECORDED, HINDSIGHT, ARG, UNVERIFIED = 0, 1, 2, 3
#: Separator of loop names in a chunk's ``dims``.
DIM_SEP = "\x1f"

# Values are stored in chunks: one row per (shadow commit, name, loop shape)
# holding the positions as a packed int64 array and the values as a packed
# array when they share a numeric type ('f8', 'i8', 'b1') or as a JSON list
# otherwise. A million logged values are then ~a thousand rows that numpy
# unpacks without a Python object per value.
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
CREATE TABLE IF NOT EXISTS chunks(
    rid INTEGER NOT NULL, run TEXT NOT NULL, name TEXT NOT NULL, src INTEGER NOT NULL,
    dims TEXT NOT NULL, n INTEGER NOT NULL, pos BLOB NOT NULL, vtype TEXT NOT NULL,
    vals BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_name ON chunks(name);
CREATE INDEX IF NOT EXISTS chunks_run ON chunks(run);
"""


@dataclass(frozen=True)
class Chunk:
    """One name's values in one run at one loop shape, unpacked for the query room."""

    rid: int
    run: str
    name: str
    src: int
    dims: tuple[str, ...]
    pos: np.ndarray  # int64, shape (n, len(dims))
    values: Any  # numpy array for f8/i8/b1, list for json
    vtype: str


@dataclass(frozen=True)
class StoredRun:
    """A recorded run as the index knows it: enough to find its snapshot, records and checkpoints."""

    run: str
    shadow: str  # its shadow commit (snapshot in ``src/``, records beside it)
    meta: dict[str, Any]  # its ``run.json``


def stored_run(conn: sqlite3.Connection, run: str) -> StoredRun:
    """The run ``run`` (a full id, as :func:`run_ids` of the query room gives); KeyError when unknown."""
    row = conn.execute("SELECT shadow, meta FROM runs WHERE run = ?", (run,)).fetchone()
    if row is None:
        raise KeyError(run)
    return StoredRun(run, row[0], json.loads(row[1]))


def replays_of(conn: sqlite3.Connection, run: str) -> list[str]:
    """The shadow commits of ``run``'s replays in the order the index took them (a later one's
    values of a name replace an earlier one's)."""
    return [r[0] for r in conn.execute(
        "SELECT shadow FROM commits WHERE run = ? AND kind = 'replay' ORDER BY rid", (run,))]


def replayed_payloads(conn: sqlite3.Connection) -> set[str]:
    """Payloads a replay of a run needs beyond its checkpoints: files it found before overwriting
    them (``outputs.prior`` of ``run.json``), what its ``flor.load`` calls loaded (``loads``) and
    its global RNGs where it imported git-flor (``rng_start``);
    ``git flor gc`` keeps them like checkpoints."""
    out: set[str] = set()
    for (raw,) in conn.execute("SELECT meta FROM runs"):
        meta = json.loads(raw)
        prior = (meta.get("outputs") or {}).get("prior") or {}
        out |= {sha for sha in prior.values() if isinstance(sha, str)} if isinstance(prior, dict) else set()
        if isinstance(meta.get("rng_start"), str):  # the global RNGs at its `import git_flor`
            out.add(meta["rng_start"])
        for load in meta.get("loads") or []:
            sha = (load.get("resolved") or {}).get("sha256") if isinstance(load, dict) else None
            if isinstance(sha, str):
                out.add(sha)
    return out


def runs_by_start(conn: sqlite3.Connection) -> list[str]:
    """Every recorded run's id (replays excluded), oldest start first."""
    return [r[0] for r in conn.execute("SELECT run FROM runs ORDER BY tstamp, run")]


def connect(repo: pygit2.Repository) -> sqlite3.Connection:
    """Open the index and bring it up to date with the shadow refs."""
    path = ensure_flor_dir(repo) / INDEX_FILE
    try:
        return _connect(repo, path)
    except sqlite3.DatabaseError as exc:
        if isinstance(exc, sqlite3.OperationalError):
            raise  # locked, disk full: not damage, and rebuilding would not help
        # A cache: deleting it loses nothing, so a damaged one is rebuilt from git.
        warn(f"the query index {path} is damaged ({exc}); rebuilding it from git")
        _remove(path)
        return _connect(repo, path)


def _connect(repo: pygit2.Repository, path: Path) -> sqlite3.Connection:
    conn = _open(path)
    if _schema(conn) != SCHEMA:
        conn.close()
        _remove(path)
        conn = _open(path)
    sync(repo, conn)
    index_links.sync(repo, conn)  # which commits each run belongs to, from the notes
    return conn


def _remove(path: Path) -> None:
    for name in (path.name, path.name + "-wal", path.name + "-shm"):
        path.with_name(name).unlink(missing_ok=True)


def rebuild(repo: pygit2.Repository) -> sqlite3.Connection:
    _remove(flor_dir(repo) / INDEX_FILE)
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
        own = shadow_ref(clone_id(repo))
        for ref, tip in sorted(current.items(), key=lambda item: item[0] != own):  # ours first
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
    conn.execute(f"DELETE FROM chunks WHERE rid IN ({rids})", (ref,))
    conn.execute(f"DELETE FROM runs WHERE rid IN ({rids})", (ref,))
    conn.execute("DELETE FROM commits WHERE ref = ?", (ref,))
    conn.execute("DELETE FROM tips WHERE ref = ?", (ref,))


def _ingest(repo: pygit2.Repository, conn: sqlite3.Connection, ref: str, commit: pygit2.Commit) -> None:
    try:
        meta = read_meta(repo, commit)
    except (BadRecord, KeyError, pygit2.GitError) as exc:
        warn(f"skipping a run in {ref} (shadow commit {str(commit.id)[:10]}): {exc}")
        return
    run_id = meta["id"]
    kind = "replay" if meta.get("replay_of") else "run"
    target = str(meta["replay_of"]) if kind == "replay" else run_id
    if kind == "run":
        have = conn.execute("SELECT c.ref, c.shadow FROM runs r JOIN commits c ON c.rid = r.rid "
                            "WHERE r.run = ?", (run_id,)).fetchone()
        if have is not None and have[0] != ref:
            # A teammate's run with the id of one already here: never silently replace it.
            warn(f"skipping run {run_id} in {ref} (shadow commit {str(commit.id)[:10]}): a run with "
                 f"the same id is in {have[0]} (shadow commit {have[1][:10]})")
            return
    cur = conn.execute(
        "INSERT OR IGNORE INTO commits(shadow, ref, run, kind) VALUES(?, ?, ?, ?)",
        (str(commit.id), ref, target, kind),
    )
    if cur.rowcount == 0:
        return
    rid = cur.lastrowid
    origin = f"{str(commit.id)[:10]}:{LOGS_FILE}"
    records = decode_lines(read_blob(repo, commit, LOGS_FILE), origin=origin)
    if kind == "run":
        conn.execute(
            "INSERT OR REPLACE INTO runs VALUES(?,?,?,?,?,?,?,?,?,?,?)",
            (
                run_id, rid, str(commit.id), meta.get("commit"), meta.get("start"),
                meta.get("script"), _status(meta), int(bool(meta.get("dirty"))),
                meta.get("duration"), json.dumps(meta.get("args", {})), json.dumps(meta),
            ),
        )
        args = meta.get("args") or {}
        _insert(conn, rid, target, [{"name": k, "value": v, "pos": []} for k, v in args.items()], ARG)
        _insert(conn, rid, target, records, RECORDED)
    else:
        # A newer replay of a name replaces the older one's values for that run.
        unverified = decode_lines(read_blob(repo, commit, UNVERIFIED_FILE), origin=origin)
        conn.executemany(
            "DELETE FROM chunks WHERE run = ? AND name = ? AND src IN (?, ?)",
            [(target, n, HINDSIGHT, UNVERIFIED) for n in {r["name"] for r in records + unverified}],
        )
        _insert(conn, rid, target, records, HINDSIGHT)
        _insert(conn, rid, target, unverified, UNVERIFIED)


def _status(meta: dict[str, Any]) -> str | None:
    """The run's status as listed: "ok (2 warnings)" when recording had problems (see ``show``)."""
    n = len(meta.get("warnings") or [])
    status = meta.get("status")
    return f"{status} ({n} warning{'s' if n != 1 else ''})" if n and status else status


def _insert(conn: sqlite3.Connection, rid: int, run: str, records: list[dict[str, Any]], src: int) -> None:
    """Group records by (name, loop shape) into packed chunks; this loop is the cold-index hot path."""
    groups: dict[tuple[str, ...], tuple[list[Any], list[Any]]] = {}
    for rec in records:
        pos = rec["pos"]
        if not pos:
            key: tuple[str, ...] = (rec["name"],)
            idx: Any = ()
        elif len(pos) == 1:
            key, idx = (rec["name"], pos[0][0]), pos[0][1]
        else:
            key = (rec["name"], *[f[0] for f in pos])
            idx = tuple(f[1] for f in pos)
        group = groups.get(key)
        if group is None:
            group = groups[key] = ([], [])
        group[0].append(rec["value"])
        group[1].append(idx)
    rows = []
    for (name, *dims), (values, positions) in groups.items():
        if len(set(dims)) != len(dims):
            continue  # a loop nested in a loop of the same name: no column can hold both
        vtype, blob = _pack(values)
        pos = np.asarray(positions, dtype=np.int64).reshape(len(values), len(dims))
        rows.append((rid, run, name, src, DIM_SEP.join(dims), len(values), pos.tobytes(), vtype, blob))
    conn.executemany("INSERT INTO chunks VALUES(?,?,?,?,?,?,?,?,?)", rows)


def _pack(values: list[Any]) -> tuple[str, bytes]:
    kinds = {type(v) for v in values}
    if kinds == {float}:
        return "f8", np.asarray(values, dtype=np.float64).tobytes()
    if kinds == {bool}:
        return "b1", np.asarray(values, dtype=np.bool_).tobytes()
    if kinds == {int} and all(-(2**63) <= v < 2**63 for v in values):
        return "i8", np.asarray(values, dtype=np.int64).tobytes()
    return "json", json.dumps(values, ensure_ascii=False).encode()


def _unpack(vtype: str, blob: bytes) -> Any:
    if vtype == "json":
        return json.loads(blob)
    return np.frombuffer(blob, dtype={"f8": np.float64, "i8": np.int64, "b1": np.bool_}[vtype])


def names(conn: sqlite3.Connection) -> list[str]:
    """Every name with a value, in order of first appearance."""
    return [r[0] for r in conn.execute("SELECT name FROM chunks GROUP BY name ORDER BY MIN(rowid)")]


def chunks(conn: sqlite3.Connection, wanted: list[str], runs: list[str] | None) -> list[Chunk]:
    """The chunks holding ``wanted`` names (of ``runs`` when given), oldest first."""
    if not wanted:
        return []
    sql = (
        "SELECT rid, run, name, src, dims, n, pos, vtype, vals FROM chunks "
        f"WHERE name IN ({', '.join('?' * len(wanted))})"
    )
    params: list[Any] = list(wanted)
    if runs is not None:
        sql += f" AND run IN ({', '.join('?' * len(runs))})"
        params += runs
    out = []
    for rid, run, name, src, dims, n, pos, vtype, vals in conn.execute(sql + " ORDER BY rowid", params):
        shape = tuple(dims.split(DIM_SEP)) if dims else ()
        positions = np.frombuffer(pos, dtype=np.int64).reshape(n, len(shape))
        out.append(Chunk(rid, run, name, src, shape, positions, _unpack(vtype, vals), vtype))
    return out
