"""Benchmark: checkpoint overhead on a large model with short iterations, and throughput.

1. Overhead. A training loop with >= 100 MB of state and short iterations
   (the case where naive per-epoch checkpointing would double the run time),
   run as a subprocess with a no-op `flor` shim and with git-flor, alternating,
   --reps times. The adaptive policy should keep git-flor's overhead near its
   bound (default 1 %), taking few checkpoints; the number taken is printed.
2. A plain torch MLP (issue 18): 20 epochs x 180 steps of 256, the batch loop inline, Adam,
   ~2 MB of state, sub-second epochs, default settings: every epoch must get a
   checkpoint (the bound charges the training thread's copy, not the background
   write) and the overhead against a no-op shim must stay near the 1 % bound.
3. Throughput. Saving one large state through git-flor (capture + serialise +
   content-addressed write) and restoring it (read + verify + deserialise +
   in-place restore), against raw torch.save/torch.load (np.save/np.load
   without torch) to the same disk. MB/s, medians.

    .venv/bin/python scripts/bench_checkpoint.py [--reps 5] [--mb 120] [--mlp-reps 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

NOOP = textwrap.dedent(
    """\
    import contextlib
    def arg(name, default=None): return default
    def log(name, value): return value
    def loop(name, it): return it
    def checkpointing(**kw): return contextlib.nullcontext()
    def commit(): return None
    """
)

WORKLOAD = textwrap.dedent(
    """\
    import sys, time
    import numpy as np
    {import_flor}
    mb = int(sys.argv[1])
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(mb * 1024 * 1024 // 8,))   # the model's state
    small = rng.normal(size=(200_000,))
    t0 = time.perf_counter()
    with flor.checkpointing(weights=weights):
        for epoch in flor.loop("epoch", range(1000)):
            for step in range(40):                       # ~15 ms of compute per epoch
                small = np.tanh(small * 1.0001 + 0.001)
            weights[epoch] += float(small[0])
            flor.log("x", float(small[1]))
    print(time.perf_counter() - t0)
    """
)


MLP = textwrap.dedent(
    """\
    import sys, time
    import torch
    {import_flor}
    torch.manual_seed(0)
    X = torch.randn(180 * 256, 512)
    y = torch.randint(0, 10, (180 * 256,))
    model = torch.nn.Sequential(torch.nn.Linear(512, 256), torch.nn.ReLU(), torch.nn.Linear(256, 128),
                                torch.nn.ReLU(), torch.nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    t0 = time.perf_counter()
    with flor.checkpointing(model=model, opt=opt):
        for epoch in flor.loop("epoch", range(20)):
            for step in range(180):
                xb, yb = X[step * 256:(step + 1) * 256], y[step * 256:(step + 1) * 256]
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(model(xb), yb)
                loss.backward()
                opt.step()
            flor.log("loss", loss.item())
    print(time.perf_counter() - t0)
    """
)

# `git flor` must be this environment's (the script may be run as .venv/bin/python without activating it).
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"


def run(repo: Path, script: str, mb: int, **env: str) -> float:
    out = subprocess.run([sys.executable, script, str(mb)], cwd=repo, capture_output=True, text=True,
                         env={**os.environ, "FLOR_QUIET": "1", **env}, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def project(repo: Path, workload: str) -> None:
    """A repository with the workload as ``base.py`` (a no-op ``flor`` shim) and ``flor_run.py`` (git-flor)."""
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    (repo / "noop_flor.py").write_text(NOOP)
    (repo / "base.py").write_text(workload.format(import_flor="import noop_flor as flor"))
    (repo / "flor_run.py").write_text(workload.format(import_flor="import git_flor as flor"))
    subprocess.run(["git", "add", "."], cwd=repo, check=True)
    subprocess.run(["git", "-c", "user.name=b", "-c", "user.email=b@x", "commit", "-qm", "w"], cwd=repo, check=True)


def shown_runs(repo: Path) -> list[dict]:
    """``git flor show --format json`` of every run."""
    runs = json.loads(subprocess.run(["git", "flor", "runs", "--format", "json"], cwd=repo,
                                     capture_output=True, text=True, check=True).stdout)
    return [json.loads(subprocess.run(["git", "flor", "show", r["run"], "--format", "json"], cwd=repo,
                                      capture_output=True, text=True, check=True).stdout) for r in runs]


def overhead(reps: int, mb: int) -> None:
    with tempfile.TemporaryDirectory(prefix="git-flor-bench-ckpt-") as tmp:
        repo = Path(tmp)
        project(repo, WORKLOAD)
        base, flor, nofp = [], [], []
        for _ in range(reps):  # interleaved: the machine may be shared
            base.append(run(repo, "base.py", mb))
            flor.append(run(repo, "flor_run.py", mb))
            nofp.append(run(repo, "flor_run.py", mb, FLOR_WITNESS="0"))
        shows = shown_runs(repo)
        with_fp = [s for s in shows if s.get("fingerprints")]
        taken = statistics.median(len(s["checkpoints"]) for s in with_fp or shows)
        fps = statistics.median(s["fingerprints"] for s in with_fp) if with_fp else 0
        b, f, n = statistics.median(base), statistics.median(flor), statistics.median(nofp)
        print(f"large state ({mb} MB), 1000 short iterations; medians of {reps} (training loop, seconds)")
        print(f"  no-op flor               {b:8.3f}")
        print(f"  git-flor                 {f:8.3f}   overhead {100 * (f / b - 1):+.2f} %   "
              f"checkpoints taken: {taken:.0f}, fingerprints: {fps:.0f} of 1000")
        print(f"  git-flor FLOR_WITNESS=0  {n:8.3f}   overhead {100 * (n / b - 1):+.2f} %   (no fingerprints)")


def torch_mlp(reps: int) -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        print("\ntorch MLP: skipped (torch is not installed)")
        return
    with tempfile.TemporaryDirectory(prefix="git-flor-bench-mlp-") as tmp:
        repo = Path(tmp)
        project(repo, MLP)
        base, flor = [], []
        for _ in range(reps):  # interleaved
            base.append(run(repo, "base.py", 0))
            flor.append(run(repo, "flor_run.py", 0))
        shows = shown_runs(repo)
        taken = [len(s["checkpoints"]) for s in shows]
        mb = statistics.median(sum(c["bytes"] for c in s["checkpoints"].values()) / max(1, len(s["checkpoints"]))
                               for s in shows) / 1e6
        b, f = statistics.median(base), statistics.median(flor)
        print(f"\ntorch MLP, 20 epochs x 180 steps (inline), {mb:.1f} MB state, default bound; medians of {reps}")
        print(f"  no-op flor               {b:8.3f}   ({b / 20:.2f} s an epoch)")
        print(f"  git-flor                 {f:8.3f}   overhead {100 * (f / b - 1):+.2f} %   "
              f"checkpoints taken per run: {taken} of 20")


def throughput(reps: int, mb: int) -> None:
    import numpy as np

    from git_flor.runtime import serial
    from git_flor.storage.checkpoints import PayloadStore

    try:
        import torch

        state = {"w": torch.randn(mb * 1024 * 1024 // 4)}
        model = torch.nn.Module()
        model.register_buffer("w", state["w"].clone())
        raw_save = lambda path: torch.save(model.state_dict(), path)  # noqa: E731
        raw_load = lambda path: model.load_state_dict(torch.load(path, weights_only=True))  # noqa: E731
        obj, label = model, "torch.save/torch.load"
    except ImportError:
        arr = np.random.default_rng(0).normal(size=(mb * 1024 * 1024 // 8,))
        raw_save = lambda path: np.save(path, arr)  # noqa: E731
        raw_load = lambda path: np.copyto(arr, np.load(path))  # noqa: E731
        obj, label = arr, "np.save/np.load"
    with tempfile.TemporaryDirectory(prefix="git-flor-bench-ckpt-", dir=os.environ.get("TMPDIR")) as tmp:
        store = PayloadStore(Path(tmp) / "objects")
        flor_w, flor_r, raw_w, raw_r = [], [], [], []
        for rep in range(reps):
            if hasattr(obj, "w"):
                obj.w.add_(1.0)  # new content each rep: no dedup shortcut
            else:
                obj += 1.0
            t0 = time.perf_counter()
            ser, snap = serial.capture(obj)
            sha, size = store.put(serial.serialise(ser, snap))  # what the background writer does
            flor_w.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            serial.restore(obj, ser, serial.deserialise(ser, store.get(sha)))
            flor_r.append(time.perf_counter() - t0)
            path = Path(tmp) / f"raw{rep}.bin"
            t0 = time.perf_counter()
            raw_save(path)
            raw_w.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            raw_load(path)
            raw_r.append(time.perf_counter() - t0)
            path.unlink()
        mbs = size / 1e6
        print(f"\nthroughput, {mbs:.0f} MB state; medians of {reps} (MB/s; higher is better)")
        print(f"  {'':22} {'save':>8} {'restore':>8}")
        print(f"  {'git-flor':22} {mbs / statistics.median(flor_w):8.0f} {mbs / statistics.median(flor_r):8.0f}")
        print(f"  {label:22} {mbs / statistics.median(raw_w):8.0f} {mbs / statistics.median(raw_r):8.0f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--mb", type=int, default=120)
    ap.add_argument("--mlp-reps", type=int, default=3)
    ap.add_argument("--only-mlp", action="store_true", help="only the torch MLP part")
    opts = ap.parse_args()
    if opts.only_mlp:
        torch_mlp(opts.mlp_reps)
        return 0
    overhead(opts.reps, opts.mb)
    torch_mlp(opts.mlp_reps)
    throughput(opts.reps, opts.mb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
