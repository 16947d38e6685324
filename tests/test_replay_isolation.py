"""No replay write reaches the user's files; a run's own outputs are its own (issue 12, items 5–7).

Every write path a training script has — ``np.save`` to a path, ``sqlite3``,
``torch.jit.save``, ``from torch import save`` bound before git-flor is imported,
HDF5 through h5py's C library, an absolute ``out_dir`` outside the repository —
is exercised by a replay of an old run, under the kernel's isolation (a user +
mount namespace with overlays) and under the in-process guard (which refuses the
absolute ``out_dir`` instead of redirecting it). Afterwards the
user's whole tree (tracked, untracked, ignored) and the absolute output folder are
byte-identical, and the hindsight values equal hand-edited full re-runs exactly.
"""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pygit2
import pytest

import git_flor
from git_flor.replay.isolation import _probe
from tests.conftest import flor, git, run_script, user_state

TORCH = textwrap.dedent(
    """\
    from torch import save  # bound before git_flor is imported
    import os
    import sqlite3

    import numpy as np
    import torch
    import git_flor as flor

    try:
        import h5py
    except ImportError:
        h5py = None

    lr = flor.arg("lr", 0.05)
    out_dir = flor.arg("out_dir", "")
    torch.manual_seed(0)
    X = torch.randn(64, 4)
    y = X @ torch.tensor([1.0, -1.0, 2.0, 0.5])
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    os.makedirs("out", exist_ok=True)
    db = sqlite3.connect("out/results.db")
    db.execute("CREATE TABLE IF NOT EXISTS results (epoch INTEGER, loss REAL)")
    with flor.checkpointing(model=model, optimizer=opt):
        for epoch in flor.loop("epoch", range(4)):
            for step in flor.loop("step", range(4)):
                xb, yb = X[step * 16:(step + 1) * 16], y[step * 16:(step + 1) * 16]
                opt.zero_grad()
                loss = ((model(xb).squeeze(1) - yb) ** 2).mean()
                loss.backward()
                opt.step()
            w = model.weight.detach().numpy().copy()
            np.save("out/w.npy", w)
            db.execute("INSERT INTO results VALUES (?, ?)", (epoch, loss.item()))
            db.commit()
            flor.log("loss", loss.item())
    torch.jit.save(torch.jit.trace(model, X[:2]), "out/model.jit")
    save(model.state_dict(), "out/final.pt")
    if h5py is not None:
        with h5py.File("out/w.h5", "w") as fh:
            fh["w"] = w
    if out_dir:
        save(model.state_dict(), os.path.join(out_dir, "final.pt"))
        np.save(os.path.join(out_dir, "w.npy"), w)
        torch.jit.save(torch.jit.trace(model, X[:2]), os.path.join(out_dir, "model.jit"))
    """
)


def _today(src: str) -> str:
    """The statements added by hand: one in the epoch body, one after the loop's writes."""
    src = src.replace(
        "        w = model.weight.detach().numpy().copy()\n",
        "        flor.log(\"w_norm\", float(model.weight.norm()))\n"
        "        w = model.weight.detach().numpy().copy()\n",
    )
    return src + "flor.log(\"final_w0\", float(model.weight[0, 0]))\n"


def _kernel_available(tmp: Path) -> bool:
    tmp.mkdir()
    return _probe([str(tmp)]) is None


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


#: the two recorded versions: (source, learning rate); the second adds momentum
TORCH_VERSIONS = [(TORCH, "lr=0.1"),
                  (TORCH.replace("lr=lr)", "lr=lr, momentum=0.5)"), "lr=0.05")]


@pytest.fixture(scope="module")
def torch_by_hand(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, list[object]]]:
    """The hand-edited full re-runs of the old versions: the values every replay must give."""
    pytest.importorskip("torch")
    pytest.importorskip("h5py")
    out = []
    for src, lr in TORCH_VERSIONS:
        hand = tmp_path_factory.mktemp("hand") / "project"
        hand.mkdir()
        git(hand, "init", "-q")
        (hand / "train.py").write_text(_today(src))
        run_script(hand, "train.py", "--kwargs", lr)
        repo = pygit2.Repository(str(hand))
        out.append({name: git_flor.dataframe(name, repo=repo)[name].tolist() for name in ("w_norm", "final_w0")})
    return out


@pytest.mark.parametrize("mode", ["namespace", "guard"])
def test_no_write_path_reaches_the_users_files(tmp_path: Path, mode: str, monkeypatch: pytest.MonkeyPatch,
                                               torch_by_hand: list[dict[str, list[object]]]) -> None:
    if mode == "namespace" and not _kernel_available(tmp_path / "probe"):
        pytest.skip("this kernel offers no unprivileged user + mount namespaces with overlayfs")
    monkeypatch.setenv("FLOR_ISOLATION", mode)
    repo = tmp_path / "project"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / ".gitignore").write_text("out/\n")
    # The guard cannot redirect a write to an absolute folder (it refuses it): only the kernel gets one.
    exp = tmp_path / "exp"
    exp.mkdir()
    out_dir = [f"out_dir={exp}"] if mode == "namespace" else []
    for k, (src, lr) in enumerate(TORCH_VERSIONS):  # the second run overwrites the first's outputs
        (repo / "train.py").write_text(src)
        git(repo, "add", ".")
        git(repo, "commit", "-qm", f"torch v{k + 1}")
        run_script(repo, "train.py", "--kwargs", lr, *out_dir, env={"FLOR_CKPT_BOUND": "1"})
    (repo / "notes.txt").write_text("untracked, the user's\n")
    (repo / "train.py").write_text(_today(TORCH_VERSIONS[-1][0]))
    before, before_exp = user_state(repo), _files(exp)
    assert "out/w.h5" in before["files"] and "out/results.db" in before["files"]  # type: ignore[operator]

    plan = json.loads(flor(repo, "replay", "--apply", "w_norm,final_w0", "--dry-run", "--format", "json").stdout)
    assert plan["isolation"]["mode"] == mode
    out = flor(repo, "replay", "--apply", "w_norm,final_w0", "--yes")
    assert out.returncode == 0, out.stderr
    assert ("isolation: kernel" if mode == "namespace" else "isolation: in-process guard") in out.stderr
    assert user_state(repo) == before  # out/: w.npy, results.db, model.jit, final.pt, w.h5; notes.txt
    assert _files(exp) == before_exp  # the absolute out_dir too

    runs = json.loads(flor(repo, "runs", "--format", "json").stdout)
    for run, by_hand in zip(runs, torch_by_hand, strict=True):
        for name in ("w_norm", "final_w0"):
            got = git_flor.dataframe(name, run=run["run"], repo=pygit2.Repository(str(repo)))[name].tolist()
            assert got == by_hand[name], name
            assert len(got) == (4 if name == "w_norm" else 1)
    assert torch_by_hand[0] != torch_by_hand[1]


BEST = textwrap.dedent(
    """\
    import numpy as np
    import git_flor as flor

    lr = flor.arg("lr", 0.1)
    rng = np.random.default_rng(7)
    X = rng.normal(size=(60, 3))
    y = X @ np.array([2.0, -1.0, 0.5]) + rng.normal(size=60) * 0.1
    w = np.zeros(3)
    best = None
    with flor.checkpointing(w=w):
        for epoch in flor.loop("epoch", range(5)):
            for step in flor.loop("step", range(3)):
                xb, yb = X[step * 20:(step + 1) * 20], y[step * 20:(step + 1) * 20]
                w -= lr * xb.T @ (xb @ w - yb) / len(xb)
            val = float(np.mean((X @ w - y) ** 2))
            if best is None or val < best:
                best = val
                np.save("best.npy", w)
            flor.log("val", val)
    w_best = np.load("best.npy")
    flor.log("best_val", best)
    """
)


@pytest.mark.parametrize("mode", ["namespace", "guard"])
def test_a_replay_reads_its_own_outputs_not_another_runs(tmp_path: Path, mode: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    if mode == "namespace" and not _kernel_available(tmp_path / "probe"):
        pytest.skip("this kernel offers no unprivileged user + mount namespaces with overlayfs")
    monkeypatch.setenv("FLOR_ISOLATION", mode)
    repo = tmp_path / "project"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / ".gitignore").write_text("best.npy\n")
    # two versions: the second takes smaller steps, and runs at another learning rate
    versions = [(BEST, "lr=0.05"), (BEST.replace("w -= lr *", "w -= 0.8 * lr *"), "lr=0.3")]
    for k, (src, lr) in enumerate(versions):
        (repo / "train.py").write_text(src)
        git(repo, "add", ".")
        git(repo, "commit", "-qm", f"v{k + 1}")
        run_script(repo, "train.py", "--kwargs", lr, env={"FLOR_CKPT_BOUND": "1"})  # best.npy is the last one's

    def with_statement(src: str) -> str:
        return src.replace('flor.log("best_val", best)\n',
                           'flor.log("best_val", best)\nflor.log("best_w", [float(v) for v in w_best])\n')

    (repo / "train.py").write_text(with_statement(versions[-1][0]))
    before = user_state(repo)
    plan = json.loads(flor(repo, "replay", "--apply", "best_w", "--dry-run", "--format", "json").stdout)
    assert {j["mode"] for j in plan["jobs"]} == {"full"}  # not a restore of the end: best.npy is read
    out = flor(repo, "replay", "--apply", "best_w", "--yes")
    assert out.returncode == 0, out.stderr
    assert user_state(repo) == before
    runs = json.loads(flor(repo, "runs", "--format", "json").stdout)
    values = []
    for k, (run, (src, lr)) in enumerate(zip(runs, versions, strict=True)):
        hand = tmp_path / f"hand{k}"
        hand.mkdir()
        git(hand, "init", "-q")
        (hand / "train.py").write_text(with_statement(src))
        run_script(hand, "train.py", "--kwargs", lr)
        want = git_flor.dataframe("best_w", repo=pygit2.Repository(str(hand)))["best_w"].tolist()
        got = git_flor.dataframe("best_w", run=run["run"], repo=pygit2.Repository(str(repo)))["best_w"].tolist()
        assert got == want
        values.append(got)
    assert values[0] != values[1]


SWALLOW = textwrap.dedent(
    """\
    import os
    import traceback

    import numpy as np
    import git_flor as flor


    def train(out_dir):
        w = np.zeros(2)
        with flor.checkpointing(w=w):
            for epoch in flor.loop("epoch", range(3)):
                for step in flor.loop("step", range(2)):
                    w += 0.1 * (step + 1)
                np.save(os.path.join(out_dir, "w.npy"), w)
                flor.log("w0", float(w[0]))


    try:
        train(flor.arg("out_dir", "."))
    except Exception:  # the script keeps going to upload what it has
        traceback.print_exc()
    """
)


def test_a_replay_with_fewer_values_than_its_statement_logs_fails(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Never "0 values, exit 0": the guard refuses the out_dir write, the script swallows it."""
    monkeypatch.setenv("FLOR_ISOLATION", "guard")
    repo = tmp_path / "project"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "train.py").write_text(SWALLOW)
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "swallow")
    exp = tmp_path / "exp"
    exp.mkdir()
    run_script(repo, "train.py", "--kwargs", f"out_dir={exp}", env={"FLOR_CKPT_BOUND": "1"})
    (repo / "train.py").write_text(SWALLOW.replace(
        '            flor.log("w0", float(w[0]))\n',
        '            flor.log("w0", float(w[0]))\n            flor.log("w1", float(w[1]))\n'))
    before, before_exp = user_state(repo), _files(exp)
    out = flor(repo, "replay", "--apply", "w1", "--yes")
    assert out.returncode == 3, out.stderr
    assert "w1 logged no value in iteration(s) 0" in out.stderr
    assert user_state(repo) == before and _files(exp) == before_exp


@pytest.mark.parametrize("mode", ["namespace", "guard"])
def test_a_c_write_through_a_link_out_of_the_tree(tmp_path: Path, mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """h5py appends from C through ``shared -> ../datasets``: the kernel keeps it in the scratch;
    the guard cannot see it, and the check after the replay reports it loudly (exit 1)."""
    h5py = pytest.importorskip("h5py")
    if mode == "namespace" and not _kernel_available(tmp_path / "probe"):
        pytest.skip("this kernel offers no unprivileged user + mount namespaces with overlayfs")
    monkeypatch.setenv("FLOR_ISOLATION", mode)
    repo = tmp_path / "project"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    datasets = tmp_path / "datasets"
    datasets.mkdir()
    with h5py.File(datasets / "cache.h5", "w") as fh:
        fh["x"] = [1.0]
    (repo / "shared").symlink_to(datasets)
    (repo / ".gitignore").write_text("shared\n")
    (repo / "train.py").write_text(textwrap.dedent(
        """\
        import h5py
        import git_flor as flor

        for epoch in flor.loop("epoch", range(2)):
            flor.log("e", epoch)
        with h5py.File("shared/cache.h5", "a") as fh:
            fh.attrs["touched"] = fh.attrs.get("touched", 0) + 1
        """
    ))
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "h5")
    run_script(repo)
    (repo / "train.py").write_text((repo / "train.py").read_text() + "flor.log(\"after\", 1)\n")
    before, before_data = user_state(repo), _files(datasets)
    out = flor(repo, "replay", "--apply", "after", "--yes")
    if mode == "namespace":
        assert out.returncode == 0, out.stderr
        assert _files(datasets) == before_data
    else:
        assert out.returncode == 1, out.stderr
        assert "ISOLATION VIOLATED" in out.stderr and "datasets/cache.h5" in out.stderr
    assert user_state(repo) == before


def test_the_guard_refuses_an_absolute_output_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the kernel's overlay, a write into the run's out_dir fails the job (exit 3), never lands."""
    monkeypatch.setenv("FLOR_ISOLATION", "guard")
    repo = tmp_path / "project"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    src = SWALLOW.replace("try:\n    train(", "if True:\n    train(").replace(
        "except Exception:  # the script keeps going to upload what it has\n    traceback.print_exc()\n", "")
    (repo / "train.py").write_text(src)
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "out_dir")
    exp = tmp_path / "exp"
    exp.mkdir()
    run_script(repo, "train.py", "--kwargs", f"out_dir={exp}")
    (repo / "train.py").write_text(src.replace(
        '            flor.log("w0", float(w[0]))\n',
        '            flor.log("w0", float(w[0]))\n            flor.log("w1", float(w[1]))\n'))
    before, before_exp = user_state(repo), _files(exp)
    out = flor(repo, "replay", "--apply", "w1", "--yes")
    assert out.returncode == 3, out.stderr
    assert f"refusing to write {exp}/w.npy in an output folder of the original run" in out.stderr
    assert "isolation: in-process guard" in out.stderr
    assert user_state(repo) == before and _files(exp) == before_exp


def test_kernel_isolation_needs_no_privileges(tmp_path: Path) -> None:
    """The probe (unshare a user + mount namespace, mount an overlay, write through it) as nobody."""
    import os
    import subprocess

    from git_flor.replay.isolation import LAUNCHER

    python = shutil.which("python3", path="/usr/bin:/bin")
    if os.geteuid() != 0 or not shutil.which("setpriv") or python is None:
        pytest.skip("needs root (to become nobody), setpriv and a system python3")
    if not _kernel_available(tmp_path / "probe"):
        pytest.skip("this kernel offers no unprivileged user + mount namespaces with overlayfs")
    work = tmp_path / "nobody"
    (work / "lower").mkdir(parents=True)
    (work / "lower" / "f").write_text("mine\n")
    shutil.copy(LAUNCHER, work / "launch.py")
    spec = {"overlays": [{"lower": str(work / "lower"), "upper": str(work / "ov" / "upper"),
                          "work": str(work / "ov" / "work")}], "keep": [str(work / "ov")]}
    (work / "spec.json").write_text(json.dumps(spec))
    (work / "ov").mkdir()
    subprocess.run(["chown", "-R", "65534:65534", str(work)], check=True)
    for parent in [tmp_path, *tmp_path.parents]:  # let nobody reach the folder
        os.chmod(parent, os.stat(parent).st_mode | 0o011)
    out = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
                          "--bounding-set=-all", python, "-I", str(work / "launch.py"), "--probe",
                          str(work / "spec.json")], capture_output=True, text=True)
    assert (out.returncode, out.stdout) == (0, "ok"), out.stderr
    assert (work / "lower" / "f").read_text() == "mine\n"
