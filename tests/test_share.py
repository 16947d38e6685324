"""Sharing between clones: `git flor push`/`pull`, plain `git fetch`, the checkpoint payload store."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pygit2
import pytest

from git_flor.storage import remote_store
from tests.conftest import flor, git

SCRIPT = "import sys, git_flor as flor\nflor.arg('who', 'x')\nflor.log('acc', 0.5)\n"


@pytest.fixture
def clones(repo: Path, tmp_path: Path) -> tuple[Path, Path, Path]:
    """A bare remote and two clones of it, both `git flor init`-ed, sharing one commit."""
    (repo / "train_share.py").write_text(SCRIPT)
    git(repo, "add", "train_share.py")
    git(repo, "commit", "-qm", "share script")
    remote = tmp_path / "remote.git"
    git(tmp_path, "clone", "-q", "--bare", str(repo), str(remote))
    a, b = tmp_path / "a", tmp_path / "b"
    for path in (a, b):
        git(tmp_path, "clone", "-q", str(remote), str(path))
        assert flor(path, "init").returncode == 0
    return remote, a, b


def start_runs(cwd: Path, who: str, n: int) -> list[subprocess.Popen[str]]:
    return [subprocess.Popen([sys.executable, "train_share.py", "--kwargs", f"who={who}{i}"], cwd=cwd,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             stdin=subprocess.DEVNULL) for i in range(n)]


def wait(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err


def run_ids(cwd: Path) -> set[str]:
    out = flor(cwd, "runs", "--format", "json")
    assert out.returncode == 0, out.stderr
    return {r["run"] for r in json.loads(out.stdout)}


def note_runs(cwd: Path) -> set[str]:
    out = git(cwd, "notes", "--ref=flor", "show", "HEAD", check=False)
    return {json.loads(line)["run"] for line in out.splitlines() if '"run"' in line}


def ok(out: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert out.returncode == 0, out.stderr
    return out


def test_two_clones_exchange_runs_both_ways_while_runs_finish(clones: tuple[Path, Path, Path]) -> None:
    remote, a, b = clones
    wait(start_runs(a, "a-first", 2))
    wait(start_runs(b, "b-first", 2))
    # Runs finish on both sides while both push and pull: every side writes notes on the same commit.
    live = start_runs(a, "a", 4) + start_runs(b, "b", 4)
    for _ in range(2):
        ok(flor(a, "push"))
        ok(flor(b, "push"))
        ok(flor(a, "pull"))
        ok(flor(b, "pull"))
    wait(live)
    # Both push at the same moment: the notes push that loses the race merges and retries.
    racing = [subprocess.Popen(["git", "flor", "push"], cwd=side, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True) for side in (a, b)]
    for proc in racing:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    for side in (a, b):
        ok(flor(side, "pull", "origin"))
    everything = run_ids(a)
    assert len(everything) == 12
    assert run_ids(b) == everything
    assert note_runs(a) == note_runs(b) == everything  # the notes union lost no line
    remote_note = git(remote, "notes", "--ref=flor", "show", "HEAD")
    assert {json.loads(line)["run"] for line in remote_note.splitlines() if '"run"' in line} == everything
    # The remote holds one shadow ref per clone, and the union of the notes.
    refs = git(remote, "for-each-ref", "--format=%(refname)", "refs/flor/shadow").split()
    assert len(refs) == 2
    table = json.loads(ok(flor(b, "log", "acc", "who", "--format", "json")).stdout)
    assert {r["who"][0] for r in table} == {"a", "b"} and len(table) == 12


def test_plain_git_fetch_brings_runs_and_never_rewinds_our_own(clones: tuple[Path, Path, Path]) -> None:
    _, a, b = clones
    wait(start_runs(a, "a", 1))
    ok(flor(a, "push"))
    wait(start_runs(a, "a-later", 1))  # our shadow ref is now ahead of the remote's copy
    mine = git(a, "for-each-ref", "--format=%(objectname)", "refs/flor/shadow").strip()
    git(a, "fetch", "-q")
    assert git(a, "for-each-ref", "--format=%(objectname)", "refs/flor/shadow").strip() == mine
    git(b, "fetch", "-q")  # no `git flor pull`: the fetch refspecs `init` added are enough
    assert len(run_ids(b)) == 1
    assert "pushed" not in ok(flor(b, "pull")).stdout


def test_push_and_pull_without_init_and_with_a_missing_remote(repo: Path, tmp_path: Path) -> None:
    remote = tmp_path / "r.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    git(repo, "remote", "add", "origin", str(remote))
    git(repo, "push", "-q", "origin", "main")
    (repo / "train_share.py").write_text(SCRIPT)
    wait(start_runs(repo, "x", 1))
    ok(flor(repo, "push"))
    assert git(remote, "for-each-ref", "refs/notes/flor").strip()
    other = tmp_path / "other"
    git(tmp_path, "clone", "-q", str(remote), str(other))
    ok(flor(other, "pull"))
    assert run_ids(other) == run_ids(repo)
    missing = flor(repo, "push", "nowhere")
    assert missing.returncode == 2 and "git remote add nowhere" in missing.stderr


def fake_payload(repo: Path, data: bytes) -> str:
    sha = hashlib.sha256(data).hexdigest()
    path = repo / ".git" / "flor" / "objects" / sha[:2] / sha[2:]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return sha


def test_checkpoint_payloads_go_through_the_configured_store(clones: tuple[Path, Path, Path], tmp_path: Path) -> None:
    _, a, b = clones
    store = tmp_path / "store"
    shas = [fake_payload(a, bytes([i]) * 1000) for i in range(3)]
    (a / ".git" / "flor" / "objects" / shas[0][:2] / "tmp-half-written").write_bytes(b"x")
    git(a, "config", "flor.store", f"file://{store}")
    out = ok(flor(a, "push"))
    assert "uploaded 3 checkpoint payload(s)" in out.stdout
    assert "uploaded 0 checkpoint payload(s)" in ok(flor(a, "push")).stdout
    assert not list(store.rglob("tmp-half-written"))

    repo_b = pygit2.Repository(str(b))
    with pytest.raises(remote_store.PayloadMissing, match="no store is configured"):
        remote_store.fetch_payload(repo_b, shas[0])
    git(b, "config", "flor.store", f"file://{store}")
    got = remote_store.fetch_payload(repo_b, shas[1])
    assert got.read_bytes() == bytes([1]) * 1000
    assert got == b / ".git" / "flor" / "objects" / shas[1][:2] / shas[1][2:]
    assert remote_store.fetch_payload(repo_b, shas[1]) == got  # local now: no download

    (store / shas[2][:2] / shas[2][2:]).write_bytes(b"corrupted")
    with pytest.raises(remote_store.PayloadMissing, match="corrupt"):
        remote_store.fetch_payload(repo_b, shas[2])
    assert remote_store.local_payload(repo_b, shas[2]) is None  # nothing half-made is left
    with pytest.raises(remote_store.PayloadMissing, match="in neither"):
        remote_store.fetch_payload(repo_b, "0" * 64)


def test_real_checkpoints_travel_manifest_by_git_and_payload_by_store(
    clones: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    from git_flor.storage.checkpoints import read_manifest

    _, a, b = clones
    git(a, "config", "flor.store", f"file://{tmp_path / 'store'}")
    git(b, "config", "flor.store", f"file://{tmp_path / 'store'}")
    ok(subprocess.run([sys.executable, "train.py"], cwd=a, capture_output=True, text=True,
                      stdin=subprocess.DEVNULL))
    run = next(iter(run_ids(a)))
    manifest = read_manifest(pygit2.Repository(str(a)), run)
    assert manifest, "the training script took no checkpoint"
    assert "uploaded" in ok(flor(a, "push")).stdout
    ok(flor(b, "pull"))
    repo_b = pygit2.Repository(str(b))
    assert read_manifest(repo_b, run).keys() == manifest.keys()
    shas = [p.sha256 for e in manifest.values() for p in e["objects"].values()]
    assert remote_store.ensure_payloads(repo_b, shas) == len(set(shas))
    assert remote_store.ensure_payloads(repo_b, shas) == 0  # all local now
    for entry in manifest.values():
        for ptr in entry["objects"].values():
            assert hashlib.sha256(remote_store.fetch_payload(repo_b, ptr.sha256).read_bytes()).hexdigest() == ptr.sha256


def test_uninstall_removes_the_refspecs_init_added(repo: Path, tmp_path: Path) -> None:
    remote = tmp_path / "r.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    git(repo, "remote", "add", "origin", str(remote))
    git(repo, "config", "--add", "remote.origin.fetch", "+refs/tags/*:refs/tags/*")  # the user's own
    before = git(repo, "config", "--local", "--list")
    ok(flor(repo, "init"))
    specs = git(repo, "config", "--get-all", "remote.origin.fetch").split()
    assert "+refs/flor/shadow/*:refs/flor/shadow/*" in specs
    assert any(s.startswith("^refs/flor/shadow/") for s in specs)
    assert git(repo, "config", "--get-all", "remote.origin.push", check=False) == ""  # push.default stays in charge
    ok(flor(repo, "uninstall"))
    assert git(repo, "config", "--local", "--list") == before


def test_pull_counts_runs_not_replay_results(clones: tuple[Path, Path, Path]) -> None:
    _, a, b = clones
    wait(start_runs(a, "a", 2))
    ok(flor(a, "replay", "--apply", "acc", "--force", "--yes"))  # two replay commits on a's ref
    ok(flor(a, "push"))
    out = ok(flor(b, "pull")).stdout
    assert "2 new runs from 1 clone" in out


CKPT_SCRIPT = ("import numpy as np, git_flor as flor\nw = np.zeros(4)\nwith flor.checkpointing(w=w):\n"
               "    for epoch in flor.loop('epoch', range(2)):\n        w += 1\n        flor.log('loss', float(w[0]))\n")


def many_runs(cwd: Path, n: int) -> set[str]:
    """One real recorded run with checkpoints, then ``n - 1`` more written by the same storage call
    the runtime makes at exit (``commit_run``), in-process: hundreds of runs in seconds."""
    import uuid

    from git_flor.storage.checkpoints import read_manifest
    from git_flor.storage.records import LOGS_FILE, RunData, decode_records
    from git_flor.storage.refs import shadow_refs
    from git_flor.storage.shadow import commit_run, read_blob, read_meta

    (cwd / "train_ckpt.py").write_text(CKPT_SCRIPT)
    ok(subprocess.run([sys.executable, "train_ckpt.py"], cwd=cwd, capture_output=True, text=True,
                      stdin=subprocess.DEVNULL))
    r = pygit2.Repository(str(cwd))
    [tip] = shadow_refs(r).values()
    meta = read_meta(r, r[tip])
    records = list(decode_records(read_blob(r, r[tip], LOGS_FILE)))
    manifest = read_manifest(r, meta["id"])
    assert manifest
    ids = {meta["id"]}
    for _ in range(n - 1):
        run = uuid.uuid4().hex[:12]
        commit_run(r, RunData(meta={**meta, "id": run}, records=records, checkpoints=dict(manifest)))
        ids.add(run)
    return ids


def traced(cwd: Path, trace: Path, *args: str) -> list[list[str]]:
    """Run ``git flor ARGS`` with ``GIT_TRACE`` to a file; every git command line it started."""
    import os
    import shlex

    trace.unlink(missing_ok=True)
    out = subprocess.run(["git", "flor", *args], cwd=cwd, capture_output=True, text=True,
                         stdin=subprocess.DEVNULL, env={**os.environ, "GIT_TRACE": str(trace)})
    ok(out)
    cmds = []
    for line in trace.read_text().splitlines():
        if "trace: built-in: git " in line:
            cmds.append(shlex.split(line.split("trace: built-in: ", 1)[1]))
    return cmds


def test_push_argument_list_does_not_grow_with_runs_and_a_fresh_pull_gets_them_all(
    clones: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    from git_flor.storage.checkpoints import read_manifest

    remote, a, _ = clones
    few = many_runs(a, 3)
    first = [c for c in traced(a, tmp_path / "t1", "push") if c[1] == "push"]
    ids = few | many_runs(a, 300)
    pushes = [c for c in traced(a, tmp_path / "t2", "push") if c[1] == "push"]
    assert [len(c) for c in pushes] == [len(c) for c in first]  # same commands, same lengths
    assert max(len(" ".join(c)) for c in pushes) < 300
    everything = traced(a, tmp_path / "t3", "push")
    nothing = [c for c in everything if c[1] == "push"]
    assert [len(c) for c in nothing] == [len(c) for c in first]
    assert not [c for c in everything if c[1] == "gc"]  # no `gc --auto` inside a user's push
    assert all("--no-auto-gc" in c for c in everything if c[1] == "fetch")
    refs = git(remote, "for-each-ref", "--format=%(refname)", "refs/flor/").split()
    assert len(refs) == 2 and not any(r.startswith("refs/flor/ckpt/") for r in refs)

    fresh = tmp_path / "fresh"
    git(tmp_path, "clone", "-q", str(remote), str(fresh))
    cmds = traced(fresh, tmp_path / "t4", "pull")
    assert not [c for c in cmds if c[1] == "update-ref"]  # nothing to adopt one by one
    assert max(len(c) for c in cmds) < 20
    assert run_ids(fresh) == ids
    table = json.loads(ok(flor(fresh, "log", "loss", "--format", "json")).stdout)
    assert {row["run"] for row in table} == ids
    repo_f = pygit2.Repository(str(fresh))
    assert all(read_manifest(repo_f, run) for run in sorted(ids)[:20])


def test_runs_recorded_with_per_run_manifest_refs_still_travel(
    clones: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """A repository from before refs/flor/manifests: per-run refs/flor/ckpt/<run>, pushed one by one."""
    from git_flor.storage.checkpoints import read_manifest

    remote, a, b = clones
    ids = many_runs(a, 5)
    r = pygit2.Repository(str(a))
    [mref] = [n for n in r.references if n.startswith("refs/flor/manifests/")]
    root = r.references[mref].peel(pygit2.Tree)
    sig = pygit2.Signature("Old", "old@example.com")
    for run in ids:  # rewrite into the old layout
        tree = r[r[root[run[:2]].id][run].id]
        r.references.create(f"refs/flor/ckpt/{run}", r.create_commit(None, sig, sig, "old\n", tree.id, []))
    r.references[mref].delete()
    assert all(read_manifest(r, run) for run in ids)  # read from the legacy refs
    # An old git-flor's push: shadow, notes and every per-run ref.
    git(a, "push", "-q", "origin", "refs/flor/*:refs/flor/*", "refs/notes/flor:refs/notes/flor")

    cmds = traced(b, tmp_path / "tb", "pull")
    assert len([c for c in cmds if c[1] == "update-ref"]) == 1  # one transaction for all five
    repo_b = pygit2.Repository(str(b))
    assert {n for n in repo_b.references if n.startswith("refs/flor/ckpt/")} == {f"refs/flor/ckpt/{x}" for x in ids}
    assert all(read_manifest(repo_b, run) for run in ids) and run_ids(b) == ids

    ok(flor(a, "push"))  # the new git-flor folds its own old refs into its manifests ref
    assert git(remote, "for-each-ref", "refs/flor/manifests/").strip()
    fresh = tmp_path / "fresh"
    git(tmp_path, "clone", "-q", str(remote), str(fresh))
    for name in git(remote, "for-each-ref", "--format=%(refname)", "refs/flor/ckpt/").split():
        git(remote, "update-ref", "-d", name)
    ok(flor(fresh, "pull"))
    repo_f = pygit2.Repository(str(fresh))
    assert all(read_manifest(repo_f, run) for run in ids)
