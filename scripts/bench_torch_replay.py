"""Torch replay speed (issue 18): ``git flor replay`` vs re-running, ``--workers 1`` vs the default.

Two workloads, each measured side by side in one run (medians over ``--reps``):

1. **Small MLP, many runs**: 5 recorded runs (seeds 0-4) of a small torch MLP;
   today's code gains an epoch-level statement. Re-running the 5 runs by hand
   (``python train.py`` with the statement written in, one after another) is
   compared with ``git flor replay --apply wnorm --yes --force`` (default workers).
   Target: replay ≤ 0.3× the re-runs.
2. **Torch MLP, one run** (20 epochs × 180 steps, batch loop inline, 512 hidden units:
   2.3 MB of model and optimizer state, as in the issue; default checkpoint settings): the original run's wall time vs the epoch-level replay with
   the default workers and with ``--workers 1``. Targets: replay ≥ 4× faster than the
   run, the default never slower than one worker.

Each replay is measured twice: *cold* (``FLOR_WARM_KEEP=0``: it starts its own warm worker and
imports torch, as a first replay does) and *kept* (the default: the warm worker an earlier replay
left waiting serves it). For each replay the ``--dry-run`` wall estimate is printed next to the
actual time (target: within ±30 %). Everything is written in a temporary directory.

    .venv/bin/python scripts/bench_torch_replay.py            # ~5 minutes on 2 busy cores
    .venv/bin/python scripts/bench_torch_replay.py --quick    # smaller runs, one repetition
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

TRAIN = textwrap.dedent(
    """\
    import torch
    import git_flor as flor

    seed = flor.arg("seed", 0)
    epochs = flor.arg("epochs", 20)
    steps = flor.arg("steps", 180)
    hidden = flor.arg("hidden", 256)
    torch.manual_seed(seed)
    X = torch.randn(steps * 32, 64)
    y = (X[:, :8].sum(1) > 0).long()
    model = torch.nn.Sequential(torch.nn.Linear(64, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, hidden),
                                torch.nn.ReLU(), torch.nn.Linear(hidden, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    with flor.checkpointing(model=model, opt=opt):
        for epoch in flor.loop("epoch", range(epochs)):
            for step in flor.loop("step", range(steps)):
                xb, yb = X[step * 32:(step + 1) * 32], y[step * 32:(step + 1) * 32]
                loss = torch.nn.functional.cross_entropy(model(xb), yb)
                opt.zero_grad()
                loss.backward()
                opt.step()
            flor.log("loss", float(loss))
    """
)
ANCHOR = '        flor.log("loss", float(loss))\n'
STATEMENT = '        flor.log("wnorm", float(model[0].weight.norm()))\n'


def sh(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    took = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr[-2000:]}")
    return took, out


def make_repo(root: Path, env: dict[str, str], runs: list[list[str]]) -> list[float]:
    """A repository with ``train.py`` committed and one recorded run per argument list; their wall times."""
    root.mkdir(parents=True)
    sh(["git", "init", "-q", "-b", "main"], root, env)
    (root / "train.py").write_text(TRAIN)
    sh(["git", "add", "."], root, env)
    sh(["git", "commit", "-qm", "v1"], root, env)
    times = [sh([sys.executable, "train.py", "--kwargs", *args], root, env)[0] for args in runs]
    (root / "train.py").write_text(TRAIN.replace(ANCHOR, ANCHOR + STATEMENT))  # today's code
    return times


def replay(root: Path, env: dict[str, str], extra: list[str]) -> tuple[float, float]:
    """(actual wall seconds of the replay, the dry run's wall estimate)."""
    _, dry = sh(["git", "flor", "replay", "--apply", "wnorm", "--force", "--dry-run", "--format", "json", *extra],
                root, env)
    took, _ = sh(["git", "flor", "replay", "--apply", "wnorm", "--force", "--yes", *extra], root, env)
    return took, json.loads(dry.stdout)["wall_seconds"]


def hand_runs(root: Path, env: dict[str, str], runs: list[list[str]]) -> float:
    """Re-running every run by hand with the statement written in (a scratch repo, one after another)."""
    hand = root.parent / (root.name + "-hand")
    if not hand.exists():
        hand.mkdir()
        sh(["git", "init", "-q"], hand, env)
        (hand / "train.py").write_text(TRAIN.replace(ANCHOR, ANCHOR + STATEMENT))
    t0 = time.perf_counter()
    for args in runs:
        sh([sys.executable, "train.py", "--kwargs", *args], hand, env)
    return time.perf_counter() - t0


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="smaller runs, one repetition")
    opts = ap.parse_args()
    reps = 1 if opts.quick else opts.reps
    scale = 0.5 if opts.quick else 1.0
    tmp = Path(tempfile.mkdtemp(prefix="bench-torch-replay-"))
    # Bytecode cached in the temporary directory (as a user's __pycache__ would be), never in the checkout.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env = {**env, "HOME": str(tmp), "FLOR_QUIET": "1", "PYTHONPYCACHEPREFIX": str(tmp / "pycache"),
           "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@x", "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@x"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    print(f"load: {os.getloadavg()}  cores: {os.cpu_count()}", flush=True)

    small_epochs, small_steps = str(int(10 * scale)), "180"
    small = [["seed=" + str(s), "epochs=" + small_epochs, "steps=" + small_steps] for s in range(5)]
    run_small = make_repo(tmp / "small", env, small)
    print(f"small MLP: 5 runs recorded, {med(run_small):.1f} s each (median)", flush=True)
    # The MLP: 512 hidden units, SGD with momentum: 2.3 MB of state to checkpoint per epoch.
    big = [["seed=0", "epochs=" + str(int(20 * scale)), "steps=180", "hidden=512"]]
    run_big = make_repo(tmp / "big", env, big)
    print(f"torch MLP: 1 run recorded, {run_big[0]:.1f} s", flush=True)

    # A first replay starts a warm worker (imports torch); it waits FLOR_WARM_KEEP seconds for the
    # next one, which forks from it. Both are measured: "cold" with FLOR_WARM_KEEP=0 (every replay
    # a first one), "kept" with the default (the worker of the replay before it).
    cold = {**env, "FLOR_WARM_KEEP": "0"}
    rows: dict[str, list[float]] = {k: [] for k in (
        "small_hand", "small_cold", "small_cold_est", "small_kept", "small_kept_est", "big_run", "big_cold",
        "big_cold_est", "big_kept", "big_kept_est", "big_w1", "big_w1_est")}
    for rep in range(reps):
        rows["small_hand"].append(hand_runs(tmp / "small", env, small))
        for kind, e_ in (("cold", cold), ("kept", env)):
            t, e = replay(tmp / "small", e_, [])
            rows[f"small_{kind}"].append(t)
            rows[f"small_{kind}_est"].append(e)
        rows["big_run"].append(hand_runs(tmp / "big", env, big))
        order = [("big_cold", cold, []), ("big_kept", env, []), ("big_w1", cold, ["--workers", "1"])]
        for key, e_, extra in (order if rep % 2 == 0 else order[::-1]):
            t, e = replay(tmp / "big", e_, extra)
            rows[key].append(t)
            rows[key + "_est"].append(e)
        print(f"rep {rep + 1}/{reps}: " + ", ".join(f"{k}={v[-1]:.1f}" for k, v in rows.items()), flush=True)

    m = {k: med(v) for k, v in rows.items()}

    def est(key: str) -> str:
        return f"estimate {m[key + '_est']:.1f} s ({(m[key + '_est'] / m[key] - 1) * 100:+.0f} %)"

    print(f"\nmedians over {reps} repetition(s); load now {os.getloadavg()}")
    print("cold: FLOR_WARM_KEEP=0, every replay starts its warm worker (a first replay); kept: the default,")
    print("the worker of the replay before it is still there (a second replay within FLOR_WARM_KEEP seconds)")
    print(f"small MLP (5 runs): re-run by hand {m['small_hand']:.1f} s; replay cold {m['small_cold']:.1f} s "
          f"-> {m['small_cold'] / m['small_hand']:.2f}x the re-runs, kept {m['small_kept']:.1f} s -> "
          f"{m['small_kept'] / m['small_hand']:.2f}x (target <= 0.3)")
    print(f"  cold {est('small_cold')}; kept {est('small_kept')} (target within 30 %)")
    print(f"torch MLP (20x180, 512 hidden): run {m['big_run']:.1f} s; replay cold {m['big_cold']:.1f} s -> "
          f"{m['big_run'] / m['big_cold']:.1f}x faster, kept {m['big_kept']:.1f} s -> "
          f"{m['big_run'] / m['big_kept']:.1f}x (target >= 4); cold --workers 1 {m['big_w1']:.1f} s "
          f"(default / workers 1 = {m['big_cold'] / m['big_w1']:.2f}, target <= 1)")
    print(f"  cold {est('big_cold')}; kept {est('big_kept')}; --workers 1 {est('big_w1')}")


if __name__ == "__main__":
    main()
