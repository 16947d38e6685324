"""Running replay jobs: an executor interface, and the local process pool.

A job is a command line, a working directory and an environment; the executor
runs many of them and reports each result as it finishes. ``LocalExecutor``
runs them on this machine, ``workers`` at a time; a distributed engine plugs
in by implementing the same two methods (``ray_executor.RayExecutor`` does, for
a Ray cluster).

Two things make local jobs cheap (issue 18):

- **warm workers**: a task that names the run's top-level imports (``warm``) is
  forked from a fork server (``runtime/launch.py --serve``) that imported them
  once, instead of starting Python and ``import torch`` per job. One server per
  (imports, thread share); it dies with this process.
- **threads × workers ≤ cores**: a job runs with its run's thread counts
  (OpenMP, MKL, OpenBLAS, torch — fewer would change a sum's last bit, see
  ``runtime.launch.thread_env``), and takes that many cores while it runs: jobs
  start only while their threads fit the cores, so two torch jobs never fight
  over every core each — parallel replay is never slower than serial.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..runtime.launch import THREAD_VARS, TORCH_THREADS, cores, job_threads
from .isolation import LAUNCHER


@dataclass(frozen=True)
class Task:
    key: int
    argv: list[str]
    cwd: str
    env: dict[str, str]
    #: GPUs the job needs (the run used CUDA): a cluster schedules it where they are.
    gpus: int = 0
    #: the run's top-level library imports: a local executor forks the job from a server
    #: that imported them once (empty: a fresh interpreter per job)
    warm: tuple[str, ...] = ()
    #: the launcher's JSON (the argument a warm child gets instead of ``argv``)
    launch: str = ""


@dataclass(frozen=True)
class Outcome:
    key: int
    returncode: int
    seconds: float
    stderr: str


class Executor(Protocol):
    #: True when jobs read checkpoint payloads from this clone's objects dir, so the
    #: caller brings them down from ``flor.store`` first; an executor whose workers
    #: fetch them from the store themselves (no ``.git`` there) says False.
    local_payloads: bool

    def run(self, tasks: list[Task]) -> Iterator[Outcome]:
        """Run every task; yield each outcome as it completes (any order)."""
        ...

    def cancel(self) -> None:
        """Stop what is running; unfinished tasks report failure."""
        ...


class Cores:
    """Cores handed to running jobs: a job starts only when its threads fit in what is free.

    A job asking for more than there are takes them all (it runs alone), so nothing waits forever.
    """

    def __init__(self, total: int) -> None:
        self.free = self.total = max(1, total)
        self._cond = threading.Condition()

    def take(self, n: int) -> int:
        n = max(1, min(n, self.total))
        with self._cond:
            self._cond.wait_for(lambda: self.free >= n)
            self.free -= n
        return n

    def give(self, n: int) -> None:
        with self._cond:
            self.free += n
            self._cond.notify_all()


class LocalExecutor:
    local_payloads = True

    def __init__(self, workers: int, warm: bool = True, keep: float | None = None) -> None:
        self.workers = max(1, workers)
        #: fork jobs from warm servers (``FLOR_WARM=0`` turns it off: a fresh interpreter per job)
        self.warm = warm and hasattr(os, "fork") and os.environ.get("FLOR_WARM", "1") != "0"
        #: seconds a warm server outlives this command, idle, for the next replay to fork from
        #: (``FLOR_WARM_KEEP``; 0: it ends with this command)
        self.keep = warm_keep() if keep is None else keep
        self._procs: dict[int, subprocess.Popen[str] | int] = {}
        self._servers: dict[tuple[tuple[str, ...], tuple[str, ...]], ForkServer] = {}
        self._cores = Cores(cores())
        self._lock = threading.Lock()
        self._cancelled = False
        #: seconds each server took to import its modules (the cost model's warm-up)
        self.warmups: list[float] = []

    def _server(self, task: Task) -> ForkServer | None:
        server = self._get_server(task.warm, task.env)
        return server if server.wait_ready() else None

    def _get_server(self, warm: tuple[str, ...], env: dict[str, str]) -> ForkServer:
        """The warm server for these imports and thread settings, started if there is none."""
        key = (warm, _threads(env))
        with self._lock:
            server = self._servers.get(key)
            if server is None:
                path = kept_socket(warm, key[1]) if self.keep > 0 else None
                server = self._servers[key] = ForkServer(warm, env, path, self.keep)
        return server

    def prestart(self, warm: tuple[str, ...], env: dict[str, str]) -> None:
        """Start a warm server now, while the command still plans: importing torch takes about
        as long as everything else a short replay does, so it should not wait for the plan. A
        server no job asks for (the old version imports other libraries) is closed at the end."""
        if self.warm and warm:
            self._get_server(warm, env)

    def _one(self, task: Task) -> Outcome:
        taken = self._cores.take(job_threads(task.env))
        try:
            return self._started(task)
        finally:
            self._cores.give(taken)

    def _started(self, task: Task) -> Outcome:
        t0 = time.perf_counter()
        server = self._server(task) if self.warm and task.warm and task.launch else None
        if server is not None:
            return self._forked(server, task, t0)
        with self._lock:
            if self._cancelled:
                return Outcome(task.key, -1, 0.0, "cancelled")
            proc = subprocess.Popen(
                task.argv, cwd=task.cwd, env=task.env, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
            )
            self._procs[task.key] = proc
        _, err = proc.communicate()
        with self._lock:
            self._procs.pop(task.key, None)
        return Outcome(task.key, proc.returncode, time.perf_counter() - t0, err[-4000:])

    def _forked(self, server: ForkServer, task: Task, t0: float) -> Outcome:
        stderr = Path(task.launch).with_name(".git-flor-stderr")
        with self._lock:
            if self._cancelled:
                return Outcome(task.key, -1, 0.0, "cancelled")
            pid = server.start(task, str(stderr))
            if pid > 0:
                self._procs[task.key] = pid
        rc = server.result(task.key) if pid >= 0 else -1
        with self._lock:
            self._procs.pop(task.key, None)
        try:
            err = stderr.read_text(errors="replace")
        except OSError:
            err = "" if pid > 0 else "the warm worker is gone"
        return Outcome(task.key, rc, time.perf_counter() - t0, err[-4000:])

    def run(self, tasks: list[Task]) -> Iterator[Outcome]:
        pool = ThreadPoolExecutor(max_workers=self.workers)
        try:
            pending: set[Future[Outcome]] = {pool.submit(self._one, t) for t in tasks}
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    yield fut.result()
        except BaseException:  # Ctrl-C, or the caller stopped early: stop the children now
            self.cancel()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            self.close()

    def close(self) -> None:
        """Stop the warm servers (they exit once their last child is gone)."""
        with self._lock:
            servers, self._servers = list(self._servers.values()), {}
        for server in servers:
            if server.warmup is not None:
                self.warmups.append(server.warmup)
            server.close()

    def cancel(self) -> None:
        """Stop every child and wait until each is gone (Ctrl-C must not leave replays running).

        SIGTERM to each child's process group, then up to ``GRACE`` seconds for it to
        exit, then SIGKILL: the command returns only when its children are reaped.
        """
        with self._lock:
            self._cancelled = True
            procs = list(self._procs.values())
            servers = list(self._servers.values())
        for proc in procs:
            _signal(proc, signal.SIGTERM)
        deadline = time.monotonic() + GRACE
        for proc in procs:
            if isinstance(proc, int):
                continue
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal(proc, signal.SIGKILL)
                proc.wait()
        for server in servers:
            if not server.wait_children(max(0.0, deadline - time.monotonic())):
                for pid in server.running():
                    _signal(pid, signal.SIGKILL)
                server.wait_children(GRACE)
            server.close()


class ForkServer:
    """One warm worker: ``launch.py --serve MODULES`` and the thread that reads its reports.

    Started with the first task's environment (its run's thread settings): the libraries
    read them when the server imports them, so servers are keyed by those settings.

    With a socket ``path`` the worker is one that outlives the command (``launch.py
    --serve-socket``, see :func:`kept_socket`): an earlier command's is used when it answers
    there, else one is started; the protocol is the same, over the socket.
    """

    def __init__(self, modules: tuple[str, ...], env: dict[str, str], path: str | None = None,
                 keep: float = 0.0) -> None:
        self.proc: subprocess.Popen[str] | None = None
        self._conn: socket.socket | None = None
        self.warmup: float | None = None
        self._ready = threading.Event()
        self._cond = threading.Condition()
        self._pids: dict[str, int] = {}
        self._rcs: dict[str, int] = {}
        self._write = threading.Lock()
        if path is None:
            self.proc = subprocess.Popen(
                [sys.executable, str(LAUNCHER), "--serve", *modules], env=env, stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True, cwd="/",
            )
        else:
            self._conn = _connect(path)
            if self._conn is not None:
                self.warmup = 0.0  # an earlier command's worker: warm already
        self._reader = threading.Thread(target=self._read, args=(modules, env, path, keep),
                                        name="git-flor-warm-worker", daemon=True)
        self._reader.start()

    def _lines(self, modules: tuple[str, ...], env: dict[str, str], path: str | None, keep: float) -> Iterator[str]:
        """The server's report lines: its stdout, or (kept) its socket, starting it if need be."""
        if path is None:
            assert self.proc is not None and self.proc.stdout is not None
            yield from self.proc.stdout
            return
        if self._conn is None:
            starter = subprocess.run(
                [sys.executable, str(LAUNCHER), "--serve-socket", path, str(keep), *modules], env=env,
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                start_new_session=True, cwd="/", check=False,
            )  # (returns once the server reports: it goes on in the background, detached)
            first = (starter.stdout.split() or [""])
            self._conn = _connect(path)
            if self._conn is None:
                return
            if first[0] == "ready" and len(first) > 1:
                self.warmup = float(first[1])
            else:
                self.warmup = 0.0  # another command's server took the socket first
        conn = self._conn
        with conn.makefile("r") as fh:
            yield "ready -\n"
            yield from fh

    def _read(self, modules: tuple[str, ...], env: dict[str, str], path: str | None, keep: float) -> None:
        for line in self._lines(modules, env, path, keep):
            kind, *rest = line.split() or [""]
            if kind not in ("ready", "start", "exit") or len(rest) != (1 if kind == "ready" else 2):
                continue
            if kind == "ready":
                if rest[0] != "-":
                    self.warmup = float(rest[0])
                self._ready.set()
                continue
            with self._cond:
                if kind == "start":
                    self._pids[rest[0]] = int(rest[1])
                elif kind == "exit":
                    self._rcs[rest[0]] = int(rest[1])
                    self._pids.pop(rest[0], None)
                self._cond.notify_all()
        self._ready.set()  # gone before (or after) it was ready: nothing more will come
        with self._cond:
            self._cond.notify_all()

    def wait_ready(self) -> bool:
        self._ready.wait()
        if self.warmup is None or not self._reader.is_alive():
            return False
        return self._conn is not None or (self.proc is not None and self.proc.poll() is None)

    def start(self, task: Task, stderr: str) -> int:
        """Fork ``task``; its pid (its process group too), or -1 when the server is gone."""
        request = {"key": task.key, "launch": task.launch, "cwd": task.cwd, "env": task.env, "stderr": stderr}
        key = str(task.key)
        try:
            with self._write:
                if self._conn is not None:
                    self._conn.sendall((json.dumps(request) + "\n").encode())
                else:
                    assert self.proc is not None and self.proc.stdin is not None
                    self.proc.stdin.write(json.dumps(request) + "\n")
                    self.proc.stdin.flush()
        except (OSError, ValueError):
            return -1
        with self._cond:
            self._cond.wait_for(lambda: key in self._pids or key in self._rcs or not self._reader.is_alive())
            return self._pids.get(key, -1 if key not in self._rcs else 0)

    def result(self, key: int) -> int:
        """Wait for job ``key`` to end; its exit code (-1 when the server died under it)."""
        k = str(key)
        with self._cond:
            self._cond.wait_for(lambda: k in self._rcs or not self._reader.is_alive())
            return self._rcs.get(k, -1)

    def running(self) -> list[int]:
        with self._cond:
            return list(self._pids.values())

    def wait_children(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: not self._pids or not self._reader.is_alive(), timeout)

    def close(self) -> None:
        """End of work: a kept server goes idle (and ends after its time); another exits when its
        last child has, and is reaped here."""
        if self._conn is not None:
            try:
                self._conn.close()
            except OSError:
                pass
            return
        if self.proc is None:
            return
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=GRACE * 2)
        except subprocess.TimeoutExpired:
            _signal(self.proc, signal.SIGKILL)
            self.proc.wait()


def warm_keep() -> float:
    """``FLOR_WARM_KEEP``: seconds a warm worker waits, idle, for the next replay (default 120)."""
    try:
        return max(0.0, float(os.environ.get("FLOR_WARM_KEEP", DEFAULT_KEEP)))
    except ValueError:
        return DEFAULT_KEEP


def kept_socket(modules: tuple[str, ...], threads: tuple[str, ...]) -> str | None:
    """Where a kept warm worker for these imports and thread settings listens (None: nowhere safe).

    Keyed by everything its imports depend on — this interpreter, the modules and the files
    they load from (an upgraded torch gets a new worker), the thread settings, ``PYTHONPATH``,
    git-flor's own launcher — in a folder only this user can enter.
    """
    import hashlib  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    parts = [sys.executable, os.environ.get("PYTHONPATH", ""), *modules, *threads]
    for origin in (str(LAUNCHER), *(_origin(m) for m in modules if "." not in m)):
        try:
            parts.append(f"{origin}:{os.stat(origin).st_mtime_ns}")
        except OSError:
            parts.append(f"{origin}:?")
    folder = Path(tempfile.gettempdir()) / f"git-flor-warm-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        st = folder.stat()
        if st.st_uid != os.getuid() or st.st_mode & 0o077:
            return None  # someone else's folder: no socket there
    except OSError:
        return None
    return str(folder / (hashlib.sha256("\0".join(parts).encode()).hexdigest()[:24] + ".sock"))


def _threads(env: dict[str, str]) -> tuple[str, ...]:
    """The thread settings a warm server is keyed by (its libraries read them at import)."""
    return tuple(env.get(v, "") for v in (*THREAD_VARS, TORCH_THREADS))


def _origin(module: str) -> str:
    """The file a top-level module loads from (its name when it has none to find)."""
    import importlib.util  # noqa: PLC0415

    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return module
    return spec.origin if spec is not None and spec.origin else module


def kept_alive(warm: tuple[str, ...], env: dict[str, str]) -> bool:
    """Whether a kept warm worker for these imports and thread settings is waiting now (the
    estimate then has no warm-up to count)."""
    if not warm or warm_keep() <= 0:
        return False
    path = kept_socket(warm, _threads(env))
    conn = _connect(path) if path else None
    if conn is None:
        return False
    conn.close()
    return True


def _connect(path: str) -> socket.socket | None:
    """A connection to the kept worker at ``path``, or None (none there; a stale socket is removed)."""
    if not os.path.exists(path):
        return None
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
        return conn
    except ConnectionRefusedError:
        conn.close()
        try:
            os.unlink(path)  # its server is gone
        except OSError:
            pass
        return None
    except OSError:
        conn.close()
        return None


#: Seconds a kept warm worker waits for the next replay (``FLOR_WARM_KEEP``).
DEFAULT_KEEP = 120.0

#: Seconds a cancelled child has to exit after SIGTERM before it is killed.
GRACE = 5.0


def _signal(proc: subprocess.Popen[str] | int, sig: int) -> None:
    try:
        os.killpg(proc if isinstance(proc, int) else proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


