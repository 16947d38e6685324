"""Ref names and compare-and-swap ref updates.

All of git-flor's ref names are built here (the DVC lesson: no string-building
scattered around). Every update is compare-and-swap with retry, because many
training runs in one clone finish at the same moment and a blind write loses
one of them (libgit2's note writer and ``git notes add`` both do).
"""

from __future__ import annotations

import os
import random
import subprocess
import time
from collections.abc import Callable

import pygit2

SHADOW_PREFIX = "refs/flor/shadow/"
NOTES_REF = "refs/notes/flor"
#: The layout before manifests were grouped per clone: one ref per run's checkpoint
#: manifest. Still read (and adopted from remotes), never written.
CKPT_PREFIX = "refs/flor/ckpt/"
#: One ref per clone whose tree holds the checkpoint manifest of every run that clone
#: recorded, at ``<run-id[:2]>/<run-id>/``: pushing and fetching it is one refspec
#: however many runs there are, and only the new trees travel.
MANIFESTS_PREFIX = "refs/flor/manifests/"
#: While a run is live (or crashed and not yet recovered) this ref keeps its
#: snapshot reachable: ``git gc --prune=now`` (or ``gc --auto`` two weeks into a
#: long run) would otherwise delete the blobs of its uncommitted edits. Never pushed.
LIVE_PREFIX = "refs/flor/live/"


def shadow_ref(clone_id: str) -> str:
    """The shadow branch of one clone: one per clone so pushes never conflict."""
    return SHADOW_PREFIX + clone_id


def manifests_ref(clone_id: str) -> str:
    """The checkpoint manifests of one clone's runs: written by that clone only."""
    return MANIFESTS_PREFIX + clone_id


def shadow_refs(repo: pygit2.Repository) -> dict[str, pygit2.Oid]:
    """Every clone's shadow tip, including those fetched from teammates."""
    out: dict[str, pygit2.Oid] = {}
    for name in repo.references:
        if name.startswith(SHADOW_PREFIX):
            out[name] = repo.references[name].resolve().target
    return out


def live_ref(run_id: str) -> str:
    return LIVE_PREFIX + run_id


def ref_target(repo: pygit2.Repository, name: str) -> pygit2.Oid | None:
    ref = repo.references.get(name)
    return None if ref is None else ref.target


class RefExists(RuntimeError):
    """Another writer created the ref first."""


def _create_absent(repo: pygit2.Repository, name: str, new: pygit2.Oid, message: str) -> None:
    """Create ``name`` only if it does not exist, checked under the ref's lock.

    libgit2's create-without-force checks for the ref *before* taking the lock, so
    two first writers can both "create" it and one silently wins. git's
    ``update-ref NAME NEW 0000…`` checks under the lock. Creation happens once per
    ref per clone, so one subprocess here is cheap.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    done = subprocess.run(
        ["git", f"--git-dir={repo.path}", "update-ref", "-m", message, name, str(new), "0" * 40],
        env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        raise RefExists(done.stderr.strip())


class RefContention(RuntimeError):
    """The ref kept moving under us for longer than the retry budget."""


def cas_update(
    repo: pygit2.Repository,
    name: str,
    build: Callable[[pygit2.Oid | None], pygit2.Oid],
    *,
    attempts: int = 200,
    message: str = "git-flor",
) -> pygit2.Oid:
    """Point ``name`` at ``build(old)`` only if it still points at ``old``; retry otherwise.

    ``build`` receives the current target (None when the ref does not exist) and
    returns the new object id, typically a commit whose parent is the old target.
    libgit2 checks the old value under the ref's lock file, so two writers can
    never both win with the same parent.
    """
    for attempt in range(attempts):
        ref = repo.references.get(name)
        old = None if ref is None else ref.target
        new = build(old)
        try:
            if ref is None:
                _create_absent(repo, name, new, message)
            else:
                ref.set_target(new, message)
            return new
        except (pygit2.GitError, pygit2.AlreadyExistsError, OSError, ValueError, RefExists):
            # Modified since read (GitError), or locked by a concurrent writer (OSError): retry.
            time.sleep(min(0.2, 0.002 * (attempt + 1)) * (0.5 + random.random()))
    raise RefContention(f"could not update {name}: it kept changing; try again")
