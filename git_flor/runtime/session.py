"""One training run, live: the in-memory record buffer, the journal flusher, the final write.

The hot path (``flor.log``) only appends a tuple to ``records``. New records
become journal lines at least once a second (a daemon thread) and at the end of
every outer-loop iteration (the training thread, which avoids handing the GIL
back and forth), so a killed process loses at most a second of records. At exit
the run is written to git once; its ``logs.jsonl`` is the record text the journal
was given, kept as it was encoded, so each record is encoded exactly once and the
journal is never read back.
"""

from __future__ import annotations

import atexit
import os
import pickle
import platform
import socket
import sys
import threading
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any, NoReturn

from ..storage.checkpoints import store_for
from ..storage.journal import Journal, event_line, release
from ..storage.records import Frame, Record, RunData, encode_lines, warn
from .checkpoint import Checkpointer
from .kwargs import unused_kwargs
from .launch import recorded_threads
from .outputs import Outputs, absolute_dirs, watch_torch
from .packages import imported_versions
from .replay_mode import Replayer
from .sandbox import installed_sandbox
from .serial import PICKLE


class Run:
    """State of the current run. ``ctx`` is the current loop position, shared by reference."""

    def __init__(self, start: float, argv: list[str]) -> None:
        self.id = uuid.uuid4().hex[:12]
        self.pid = os.getpid()
        #: the global RNGs where the script imported git-flor (set by the API for a process's first run)
        self.start_rng: dict[str, Any] | None = None
        self.records: list[Record] = []
        self.ctx: tuple[Frame, ...] = ()
        self.loops: list[dict[str, Any]] = []
        self.meta: dict[str, Any] = {
            "id": self.id,
            "start": start,
            "argv": list(argv),
            "args": {},
            "checkpointing": {},
            "status": "running",
            "python": platform.python_version(),
            "platform": platform.platform(terse=True),
            "host": socket.gethostname(),
            "pid": self.pid,
            "threads": recorded_threads(),  # a replay uses them: a sum's last bit depends on them
        }
        self.echo = os.environ.get("FLOR_QUIET", "") in ("", "0")
        self._events: deque[str] = deque()
        self._flushed = 0
        self._journal_complete = True  # every journal write so far succeeded (warn once when not)
        self._logs: list[str] = []  # logs.jsonl text so far, one piece per flush
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = False
        self._journal: Journal | None = None
        self._repo: Any = None
        self._finished = False
        self.checkpointer: Checkpointer | None = None
        self.objects: dict[str, Any] = {}  # registered with flor.checkpointing
        self.recorded_args: dict[str, Any] | None = None
        self.replayer: Replayer | None = None
        self.sandbox: Any = None
        #: record mode: the files this run writes (replay keeps them its own, see .outputs)
        self.outputs: Outputs | None = None
        #: replay mode's filter of what to record (None: record everything)
        self.keep: Any = None
        #: RNG states at the end of each nested loop of the current outer iteration
        self.nested_rng: list[Any] = []
        #: seconds the current outer iteration has spent in nested loops so far (loops.json ``inner``)
        self.inner_seconds = 0.0
        #: the flat number of the outer iteration running (entry offset + index), None outside it
        self.outer_g: int | None = None
        #: the ``--kwargs`` pairs given on the command line (checked against the declared args)
        self.kwargs: dict[str, str] = {}
        self._warned: set[str] = set()

    # -- beginning -------------------------------------------------------------------------

    def attach(self) -> None:
        """Bind to the enclosing repository: snapshot, journal, flusher, exit hooks.

        Outside a repository the run still works but records nowhere, and says so
        loudly once (a silent no-op would be a lost experiment).
        """
        from ..errors import NotARepository
        from ..storage import repo as repo_mod
        from ..storage.journal import JOURNAL_DIR, keep_alive, recover_orphans
        from ..storage.snapshot import snapshot_worktree

        spec = os.environ.get("FLOR_REPLAY")
        if spec:
            self._attach_replay(spec)
            return
        try:
            repo = repo_mod.open_repo()
        except NotARepository as exc:
            warn(f"{exc} — this run is NOT recorded")
            return
        flor = repo_mod.flor_dir(repo)
        try:
            recover_orphans(repo, flor / JOURNAL_DIR)
        except Exception as exc:  # noqa: BLE001 — someone else's crash must not stop this run
            warn(f"could not recover crashed runs ({type(exc).__name__}: {exc}); carrying on")
        root = repo_mod.workdir(repo)
        script = _relative_script(self.meta["argv"], root)
        snap = snapshot_worktree(repo, (script,) if not script.startswith(("<", "/", "..")) else ())
        self.meta.update(
            clone=repo_mod.clone_id(repo),
            commit=str(snap.head) if snap.head is not None else None,
            branch=snap.branch,
            dirty=snap.dirty,
            tree=str(snap.tree),
            script=script,
            cwd=_relative(Path.cwd(), root) or ".",
            launch=_launch_form(),
        )
        self._repo = repo
        store = store_for(repo_mod.common_dir(repo))
        if self.start_rng is not None:  # (see api._start_rng; kept by gc like a checkpoint)
            self.meta["rng_start"] = store.put(pickle.dumps(self.start_rng, protocol=PICKLE))[0]
        self.outputs = Outputs(self._position, str(root), (str(repo.path), str(repo_mod.common_dir(repo))),
                               keep=lambda name, data: self._keep_prior(store, name, data))
        self.outputs.install()
        self.checkpointer = Checkpointer(store, self.event)
        self._journal = Journal(flor / JOURNAL_DIR, self.id, self.meta)
        try:
            keep_alive(repo, self.id, self.meta["tree"])
        except Exception as exc:  # noqa: BLE001 — only gc protection is lost, not the run
            warn(f"could not protect this run's snapshot from `git gc` ({exc})")
        threading.Thread(target=self._flusher, name="git-flor-journal", daemon=True).start()
        atexit.register(self.finish)
        _chain_excepthook(self)

    def _attach_replay(self, path: str) -> None:
        """Replay mode: no repository, no journal; results to the spec's file (see .replay_mode)."""
        from .replay_mode import ReplaySpec

        spec = ReplaySpec.load(path)
        self.replayer = Replayer(spec)
        self.keep = self.replayer.keep
        self.recorded_args = spec.args
        self.sandbox = installed_sandbox(spec.user_root, spec.scratch_root)
        self.meta.update(replay_of=spec.run, mode=spec.mode, epochs=spec.epochs)
        atexit.register(self.finish)
        _chain_excepthook(self)

    def _keep_prior(self, store: Any, name: str, data: bytes) -> str:
        """A file as the run found it, before overwriting it (see .outputs): stored, and journalled
        so that a killed run keeps it and ``git flor gc`` sees it while the run lives."""
        sha = store.put(data)[0]
        self.event("prior", path=name, sha=sha)
        return sha

    def event(self, kind: str, **fields: Any) -> None:
        """Append an event line to the journal (thread-safe: a deque)."""
        self._events.append(event_line(kind, **fields))

    # -- recording -------------------------------------------------------------------------

    def set_arg(self, name: str, value: Any) -> None:
        self.meta["args"][name] = value
        self.event("arg", name=name, value=value)

    def warn_once(self, key: str, message: str) -> None:
        """Warn about a recording problem once per ``key``; the run records that it had warnings."""
        if key in self._warned:
            return
        self._warned.add(key)
        warn(message)
        self.set_meta(warnings=[*self.meta.get("warnings", []), message])

    def usage_error(self, message: str) -> NoReturn:
        """A bad command line (``--kwargs``): one line, exit 2 like argparse, and no run recorded."""
        print(f"git-flor: error: {message}", file=sys.stderr)
        self.discard()
        raise SystemExit(2)

    def discard(self) -> None:
        """Forget this run: nothing reaches git (it never started training)."""
        self._finished = True
        self._stop = True
        self._wake.set()
        if self._journal is not None:
            with self._flush_lock:
                if self._repo is not None:
                    release(self._repo, self.id)
                self._journal.remove()
                self._journal = None

    def set_meta(self, **fields: Any) -> None:
        self.meta.update(fields)
        self.event("meta", fields=fields)

    def _position(self) -> int:
        """The outer-loop position of a file access: -1 before the loop, its flat iteration
        number in it, after it the number of iterations entered so far (between two entries of
        the outer loop: the first iteration number of the next)."""
        if self.outer_g is not None:
            return self.outer_g
        entered = [lp for lp in self.loops if "entry" in lp and lp["end"] is not None]
        return _entered(entered[-1]) if entered else -1

    def loop_begin(self, name: str) -> int:
        """A top-level ``flor.loop`` begins. An entry of the outer loop (the first top-level loop's
        name; a second training phase enters it again) gets its entry number and the flat number
        of its first iteration: checkpoints, fingerprints and positions are keyed by those."""
        if self.outputs is not None:
            watch_torch(self.outputs)  # torch imported after the run attached
        seq = len(self.loops)
        loop: dict[str, Any] = {"name": name, "start": time.time(), "iters": [], "end": None}
        if not self.loops or self.loops[0]["name"] == name:
            before = [lp for lp in self.loops if "entry" in lp]
            loop.update(entry=len(before), offset=_entered(before[-1]) if before else 0)
        self.loops.append(loop)  # type: ignore[arg-type]
        self.event("loop", seq=seq, name=name, start=loop["start"],
                   **{k: loop[k] for k in ("entry", "offset") if k in loop})
        return seq

    def iteration_done(self, seq: int, dt: float, inner: float | None = None) -> None:
        """Iteration of loop ``seq`` done in ``dt`` seconds, ``inner`` of them in nested loops."""
        self.loops[seq]["iters"].append(dt)
        if inner is None:
            self.event("iter", seq=seq, dt=dt)
        else:
            self.loops[seq].setdefault("inner", []).append(inner)
            self.event("iter", seq=seq, dt=dt, inner=inner)
        # Push the journal here, on the training thread: waking the flusher instead
        # would hand the GIL over and back, which stalls training more than encoding.
        self.flush()

    def loop_broke(self, seq: int, dt: float) -> None:
        """The body left outer loop ``seq`` part-way through an iteration (``break``, an exception).

        That iteration is not in ``iters`` (it never finished, and no checkpoint holds its
        end); ``broke`` holds its seconds so replay knows the loop was entered once more.
        """
        self.loops[seq]["broke"] = dt
        self.event("loopbreak", seq=seq, dt=dt)

    def loop_end(self, seq: int) -> None:
        self.loops[seq]["end"] = end = time.time()
        self.event("loopend", seq=seq, end=end)

    # -- journal ---------------------------------------------------------------------------

    def _flusher(self) -> None:
        while not self._stop:
            self._wake.wait(1.0)
            self._wake.clear()
            self.flush()

    def flush(self) -> None:
        with self._flush_lock:
            self._append_pending()

    def _append_pending(self) -> None:
        """Append records and events not yet in the journal (caller holds the flush lock)."""
        journal = self._journal
        if journal is None:
            return
        n = len(self.records)
        records = encode_lines(self.records[self._flushed : n])
        self._logs.append(records)  # the run's logs.jsonl, encoded once, kept whatever the disk says
        events = [self._events.popleft() for _ in range(len(self._events))]
        try:
            journal.write(records + "".join([e + "\n" for e in events]))
        except OSError as exc:
            if self._journal_complete:
                warn(f"cannot write the crash journal ({exc}); records are kept in memory")
            self._journal_complete = False
        self._flushed = n

    # -- the end ---------------------------------------------------------------------------

    def fail(self, exc_type: type[BaseException], exc: BaseException) -> None:
        status = "interrupted" if issubclass(exc_type, KeyboardInterrupt) else "failed"
        self.meta["status"] = status
        self.meta["error"] = f"{exc_type.__name__}: {exc}"[:500]

    def finish(self) -> str | None:
        """Write the run to git once; return the shadow commit (None when not recorded)."""
        if self._finished or os.getpid() != self.pid:
            return None  # already written, or a forked child inheriting our state
        self._finished = True
        self._stop = True
        self._wake.set()
        end = time.time()
        if self.meta["status"] == "running":
            self.meta["status"] = "ok"
        self.meta["end"] = end
        self.meta["duration"] = end - self.meta["start"]
        self.meta["packages"] = imported_versions()  # the commit's environment (post-commit hook)
        unused = unused_kwargs(self.kwargs, self.meta["args"])
        if unused and self.replayer is None:
            self.warn_once("kwargs", unused)
        torch = sys.modules.get("torch")
        if torch is not None and hasattr(torch, "get_num_threads"):
            self.meta["threads"]["torch"] = torch.get_num_threads()
        if _used_cuda():
            self.meta["cuda"] = True  # its replay needs a GPU (a Ray cluster schedules it on one)
        for seg in self.loops:
            if seg["end"] is None:
                seg["end"] = end
        if self.replayer is not None:
            self.replayer.write(self.records, self.meta)
            return None
        if self._repo is None or self._journal is None:
            return None
        from ..storage.shadow import commit_run

        if self.outputs is not None:
            # (less a margin: file times come from the kernel's coarse clock, a tick behind time.time())
            self.outputs.scan_dirs([self.outputs.root, *absolute_dirs(self.meta["args"], self.outputs.root)],
                                   self.meta["start"] - 0.05)
            self.outputs.active = False  # a later run of this process (flor.commit()) has its own
            self.meta["outputs"] = self.outputs.summary()

        checkpoints = self.checkpointer.finish() if self.checkpointer is not None else {}
        for seg in self.loops:
            if "entry" in seg:  # flat iteration numbers: this entry's are offset .. offset + entered - 1
                seg["ckpts"] = sorted(i for i, e in checkpoints.items()
                                      if e["loop"] == seg["name"] and seg["offset"] <= i < _entered(seg))
        with self._flush_lock:
            self._append_pending()
            ck = self.checkpointer
            data = RunData(meta=dict(self.meta), records=self.records, loops=self.loops,
                           checkpoints=checkpoints,
                           fingerprints=dict(ck.fingerprints) if ck is not None else {},
                           nested_fps=dict(ck.nested) if ck is not None else {},
                           logs="".join(self._logs).encode())
            try:
                shadow = commit_run(self._repo, data)
            except Exception as exc:  # keep the journal: the next command recovers the run
                warn(f"could not write run {self.id} to git ({exc}); it will be recovered")
                return None
            release(self._repo, self.id)
            self._journal.remove()
            self._journal = None
        _link_if_committed(self._repo, data, shadow)
        return str(shadow)


def _entered(loop: dict[str, Any]) -> int:
    """The flat number after an outer-loop entry: its offset plus the iterations it entered
    (finished ones, and one a ``break`` left part-way)."""
    return int(loop.get("offset", 0)) + len(loop["iters"]) + ("broke" in loop)


def _link_if_committed(repo: Any, data: RunData, shadow: Any) -> None:
    """A run on uncommitted edits that were committed while it ran: link it now (the hook could not)."""
    if not data.meta.get("dirty"):
        return
    try:
        from ..storage.hook_notes import link_finished_run

        link_finished_run(repo, data, shadow)
    except Exception as exc:  # noqa: BLE001 — the run is safely in git; only the link is missing
        warn(f"run {data.run_id} is recorded, but linking it to the commit of its code failed ({exc})")


def _used_cuda() -> bool:
    """Whether the script initialised CUDA (never imports torch: only a script that did can have)."""
    torch = sys.modules.get("torch")
    try:
        return bool(torch is not None and torch.cuda.is_initialized())
    except Exception:  # a torch build without CUDA support, or a half-imported module
        return False


def _relative(path: Path, root: Path) -> str | None:
    try:
        return path.resolve().relative_to(root).as_posix()
    except ValueError:
        return None


def _relative_script(argv: list[str], root: Path) -> str:
    """The script as a repository path (what replay will run), else what argv[0] said."""
    main = sys.modules.get("__main__")
    candidate = getattr(main, "__file__", None) or (argv[0] if argv else "")
    if candidate and os.path.exists(candidate):
        rel = _relative(Path(candidate), root)
        if rel is not None:
            return rel
    return candidate or "<interactive>"


def _launch_form() -> dict[str, str]:
    """How the script was started, so replay starts the snapshot's copy the same way.

    ``python -m pkg.train`` runs a module (relative imports, ``sys.path[0]`` = cwd);
    ``python train.py`` / ``python /abs/train.py`` a path. Replay resolves either
    inside its scratch copy, never against today's working tree.
    """
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    name = getattr(spec, "name", None)
    if name and name != "__main__":
        return {"kind": "module", "module": name}
    return {"kind": "path"}


def _chain_excepthook(run: Run) -> None:
    previous = sys.excepthook

    def hook(exc_type: type[BaseException], exc: BaseException, tb: Any) -> None:
        run.fail(exc_type, exc)
        previous(exc_type, exc, tb)

    sys.excepthook = hook
