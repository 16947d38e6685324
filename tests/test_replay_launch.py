"""Replay starts the run's snapshot the way the run was started (issue 12, item 1).

A run started as ``python /abs/path/train.py`` or ``python -m [pkg.]train`` (from the
root or a subdirectory) must be replayed by running the *snapshot's* propagated file,
resolved inside the scratch copy, the same way — never today's file. Two versions are
recorded that way; today's ``train.py`` and the module it imports differ from both, so a
replay that ran today's code would give other values than the hand-edited re-runs of the
old ones. The user's tree is byte-identical afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pygit2
import pytest

import git_flor
from tests.conftest import flor, git, user_state

TRAIN = textwrap.dedent(
    """\
    import numpy as np
    import git_flor as flor
    {imp}

    lr = flor.arg("lr", 0.2)
    rng = np.random.default_rng(3)
    X = rng.normal(size=(48, 3))
    y = X @ np.array([1.0, -2.0, 0.5])
    w = np.zeros(3)
    with flor.checkpointing(w=w):
        for epoch in flor.loop("epoch", range(4)):
            for step in flor.loop("step", range(3)):
                xb, yb = X[step * 16:(step + 1) * 16], y[step * 16:(step + 1) * 16]
                w -= lr * SCALE * xb.T @ (xb @ w - yb) / len(xb)
            flor.log("loss", float(np.mean((X @ w - y) ** 2)))
    """
)
STATEMENT = '        flor.log("w_sum", float(w.sum()))\n'

# (where the script lives, the working directory, the command after `python`)
FORMS = {
    "absolute path": ("train.py", ".", ["{root}/train.py"]),
    "absolute path from a subdirectory": ("train.py", "sub", ["{root}/train.py"]),
    "-m train": ("train.py", ".", ["-m", "train"]),
    "-m pkg.train": ("pkg/train.py", ".", ["-m", "pkg.train"]),
    "-m train from a subdirectory": ("sub/train.py", "sub", ["-m", "train"]),
}


def _source(script: str, scale_line: str, statement: bool) -> tuple[str, str]:
    imp = "from .scale import SCALE" if script.startswith("pkg/") else "from scale import SCALE"
    src = TRAIN.format(imp=imp)
    if statement:
        anchor = '        flor.log("loss"'
        src = src.replace(anchor, STATEMENT + anchor)
    return src, scale_line


def _write(root: Path, script: str, src: str, scale: str) -> None:
    path = root / script
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(src)
    (path.parent / "scale.py").write_text(scale)
    if script.startswith("pkg/"):
        (path.parent / "__init__.py").write_text("")
    (root / "sub").mkdir(exist_ok=True)
    (root / "sub" / ".keep").write_text("")


def _run(root: Path, cwd: str, command: list[str]) -> None:
    argv = [c.format(root=root) for c in command]
    out = subprocess.run([sys.executable, *argv], cwd=root / cwd, capture_output=True, text=True,
                         env={**os.environ, "FLOR_CKPT_BOUND": "1"}, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr


#: the two recorded versions: the module's learning-rate scale, and the step (today's is a third)
VERSIONS = [("SCALE = 1.0\n", "w -= lr * SCALE *"), ("SCALE = 2.0\n", "w -= 0.25 * lr * SCALE *")]


@pytest.mark.parametrize("form", list(FORMS))
def test_replay_runs_the_snapshot_the_way_the_run_was_launched(tmp_path: Path, form: str) -> None:
    script, cwd, command = FORMS[form]
    repo = tmp_path / "project"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / ".gitignore").write_text("__pycache__/\n")
    for k, (scale, step) in enumerate(VERSIONS):
        src, _ = _source(script, scale, statement=False)
        _write(repo, script, src.replace("w -= lr * SCALE *", step), scale)
        git(repo, "add", ".")
        git(repo, "commit", "-qm", f"v{k + 1}")
        _run(repo, cwd, command)
    # Today: a different learning-rate scale in the module, a changed step, and the new statement.
    today_src, _ = _source(script, "", statement=True)
    today_src = today_src.replace("w -= lr * SCALE *", "w -= 0.5 * lr * SCALE *")
    _write(repo, script, today_src, "SCALE = 3.0\n")
    git(repo, "commit", "-qam", "v3")
    before = user_state(repo)

    out = flor(repo / cwd, "replay", "--apply", "w_sum", "--yes")
    assert out.returncode == 0, out.stderr
    assert user_state(repo) == before

    runs = json.loads(flor(repo, "runs", "--format", "json").stdout)
    values = []
    for k, ((scale, step), run) in enumerate(zip(VERSIONS, runs, strict=True)):
        hand = tmp_path / f"hand{k}"
        hand.mkdir()
        git(hand, "init", "-q")
        hand_src, _ = _source(script, "", statement=True)
        _write(hand, script, hand_src.replace("w -= lr * SCALE *", step), scale)
        _run(hand, cwd, command)
        want = git_flor.dataframe("w_sum", repo=pygit2.Repository(str(hand)))
        got = git_flor.dataframe("w_sum", run=run["run"], repo=pygit2.Repository(str(repo)))
        assert len(want) == 4
        assert got["w_sum"].tolist() == want["w_sum"].tolist()
        assert got["epoch"].tolist() == want["epoch"].tolist()
        values.append(got["w_sum"].tolist())
    assert values[0] != values[1]
