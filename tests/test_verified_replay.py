"""Verified replay: on the shapes that fooled static planning, hindsight values equal a full re-run by hand.

Each scenario is a realistic training script at two versions, each recorded with a
checkpoint at every iteration (so replay *can* resume and skip). Today's code adds
one ``flor.log`` under a ``# hindsight`` comment that every version has; the
expected values come from running each old version in full with the statement
written in by hand. Whatever the planner chose, the values must be exactly those:
where a checkpoint or a skip cannot reproduce the state, the witnesses the original
run left (its recorded values and state fingerprints) must catch it and the replay
must fall back.
"""

from __future__ import annotations

import json
import os
import textwrap
import time
from pathlib import Path

import pygit2
import pytest

import git_flor
from git_flor.storage.checkpoints import read_manifest, write_manifest
from tests.conftest import flor, git, run_script, user_state

EVERY = {"FLOR_CKPT_BOUND": "1"}
MARK = "# hindsight"

def with_statement(src: str, stmt: str) -> str:
    """The hand edit: ``stmt`` on the line after the ``# hindsight`` comment, same indentation."""
    lines = src.splitlines(keepends=True)
    hits = [i for i, line in enumerate(lines) if line.strip() == MARK]
    assert len(hits) == 1, "one marker per script"
    indent = lines[hits[0]][: len(lines[hits[0]]) - len(lines[hits[0]].lstrip())]
    lines.insert(hits[0] + 1, indent + stmt + "\n")
    return "".join(lines)


def rows(repo: Path, name: str, run: str | None = None) -> list[tuple[object, ...]]:
    """(loop indices..., value) of ``name``, sorted — the table as a user reads it."""
    df = git_flor.dataframe(name, **({"run": run} if run else {}), repo=pygit2.Repository(str(repo)))
    dims = [c for c in df.columns if c not in ("run", "commit", "tstamp", "script", name)]
    df = df[df[name].notna()]
    return sorted(tuple(int(r[d]) for d in dims) + (r[name],) for _, r in df.iterrows())


def hand_rerun(tmp: Path, source: str, args: dict[str, object], name: str) -> list[tuple[object, ...]]:
    tmp.mkdir(parents=True)
    git(tmp, "init", "-q")
    (tmp / "train.py").write_text(source)
    run_script(tmp, "train.py", "--kwargs", *[f"{k}={v}" for k, v in args.items()])
    return rows(tmp, name)


def recorded(tmp: Path, versions: list[str], *, runs: int = 1, env: dict[str, str] | None = None) -> Path:
    """A repository with one commit per version, each run ``runs`` times with a checkpoint every iteration."""
    repo = tmp / "project"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    for k, src in enumerate(versions):
        (repo / "train.py").write_text(textwrap.dedent(src))
        git(repo, "add", ".")
        git(repo, "commit", "-qm", f"v{k + 1}")
        for _ in range(runs):
            run_script(repo, env={**EVERY, **(env or {})})
    return repo


def scenario(tmp: Path, versions: list[str], stmt: str, name: str, *, runs: int = 1, expect_exit: int = 0,
             extra_env: dict[str, str] | None = None, first_time: bool = True) -> tuple[Path, str]:
    """Record every version, add ``stmt`` today, replay, and compare each run with its hand re-run.

    ``first_time``: the plan and the checkpoints are right without any fallback (speed);
    exactness is asserted either way.
    """
    repo = recorded(tmp, versions, runs=runs, env=extra_env)
    (repo / "train.py").write_text(with_statement(textwrap.dedent(versions[-1]), stmt))
    before = user_state(repo)
    out = flor(repo, "replay", "--apply", name, "--yes")
    assert out.returncode == expect_exit, out.stderr
    assert user_state(repo) == before
    assert not first_time or "fell back" not in out.stderr, out.stderr
    for k, run in enumerate(json.loads(flor(repo, "runs", "--format", "json").stdout)):
        shadow = json.loads(flor(repo, "show", run["run"], "--format", "json").stdout)["shadow"]
        old = git(repo, "show", f"{shadow}:src/train.py")
        expected = hand_rerun(tmp / f"hand{k}", with_statement(old, stmt), run["args"], name)
        got = rows(repo, name, run["run"])
        assert expected and got == expected, (run["run"], got[:4], expected[:4], out.stderr)
    return repo, out.stderr


NUMPY_HEAD = """\
import numpy as np
import git_flor as flor

rng0 = np.random.default_rng(0)
X = rng0.normal(size=(64, 4))
y = X @ np.array([1.0, -2.0, 0.5, 3.0]) + rng0.normal(size=64) * 0.1
w = np.zeros(4)
lr = flor.arg("lr", LR)
"""


def numpy_script(body: str, lr: float) -> str:
    return NUMPY_HEAD.replace("LR", repr(lr)) + textwrap.dedent(body)


# -- state the checkpoint does not hold -----------------------------------------------------


def test_a_global_counter_bumped_in_a_helper(tmp_path: Path) -> None:
    body = """\
    step = 0


    def train_batch(w, xb, yb, lr):
        global step
        step += 1
        w -= lr / (1 + 0.1 * step) * xb.T @ (xb @ w - yb) / len(xb)
        return float(np.mean((xb @ w - yb) ** 2))


    with flor.checkpointing(w=w):
        for epoch in flor.loop("epoch", range(5)):
            for b in flor.loop("batch", range(4)):
                loss = train_batch(w, X[b * 16:(b + 1) * 16], y[b * 16:(b + 1) * 16], lr)
                # hindsight
                flor.log("loss", loss)
            flor.log("w_sum", float(w.sum()))
    """
    scenario(tmp_path, [numpy_script(body, 0.1), numpy_script(body, 0.05)],
             'flor.log("scaled", loss * step)', "scaled")


def test_an_rng_object_inside_a_data_module(tmp_path: Path) -> None:
    body = """\
    class Batches:
        \"\"\"Reshuffles every time it is iterated, with its own generator.\"\"\"

        def __init__(self, X, y, size, seed):
            self.X, self.y, self.size = X, y, size
            self.rng = np.random.default_rng(seed)

        def __iter__(self):
            order = self.rng.permutation(len(self.X))
            for k in range(0, len(order), self.size):
                yield self.X[order[k:k + self.size]], self.y[order[k:k + self.size]]


    loader = Batches(X, y, 16, seed=7)
    with flor.checkpointing(w=w):
        for epoch in flor.loop("epoch", range(5)):
            for xb, yb in flor.loop("step", loader):
                w -= lr * xb.T @ (xb @ w - yb) / len(xb)
                # hindsight
            flor.log("val", float(np.mean((X @ w - y) ** 2)))
    """
    scenario(tmp_path, [numpy_script(body, 0.1), numpy_script(body, 0.2)],
             'flor.log("first_x", float(xb[0, 0]))', "first_x")


def test_a_sampler_holding_random_random(tmp_path: Path) -> None:
    body = """\
    import random


    class Shuffler:
        def __init__(self, n, seed):
            self.n, self.rand = n, random.Random(seed)

        def __iter__(self):
            idx = list(range(self.n))
            self.rand.shuffle(idx)
            return iter(idx[:8])


    sampler = Shuffler(len(X), seed=3)
    with flor.checkpointing(w=w):
        for epoch in flor.loop("epoch", range(5)):
            for i in flor.loop("step", sampler):
                w -= lr * X[i] * (X[i] @ w - y[i])
                # hindsight
            flor.log("val", float(np.mean((X @ w - y) ** 2)))
    """
    scenario(tmp_path, [numpy_script(body, 0.05), numpy_script(body, 0.02)],
             'flor.log("picked", int(i))', "picked")


def test_np_clip_out_after_the_statement(tmp_path: Path) -> None:
    body = """\
    with flor.checkpointing(w=w):
        for epoch in flor.loop("epoch", range(5)):
            for b in flor.loop("batch", range(4)):
                xb, yb = X[b * 16:(b + 1) * 16], y[b * 16:(b + 1) * 16]
                w -= lr * xb.T @ (xb @ w - yb) / len(xb)
            # hindsight
            np.clip(w, -0.6, 0.6, out=w)
            flor.log("val", float(np.mean((X @ w - y) ** 2)))
    """
    scenario(tmp_path, [numpy_script(body, 0.3), numpy_script(body, 0.25)],
             'flor.log("w_max", float(np.abs(w).max()))', "w_max")


def test_an_rng_drawn_after_the_nested_loop(tmp_path: Path) -> None:
    body = """\
    np.random.seed(1)
    with flor.checkpointing(w=w):
        for epoch in flor.loop("epoch", range(5)):
            for b in flor.loop("batch", range(4)):
                xb, yb = X[b * 16:(b + 1) * 16], y[b * 16:(b + 1) * 16]
                w -= lr * (xb.T @ (xb @ w - yb) / len(xb) + np.random.normal(size=4) * 0.01)
            noise = np.random.normal()
            # hindsight
            flor.log("val", float(np.mean((X @ w - y) ** 2)) + noise * 0.01)
    """
    scenario(tmp_path, [numpy_script(body, 0.1), numpy_script(body, 0.15)],
             'flor.log("noisy", float(w.sum()) + noise)', "noisy")


# -- torch ---------------------------------------------------------------------------------

TORCH_HEAD = """\
import torch
import git_flor as flor
from torch import nn

torch.manual_seed(0)
X = torch.randn(96, 6)
y = X @ torch.linspace(-1, 1, 6) + 0.1 * torch.randn(96)
lr = flor.arg("lr", LR)
"""


def torch_script(body: str, lr: float) -> str:
    pytest.importorskip("torch")
    return TORCH_HEAD.replace("LR", repr(lr)) + textwrap.dedent(body)


def test_a_dataloader_with_its_own_generator(tmp_path: Path) -> None:
    body = """\
    from torch.utils.data import DataLoader, TensorDataset

    g = torch.Generator().manual_seed(5)
    loader = DataLoader(TensorDataset(X, y), batch_size=24, shuffle=True, generator=g)
    net = nn.Linear(6, 1)
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    with flor.checkpointing(model=net, optimizer=opt):
        for epoch in flor.loop("epoch", range(4)):
            for xb, yb in flor.loop("step", loader):
                opt.zero_grad()
                loss = ((net(xb).squeeze(1) - yb) ** 2).mean()
                loss.backward()
                opt.step()
                # hindsight
            flor.log("loss", loss.item())
    """
    scenario(tmp_path, [torch_script(body, 0.05), torch_script(body, 0.1)],
             'flor.log("batch_mean", float(yb.mean()))', "batch_mean")


#: ``fit()`` runs the outer loop in a function; a module-level generator shuffles each epoch.
#: ``# hindsight-before``/``-after`` mark the places before and after the nested loop.
TORCH_FIT = """\
g = torch.Generator().manual_seed(1)
net = NET
opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=MOMENTUM)


def fit(epochs):
    for epoch in flor.loop("epoch", range(epochs)):
        perm = torch.randperm(len(X), generator=g)
        # hindsight-before
        for k in flor.loop("step", range(0, len(X), 32)):
            idx = perm[k:k + 32]
            opt.zero_grad()
            loss = ((net(X[idx]).squeeze(1) - y[idx]) ** 2).mean()
            loss.backward()
            opt.step()
        # hindsight-after
        flor.log("val", float(((net(X).squeeze(1) - y) ** 2).mean()))
"""


def fit_script(where: str, main: str, net: str = "nn.Linear(6, 1)", momentum: float = 0.0) -> str:
    """``TORCH_FIT`` with the ``# hindsight`` marker ``before`` or ``after`` the nested loop, then ``main``."""
    other = "after" if where == "before" else "before"
    body = TORCH_FIT.replace(f"# hindsight-{where}", "# hindsight").replace(f"        # hindsight-{other}\n", "")
    return body.replace("NET", net).replace("MOMENTUM", repr(momentum)) + "\n\n" + textwrap.dedent(main)


def test_a_module_level_generator_drawn_from_in_a_function(tmp_path: Path) -> None:
    """A ``torch.Generator`` at module level that a loop inside ``fit()`` draws from is neither carried
    nor declared ``global``: the checkpoint must still hold it, or every skip falls back."""
    main = "with flor.checkpointing(model=net, optimizer=opt):\n    fit(5)\n"
    _, err = scenario(tmp_path, [torch_script(fit_script("before", main), lr) for lr in (0.05, 0.1)],
                      'flor.log("first", int(perm[0]))', "first")
    assert "restore+skip" in err, err


def test_a_skip_that_would_leave_the_loop_early_falls_back(tmp_path: Path) -> None:
    """The patience counter after the skipped loop runs again on the state a skip restored; the
    decision to stop reads it inside a helper (invisible to the planner), so the skipped iteration
    takes the early-stopping ``break`` the original did not: the child reports that it left the loop
    where the original went on, and the segment is re-executed."""
    body = """\
    best, bad = float("inf"), 0


    def patience_exhausted():
        return bad >= 2


    with flor.checkpointing(w=w):
        for epoch in flor.loop("epoch", range(40)):
            for b in flor.loop("batch", range(4)):
                xb, yb = X[b * 16:(b + 1) * 16], y[b * 16:(b + 1) * 16]
                w -= lr * xb.T @ (xb @ w - yb) / len(xb)
            val = float(np.mean((X @ w - y) ** 2))
            # hindsight
            if val < best - 1e-2:
                best, bad = val, 0
            else:
                bad += 1
            if patience_exhausted():
                break
    """
    _, err = scenario(tmp_path, [numpy_script(body, 0.05), numpy_script(body, 0.1)],
                      'flor.log("w2", float(w[2]))', "w2", first_time=False)
    assert "left the loop" in err, err


def test_witness_encodings() -> None:
    """Format 1 (runs recorded before format 2) is kept bit for bit, so their witnesses still
    match; format 2 sees RNG draws a sample of the state misses, and dicts in any key order."""
    import random

    import numpy as np

    from git_flor.runtime.fingerprint import fingerprint
    from git_flor.runtime.state_scope import EMPTY

    random.seed(3)
    np.random.seed(4)
    objs = {"w": np.linspace(-1, 1, 3000), "groups": [{"lr": 0.1, "params": [1, 2], "momentum": 0.9}],
            "rand": random.Random(2), "gen": np.random.default_rng(1), "legacy": np.random.RandomState(3)}
    # digests of git-flor's first fingerprint encoding (main at 9c10a1c), numpy and random only
    assert {k: v for k, v in fingerprint(objs, None, None, EMPTY, 1).items() if k != "rng:torch"} == {
        "obj:gen": "9a2de16d728043af", "obj:groups": "3ecb27bbc6b4b63d", "obj:legacy": "d4fc05fd459686d0",
        "obj:rand": "aeb9b6e69a11dd44", "obj:w": "407bb2c7ae50f560", "rng:numpy": "1e1eba86cb310cdb",
        "rng:random": "8e5415579c88a9d3"}
    reordered = {"groups": [{"params": [1, 2], "momentum": 0.9, "lr": 0.1}]}  # as load_state_dict rebuilds it
    same = {"groups": objs["groups"]}
    assert fingerprint(reordered, None, None, EMPTY) == fingerprint(same, None, None, EMPTY)
    torch = pytest.importorskip("torch")
    one, two = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    for _ in range(2):
        torch.randperm(96, generator=one)
    for _ in range(3):
        torch.randperm(96, generator=two)  # the same mt19937 block: only its position moved
    assert fingerprint({"g": one}, None, None, EMPTY, 1) == fingerprint({"g": two}, None, None, EMPTY, 1)
    assert fingerprint({"g": one}, None, None, EMPTY)["obj:g"] != fingerprint({"g": two}, None, None, EMPTY)["obj:g"]


def test_a_trainer_on_self_with_an_unregistered_scheduler(tmp_path: Path) -> None:
    body = """\
    class Trainer:
        def __init__(self, lr):
            self.net = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 1))
            self.opt = torch.optim.SGD(self.net.parameters(), lr=lr, momentum=0.9)
            self.sched = torch.optim.lr_scheduler.StepLR(self.opt, step_size=1, gamma=0.5)
            self.seen = 0

        def fit(self, epochs):
            with flor.checkpointing(model=self.net, optimizer=self.opt):
                for epoch in flor.loop("epoch", range(epochs)):
                    for b in flor.loop("step", range(4)):
                        xb, yb = X[b * 24:(b + 1) * 24], y[b * 24:(b + 1) * 24]
                        self.opt.zero_grad()
                        loss = ((self.net(xb).squeeze(1) - yb) ** 2).mean()
                        loss.backward()
                        self.opt.step()
                        self.seen += len(xb)
                        # hindsight
                    self.sched.step()
                    flor.log("loss", loss.item())


    Trainer(lr).fit(4)
    """
    scenario(tmp_path, [torch_script(body, 0.05), torch_script(body, 0.08)],
             'flor.log("lr_seen", self.sched.get_last_lr()[0] * self.seen)', "lr_seen")


def test_eval_mode_left_on_by_evaluate(tmp_path: Path) -> None:
    body = """\
    net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 1))
    opt = torch.optim.SGD(net.parameters(), lr=lr)


    def evaluate(net):
        net.eval()  # never switched back: later epochs train without dropout
        with torch.no_grad():
            return float(((net(X).squeeze(1) - y) ** 2).mean())


    with flor.checkpointing(model=net, optimizer=opt):
        for epoch in flor.loop("epoch", range(4)):
            for b in flor.loop("step", range(4)):
                xb, yb = X[b * 24:(b + 1) * 24], y[b * 24:(b + 1) * 24]
                opt.zero_grad()
                out = net(xb).squeeze(1)
                loss = ((out - yb) ** 2).mean()
                loss.backward()
                opt.step()
                # hindsight
            flor.log("val", evaluate(net))
    """
    scenario(tmp_path, [torch_script(body, 0.05), torch_script(body, 0.03)],
             'flor.log("out0", float(out[0]))', "out0")


def test_gradients_read_after_the_skipped_loop(tmp_path: Path) -> None:
    body = """\
    net = nn.Linear(6, 1)
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    with flor.checkpointing(model=net, optimizer=opt):
        for epoch in flor.loop("epoch", range(4)):
            for b in flor.loop("step", range(4)):
                xb, yb = X[b * 24:(b + 1) * 24], y[b * 24:(b + 1) * 24]
                opt.zero_grad()
                loss = ((net(xb).squeeze(1) - yb) ** 2).mean()
                loss.backward()
                opt.step()
            # hindsight
            flor.log("w0", float(net.weight[0, 0]))
    """
    scenario(tmp_path, [torch_script(body, 0.05), torch_script(body, 0.1)],
             'flor.log("grad_norm", float(sum(p.grad.norm() ** 2 for p in net.parameters())))', "grad_norm")


def test_param_groups_changed_through_an_alias_after_the_statement(tmp_path: Path) -> None:
    body = """\
    net = nn.Linear(6, 1)
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    with flor.checkpointing(model=net, optimizer=opt):
        for epoch in flor.loop("epoch", range(4)):
            for b in flor.loop("step", range(4)):
                xb, yb = X[b * 24:(b + 1) * 24], y[b * 24:(b + 1) * 24]
                opt.zero_grad()
                ((net(xb).squeeze(1) - yb) ** 2).mean().backward()
                opt.step()
            # hindsight
            for group in opt.param_groups:
                group["lr"] *= 0.5
            flor.log("w0", float(net.weight[0, 0]))
    """
    scenario(tmp_path, [torch_script(body, 0.05), torch_script(body, 0.1)],
             'flor.log("lr_now", opt.param_groups[0]["lr"])', "lr_now")


def test_statement_before_an_unregistered_scheduler_step(tmp_path: Path) -> None:
    body = """\
    net = nn.Linear(6, 1)
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.7)
    with flor.checkpointing(model=net, optimizer=opt):
        for epoch in flor.loop("epoch", range(4)):
            for b in flor.loop("step", range(4)):
                xb, yb = X[b * 24:(b + 1) * 24], y[b * 24:(b + 1) * 24]
                opt.zero_grad()
                ((net(xb).squeeze(1) - yb) ** 2).mean().backward()
                opt.step()
            # hindsight
            sched.step()
            flor.log("w0", float(net.weight[0, 0]))
    """
    scenario(tmp_path, [torch_script(body, 0.05), torch_script(body, 0.1)],
             'flor.log("lr_used", opt.param_groups[0]["lr"])', "lr_used")


# -- the witnesses themselves ---------------------------------------------------------------

CLOCKED = """\
import time

import numpy as np
import git_flor as flor

X = np.random.default_rng(0).normal(size=(64, 4))
y = X.sum(axis=1)
w = np.zeros(4)
throughput = 0.0
t_start = time.time()
with flor.checkpointing(w=w):
    for epoch in flor.loop("epoch", range(4)):
        t0 = time.perf_counter()
        for b in flor.loop("step", range(4)):
            w -= 0.1 * X[b * 16:(b + 1) * 16].T @ (X[b * 16:(b + 1) * 16] @ w - y[b * 16:(b + 1) * 16]) / 16
        dt = time.perf_counter() - t0
        throughput = 0.9 * throughput + 0.1 * 64 / max(dt, 1e-9)
        elapsed = time.time() - t_start
        # hindsight
        flor.log("val", float(np.mean((X @ w - y) ** 2)))
"""


def test_two_recordings_of_a_deterministic_script_with_clock_state_agree(tmp_path: Path) -> None:
    repo = recorded(tmp_path, [CLOCKED], runs=0)
    witnesses = []
    for _ in range(2):
        run_script(repo, env=EVERY)  # every iteration, whatever the timing
        run = json.loads(flor(repo, "runs", "--format", "json").stdout)[-1]
        shadow = json.loads(flor(repo, "show", run["run"], "--format", "json").stdout)["shadow"]
        witnesses.append(json.loads(git(repo, "show", f"{shadow}:witness.json")))
    first, second = witnesses
    assert first["fingerprints"] and first["fingerprints"] == second["fingerprints"]
    assert set(first["fingerprints"]) == {"-1", "0", "1", "2", "3"}
    components = set(first["fingerprints"]["0"])
    assert {"obj:w", "var:X", "var:y"} <= components
    assert "rng:random" not in components  # never seeded, never drawn from: no witness
    assert not components & {"var:throughput", "var:t_start", "var:elapsed", "var:dt", "var:t0"}


def test_a_broken_checkpoint_is_detected_and_the_replay_is_still_exact(tmp_path: Path) -> None:
    body = """\
    np.random.seed(2)
    best = float("inf")
    with flor.checkpointing(w=w):
        for epoch in flor.loop("epoch", range(6)):
            order = np.random.permutation(len(X))
            for b in flor.loop("batch", range(4)):
                idx = order[b * 16:(b + 1) * 16]
                w -= lr * X[idx].T @ (X[idx] @ w - y[idx]) / 16
                # hindsight
            val = float(np.mean((X @ w - y) ** 2))
            if val > best:
                lr /= 2
            best = min(best, val)
            flor.log("val", val)
    """
    src = numpy_script(body, 0.2)
    repo = recorded(tmp_path, [src])
    run = json.loads(flor(repo, "runs", "--format", "json").stdout)[0]
    # Break every checkpoint from iteration 1 on: the RNG state of iteration 0's, and no `best`.
    pyrepo = pygit2.Repository(str(repo))
    manifest = read_manifest(pyrepo, run["run"])
    for i in range(1, max(manifest) + 1):
        manifest[i]["objects"]["rng"] = manifest[0]["objects"]["rng"]
        manifest[i]["objects"].pop("var:best", None)
    write_manifest(pyrepo, run["run"], manifest)
    stmt = 'flor.log("idx0", int(idx[0]))'
    (repo / "train.py").write_text(with_statement(src, stmt))
    out = flor(repo, "replay", "--apply", "idx0", "--iter", "epoch=3,4,5", "--yes")
    assert out.returncode == 0, out.stderr
    assert "fell back" in out.stderr and "rng:numpy" in out.stderr
    expected = [r for r in hand_rerun(tmp_path / "hand", with_statement(src, stmt), run["args"], "idx0")
                if r[0] in (3, 4, 5)]
    assert rows(repo, "idx0") == expected


def test_a_nondeterministic_script_is_stored_unverified_and_says_so(tmp_path: Path) -> None:
    src = """\
    import numpy as np
    import git_flor as flor

    rng = np.random.default_rng()  # unseeded: every run draws differently
    w = np.zeros(3)
    with flor.checkpointing(w=w):
        for epoch in flor.loop("epoch", range(3)):
            for b in flor.loop("step", range(2)):
                w += rng.normal(size=3)
                # hindsight
            flor.log("w_sum", float(w.sum()))
    """
    repo = recorded(tmp_path, [src])
    (repo / "train.py").write_text(with_statement(textwrap.dedent(src), 'flor.log("w0", float(w[0]))'))
    out = flor(repo, "replay", "--apply", "w0", "--yes")
    assert out.returncode == 4, out.stderr
    assert "not deterministic" in out.stderr and "unverified" in out.stderr
    table = json.loads(flor(repo, "log", "w0", "--provenance", "--format", "json").stdout)
    # Epoch 0 re-ran from the start and did not reproduce; a segment resumed from a
    # checkpoint (which holds the generator's state) is reproducible, hence verified.
    assert {r["w0@"] for r in table if r["w0"] is not None and r["epoch"] == 0} == {"hindsight (unverified)"}


def test_an_unseeded_script_replays_the_numbers_its_run_drew(tmp_path: Path) -> None:
    """torch and numpy's global generators seed themselves from the OS in every process: the
    run's states where the script imported git-flor are kept, and every replay starts from them."""
    pytest.importorskip("torch")
    src = """\
    import numpy as np
    import torch
    import git_flor as flor

    W_target = torch.randn(4, 1) * 5  # no seed anywhere
    noise = float(np.random.normal())
    w = torch.zeros(4, 1)
    with flor.checkpointing(w=w):
        for epoch in flor.loop("epoch", range(3)):
            for b in flor.loop("step", range(2)):
                x = torch.randn(8, 4)
                w -= 0.05 * x.T @ (x @ w - x @ W_target) / 8
            flor.log("truth", float(W_target.sum()) + noise + float(w.sum()))
            # hindsight
    """
    repo = recorded(tmp_path, [src], runs=2)
    (repo / "train.py").write_text(with_statement(
        textwrap.dedent(src), 'flor.log("again", float(W_target.sum()) + noise + float(w.sum()))'))
    objects = repo / ".git" / "flor" / "objects"
    for path in objects.rglob("*"):  # old enough for gc to delete what nothing references
        os.utime(path, (time.time() - 7200,) * 2)
    assert flor(repo, "gc").returncode == 0
    out = flor(repo, "replay", "--apply", "again", "--yes")
    assert out.returncode == 0 and "fell back" not in out.stderr, out.stderr
    table = json.loads(flor(repo, "log", "truth", "again", "--format", "json").stdout)
    assert len(table) == 6 and all(r["again"] == r["truth"] for r in table), table
    assert len({r["truth"] for r in table if r["epoch"] == 0}) == 2  # the two runs drew differently


def test_one_statements_failure_is_its_own(tmp_path: Path) -> None:
    v1 = numpy_script("""\
    with flor.checkpointing(w=w):
        for epoch in flor.loop("epoch", range(3)):
            for b in flor.loop("batch", range(4)):
                w -= lr * X[b * 16:(b + 1) * 16].T @ (X[b * 16:(b + 1) * 16] @ w - y[b * 16:(b + 1) * 16]) / 16
            # hindsight
            flor.log("val", float(np.mean((X @ w - y) ** 2)))
    """, 0.1)
    v2 = v1.replace("    # hindsight", "    scale = float(np.abs(w).max())\n        # hindsight")
    repo = recorded(tmp_path, [v1, v2])
    # `scaled` reads `scale`, which v1 never defines (it cannot be placed there); `inv`
    # raises at epoch 1 in every version. `w_sum` must still be replayed everywhere.
    stmts = ['flor.log("w_sum", float(w.sum()))', 'flor.log("scaled", float(w.sum()) / scale)',
             'flor.log("inv", 1.0 / (epoch - 1))']
    (repo / "train.py").write_text(with_statement(v2, "\n        ".join(stmts)))
    out = flor(repo, "replay", "--apply", "w_sum,scaled,inv", "--yes")
    assert out.returncode == 3, out.stderr
    assert "scale" in out.stderr and "ZeroDivisionError" in out.stderr
    values = {n: [r for r in json.loads(flor(repo, "log", n, "--format", "json").stdout) if r[n] is not None]
              for n in ("w_sum", "scaled", "inv")}
    assert len(values["w_sum"]) == 6  # both versions, every epoch
    assert len(values["scaled"]) == 3  # v2 only
    assert sorted(r["epoch"] for r in values["inv"]) == [0, 0, 2, 2]
