"""``git flor push [REMOTE]`` / ``git flor pull [REMOTE]``: runs, notes and checkpoints between clones.

Push sends this clone's shadow ref and its manifests ref (two refspecs however
many runs: never another clone's, each clone is the only writer of its refs, so
these pushes cannot conflict) and ``refs/notes/flor``, which every clone writes: the remote's
notes are fetched and union-merged first, and the push retried if someone
pushed in between. Pull fetches everyone's runs and merges their notes. The
query index notices the moved refs by itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import EXIT_OK, Partial, UsageError
from ..storage import gitcmd, sharing
from ..storage.refs import MANIFESTS_PREFIX, NOTES_REF, SHADOW_PREFIX, ref_target, shadow_refs
from ..storage.repo import workdir
from .common import open_session

if TYPE_CHECKING:
    from ..storage.repo import Repository

_ATTEMPTS = 5


def _check_remote(repo: Repository, remote: str) -> None:
    names = gitcmd.git(["remote"], workdir(repo)).stdout.split()
    if remote not in names:
        known = f" (this repository has: {', '.join(names)})" if names else ""
        raise UsageError(f"no remote named {remote!r}{known}; add one with `git remote add {remote} URL`")


def _fetch(repo: Repository, remote: str, specs: list[str]) -> None:
    """Fetch ``specs``; never ``gc --auto`` here: a push must not stall on a repack of the user's repo."""
    gitcmd.git(["fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--no-auto-gc", remote, *specs],
               workdir(repo))


def _merge_remote_notes(repo: Repository, remote: str) -> str:
    _fetch(repo, remote, [f"+{NOTES_REF}*:{sharing.staging_notes(remote)}*"])
    theirs = ref_target(repo, sharing.staging_notes(remote))
    return "absent" if theirs is None else sharing.merge_notes(repo, theirs)


def pull(remote: str = "origin") -> int:
    """Fetch every clone's runs, notes and checkpoint manifests from ``remote`` and merge the notes."""
    repo = open_session()
    _check_remote(repo, remote)
    before = shadow_refs(repo)
    _fetch(repo, remote, sharing.fetch_refspecs(repo, remote))
    runs, clones = sharing.count_new_runs(repo, before, shadow_refs(repo))
    theirs = ref_target(repo, sharing.staging_notes(remote))
    notes = "no notes there" if theirs is None else sharing.merge_notes(repo, theirs)
    adopted = sharing.adopt_manifests(repo, remote)
    legacy = len(adopted.new) + len(adopted.updated)
    print(f"{remote}: {runs} new run{'s' if runs != 1 else ''} from {clones} clone{'s' if clones != 1 else ''}; "
          f"notes: {notes}" + (f"; {legacy} checkpoint manifest(s) of the old layout" if legacy else ""))
    return EXIT_OK


def push(remote: str = "origin") -> int:
    """Send this clone's runs and checkpoint manifests to ``remote`` and union our notes with theirs.

    Exit 3 when the remote rejected some ref (the message says which and what to do).
    """
    repo = open_session()
    _check_remote(repo, remote)
    cwd = workdir(repo)
    sharing.fold_legacy_manifests(repo)
    specs = sharing.own_push_refspecs(repo)
    result = _push(cwd, remote, specs) if specs else {}
    if ref_target(repo, NOTES_REF) is not None:
        for _ in range(_ATTEMPTS):  # someone may push notes between our fetch and our push
            _merge_remote_notes(repo, remote)
            notes = _push(cwd, remote, [f"{NOTES_REF}:{NOTES_REF}"])
            if notes[NOTES_REF] != "rejected":
                break
        result.update(notes)
    runs = [ref for ref in result if ref.startswith(SHADOW_PREFIX)]
    ckpts = next((how for ref, how in result.items() if ref.startswith(MANIFESTS_PREFIX)), "none")
    print(f"{remote}: runs {result[runs[0]] if runs else 'none recorded in this clone'}; "
          f"notes {result.get(NOTES_REF, 'none yet')}; checkpoint manifests {ckpts}")
    from ..storage.remote_store import push_payloads, store_url

    url = store_url(repo)
    if url is not None:
        up = push_payloads(repo, url)
        print(f"{url}: uploaded {up.uploaded} checkpoint payload(s) ({up.bytes / 1e6:.1f} MB), "
              f"{up.present} already there")
    rejected = [ref for ref, how in result.items() if how == "rejected"]
    if rejected:
        raise Partial(
            f"{remote} rejected {', '.join(rejected)}: it has history this clone lacks; run "
            f"`git flor pull {remote}` and push again (if it persists, another clone shares this "
            "clone's id: delete .git/flor/clone-id in one of them)"
        )
    return EXIT_OK


def _push(cwd: Path, remote: str, specs: list[str]) -> dict[str, str]:
    """Push ``specs``; return each destination ref's outcome: new, updated, up to date or rejected."""
    done = gitcmd.git(["push", "--porcelain", remote, *specs], cwd, check=False)
    outcome: dict[str, str] = {}
    flags = {"*": "new", " ": "updated", "+": "updated", "=": "up to date", "!": "rejected"}
    for line in done.stdout.splitlines():
        parts = line.split("\t")
        if len(parts) >= 3 and parts[0] in flags:
            outcome[parts[1].split(":")[-1]] = flags[parts[0]]
    if done.returncode != 0 and "rejected" not in outcome.values():
        raise gitcmd.GitFailed(f"`git push {remote}` failed: {gitcmd.first_error(done.stderr)}")
    return outcome
