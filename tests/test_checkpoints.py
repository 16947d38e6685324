"""Checkpoints: exact save/restore, exact resume (RNG and loop-carried variables), store, gc, policy."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pygit2
import pytest

import git_flor
from git_flor.runtime import serial
from git_flor.storage.checkpoints import PayloadStore, read_manifest
from tests.conftest import flor, git, run_script

EVERY = {"FLOR_CKPT_BOUND": "1"}  # checkpoint every iteration


def roundtrip(obj: object) -> tuple[str, object]:
    serializer, snap = serial.capture(obj)
    return serializer, serial.deserialise(serializer, b"".join(serial.serialise(serializer, snap)))


def saved_bytes(obj: object) -> tuple[str, bytes]:
    serializer, snap = serial.capture(obj)
    return serializer, b"".join(serial.serialise(serializer, snap))


class Stats:
    def __init__(self) -> None:
        self.best = 1.0
        self.seen = [1, 2]


def test_numpy_dict_list_and_plain_object_restore_in_place() -> None:
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    d = {"a": 1, "b": [np.float64(0.5)]}
    lst = [1, "x", 2.5]
    obj = Stats()
    saved = {id(x): roundtrip(x) for x in (arr, d, lst, obj)}
    alias = arr
    arr += 7
    d["a"] = 99
    lst.append(4)
    obj.best = 0.1
    obj.seen.append(3)
    for x in (arr, d, lst, obj):
        serializer, value = saved[id(x)]
        assert serial.restore(x, serializer, value) is x  # in place: references stay valid
    assert alias is arr and arr.tobytes() == np.arange(6, dtype=np.float32).reshape(2, 3).tobytes()
    assert d == {"a": 1, "b": [0.5]} and lst == [1, "x", 2.5]
    assert obj.best == 1.0 and obj.seen == [1, 2]


def test_torch_module_optimizer_scheduler_round_trip_bitwise() -> None:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    x, y = torch.randn(32, 4), torch.randn(32, 1)

    def train(n: int) -> None:
        for _ in range(n):
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()
            sched.step()

    train(3)
    saved = {name: saved_bytes(o) for name, o in (("m", model), ("o", opt), ("s", sched))}
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    params = list(model.parameters())
    train(5)
    for name, o in (("m", model), ("o", opt), ("s", sched)):
        serializer, data = saved[name]
        assert serializer == "state_dict"
        serial.restore(o, serializer, serial.deserialise(serializer, data))
    assert all(torch.equal(model.state_dict()[k], expected[k]) for k in expected)
    assert [p.data_ptr() for p in model.parameters()] == [p.data_ptr() for p in params]
    assert sched.last_epoch == 3 and opt.param_groups[0]["lr"] == 0.005
    # Training on from the restored state is bitwise the same as training on from the original.
    train(2)
    after_restore = [p.detach().clone() for p in model.parameters()]
    for name, o in (("m", model), ("o", opt), ("s", sched)):
        serializer, data = saved[name]
        serial.restore(o, serializer, serial.deserialise(serializer, data))
    train(2)
    assert all(torch.equal(a, p) for a, p in zip(after_restore, model.parameters()))


def test_payloads_are_content_addressed_and_stored_once(tmp_path: Path) -> None:
    store = PayloadStore(tmp_path / "objects")
    a = store.put(b"weights" * 1000)
    b = store.put(b"weights" * 1000)
    assert a == b and a[0] == hashlib.sha256(b"weights" * 1000).hexdigest()
    assert list(store) == [a[0]]
    assert store.get(a[0]) == b"weights" * 1000


NUMPY_SCRIPT = textwrap.dedent(
    """\
    import numpy as np
    import git_flor as flor

    np.random.seed(0)
    X = np.random.normal(size=(120, 5))
    y = (X @ np.arange(5.0) > 0).astype(float)
    w = np.zeros(5)
    lr = flor.arg("lr", 0.8)
    best_val = float("inf")
    history = []
    with flor.checkpointing(w=w):
        for epoch in flor.loop("epoch", range(8)):
            order = np.random.permutation(len(X))
            for step in flor.loop("step", range(4)):
                idx = order[step * 30:(step + 1) * 30]
                p = 1 / (1 + np.exp(-X[idx] @ w))
                w -= lr * X[idx].T @ (p - y[idx]) / len(idx)
                flor.log("loss", float(np.mean((p - y[idx]) ** 2)))
            val = float(np.mean((1 / (1 + np.exp(-X @ w)) - y) ** 2)) + np.random.normal() * 0.02
            history.append(val)
            if val > best_val:
                lr /= 4.0
            best_val = min(best_val, val)
            flor.log("val", val)
            flor.log("lr_now", lr)
            flor.log("n_hist", len(history))
    flor.log("final_best", best_val)
    """
)


def _logs(repo: Path, commit: str) -> list[tuple[str, object, tuple[tuple[str, int], ...]]]:
    out = []
    for line in git(repo, "show", f"{commit}:logs.jsonl").splitlines():
        rec = json.loads(line)
        out.append((rec["name"], rec["value"], tuple((f[0], f[1]) for f in rec["pos"])))
    return out


def _resume_matches(repo: Path, script: str, names: list[str], at: list[int]) -> None:
    """Restoring the end of iteration k and re-running k+1 reproduces the recorded k+1 exactly."""
    run_script(repo, script, env=EVERY)
    runs = json.loads(flor(repo, "runs", "--format", "json").stdout)
    original = runs[-1]["run"]
    manifest = read_manifest(pygit2.Repository(str(repo)), original)
    assert all(not e["unsaved"] for e in manifest.values()), manifest
    shadow = json.loads(flor(repo, "show", original, "--format", "json").stdout)["shadow"]
    recorded = _logs(repo, shadow)
    ref = git(repo, "for-each-ref", "--format=%(refname)", "refs/flor/shadow/").split()[0]
    for k in at:
        assert k in manifest
        plan = json.loads(flor(repo, "replay", original, "--apply", ",".join(names), "--iter", f"epoch={k + 1}",
                               "--force", "--dry-run", "--format", "json").stdout)
        assert [j["start_from"] for j in plan["jobs"] if j["mode"] == "reexec"] == [k]
        out = flor(repo, "replay", original, "--apply", ",".join(names), "--iter", f"epoch={k + 1}", "--force", "--yes")
        assert out.returncode == 0, out.stderr
        replayed = _logs(repo, git(repo, "rev-parse", ref).strip())
        want = [r for r in recorded if r[0] in names and (not r[2] or r[2][0][1] == k + 1)]
        assert sorted(replayed, key=repr) == sorted(want, key=repr) and want, (k, replayed[:3], want[:3])


def test_resume_reproduces_later_epochs_exactly_with_rng_and_annealed_lr(repo: Path) -> None:
    (repo / "np_train.py").write_text(NUMPY_SCRIPT)
    run_script(repo, "np_train.py")
    lrs = git_flor.dataframe("lr_now", repo=pygit2.Repository(str(repo)))["lr_now"].tolist()
    assert len(set(lrs)) > 1  # the script does anneal: resuming with the initial lr would differ
    _resume_matches(repo, "np_train.py", ["loss", "val", "lr_now", "n_hist", "final_best"], at=[0, 3, 6])


def test_resume_in_a_function_scope(repo: Path) -> None:
    body = textwrap.indent(NUMPY_SCRIPT.replace("import numpy as np\nimport git_flor as flor\n", ""), "    ")
    (repo / "fn_train.py").write_text(
        "import numpy as np\nimport git_flor as flor\n\n\ndef main():\n" + body + "\n\nmain()\n"
    )
    _resume_matches(repo, "fn_train.py", ["loss", "val", "lr_now", "n_hist"], at=[2, 5])


TORCH_SCRIPT = textwrap.dedent(
    """\
    import torch
    from torch.utils.data import DataLoader, TensorDataset
    import git_flor as flor

    torch.manual_seed(0)
    X = torch.randn(256, 10)
    y = (X[:, :3].sum(dim=1, keepdim=True) > 0).float()
    loader = DataLoader(TensorDataset(X, y), batch_size=32, shuffle=True)
    model = torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
    best_val_loss = float("inf")
    with flor.checkpointing(model=model, optimizer=opt, scheduler=sched):
        for epoch in flor.loop("epoch", range(6)):
            model.train()
            for xb, yb in flor.loop("step", loader):
                opt.zero_grad()
                loss = torch.nn.functional.binary_cross_entropy_with_logits(model(xb), yb)
                loss.backward()
                opt.step()
                flor.log("loss", loss.item())
            sched.step()
            model.eval()
            with torch.no_grad():
                val_loss = torch.nn.functional.binary_cross_entropy_with_logits(model(X), y).item()
            if val_loss < best_val_loss:
                best_val_loss = val_loss
            flor.log("val_loss", val_loss)
            flor.log("best", best_val_loss)
    """
)


def test_torch_resume_with_shuffling_dataloader_dropout_and_scheduler(repo: Path) -> None:
    pytest.importorskip("torch")
    (repo / "torch_train.py").write_text(TORCH_SCRIPT)
    _resume_matches(repo, "torch_train.py", ["loss", "val_loss", "best"], at=[1, 4])


def test_adaptive_policy_skips_iterations_when_checkpoints_are_expensive(repo: Path) -> None:
    (repo / "big.py").write_text(textwrap.dedent(
        """\
        import numpy as np
        import git_flor as flor
        big = np.random.default_rng(0).normal(size=(4_000_000,))  # 32 MB of state
        with flor.checkpointing(big=big):
            for epoch in flor.loop("epoch", range(40)):
                big[epoch] += 1.0  # a tiny iteration
                flor.log("x", float(big[epoch]))
        """
    ))
    run_script(repo, "big.py")
    run = json.loads(flor(repo, "runs", "--format", "json").stdout)[-1]["run"]
    taken = sorted(read_manifest(pygit2.Repository(str(repo)), run))
    assert taken[-1] == 39  # the last always; the first waits for its copy buffers to be ready
    assert len(taken) <= 6, taken
    run_script(repo, "big.py", env=EVERY)
    run = json.loads(flor(repo, "runs", "--format", "json").stdout)[-1]["run"]
    assert len(read_manifest(pygit2.Repository(str(repo)), run)) >= 20  # with a generous bound, many more


def test_a_failing_serialiser_warns_once_and_training_goes_on(repo: Path) -> None:
    (repo / "bad.py").write_text(textwrap.dedent(
        """\
        import git_flor as flor
        class Broken:
            def state_dict(self):
                raise RuntimeError("cannot")
            def load_state_dict(self, s):
                pass
        with flor.checkpointing(thing=Broken()):
            for epoch in flor.loop("epoch", range(3)):
                flor.log("e", epoch)
        """
    ))
    out = run_script(repo, "bad.py", env=EVERY)
    assert out.stderr.count("cannot checkpoint thing") == 1
    run = json.loads(flor(repo, "runs", "--format", "json").stdout)[-1]
    assert run["status"] == "ok"
    manifest = read_manifest(pygit2.Repository(str(repo)), run["run"])
    assert sorted(manifest) == [0, 1, 2] and all(e["unsaved"] == ["thing"] for e in manifest.values())
    show = flor(repo, "show", run["run"])
    assert "not a safe resume point: thing" in show.stdout


def test_unsaveable_loop_carried_variable_marks_the_iteration_unsafe(repo: Path) -> None:
    (repo / "gen.py").write_text(textwrap.dedent(
        """\
        import git_flor as flor
        stream = (i * i for i in range(100))
        for epoch in flor.loop("epoch", range(3)):
            flor.log("v", next(stream))
        """
    ))
    run_script(repo, "gen.py", env=EVERY)
    run = json.loads(flor(repo, "runs", "--format", "json").stdout)[-1]["run"]
    manifest = read_manifest(pygit2.Repository(str(repo)), run)
    assert all(e["unsaved"] == ["var:stream"] for e in manifest.values())


def test_what_a_step_loop_leaves_is_saved_when_it_can_be_and_never_makes_an_iteration_unsafe(repo: Path) -> None:
    (repo / "left.py").write_text(textwrap.dedent(
        """\
        import git_flor as flor
        for epoch in flor.loop("epoch", range(3)):
            for step in flor.loop("step", range(2)):
                loss = float(epoch * 10 + step)
                rows = (r for r in range(step))  # a generator: cannot be saved
            flor.log("loss", loss)
            print(type(rows).__name__)
        """
    ))
    out = run_script(repo, "left.py", env=EVERY)
    assert "cannot checkpoint" not in out.stderr, out.stderr
    run = json.loads(flor(repo, "runs", "--format", "json").stdout)[-1]["run"]
    manifest = read_manifest(pygit2.Repository(str(repo)), run)
    assert len(manifest) == 3 and all(not e["unsaved"] and "var:loss" in e["objects"] for e in manifest.values())
    assert all("var:rows" not in e["objects"] for e in manifest.values())


def test_gc_keeps_referenced_and_drops_unreferenced(repo: Path) -> None:
    (repo / "np_train.py").write_text(NUMPY_SCRIPT)
    run_script(repo, "np_train.py", env=EVERY)
    gitdir = repo / git(repo, "rev-parse", "--git-common-dir").strip()
    store = PayloadStore(gitdir / "flor" / "objects")
    referenced_before = set(store)
    stray = store.put(b"an orphan payload")[0]
    young = store.put(b"a payload a live run may be about to reference")[0]
    old = time.time() - 7200
    os.utime(store.path(stray), (old, old))
    out = flor(repo, "gc", "--dry-run", "--format", "json")
    assert json.loads(out.stdout)["deleted"] == [stray] and store.path(stray).exists()
    assert flor(repo, "gc").returncode == 0
    assert not store.path(stray).exists() and store.path(young).exists()
    assert referenced_before <= set(store)
    run = json.loads(flor(repo, "runs", "--format", "json").stdout)[-1]["run"]
    for p in list(store):
        os.utime(store.path(p), (old, old))
    report = json.loads(flor(repo, "gc", "--keep-every", "4", "--format", "json").stdout)
    assert report["thinned"] == {run: [1, 2, 3, 5, 6]}
    assert sorted(read_manifest(pygit2.Repository(str(repo)), run)) == [0, 4, 7]
    for entry in read_manifest(pygit2.Repository(str(repo)), run).values():
        assert all(store.path(p.sha256).exists() for p in entry["objects"].values())
    # What is left still resumes exactly.
    _resume_from_existing(repo, run, 4)


def _resume_from_existing(repo: Path, run: str, k: int) -> None:
    shadow = json.loads(flor(repo, "show", run, "--format", "json").stdout)["shadow"]
    recorded = [r for r in _logs(repo, shadow) if r[0] == "val" and r[2][0][1] == k + 1]
    out = flor(repo, "replay", run, "--apply", "val", "--iter", f"epoch={k + 1}", "--force", "--yes")
    assert out.returncode == 0, out.stderr
    ref = git(repo, "for-each-ref", "--format=%(refname)", "refs/flor/shadow/").split()[0]
    assert _logs(repo, git(repo, "rev-parse", ref).strip()) == recorded


def test_sigkill_during_a_checkpoint_write_leaves_no_corrupt_payload(repo: Path) -> None:
    (repo / "huge.py").write_text(textwrap.dedent(
        """\
        import numpy as np
        import git_flor as flor
        state = np.zeros(60_000_000)  # 480 MB: the write takes a while
        with flor.checkpointing(state=state):
            for epoch in flor.loop("epoch", range(1000)):
                state[epoch] = epoch
        """
    ))
    proc = subprocess.Popen([sys.executable, "huge.py"], cwd=repo, stdin=subprocess.DEVNULL)
    objects = repo / ".git" / "flor" / "objects"
    deadline = time.time() + 60
    while not any(p.name.startswith(".tmp-") for p in objects.rglob("*")):
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    for path in objects.rglob("*"):
        if path.is_file() and not path.name.startswith(".tmp-"):
            assert hashlib.sha256(path.read_bytes()).hexdigest() == path.parent.name + path.name
    out = flor(repo, "runs", "--format", "json")
    assert json.loads(out.stdout)[0]["status"] == "interrupted"


def test_storing_an_existing_payload_protects_it_from_a_concurrent_gc(repo: Path) -> None:
    """A run storing bytes that are already there (an old orphan) must find them at its manifest."""
    gitdir = repo / git(repo, "rev-parse", "--git-common-dir").strip()
    store = PayloadStore(gitdir / "flor" / "objects")
    sha = store.put(b"weights that an old, since-thinned checkpoint also had")[0]
    old = time.time() - 7200
    os.utime(store.path(sha), (old, old))
    assert store.put(b"weights that an old, since-thinned checkpoint also had")[0] == sha  # a new run
    report = json.loads(flor(repo, "gc", "--format", "json").stdout)
    assert report["deleted"] == [] and report["kept_recent"] == 1 and store.path(sha).exists()


def test_gc_dry_run_says_what_it_keeps_and_why(repo: Path) -> None:
    (repo / "np_train.py").write_text(NUMPY_SCRIPT)
    run_script(repo, "np_train.py", env=EVERY)
    out = flor(repo, "gc", "--keep-every", "4", "--dry-run")
    assert out.returncode == 0, out.stderr
    assert "would drop checkpoints of iterations" in out.stdout
    assert "would delete" in out.stdout and "written in the last hour" in out.stdout


def test_every_short_epoch_is_checkpointed_when_only_the_copy_is_charged(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 24 MB state after a 0.7 s epoch: the copy costs ~10 ms of the training thread; the
    write (hashing, ~50-100 ms) runs in the background and is not charged, so every epoch is
    saved at a 4 % bound (28 ms an epoch: room for a loaded machine) — when the write was
    charged too, epochs were skipped (issue 18)."""
    (repo / "short.py").write_text(textwrap.dedent(
        """\
        import time
        import numpy as np
        import git_flor as flor
        w = np.random.default_rng(0).normal(size=(3_000_000,))  # 24 MB of state
        with flor.checkpointing(w=w):
            for epoch in flor.loop("epoch", range(6)):
                time.sleep(0.7)  # the epoch's compute
                w += 0.001
                flor.log("x", float(w[0]))
        """
    ))
    run_script(repo, "short.py", env={"FLOR_CKPT_BOUND": "0.04"})  # 28 ms an epoch: the copy fits
    run = json.loads(flor(repo, "runs", "--format", "json").stdout)[-1]["run"]
    manifest = read_manifest(pygit2.Repository(str(repo)), run)
    assert sorted(manifest) == list(range(6))
    shown = flor(repo, "show", run)
    assert "replayed from checkpoints at every epoch" in shown.stdout, shown.stdout
    assert "a statement after the loop restores the last checkpoint" in shown.stdout
    assert json.loads(flor(repo, "show", run, "--format", "json").stdout)["replay"]["skippable"] == list(range(6))
    monkeypatch.chdir(repo)
    expected = np.random.default_rng(0).normal(size=(3_000_000,)) + 0.001
    for _ in range(3):
        expected += 0.001
    np.testing.assert_array_equal(git_flor.load("w", run=run, iter=3), expected)  # the write is the state


def test_a_model_saved_each_epoch_through_a_closed_file_leaves_every_iteration_safe(repo: Path) -> None:
    """``with open(args.save, "wb") as f: torch.save(model, f)`` (pytorch/examples): ``f`` stays bound
    to a closed file, which is no state — the iteration stays a safe resume point."""
    (repo / "save.py").write_text(textwrap.dedent(
        """\
        import pickle
        import numpy as np
        import git_flor as flor
        w = np.zeros(4)
        best = None
        with flor.checkpointing(w=w):
            for epoch in flor.loop("epoch", range(3)):
                w += 1.0
                if best is None or epoch % 2 == 0:
                    with open("model.pkl", "wb") as f:
                        pickle.dump(w, f)
                    best = epoch
                flor.log("x", float(w[0]))
        """
    ))
    run_script(repo, "save.py", env=EVERY)
    run = json.loads(flor(repo, "runs", "--format", "json").stdout)[-1]["run"]
    manifest = read_manifest(pygit2.Repository(str(repo)), run)
    assert sorted(manifest) == [0, 1, 2] and not any(e["unsaved"] for e in manifest.values()), manifest
