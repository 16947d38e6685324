"""Loop shapes real training scripts have (issue 12 item 4): replay's values equal a hand re-run, exactly.

Each scenario records a realistic script at two (or more) versions, adds one ``flor.log`` under
a ``# hindsight`` marker today, replays, and compares every run with a full re-run of its old
version with the statement written in by hand (``tests.test_verified_replay.scenario``). Where a
statement logs several values at one position (a plain ``for`` in the epoch body, a loop entered
twice) the comparison is of *every* stored value, in order, not only the table's last one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pygit2
from pygit2.enums import FileMode

from git_flor.storage.checkpoints import read_manifest, write_manifest
from tests.conftest import flor, git, run_script, user_state
from tests.test_verified_replay import (
    EVERY,
    fit_script,
    hand_rerun,
    numpy_script,
    recorded,
    rows,
    scenario,
    torch_script,
    with_statement,
)


def stored_values(repo: Path, name: str, run: str | None = None, hindsight: bool = True) -> list[list[object]]:
    """Every value of ``name`` as stored (not the table's last per position): [[indices...], value]."""
    out: list[list[object]] = []
    refs = git(repo, "for-each-ref", "--format=%(refname)", "refs/flor/shadow/").split()
    for commit in git(repo, "rev-list", "--first-parent", *refs).split():
        raw = git(repo, "show", f"{commit}:run.json", check=False)
        if not raw:
            continue  # the shadow branch's root
        meta = json.loads(raw)
        if "script" not in meta or bool(meta.get("replay_of")) != hindsight:
            continue
        if run is not None and (meta.get("replay_of") or meta["id"]) != run:
            continue
        for line in git(repo, "show", f"{commit}:logs.jsonl").splitlines():
            rec = json.loads(line)
            if rec.get("name") == name:
                out.append([[f[1] for f in rec["pos"]], rec["value"]])
    return sorted(out, key=lambda r: r[0])  # stable: a position's values keep their order


def runs(repo: Path) -> list[dict[str, object]]:
    return json.loads(flor(repo, "runs", "--format", "json").stdout)


def old_source(repo: Path, run: str) -> str:
    shadow = json.loads(flor(repo, "show", run, "--format", "json").stdout)["shadow"]
    return git(repo, "show", f"{shadow}:src/train.py")


def hand_values(tmp: Path, source: str, name: str, env: dict[str, str] | None = None) -> list[list[object]]:
    tmp.mkdir(parents=True)
    git(tmp, "init", "-q")
    (tmp / "train.py").write_text(source)
    subprocess.run([sys.executable, "train.py"], cwd=tmp, env={**os.environ, "FLOR_QUIET": "1", **(env or {})},
                   capture_output=True, text=True)
    return stored_values(tmp, name, hindsight=False)


# -- wrapped outer loops -------------------------------------------------------------------

WRAPPED = """\
from tqdm import tqdm

schedule = [lr * 0.8 ** k for k in range(5)]
with flor.checkpointing(w=w):
    for OUTER
        for b in flor.loop("batch", range(4)):
            xb, yb = X[b * 16:(b + 1) * 16], y[b * 16:(b + 1) * 16]
            w -= step_lr * xb.T @ (xb @ w - yb) / len(xb)
        # hindsight
        flor.log("val", float(np.mean((X @ w - y) ** 2)))
"""
SHAPES = {
    "enumerate": 'k, epoch in enumerate(flor.loop("epoch", range(5))):\n        step_lr = schedule[k]',
    "zip": 'epoch, step_lr in zip(flor.loop("epoch", range(5)), schedule):',
    "tqdm_outside": 'epoch in tqdm(flor.loop("epoch", range(5)), disable=True):\n        step_lr = schedule[epoch]',
    "tqdm_inside": 'epoch in flor.loop("epoch", tqdm(range(5), disable=True)):\n        step_lr = schedule[epoch]',
}


def test_enumerate_zip_and_tqdm_around_the_outer_loop(tmp_path: Path) -> None:
    versions = [numpy_script(WRAPPED.replace("OUTER", shape), 0.1 + 0.02 * k) for k, shape in enumerate(SHAPES.values())]
    _, err = scenario(tmp_path, versions, 'flor.log("w_norm", float(np.linalg.norm(w)))', "w_norm")
    assert "restore+skip" in err or "skip" in err, err


# -- a flor.loop inside a helper -----------------------------------------------------------

HELPER_ABOVE = """\
def train_one_epoch(w, lr):
    for b in flor.loop("step", range(4)):
        xb, yb = X[b * 16:(b + 1) * 16], y[b * 16:(b + 1) * 16]
        grad = xb.T @ (xb @ w - yb) / len(xb)
        w -= lr * grad
        # hindsight
        flor.log("loss", float(np.mean((xb @ w - yb) ** 2)))


with flor.checkpointing(w=w):
    for epoch in flor.loop("epoch", range(4)):
        train_one_epoch(w, lr)
        flor.log("val", float(np.mean((X @ w - y) ** 2)))
"""

HELPER_BELOW = """\
def main():
    with flor.checkpointing(w=w):
        for epoch in flor.loop("epoch", range(4)):
            train_one_epoch(w, lr)
            flor.log("val", float(np.mean((X @ w - y) ** 2)))


def train_one_epoch(w, lr):
    for b in flor.loop("step", range(4)):
        xb, yb = X[b * 16:(b + 1) * 16], y[b * 16:(b + 1) * 16]
        grad = xb.T @ (xb @ w - yb) / len(xb)
        w -= lr * grad
        # hindsight
        flor.log("loss", float(np.mean((xb @ w - yb) ** 2)))


if __name__ == "__main__":
    main()
"""


def test_a_statement_inside_a_helpers_flor_loop_defined_above_or_below(tmp_path: Path) -> None:
    scenario(tmp_path, [numpy_script(HELPER_ABOVE, 0.1), numpy_script(HELPER_BELOW, 0.05)],
             'flor.log("grad_norm", float(np.linalg.norm(grad)))', "grad_norm")


def test_an_epoch_statement_after_a_helper_call_skips_the_helpers_loop(tmp_path: Path) -> None:
    after = HELPER_ABOVE.replace("        # hindsight\n", "").replace(
        '        train_one_epoch(w, lr)\n', '        train_one_epoch(w, lr)\n        # hindsight\n')
    below = HELPER_BELOW.replace("        # hindsight\n", "").replace(
        '            train_one_epoch(w, lr)\n', '            train_one_epoch(w, lr)\n            # hindsight\n')
    repo, err = scenario(tmp_path, [numpy_script(after, 0.1), numpy_script(below, 0.05)],
                         'flor.log("w_abs", float(np.abs(w).sum()))', "w_abs")
    plan = json.loads(flor(repo, "replay", "--apply", "w_abs", "--force", "--dry-run", "--format", "json").stdout)
    assert {j["mode"] for j in plan["jobs"]} == {"skip"}, plan  # issue 18: skipped like a nested loop


# -- a helper that returns from inside its flor.loop; a break on NaN ------------------------------

HELPER_RETURNS = """\
from torch.utils.data import DataLoader, TensorDataset

g = torch.Generator().manual_seed(5)
loader = DataLoader(TensorDataset(X, y), batch_size=16, shuffle=True, generator=g)
net = nn.Linear(6, 1)
opt = torch.optim.SGD(net.parameters(), lr=lr)


def train_one_epoch(max_steps):
    total = 0.0
    for step, (xb, yb) in enumerate(flor.loop("step", loader)):
        opt.zero_grad()
        loss = ((net(xb).squeeze(1) - yb) ** 2).mean()
        loss.backward()
        opt.step()
        total += float(loss)
        # hindsight-step
        if step + 1 == max_steps:
            return total / max_steps  # a step budget: the loader is left part-way
    return total / len(loader)


with flor.checkpointing(model=net, optimizer=opt):
    for epoch in flor.loop("epoch", range(4)):
        avg = train_one_epoch(3 + epoch % 2)
        # hindsight-epoch
        flor.log("avg", avg)
"""


def test_a_helper_returning_from_inside_its_loop_over_a_dataloader(tmp_path: Path) -> None:
    src = [torch_script(HELPER_RETURNS, lr) for lr in (0.05, 0.1)]

    def at(s: str, mark: str) -> str:
        return s.replace(f"# hindsight-{mark}", "# hindsight").replace("# hindsight-epoch", "").replace(
            "# hindsight-step", "")

    (tmp_path / "epoch").mkdir()
    (tmp_path / "step").mkdir()
    _, err = scenario(tmp_path / "epoch", [at(s, "epoch") for s in src],
                      'flor.log("bias", float(net.bias))', "bias")
    assert "re-execute" in err, err  # its `return total / len(loader)` reads what a skip would not restore
    scenario(tmp_path / "step", [at(s, "step") for s in src], 'flor.log("first_y", float(yb[0]))', "first_y")


NAN_BREAK = """\
import math

with flor.checkpointing(w=w):
    for epoch in flor.loop("epoch", range(20)):
        for b in flor.loop("batch", range(4)):
            xb, yb = X[b * 16:(b + 1) * 16], y[b * 16:(b + 1) * 16]
            w -= lr * xb.T @ (xb @ w - yb) / len(xb)
            if not math.isfinite(float(w.sum())):
                break  # diverged: stop this epoch
        val = float(np.mean((X @ w - y) ** 2))
        # hindsight
        if math.isnan(val):
            break  # and training
        flor.log("val", val)
flor.log("epochs_run", epoch)
"""


def test_a_break_on_nan(tmp_path: Path) -> None:
    """A learning rate typo that diverges: the nested loop breaks on inf, the outer one on NaN."""
    stmt = 'flor.log("w_abs", float(np.abs(w).sum()))'
    repo, _ = scenario(tmp_path, [numpy_script(NAN_BREAK, 0.05), numpy_script(NAN_BREAK, 1e60)], stmt, "w_abs")
    counts = []
    for k, run in enumerate(runs(repo)):  # every value, the non-finite ones of the diverged epochs too
        got = stored_values(repo, "w_abs", str(run["run"]))
        want = hand_values(tmp_path / f"all{k}", with_statement(old_source(repo, str(run["run"])), stmt), "w_abs")
        assert json.dumps(got) == json.dumps(want)
        counts.append(len(got))
    assert counts[0] == 20 and 1 < counts[1] < 20, counts


# -- a plain for / while in the epoch body ----------------------------------------------------

PLAIN_FOR = """\
with flor.checkpointing(w=w):
    for epoch in flor.loop("epoch", range(4)):
        for b in range(4):
            xb, yb = X[b * 16:(b + 1) * 16], y[b * 16:(b + 1) * 16]
            w -= lr * xb.T @ (xb @ w - yb) / len(xb)
            # hindsight
        k = 0
        while k < 3:
            w *= 0.99
            k += 1
            flor.log("shrunk", float(w.sum()))
"""


def test_a_statement_in_a_plain_for_gets_every_value(tmp_path: Path) -> None:
    stmt = 'flor.log("batch_loss", float(np.mean((xb @ w - yb) ** 2)))'
    repo, _ = scenario(tmp_path, [numpy_script(PLAIN_FOR, 0.1), numpy_script(PLAIN_FOR, 0.2)], stmt, "batch_loss")
    for k, run in enumerate(runs(repo)):
        got = stored_values(repo, "batch_loss", str(run["run"]))
        want = hand_values(tmp_path / f"all{k}", with_statement(old_source(repo, str(run["run"])), stmt), "batch_loss")
        assert len(got) == 16 and got == want
    # the recorded statement in the `while` is witnessed value by value, all three per epoch
    assert len(stored_values(repo, "shrunk", hindsight=False)) == 2 * 4 * 3


# -- the outer loop entered twice -------------------------------------------------------------

TWO_PHASES = """\
def fit(epochs, lr):
    for epoch in flor.loop("epoch", range(epochs)):
        for b in flor.loop("batch", range(4)):
            xb, yb = X[b * 16:(b + 1) * 16], y[b * 16:(b + 1) * 16]
            w[:] -= lr * xb.T @ (xb @ w - yb) / len(xb)
        # hindsight
        flor.log("val", float(np.mean((X @ w - y) ** 2)))


with flor.checkpointing(w=w):
    fit(3, lr)
    fit(2, lr / 10)  # fine-tuning: the same loop again
"""


def test_the_outer_loop_entered_twice(tmp_path: Path) -> None:
    stmt = 'flor.log("w0", float(w[0]))'
    repo, _ = scenario(tmp_path, [numpy_script(TWO_PHASES, 0.1), numpy_script(TWO_PHASES, 0.2)], stmt, "w0")
    for k, run in enumerate(runs(repo)):
        got = stored_values(repo, "w0", str(run["run"]))
        want = hand_values(tmp_path / f"all{k}", with_statement(old_source(repo, str(run["run"])), stmt), "w0")
        assert len(got) == 5 and got == want
    assert_skips_both_entries(repo, "w0", 5)


def assert_skips_both_entries(repo: Path, name: str, iterations: int) -> None:
    """Every iteration of both entries is replayed by restore+skip (flat numbers 0..n-1), none whole."""
    plan = json.loads(flor(repo, "replay", "--apply", name, "--force", "--dry-run", "--format", "json").stdout)
    assert {j["mode"] for j in plan["jobs"]} == {"skip"}, plan
    for run in {j["run"] for j in plan["jobs"]}:
        epochs = sorted(e for j in plan["jobs"] if j["run"] == run for e in j["epochs"])
        assert epochs == list(range(iterations)), plan


def test_a_statement_before_the_loop_in_a_function_called_twice(tmp_path: Path) -> None:
    """Code before the loop in ``fit()`` runs before each entry: every value, not only the first's."""
    src = TWO_PHASES.replace("        # hindsight\n", "").replace(
        '    for epoch in flor.loop("epoch"', '    # hindsight\n    for epoch in flor.loop("epoch"')
    stmt = 'flor.log("start_w", float(w.sum()))'
    repo, _ = scenario(tmp_path, [numpy_script(src, 0.1), numpy_script(src, 0.2)], stmt, "start_w")
    for k, run in enumerate(runs(repo)):
        got = stored_values(repo, "start_w", str(run["run"]))
        want = hand_values(tmp_path / f"all{k}", with_statement(old_source(repo, str(run["run"])), stmt), "start_w")
        assert len(got) == 2 and got == want


EARLY_STOP_THEN_FINETUNE = """\
def fit(max_epochs, lr, patience):
    best, bad = float("inf"), 0
    for epoch in flor.loop("epoch", range(max_epochs)):
        for b in flor.loop("batch", range(4)):
            xb, yb = X[b * 16:(b + 1) * 16], y[b * 16:(b + 1) * 16]
            w[:] -= lr * xb.T @ (xb @ w - yb) / len(xb)
        val = float(np.mean((X @ w - y) ** 2))
        # hindsight
        if val < best - 1e-2:
            best, bad = val, 0
        else:
            bad += 1
        if bad >= patience:
            break  # early stopping
    return best


with flor.checkpointing(w=w):
    best = fit(30, lr, 2)
    fit(3, lr / 10, 5)  # fine-tuning: the same loop again
    flor.log("best", best)
"""


def test_early_stopping_then_finetuning_in_the_same_loop(tmp_path: Path) -> None:
    """The first entry ends in a ``break`` (no checkpoint holds where it left the loop): the second
    entry is replayed from a checkpoint before it, through the break, exactly."""
    stmt = 'flor.log("w1", float(w[1]))'
    repo, err = scenario(tmp_path, [numpy_script(EARLY_STOP_THEN_FINETUNE, lr) for lr in (0.05, 0.3)], stmt, "w1")
    for k, run in enumerate(runs(repo)):
        got = stored_values(repo, "w1", str(run["run"]))
        want = hand_values(tmp_path / f"all{k}", with_statement(old_source(repo, str(run["run"])), stmt), "w1")
        assert got == want and len(got) > 3
    # `bad += 1; if bad >= patience: break` after the skipped loop would run again on the restored
    # end of the iteration and stop early: those iterations are re-executed
    assert "re-execute" in err and "restore+skip" not in err, err


def as_recorded_before_entries(repo: Path) -> None:
    """Rewrite every recorded run the way git-flor stored it before loop entries were keyed: no
    ``entry``/``offset`` in ``loops.json``, no entry in positions (both phases logged at epoch 0..),
    checkpoints and fingerprints of the first entry only."""
    r = pygit2.Repository(str(repo))
    for refname in [n for n in r.references if n.startswith("refs/flor/shadow/")]:
        chain: list[pygit2.Commit] = []
        commit = r.references[refname].peel(pygit2.Commit)
        while commit.parents:
            chain.append(commit)
            commit = commit.parents[0]
        parent = commit.id
        for commit in reversed(chain):
            tree = commit.tree
            loops = json.loads(r[tree["loops.json"].id].data)
            first = len(loops[0]["iters"])
            for lp in loops:
                lp.pop("entry", None)
                lp.pop("offset", None)
            logs = [json.loads(line) for line in r[tree["logs.jsonl"].id].data.splitlines()]
            for rec in logs:
                rec["pos"] = [f[:3] for f in rec["pos"]]
            witness = json.loads(r[tree["witness.json"].id].data)
            witness["fingerprints"] = {i: fp for i, fp in witness["fingerprints"].items() if int(i) < first}
            witness["nested"] = {i: fp for i, fp in witness["nested"].items() if int(i) < first}
            builder = r.TreeBuilder(tree)
            for name, data in (("loops.json", json.dumps(loops)), ("witness.json", json.dumps(witness)),
                               ("logs.jsonl", "".join(json.dumps(x) + "\n" for x in logs))):
                builder.insert(name, r.create_blob(data.encode()), FileMode.BLOB)
            run_id = json.loads(r[tree["run.json"].id].data)["id"]
            manifest = read_manifest(r, run_id)
            write_manifest(r, run_id, {i: e for i, e in manifest.items() if i < first})
            parent = r.create_commit(None, commit.author, commit.committer, commit.message, builder.write(),
                                     [parent, *commit.parent_ids[1:]])
        r.references[refname].set_target(parent)


def test_a_run_recorded_before_entries_were_keyed_is_replayed_whole(tmp_path: Path) -> None:
    """Old runs entered the loop twice with checkpoints of the first entry only: replayed in full, exactly."""
    stmt = 'flor.log("w0", float(w[0]))'
    versions = [numpy_script(TWO_PHASES, 0.1), numpy_script(TWO_PHASES, 0.2)]
    repo = recorded(tmp_path, versions)
    as_recorded_before_entries(repo)
    (repo / "train.py").write_text(with_statement(versions[-1], stmt))
    plan = json.loads(flor(repo, "replay", "--apply", "w0", "--dry-run", "--format", "json").stdout)
    assert {j["mode"] for j in plan["jobs"]} == {"full"}, plan
    before = user_state(repo)
    out = flor(repo, "replay", "--apply", "w0", "--yes")
    assert out.returncode == 0 and "fell back" not in out.stderr, out.stderr
    assert user_state(repo) == before
    for k, run in enumerate(runs(repo)):
        got = stored_values(repo, "w0", str(run["run"]))
        want = hand_values(tmp_path / f"all{k}", with_statement(old_source(repo, str(run["run"])), stmt), "w0")
        assert len(got) == 5 and got == want


PRETRAIN_THEN_FINETUNE = """\
with flor.checkpointing(model=net, optimizer=opt):
    fit(3)  # pre-training
    for group in opt.param_groups:
        group["lr"] = lr / DIV  # fine-tuning: the same loop again, a smaller learning rate
    fit(2)
"""


def test_pretrain_then_finetune_in_one_loop_skips_both_entries(tmp_path: Path) -> None:
    """Issue 12 item 4: checkpoints, fingerprints and positions are keyed by loop entry, so the
    second entry's iterations are restored and skipped like the first's — and equal a hand re-run."""
    net = "nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 1))"
    versions = [torch_script(fit_script("after", PRETRAIN_THEN_FINETUNE.replace("DIV", div), net, 0.9), lr)
                for div, lr in (("10", 0.05), ("4", 0.1))]
    stmt = 'flor.log("w_norm", float(net[0].weight.norm()))'
    repo, err = scenario(tmp_path, versions, stmt, "w_norm")
    assert "restore+skip" in err and "re-execute" not in err, err
    for k, run in enumerate(runs(repo)):
        got = stored_values(repo, "w_norm", str(run["run"]))
        want = hand_values(tmp_path / f"all{k}", with_statement(old_source(repo, str(run["run"])), stmt), "w_norm")
        assert len(got) == 5 and got == want
        assert [v for _, v in got[:2]] != [v for _, v in got[3:5]]  # epoch 0 and 1 of each phase differ
    assert_skips_both_entries(repo, "w_norm", 5)
    # --iter names the index the table shows: epoch 1 of both phases (flat 1 and 4)
    plan = json.loads(flor(repo, "replay", "--apply", "w_norm", "--force", "--iter", "epoch=1", "--dry-run",
                           "--format", "json").stdout)
    assert sorted(e for j in plan["jobs"] for e in j["epochs"]) == [1, 1, 4, 4], plan
    # values already there are not recomputed, per entry
    assert "already computed" in flor(repo, "replay", "--apply", "w_norm", "--dry-run").stderr + \
        flor(repo, "replay", "--apply", "w_norm", "--dry-run").stdout


PRETRAIN_FINETUNE = """\
with flor.checkpointing(w=w):
    for epoch in flor.loop("pretrain", range(3)):
        for b in flor.loop("batch", range(4)):
            xb, yb = X[b * 16:(b + 1) * 16], y[b * 16:(b + 1) * 16]
            w -= lr * xb.T @ (xb @ w - yb) / len(xb)
        flor.log("pre_val", float(np.mean((X @ w - y) ** 2)))
    for epoch in flor.loop("finetune", range(2)):
        w -= lr / 10 * X.T @ (X @ w - y) / len(X)
        # hindsight
        flor.log("ft_val", float(np.mean((X @ w - y) ** 2)))
"""


def test_a_statement_in_a_second_differently_named_phase(tmp_path: Path) -> None:
    _, err = scenario(tmp_path, [numpy_script(PRETRAIN_FINETUNE, 0.1), numpy_script(PRETRAIN_FINETUNE, 0.2)],
                      'flor.log("ft_w", float(w.sum()))', "ft_w")
    assert "suffix" in err  # restore the end of pre-training, run fine-tuning (checked by its values)


# -- a run resumed from the checkpoint file the previous run left ---------------------------

RESUMED = """\
import os
import signal

epochs = flor.arg("epochs", 4)
kill_at = flor.arg("kill_at", -1)
start_epoch = 0
if os.path.exists("ckpt.npz"):  # resume where the last run stopped
    saved = np.load("ckpt.npz")
    w[:] = saved["w"]
    start_epoch = int(saved["epoch"]) + 1
with flor.checkpointing(w=w):
    for epoch in flor.loop("epoch", range(start_epoch, epochs)):
        if epoch == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)  # the machine went away
        for b in flor.loop("batch", range(4)):
            xb, yb = X[b * 16:(b + 1) * 16], y[b * 16:(b + 1) * 16]
            w -= lr * xb.T @ (xb @ w - yb) / len(xb)
        # hindsight
        np.savez("ckpt.npz", w=w, epoch=epoch)
        flor.log("val", float(np.mean((X @ w - y) ** 2)))
"""
#: (version, --kwargs) in order: fresh; resumed and killed in epoch 6; resumed by the next version
RESUMES = [(0, ["epochs=4"]), (0, ["epochs=10", "kill_at=6"]), (1, ["epochs=9"])]


def test_runs_resumed_from_the_checkpoint_file_the_previous_run_left(tmp_path: Path) -> None:
    """Each run read the ``ckpt.npz`` the run before it left, then overwrote it: its replay must read
    that file as the run found it — not today's copy, not nothing — killed runs included."""
    versions = [numpy_script(RESUMED, lr) for lr in (0.05, 0.02)]
    stmt = 'flor.log("w_sum", float(w.sum()))'

    def run_all(repo: Path, sources: list[str]) -> None:
        git(repo, "init", "-q", "-b", "main")
        (repo / ".gitignore").write_text("ckpt.npz\n")
        for version, kwargs in RESUMES:
            (repo / "train.py").write_text(sources[version])
            git(repo, "add", ".")
            git(repo, "commit", "-qm", f"v{version}", "--allow-empty")
            run_script(repo, "train.py", "--kwargs", *kwargs, env=EVERY, check=False)

    repo = tmp_path / "project"
    repo.mkdir()
    run_all(repo, versions)
    assert [r["status"] for r in runs(repo)] == ["ok", "interrupted", "ok"]
    (repo / "train.py").write_text(with_statement(versions[-1], stmt))
    before = user_state(repo)
    out = flor(repo, "replay", "--apply", "w_sum", "--yes")
    assert out.returncode == 0 and "fell back" not in out.stderr, out.stderr
    assert user_state(repo) == before  # today's ckpt.npz included
    hand = tmp_path / "hand"
    hand.mkdir()
    run_all(hand, [with_statement(v, stmt) for v in versions])
    counts = []
    for run, mine in zip(runs(repo), runs(hand), strict=True):
        got = stored_values(repo, "w_sum", str(run["run"]))
        assert got == stored_values(hand, "w_sum", str(mine["run"]), hindsight=False), run
        counts.append(len(got))
    assert counts == [4, 2, 3]  # epochs 0-3; 4-5 (killed in 6); 6-8


WARM_START = """\
if flor.arg("warm", 0):
    flor.load("w", into=w)  # warm start from the newest run's last weights
with flor.checkpointing(w=w):
    for epoch in flor.loop("epoch", range(3)):
        for b in flor.loop("batch", range(4)):
            xb, yb = X[b * 16:(b + 1) * 16], y[b * 16:(b + 1) * 16]
            w -= lr * xb.T @ (xb @ w - yb) / len(xb)
        # hindsight
        flor.log("val", float(np.mean((X @ w - y) ** 2)))
"""


def test_a_run_warm_started_with_flor_load(tmp_path: Path) -> None:
    """``flor.load`` resolves "the newest run" when it runs: its replay loads what the run loaded
    then (recorded), not the newer run's weights, and needs no repository in the child."""
    versions = [numpy_script(WARM_START, lr) for lr in (0.05, 0.02)]
    order = [(0, ["lr=0.05"]), (1, ["warm=1"]), (0, ["lr=0.2"])]  # the last is newest at replay time

    def run_all(repo: Path, sources: list[str]) -> None:
        git(repo, "init", "-q", "-b", "main")
        for version, kwargs in order:
            (repo / "train.py").write_text(sources[version])
            git(repo, "add", ".")
            git(repo, "commit", "-qm", f"v{version}", "--allow-empty")
            run_script(repo, "train.py", "--kwargs", *kwargs, env=EVERY)

    repo = tmp_path / "project"
    repo.mkdir()
    run_all(repo, versions)
    stmt = 'flor.log("w_sum", float(w.sum()))'
    (repo / "train.py").write_text(with_statement(versions[-1], stmt))
    before = user_state(repo)
    out = flor(repo, "replay", "--apply", "w_sum", "--yes")
    assert out.returncode == 0 and "fell back" not in out.stderr, out.stderr
    assert user_state(repo) == before
    hand = tmp_path / "hand"
    hand.mkdir()
    run_all(hand, [with_statement(v, stmt) for v in versions])
    for run, mine in zip(runs(repo), runs(hand), strict=True):
        got = stored_values(repo, "w_sum", str(run["run"]))
        assert len(got) == 3 and got == stored_values(hand, "w_sum", str(mine["run"]), hindsight=False), run


# -- loops that end early -----------------------------------------------------------------------

EARLY_STOP = """\
import itertools

best, bad = float("inf"), 0
with flor.checkpointing(w=w):
    for epoch in flor.loop("epoch", itertools.count()):
        for b in flor.loop("batch", range(4)):
            xb, yb = X[b * 16:(b + 1) * 16], y[b * 16:(b + 1) * 16]
            w -= lr * xb.T @ (xb @ w - yb) / len(xb)
        val = float(np.mean((X @ w - y) ** 2))
        # hindsight
        if val < best - 1e-3:
            best, bad = val, 0
        else:
            bad += 1
        if bad >= 2 or epoch >= 30:
            break
flor.log("best", best)
"""


def test_early_stopping_in_itertools_count(tmp_path: Path) -> None:
    repo, _ = scenario(tmp_path, [numpy_script(EARLY_STOP, 0.05), numpy_script(EARLY_STOP, 0.3)],
                       'flor.log("gap", val - best)', "gap")
    counts = [len(rows(repo, "gap", str(r["run"]))) for r in runs(repo)]
    assert counts[0] != counts[1]  # the versions stopped at different epochs


def test_a_statement_after_an_early_stopped_loop(tmp_path: Path) -> None:
    src = EARLY_STOP.replace("        # hindsight\n", "").replace('flor.log("best", best)\n',
                                                                 '# hindsight\nflor.log("best", best)\n')
    scenario(tmp_path, [numpy_script(src, 0.05), numpy_script(src, 0.3)], 'flor.log("final_w", float(w.sum()))',
             "final_w")


KILLED = """\
import itertools
import os
import signal

with flor.checkpointing(w=w):
    for epoch in flor.loop("epoch", itertools.count()):
        for b in flor.loop("batch", range(4)):
            xb, yb = X[b * 16:(b + 1) * 16], y[b * 16:(b + 1) * 16]
            w -= lr * xb.T @ (xb @ w - yb) / len(xb)
            if epoch == STOP and b == 2:
                os.kill(os.getpid(), signal.SIGKILL)  # the machine went away mid-epoch
        # hindsight
        flor.log("val", float(np.mean((X @ w - y) ** 2)))
# hindsight-after
flor.log("done", True)
"""


def test_a_killed_run_replays_what_it_finished_and_nothing_after(tmp_path: Path) -> None:
    repo = tmp_path / "project"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    versions = [numpy_script(KILLED.replace("STOP", str(s)), lr) for s, lr in ((4, 0.1), (2, 0.2))]
    for k, src in enumerate(versions):
        (repo / "train.py").write_text(src)
        git(repo, "add", ".")
        git(repo, "commit", "-qm", f"v{k}")
        proc = subprocess.run([sys.executable, "train.py"], cwd=repo, capture_output=True,
                              env={**os.environ, **EVERY, "FLOR_QUIET": "1"})
        assert proc.returncode == -signal.SIGKILL
    assert [r["status"] for r in runs(repo)] == ["interrupted", "interrupted"]
    stmt = 'flor.log("w_sum", float(w.sum()))'
    today = with_statement(versions[-1], stmt).replace("# hindsight-after\n", 'flor.log("after", 1)\n')
    (repo / "train.py").write_text(today)
    before = user_state(repo)
    t0 = time.time()
    out = flor(repo, "replay", "--apply", "w_sum,after", "--yes")
    assert time.time() - t0 < 60 and out.returncode == 0, out.stderr
    assert user_state(repo) == before
    assert not stored_values(repo, "after")  # the loop never ended: nothing after it ran
    for k, run in enumerate(runs(repo)):
        stop = (4, 2)[k]
        src = with_statement(old_source(repo, str(run["run"])), stmt)
        want = [r for r in hand_rerun(tmp_path / f"hand{k}", src.replace("os.kill(os.getpid(), signal.SIGKILL)", "raise SystemExit(0)"),
                                      run["args"], "w_sum") if r[0] < stop]
        assert rows(repo, "w_sum", str(run["run"])) == want and len(want) == stop


def test_replay_children_die_with_the_cli(tmp_path: Path) -> None:
    """A replay killed outright leaves no replay child running (they are in their own session)."""
    slow = numpy_script("""\
    import time

    with flor.checkpointing(w=w):
        for epoch in flor.loop("epoch", range(3)):
            for b in flor.loop("batch", range(2)):
                w -= lr * X.T @ (X @ w - y) / len(X)
            # hindsight
            flor.log("val", float(np.mean((X @ w - y) ** 2)))
    """, 0.01)
    repo = tmp_path / "project"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "train.py").write_text(slow)
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "v1")
    run_script(repo, env=EVERY)
    # Today's statement sleeps: the replay child is still running when the CLI is killed.
    marker = "flor_pdeathsig_probe"
    (repo / "train.py").write_text(with_statement(slow, f'flor.log("slept", time.sleep(30) or "{marker}")'))
    cli = subprocess.Popen(["git", "flor", "replay", "--apply", "slept", "--yes", "--workers", "1"], cwd=repo,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    children: list[int] = []
    for _ in range(100):
        time.sleep(0.2)
        children = _children_of(cli.pid)
        if any("git_flor" in _cmdline(p) or "launch.py" in _cmdline(p) for p in children):
            break
    assert children, "the replay never started a child"
    time.sleep(1.0)  # past the launcher's isolation, into the script
    os.killpg(cli.pid, signal.SIGKILL)
    cli.wait()
    deadline = time.time() + 10
    while time.time() < deadline and any(_alive(p) for p in children):
        time.sleep(0.1)
    assert not [p for p in children if _alive(p)]


def _children_of(pid: int) -> list[int]:
    """Every descendant of ``pid`` (from /proc)."""
    kids: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            out.append(k)
            todo.append(k)
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"



# -- the inner loop in a helper with no flor.loop (issue 18 item 1) ---------------------------

PLAIN_HELPER = """\
def train(w, lr):
    total = 0.0
    for b in range(4):
        xb, yb = X[b * 16:(b + 1) * 16], y[b * 16:(b + 1) * 16]
        w -= lr * xb.T @ (xb @ w - yb) / len(xb)
        total += float(np.mean((xb @ w - yb) ** 2))
    np.random.normal()  # a draw from the global RNG
    flor.log("train_loss", total / 4)


def evaluate(w):
    return float(np.mean((X @ w - y) ** 2))


np.random.seed(3)
with flor.checkpointing(w=w):
    for epoch in flor.loop("epoch", range(5)):
        train(w, lr)
        val = evaluate(w)
        # hindsight
        flor.log("val", val)
        lr *= 0.9
"""


def plan_of(repo: Path, name: str) -> dict[str, object]:
    out = flor(repo, "replay", "--apply", name, "--force", "--dry-run", "--format", "json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_a_statement_after_a_train_call_without_flor_loop_replays_from_restores(tmp_path: Path) -> None:
    versions = [numpy_script(PLAIN_HELPER, 0.1), numpy_script(PLAIN_HELPER.replace("range(4)", "range(3)"), 0.05)]
    repo, err = scenario(tmp_path, versions, 'flor.log("w_abs", float(np.abs(w).sum()) + val)', "w_abs")
    jobs = plan_of(repo, "w_abs")["jobs"]
    assert {j["mode"] for j in jobs} == {"skip"} and all(j["skip_calls"] for j in jobs), jobs  # train() skipped


def test_a_helpers_global_counter_read_after_the_call_is_still_exact(tmp_path: Path) -> None:
    body = 'counter = {"calls": 0}\n\n\n' + PLAIN_HELPER.replace(
        '    np.random.normal()', '    counter["calls"] += 1\n    np.random.normal()')
    versions = [numpy_script(body, 0.1), numpy_script(body, 0.2)]
    repo, _ = scenario(tmp_path, versions, 'flor.log("calls", counter["calls"] * 10 + epoch)', "calls",
                       first_time=False)
    # `counter` is mutated in train() and in no checkpoint: the call must run, never be restored
    assert not any(j["skip_calls"] for j in plan_of(repo, "calls")["jobs"])


def test_a_helpers_rng_draw_read_after_the_call_is_still_exact(tmp_path: Path) -> None:
    body = PLAIN_HELPER.replace('        val = evaluate(w)\n', '        val = evaluate(w) + np.random.normal() * 0.01\n')
    versions = [numpy_script(body, 0.1), numpy_script(body, 0.15)]
    # the draw after train() sees the end-of-iteration RNG when train() is skipped: the recorded
    # `val` and the iteration-end fingerprint disagree, and the segment falls back
    scenario(tmp_path, versions, 'flor.log("w_abs", float(np.abs(w).sum()) + val)', "w_abs", first_time=False)


TORCH_HELPER = """\
model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 1))
opt = torch.optim.SGD(model.parameters(), lr=lr)
sched = torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.8)


def train(model, opt, X, y):
    model.train()
    for b in range(3):
        xb, yb = X[b * 32:(b + 1) * 32], y[b * 32:(b + 1) * 32]
        opt.zero_grad()
        loss = ((model(xb).squeeze(1) - yb) ** 2).mean()
        loss.backward()
        opt.step()


with flor.checkpointing(model=model, opt=opt, sched=sched):
    for epoch in flor.loop("epoch", range(4)):
        train(model, opt, X, y)
        model.eval()
        with torch.no_grad():
            val = float(((model(X).squeeze(1) - y) ** 2).mean())
        # hindsight
        flor.log("val", val)
        sched.step()
"""


def test_a_torch_train_call_is_skipped_and_exact(tmp_path: Path) -> None:
    from tests.test_verified_replay import torch_script

    versions = [torch_script(TORCH_HELPER, 0.1), torch_script(TORCH_HELPER.replace("range(3)", "range(2)"), 0.05)]
    repo, _ = scenario(tmp_path, versions, 'flor.log("w_norm", float(model[0].weight.norm()))', "w_norm")
    assert all(j["skip_calls"] for j in plan_of(repo, "w_norm")["jobs"])


def test_a_statement_before_the_train_call_skips_the_call_after_it(tmp_path: Path) -> None:
    body = PLAIN_HELPER.replace("        # hindsight\n", "").replace(
        "        train(w, lr)\n", "        # hindsight\n        train(w, lr)\n")
    versions = [numpy_script(body, 0.1), numpy_script(body, 0.3)]
    repo, _ = scenario(tmp_path, versions, 'flor.log("lr_seen", lr + float(w.sum()))', "lr_seen")
    assert all(j["skip_calls"] for j in plan_of(repo, "lr_seen")["jobs"])  # `lr *= 0.9` runs twice: ignored


LBFGS = """\
model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 1))
opt = torch.optim.LBFGS(model.parameters(), lr=lr, max_iter=4, history_size=3)
with flor.checkpointing(model=model, opt=opt):
    for epoch in flor.loop("epoch", range(4)):
        def closure():
            opt.zero_grad()
            loss = ((model(X).squeeze(1) - y) ** 2).mean()
            loss.backward()
            return loss
        opt.step(closure)
        with torch.no_grad():
            val = float(((model(X).squeeze(1) - y) ** 2).mean())
        flor.log("val", val)
        # hindsight
"""


def test_an_optimizer_step_handed_a_closure_is_skipped_and_exact(tmp_path: Path) -> None:
    """LBFGS: the iteration's work is ``opt.step(closure)``, a method of a checkpointed object
    handed the script's function; a skip restores what it leaves instead of running it."""
    versions = [torch_script(LBFGS, 0.5), torch_script(LBFGS.replace("max_iter=4", "max_iter=3"), 0.8)]
    repo, _ = scenario(tmp_path, versions, 'flor.log("w_norm", float(model[0].weight.norm()))', "w_norm")
    assert all(j["mode"] == "skip" and j["skip_calls"] for j in plan_of(repo, "w_norm")["jobs"])


def test_an_iteration_with_nothing_to_skip_is_re_executed_not_restored_step_by_step(tmp_path: Path) -> None:
    body = """\
    with flor.checkpointing(w=w):
        for epoch in flor.loop("epoch", range(5)):
            w -= lr * X.T @ (X @ w - y) / len(X)
            flor.log("loss", float(np.mean((X @ w - y) ** 2)))
            # hindsight
    """
    repo, _ = scenario(tmp_path, [numpy_script(body, 0.1), numpy_script(body, 0.2)],
                       'flor.log("w_abs", float(np.abs(w).sum()))', "w_abs")
    plan = plan_of(repo, "w_abs")
    assert {j["mode"] for j in plan["jobs"]} == {"reexec"}, plan["jobs"]


def test_a_value_the_step_loop_leaves_and_the_epoch_logs_is_checkpointed_so_epochs_skip(tmp_path: Path) -> None:
    """``flor.log("loss", loss)`` after the step loop reads the last step's ``loss``: the
    checkpoint holds it, so an epoch-level statement restores and skips instead of re-running."""
    body = """\
    with flor.checkpointing(w=w):
        for epoch in flor.loop("epoch", range(4)):
            for b in flor.loop("step", range(4)):
                xb, yb = X[b * 16:(b + 1) * 16], y[b * 16:(b + 1) * 16]
                w -= lr * xb.T @ (xb @ w - yb) / len(xb)
                loss = float(np.mean((xb @ w - yb) ** 2))
            flor.log("loss", loss)
            # hindsight
    """
    repo, _ = scenario(tmp_path, [numpy_script(body, 0.1), numpy_script(body, 0.05)],
                       'flor.log("w_abs", float(np.abs(w).sum()))', "w_abs")
    assert {j["mode"] for j in plan_of(repo, "w_abs")["jobs"]} == {"skip"}
