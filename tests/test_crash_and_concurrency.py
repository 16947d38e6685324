"""Crash safety (SIGKILL loses at most a second) and concurrent runs (nothing lost)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pygit2

import git_flor
from tests.conftest import flor, git, run_script


def test_sigkilled_run_is_recovered_as_interrupted_with_its_records(repo: Path) -> None:
    (repo / "slow.py").write_text(textwrap.dedent(
        """\
        import time, pathlib
        import git_flor as flor
        flor.arg("lr", 0.5)
        for epoch in flor.loop("epoch", range(1000)):
            flor.log("loss", 1.0 / (epoch + 1))
            if epoch == 3:
                pathlib.Path("ready").write_text("x")
            time.sleep(0.05 if epoch < 3 else 10)
        """
    ))
    proc = subprocess.Popen([sys.executable, "slow.py"], cwd=repo, stdin=subprocess.DEVNULL)
    deadline = time.time() + 30
    while not (repo / "ready").exists():
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.02)
    time.sleep(1.3)  # the journal is pushed at least once a second
    gitdir = Path(git(repo, "rev-parse", "--git-common-dir").strip())
    journal = list((repo / gitdir / "flor" / "journal").glob("*.jsonl"))
    assert len(journal) == 1
    before = flor(repo, "runs", "--format", "json")  # a live run is not recovered
    assert json.loads(before.stdout) == []
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    out = flor(repo, "runs", "--format", "json")
    assert "recovered run" in out.stderr
    runs = json.loads(out.stdout)
    assert [r["status"] for r in runs] == ["interrupted"]
    assert runs[0]["args"] == {"lr": 0.5}
    df = git_flor.dataframe("loss", repo=pygit2.Repository(str(repo)))
    assert df["loss"].tolist() == [1.0, 0.5, 1 / 3, 0.25]
    assert df["epoch"].tolist() == [0, 1, 2, 3]
    assert not journal[0].exists()
    # Recovery happens once: a second listing shows the same single run.
    assert len(json.loads(flor(repo, "runs", "--format", "json").stdout)) == 1


def test_a_new_run_recovers_orphans_too(repo: Path) -> None:
    (repo / "die.py").write_text(
        "import os, signal, time\nimport git_flor as flor\nflor.log('x', 1)\ntime.sleep(1.3)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    run_script(repo, "die.py", check=False)
    run_script(repo)
    runs = json.loads(flor(repo, "runs", "--format", "json").stdout)
    assert sorted(r["status"] for r in runs) == ["interrupted", "ok"]


def test_eight_concurrent_runs_lose_nothing(repo: Path) -> None:
    (repo / "par.py").write_text(textwrap.dedent(
        """\
        import sys, time
        import git_flor as flor
        k = flor.arg("k", 0)
        while time.time() < float(sys.argv[1]):
            time.sleep(0.001)
        for i in flor.loop("i", range(50)):
            flor.log("v", k * 100 + i)
        """
    ))
    start = str(time.time() + 2.0)  # all eight finish and write at about the same moment
    procs = [
        subprocess.Popen([sys.executable, "par.py", start, "--kwargs", f"k={k}"], cwd=repo,
                         stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for k in range(8)
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        assert "could not write" not in err, err
    runs = json.loads(flor(repo, "runs", "--format", "json").stdout)
    assert sorted(r["args"]["k"] for r in runs) == list(range(8))
    head = git(repo, "rev-parse", "HEAD").strip()
    lines = git(repo, "notes", "--ref=flor", "show", head).splitlines()
    assert len(lines) == 8 and len({json.loads(line)["run"] for line in lines}) == 8
    df = git_flor.dataframe("v", repo=pygit2.Repository(str(repo)))
    assert sorted(df["v"].tolist()) == sorted(k * 100 + i for k in range(8) for i in range(50))
    assert git(repo, "rev-list", "--count", "--first-parent", "refs/flor/shadow/" + _clone(repo)).strip() == "9"


def _clone(repo: Path) -> str:
    refs = git(repo, "for-each-ref", "--format=%(refname:lstrip=3)", "refs/flor/shadow/").split()
    assert len(refs) == 1
    return refs[0]
