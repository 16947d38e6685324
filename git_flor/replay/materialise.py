"""A scratch copy of a run's version to replay in: written from git objects, never a checkout.

The tree is the run's snapshot with the propagated files in place of the old
ones; nothing is registered as a worktree and no index is touched. The user's
untracked and ignored inputs (data folders, caches) are made reachable at the
same relative paths: directories as links (writes through them are copied up
by the replay sandbox), small files as private copies, large files as links.

Files the original run itself created (``hidden``: its ``best.npy``, its
``out/model.pt``) are *not* made reachable: today's copy may be another run's,
and the replay must read the one it writes itself (or fail loudly), never that.
A linked directory holding such a file becomes a real directory of links. A file
the run found and then overwrote (the ``ckpt.npz`` it resumed from) is written
as the run found it (``prior``, kept at record time by ``runtime.outputs``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path, PurePosixPath

from ..storage.files import SourceTree, Tracked

#: Untracked files up to this size are copied rather than linked: a copy cannot
#: be clobbered by a writer the sandbox does not see (C code opening the path).
COPY_LIMIT = 64 * 1024 * 1024


def materialise(
    tree: SourceTree, user_root: Path, dest: Path, hidden: set[str] | frozenset[str] = frozenset(),
    prior: dict[str, Path] | None = None,
) -> None:
    """Write ``tree`` into ``dest`` and make the user's untracked inputs reachable around it, but ``hidden``
    (files the run itself wrote: a replay must see its own, never another run's). ``prior``: files
    the run found and then overwrote, as it found them (a file holding those bytes, by path)."""
    prior = prior or {}
    hidden = frozenset(hidden) | frozenset(prior)
    holders = {str(PurePosixPath(h).parents[k]) for h in hidden for k in range(len(PurePosixPath(h).parents) - 1)}
    tracked = tree.write_to(dest)
    _link_untracked(user_root, dest, tracked, hidden, holders, "")
    for path, source in sorted(prior.items()):
        target = dest / path
        if not os.path.lexists(target) and not target.parent.is_symlink():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)


def _link_untracked(
    user: Path, dest: Path, tracked: Tracked | None, hidden: frozenset[str], holders: set[str], rel: str
) -> None:
    try:
        entries = list(os.scandir(user))
    except OSError:
        return
    for entry in entries:
        if entry.name == ".git":
            continue
        target = dest / entry.name
        path = f"{rel}/{entry.name}" if rel else entry.name
        if tracked is not None and entry.name in tracked:
            sub = tracked[entry.name]
            if sub is not None and entry.is_dir(follow_symlinks=False):
                _link_untracked(Path(entry.path), target, sub, hidden, holders, path)
            continue
        if path in hidden or os.path.lexists(target):
            continue
        if path in holders and entry.is_dir(follow_symlinks=False):
            target.mkdir()
            _link_untracked(Path(entry.path), target, None, hidden, holders, path)
            continue
        if entry.is_file(follow_symlinks=False) and entry.stat().st_size <= COPY_LIMIT:
            shutil.copy2(entry.path, target)
        else:
            os.symlink(entry.path, target)
