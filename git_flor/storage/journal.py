"""The crash journal: a run's records appended to ``$GIT_COMMON_DIR/flor/journal/<id>.jsonl``.

A training process can die at any moment (OOM killer, SIGKILL, a closed
laptop). The runtime appends what it has to this file at least once a second,
holding an exclusive ``flock`` on it for the life of the process. The kernel
drops that lock when the process dies, however it dies, so any later
``git flor`` command or run can tell an orphaned journal from a live one
without pids or timeouts, and turn it into a run with status ``interrupted``.

This module does not import pygit2 at import time: the runtime opens journals
on the training path; only recovery needs the repository.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .checkpoints import Pointer
from .records import REC, RunData, dumps, frames, is_record, warn

if TYPE_CHECKING:
    import pygit2

JOURNAL_DIR = "journal"
#: Journals that could not be turned into runs are moved here (kept for a human), so
#: one damaged journal never stops every later command and training run.
QUARANTINE_DIR = "quarantine"


class Journal:
    """An append-only, flock-held journal file owned by one live run."""

    def __init__(self, directory: Path, run_id: str, header: dict[str, Any]) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{run_id}.jsonl"
        # Lock under a name recovery ignores, then rename into place: a journal
        # is never visible unlocked, so a concurrent recoverer cannot take a
        # live run for a dead one.
        hidden = directory / f".{run_id}.new"
        self._fd = os.open(hidden, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        self.append([dumps({"t": "head", "meta": header})])
        os.rename(hidden, self.path)

    def append(self, lines: list[str]) -> None:
        if lines:
            self.write("\n".join(lines) + "\n")

    def write(self, text: str) -> None:
        """Append ``text``: whole lines, record lines (``encode_lines``) and event lines alike."""
        if text:
            os.write(self._fd, text.encode())

    def remove(self) -> None:
        """Delete the journal, then release the lock: the run is safely in git."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        os.close(self._fd)


def event_line(kind: str, **fields: Any) -> str:
    return dumps({"t": kind, **fields})


def parse(path: Path) -> RunData | None:
    """Rebuild a run from its journal; a torn last line (killed mid-write) is ignored."""
    data: RunData | None = None
    loops: dict[int, dict[str, Any]] = {}
    for raw in path.read_bytes().splitlines():
        try:
            obj = json.loads(raw)
        except ValueError:
            continue
        if type(obj) is not dict:
            continue
        # Events say their kind under "t"; record lines are exactly logs.jsonl lines.
        kind = obj["t"] if "t" in obj else (REC if is_record(obj) else None)
        if kind == "head":
            data = RunData(meta=obj["meta"])
        elif data is None:
            break
        elif kind == REC:
            data.records.append((obj["name"], obj["value"], frames(obj["pos"])))
        elif kind == "arg":
            data.meta.setdefault("args", {})[obj["name"]] = obj["value"]
        elif kind == "loop":
            loops[obj["seq"]] = {"name": obj["name"], "start": obj["start"], "iters": [], "end": None,
                                 **{k: obj[k] for k in ("entry", "offset") if k in obj}}
        elif kind == "iter" and obj["seq"] in loops:
            loops[obj["seq"]]["iters"].append(obj["dt"])
            if "inner" in obj:
                loops[obj["seq"]].setdefault("inner", []).append(obj["inner"])
        elif kind == "loopbreak" and obj["seq"] in loops:
            loops[obj["seq"]]["broke"] = obj["dt"]
        elif kind == "loopend" and obj["seq"] in loops:
            loops[obj["seq"]]["end"] = obj["end"]
        elif kind == "meta":
            data.meta.update(obj["fields"])
        elif kind == "prior":  # a file as the run found it (its replay puts it back); hidden like its own
            outputs = data.meta.setdefault("outputs", {"complete": False, "files": {}})
            outputs.setdefault("prior", {})[obj["path"]] = obj["sha"]
            outputs.setdefault("files", {}).setdefault(obj["path"], [[-2, "w"]])
        elif kind == "fp":
            data.fingerprints.setdefault(obj["i"], obj["fp"])
        elif kind == "nfp" and len(data.nested_fps.setdefault(obj["i"], [])) == obj["k"]:
            data.nested_fps[obj["i"]].append(obj["fp"])
        elif kind == "ckpt":
            data.checkpoints[obj["i"]] = {
                "loop": obj["loop"],
                "unsaved": obj["unsaved"],
                "seconds": obj["seconds"],
                "objects": {n: Pointer.from_json(p) for n, p in obj["objects"].items()},
            }
    if data is not None:
        data.loops = [loops[k] for k in sorted(loops)]
    return data


def keep_alive(repo: pygit2.Repository, run_id: str, tree_hex: str) -> None:
    """Make the snapshot ``tree_hex`` of a live run reachable until the run is in git.

    A parentless commit of the tree under ``refs/flor/live/<run>``: gc keeps what
    refs reach, and the run's shadow commit (which takes over) is written at the end.
    """
    import pygit2

    from .refs import live_ref
    from .repo import signature

    sig = signature(repo)
    commit = repo.create_commit(None, sig, sig, f"git-flor live run {run_id}\n",
                                pygit2.Oid(hex=tree_hex), [])
    repo.references.create(live_ref(run_id), commit, force=True)


def release(repo: pygit2.Repository, run_id: str) -> None:
    """Drop the live ref of ``run_id`` (its run is in git, or its journal quarantined)."""
    from .refs import live_ref

    try:
        ref = repo.references.get(live_ref(run_id))
        if ref is not None:
            ref.delete()
    except Exception:  # noqa: BLE001 — a leftover ref costs only disk until the next recovery
        pass


def recover_orphans(repo: pygit2.Repository, directory: Path) -> list[str]:
    """Commit every journal whose writer is gone as an ``interrupted`` run; return their ids.

    Never raises for a journal's sake: one that cannot be recovered (its snapshot
    pruned, a record git cannot store, a bug) is moved to ``journal/quarantine/``
    with a warning, and the next journal is tried.
    """
    recovered: list[str] = []
    if not directory.is_dir():
        return recovered
    for path in sorted(directory.glob("*.jsonl")):
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its run is alive
            try:
                if os.stat(path).st_ino != os.fstat(fd).st_ino:
                    continue  # another recoverer finished it and it was replaced
            except FileNotFoundError:
                continue
            try:
                run_id = _recover_one(repo, path)
            except Exception as exc:  # noqa: BLE001 — recovery must never take the tool down
                _quarantine(repo, path, exc)
                continue
            if run_id is not None:
                recovered.append(run_id)
            path.unlink()
        finally:
            os.close(fd)
    return recovered


def _recover_one(repo: pygit2.Repository, path: Path) -> str | None:
    """Write the run of one orphaned journal to git; its id, or None if there was nothing new."""
    from .shadow import commit_run, ensure_note, find_run

    data = parse(path)
    if data is None:
        warn(f"discarding unreadable journal {path}")
        return None
    stored = find_run(repo, data.run_id)
    if stored is not None:
        ensure_note(repo, stored)  # the run was written but its writer died before the note
        release(repo, data.run_id)
        return None
    data.meta["status"] = "interrupted"
    end = os.stat(path).st_mtime
    data.meta["end"] = end
    data.meta["duration"] = max(0.0, end - data.meta.get("start", end))
    shadow = commit_run(repo, data)
    release(repo, data.run_id)
    from .hook_notes import link_finished_run

    link_finished_run(repo, data, shadow)  # its edits may have been committed while it ran
    return data.run_id


def _quarantine(repo: pygit2.Repository, path: Path, exc: BaseException) -> None:
    where = path.parent / QUARANTINE_DIR
    try:
        where.mkdir(exist_ok=True)
        target = where / path.name
        os.replace(path, target)
    except OSError:
        target = path
    run_id = path.stem
    release(repo, run_id)
    reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
    warn(f"could not recover crashed run {run_id} ({reason}); its journal is kept at {target} "
         "and the run is left out")


def live_checkpoint_payloads(directory: Path) -> set[str]:
    """Payloads that journals (of live or not yet recovered runs) point at: gc must keep them."""
    shas: set[str] = set()
    if not directory.is_dir():
        return shas
    for path in directory.glob("*.jsonl"):
        try:
            data = parse(path)
        except OSError:
            continue
        if data is not None:
            for entry in data.checkpoints.values():
                shas.update(p.sha256 for p in entry["objects"].values())
            shas.update(((data.meta.get("outputs") or {}).get("prior") or {}).values())
    return shas
