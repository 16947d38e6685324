"""Pipelines: prepare.py → train.py → evaluate.py run at one version read as one table.

A real repository with `git flor init`'s hooks: the three scripts run at the first
commit (train and evaluate twice, an lr sweep's second point), then on
uncommitted edits that the next commit captures. Each script also writes what
``flor.log`` returned to ``data/`` (ignored), so the joined table is checked
against what the scripts logged, not against git-flor's own per-run table.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import git_flor
from tests.conftest import TRAIN, flor, git, isolate, run_script

PREPARE = textwrap.dedent(
    """\
    import hashlib, json, os
    import git_flor as flor

    n = flor.arg("n", 96)
    rows = []
    for shard in flor.loop("shard", range(3)):
        rows.append(flor.log("shard_rows", n // 3 + shard))
    n_rows = flor.log("n_rows", sum(rows))
    data_hash = flor.log("data_hash", hashlib.sha256(repr(rows).encode()).hexdigest()[:12])
    os.makedirs("data", exist_ok=True)
    with open("data/prepare.json", "w") as f:
        json.dump({"n_rows": n_rows, "data_hash": data_hash, "shard_rows": rows}, f)
    """
)

TRAIN_STEP = textwrap.dedent(
    """\
    import json
    import numpy as np
    import git_flor as flor

    lr = flor.arg("lr", 0.1)
    n = json.load(open("data/prepare.json"))["n_rows"]
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 4))
    y = X @ np.array([1.0, -2.0, 0.5, 3.0])
    w = np.zeros(4)
    losses = []
    for epoch in flor.loop("epoch", range(3)):
        w = w - lr * X.T @ (X @ w - y) / n
        np.save(f"data/w{epoch}.npy", w)
        losses.append(flor.log("loss", float(np.mean((X @ w - y) ** 2))))
    acc = flor.log("acc", float(np.mean(np.sign(X @ w) == np.sign(y))))
    json.dump({"lr": lr, "loss": losses, "acc": acc}, open("data/train.json", "w"))
    """
)

EVALUATE = textwrap.dedent(
    """\
    import json
    import numpy as np
    import git_flor as flor

    rng = np.random.default_rng(1)
    X = rng.normal(size=(32, 4))
    y = X @ np.array([1.0, -2.0, 0.5, 3.0])
    test_loss = []
    for epoch in flor.loop("epoch", range(3)):
        w = np.load(f"data/w{epoch}.npy")
        test_loss.append(flor.log("test_loss", float(np.mean((X @ w - y) ** 2))))
    test_acc = flor.log("test_acc", float(np.mean(np.sign(X @ w) == np.sign(y))))
    json.dump({"test_loss": test_loss, "test_acc": test_acc}, open("data/evaluate.json", "w"))
    """
)

SCRIPTS = ("prepare.py", "train.py", "evaluate.py")


class Pipeline:
    """The repository, its two commits, and what each run's script logged (in run order)."""

    def __init__(self, repo: Path) -> None:
        self.repo = repo
        self.commits: list[str] = []
        self.runs: list[tuple[str, str, dict[str, Any]]] = []  # (run id, script, logged)

    def run(self, script: str, *args: str) -> None:
        run_script(self.repo, script, *args)
        logged = json.loads((self.repo / "data" / script.replace(".py", ".json")).read_text())
        listing = json.loads(flor(self.repo, "runs", "--format", "json").stdout)
        self.runs.append((listing[-1]["run"], script, logged))

    def commit(self, message: str) -> None:
        git(self.repo, "commit", "-qam", message)
        self.commits.append(git(self.repo, "rev-parse", "HEAD").strip())


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    mp = pytest.MonkeyPatch()
    isolate(tmp_path_factory, mp)
    repo = tmp_path_factory.mktemp("pipeline") / "project"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    assert flor(repo, "init").returncode == 0
    for name, text in zip(SCRIPTS, (PREPARE, TRAIN_STEP, EVALUATE)):
        (repo / name).write_text(text)
    (repo / ".gitignore").write_text("data/\n")
    git(repo, "add", ".")
    p = Pipeline(repo)
    p.commit("v1")
    for script in SCRIPTS:
        p.run(script)
    p.run("train.py", "--kwargs", "lr=0.05")  # the sweep's second point, then its evaluation
    p.run("evaluate.py")
    # v2: edit, run the pipeline on the uncommitted edits, then commit (the hook links the runs).
    (repo / "prepare.py").write_text(PREPARE.replace('flor.arg("n", 96)', 'flor.arg("n", 120)'))
    (repo / "evaluate.py").write_text(EVALUATE.replace("default_rng(1)", "default_rng(2)"))
    for script in SCRIPTS:
        p.run(script)
    p.commit("v2")
    yield p
    mp.undo()


def table(repo: Path, *args: str) -> list[dict[str, Any]]:
    out = flor(repo, "log", *args, "--format", "json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_names_of_three_scripts_join_into_one_row_per_commit(pipeline: Pipeline) -> None:
    rows = table(pipeline.repo, "n_rows", "data_hash", "lr", "acc", "test_acc")
    # At each commit each script's latest run joins: at v1 the second train and evaluate runs.
    v1 = [pipeline.runs[0], pipeline.runs[3], pipeline.runs[4]]
    v2 = pipeline.runs[5:]
    expected = []
    for commit, runs in zip(pipeline.commits, (v1, v2)):
        logged = {k: v for _, _, values in runs for k, v in values.items()}
        expected.append({
            "run": ",".join(r for r, _, _ in runs), "commit": commit, "script": "prepare.py,train.py,evaluate.py",
            "n_rows": logged["n_rows"], "data_hash": logged["data_hash"], "lr": logged["lr"],
            "acc": logged["acc"], "test_acc": logged["test_acc"],
        })
    assert [{k: v for k, v in r.items() if k != "tstamp"} for r in rows] == expected
    assert rows[0]["lr"] == 0.05 and rows[1]["n_rows"] == 40 + 41 + 42
    # The runs on v2's edits ran at v1 (their own rows say so); joined, they are v2's version.
    assert {r["commit"] for r in table(pipeline.repo, "n_rows", "--no-join", "--run", v2[0][0])} == {pipeline.commits[0]}
    assert table(pipeline.repo, "n_rows", "acc", "test_acc", "--rev", "HEAD")[0]["commit"] == pipeline.commits[1]


def test_loop_values_join_on_shared_loop_names(pipeline: Pipeline) -> None:
    rows = table(pipeline.repo, "n_rows", "shard_rows", "loss", "test_loss", "--rev", "HEAD~1")
    prepare, train, evaluate = (pipeline.runs[i][2] for i in (0, 3, 4))
    cells = [(r["shard"], r["epoch"], r["n_rows"], r["shard_rows"], r["loss"], r["test_loss"]) for r in rows]
    # prepare's shards are a loop of their own; train's and evaluate's epochs are one loop:
    # one row per epoch with both; the run-level n_rows fills every row of the version.
    assert cells == [
        *[(s, None, prepare["n_rows"], prepare["shard_rows"][s], None, None) for s in range(3)],
        *[(None, e, prepare["n_rows"], None, train["loss"][e], evaluate["test_loss"][e]) for e in range(3)],
    ]


def test_script_filter_and_one_row_per_run(pipeline: Pipeline) -> None:
    repo = pipeline.repo
    # One script: its runs, one row each (both train runs at v1), as in a one-script repository.
    rows = table(repo, "n_rows", "acc", "test_acc", "--script", "train.py")
    trains = [(r, v) for r, s, v in pipeline.runs if s == "train.py"]
    assert [(r["run"], r["script"], r["acc"], r["test_acc"]) for r in rows] == [
        (run, "train.py", logged["acc"], None) for run, logged in trains
    ]
    # Two of the three scripts: still joined, without prepare.
    rows = table(repo, "n_rows", "acc", "test_acc", "--script", "train.py", "--script", "evaluate.py")
    assert [(r["script"], r["n_rows"], r["acc"]) for r in rows] == [
        ("train.py,evaluate.py", None, pipeline.runs[3][2]["acc"]),
        ("train.py,evaluate.py", None, pipeline.runs[6][2]["acc"]),
    ]
    # --no-join: every run its own row, each with only its own values.
    rows = table(repo, "n_rows", "acc", "test_acc", "--no-join")
    assert [r["run"] for r in rows] == [r for r, _, _ in pipeline.runs]
    for row, (_, script, logged) in zip(rows, pipeline.runs):
        assert row["script"] == script
        assert {k: row[k] for k in ("n_rows", "acc", "test_acc") if row[k] is not None} == {
            k: logged[k] for k in ("n_rows", "acc", "test_acc") if k in logged
        }
    # --join with names of one script: its latest run per commit.
    assert [r["acc"] for r in table(repo, "acc", "--join")] == [pipeline.runs[3][2]["acc"], pipeline.runs[6][2]["acc"]]
    # Without names, every value of every run, one row per run (as before pipelines).
    assert {r["script"] for r in table(repo)} == set(SCRIPTS)


def test_dataframe_offers_the_same_join(pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(pipeline.repo)
    df = git_flor.dataframe("n_rows", "acc", "test_acc")
    assert list(df["script"]) == ["prepare.py,train.py,evaluate.py"] * 2
    assert list(df["commit"]) == pipeline.commits
    cli = table(pipeline.repo, "n_rows", "acc", "test_acc")
    for name in ("run", "n_rows", "acc", "test_acc"):
        assert list(df[name]) == [r[name] for r in cli]
    assert len(git_flor.dataframe("n_rows", "acc", "test_acc", join=False)) == len(pipeline.runs)


def test_a_name_two_scripts_log_keeps_their_runs_apart_unless_joined(repo: Path) -> None:
    """train.py and train_v2.py both log loss: alternatives, not stages, so no join by default."""
    (repo / "train_v2.py").write_text(TRAIN.replace('flor.arg("lr", 0.1)', 'flor.arg("lr", 0.05)'))
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "v2 script")
    run_script(repo, "train.py")
    run_script(repo, "train_v2.py")
    apart = table(repo, "loss", "val")
    assert [r["script"] for r in apart] == ["train.py"] * 12 + ["train_v2.py"] * 12
    # Joined, one row per position; where both logged a name the later-started run's value is kept.
    joined = table(repo, "loss", "val", "--join")
    assert [r["script"] for r in joined] == ["train.py,train_v2.py"] * 12
    assert [(r["epoch"], r["step"], r["loss"], r["val"]) for r in joined] == [
        (r["epoch"], r["step"], r["loss"], r["val"]) for r in apart[12:]
    ]


def test_loops_that_do_not_contain_one_another_get_rows_of_their_own(repo: Path) -> None:
    """One script, a training loop then a test loop: each loop's values on its own rows."""
    (repo / "phases.py").write_text(textwrap.dedent(
        """\
        import git_flor as flor
        for epoch in flor.loop("epoch", range(2)):
            flor.log("loss", 1.0 / (epoch + 1))
        for batch in flor.loop("batch", range(3)):
            flor.log("batch_acc", batch / 4)
        flor.log("acc", 0.75)
        """
    ))
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "phases")
    run_script(repo, "phases.py")
    rows = table(repo, "loss", "batch_acc", "acc")
    assert [(r["epoch"], r["batch"], r["loss"], r["batch_acc"], r["acc"]) for r in rows] == [
        (0, None, 1.0, None, 0.75), (1, None, 0.5, None, 0.75),
        (None, 0, None, 0.0, 0.75), (None, 1, None, 0.25, 0.75), (None, 2, None, 0.5, 0.75),
    ]
