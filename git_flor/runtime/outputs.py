"""Which files a run wrote, and when it read them back: recorded so replay can keep them its own.

A replay must never read the user's *current* copy of a file the original run
wrote (a ``best.npy`` saved during training and reloaded after the loop — the
copy on disk today may be another run's), and it must keep every such file out
of the user's reach, including absolute paths outside the repository. Both need
to know, at record time, what the run wrote. An audit hook (PEP 578) sees every
Python-level open, ``os.open``, rename and ``sqlite3.connect``; ``torch.save``
and ``torch.jit.save`` open their files in C++ and are noted by thin wrappers;
other C writers (h5py, a C extension's ``fopen``) are caught at the end by
scanning the repository (within a time budget) and the absolute directories the
run was given as ``flor.arg`` values for files modified since it started; their
position is unknown (``UNKNOWN``), which replay treats as "before anything".

A file that already existed when the run first wrote it (the ``ckpt.npz`` a previous run
left, which this one resumed from and then overwrites; a log it appends to) is kept as the
run found it: its bytes go to the payload store before the write (``prior``, up to
:data:`PRIOR_LIMIT` per file and :data:`PRIOR_BUDGET` per run), so a replay reads what the
run read, neither today's copy nor nothing. A file the run's first write creates counts as
created (``w``) however it was opened.

Positions are outer-loop positions: ``-1`` before the outer loop, ``i`` during (flat)
iteration ``i``, ``n`` (the number of iterations) after it. The summary keeps,
per path, the sequence of ``[position, kind]`` events, a run of repeated writes
folded to its first and latest: ``w`` (created/truncated), ``a`` (appended/updated in place), ``r``
(read after this run had written it).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

#: At most this many distinct paths are kept (a run writing a file per step is summarised
#: by its first paths; replay treats a truncated summary as "wrote anything": see ``complete``).
MAX_PATHS = 2000
#: Events kept per path after folding repeats.
MAX_EVENTS = 400
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
_SKIP_PREFIXES = ("/proc/", "/dev/", "/sys/")
_PYCACHE = os.sep + "__pycache__" + os.sep
#: The position of a write only the final scan saw.
UNKNOWN = -2
#: Seconds the final scan of the repository may take (a huge data folder is cut short).
SCAN_BUDGET = 1.0
#: A file the run found and overwrites is kept as it was up to this size ...
PRIOR_LIMIT = 64 * 1024 * 1024
#: ... and up to this much in all per run (beyond: replay hides the file, as one the run created).
PRIOR_BUDGET = 256 * 1024 * 1024


class Outputs:
    """The record-time observer of a run's file writes (one per process; it follows the live run)."""

    def __init__(
        self, position: Callable[[], int], root: str, ignore: tuple[str, ...],
        keep: Callable[[str, bytes], str] | None = None,
    ) -> None:
        self.position = position
        self.root = os.path.realpath(root)
        self.ignore = tuple(os.path.realpath(p) + os.sep for p in ignore)
        self.events: dict[str, list[list[Any]]] = {}
        self.complete = True
        self.active = True
        #: stores a file's bytes (its name as in the summary), returns their payload id
        self.keep = keep
        #: path → payload id of the file as the run found it, before its first write
        self.prior: dict[str, str] = {}
        self._prior_bytes = 0

    # -- observing -------------------------------------------------------------------------

    def install(self) -> None:
        sys.addaudithook(self._audit)  # cannot be removed: ``active`` turns it off
        watch_torch(self)

    def _audit(self, event: str, args: tuple[Any, ...]) -> None:
        if not self.active:
            return
        if event == "open":
            path, mode, flags = args
            if not isinstance(path, (str, bytes, os.PathLike)):
                return  # a file descriptor
            if mode is not None:
                m = str(mode)
                kind = "w" if ("w" in m or "x" in m) else "a" if ("a" in m or "+" in m) else "r"
            elif isinstance(flags, int):
                writing = bool(flags & _WRITE_FLAGS)
                kind = ("w" if flags & os.O_TRUNC else "a") if writing else "r"
            else:
                return
            self.note(path, kind)
        elif event == "sqlite3.connect":
            if args and isinstance(args[0], (str, bytes, os.PathLike)) and os.fsdecode(args[0]) != ":memory:":
                self.note(args[0], "a")
        elif event in ("os.rename", "shutil.copyfile", "shutil.move"):
            if len(args) > 1 and isinstance(args[1], (str, bytes, os.PathLike)):
                self.note(args[1], "w")

    def note(self, path: Any, kind: str) -> None:
        """Record one access; reads count only for paths this run has written."""
        try:
            full = os.path.abspath(os.fsdecode(path))
        except (TypeError, ValueError):
            return
        seq = self.events.get(full)
        if seq is None:
            if kind == "r":
                return
            if (full.startswith(_SKIP_PREFIXES) or any(full.startswith(p) for p in self.ignore)
                    or _PYCACHE in full):
                return
            if len(self.events) >= MAX_PATHS:
                self.complete = False
                return
            if not os.path.lexists(full):
                kind = "w"  # the first write creates it: the replay must see its own, whatever the mode
            elif real_inside(full, self.root):
                self._keep_prior(full)
            seq = self.events[full] = []
        pos = self.position()
        if seq and seq[-1][0] == pos and seq[-1][1] == kind:
            return
        if kind != "r" and len(seq) >= 2 and seq[-1][1] == kind and seq[-2][1] == kind:
            seq[-1][0] = pos  # a run of writes keeps its first and its latest position
            return
        if len(seq) >= MAX_EVENTS:
            self.complete = False
            return
        seq.append([pos, kind])

    def _keep_prior(self, full: str) -> None:
        """Keep a file of the repository the run is about to change for the first time, as it is."""
        if self.keep is None:
            return
        try:
            size = os.path.getsize(full)
            if not os.path.isfile(full) or size > PRIOR_LIMIT or self._prior_bytes + size > PRIOR_BUDGET:
                return
            with open(full, "rb") as fh:  # (a read of an untouched path: not an event)
                data = fh.read()
            self.prior[full] = self.keep(self._name(full), data)
            self._prior_bytes += len(data)
        except OSError:
            return

    # -- the summary -----------------------------------------------------------------------

    def scan_dirs(self, dirs: list[str], since: float, budget: float = SCAN_BUDGET) -> None:
        """Files under ``dirs`` modified since ``since`` that no hook saw (C writers), position UNKNOWN.

        Links are not followed and ignored folders (``.git``) skipped; the walk stops
        after ``budget`` seconds (the summary is then marked incomplete).
        """
        import time

        deadline = time.monotonic() + budget
        known = {os.path.realpath(p) for p in self.events}
        for top in dirs:
            stack = [top]
            while stack:
                if time.monotonic() > deadline:
                    self.complete = False
                    return
                try:
                    entries = list(os.scandir(stack.pop()))
                except OSError:
                    continue
                for entry in entries:
                    full = entry.path
                    if entry.name == "__pycache__" or any((full + os.sep).startswith(p) for p in self.ignore):
                        continue
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(full)
                        elif (entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime >= since
                              and os.path.realpath(full) not in known):
                            if len(self.events) >= MAX_PATHS:
                                self.complete = False
                                return
                            self.events[full] = [[UNKNOWN, "w"]]
                    except OSError:
                        continue

    def summary(self) -> dict[str, Any]:
        """``{"complete": bool, "files": {path: events}, "prior": {path: payload}}``: repository
        paths relative, others absolute."""
        files = {self._name(full): seq for full, seq in self.events.items()}
        out: dict[str, Any] = {"complete": self.complete, "files": files}
        if self.prior:
            out["prior"] = {self._name(full): sha for full, sha in self.prior.items()}
        return out

    def _name(self, full: str) -> str:
        real = os.path.realpath(full)
        if real.startswith(self.root + os.sep):
            return os.path.relpath(real, self.root).replace(os.sep, "/")
        return full


def real_inside(path: str, root: str) -> bool:
    """``path``, links resolved, is in the directory ``root`` (itself resolved)."""
    return os.path.realpath(path).startswith(root + os.sep)


def absolute_dirs(args: dict[str, Any], root: str) -> list[str]:
    """``flor.arg`` values naming an existing directory outside the repository (``out_dir``)."""
    real_root = os.path.realpath(root)
    out = []
    for value in args.values():
        if isinstance(value, str) and os.path.isabs(value) and os.path.isdir(value):
            real = os.path.realpath(value)
            if real != real_root and not real.startswith(real_root + os.sep) and real != os.sep:
                out.append(value)
    return out


def watch_torch(outputs: Outputs) -> None:
    """Note the paths given to ``torch.save``/``torch.jit.save`` (they open files in C++)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return
    for owner, attr in ((torch, "save"), (getattr(torch, "jit", None), "save")):
        original = getattr(owner, attr, None) if owner is not None else None
        if original is None or getattr(original, "_git_flor_watch", False):
            continue
        setattr(owner, attr, _watched(original, outputs))


def _watched(original: Callable[..., Any], outputs: Outputs) -> Callable[..., Any]:
    def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(f, (str, bytes, os.PathLike)):
            outputs.note(f, "w")
        return original(obj, f, *args, **kwargs)

    save._git_flor_watch = True  # type: ignore[attr-defined]
    save.__wrapped__ = original  # type: ignore[attr-defined]
    save.__doc__ = original.__doc__
    return save
