"""Teammates' data, as a plain `git fetch` brings it: one bad run costs that run only.

The bad runs are forged into another clone's shadow ref (what a fetch writes) from a
real run, one field changed each, and every command that reads runs must still work.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pygit2
from pygit2.enums import FileMode

from tests.conftest import flor, git, run_script

TEAMMATE = "refs/flor/shadow/teammate0001"


def forge(repo: Path, change: dict | None = None, logs: bytes | None = None, ref: str = TEAMMATE) -> str:
    """A copy of this clone's newest run on a teammate's shadow ref, with ``change`` applied."""
    r = pygit2.Repository(str(repo))
    own = next(n for n in r.references if n.startswith("refs/flor/shadow/") and n != ref)
    run = r[r.references[own].target]
    meta = json.loads(r[run.tree["run.json"].id].data)
    meta.update(change or {})
    builder = r.TreeBuilder(run.tree)
    builder.insert("run.json", r.create_blob(json.dumps(meta).encode()), FileMode.BLOB)
    if logs is not None:
        builder.insert("logs.jsonl", r.create_blob(logs), FileMode.BLOB)
    sig = pygit2.Signature("Mate", "mate@example.com")
    old = r.references.get(ref)
    parent = old.target if old else r.create_commit(None, sig, sig, "root\n", r.TreeBuilder().write(), [])
    new = r.create_commit(None, sig, sig, f"flor run {meta.get('id')}\n", builder.write(),
                          [parent, run.parent_ids[1]])
    r.references.create(ref, new, force=True)
    return str(new)


def ok(repo: Path, *args: str) -> tuple[str, str]:
    done = flor(repo, *args)
    assert done.returncode in (0, 3), done.stderr
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr
    return done.stdout, done.stderr


def runs(repo: Path) -> list[dict]:
    return json.loads(ok(repo, "runs", "--format", "json")[0])


BAD = [{"start": "abc"}, {"args": [1, 2]}, {"id": "../x"}, {"cwd": "../../elsewhere"},
       {"argv": "python train.py"}, {"commit": 7}, {"id": None}, {"format": "two"}]


def test_each_bad_field_skips_only_its_run_with_a_warning(repo: Path) -> None:
    run_script(repo)
    mine = runs(repo)[0]["run"]
    for i, change in enumerate(BAD):  # each on its own teammate's ref, as a fetch brings them
        forge(repo, {"id": f"bad{i:09d}", **change}, ref=f"{TEAMMATE}{i}")
    forge(repo, {"id": "0f0f0f0f0f0f"})  # and a good one
    out, err = ok(repo, "runs", "--format", "json")
    assert sorted(r["run"] for r in json.loads(out)) == sorted([mine, "0f0f0f0f0f0f"])
    lines = err.splitlines()
    assert len(lines) == len(BAD) and all(line.startswith("git-flor: warning: skipping a run in "
                                                          f"{TEAMMATE}") for line in lines)
    for field in ("start", "args", "id", "cwd", "argv", "commit", "format"):
        assert f"field {field!r}" in err or field == "id"
    for args in (["log", "loss", "--format", "json"], ["show", mine], ["runs", "--rev", "HEAD"],
                 ["replay", "--apply", "loss", "--dry-run", "--format", "json"]):
        ok(repo, *args)


def test_a_loop_position_beyond_int64_skips_that_record(repo: Path) -> None:
    run_script(repo)
    bad = b'{"name":"loss","value":1.0,"pos":[["epoch",1180591620717411303424,null]]}\n'
    good = b'{"name":"loss","value":2.0,"pos":[["epoch",0,null]]}\n'
    forge(repo, {"id": "a1b2c3d4e5f6"}, logs=bad + good)
    out, err = ok(repo, "log", "loss", "--run", "a1b2c3d4e5f6", "--format", "json")
    assert [row["loss"] for row in json.loads(out)] == [2.0]
    assert "skipping corrupt log record" in err


def test_a_teammates_run_with_my_run_id_does_not_replace_mine(repo: Path) -> None:
    run_script(repo)
    mine = runs(repo)[0]
    forge(repo, {"id": mine["run"], "args": {"lr": 99.0}, "start": 1.0})
    out, err = ok(repo, "runs", "--format", "json")
    [only] = json.loads(out)
    assert only["args"] == mine["args"] and "same id" in err and TEAMMATE in err
    ok(repo, "reindex")  # a rebuild from scratch reads the teammate's ref too: mine still wins
    assert runs(repo)[0]["args"] == mine["args"]


def test_a_manifest_with_unknown_keys_still_reads(repo: Path) -> None:
    run_script(repo)
    run = runs(repo)[0]["run"]
    r = pygit2.Repository(str(repo))
    [name] = [n for n in r.references if n.startswith("refs/flor/manifests/")]
    ref = r.references[name]
    tip = r[ref.target]
    fan_tree = r[tip.peel(pygit2.Tree)[run[:2]].id]
    tree = r[fan_tree[run].id]
    top = r.TreeBuilder(tree)
    for entry in tree:
        sub = r.TreeBuilder(r[entry.id])
        for blob in r[entry.id]:
            data = json.loads(r[blob.id].data)
            data["added_by_a_newer_git_flor"] = {"x": 1}
            sub.insert(blob.name, r.create_blob(json.dumps(data).encode()), FileMode.BLOB)
        top.insert(entry.name, sub.write(), FileMode.TREE)
    fan = r.TreeBuilder(fan_tree)
    fan.insert(run, top.write(), FileMode.TREE)
    root = r.TreeBuilder(tip.peel(pygit2.Tree))
    root.insert(run[:2], fan.write(), FileMode.TREE)
    sig = pygit2.Signature("Mate", "mate@example.com")
    ref.set_target(r.create_commit(None, sig, sig, "newer\n", root.write(), [tip.id]))
    out, err = ok(repo, "show", run, "--format", "json")
    assert json.loads(out)["checkpoints"] and err == ""
    plan, err = ok(repo, "replay", "--apply", "loss", "--force", "--dry-run", "--format", "json")
    assert err == "" or "Traceback" not in err


def test_a_corrupt_index_is_rebuilt_with_a_warning(repo: Path) -> None:
    run_script(repo)
    assert len(runs(repo)) == 1
    index = repo / ".git" / "flor" / "index.sqlite"
    for extra in (index.with_name("index.sqlite-wal"), index.with_name("index.sqlite-shm")):
        extra.unlink(missing_ok=True)
    index.write_bytes(b"this is not a database" * 100)
    out, err = ok(repo, "runs", "--format", "json")
    assert len(json.loads(out)) == 1 and "rebuilding" in err and err.count("\n") == 1
    sqlite3.connect(index).execute("SELECT 1 FROM runs").fetchall()


def test_a_corrupt_note_is_skipped_with_a_warning(repo: Path) -> None:
    run_script(repo)
    head = git(repo, "rev-parse", "HEAD").strip()
    git(repo, "notes", "--ref=flor", "append", "-m", '{"run": [1, 2], "ran_at": 5}\nnot json', head)
    out, err = ok(repo, "runs", "--rev", "HEAD", "--format", "json")
    assert len(json.loads(out)) == 1
    assert "skipping" in err and "note" in err
