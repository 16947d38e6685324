"""Replay speed (issue 18): warm workers, per-job thread caps, no self-defeating splits.

Real torch training in real temporary repositories, the installed ``git flor``;
hindsight values are compared with a hand-edited full re-run, exactly.
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pygit2
import pytest

import git_flor
from tests.conftest import flor, git, run_script

torch = pytest.importorskip("torch")

TRAIN = textwrap.dedent(
    """\
    import os
    import torch
    import git_flor as flor

    torch.manual_seed(flor.arg("seed", 0))
    X = torch.randn(64, 8)
    y = X @ torch.arange(8.0)
    model = torch.nn.Linear(8, 1)
    opt = torch.optim.SGD(model.parameters(), lr=flor.arg("lr", 0.01))
    with flor.checkpointing(model=model, opt=opt):
        for epoch in flor.loop("epoch", range(4)):
            for step in flor.loop("step", range(4)):
                xb, yb = X[step * 16:(step + 1) * 16], y[step * 16:(step + 1) * 16]
                loss = ((model(xb).squeeze(1) - yb) ** 2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
            flor.log("loss", float(loss))
    """
)
ANCHOR = '        flor.log("loss", float(loss))\n'
WSUM = '        flor.log("wsum", float(model.weight.sum()))\n'
PROBES = (
    '        flor.log("threads", torch.get_num_threads())\n'
    '        flor.log("warm", "--serve" in open(f"/proc/{os.getppid()}/cmdline").read())\n'
)


def _values(repo: Path, names: list[str], run: str | None = None) -> dict[str, list[object]]:
    df = git_flor.dataframe(*names, run=run, repo=pygit2.Repository(str(repo)))
    return {n: df[n].tolist() for n in names}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three recorded torch runs (seeds 0-2), a checkpoint every epoch; today's code has the statements."""
    repo = tmp_path_factory.mktemp("speed") / "project"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "train.py").write_text(TRAIN)
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "v1")
    for seed in range(3):
        run_script(repo, "train.py", "--kwargs", f"seed={seed}", env={"FLOR_CKPT_BOUND": "1"})
    (repo / "train.py").write_text(TRAIN.replace(ANCHOR, ANCHOR + WSUM + PROBES))
    return repo


def test_warm_worker_replay_equals_a_hand_rerun_with_threads_capped(runs: Path, tmp_path: Path) -> None:
    out = flor(runs, "replay", "--apply", "wsum,threads,warm", "--workers", "2", "--yes", "--force")
    assert out.returncode == 0, out.stderr
    cores = os.cpu_count() or 1
    for run in json.loads(flor(runs, "runs", "--format", "json").stdout):
        got = _values(runs, ["wsum", "threads", "warm"], run["run"])
        assert got["warm"] == [True] * 4, "each job is forked from a warm worker"
        assert all(t * 2 <= max(cores, 2) for t in got["threads"]), got["threads"]  # threads × workers ≤ cores
        hand = tmp_path / f"hand{run['args']['seed']}"
        hand.mkdir()
        git(hand, "init", "-q")
        (hand / "train.py").write_text(TRAIN.replace(ANCHOR, ANCHOR + WSUM))
        run_script(hand, "train.py", "--kwargs", f"seed={run['args']['seed']}")
        assert got["wsum"] == _values(hand, ["wsum"])["wsum"]


def test_cold_start_gives_the_same_values(runs: Path) -> None:
    """FLOR_WARM=0: a fresh interpreter per job, the same values (and still the thread cap)."""
    before = {r["run"]: _values(runs, ["wsum"], r["run"]) for r in
              json.loads(flor(runs, "runs", "--format", "json").stdout)}
    os.environ["FLOR_WARM"] = "0"
    try:
        out = flor(runs, "replay", "--apply", "wsum,threads,warm", "--workers", "2", "--yes", "--force")
    finally:
        del os.environ["FLOR_WARM"]
    assert out.returncode == 0, out.stderr
    for run, values in before.items():
        got = _values(runs, ["wsum", "threads", "warm"], run)
        assert got["warm"] == [False] * 4 and got["wsum"] == values["wsum"]
        assert all(t * 2 <= max(os.cpu_count() or 1, 2) for t in got["threads"])


def test_one_job_per_run_when_runs_are_as_many_as_workers(runs: Path) -> None:
    # A step-level statement re-executes every epoch; a checkpoint after each would allow a split.
    (runs / "train.py").write_text((runs / "train.py").read_text().replace(
        "            opt.step()\n", '            opt.step()\n            flor.log("b", float(model.bias))\n'))
    plan = json.loads(flor(runs, "replay", "--apply", "b", "--workers", "2", "--dry-run", "--format", "json").stdout)
    per_run: dict[str, int] = {}
    for job in plan["jobs"]:
        per_run[job["run"]] = per_run.get(job["run"], 0) + 1
    assert len(per_run) == 3 and set(per_run.values()) == {1}, plan["jobs"]
