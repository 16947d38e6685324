"""Replay speed (issue 18): warm workers, the run's threads with threads × jobs ≤ cores, no self-defeating splits.

Real torch training in real temporary repositories, the installed ``git flor``;
hindsight values are compared with a hand-edited full re-run, exactly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pygit2
import pytest

import git_flor
from git_flor.replay.plan import FINISH, HEAVY_IMPORTS, INTERPRETER
from git_flor.runtime.launch import cores, job_threads
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
    return _recorded(tmp_path_factory.mktemp("speed") / "project", TRAIN, 3,
                     TRAIN.replace(ANCHOR, ANCHOR + WSUM + PROBES))


def _recorded(repo: Path, script: str, seeds: int, today: str) -> Path:
    """``script`` committed and run with seeds 0.. (a checkpoint every epoch); ``today`` in the tree."""
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "train.py").write_text(script)
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "v1")
    for seed in range(seeds):
        run_script(repo, "train.py", "--kwargs", f"seed={seed}", env={"FLOR_CKPT_BOUND": "1"})
    (repo / "train.py").write_text(today)
    return repo


def _hand(tmp_path: Path, seed: int, script: str, names: list[str]) -> dict[str, list[object]]:
    """The statement written into the run's version by hand, run as the user ran it."""
    hand = tmp_path / f"hand{seed}"
    hand.mkdir()
    git(hand, "init", "-q")
    (hand / "train.py").write_text(script)
    run_script(hand, "train.py", "--kwargs", f"seed={seed}")
    return _values(hand, names)


def test_warm_worker_replay_uses_the_runs_threads_and_equals_a_hand_rerun(runs: Path, tmp_path: Path) -> None:
    out = flor(runs, "replay", "--apply", "wsum,threads,warm", "--workers", "2", "--yes", "--force")
    assert out.returncode == 0, out.stderr
    for run in json.loads(flor(runs, "runs", "--format", "json").stdout):
        got = _values(runs, ["wsum", "threads", "warm"], run["run"])
        assert got["warm"] == [True] * 4, "each job is forked from a warm worker"
        hand = _hand(tmp_path, run["args"]["seed"], TRAIN.replace(ANCHOR, ANCHOR + WSUM + PROBES), ["wsum", "threads"])
        assert got["threads"] == hand["threads"], "torch runs with the run's thread count, not a share"
        assert got["wsum"] == hand["wsum"]


def test_cold_start_gives_the_same_values(runs: Path) -> None:
    """FLOR_WARM=0: a fresh interpreter per job, the same values and the same thread count."""
    before = {r["run"]: _values(runs, ["wsum", "threads"], r["run"]) for r in
              json.loads(flor(runs, "runs", "--format", "json").stdout)}
    os.environ["FLOR_WARM"] = "0"
    try:
        out = flor(runs, "replay", "--apply", "wsum,threads,warm", "--workers", "2", "--yes", "--force")
    finally:
        del os.environ["FLOR_WARM"]
    assert out.returncode == 0, out.stderr
    for run, values in before.items():
        got = _values(runs, ["wsum", "threads", "warm"], run)
        assert got["warm"] == [False] * 4
        assert (got["wsum"], got["threads"]) == (values["wsum"], values["threads"])


BLAS = textwrap.dedent(
    """    import time
    import numpy as np
    import git_flor as flor

    rng = np.random.default_rng(flor.arg("seed", 0))
    X = rng.normal(size=(2048, 256))
    y = np.tanh(X @ rng.normal(size=(256, 1)))
    W1 = rng.normal(size=(256, 512)) * 0.05
    W2 = rng.normal(size=(512, 1)) * 0.05
    with flor.checkpointing(W1=W1, W2=W2):
        for epoch in flor.loop("epoch", range(3)):
            for step in flor.loop("step", range(4)):
                xb, yb = X[step * 512:(step + 1) * 512], y[step * 512:(step + 1) * 512]
                h = np.tanh(xb @ W1)
                err = h @ W2 - yb
                gW2 = h.T @ err / len(xb)
                gW1 = xb.T @ ((err @ W2.T) * (1 - h ** 2)) / len(xb)
                W1 -= 0.05 * gW1
                W2 -= 0.05 * gW2
            flor.log("loss", float(np.mean(err ** 2)))
    """
)
BLAS_ANCHOR = '        flor.log("loss", float(np.mean(err ** 2)))\n'
NORM = '        flor.log("w_norm", float(np.linalg.norm(W1)))\n'
SPAN = '        flor.log("span", [time.time()])\n'


def test_blas_sums_replay_bit_for_bit_and_jobs_that_fill_the_cores_never_overlap(tmp_path: Path) -> None:
    """A BLAS dot product splits its sum by thread: with fewer threads than the run had, its last
    bit changes (here on any machine with 2+ cores). Two runs that used every core, replayed on
    two workers: each job keeps the run's threads, so the jobs run one after the other."""
    repo = _recorded(tmp_path / "blas", BLAS, 2, BLAS.replace(BLAS_ANCHOR, BLAS_ANCHOR + NORM + SPAN))
    out = flor(repo, "replay", "--apply", "w_norm,span", "--workers", "2", "--yes", "--force")
    assert out.returncode == 0, out.stderr
    spans = []
    for run in json.loads(flor(repo, "runs", "--format", "json").stdout):
        got = _values(repo, ["w_norm", "span"], run["run"])
        assert got["w_norm"] == _hand(tmp_path, run["args"]["seed"], BLAS.replace(BLAS_ANCHOR, BLAS_ANCHOR + NORM),
                                      ["w_norm"])["w_norm"]
        times = [t for v in got["span"] for t in v]
        spans.append((min(times), max(times)))
    if job_threads(dict(os.environ)) * 2 > cores():  # two jobs' threads do not fit: one at a time
        (a0, a1), (b0, b1) = sorted(spans)
        assert a1 <= b0, spans


def test_one_job_per_run_when_runs_are_as_many_as_workers(runs: Path) -> None:
    # A step-level statement re-executes every epoch; a checkpoint after each would allow a split.
    (runs / "train.py").write_text((runs / "train.py").read_text().replace(
        "            opt.step()\n", '            opt.step()\n            flor.log("b", float(model.bias))\n'))
    plan = json.loads(flor(runs, "replay", "--apply", "b", "--workers", "2", "--dry-run", "--format", "json").stdout)
    per_run: dict[str, int] = {}
    for job in plan["jobs"]:
        per_run[job["run"]] = per_run.get(job["run"], 0) + 1
    assert len(per_run) == 3 and set(per_run.values()) == {1}, plan["jobs"]


def test_a_torch_worker_warms_what_building_an_optimizer_imports(tmp_path: Path) -> None:
    """``torch.optim.SGD(...)`` imports ``torch._dynamo`` (and sympy) on first use: seconds that every
    job would pay again after its fork unless the warm worker imported it with torch."""
    from git_flor.replay.launcher import warm_imports

    assert warm_imports(TRAIN, [tmp_path]) == ("os", "torch", "torch._dynamo")
    assert warm_imports("import numpy as np\n", [tmp_path]) == ("numpy",)


def test_the_estimate_counts_the_commands_own_start_and_the_jobs_on_the_workers(runs: Path) -> None:
    """``wall_seconds`` is the replay end to end: the command's start and planning (measured in the
    process that planned, which a replay pays again), the warm workers' start (from where the
    runs were known: it overlaps the rest of the planning), the jobs on the slots, the last
    write-back — not the jobs alone."""
    plan = json.loads(flor(runs, "replay", "--apply", "wsum", "--workers", "1", "--force", "--dry-run",
                           "--format", "json").stdout)
    assert len(plan["jobs"]) == 3 and plan["workers"] == 1, plan
    overhead = plan["overhead_seconds"]
    assert overhead > 0.05, "starting Python and git-flor and planning takes time"
    jobs = sum(j["estimate_seconds"] for j in plan["jobs"])
    selected = plan["selected_seconds"]
    assert 0 < selected <= overhead
    # the warm worker (Python, torch, numpy) from where the runs were known, beyond the planning
    warm = plan["wall_seconds"] - (overhead + jobs + FINISH) + (overhead - selected)
    assert INTERPRETER + HEAVY_IMPORTS["torch"] - 0.01 <= warm <= INTERPRETER + sum(HEAVY_IMPORTS.values()) + 0.01


def test_elapsed_is_the_process_lifetime() -> None:
    """The command's overhead is counted from its process's start, not the machine's."""
    code = "import time; from git_flor.commands.replay import _elapsed; time.sleep(0.3); print(_elapsed())"
    lived = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert 0.3 <= lived < 30


def _drop_checkpoints(repo: Path, run: str, iterations: set[int]) -> None:
    """Delete the model payloads of these iterations' checkpoints: replay plans as if the bound had
    skipped them (a clone without a payload has no checkpoint there)."""
    from git_flor.storage.checkpoints import read_manifest

    manifest = read_manifest(pygit2.Repository(str(repo)), run)
    for i in iterations:
        sha = manifest[i]["objects"]["model"].sha256
        (repo / ".git" / "flor" / "objects" / sha[:2] / sha[2:]).unlink()


def test_one_job_per_run_skips_the_checkpointed_epochs_and_re_executes_the_rest(tmp_path: Path) -> None:
    """Epochs 1, 2 and 4 of 6 have no checkpoint: one job skips 0, 3, 5 and re-executes 1, 2, 4
    in between, each from the state the epoch before left — no second job re-running epochs
    the first one skips — and the values equal a hand re-run's. A single requested epoch whose
    previous one has no checkpoint re-executes that one first, from the checkpoint before it."""
    six = TRAIN.replace('flor.loop("epoch", range(4))', 'flor.loop("epoch", range(6))')
    repo = _recorded(tmp_path / "gaps", six, 1, six.replace(ANCHOR, ANCHOR + WSUM))
    run = json.loads(flor(repo, "runs", "--format", "json").stdout)[0]["run"]
    _drop_checkpoints(repo, run, {1, 2, 4})
    plan = json.loads(flor(repo, "replay", "--apply", "wsum", "--workers", "1", "--dry-run", "--format",
                           "json").stdout)
    assert [(j["mode"], j["epochs"], j["run_full"]) for j in plan["jobs"]] == [
        ("skip", [0, 1, 2, 3, 4, 5], [1, 2, 4])], plan["jobs"]
    out = flor(repo, "replay", "--apply", "wsum", "--workers", "1", "--yes")
    assert out.returncode == 0, out.stderr
    assert "restore+skip 0,3,5, re-execute 1,2,4" in out.stderr + out.stdout
    hand = _hand(tmp_path, 0, six.replace(ANCHOR, ANCHOR + WSUM), ["wsum"])["wsum"]
    assert _values(repo, ["wsum"], run)["wsum"] == hand

    plan = json.loads(flor(repo, "replay", "--apply", "wsum", "--iter", "epoch=5", "--force", "--dry-run",
                           "--format", "json").stdout)
    assert [(j["mode"], j["epochs"], j["run_full"]) for j in plan["jobs"]] == [("skip", [5], [4])], plan["jobs"]
    out = flor(repo, "replay", "--apply", "wsum", "--iter", "epoch=5", "--force", "--yes")
    assert out.returncode == 0, out.stderr
    assert _values(repo, ["wsum"], run)["wsum"] == hand[5:]  # (the latest replay of a name shows)


def test_a_jobs_estimate_leaves_out_what_the_warm_worker_imported_and_the_loops_a_skip_restores(runs: Path) -> None:
    """The run records the imports its set-up did before the loop (building the optimizer imports
    ``torch._dynamo``: most of the set-up's time) and the seconds its nested loops took; a skip
    job, forked from a worker that has torch._dynamo already and restoring those loops, is
    estimated without either."""
    from git_flor.replay.launcher import warm_imports
    from git_flor.replay.plan import STARTUP

    run = json.loads(flor(runs, "runs", "--format", "json").stdout)[0]["run"]
    shadow = flor(runs, "show", run).stdout.split("shadow:")[1].split()[0]
    meta = json.loads(git(runs, "show", f"{shadow}:run.json"))
    loops = json.loads(git(runs, "show", f"{shadow}:loops.json"))
    assert "torch._dynamo" in meta["prefix_imports"] and "torch._dynamo" in warm_imports(TRAIN, [runs])
    pre = loops[0]["start"] - meta["start"]
    assert meta["prefix_imports"]["torch._dynamo"] > pre / 2, (meta["prefix_imports"], pre)
    outer = loops[0]
    assert len(outer["inner"]) == len(outer["iters"]) and all(0 < a < b for a, b in zip(outer["inner"], outer["iters"]))
    plan = json.loads(flor(runs, "replay", run, "--apply", "wsum", "--workers", "1", "--force", "--dry-run",
                           "--format", "json").stdout)
    [job] = plan["jobs"]
    assert job["mode"] == "skip" and not job["run_full"]
    body = sum(b - a for a, b in zip(outer["inner"], outer["iters"]))
    assert job["estimate_seconds"] < STARTUP + pre - meta["prefix_imports"]["torch._dynamo"] + body + 0.1, (job, pre)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purposes
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(x) for x in out.stdout.split()]


def test_a_kept_warm_worker_serves_the_next_replay_and_ends_when_idle(tmp_path: Path) -> None:
    """FLOR_WARM_KEEP: the warm worker outlives the command, the next replay forks from it (no
    second import of its libraries) with the same values, and it ends by itself once idle."""
    from tests.conftest import TRAIN as NUMPY_TRAIN

    anchor = '    flor.log("val", np.mean((X @ w - y) ** 2))\n'
    today = NUMPY_TRAIN.replace(anchor, anchor + '    flor.log("server", __import__("os").getppid())\n'
                                + '    flor.log("wsum", float(w.sum()))\n')
    repo = _recorded(tmp_path / "kept", NUMPY_TRAIN, 1, today)
    os.environ["FLOR_WARM_KEEP"] = "4"
    try:
        servers = []
        for _ in range(2):
            out = flor(repo, "replay", "--apply", "server,wsum", "--yes", "--force")
            assert out.returncode == 0, out.stderr
            servers.append(set(_values(repo, ["server"])["server"]))
    finally:
        os.environ["FLOR_WARM_KEEP"] = "0"
    assert len(servers[0]) == 1 and servers[0] == servers[1], servers  # one worker served both
    pid = servers[0].pop()
    assert _alive(pid) and "--serve-socket" in Path(f"/proc/{pid}/cmdline").read_text()
    hand = tmp_path / "hand"
    hand.mkdir()
    git(hand, "init", "-q")
    (hand / "train.py").write_text(NUMPY_TRAIN.replace(anchor, anchor + '    flor.log("wsum", float(w.sum()))\n'))
    run_script(hand, "train.py")
    assert _values(repo, ["wsum"])["wsum"] == _values(hand, ["wsum"])["wsum"]
    deadline = time.time() + 15
    while _alive(pid) and time.time() < deadline:
        time.sleep(0.2)
    assert not _alive(pid), "an idle kept worker ends after FLOR_WARM_KEEP seconds"


def test_a_killed_command_takes_its_jobs_on_a_kept_worker_with_it(tmp_path: Path) -> None:
    """The jobs of a replay whose command is killed (-9: no clean-up of its own) end with it,
    though the kept worker they were forked from goes on."""
    slow = textwrap.dedent(  # recorded fast; its replay (SLOW in the environment) takes a minute
        """\
        import os
        import time
        import numpy as np
        import git_flor as flor
        for epoch in flor.loop("epoch", range(2)):
            time.sleep(float(os.environ.get("SLOW", "0.01")))
            flor.log("v", int(np.int64(epoch)))
        """
    )
    repo = tmp_path / "slow"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "train.py").write_text(slow)
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "v1")
    run_script(repo, "train.py")
    (repo / "train.py").write_text(slow + "    flor.log(\"h\", epoch)\n")
    env = {**os.environ, "FLOR_WARM_KEEP": "20", "SLOW": "60"}
    proc = subprocess.Popen([sys.executable, "-m", "git_flor", "replay", "--apply", "h", "--yes"], cwd=repo,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    server, jobs = None, []
    deadline = time.time() + 30
    while not jobs and time.time() < deadline:
        time.sleep(0.2)
        # The worker is detached from the command: found by its command line (this interpreter,
        # the script's imports), the job as its child.
        found = subprocess.run(["pgrep", "-f", "--", "--serve-socket"], capture_output=True, text=True).stdout.split()
        for pid in map(int, found):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_text().split("\0")
            except OSError:
                continue
            if argv[0] == sys.executable and argv[-2:] == ["numpy", ""] and _children(pid):
                server, jobs = pid, _children(pid)
    assert server is not None and jobs, "the replay's job runs on a kept worker"
    proc.kill()
    proc.wait()
    deadline = time.time() + 10
    while any(_alive(j) for j in jobs) and time.time() < deadline:
        time.sleep(0.1)
    try:
        assert not any(_alive(j) for j in jobs), "the killed command's job still runs"
        assert _alive(server), "the kept worker goes on"
    finally:
        os.kill(server, 9)
