"""Checkpoints as a model registry: `flor.load` and `git flor ckpt export`/`list`.

The loaded state is compared bit for bit with a hand re-run: the same script,
run outside any repository for the first k+1 epochs, saving its state at the
end. Runs are recorded with FLOR_CKPT_BOUND=1 so every epoch is a checkpoint.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import git_flor
from tests.conftest import TRAIN, flor, git, run_script

EVERY = {"FLOR_CKPT_BOUND": "1"}

NUMPY_TRAIN = TRAIN + "np.save('w_final.npy', w)\n"

TORCH_TRAIN = textwrap.dedent(
    """\
    import torch
    import git_flor as flor

    torch.set_num_threads(1)
    torch.manual_seed(0)
    lr = flor.arg("lr", 1e-2)
    epochs = flor.arg("epochs", 6)
    X = torch.randn(256, 10)
    y = X @ torch.randn(10, 1) + 0.1 * torch.randn(256, 1)
    net = torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    with flor.checkpointing(model=net, optimizer=opt):
        for epoch in flor.loop("epoch", range(epochs)):
            perm = torch.randperm(256)
            for step in flor.loop("step", range(8)):
                idx = perm[step * 32:(step + 1) * 32]
                opt.zero_grad()
                loss = torch.nn.functional.mse_loss(net(X[idx]), y[idx])
                loss.backward()
                opt.step()
                flor.log("loss", loss.item())
            with torch.no_grad():
                flor.log("val_loss", torch.nn.functional.mse_loss(net(X), y).item())
    torch.save({"model": net.state_dict(), "optimizer": opt.state_dict()}, "final.pt")
    """
)


def hand_rerun(tmp_path: Path, script: str, *args: str) -> Path:
    """Run ``script`` outside any repository (git-flor records nothing there); return its directory."""
    where = tmp_path / "outside"
    where.mkdir(exist_ok=True)
    (where / "train.py").write_text(script)
    run_script(where, "train.py", *args, env={"GIT_CEILING_DIRECTORIES": str(tmp_path)})
    return where


def run_ids(cwd: Path) -> list[str]:
    out = flor(cwd, "runs", "--format", "json")
    assert out.returncode == 0, out.stderr
    return [r["run"] for r in json.loads(out.stdout)]


def test_numpy_state_at_an_epoch_equals_a_hand_rerun_of_that_many_epochs(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (repo / "train.py").write_text(NUMPY_TRAIN)
    run_script(repo, "train.py", "--kwargs", "epochs=5", env=EVERY)
    (run,) = run_ids(repo)
    expected = np.load(hand_rerun(tmp_path, NUMPY_TRAIN, "--kwargs", "epochs=3") / "w_final.npy")
    monkeypatch.chdir(repo)

    got = git_flor.load("w", run=run[:6], iter={"epoch": 2})
    assert got.dtype == expected.dtype and got.tobytes() == expected.tobytes()
    into = np.zeros(4)
    assert git_flor.load("w", run=run, iter=np.int64(2), into=into) is into  # in place
    assert into.tobytes() == expected.tobytes()
    last = git_flor.load("w")  # the newest run, its last checkpoint: the final weights
    assert last.tobytes() == np.load(repo / "w_final.npy").tobytes()

    with pytest.raises(git_flor.FlorError, match=r"saved checkpoints of epoch 0, 1, 2, 3, 4 only, not epoch=9"):
        git_flor.load("w", run=run, iter={"epoch": 9})
    with pytest.raises(git_flor.FlorError, match=r"per 'epoch' .*, not 'step'"):
        git_flor.load("w", run=run, iter={"step": 1})
    with pytest.raises(git_flor.FlorError, match=r"no saved 'model' at epoch=4; saved there: .*w"):
        git_flor.load("model", run=run)
    with pytest.raises(git_flor.FlorError, match=r"in place into a ndarray of shape \(3,\)"):
        git_flor.load("w", run=run, into=np.zeros(3))

    out = tmp_path / "w.npy"
    res = flor(repo, "ckpt", "export", run[:6], "--name", "w", "--iter", "epoch=2", "-o", str(out))
    assert res.returncode == 0, res.stderr
    assert "numpy.load" in res.stderr
    assert np.load(out).tobytes() == expected.tobytes()
    for bad, code, says in (
        (["zzzz", "--name", "w"], 2, "unknown run 'zzzz'"),
        ([run, "--name", "w", "--iter", "epoch=1,2"], 2, "names one iteration"),
        ([run, "--name", "nope"], 2, "no saved 'nope'"),
    ):
        res = flor(repo, "ckpt", "export", *bad, "-o", str(tmp_path / "x"))
        assert res.returncode == code and says in res.stderr and len(res.stderr.splitlines()) == 1, res.stderr
    listing = json.loads(flor(repo, "ckpt", "list", run[:6], "--format", "json").stdout)
    assert sorted({(r["iteration"], r["name"]) for r in listing if r["name"] == "w"}) == [(i, "w") for i in range(5)]


def test_torch_model_of_the_best_run_loads_bit_for_bit_and_exports_for_torch_load(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch = pytest.importorskip("torch")
    (repo / "train.py").write_text(TORCH_TRAIN)
    git(repo, "commit", "-qam", "torch model")
    for lr in ("0.0001", "0.01"):
        run_script(repo, "train.py", "--kwargs", f"lr={lr}", env=EVERY)
    monkeypatch.chdir(repo)

    # The README's recipe: the run with the best validation loss at some epoch, its model there.
    df = git_flor.dataframe("val_loss", "lr")
    best = df.loc[df["val_loss"].idxmin()]
    assert best["lr"] == 0.01 and best["epoch"] == 5
    net = torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    k = 3
    assert git_flor.load("model", run=best["run"], iter={"epoch": k}, into=net) is net

    expected = torch.load(hand_rerun(tmp_path, TORCH_TRAIN, "--kwargs", "lr=0.01", f"epochs={k + 1}") / "final.pt")
    for key, tensor in expected["model"].items():
        assert net.state_dict()[key].numpy().tobytes() == tensor.numpy().tobytes(), key
    opt_state = git_flor.load("optimizer", run=best["run"], iter=k)  # no into: the saved state_dict
    assert opt_state["state"][0]["exp_avg"].numpy().tobytes() == expected["optimizer"]["state"][0]["exp_avg"].numpy().tobytes()
    assert opt_state["state"][0]["step"] == expected["optimizer"]["state"][0]["step"]

    out = tmp_path / "model.pt"
    res = flor(repo, "ckpt", "export", best["run"], "--name", "model", "--iter", f"epoch={k}", "-o", str(out))
    assert res.returncode == 0 and "torch.load" in res.stderr, res.stderr
    exported = torch.load(out, weights_only=True)
    assert exported.keys() == expected["model"].keys()
    assert all(torch.equal(exported[key], t) for key, t in expected["model"].items())


def test_a_payload_only_in_the_file_store_is_fetched(repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Clone A records and pushes (payloads to the store); clone B pulls the manifests only, then loads."""
    store = f"file://{tmp_path / 'store'}"
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    git(repo, "remote", "add", "origin", str(remote))
    git(repo, "push", "-q", "origin", "main")
    git(repo, "config", "flor.store", store)
    (repo / "train.py").write_text(NUMPY_TRAIN)
    run_script(repo, "train.py", env=EVERY)
    (run,) = run_ids(repo)
    assert flor(repo, "push", "origin").returncode == 0

    b = tmp_path / "b"
    git(tmp_path, "clone", "-q", str(remote), str(b))
    assert flor(b, "pull", "origin").returncode == 0
    objects = Path(git(b, "rev-parse", "--git-common-dir").strip())
    objects = (objects if objects.is_absolute() else b / objects) / "flor" / "objects"
    assert not objects.exists() or not any(p.is_file() for p in objects.rglob("*"))
    listed = flor(b, "ckpt", "list", run)
    assert "(in the store only)" in listed.stdout, listed.stdout
    no_store = flor(b, "ckpt", "export", run, "--name", "w", "-o", str(tmp_path / "w.npy"))
    assert no_store.returncode == 1 and "no store is configured" in no_store.stderr

    git(b, "config", "flor.store", store)
    monkeypatch.chdir(b)
    got = git_flor.load("w", run=run, iter={"epoch": 1})
    monkeypatch.chdir(repo)
    assert got.tobytes() == git_flor.load("w", run=run, iter={"epoch": 1}).tobytes()
    assert sum(1 for p in objects.rglob("*") if p.is_file()) == 1  # exactly the payload it needed


def test_load_is_lazy_and_says_where_nothing_was_saved(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code = "import sys, git_flor\nprint(callable(git_flor.load), 'pygit2' in sys.modules)\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False"]
    (repo / "nockpt.py").write_text("import git_flor as flor\nflor.log('x', 1)\n")
    run_script(repo, "nockpt.py")
    (run,) = run_ids(repo)
    monkeypatch.chdir(repo)
    with pytest.raises(git_flor.FlorError, match="saved no checkpoints"):
        git_flor.load("model", run=run[:5])
    with pytest.raises(git_flor.FlorError, match="no run saved a checkpoint of 'model'"):
        git_flor.load("model")
    listed = flor(repo, "ckpt", "list", run[:5])
    assert listed.returncode == 2 and "saved no checkpoints" in listed.stderr


def test_an_object_of_the_scripts_own_class_loads_into_an_instance(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (repo / "own.py").write_text(textwrap.dedent(
        """\
        import git_flor as flor

        class Trainer:
            def __init__(self):
                self.history = []
                self.best = 1.0

        tr = Trainer()
        with flor.checkpointing(trainer=tr):
            for epoch in flor.loop("epoch", range(3)):
                tr.history.append(epoch)
                tr.best = min(tr.best, 1 / (epoch + 2))
        """
    ))
    run_script(repo, "own.py", env=EVERY)
    monkeypatch.chdir(repo)

    class Trainer:  # this program's own class of that name (the script's was __main__.Trainer)
        pass

    with pytest.raises(git_flor.FlorError, match="class this program does not define"):
        git_flor.load("trainer", iter={"epoch": 1})
    tr = Trainer()
    assert git_flor.load("trainer", iter={"epoch": 1}, into=tr) is tr
    assert (tr.history, tr.best) == ([0, 1], 1 / 3)
