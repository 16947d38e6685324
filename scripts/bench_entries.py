"""What keying checkpoints by loop entry buys: a statement in an outer loop entered twice.

A numpy MLP is trained by ``fit()`` twice in one run — pre-training, then fine-tuning with
a smaller learning rate through the same ``flor.loop("epoch", ...)`` — and recorded with a
checkpoint every epoch. Today's code adds ``flor.log("w_norm", ...)`` after the nested step
loop. Two copies of that one recording are replayed, side by side:

- ``entries``: as git-flor records runs now (checkpoints, fingerprints and positions keyed by
  entry): every epoch of both phases is restored and skipped;
- ``legacy``: the same run rewritten the way git-flor stored it before entries were keyed
  (checkpoints of the first entry only, ``tests/test_loop_shapes.py:as_recorded_before_entries``):
  the statement is replayed by running the whole script.

Each replay is ``git flor replay --apply w_norm --force --yes`` as a user runs it (CLI start,
planning, materialising, children, write-back). Variants are interleaved and the table
quotes medians over ``--reps``; the replayed values of the two must be equal. Everything is
written under a temporary directory.

    .venv/bin/python scripts/bench_entries.py            # ~1 minute
    .venv/bin/python scripts/bench_entries.py --reps 5
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.test_loop_shapes import as_recorded_before_entries  # noqa: E402 (the checkout's own tests)

SCRIPT = textwrap.dedent(
    """\
    import numpy as np
    import git_flor as flor

    rng = np.random.default_rng(0)
    X = rng.normal(size=(8192, 256))
    y = np.tanh(X @ rng.normal(size=(256, 1)))
    W1 = rng.normal(size=(256, 512)) * 0.05
    W2 = rng.normal(size=(512, 1)) * 0.05
    lr = flor.arg("lr", 0.05)


    def fit(epochs, lr):
        for epoch in flor.loop("epoch", range(epochs)):
            for step in flor.loop("step", range(16)):
                xb, yb = X[step * 512:(step + 1) * 512], y[step * 512:(step + 1) * 512]
                h = np.tanh(xb @ W1)
                err = h @ W2 - yb
                gW2 = h.T @ err / len(xb)
                gW1 = xb.T @ ((err @ W2.T) * (1 - h ** 2)) / len(xb)
                W1[:] -= lr * gW1
                W2[:] -= lr * gW2
            # hindsight
            flor.log("loss", float(np.mean((np.tanh(X @ W1) @ W2 - y) ** 2)))


    with flor.checkpointing(W1=W1, W2=W2):
        fit(EPOCHS, lr)       # pre-training
        fit(EPOCHS, lr / 10)  # fine-tuning: the same loop again
    """
)
STATEMENT = 'flor.log("w_norm", float(np.linalg.norm(W1)))'


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def flor(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "git_flor", *args], cwd=repo, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)


def values(repo: Path) -> list[float]:
    out = flor(repo, "log", "w_norm", "--format", "json")
    return [r["w_norm"] for r in json.loads(out.stdout)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=8, help="epochs of each phase")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-entries-"))
    env = {**os.environ, "HOME": str(tmp), "FLOR_QUIET": "1", "PYTHONDONTWRITEBYTECODE": "1",
           "GIT_CONFIG_NOSYSTEM": "1", "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@example.com",
           "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@example.com"}
    os.environ.update(env)
    try:
        entries = tmp / "entries"
        entries.mkdir()
        git(entries, "init", "-q", "-b", "main")
        (entries / "train.py").write_text(SCRIPT.replace("EPOCHS", str(args.epochs)))
        git(entries, "add", ".")
        git(entries, "commit", "-qm", "two phases")
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "train.py"], cwd=entries, check=True, env={**env, "FLOR_CKPT_BOUND": "1"})
        original = time.perf_counter() - t0
        legacy = tmp / "legacy"
        shutil.copytree(entries, legacy, symlinks=True)
        as_recorded_before_entries(legacy)
        today = SCRIPT.replace("EPOCHS", str(args.epochs)).replace("# hindsight", STATEMENT)
        plans = {}
        for repo in (entries, legacy):
            (repo / "train.py").write_text(today)
            plan = json.loads(flor(repo, "replay", "--apply", "w_norm", "--dry-run", "--format", "json").stdout)
            plans[repo.name] = sorted({j["mode"] for j in plan["jobs"]})
        assert plans == {"entries": ["skip"], "legacy": ["full"]}, plans
        times: dict[str, list[float]] = {"entries": [], "legacy": []}
        for rep in range(args.reps):
            for repo in (entries, legacy)[::1 if rep % 2 == 0 else -1]:
                t0 = time.perf_counter()
                out = flor(repo, "replay", "--apply", "w_norm", "--force", "--yes")
                times[repo.name].append(time.perf_counter() - t0)
                assert out.returncode == 0, out.stderr
        assert values(entries) == values(legacy) and len(values(entries)) == args.epochs  # the table: one row per index
        e, g = statistics.median(times["entries"]), statistics.median(times["legacy"])
        print(f"two phases x {args.epochs} epochs, {args.reps} reps (medians), original run {original:.2f} s")
        print(f"  entries keyed (restore+skip both phases): {e:6.2f} s")
        print(f"  recorded before entries (replayed whole): {g:6.2f} s")
        print(f"  speed-up: {g / e:.2f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
