"""The README's demo: record runs of a real training script across versions, then fill in hindsight.

It makes a throw-away repository, commits a small numpy training script, runs
it on two commits and once with an uncommitted edit, and prints what
`git flor runs` and `git flor log` show. Then it adds one `flor.log` line to
today's script and runs `git flor replay`: the line is carried into every past
version, replayed from checkpoints, and the table shows its values for every
run. Your own repositories are not touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPT = (HERE / "demo_files" / "train.py").read_text()
ENV = {
    **os.environ,
    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    "FLOR_QUIET": "1",
    "GIT_AUTHOR_NAME": "Demo",
    "GIT_AUTHOR_EMAIL": "demo@example.com",
    "GIT_COMMITTER_NAME": "Demo",
    "GIT_COMMITTER_EMAIL": "demo@example.com",
}


def sh(*cmd: str, cwd: Path, show: bool = True) -> str:
    if show:
        print(f"\n$ {' '.join(cmd)}", flush=True)
    out = subprocess.run(cmd, cwd=cwd, env=ENV, check=True, text=True, capture_output=True)
    if show and out.stdout.strip():
        print(out.stdout.rstrip(), flush=True)
    if out.stderr.strip():
        print(out.stderr.rstrip(), file=sys.stderr, flush=True)
    return out.stdout


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="git-flor-demo-"))
    repo = work / "project"
    try:
        repo.mkdir()
        sh("git", "init", "-q", "-b", "main", cwd=repo, show=False)
        (repo / ".gitignore").write_text("model.npy\n")
        (repo / "train.py").write_text(SCRIPT)
        sh("git", "add", ".", cwd=repo, show=False)
        sh("git", "commit", "-qm", "softmax regression, plain SGD", cwd=repo)
        sh(sys.executable, "train.py", cwd=repo)
        sh(sys.executable, "train.py", "--kwargs", "lr=0.1", cwd=repo)

        (repo / "train.py").write_text(SCRIPT.replace("epochs = flor.arg(\"epochs\", 8)", "epochs = flor.arg(\"epochs\", 10)"))
        sh("git", "commit", "-qam", "train for 10 epochs", cwd=repo)
        sh(sys.executable, "train.py", "--kwargs", "lr=0.3", cwd=repo)

        edited = (repo / "train.py").read_text().replace(
            "            W -= lr * X_train[idx].T @ grad\n",
            "            W -= lr * (X_train[idx].T @ grad + 1e-3 * W)  # weight decay, not committed\n",
        )
        (repo / "train.py").write_text(edited)
        sh(sys.executable, "train.py", cwd=repo)

        sh("git", "flor", "runs", cwd=repo)
        sh("git", "flor", "log", "val_acc", "lr", "--where", "epoch >= 6", cwd=repo)

        # Hindsight: today we want the weight norm per epoch, for every past run.
        today = (repo / "train.py").read_text().replace(
            "        p_val = forward(X_val)\n",
            "        flor.log(\"w_norm\", float(np.linalg.norm(W)))  # added today\n"
            "        p_val = forward(X_val)\n",
        )
        (repo / "train.py").write_text(today)
        print("\n(train.py gains: flor.log(\"w_norm\", float(np.linalg.norm(W))) after the step loop)")
        sh("git", "flor", "replay", "--apply", "w_norm", "--dry-run", cwd=repo)
        sh("git", "flor", "replay", "--apply", "w_norm", "--yes", cwd=repo)
        sh("git", "flor", "log", "val_acc", "w_norm", "lr", "--where", "epoch >= 6", "--provenance", cwd=repo)
        sh("git", "status", "--short", cwd=repo)

        # Look at it: every run's validation accuracy and the hindsight w_norm, as a picture.
        sh("git", "flor", "plot", "val_acc", "--by", "lr", "--text", cwd=repo)
        picture = Path(tempfile.gettempdir()) / "git-flor-demo.png"
        sh("git", "flor", "plot", "val_acc", "w_norm", "--provenance", "-o", str(picture), cwd=repo, show=False)
        print(f"\nthe plot of the demo's runs (val_acc and w_norm per run; hindsight values ringed): {picture}")
        print(f"\n(the demo repository is {repo}; it is removed now)")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
