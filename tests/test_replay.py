"""Replay: hindsight values equal a full re-run of each old version with the statements by hand."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pygit2
import pytest

import git_flor
from tests.conftest import flor, git, run_script, user_state

V1 = textwrap.dedent(
    """\
    import numpy as np
    import git_flor as flor

    lr = flor.arg("lr", 0.5)
    batch = flor.arg("batch", 30)
    np.random.seed(0)
    X = np.random.normal(size=(120, 5))
    y = (X @ np.arange(5.0) > 0).astype(float)
    w = np.zeros(5)
    best = float("inf")
    with flor.checkpointing(w=w):
        for epoch in flor.loop("epoch", range(6)):
            order = np.random.permutation(len(X))
            for step in flor.loop("step", range(len(X) // batch)):
                idx = order[step * batch:(step + 1) * batch]
                p = 1 / (1 + np.exp(-X[idx] @ w))
                w -= lr * X[idx].T @ (p - y[idx]) / len(idx)
            val = float(np.mean((1 / (1 + np.exp(-X @ w)) - y) ** 2)) + np.random.normal() * 0.01
            if val > best:
                lr /= 4.0
            best = min(best, val)
            flor.log("val", val)
    """
)

# The second version moves training into a function (the loop's variables become locals).
V2 = textwrap.dedent(
    """\
    import numpy as np
    import git_flor as flor


    def fit(X, y, w, lr, batch):
        best = float("inf")
        with flor.checkpointing(w=w):
            for epoch in flor.loop("epoch", range(6)):
                order = np.random.permutation(len(X))
                for step in flor.loop("step", range(len(X) // batch)):
                    idx = order[step * batch:(step + 1) * batch]
                    p = 1 / (1 + np.exp(-X[idx] @ w))
                    w -= lr * X[idx].T @ (p - y[idx]) / len(idx)
                val = float(np.mean((1 / (1 + np.exp(-X @ w)) - y) ** 2)) + np.random.normal() * 0.01
                if val > best:
                    lr /= 4.0
                best = min(best, val)
                flor.log("val", val)
        return w


    lr = flor.arg("lr", 0.5)
    batch = flor.arg("batch", 30)
    np.random.seed(0)
    X = np.random.normal(size=(120, 5))
    y = (X @ np.arange(5.0) > 0).astype(float)
    fit(X, y, np.zeros(5), lr, batch)
    """
)

NAMES = ["n_train", "w_start", "w_end", "last_p", "p_step"]


def with_statements(src: str) -> str:
    """The hand-written version: each statement after an anchor every version has."""

    def after(text: str, anchor: str, stmt: str) -> str:
        lines = text.splitlines(keepends=True)
        hits = [i for i, line in enumerate(lines) if line.strip() == anchor]
        assert len(hits) == 1, anchor
        indent = lines[hits[0]][: len(lines[hits[0]]) - len(lines[hits[0]].lstrip())]
        lines.insert(hits[0] + 1, indent + stmt + "\n")
        return "".join(lines)

    src = after(src, "y = (X @ np.arange(5.0) > 0).astype(float)", 'flor.log("n_train", len(X))')
    src = after(src, "order = np.random.permutation(len(X))", 'flor.log("w_start", float(w.sum()))')
    src = after(src, "w -= lr * X[idx].T @ (p - y[idx]) / len(idx)", 'flor.log("p_step", float(p.max()))')
    lines = src.splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if line.lstrip().startswith("val = float("))
    indent = lines[at][: len(lines[at]) - len(lines[at].lstrip())]
    lines[at:at] = [indent + 'flor.log("w_end", float(w @ w))\n', indent + 'flor.log("last_p", float(p.mean()))\n']
    return "".join(lines)


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two committed versions (the second refactored) and a run on an uncommitted edit."""
    repo = tmp_path_factory.mktemp("replay") / "project"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "train.py").write_text(V1)
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "v1")
    run_script(repo, env={"FLOR_CKPT_BOUND": "1"})
    run_script(repo, "train.py", "--kwargs", "lr=0.2")
    (repo / "train.py").write_text(V2)
    git(repo, "commit", "-qam", "v2: training in a function")
    run_script(repo, "train.py", "--kwargs", "lr=0.3", env={"FLOR_CKPT_BOUND": "1"})
    (repo / "train.py").write_text(V2.replace("batch = flor.arg(\"batch\", 30)", "batch = flor.arg(\"batch\", 40)"))
    run_script(repo)  # dirty
    (repo / "train.py").write_text(with_statements(V2))  # today's code: the new statements
    return repo


def hand_run(tmp: Path, source: str, args: dict[str, object]) -> dict[str, list[object]]:
    """A full re-run of an old version with the statements written in by hand."""
    tmp.mkdir(parents=True)
    git(tmp, "init", "-q")
    (tmp / "train.py").write_text(with_statements(source))
    kwargs = [f"{k}={v}" for k, v in args.items()]
    run_script(tmp, "train.py", "--kwargs", *kwargs)
    df = git_flor.dataframe(*NAMES, repo=pygit2.Repository(str(tmp)))
    return {n: df[n].tolist() for n in NAMES} | {"epoch": df["epoch"].tolist(), "step": df["step"].tolist()}


def hindsight(repo: Path, run: str) -> dict[str, list[object]]:
    df = git_flor.dataframe(*NAMES, run=run, repo=pygit2.Repository(str(repo)))
    return {n: df[n].tolist() for n in NAMES} | {"epoch": df["epoch"].tolist(), "step": df["step"].tolist()}


def test_replay_equals_a_full_rerun_of_each_version_by_hand(history: Path, tmp_path: Path) -> None:
    before = user_state(history)
    out = flor(history, "replay", "--apply", ",".join(NAMES), "--yes")
    assert out.returncode == 0, out.stderr
    assert user_state(history) == before
    runs = json.loads(flor(history, "runs", "--format", "json").stdout)
    assert len(runs) == 4
    for k, run in enumerate(runs):
        info = json.loads(flor(history, "show", run["run"], "--format", "json").stdout)
        old = git(history, "show", f"{info['shadow']}:src/train.py")
        expected = hand_run(tmp_path / f"hand{k}", old, run["args"])
        got = hindsight(history, run["run"])
        assert got == expected, (run, {n: (got[n][:4], expected[n][:4]) for n in got if got[n] != expected[n]})
    # A second replay has nothing to do.
    again = flor(history, "replay", "--apply", ",".join(NAMES), "--yes")
    assert again.returncode == 0 and "nothing to replay" in again.stderr


def test_log_shows_hindsight_with_provenance(history: Path) -> None:
    flor(history, "replay", "--apply", "w_start", "--yes")
    rows = json.loads(flor(history, "log", "w_start", "val", "--provenance", "--format", "json").stdout)
    assert {r["w_start@"] for r in rows} == {"hindsight"} and {r["val@"] for r in rows} == {"recorded"}


def test_iter_where_and_revs_narrow_the_targets(history: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(history, copy, symlinks=True)
    plan = json.loads(flor(copy, "replay", "HEAD~1", "--apply", "w_end", "--iter", "epoch=2,4",
                           "--where", "lr < 0.4", "--force", "--dry-run", "--format", "json").stdout)
    runs = json.loads(flor(copy, "runs", "--format", "json").stdout)
    v1_low = [r["run"] for r in runs if r["commit"] == git(copy, "rev-parse", "HEAD~1").strip() and r["args"]["lr"] < 0.4]
    assert {j["run"] for j in plan["jobs"]} == set(v1_low) and len(v1_low) == 1
    assert sorted({e for j in plan["jobs"] for e in j["epochs"]}) == [2, 4]
    out = flor(copy, "replay", "HEAD~1", "--apply", "n_train,last_p", "--iter", "epoch=2,4", "--where", "lr < 0.4",
               "--force", "--yes")
    assert out.returncode == 0, out.stderr
    replays = [json.loads(line) for line in git(copy, "notes", "--ref=flor", "show", "HEAD~1").splitlines()]
    mine = [r for r in replays if r.get("replay_of") and set(r["final"]) == {"n_train", "last_p"}]
    assert len(mine) == 1 and mine[0]["replay_of"] == v1_low[0]
    logs = [json.loads(line) for line in git(copy, "show", f"{mine[0]['shadow']}:logs.jsonl").splitlines()]
    assert sorted(r["pos"][0][1] for r in logs if r["name"] == "last_p") == [2, 4]


def test_parallel_equals_serial(history: Path, tmp_path: Path) -> None:
    results = []
    for workers in ("1", "2"):
        copy = tmp_path / f"w{workers}"
        shutil.copytree(history, copy, symlinks=True)
        out = flor(copy, "replay", "--apply", "w_end,p_step", "--force", "--workers", workers, "--yes")
        assert out.returncode == 0, out.stderr
        results.append(flor(copy, "log", "w_end", "p_step", "--format", "csv").stdout)
    assert results[0] == results[1]


def test_a_failing_version_exits_3_and_keeps_the_others(history: Path, tmp_path: Path) -> None:
    copy = tmp_path / "fail"
    shutil.copytree(history, copy, symlinks=True)
    # Replaying epoch 3 of any version divides by zero; the jobs for other epochs succeed.
    text = (copy / "train.py").read_text()
    line = next(ln for ln in text.splitlines() if ln.strip() == 'flor.log("w_end", float(w @ w))')
    indent = line[: len(line) - len(line.lstrip())]
    (copy / "train.py").write_text(text.replace(line, line + "\n" + indent + 'flor.log("boom", 1 / (epoch - 3))'))
    out = flor(copy, "replay", "--apply", "boom", "--yes", "--iter", "epoch=0..5")
    assert out.returncode == 3, out.stderr
    assert "ZeroDivisionError" in out.stderr
    df = git_flor.dataframe("boom", repo=pygit2.Repository(str(copy)))
    assert df["boom"].notna().sum() > 0  # the jobs that did not reach epoch 3 were kept


def test_replay_after_gc_of_checkpoints_falls_back_to_reexecution(history: Path, tmp_path: Path) -> None:
    copy = tmp_path / "gc"
    shutil.copytree(history, copy, symlinks=True)
    for ref in git(copy, "for-each-ref", "--format=%(refname)", "refs/flor/manifests/").split():
        git(copy, "update-ref", "-d", ref)
    shutil.rmtree(copy / ".git" / "flor" / "objects")
    plan = json.loads(flor(copy, "replay", "--apply", "w_end", "--force", "--dry-run", "--format", "json").stdout)
    assert {j["start_from"] for j in plan["jobs"]} == {-1} and {j["mode"] for j in plan["jobs"]} == {"reexec"}
    before = flor(history, "log", "w_end", "--format", "csv").stdout
    assert flor(copy, "replay", "--apply", "w_end", "--force", "--yes").returncode == 0
    assert flor(copy, "log", "w_end", "--format", "csv").stdout == before


REAL = textwrap.dedent(
    """\
    import argparse
    import numpy as np
    import git_flor as flor

    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=0.5)
    parser.add_argument("--data", default="data/train.npz")
    args = parser.parse_args()

    np.random.seed(7)
    data = np.load(args.data)
    X, y = data["X"], data["y"]
    w = np.zeros(X.shape[1])
    lr = args.lr
    best_val_loss = None
    with flor.checkpointing(w=w):
        for epoch in flor.loop("epoch", range(args.epochs)):
            perm = np.random.permutation(len(X))
            for step in flor.loop("step", range(4)):
                idx = perm[step * 25:(step + 1) * 25]
                p = 1 / (1 + np.exp(-X[idx] @ w))
                w -= lr * X[idx].T @ (p - y[idx]) / len(idx)
            val_loss = float(np.mean((1 / (1 + np.exp(-X @ w)) - y) ** 2)) + np.random.normal() * 0.02
            if best_val_loss is None or val_loss < best_val_loss:
                best_val_loss = val_loss
                np.save("model.npy", w)
            else:
                lr /= 4.0
            with open("train.log", "a") as fh:
                fh.write(f"{epoch} {val_loss}\\n")
            flor.log("val_loss", val_loss)
    """
)


def test_a_real_shaped_script_writes_nothing_of_the_users(tmp_path: Path) -> None:
    repo = tmp_path / "real"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / ".gitignore").write_text("data/\nmodel.npy\ntrain.log\nmodel.pt\n")
    (repo / "data").mkdir()
    rng = __import__("numpy").random.default_rng(1)
    X = rng.normal(size=(100, 4))
    __import__("numpy").savez(repo / "data" / "train.npz", X=X, y=(X.sum(axis=1) > 0).astype(float))
    (repo / "train.py").write_text(REAL)
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "real")
    run_script(repo, "train.py", "--epochs", "6", "--lr", "0.8", env={"FLOR_CKPT_BOUND": "1"})
    (repo / "notes.txt").write_text("an untracked file of the user's\n")
    today = REAL.replace("        val_loss = float(", '        flor.log("w_norm", float(w @ w))\n        flor.log("lr_now", lr)\n        val_loss = float(')
    assert today != REAL
    (repo / "train.py").write_text(today)
    before = user_state(repo)
    out = flor(repo, "replay", "--apply", "w_norm,lr_now", "--yes")
    assert out.returncode == 0, out.stderr
    assert user_state(repo) == before  # model.npy, train.log, data/, notes.txt: byte-identical
    hand = tmp_path / "hand"
    shutil.copytree(repo, hand, symlinks=True, ignore=shutil.ignore_patterns(".git"))
    (hand / "model.npy").unlink()
    (hand / "train.log").unlink()
    git(hand, "init", "-q")
    run_script(hand, "train.py", "--epochs", "6", "--lr", "0.8")
    want = git_flor.dataframe("w_norm", "lr_now", repo=pygit2.Repository(str(hand)))
    got = git_flor.dataframe("w_norm", "lr_now", repo=pygit2.Repository(str(repo)))
    assert got["w_norm"].tolist() == want["w_norm"].tolist()
    assert got["lr_now"].tolist() == want["lr_now"].tolist() and len(set(want["lr_now"])) > 1


def test_skip_mode_gives_the_same_values_as_reexecution(history: Path, tmp_path: Path) -> None:
    copy = tmp_path / "skip"
    shutil.copytree(history, copy, symlinks=True)
    flor(copy, "replay", "--apply", "w_start,w_end", "--yes")  # whatever the first test left
    before = flor(copy, "log", "w_start", "w_end", "--format", "csv").stdout
    plan = json.loads(flor(copy, "replay", "--apply", "w_start,w_end", "--force", "--dry-run", "--format", "json").stdout)
    assert "skip" in {j["mode"] for j in plan["jobs"]}
    out = flor(copy, "replay", "--apply", "w_start,w_end", "--force", "--yes")
    assert out.returncode == 0, out.stderr
    assert flor(copy, "log", "w_start", "w_end", "--format", "csv").stdout == before


TORCH = textwrap.dedent(
    """\
    import torch
    from torch.utils.data import DataLoader, TensorDataset
    import git_flor as flor

    torch.manual_seed(0)
    X = torch.randn(192, 8)
    y = (X[:, :2].sum(dim=1, keepdim=True) > 0).float()
    loader = DataLoader(TensorDataset(X, y), batch_size=32, shuffle=True)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=flor.arg("lr", 0.3), momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    with flor.checkpointing(model=model, optimizer=opt, scheduler=sched):
        for epoch in flor.loop("epoch", range(5)):
            model.train()
            for xb, yb in flor.loop("step", loader):
                opt.zero_grad()
                loss = torch.nn.functional.binary_cross_entropy_with_logits(model(xb), yb)
                loss.backward()
                opt.step()
            model.eval()
            with torch.no_grad():
                val = torch.nn.functional.binary_cross_entropy_with_logits(model(X), y).item()
            sched.step()
            flor.log("val", val)
    torch.save(model, "model.pt")
    """
)


def test_torch_replay_equals_hand_rerun(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    repo = tmp_path / "torch"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / ".gitignore").write_text("model.pt\n")
    (repo / "train.py").write_text(TORCH)
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "torch")
    run_script(repo, env={"FLOR_CKPT_BOUND": "1"})
    run_script(repo, "train.py", "--kwargs", "lr=0.1")
    today = TORCH.replace(
        "        model.eval()\n",
        "        flor.log(\"wnorm\", sum(float(p.norm()) for p in model.parameters()))\n"
        "        model.eval()\n",
    ).replace(
        "        for xb, yb in flor.loop(\"step\", loader):\n",
        "        for xb, yb in flor.loop(\"step\", loader):\n"
        "            flor.log(\"batch0\", float(xb[0, 0]))\n",
    )
    assert today.count("flor.log(") == TORCH.count("flor.log(") + 2
    (repo / "train.py").write_text(today)
    before = user_state(repo)
    plan = json.loads(flor(repo, "replay", "--apply", "wnorm", "--dry-run", "--format", "json").stdout)
    assert "skip" in {j["mode"] for j in plan["jobs"]}  # model is checkpointed; sched.step() is after
    out = flor(repo, "replay", "--apply", "wnorm,batch0", "--yes")
    assert out.returncode == 0, out.stderr
    assert user_state(repo) == before  # model.pt untouched although the script saves it
    for k, run in enumerate(json.loads(flor(repo, "runs", "--format", "json").stdout)):
        hand = tmp_path / f"hand{k}"
        hand.mkdir()
        git(hand, "init", "-q")
        (hand / "train.py").write_text(today)
        run_script(hand, "train.py", "--kwargs", f"lr={run['args']['lr']}")
        want = git_flor.dataframe("wnorm", "batch0", repo=pygit2.Repository(str(hand)))
        got = git_flor.dataframe("wnorm", "batch0", run=run["run"], repo=pygit2.Repository(str(repo)))
        assert got["wnorm"].tolist() == want["wnorm"].tolist()
        assert got["batch0"].tolist() == want["batch0"].tolist()


def test_ctrl_c_stops_cleanly_and_keeps_what_finished(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    slow = f"slow_{os.getpid()}.py"  # a name no other process on this machine runs
    repo = tmp_path / "ctrlc"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / slow).write_text(textwrap.dedent(
        """\
        import time
        import git_flor as flor
        x = flor.arg("x", 1)
        for epoch in flor.loop("epoch", range(3)):
            time.sleep(0.01 if x == 1 else 3.0)
            flor.log("v", epoch * x)
        """
    ))
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "slow")
    run_script(repo, slow)
    run_script(repo, slow, "--kwargs", "x=2")
    (repo / slow).write_text((repo / slow).read_text() + "    flor.log(\"h\", epoch + x)\n")
    # As a terminal's Ctrl-C does: SIGINT to the foreground process group (python -m git_flor is
    # what `git flor` runs; git itself just dies of the signal).
    # A tag in the environment, which replay's children inherit: this test looks for its own
    # processes only (another copy of the suite may be replaying slow.py right now).
    tag = f"FLOR_TEST_TAG={tmp_path.name}-{os.getpid()}"
    env = {**os.environ, tag.split("=")[0]: tag.split("=")[1]}
    proc = subprocess.Popen([sys.executable, "-m", "git_flor", "replay", "--apply", "h", "--yes", "--workers", "1"],
                            cwd=repo, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, env=env)
    deadline = time.time() + 60
    while flor(repo, "log", "h").returncode != 0:  # until the fast run's values are written
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    rows = json.loads(flor(repo, "log", "h", "--format", "json").stdout)
    assert {r["run"] for r in rows if r["h"] is not None}  # the fast run's values were kept
    assert _tagged(tag) == []  # replay waited for its children before exiting


def _tagged(tag: str) -> list[int]:
    """Processes whose environment holds ``tag`` (Linux /proc; elsewhere the check is skipped)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if tag.encode() in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_a_statement_added_in_an_imported_module_is_replayed(tmp_path: Path) -> None:
    repo = tmp_path / "multi"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "model.py").write_text(textwrap.dedent(
        """\
        import numpy as np
        import git_flor as flor


        def update(w, x, y, lr):
            g = x.T @ (x @ w - y) / len(x)
            w -= lr * g
            return w
        """
    ))
    (repo / "train.py").write_text(textwrap.dedent(
        """\
        import numpy as np
        import git_flor as flor
        import model

        rng = np.random.default_rng(0)
        X = rng.normal(size=(40, 3))
        y = X @ np.array([1.0, -1.0, 2.0])
        w = np.zeros(3)
        with flor.checkpointing(w=w):
            for epoch in flor.loop("epoch", range(3)):
                for step in flor.loop("step", range(2)):
                    model.update(w, X[step * 20:(step + 1) * 20], y[step * 20:(step + 1) * 20], 0.1)
                flor.log("w0", float(w[0]))
        """
    ))
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "two files")
    run_script(repo)
    today = (repo / "model.py").read_text().replace(
        "    w -= lr * g\n", "    w -= lr * g\n    flor.log(\"g_norm\", float(np.linalg.norm(g)))\n")
    (repo / "model.py").write_text(today)
    out = flor(repo, "replay", "--apply", "g_norm", "--yes")
    assert out.returncode == 0, out.stderr
    hand = tmp_path / "hand"
    shutil.copytree(repo, hand, ignore=shutil.ignore_patterns(".git"))
    git(hand, "init", "-q")
    run_script(hand)
    want = git_flor.dataframe("g_norm", repo=pygit2.Repository(str(hand)))
    got = git_flor.dataframe("g_norm", repo=pygit2.Repository(str(repo)))
    assert got[["epoch", "step", "g_norm"]].astype(object).values.tolist() == \
        want[["epoch", "step", "g_norm"]].astype(object).values.tolist()
    assert len(got) == 6
