"""The Ray executor next to the local pool: parallel efficiency at 2 workers, per-task overhead.

Measured in one process, on the same replay plans, interleaved (the order rotates every
repetition; tables quote medians over ``--reps``), so the numbers are comparable:

1. **Efficiency at 2 workers.** A numpy MLP (scripts/bench_workload.py, synthetic data,
   fixed seed; 40,000 examples, 512 hidden units) is recorded with a checkpoint every
   epoch; today's code adds a statement
   inside the step loop, so every epoch must be re-executed (jobs = segments between
   checkpoints, planned for 2 workers). ``jobs.execute`` (materialise, run, write back
   to git) is timed with the local pool at 1 and 2 workers and with the Ray executor on
   a 2-CPU Ray cluster on this machine. efficiency = t(local, 1) / (2 x t).
2. **Per-task overhead.** Many short runs, each replayed with a statement before the
   training loop: a *no-op job* (start Python, import, build the data, stop). Per task,
   ``2 x wall / jobs`` is what each job holds a worker for; the child's own time is
   measured where it runs (``Outcome.seconds``); the difference is the executor's
   per-task overhead (for Ray: the tree's tar as a Ray object, scheduling, unpacking,
   payload downloads from the store, the records back, plus the materialise and
   write-back both executors share). ``ship`` times the driver's part alone.
3. **A local Ray per command.** With no cluster address, ``git flor replay --executor
   ray`` starts a Ray for the command and stops it after: that fixed cost, measured in a
   child process (start, then shutdown).

The Ray cluster is started in this process (``ray.init(num_cpus=2)``) and the executor
joins it, as a command joins ``RAY_ADDRESS``; payloads go through a ``file://`` store.
Everything is written under a temporary directory (repositories, HOME, the store, and the
copy of git_flor that this process, the replay children and the Ray workers all import).

    .venv/bin/python scripts/bench_ray.py             # ~3 minutes on 2 busy CPUs
    .venv/bin/python scripts/bench_ray.py --reps 1    # a smoke run
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench_workload import (  # the shared workload and helpers (scripts/)
    LOOP,
    MODEL,
    snapshot_gitflor,
)

TRAIN = '''\
import numpy as np
import git_flor as flor

lr = flor.arg("lr", 0.05)
epochs = flor.arg("epochs", 12)
batch = flor.arg("batch", 128)
hidden = flor.arg("hidden", 64)
n_train = flor.arg("n_train", 4000)
seed = flor.arg("seed", 0)

''' + MODEL + '''

best_val = float("inf")
''' + LOOP.replace("{decay}", "2.0")

STEP_ANCHOR = '            flor.log("loss", loss)\n'
STEP_STMT = '            flor.log("grad_norm", float(np.linalg.norm(gh)))\n'
PREFIX_ANCHOR = "X_train, y_train, X_val, y_val = X[:n_train], y[:n_train], X[n_train:], y[n_train:]\n"
PREFIX_STMT = 'flor.log("n_val", len(X_val))\n'


def sh(argv: list[str], cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark: {' '.join(argv)} failed: {proc.stderr[-2000:]}")
    return proc.stdout


class Timing:
    """A replay monitor that keeps each job's own time (measured where the job ran)."""

    def __init__(self) -> None:
        self.child: list[float] = []
        self.failed: list[str] = []

    def begin(self, jobs: list[Any]) -> None:
        self.child.clear()

    def end(self, key: int, job: Any, outcome: Any) -> None:
        self.child.append(outcome.seconds)
        if outcome.returncode != 0:
            self.failed.append(outcome.stderr[-300:])


def local_ray_cost(env: dict[str, str]) -> tuple[float, float]:
    """Seconds to start a local Ray for a command, and to stop it (in a child: this process has one)."""
    code = (
        "import time; t0 = time.perf_counter()\n"
        "from git_flor.replay.ray_executor import RayExecutor\n"
        "ex = RayExecutor(None, None, 2); ex.connect(); t1 = time.perf_counter()\n"
        "ex.close(); t2 = time.perf_counter(); print(t1 - t0, t2 - t1)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    start, stop = (float(x) for x in out.stdout.split())
    return start, stop


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=12, help="epochs of the run replayed for efficiency")
    ap.add_argument("--noop-runs", type=int, default=8, help="short runs replayed as no-op jobs")
    opts = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    home = tmp / "home"
    home.mkdir()
    (home / ".gitconfig").write_text("[user]\n\tname = bench\n\temail = bench@example.com\n")
    drop = ("GIT_", "FLOR_", "RAY_ADDRESS")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    # A copy of git_flor for this process, the replay children and the Ray workers alike, so
    # edits to the checkout while the benchmark runs cannot mix two versions.
    pkg = tmp / "pkg"
    pkg.mkdir()
    print("git_flor:", snapshot_gitflor(sys.executable, pkg), flush=True)
    sys.path.insert(0, str(pkg))
    env.update(HOME=str(home), GIT_CONFIG_NOSYSTEM="1", FLOR_QUIET="1", OPENBLAS_NUM_THREADS="1",
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(pkg))
    os.environ.clear()
    os.environ.update(env)  # the replay children inherit this process's environment
    try:
        run(tmp, env, opts)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(tmp: Path, env: dict[str, str], opts: argparse.Namespace) -> None:
    import ray

    from git_flor.query.runs import run_ids
    from git_flor.replay import ray_executor
    from git_flor.replay.executors import LocalExecutor
    from git_flor.replay.jobs import execute
    from git_flor.replay.plan import plan
    from git_flor.storage.index import connect
    from git_flor.storage.repo import open_repo

    print(f"ray {ray.__version__}, python {sys.version.split()[0]}, {os.cpu_count()} CPUs "
          f"(load {os.getloadavg()[0]:.1f})", flush=True)
    start, stop = local_ray_cost(env)

    # The recordings: one long run (a checkpoint every epoch) and many short ones.
    repo = tmp / "project"
    repo.mkdir()
    sh(["git", "init", "-q", "-b", "main"], repo, env)
    (repo / "train.py").write_text(TRAIN)
    sh(["git", "add", "."], repo, env)
    sh(["git", "commit", "-qm", "workload"], repo, env)
    py = sys.executable
    sh([py, "train.py", "--kwargs", f"epochs={opts.epochs}", "n_train=40000", "hidden=512"], repo,
       {**env, "FLOR_CKPT_BOUND": "1"})  # about 0.8 s an epoch here
    for k in range(opts.noop_runs):
        sh([py, "train.py", "--kwargs", f"seed={k + 1}", "epochs=2", "n_train=1000"], repo, env)
    src = TRAIN.replace(STEP_ANCHOR, STEP_ANCHOR + STEP_STMT).replace(PREFIX_ANCHOR, PREFIX_ANCHOR + PREFIX_STMT)
    (repo / "train.py").write_text(src)
    store = (tmp / "store").as_uri()
    sh(["git", "config", "flor.store", store], repo, env)

    git = open_repo(str(repo))
    conn = connect(git)
    ids = run_ids(git, conn)
    long_run = [r for r in ids if json.loads(conn.execute("SELECT meta FROM runs WHERE run = ?", (r,)).fetchone()[0])
                .get("args", {}).get("epochs") == opts.epochs]
    short = [r for r in ids if r not in long_run]
    step_plan = plan(git, conn, long_run, ["grad_norm"], force=True, workers=2)
    noop_plan = plan(git, conn, short, ["n_val"], force=True, workers=2)
    conn.close()

    logging.getLogger("ray").setLevel(logging.ERROR)
    ctx = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, address="local",
                   logging_level=logging.ERROR)
    try:
        address = ctx.address_info["gcs_address"]
        makers: dict[str, Callable[[], Any]] = {
            "local, 1 worker": lambda: LocalExecutor(1),
            "local, 2 workers": lambda: LocalExecutor(2),
            "ray, 2 CPUs": lambda: ray_executor.RayExecutor(address, store, 2),
        }
        for the_plan in (step_plan, noop_plan):  # warm-up: caches, and the store's first upload
            execute(git, the_plan, makers["ray, 2 CPUs"](), Timing())
        walls: dict[tuple[str, str], list[float]] = {}
        child: dict[tuple[str, str], list[float]] = {}
        names = list(makers)
        for rep in range(opts.reps):
            order = names[rep % len(names):] + names[: rep % len(names)]
            for what, the_plan in (("step", step_plan), ("noop", noop_plan)):
                for name in order:
                    timing = Timing()
                    t0 = time.perf_counter()
                    execute(git, the_plan, makers[name](), timing)
                    wall = time.perf_counter() - t0
                    if timing.failed:
                        raise SystemExit(f"benchmark: a replay job failed: {timing.failed[0]}")
                    walls.setdefault((what, name), []).append(wall)
                    child.setdefault((what, name), []).append(statistics.mean(timing.child))
            print(f"  rep {rep + 1}/{opts.reps} done", file=sys.stderr, flush=True)
        ship_s, tar_kb = _ship_cost(git, noop_plan, store)
    finally:
        ray.shutdown()

    med = statistics.median
    t1 = med(walls[("step", "local, 1 worker")])
    print(f"\n1. Step-level statement, {opts.epochs} epochs re-executed: {len(step_plan.jobs)} jobs "
          f"(planned for 2 workers); jobs.execute wall time, median of {opts.reps}")
    print(f"{'executor':22}{'wall s':>9}{'efficiency':>12}")
    for name in names:
        t = med(walls[("step", name)])
        eff = "" if name.endswith("1 worker") else f"{t1 / (2 * t):12.2f}"
        print(f"{name:22}{t:9.2f}{eff}")
    n = len(noop_plan.jobs)
    print(f"\n2. No-op jobs (a statement before the loop), {n} runs x 1 job; per task, median of {opts.reps}")
    print(f"{'executor':22}{'wall s':>9}{'slot s/task':>13}{'child s':>9}{'overhead s':>12}")
    over: dict[str, float] = {}
    for name in names:
        w = med(walls[("noop", name)])
        workers = 1 if name.endswith("1 worker") else 2
        slot = workers * w / n
        c = med(child[("noop", name)])
        over[name] = slot - c
        print(f"{name:22}{w:9.2f}{slot:13.3f}{c:9.3f}{slot - c:12.3f}")
    print(f"Ray adds {over['ray, 2 CPUs'] - over['local, 2 workers']:+.3f} s per task over the local pool "
          f"at 2 workers; of it the driver's ship (tar {tar_kb:.0f} KB, ray.put, store check) is "
          f"{ship_s * 1000:.1f} ms.")
    print(f"\n3. A local Ray started for one command: {start:.2f} s to start, {stop:.2f} s to stop "
          "(a cluster joined with RAY_ADDRESS costs neither).")


def _ship_cost(git: Any, the_plan: Any, store: str) -> tuple[float, float]:
    """The driver's own work per task (tar + ray.put + the store's check), and the tar's size."""
    import ray

    from git_flor.replay import ray_executor
    from git_flor.replay.jobs import execute
    from git_flor.storage.remote_store import Store

    seen: list[tuple[float, int]] = []
    opened = Store(store)
    real_ship = ray_executor.ship

    def timed(task: Any, st: Any) -> Any:
        t0 = time.perf_counter()
        job, tree, returns = real_ship(task, st)
        ray.put(tree)
        seen.append((time.perf_counter() - t0, len(tree)))
        return job, tree, returns

    ray_executor.ship = timed  # type: ignore[assignment]
    try:
        address = ray.get_runtime_context().gcs_address
        execute(git, the_plan, ray_executor.RayExecutor(address, opened.url, 2), Timing())
    finally:
        ray_executor.ship = real_ship  # type: ignore[assignment]
    return statistics.median(s for s, _ in seen), statistics.median(b for _, b in seen) / 1024


if __name__ == "__main__":
    main()
