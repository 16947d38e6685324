"""Running replay jobs: an executor interface, and the local process pool.

A job is a command line, a working directory and an environment; the executor
runs many of them and reports each result as it finishes. ``LocalExecutor``
runs them as subprocesses on this machine, ``workers`` at a time; a
distributed engine plugs in by implementing the same two methods
(``ray_executor.RayExecutor`` does, for a Ray cluster).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Task:
    key: int
    argv: list[str]
    cwd: str
    env: dict[str, str]
    #: GPUs the job needs (the run used CUDA): a cluster schedules it where they are.
    gpus: int = 0


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


class LocalExecutor:
    local_payloads = True

    def __init__(self, workers: int) -> None:
        self.workers = max(1, workers)
        self._procs: dict[int, subprocess.Popen[str]] = {}
        self._lock = threading.Lock()
        self._cancelled = False

    def _one(self, task: Task) -> Outcome:
        t0 = time.perf_counter()
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

    def cancel(self) -> None:
        """Stop every child and wait until each is gone (Ctrl-C must not leave replays running).

        SIGTERM to each child's process group, then up to ``GRACE`` seconds for it to
        exit, then SIGKILL: the command returns only when its children are reaped.
        """
        with self._lock:
            self._cancelled = True
            procs = list(self._procs.values())
        for proc in procs:
            _signal(proc, signal.SIGTERM)
        deadline = time.monotonic() + GRACE
        for proc in procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal(proc, signal.SIGKILL)
                proc.wait()


#: Seconds a cancelled child has to exit after SIGTERM before it is killed.
GRACE = 5.0


def _signal(proc: subprocess.Popen[str], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


