"""``git flor`` through the installed binary: listings, formats, errors and exit codes."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pygit2

import git_flor
from tests.conftest import flor, git, run_script


def two_versions(repo: Path) -> tuple[str, str]:
    run_script(repo, "train.py", "--kwargs", "lr=0.05")
    first = git(repo, "rev-parse", "HEAD").strip()
    (repo / "train.py").write_text((repo / "train.py").read_text().replace("range(4)", "range(2)"))
    git(repo, "commit", "-qam", "fewer steps")
    run_script(repo)
    return first, git(repo, "rev-parse", "HEAD").strip()


def test_runs_and_log_end_to_end(repo: Path) -> None:
    first, second = two_versions(repo)
    out = flor(repo, "runs")
    assert out.returncode == 0, out.stderr
    header = out.stdout.splitlines()[0].split()
    assert header == ["run", "commit", "dirty", "script", "start", "duration", "status", "args"]
    assert "lr=0.05" in out.stdout and first[:8] in out.stdout and second[:8] in out.stdout

    table = flor(repo, "log", "loss", "lr")
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0].split() == [
        "run", "commit", "tstamp", "script", "epoch", "step", "loss", "lr"]
    assert len(table.stdout.splitlines()) == 1 + 3 * 4 + 3 * 2

    rows = list(csv.DictReader(io.StringIO(flor(repo, "log", "val", "--format", "csv").stdout)))
    assert [r["commit"] for r in rows] == [first] * 3 + [second] * 3
    assert [r["epoch"] for r in rows] == ["0", "1", "2"] * 2

    as_json = json.loads(flor(repo, "log", "val", "--rev", "HEAD~1", "--format", "json").stdout)
    assert {r["commit"] for r in as_json} == {first} and len(as_json) == 3
    assert isinstance(as_json[0]["val"], float) and isinstance(as_json[0]["epoch"], int)
    lines = flor(repo, "log", "val", "--rev", "HEAD~1..HEAD", "--format", "jsonl").stdout.splitlines()
    assert {json.loads(line)["commit"] for line in lines} == {second}

    where = json.loads(flor(repo, "log", "val", "--where", "lr < 0.1", "--format", "json").stdout)
    assert {r["commit"] for r in where} == {first} and "lr" not in where[0]


def test_log_matches_dataframe(repo: Path) -> None:
    two_versions(repo)
    df = git_flor.dataframe("loss", "val", repo=pygit2.Repository(str(repo)))
    rows = json.loads(flor(repo, "log", "loss", "val", "--format", "json").stdout)
    assert [r["loss"] for r in rows] == df["loss"].tolist()
    assert [r["run"] for r in rows] == df["run"].tolist()


def test_show_a_run_by_prefix(repo: Path) -> None:
    run_script(repo)
    run_id = json.loads(flor(repo, "runs", "--format", "json").stdout)[0]["run"]
    out = flor(repo, "show", run_id[:6])
    assert out.returncode == 0, out.stderr
    assert f"id:             {run_id}" in out.stdout
    assert "loss: 12 values" in out.stdout and "val: 3 values" in out.stdout
    info = json.loads(flor(repo, "show", run_id, "--format", "json").stdout)
    assert info["status"] == "ok" and info["values"]["loss"]["count"] == 12


def test_errors_are_one_line_with_documented_exit_codes(repo: Path, tmp_path: Path) -> None:
    run_script(repo)
    cases = {
        ("show", "nosuchrun"): (2, "unknown run 'nosuchrun'"),
        ("log", "val", "--rev", "nosuchbranch"): (2, "unknown revision 'nosuchbranch'"),
        ("log", "grad_norm"): (2, "no run has a value named 'grad_norm'"),
        ("log", "val", "--where", "val <<< 3"): (2, "bad --where expression"),
        ("log", "--format", "xml"): (2, "Invalid value for '--format'"),
    }
    for args, (code, message) in cases.items():
        out = flor(repo, *args)
        assert out.returncode == code, (args, out.stderr)
        assert message in out.stderr, (args, out.stderr)
        assert "Traceback" not in out.stderr
    outside = tmp_path / "nowhere"
    outside.mkdir()
    out = flor(outside, "runs")
    assert out.returncode == 128 and out.stderr.startswith("git-flor: not a git repository")
    bare = tmp_path / "bare.git"
    git(tmp_path, "clone", "-q", "--bare", str(repo), str(bare))
    out = flor(bare, "runs")
    assert out.returncode == 128 and "bare repository" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_help_paths(repo: Path) -> None:
    assert "Example:" in flor(repo, "help", "log").stdout
    assert "runs" in flor(repo, "-h").stdout
    missing = flor(repo, "help", "nosuch")
    assert missing.returncode == 2


def test_subdirectory_and_linked_worktree(repo: Path, tmp_path: Path) -> None:
    sub = repo / "experiments"
    sub.mkdir()
    (sub / "exp.py").write_text("import git_flor as flor\nflor.log('where', 'sub')\n")
    run_script(sub, "exp.py")
    runs = json.loads(flor(sub, "runs", "--format", "json").stdout)
    assert runs[0]["script"] == "experiments/exp.py"
    show = json.loads(flor(sub, "show", runs[0]["run"], "--format", "json").stdout)
    assert show["cwd"] == "experiments"

    wt = tmp_path / "wt"
    git(repo, "worktree", "add", "-q", "-b", "side", str(wt))
    (wt / "train.py").write_text((wt / "train.py").read_text().replace("range(4)", "range(1)"))
    run_script(wt)
    side = git(wt, "rev-parse", "HEAD").strip()
    from_wt = json.loads(flor(wt, "runs", "--format", "json").stdout)
    from_main = json.loads(flor(repo, "runs", "--format", "json").stdout)
    assert from_wt == from_main and len(from_main) == 2
    wt_run = [r for r in from_main if r["script"] == "train.py"][0]
    assert wt_run["commit"] == side and wt_run["dirty"] is True
    assert git(wt, "show", f"{json.loads(flor(wt, 'show', wt_run['run'], '--format', 'json').stdout)['shadow']}:src/train.py") == (wt / "train.py").read_text()
    assert git(wt, "status", "--porcelain") == " M train.py\n"


def test_index_is_a_cache(repo: Path) -> None:
    run_script(repo)
    gitdir = repo / git(repo, "rev-parse", "--git-common-dir").strip()
    before = flor(repo, "log", "loss", "--format", "csv").stdout
    (gitdir / "flor" / "index.sqlite").unlink()
    assert flor(repo, "log", "loss", "--format", "csv").stdout == before
    assert flor(repo, "reindex").returncode == 0
    assert flor(repo, "log", "loss", "--format", "csv").stdout == before


def test_runs_fetched_from_another_clone_appear(repo: Path, tmp_path: Path) -> None:
    run_script(repo)
    other = tmp_path / "other"
    git(tmp_path, "clone", "-q", str(repo), str(other))
    run_script(other, "train.py", "--kwargs", "lr=0.01")
    assert len(json.loads(flor(repo, "runs", "--format", "json").stdout)) == 1
    git(repo, "fetch", "-q", str(other), "refs/flor/*:refs/flor/*")
    runs = json.loads(flor(repo, "runs", "--format", "json").stdout)
    assert sorted(r["args"]["lr"] for r in runs) == [0.01, 0.1]


def test_corrupted_record_is_skipped_with_a_warning(repo: Path) -> None:
    run_script(repo)
    repository = pygit2.Repository(str(repo))
    ref = [r for r in repository.references if r.startswith("refs/flor/shadow/")][0]
    tip = repository.references[ref].peel(pygit2.Commit)
    logs = repository[tip.tree["logs.jsonl"].id].data.splitlines()
    logs[1] = b'{"name": "loss", "val'  # torn line
    builder = repository.TreeBuilder(tip.tree)
    builder.insert("logs.jsonl", repository.create_blob(b"\n".join(logs) + b"\n"), pygit2.enums.FileMode.BLOB)
    sig = pygit2.Signature("t", "t@example.com")
    new = repository.create_commit(None, sig, sig, tip.message, builder.write(), [p.id for p in tip.parents])
    repository.references[ref].set_target(new)
    out = flor(repo, "log", "loss", "--format", "json")
    assert out.returncode == 0
    assert "skipping corrupt log record" in out.stderr
    assert len(json.loads(out.stdout)) == 11
