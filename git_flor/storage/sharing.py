"""Sharing runs between clones: refspecs, the notes union-merge, checkpoint-manifest adoption.

What travels and how (each clone writes only its own shadow ref, so pushes of
runs never conflict):

- ``refs/flor/shadow/<clone>``: pushed by its clone only; fetched straight into
  ``refs/flor/shadow/*`` except our own (a negative refspec), so a fetch can
  never rewind the ref this clone appends to.
- ``refs/notes/flor``: fetched into ``refs/flor-remote/<remote>/notes`` and
  unioned into ours line by line (git's ``cat_sort_uniq``), written with
  compare-and-swap because a training run may add a note at the same moment
  (``git notes merge`` moves the ref without checking its old value).
- ``refs/flor/manifests/<clone>``: the checkpoint manifests of the clone's runs
  in one tree, pushed (fast-forward) by its clone only and fetched like the
  shadow refs. One refspec whatever the number of runs, and only new trees travel.
- ``refs/flor/ckpt/<run>`` (the layout before): never pushed any more. This
  clone's are folded into its manifests ref before a push; other clones' are
  fetched into ``refs/flor-remote/<remote>/ckpt/`` and adopted in one
  ``git update-ref --stdin`` transaction.

The ``refs/flor-remote/`` staging namespace is outside ``refs/remotes/`` on
purpose: ``git fetch --prune`` prunes there by the branch refspec.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pygit2

from . import gitcmd, notes
from .checkpoints import own_manifest_ids, put_manifests
from .refs import (
    CKPT_PREFIX,
    MANIFESTS_PREFIX,
    NOTES_REF,
    SHADOW_PREFIX,
    cas_update,
    manifests_ref,
    shadow_ref,
)
from .repo import clone_id, signature
from .schema import BadRecord
from .shadow import read_meta, walk

STAGING_PREFIX = "refs/flor-remote/"


def staging_notes(remote: str) -> str:
    return f"{STAGING_PREFIX}{remote}/notes"


def staging_ckpt(remote: str) -> str:
    return f"{STAGING_PREFIX}{remote}/ckpt/"


def fetch_refspecs(repo: pygit2.Repository, remote: str) -> list[str]:
    """What ``git fetch REMOTE`` needs to bring teammates' runs; safe in ``remote.*.fetch``.

    Only globs: git ignores a glob that matches nothing, while a missing exact
    ref would make the user's every ``git fetch`` fail until someone pushes notes.
    """
    return [
        f"+{NOTES_REF}*:{staging_notes(remote)}*",
        f"+{SHADOW_PREFIX}*:{SHADOW_PREFIX}*",
        f"^{shadow_ref(clone_id(repo))}",
        f"+{MANIFESTS_PREFIX}*:{MANIFESTS_PREFIX}*",
        f"^{manifests_ref(clone_id(repo))}",
        f"+{CKPT_PREFIX}*:{staging_ckpt(remote)}*",
    ]


def own_run_ids(repo: pygit2.Repository) -> set[str]:
    """The runs recorded by this clone (the ones whose checkpoint manifests it owns)."""
    tip = repo.references.get(shadow_ref(clone_id(repo)))
    if tip is None:
        return set()
    return {c.message.split(":", 1)[0].removeprefix("flor run ") for c in walk(repo, tip.target)}


def own_push_refspecs(repo: pygit2.Repository) -> list[str]:
    """This clone's shadow ref and its manifests ref: two refspecs, however many runs.

    Each clone is the only writer of both, and both only move forward, so neither
    is forced: a rejection means another clone shares this one's id.
    """
    specs = []
    for name in (shadow_ref(clone_id(repo)), manifests_ref(clone_id(repo))):
        if repo.references.get(name) is not None:
            specs.append(f"{name}:{name}")
    return specs


def fold_legacy_manifests(repo: pygit2.Repository) -> int:
    """Copy this clone's per-run ``refs/flor/ckpt/<run>`` manifests into its manifests ref; how many.

    Repositories recorded before the per-clone ref pushed one ref per run; after
    this, those runs travel with the rest. The legacy refs stay (they are read
    after the manifests refs, so they change nothing).
    """
    legacy = {n[len(CKPT_PREFIX):]: n for n in repo.references if n.startswith(CKPT_PREFIX)}
    if not legacy:
        return 0
    missing = set(legacy) - own_manifest_ids(repo)
    if not missing:
        return 0
    mine = missing & own_run_ids(repo)
    trees = {run: repo.references[legacy[run]].peel(pygit2.Tree).id for run in mine}
    if trees:
        put_manifests(repo, trees, "flor checkpoints of runs recorded before refs/flor/manifests")
    return len(trees)


def merge_notes(repo: pygit2.Repository, theirs: pygit2.Oid) -> str:
    """Union their notes commit into ``refs/notes/flor``; returns "same", "fast-forward" or "merged".

    The result has both tips as parents, so pushing it back is a fast-forward.
    """
    outcome = "same"

    def build(old: pygit2.Oid | None) -> pygit2.Oid:
        nonlocal outcome
        if old == theirs or (old is not None and repo.descendant_of(old, theirs)):
            outcome = "same"
            return old
        if old is None or repo.descendant_of(theirs, old):
            outcome = "fast-forward"
            return theirs
        outcome = "merged"
        ours_tree = repo[old].peel(pygit2.Tree)
        tree = notes.union_trees(repo, ours_tree, repo[theirs].peel(pygit2.Tree))
        sig = signature(repo)
        return repo.create_commit(None, sig, sig, "Notes merged by 'git flor pull'", tree, [old, theirs])

    current = repo.references.get(NOTES_REF)
    if current is not None and current.target == theirs:
        return "same"
    cas_update(repo, NOTES_REF, build, message="git flor pull: merge notes")
    return outcome


@dataclass
class Adopted:
    """What adopting a remote's checkpoint manifests did."""

    new: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)


def adopt_manifests(repo: pygit2.Repository, remote: str) -> Adopted:
    """Take the remote's legacy per-run manifests of other clones' runs, in one ref transaction.

    A manifest is written only by the clone that recorded the run (and replaced
    whole by its ``git flor gc``), so for another clone's run the fetched one is
    the newest word, and for ours the local one is. One ``git update-ref --stdin``
    checks every old value under its lock and applies all or nothing; it is retried
    when another process moved one of the refs in between.
    """
    prefix = staging_ckpt(remote)
    staged = {n[len(prefix):]: repo.references[n].target for n in repo.references if n.startswith(prefix)}
    if not staged:
        return Adopted()
    own = own_run_ids(repo)
    for _ in range(5):
        out = Adopted()
        lines = []
        for run, theirs in staged.items():
            local = repo.references.get(CKPT_PREFIX + run)
            if local is not None and (local.target == theirs or run in own):
                continue
            old = str(local.target) if local is not None else "0" * 40
            lines.append(f"update {CKPT_PREFIX}{run} {theirs} {old}\n")
            (out.new if local is None else out.updated).append(run)
        if not lines:
            return out
        done = gitcmd.git([f"--git-dir={repo.path}", "update-ref", "-m", f"git flor pull {remote}", "--stdin"],
                          input="".join(lines), check=False)
        if done.returncode == 0:
            return out
    raise gitcmd.GitFailed(f"could not adopt {remote}'s checkpoint manifests ({gitcmd.first_error(done.stderr)}); "
                           f"run `git flor pull {remote}` again")


def count_new_runs(
    repo: pygit2.Repository, before: dict[str, pygit2.Oid], after: dict[str, pygit2.Oid]
) -> tuple[int, int]:
    """(runs, clones) that arrived: run commits reachable from the new tips and not the old ones.

    Replay results are shadow commits too, but not runs: they are not counted.
    """
    runs = clones = 0
    for ref, tip in after.items():
        old = before.get(ref)
        if old == tip:
            continue
        stop = old if old is not None and repo.descendant_of(tip, old) else None
        n = 0
        for commit in walk(repo, tip, stop):
            try:
                n += not read_meta(repo, commit).get("replay_of")
            except (BadRecord, KeyError):
                continue  # the index warns about it, naming the ref
        if n:
            runs += n
            clones += 1
    return runs, clones
