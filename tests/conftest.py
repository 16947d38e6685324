"""Fixtures: real temporary git repositories, real training scripts, the installed binary.

Nothing here mocks git. ``$HOME`` points into the test's temp dir so no test can
read or write the developer's git config, and author/committer identities and
dates are fixed so commits are reproducible.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent

TRAIN = textwrap.dedent(
    """\
    import numpy as np
    import git_flor as flor

    lr = flor.arg("lr", 0.1)
    epochs = flor.arg("epochs", 3)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 4))
    y = X @ np.array([1.0, -2.0, 0.5, 3.0])
    w = np.zeros(4)
    with flor.checkpointing(w=w):
        for epoch in flor.loop("epoch", range(epochs)):
            for step in flor.loop("step", range(4)):
                xb, yb = X[step * 16:(step + 1) * 16], y[step * 16:(step + 1) * 16]
                w -= lr * xb.T @ (xb @ w - yb) / len(xb)
                flor.log("loss", float(np.mean((xb @ w - yb) ** 2)))
            flor.log("val", np.mean((X @ w - y) ** 2))
    """
)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    isolate(tmp_path_factory, monkeypatch)


def isolate(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """What every test runs under (also for module-scoped fixtures, which start before it)."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.delenv("GIT_CONFIG_GLOBAL", raising=False)
    for role in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{role}_NAME", "Test")
        monkeypatch.setenv(f"GIT_{role}_EMAIL", "test@example.com")
        monkeypatch.setenv(f"GIT_{role}_DATE", "2026-01-01T00:00:00Z")
    monkeypatch.setenv("FLOR_QUIET", "1")
    # Warm workers end with their command (a test that keeps one says so): none outlives a test.
    monkeypatch.setenv("FLOR_WARM_KEEP", "0")
    monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{os.environ['PATH']}")
    (home / ".gitconfig").write_text("[user]\n\tname = Test\n\temail = test@example.com\n[init]\n\tdefaultBranch = main\n")


def git(repo: Path, *args: str, check: bool = True) -> str:
    out = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=False)
    if check and out.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {out.stderr}")
    return out.stdout


def flor(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The installed ``git flor``, as a user runs it."""
    return subprocess.run(["git", "flor", *args], cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL)


def run_script(cwd: Path, script: str = "train.py", *args: str, env: dict[str, str] | None = None,
               check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([sys.executable, script, *args], cwd=cwd, capture_output=True, text=True,
                         env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)
    if check and out.returncode != 0:
        raise AssertionError(f"{script} failed ({out.returncode}): {out.stderr}")
    return out


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository whose one commit holds the numpy training script ``train.py``."""
    path = tmp_path / "project"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    (path / "train.py").write_text(TRAIN)
    (path / ".gitignore").write_text("data/\n")
    git(path, "add", ".")
    git(path, "commit", "-qm", "first version")
    return path


def user_state(repo: Path) -> dict[str, object]:
    """Everything of the user's that recording must leave byte-identical."""
    gitdir = Path(git(repo, "rev-parse", "--absolute-git-dir").strip())
    files = {}
    for p in sorted(repo.rglob("*")):
        if ".git" in p.relative_to(repo).parts or not p.is_file():
            continue
        files[str(p.relative_to(repo))] = p.read_bytes()
    return {
        "status": git(repo, "status", "--porcelain=v2", "--branch", "--untracked-files=all", "--ignored"),
        "index": (gitdir / "index").read_bytes() if (gitdir / "index").exists() else b"",
        "HEAD": (gitdir / "HEAD").read_bytes(),
        "branches": git(repo, "for-each-ref", "refs/heads", "refs/tags", "refs/remotes"),
        "log": git(repo, "log", "--format=%H %s"),
        "files": files,
    }
