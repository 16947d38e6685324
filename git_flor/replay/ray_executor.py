"""Replay jobs on a Ray cluster: the same child command, on machines that have no ``.git``.

One machine stops being enough when a hindsight question spans hundreds of runs,
and teams already run a cluster engine; Ray is a widely run one, so this is an
``Executor`` on Ray rather than a scheduler of our own. It takes the very tasks
``jobs.execute`` prepares for the local pool — a scratch directory holding the
propagated tree and the job's spec (``FLOR_REPLAY``), a command line, an
environment — and moves what a worker lacks:

- **the tree**: the scratch directory as one gzip'd tar, a Ray object per task,
  unpacked on the worker into a temporary directory; every path of the spec,
  the working directory and the environment that named the driver's scratch is
  rewritten to the worker's (``_rebase``);
- **checkpoint payloads**: the worker downloads the ones the spec names from the
  configured ``flor.store`` (any fsspec URL), sha256-checked, into its
  temporary directory, and the spec's ``store`` points there — never at the
  repository's ``.git/flor/objects``. The driver first uploads any of them the
  store lacks from this clone, so an unpushed run replays too;
- **the records**: after the child exits, the worker returns the files the spec
  names under its scratch (the records file, the progress count) and the
  driver writes them where ``jobs.execute`` reads them, so the write-back to git
  stays on the driver, once per run.

The child is the same ``python script.py`` with the same environment as a local
job, so the sandbox, verification and every other replay rule are the local
ones. Ray retries a task whose worker or node died (``max_retries``); each
attempt unpacks into a fresh directory and only a finished attempt returns
records, and the driver gets one result per task: a retried job is never written
twice. A job that fails in user code is a finished task with a non-zero exit,
reported per run as locally (user errors are not retried). Ctrl-C cancels the
tasks (the worker kills its child's process group) and ``jobs.execute`` keeps
the runs that finished.

Progress: a small actor (no CPU reserved) collects each running task's outer-
iteration count, which the worker reads from its child's progress file; the
driver copies the counts into the driver-side progress files the command's
bars already poll.

``ray`` is imported only here, and only when this executor is used.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..storage.checkpoints import PayloadStore
from .executors import Outcome, Task

INSTALL = "the ray executor needs Ray: pip install ray (or replay with --executor local)"

#: This git-flor's package directory (the driver's and each worker's own).
PACKAGE = Path(__file__).resolve().parents[1]
#: Retries of a task whose worker process or node died (Ray's own, for system failures only).
MAX_RETRIES = 3
#: How often the worker reads its child's progress file and the driver reads the board (s).
POLL = 0.5


def import_ray() -> Any:
    """Ray, or the one-line way to install it (exit 2)."""
    try:
        import ray
    except ImportError:
        raise UsageError(INSTALL) from None
    return ray


class RayExecutor:
    """Runs replay tasks as Ray tasks on the cluster at ``address`` (None: a local Ray started here).

    ``store_url`` is where workers fetch checkpoint payloads (``git config flor.store``);
    None is allowed only for a local Ray, whose workers share this machine: the
    clone's objects dir then serves as the store.
    """

    local_payloads = False

    def __init__(self, address: str | None, store_url: str | None, workers: int) -> None:
        self.ray = import_ray()
        self.address = address
        self.store_url = store_url
        self.workers = max(1, workers)
        self._refs: dict[Any, Task] = {}
        self._cancelled = False
        if address and not store_url:
            raise UsageError(
                "Ray workers have no .git, so they read checkpoints from a store: "
                "git config flor.store <url> (file:// on a shared filesystem, s3://…), then replay again"
            )

    # -- the cluster ----------------------------------------------------------------------

    def connect(self) -> None:
        """Join the cluster (or start a local one for this command); idempotent."""
        ray = self.ray
        if ray.is_initialized():
            return
        kwargs: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False}
        logging.getLogger("ray").setLevel(logging.ERROR)  # Ray's start-up notes are not ours to show
        try:
            if self.address:
                ray.init(address=self.address, **kwargs)
            else:  # "local": a new instance, never one found in /tmp/ray by accident
                ray.init(address="local", num_cpus=self.workers, include_dashboard=False, **kwargs)
        except Exception as exc:  # unreachable, refused (e.g. no auth token), version mismatch
            where = self.address or "a local Ray"
            raise UsageError(f"cannot start or reach {where} ({_first_line(exc)}); check RAY_ADDRESS / "
                             "`git config flor.ray.address`, or replay with --executor local") from None

    def cpus(self) -> int:
        """CPUs of the whole cluster: how many jobs can run at once."""
        self.connect()
        return max(1, int(self.ray.cluster_resources().get("CPU", 1)))

    def close(self) -> None:
        """Leave the cluster, or stop the local Ray this command started (a cluster keeps running)."""
        if self.ray.is_initialized():
            self.ray.shutdown()

    # -- Executor -------------------------------------------------------------------------

    def run(self, tasks: list[Task]) -> Iterator[Outcome]:
        ray = self.ray
        self.connect()
        gpus = ray.cluster_resources().get("GPU", 0)
        board = ray.remote(num_cpus=0)(_Board).remote()
        remote = ray.remote(_work)
        store = self._store()
        url = store.url if store is not None else None
        local: dict[int, dict[str, Path]] = {}  # per task: where each file a worker sends back goes
        progress: dict[int, Path] = {}  # per task: the driver-side file its progress bar polls
        failed: list[Outcome] = []
        try:
            for task in tasks:
                if self._cancelled:
                    break
                if task.gpus > gpus:  # Ray would keep it pending for ever
                    failed.append(Outcome(task.key, -1, 0.0, f"the run used CUDA and the Ray cluster has "
                                                             f"{gpus:g} GPU(s): add a GPU node"))
                    continue
                try:
                    job, tree, returns = ship(task, store)
                except _Refused as exc:
                    failed.append(Outcome(task.key, -1, 0.0, str(exc)))
                    continue
                local[task.key] = returns
                if job["progress"]:
                    progress[task.key] = returns[job["progress"]]
                ref = remote.options(num_cpus=1, num_gpus=task.gpus, max_retries=MAX_RETRIES,
                                     retry_exceptions=False).remote(job, ray.put(tree), board, url)
                self._refs[ref] = task
            yield from failed
            pending = list(self._refs)
            counts = board.counts.remote()
            while pending:
                done, pending = ray.wait(pending, num_returns=len(pending), timeout=POLL)
                counts = _show_progress(ray, board, counts, progress)
                for ref in done:
                    task = self._refs.pop(ref)
                    yield self._outcome(ref, task, local[task.key])
        except BaseException:  # Ctrl-C, or the caller stopped early: stop the tasks now
            self.cancel()
            raise
        finally:
            if ray.is_initialized():
                ray.kill(board)

    def cancel(self) -> None:
        """Cancel every unfinished task: queued ones never start, running ones kill their child."""
        self._cancelled = True
        if not self.ray.is_initialized():
            return
        for ref in list(self._refs):
            try:
                self.ray.cancel(ref, force=False)
            except Exception:  # finished meanwhile, or its worker is gone: nothing to stop
                pass

    # -- helpers --------------------------------------------------------------------------

    def _store(self) -> Any:
        from ..storage.remote_store import Store

        return Store(self.store_url) if self.store_url else None

    def _outcome(self, ref: Any, task: Task, local: dict[str, Path]) -> Outcome:
        ray = self.ray
        t0 = time.perf_counter()
        try:
            res = ray.get(ref)
        except ray.exceptions.TaskCancelledError:
            return Outcome(task.key, -1, 0.0, "cancelled")
        except ray.exceptions.RayTaskError as exc:  # the worker's own code failed (e.g. the store)
            cause = getattr(exc, "cause", None) or exc
            return Outcome(task.key, -1, time.perf_counter() - t0, f"on the Ray worker: {_first_line(cause)}")
        except ray.exceptions.RayError as exc:  # the worker or node died more than MAX_RETRIES times
            return Outcome(task.key, -1, time.perf_counter() - t0,
                           f"lost on the Ray cluster after {MAX_RETRIES} retries: {_first_line(exc)}")
        for rel, data in res["files"].items():
            path = local.get(rel)
            if path is not None:
                path.write_bytes(data)
        return Outcome(task.key, res["returncode"], res["seconds"], res["stderr"])


class _Refused(Exception):
    """A task this executor cannot send (its payload is nowhere, it is not a replay job)."""


def ship(task: Task, store: Any) -> tuple[dict[str, Any], bytes, dict[str, Path]]:
    """What a worker needs for ``task``: the job (small, JSON-able) and the scratch tree's tar;
    and where each file the worker sends back goes here.

    Also makes sure the store has every payload the spec names (uploading from this
    clone those it lacks). With no store (a local Ray), the clone's objects dir is it.
    """
    spec_path = task.env.get("FLOR_REPLAY")
    if not spec_path:
        raise _Refused("not a replay job (no FLOR_REPLAY spec): the ray executor runs replay jobs only")
    spec = json.loads(Path(spec_path).read_text())
    root = spec["scratch_root"]
    objects = Path(spec["store"])  # this clone's payload dir
    shas = sorted(_shas([spec.get("checkpoints", {}), spec.get("loads", [])]))  # what it restores and loads
    if store is not None:
        for sha in shas:
            if not store.has(sha):
                path = PayloadStore(objects).find(sha)
                if path is None:
                    raise _Refused(f"checkpoint payload {sha[:12]} is in neither {store.url} nor this clone: "
                                   "`git flor pull`, or ask the run's author to `git flor push`")
                store.upload(sha, path)
    # The files the worker sends back: every path of the spec under the scratch (the
    # records, the progress count, whatever a later spec adds), each to the same path here.
    returns = {
        os.path.relpath(v, root): Path(v)
        for k, v in spec.items()
        if k != "scratch_root" and isinstance(v, str) and _under(v, root)
    }
    progress = spec.get("progress") or ""
    job = {
        "key": task.key, "root": root, "argv": task.argv, "cwd": task.cwd, "env": task.env,
        "python": sys.executable, "package": str(PACKAGE),
        "spec": os.path.relpath(spec_path, root), "shas": shas,
        "objects": None if store is not None else str(objects),
        "files": sorted(returns), "progress": os.path.relpath(progress, root) if _under(progress, root) else "",
    }
    return job, _tar(Path(root)), returns


def _shas(node: Any) -> set[str]:
    """Every payload id a spec's checkpoints name (any dict with a ``sha256``)."""
    if isinstance(node, dict):
        found = {node["sha256"]} if isinstance(node.get("sha256"), str) else set()
        for value in node.values():
            found |= _shas(value)
        return found
    if isinstance(node, list):
        return set().union(*(_shas(v) for v in node)) if node else set()
    return set()


def _tar(root: Path) -> bytes:
    """The scratch tree, links kept as links (into the user's tree: see docs/ray.md)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
        tar.add(str(root), arcname=".")
    return buf.getvalue()


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _show_progress(ray: Any, board: Any, asked: Any, files: dict[int, Path]) -> Any:
    """Copy the board's iteration counts, once they have come, into the files the command's
    progress bars poll; returns the question to wait on next (never blocks the results)."""
    ready, _ = ray.wait([asked], timeout=0)
    if not ready:
        return asked
    try:
        counts = ray.get(asked)
    except Exception:  # progress is a nicety: never let it stop a replay
        return board.counts.remote()
    for key, count in counts.items():
        path = files.get(key)
        if path is not None and path.parent.is_dir():
            path.write_text(str(count))
    return board.counts.remote()


def _first_line(exc: BaseException) -> str:
    """One line of an error: its message, or a traceback's last line (what was raised)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()] or [type(exc).__name__]
    return lines[-1] if any(ln.startswith("Traceback") for ln in lines) else lines[0]


class _Board:
    """A Ray actor: the outer-iteration count of every running task, for the driver's bars."""

    def __init__(self) -> None:
        self._counts: dict[int, int] = {}

    def report(self, key: int, count: int) -> None:
        self._counts[key] = count

    def counts(self) -> dict[int, int]:
        return dict(self._counts)


# -- the worker side (runs in a Ray worker process, possibly on another machine) ---------------


def _work(job: dict[str, Any], tree: bytes, board: Any, store_url: str | None) -> dict[str, Any]:
    """Unpack, fetch payloads, run the child, return its files: one attempt of one task."""
    tmp = Path(tempfile.mkdtemp(prefix="git-flor-ray-"))
    try:
        return run_job(job, tree, tmp, store_url, lambda n: board.report.remote(job["key"], n))
    finally:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


def run_job(job: dict[str, Any], tree: bytes, tmp: Path, store_url: str | None,
            report: Callable[[int], Any] | None = None) -> dict[str, Any]:
    """The worker's work in ``tmp`` (a fresh directory): no repository is opened or read.

    Payloads come from ``store_url`` (or, with a local Ray and no store, the clone's
    objects dir named by the job); public so a test can run it with the payloads
    nowhere but in the store.
    """
    scratch = tmp / "scratch"
    payloads = tmp / "payloads"
    with tarfile.open(fileobj=io.BytesIO(tree), mode="r:gz") as tar:
        if hasattr(tarfile, "tar_filter"):  # links into the user's tree are absolute: not "data"
            tar.extractall(scratch, filter="tar")
        else:
            tar.extractall(scratch)
    if store_url is not None:
        from ..storage.remote_store import Store

        store = Store(store_url)
        for sha in job["shas"]:
            store.download(sha, payloads)
    else:
        payloads = Path(job["objects"])
    root = job["root"]
    # The driver's git-flor (the child's launcher is a file of it) is this worker's copy here.
    argv = _rebase(_rebase(list(job["argv"]), root, str(scratch)), job["package"], str(PACKAGE))
    if argv and argv[0] == job["python"]:  # the driver's Python: this worker's has git-flor too
        argv[0] = sys.executable
    env = _rebase(dict(job["env"]), root, str(scratch))
    cwd = _rebase(job["cwd"], root, str(scratch))
    spec_file = scratch / job["spec"]
    # Every JSON file the command names in the scratch (the replay spec, the launch spec):
    # its paths moved to this machine's scratch, the isolation fitted to this machine.
    named = [spec_file, *(Path(a) for a in argv[1:] if a.endswith(".json") and _under(a, str(scratch)))]
    for path in dict.fromkeys(named):
        data = _rebase(json.loads(path.read_text()), root, str(scratch))
        if path == spec_file:
            data["store"] = str(payloads)
        if isinstance(data.get("isolation"), dict):
            _fit_isolation(data["isolation"], root, tmp)
        path.write_text(json.dumps(data))
    spec = json.loads(spec_file.read_text())
    progress = Path(spec["progress"]) if spec.get("progress") else None
    t0 = time.perf_counter()
    proc = _start(argv, cwd, env)
    stop = threading.Event()
    watcher = threading.Thread(target=_watch, args=(progress, report, stop), daemon=True)
    if progress is not None and report is not None:
        watcher.start()
    try:
        _, err = proc.communicate()
    except BaseException:  # cancelled (Ray raises KeyboardInterrupt here): the child goes too
        _kill(proc)
        raise
    finally:
        stop.set()
    seconds = time.perf_counter() - t0
    files = {}
    for rel in job["files"]:
        path = scratch / rel
        if path.is_file() and path != spec_file:
            files[rel] = path.read_bytes()
    return {"returncode": proc.returncode, "seconds": seconds, "stderr": err[-4000:], "files": files}


def _fit_isolation(iso: dict[str, Any], driver_scratch: str, tmp: Path) -> None:
    """The launcher's isolation section (``isolation.launch_spec``), as it must be on this machine.

    Overlays keep the user's folders that exist here (a shared filesystem: still
    protected) and drop those that do not (nothing of the user's to write to, and an
    overlay cannot be mounted on a missing folder); a folder kept out of the overlays
    because it holds the driver's scratch becomes the one that holds this worker's.
    """
    if "overlays" in iso:
        iso["overlays"] = [ov for ov in iso["overlays"] if os.path.isdir(ov.get("lower", ""))]
    if "keep" in iso:
        keep = [str(tmp) if _under(driver_scratch, k) else k for k in iso["keep"]]
        iso["keep"] = [k for k in dict.fromkeys(keep) if os.path.isdir(k)]


def _rebase(value: Any, old: str, new: str) -> Any:
    """Every string that is a path under ``old``, moved under ``new`` (recursively)."""
    if isinstance(value, str):
        return new + value[len(old.rstrip("/")):] if _under(value, old) else value
    if isinstance(value, list):
        return [_rebase(v, old, new) for v in value]
    if isinstance(value, dict):
        return {k: _rebase(v, old, new) for k, v in value.items()}
    return value


def _start(argv: list[str], cwd: str, env: dict[str, str]) -> Any:
    import subprocess

    return subprocess.Popen(
        argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True, start_new_session=True, preexec_fn=_die_with_parent(),
    )


def _die_with_parent() -> Callable[[], Any] | None:
    """Linux: the child gets SIGKILL when its worker dies, so a lost worker leaves no orphan
    computing on (its retry runs elsewhere). The libc call is looked up before the fork."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes
        import functools

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return functools.partial(prctl, 1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG


def _kill(proc: Any) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=5)
            return
        except Exception:
            continue


def _watch(path: Path | None, report: Callable[[int], Any] | None, stop: threading.Event) -> None:
    last = -1
    while not stop.wait(POLL):
        try:
            count = int(path.read_text() or 0) if path is not None else 0
        except (OSError, ValueError):
            continue
        if count != last and report is not None:
            last = count
            report(count)
