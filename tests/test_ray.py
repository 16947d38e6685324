"""Replay on a real Ray cluster on localhost: the same values as the local pool, payloads from
the store, a killed worker retried and written once, Ctrl-C, and the one line without Ray.

The cluster (``ray.init(num_cpus=2)`` in this process, shut down after the module) is real:
the ``git flor replay`` subprocesses join it through its address, as a user's do.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import TRAIN, flor, git, run_script, user_state

ray = pytest.importorskip("ray")

NEW = ['            flor.log("g", float(np.abs(w).sum()))', '        flor.log("wn", float(w @ w))']


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real two-CPU Ray cluster on this machine; its address.

    With Ray's token authentication, as Ray sets up a new cluster by default: the token
    goes to a temporary HOME, and clients are given its path as a user's would be.
    """
    home = tmp_path_factory.mktemp("ray-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(home))
        ctx = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, address="local")
    try:
        os.environ["RAY_AUTH_TOKEN_PATH"] = str(home / ".ray" / "auth_token")  # for the clients
        yield ctx.address_info["gcs_address"]
    finally:
        os.environ.pop("RAY_AUTH_TOKEN_PATH", None)
        ray.shutdown()


def today(text: str) -> str:
    """Today's code: one step-level and one epoch-level statement the runs never logged."""
    lines = text.splitlines()
    at_step = next(i for i, ln in enumerate(lines) if 'flor.log("loss"' in ln)
    lines.insert(at_step + 1, NEW[0])
    at_epoch = next(i for i, ln in enumerate(lines) if 'flor.log("val"' in ln)
    lines.insert(at_epoch + 1, NEW[1])
    return "\n".join(lines) + "\n"


def project(tmp: Path, script: str = TRAIN) -> Path:
    """Two recorded runs (every epoch checkpointed, and the default bound), today's statements added."""
    repo = tmp / "project"
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    (repo / "train.py").write_text(script)
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "v1")
    run_script(repo, "train.py", "--kwargs", "epochs=4", env={"FLOR_CKPT_BOUND": "1"})
    run_script(repo, "train.py", "--kwargs", "lr=0.05", "epochs=4")
    (repo / "train.py").write_text(today(script))
    return repo


def replay(repo: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "flor", "replay", "--apply", "g,wn", "--yes", *args], cwd=repo, text=True,
                          capture_output=True, stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})},
                          timeout=300)


def table(repo: Path) -> str:
    return flor(repo, "log", "g", "wn", "--format", "csv").stdout


def test_ray_equals_local_with_payloads_only_in_the_store(cluster: str, tmp_path: Path) -> None:
    repo = project(tmp_path)
    local = tmp_path / "local"
    shutil.copytree(repo, local, symlinks=True)
    out = replay(local, "--executor", "local")
    assert out.returncode == 0, out.stderr
    # The cluster's workers have no .git: the payloads are in the store and nowhere else.
    store = tmp_path / "store"
    git(repo, "config", "flor.store", store.as_uri())
    from git_flor.storage import remote_store
    from git_flor.storage.repo import open_repo

    assert remote_store.push_payloads(open_repo(str(repo)), store.as_uri()).uploaded > 0
    shutil.move(repo / ".git" / "flor" / "objects", tmp_path / "objects-away")
    git(repo, "config", "flor.executor", "ray")  # the default executor, and its cluster, from git config
    git(repo, "config", "flor.ray.address", cluster)
    before = user_state(repo)
    out = replay(repo, env={"RAY_ADDRESS": ""})
    assert out.returncode == 0, out.stderr
    assert table(repo) == table(local) and table(local).count("\n") > 10
    assert user_state(repo) == before
    assert not (repo / ".git" / "flor" / "objects").exists()  # nothing was read or fetched there


KILLABLE = TRAIN.replace(
    "        flor.log(\"val\"",
    textwrap.indent(textwrap.dedent(
        """\
        mark = os.environ.get("KILL_MARK")
        if mark and epoch == 2 and not os.path.exists(mark):  # the first attempt only: wait to be killed
            with open(mark + ".tmp", "w") as fh:
                fh.write(f"{os.getppid()} {os.getpid()}")
            os.replace(mark + ".tmp", mark)
            time.sleep(120)
        """), "        ") + "        flor.log(\"val\"",
).replace("import numpy as np\n", "import os\nimport time\n\nimport numpy as np\n")


def test_a_worker_killed_mid_task_is_retried_and_written_once(cluster: str, tmp_path: Path) -> None:
    repo = project(tmp_path, KILLABLE)
    local = tmp_path / "local"
    shutil.copytree(repo, local, symlinks=True)
    assert replay(local).returncode == 0
    git(repo, "config", "flor.store", (tmp_path / "store").as_uri())  # the driver uploads what it lacks
    mark = tmp_path / "mark"
    proc = subprocess.Popen(["git", "flor", "replay", "--apply", "g,wn", "--yes", "--executor", "ray"], cwd=repo,
                            env={**os.environ, "RAY_ADDRESS": cluster, "KILL_MARK": str(mark)}, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not mark.exists():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.2)
    worker, child = (int(x) for x in mark.read_text().split())
    os.kill(worker, signal.SIGKILL)  # the Ray worker process running the task, as a lost node would
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    assert table(repo) == table(local)
    assert not alive(child)  # the killed attempt's child died with its worker
    # One replay commit per run, each value once: the lost attempt wrote nothing.
    notes = [json.loads(line) for line in git(repo, "notes", "--ref=flor", "show", "HEAD").splitlines()]
    replays = [n for n in notes if n.get("replay_of")]
    assert len(replays) == 2 and len({n["replay_of"] for n in replays}) == 2
    for note in replays:
        logs = [json.loads(line) for line in git(repo, "show", f"{note['shadow']}:logs.jsonl").splitlines()]
        keys = [(r["name"], json.dumps(r["pos"])) for r in logs]
        assert len(keys) == len(set(keys)) == 4 * 4 + 4


def alive(pid: int, wait: float = 10.0) -> bool:
    """Whether ``pid`` is still a running process after up to ``wait`` seconds (a zombie is not)."""
    deadline = time.time() + wait
    while time.time() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        if state in ("Z", "X"):
            return False
        time.sleep(0.2)
    return True


def test_a_local_ray_for_the_command_reports_a_failing_statement_per_run(tmp_path: Path) -> None:
    """No address: a local Ray started for the command; no store: the clone's payloads (same machine)."""
    repo = project(tmp_path)
    text = (repo / "train.py").read_text()
    (repo / "train.py").write_text(text.replace(NEW[1], NEW[1] + '\n        flor.log("boom", 1 / (lr - 0.05))'))
    out = subprocess.run(["git", "flor", "replay", "--apply", "g,boom", "--yes", "--executor", "ray"], cwd=repo,
                         text=True, capture_output=True, stdin=subprocess.DEVNULL, timeout=300,
                         env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"})
    assert out.returncode == 3, out.stderr
    assert "ZeroDivisionError" in out.stderr
    rows = json.loads(flor(repo, "log", "g", "boom", "--format", "json").stdout)
    # The failing statement costs only its own values, in the run where it fails (as locally).
    assert len({r["run"] for r in rows if r["boom"] is not None}) == 1
    assert len({r["run"] for r in rows if r["g"] is not None}) == 2


def test_ctrl_c_cancels_the_tasks_and_keeps_finished_runs(cluster: str, tmp_path: Path) -> None:
    repo = tmp_path / "ctrlc"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "slow.py").write_text(textwrap.dedent(
        """\
        import os
        import time
        import git_flor as flor
        x = flor.arg("x", 1)
        for epoch in flor.loop("epoch", range(3)):
            if x == 2 and os.environ.get("SLOW_PID"):  # in the replay only: slow, and says who it is
                with open(os.environ["SLOW_PID"], "w") as fh:
                    fh.write(str(os.getpid()))
                time.sleep(120)
            flor.log("v", epoch * x)
        """
    ))
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "slow")
    run_script(repo, "slow.py")
    run_script(repo, "slow.py", "--kwargs", "x=2")
    (repo / "slow.py").write_text((repo / "slow.py").read_text() + "    flor.log(\"h\", epoch + x)\n")
    git(repo, "config", "flor.store", (tmp_path / "store").as_uri())
    proc = subprocess.Popen([sys.executable, "-m", "git_flor", "replay", "--apply", "h", "--yes", "--executor", "ray"],
                            cwd=repo, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True,
                            env={**os.environ, "RAY_ADDRESS": cluster, "SLOW_PID": str(tmp_path / "slow.pid")})
    deadline = time.time() + 120
    # Until the fast run's values are written and the slow run's job is running on a worker.
    while flor(repo, "log", "h").returncode != 0 or not (tmp_path / "slow.pid").exists():
        assert time.time() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    rows = json.loads(flor(repo, "log", "h", "--format", "json").stdout)
    assert {r["run"] for r in rows if r["h"] is not None}  # the fast run's values were kept
    assert not alive(int((tmp_path / "slow.pid").read_text()), wait=20)  # the cancelled job's child was stopped


def test_executor_ray_without_ray_installed_is_one_line_and_exit_2(repo: Path) -> None:
    run_script(repo)
    # As on a machine without Ray: importing it fails (None in sys.modules is how Python spells that).
    code = "import sys; sys.modules['ray'] = None; from git_flor.cli import main; main()"
    out = subprocess.run([sys.executable, "-c", code, "replay", "--apply", "x", "--yes", "--executor", "ray"],
                         cwd=repo, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines() == [
        "git-flor: the ray executor needs Ray: pip install ray (or replay with --executor local)"
    ]
    git(repo, "config", "flor.executor", "dask")
    bad = flor(repo, "replay", "--apply", "x", "--yes")
    assert bad.returncode == 2 and "unknown executor 'dask'" in bad.stderr


def test_a_cuda_run_on_a_cluster_without_gpus_fails_that_job_not_the_command(cluster: str) -> None:
    from git_flor.replay.executors import Task
    from git_flor.replay.ray_executor import RayExecutor

    tasks = [Task(0, [sys.executable, "-c", "pass"], "/", {}, gpus=1)]
    (outcome,) = list(RayExecutor(cluster, "file:///nonexistent-store", 1).run(tasks))
    assert outcome.returncode == -1 and "used CUDA" in outcome.stderr and "0 GPU(s)" in outcome.stderr


CHILD = textwrap.dedent(
    """\
    import json, os, time
    spec = json.load(open(os.environ["FLOR_REPLAY"]))
    for i in (1, 2, 3):
        with open(spec["progress"], "w") as fh:
            fh.write(str(i))
        time.sleep(1.0)
    with open(spec["out"], "w") as fh:
        json.dump({"input": open("input.txt").read(), "cwd": os.getcwd(), "spec": spec,
                   "env": os.environ["ONLY_IN_THE_TASK"]}, fh)
    """
)


def test_the_executor_ships_the_tree_rebases_its_paths_relays_progress_and_returns_files(
    cluster: str, tmp_path: Path
) -> None:
    """The executor on its own, with a stand-in child: what a worker gets and what comes back."""
    import threading

    from git_flor.replay.executors import Task
    from git_flor.replay.ray_executor import RayExecutor

    scratch = tmp_path / "scratch"
    (scratch / "sub").mkdir(parents=True)
    (scratch / "sub" / "input.txt").write_text("from the driver's tree")
    spec = {"scratch_root": str(scratch), "store": str(tmp_path / "objects"), "checkpoints": {},
            "out": str(scratch / ".out"), "progress": str(scratch / ".progress"), "user_root": str(tmp_path)}
    (scratch / ".spec.json").write_text(json.dumps(spec))
    task = Task(0, [sys.executable, "-c", CHILD], str(scratch / "sub"),
                {"FLOR_REPLAY": str(scratch / ".spec.json"), "ONLY_IN_THE_TASK": "yes"})
    seen: set[str] = set()
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.1):
            if (scratch / ".progress").exists():
                seen.add((scratch / ".progress").read_text())

    threading.Thread(target=watch, daemon=True).start()
    try:
        (outcome,) = list(RayExecutor(cluster, (tmp_path / "store").as_uri(), 1).run([task]))
    finally:
        stop.set()
    assert outcome.returncode == 0, outcome.stderr
    got = json.loads((scratch / ".out").read_text())  # sent back, written where the driver reads it
    assert got["input"] == "from the driver's tree" and got["env"] == "yes"
    worker_root = got["spec"]["scratch_root"]
    assert worker_root != str(scratch) and got["cwd"] == os.path.join(worker_root, "sub")
    assert got["spec"]["out"] == os.path.join(worker_root, ".out") and got["spec"]["user_root"] == str(tmp_path)
    assert not got["spec"]["store"].startswith(str(tmp_path))  # payloads from the store, into the worker's dir
    assert seen & {"1", "2"}  # iteration counts reached the driver while the task ran
