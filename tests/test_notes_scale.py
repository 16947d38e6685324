"""Notes of a commit with many runs: bounded note, linear history, rewrites and captures still see every run."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pygit2

from git_flor.storage.notes import INLINE_RUNS, MORE_RUNS
from tests.conftest import flor, git, run_script


def replicate(cwd: Path, n: int) -> set[str]:
    """Copies of the newest recorded run, written by the runtime's own exit call (``commit_run``) in-process."""
    from git_flor.storage.records import LOGS_FILE, RunData, decode_records
    from git_flor.storage.refs import shadow_refs
    from git_flor.storage.shadow import commit_run, read_blob, read_meta

    r = pygit2.Repository(str(cwd))
    [tip] = shadow_refs(r).values()
    meta = read_meta(r, r[tip])
    records = list(decode_records(read_blob(r, r[tip], LOGS_FILE)))
    ids = set()
    for _ in range(n):
        run = uuid.uuid4().hex[:12]
        commit_run(r, RunData(meta={**meta, "id": run}, records=records))
        ids.add(run)
    return ids


def runs_at(cwd: Path, rev: str) -> set[str]:
    out = flor(cwd, "runs", "--rev", rev, "--format", "json")
    assert out.returncode == 0, out.stderr
    return {r["run"] for r in json.loads(out.stdout)}


def notes_bytes(cwd: Path) -> int:
    """Every version of the notes: the objects reachable from refs/notes/flor's history, uncompressed."""
    ids = "".join(line.split()[0] + "\n" for line in git(cwd, "rev-list", "--objects", "refs/notes/flor").splitlines())
    sizes = subprocess.run(["git", "cat-file", "--batch-check=%(objectsize)"], cwd=cwd, input=ids,
                           capture_output=True, text=True, check=True).stdout
    return sum(int(s) for s in sizes.split())


def test_a_busy_commit_keeps_a_bounded_note_and_notes_grow_linearly(repo: Path) -> None:
    assert flor(repo, "init").returncode == 0
    run_script(repo)
    ids = replicate(repo, INLINE_RUNS + 20)
    before = notes_bytes(repo)
    ids |= replicate(repo, 200)
    per_run = (notes_bytes(repo) - before) / 200
    assert per_run < 2048, per_run  # past the inline runs a run writes (almost) nothing to the notes
    lines = git(repo, "notes", "--ref=flor", "show", "HEAD").splitlines()
    assert len([ln for ln in lines if MORE_RUNS not in ln]) == INLINE_RUNS
    assert [json.loads(ln) for ln in lines if MORE_RUNS in ln] == [{MORE_RUNS: f"refs/flor/shadow/{_clone(repo)}"}]
    shown = git(repo, "log", "--notes=flor", "-1", "HEAD")
    assert len(shown) < INLINE_RUNS * 1024 and f"refs/flor/shadow/{_clone(repo)}" in shown
    assert len(runs_at(repo, "HEAD")) == len(ids) + 1  # every run is listed, not just the inline ones

    # An amend carries all of them, though the note lists only the first ones.
    git(repo, "commit", "-q", "--amend", "-m", "reworded")
    assert len(runs_at(repo, "HEAD")) == len(ids) + 1


def test_a_commit_captures_every_dirty_run_of_its_tree_beyond_the_inline_ones(repo: Path) -> None:
    assert flor(repo, "init").returncode == 0
    (repo / "train.py").write_text((repo / "train.py").read_text().replace("range(4)", "range(2)"))
    run_script(repo)
    ids = replicate(repo, INLINE_RUNS + 10)
    base = git(repo, "notes", "--ref=flor", "show", "HEAD").splitlines()
    assert any("dirty_tree" in ln for ln in base)
    git(repo, "commit", "-qam", "fewer steps")
    captured = runs_at(repo, "HEAD")
    assert ids <= captured and len(captured) == len(ids) + 1
    linked = [json.loads(ln) for ln in git(repo, "notes", "--ref=flor", "show", "HEAD").splitlines()]
    assert len({ln["run"] for ln in linked if "ran_at" in ln}) == len(ids) + 1


def _clone(repo: Path) -> str:
    return (repo / ".git" / "flor" / "clone-id").read_text().strip()
