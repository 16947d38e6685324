"""Propagation that follows the data, end to end through the installed `git flor`:
`propagate`, `check propagate` and `replay` place a statement where what it reads exists,
agree on what cannot be placed (imported modules included), and warn about drift."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pygit2

import git_flor
from tests.conftest import flor, git, run_script, user_state

PAST = textwrap.dedent(
    """\
    import numpy as np
    import git_flor as flor

    seed = flor.arg("seed", 0)
    steps = flor.arg("steps", 3)
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(64, 4))
    y = X @ np.array([1.0, -2.0, 0.5, 3.0]) + 0.1 * rng.normal(size=64)
    w = np.zeros(4)
    with flor.checkpointing(w=w):
        for epoch in flor.loop("epoch", range(steps)):
            w -= 0.1 * X.T @ (X @ w - y) / len(X)
            flor.log("loss", float(np.mean((X @ w - y) ** 2)))
    """
)
TODAY = textwrap.dedent(
    """\
    import numpy as np
    import git_flor as flor


    def make_data(seed):
        rng = np.random.default_rng(seed)
        X = rng.normal(size=(64, 4))
        y = X @ np.array([1.0, -2.0, 0.5, 3.0]) + 0.1 * rng.normal(size=64)
        return X, y


    seed = flor.arg("seed", 0)
    steps = flor.arg("steps", 3)
    X, y = make_data(seed)
    flor.log("data_mean", float(y.mean()))
    w = np.zeros(4)
    with flor.checkpointing(w=w):
        for epoch in flor.loop("epoch", range(steps)):
            w -= 0.1 * X.T @ (X @ w - y) / len(X)
            flor.log("loss", float(np.mean((X @ w - y) ** 2)))
    """
)
BY_HAND = PAST.replace("+ 0.1 * rng.normal(size=64)\n",
                       "+ 0.1 * rng.normal(size=64)\nflor.log(\"data_mean\", float(y.mean()))\n")


def _project(tmp_path: Path, files: dict[str, str]) -> Path:
    repo = tmp_path / "project"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    for name, text in files.items():
        (repo / name).write_text(text)
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "the old version")
    return repo


def test_helper_today_inline_in_the_past_replays_to_the_hand_edited_value(tmp_path: Path) -> None:
    repo = _project(tmp_path, {"train.py": PAST})
    run_script(repo, "train.py", "--kwargs", "seed=3")
    (repo / "train.py").write_text(TODAY)  # today: data from a helper, and the new statement

    shown = flor(repo, "propagate", "HEAD", "--", "train.py")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == BY_HAND  # after `y = ...`, not after `steps = ...` where y is unbound
    assert "warning: train.py: data_mean: `y` is computed differently" in shown.stderr
    report = json.loads(flor(repo, "propagate", "HEAD", "--json").stdout)
    assert report[0]["placements"][0]["to_line"] == 9
    assert [w["variable"] for w in report[0]["warnings"]] == ["y"]
    gate = flor(repo, "check", "propagate")
    assert gate.returncode == 0, gate.stdout + gate.stderr  # drift warns, it does not fail
    assert "warning" in gate.stdout and "`y` is computed differently" in gate.stdout

    before = user_state(repo)
    out = flor(repo, "replay", "--apply", "data_mean", "--yes")
    assert out.returncode == 0, out.stderr
    assert user_state(repo) == before

    hand = tmp_path / "hand"
    hand.mkdir()
    git(hand, "init", "-q")
    (hand / "train.py").write_text(BY_HAND)
    run_script(hand, "train.py", "--kwargs", "seed=3")
    want = git_flor.dataframe("data_mean", repo=pygit2.Repository(str(hand)))["data_mean"].tolist()
    got = git_flor.dataframe("data_mean", repo=pygit2.Repository(str(repo)))["data_mean"].tolist()
    assert got == want and len(got) == 1 and isinstance(got[0], float)


RUNNING_TODAY = PAST.replace(
    "    for epoch in flor.loop(\"epoch\", range(steps)):\n",
    "    total = 0.0\n    for epoch in flor.loop(\"epoch\", range(steps)):\n"
    "        total += float(w.sum())\n        flor.log(\"running\", total)\n")


def test_no_valid_position_fails_propagate_check_and_replay_alike(tmp_path: Path) -> None:
    # The past binds `total` only after the training loop; today's statement is inside it.
    past = PAST + "total = float(w.sum())\n"
    repo = _project(tmp_path, {"train.py": past})
    run_script(repo)
    (repo / "train.py").write_text(RUNNING_TODAY)

    out = flor(repo, "propagate", "HEAD", "--", "train.py")
    assert out.returncode == 3
    assert "could not place train.py: running: reads `total`, which is not bound on every path" \
        in out.stderr and "without moving it out of the loop at line 11" in out.stderr
    gate = flor(repo, "check", "propagate")
    assert gate.returncode == 3
    assert "FAILED" in gate.stdout and "train.py: running: reads `total`" in gate.stdout
    replay = flor(repo, "replay", "--apply", "running", "--yes")
    assert replay.returncode == 3 and "reads `total`" in replay.stderr


MODEL = textwrap.dedent(
    """\
    import numpy as np
    import git_flor as flor


    def update(w, x, y, lr):
        g = x.T @ (x @ w - y) / len(x)
        w -= lr * g
        return w
    """
)
SCRIPT = textwrap.dedent(
    """\
    import numpy as np
    import git_flor as flor
    import model

    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    y = X @ np.array([1.0, -1.0, 2.0])
    w = np.zeros(3)
    with flor.checkpointing(w=w):
        for epoch in flor.loop("epoch", range(2)):
            model.update(w, X, y, 0.1)
    """
)


def test_check_propagate_covers_the_modules_replay_propagates_into(tmp_path: Path) -> None:
    repo = _project(tmp_path, {"model.py": MODEL, "train.py": SCRIPT})
    run_script(repo)
    # Today `update` clips the step and logs the clipped norm; the old `update` has no `step`.
    (repo / "model.py").write_text(MODEL.replace(
        "    w -= lr * g\n",
        "    step = np.clip(lr * g, -1, 1)\n    flor.log(\"step_norm\", float(np.linalg.norm(step)))\n"
        "    w -= step\n"))
    gate = flor(repo, "check", "propagate", "--format", "json")
    assert gate.returncode == 3, gate.stdout
    [version] = json.loads(gate.stdout)["versions"]
    assert version["files"] == ["model.py"] and version["ok"] is False
    assert version["failures"] == [{"path": "model.py", "name": "step_norm",
                                    "reason": "reads `step`, which the past version never defines"}]
    text = flor(repo, "check", "propagate")
    assert "FAILED  train.py as run at" in text.stdout and "model.py: step_norm: reads `step`" in text.stdout
    assert "-- model.py" in text.stderr  # how to look at it
    replay = flor(repo, "replay", "--apply", "step_norm", "--yes")
    assert replay.returncode == 3 and "model.py: step_norm: reads `step`" in replay.stderr

    # A statement that fits in the module passes the gate, for the module.
    (repo / "model.py").write_text(MODEL.replace(
        "    w -= lr * g\n", "    w -= lr * g\n    flor.log(\"g_norm\", float(np.linalg.norm(g)))\n"))
    ok = json.loads(flor(repo, "check", "propagate", "--format", "json").stdout)
    assert ok["ok"] is True and ok["versions"][0]["placed"] == ["g_norm"]
    assert ok["versions"][0]["files"] == ["model.py"]
