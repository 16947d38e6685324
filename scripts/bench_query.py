"""Benchmark: `git flor log` over many runs, cold (index rebuilt from git) and warm.

Builds a throw-away repository holding RUNS runs of ROWS logged values each
(the issue's target: 1,000 x 1,000, i.e. one million values), spread over 50
commits, written through git-flor's own storage layer, then times the
installed `git flor log` end to end in a subprocess, as a user would run it:

- cold: the derived SQLite index deleted first, so every run is read from git;
- warm: the index is up to date.

Targets: warm <= 1 s, cold <= 10 s. Medians of --reps repetitions are printed,
interleaving the variants so that machine noise hits them alike.

With --pipeline every other run is an ``evaluate.py`` run logging ``test_acc`` per
epoch at the same commit as a ``train.py`` run, and the table joining them
(``git flor log loss test_acc``: per-step rows) is timed beside the same table one row per
run (``--no-join``); their ratio is what the join costs.

    .venv/bin/python scripts/bench_query.py [--runs 1000] [--rows 1000] [--reps 5] [--pipeline]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pygit2

from git_flor.storage.records import RunData
from git_flor.storage.repo import flor_dir
from git_flor.storage.shadow import commit_run

BIN = Path(sys.executable).parent


def build(root: Path, runs: int, rows: int, pipeline: bool = False) -> Path:
    repo_dir = root / "project"
    repo_dir.mkdir()
    env = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@x", "GIT_COMMITTER_NAME": "b",
           "GIT_COMMITTER_EMAIL": "b@x"}
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=repo_dir, check=True, env=env)
    commits = []
    for v in range(50):
        (repo_dir / "train.py").write_text(f"# version {v}\n")
        subprocess.run(["git", "add", "train.py"], cwd=repo_dir, check=True, env=env)
        subprocess.run(["git", "commit", "-qm", f"v{v}"], cwd=repo_dir, check=True, env=env)
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo_dir, check=True, env=env,
                              capture_output=True, text=True)
        commits.append(head.stdout.strip())
    repo = pygit2.Repository(str(repo_dir))
    steps = 50
    epochs = max(1, rows // (steps + 1))
    t0 = time.perf_counter()
    for r in range(runs):
        evaluate = pipeline and r % 2 == 1
        commit = commits[(r // 2 if pipeline else r) % len(commits)]
        tree = str(repo[commit].peel(pygit2.Commit).tree.id)
        records = []
        n = 0
        for e in range(epochs if evaluate else 0):
            records.append(("test_acc", 0.4 + e / (2 * epochs), (("epoch", e, e),)))
        for e in range(0 if evaluate else epochs):
            for s in range(steps):
                if n < rows:
                    records.append(("loss", 1.0 / (1 + e * steps + s + r), (("epoch", e, e), ("step", s, s))))
                    n += 1
            if n < rows:
                records.append(("val_acc", 0.5 + e / (2 * epochs), (("epoch", e, e),)))
                n += 1
        meta = {"id": f"{r:012x}", "start": 1.7e9 + r, "end": 1.7e9 + r + 10, "duration": 10.0,
                "argv": ["train.py"], "args": {"lr": 10 ** -(1 + r % 4), "epochs": epochs},
                "status": "ok", "commit": commit, "dirty": False, "tree": tree,
                "script": "evaluate.py" if evaluate else "train.py",
                "cwd": ".", "checkpointing": {}}
        commit_run(repo, RunData(meta=meta, records=records, loops=[]))
    print(f"built {runs} runs x {rows} rows in {time.perf_counter() - t0:.1f} s", flush=True)
    return repo_dir


def timed(cmd: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"})
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--pipeline", action="store_true", help="half the runs are evaluate.py; time the join")
    opts = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="git-flor-bench-query-"))
    try:
        repo_dir = build(root, opts.runs, opts.rows, opts.pipeline)
        index = flor_dir(pygit2.Repository(str(repo_dir))) / "index.sqlite"
        variants = {
            "log loss (csv)": ["git", "flor", "log", "loss", "--format", "csv"],
            "log loss val_acc lr (csv)": ["git", "flor", "log", "loss", "val_acc", "lr", "--format", "csv"],
            "log val_acc (table)": ["git", "flor", "log", "val_acc"],
            "runs": ["git", "flor", "runs"],
        }
        if opts.pipeline:
            variants = {
                "log loss test_acc (joined)": ["git", "flor", "log", "loss", "test_acc", "--format", "csv"],
                "same, --no-join": ["git", "flor", "log", "loss", "test_acc", "--no-join", "--format", "csv"],
            }
        cold: dict[str, list[float]] = {k: [] for k in variants}
        warm: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(opts.reps):
            for name, cmd in variants.items():
                index.unlink(missing_ok=True)
                for suffix in ("-wal", "-shm"):
                    Path(str(index) + suffix).unlink(missing_ok=True)
                cold[name].append(timed(cmd, repo_dir))
                warm[name].append(timed(cmd, repo_dir))
        print(f"\n{opts.runs} runs x {opts.rows} rows; medians of {opts.reps} (seconds)")
        print(f"{'command':32} {'cold':>8} {'warm':>8}   targets: cold <= 10 s, warm <= 1 s")
        for name in variants:
            print(f"{name:32} {statistics.median(cold[name]):8.2f} {statistics.median(warm[name]):8.2f}")
        if opts.pipeline:
            joined, apart = (statistics.median(warm[k]) for k in variants)
            print(f"join / no-join (warm): {joined / apart:.2f}")
        return 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
