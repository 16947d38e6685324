"""How long the post-commit hook adds to a commit (budget: 200 ms typical).

Builds a throwaway repository with ``runs`` recorded runs (one of them on
uncommitted edits, so the hook has a run to link), then times, side by side:

- ``git flor hook post-commit`` alone (what the shim runs), and
- ``git commit --allow-empty`` with the hooks installed vs without.

    .venv/bin/python scripts/bench_hook.py [--runs 50] [--repeat 15]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCRIPT = "import git_flor as flor\nfor e in flor.loop('epoch', range(3)):\n    flor.log('loss', 1.0 / (e + 1))\n"


def sh(cwd: Path, *args: str) -> None:
    subprocess.run(args, cwd=cwd, check=True, capture_output=True, stdin=subprocess.DEVNULL)


def timed(cwd: Path, *args: str, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        sh(cwd, *args)
        out.append(time.perf_counter() - start)
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=15)
    opts = parser.parse_args()
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    os.environ["FLOR_QUIET"] = "1"
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        sh(repo, "git", "init", "-q", "-b", "main")
        sh(repo, "git", "config", "user.name", "bench")
        sh(repo, "git", "config", "user.email", "bench@example.com")
        (repo / "train.py").write_text(SCRIPT)
        sh(repo, "git", "add", "train.py")
        sh(repo, "git", "commit", "-qm", "start")
        for _ in range(opts.runs - 1):
            sh(repo, sys.executable, "train.py")
        (repo / "train.py").write_text(SCRIPT + "# edited\n")
        sh(repo, sys.executable, "train.py")  # a run on uncommitted edits: the hook links it
        sh(repo, "git", "commit", "-qam", "edit")

        without = timed(repo, "git", "commit", "-q", "--allow-empty", "-m", "x", repeat=opts.repeat)
        sh(repo, "git", "flor", "init")
        hook = timed(repo, "git", "flor", "hook", "post-commit", repeat=opts.repeat)
        with_hooks = timed(repo, "git", "commit", "-q", "--allow-empty", "-m", "x", repeat=opts.repeat)
    med = statistics.median
    print(f"repository with {opts.runs} runs, {opts.repeat} repeats, medians:")
    print(f"  git flor hook post-commit        {1e3 * med(hook):7.1f} ms")
    print(f"  git commit without git-flor      {1e3 * med(without):7.1f} ms")
    print(f"  git commit with git-flor hooks   {1e3 * med(with_hooks):7.1f} ms "
          f"(+{1e3 * (med(with_hooks) - med(without)):.1f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
