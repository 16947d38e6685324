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
    gitdir = Path(git(repo, "rev-parse", "--git-common-dir").strip())
    journal = list((repo / gitdir / "flor" / "journal").glob("*.jsonl"))
    assert len(journal) == 1
    # The flusher pushes the journal about once a second: wait for it, however busy the machine.
    while journal[0].read_bytes().count(b'"name":"loss"') < 4:
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.05)
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
    (repo / "die.py").write_text(  # an iteration's end pushes the journal: no timing involved
        "import os, signal\nimport git_flor as flor\nfor i in flor.loop('i', range(1)):\n"
        "    flor.log('x', 1)\nos.kill(os.getpid(), signal.SIGKILL)\n"
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


SLOW = textwrap.dedent(
    """\
    import pathlib, time
    import git_flor as flor
    for epoch in flor.loop("epoch", range(100000)):
        flor.log("loss", 1.0 / (epoch + 1))
        if epoch == 1:
            pathlib.Path("ready").write_text("x")
        time.sleep(0.05)
    """
)


def test_gc_prune_now_during_a_run_on_uncommitted_edits(repo: Path) -> None:
    """The snapshot of uncommitted edits survives `git gc --prune=now` while the run is live and
    after it crashed, so the run is recovered with the code it ran."""
    (repo / "slow.py").write_text(SLOW)
    (repo / "train.py").write_text((repo / "train.py").read_text() + "# an edit only the run saw\n")
    proc = subprocess.Popen([sys.executable, "slow.py"], cwd=repo, stdin=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not (repo / "ready").exists():
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.02)
    assert "refs/flor/live/" in git(repo, "for-each-ref", "refs/flor/live/")
    git(repo, "gc", "-q", "--prune=now")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    (repo / "train.py").write_text(git(repo, "show", "HEAD:train.py"))  # the edit is gone from disk
    git(repo, "gc", "-q", "--prune=now")

    out = flor(repo, "runs", "--format", "json")
    assert out.returncode == 0, out.stderr
    [run] = json.loads(out.stdout)
    assert run["status"] == "interrupted"
    shadow = json.loads(flor(repo, "show", run["run"], "--format", "json").stdout)["shadow"]
    assert git(repo, "show", f"{shadow}:src/train.py").endswith("# an edit only the run saw\n")
    assert git(repo, "for-each-ref", "refs/flor/live/") == ""  # released once in the shadow branch
    run_script(repo)  # and training goes on
    assert git(repo, "for-each-ref", "refs/flor/live/") == ""


def test_an_unrecoverable_journal_is_quarantined_not_fatal(repo: Path) -> None:
    gitdir = repo / git(repo, "rev-parse", "--git-common-dir").strip()
    journal = gitdir / "flor" / "journal"
    journal.mkdir(parents=True)
    head = {"t": "head", "meta": {"id": "0123456789ab", "start": 1.0, "tree": "f" * 40,
                                  "commit": git(repo, "rev-parse", "HEAD").strip(), "script": "x.py"}}
    (journal / "0123456789ab.jsonl").write_text(json.dumps(head) + "\n")
    out = flor(repo, "runs", "--format", "json")
    assert out.returncode == 0 and json.loads(out.stdout) == []
    assert "could not recover crashed run 0123456789ab" in out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert (journal / "quarantine" / "0123456789ab.jsonl").exists()
    done = run_script(repo)  # a training run is not taken down by it either
    assert "Traceback" not in done.stderr
    again = flor(repo, "runs", "--format", "json")
    assert again.returncode == 0 and again.stderr == "" and len(json.loads(again.stdout)) == 1
