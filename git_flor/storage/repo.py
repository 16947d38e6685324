"""Finding the repository a command or a training run belongs to.

Works from any subdirectory and from linked worktrees; refuses bare
repositories (there is no working tree to snapshot or replay into). Per-clone
state lives under the *common* git dir so linked worktrees share one journal,
one index and one clone id.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pygit2

from ..errors import NotARepository

#: The repository handle every room passes around. Only storage looks inside it;
#: the other rooms name it (under ``TYPE_CHECKING``) and hand it back to storage.
Repository = pygit2.Repository


def open_repo(start: str | os.PathLike[str] | None = None) -> pygit2.Repository:
    """Open the repository containing ``start`` (default: the current directory)."""
    where = os.fspath(start) if start is not None else os.getcwd()
    found = pygit2.discover_repository(where)
    if found is None:
        raise NotARepository(
            f"not a git repository: {where}; run inside a git repository (or `git init` one)"
        )
    repo = pygit2.Repository(found)
    if repo.is_bare:
        raise NotARepository(
            f"{repo.path} is a bare repository; git-flor records and replays in a working "
            "tree: run it in a clone with a working tree"
        )
    return repo


def common_dir(repo: pygit2.Repository) -> Path:
    """``$GIT_COMMON_DIR``: the main git dir, shared by every linked worktree."""
    gitdir = Path(repo.path)
    pointer = gitdir / "commondir"
    if pointer.is_file():
        return (gitdir / pointer.read_text().strip()).resolve()
    return gitdir.resolve()


def flor_dir(repo: pygit2.Repository) -> Path:
    """``$GIT_COMMON_DIR/flor``: journal, query index, checkpoint payloads (never pushed).

    A getter only: it may not exist yet. Writers call :func:`ensure_flor_dir`.
    """
    return common_dir(repo) / "flor"


def ensure_flor_dir(repo: pygit2.Repository) -> Path:
    """:func:`flor_dir`, created when missing (by the first run, command or hook that writes there)."""
    path = flor_dir(repo)
    path.mkdir(parents=True, exist_ok=True)
    return path


def workdir(repo: pygit2.Repository) -> Path:
    return Path(repo.workdir).resolve()


def clone_id(repo: pygit2.Repository) -> str:
    """A stable id for this clone, made once; a fresh clone has no ``.git/flor`` and gets its own.

    Created with O_EXCL so concurrent first runs agree on one id.
    """
    path = ensure_flor_dir(repo) / "clone-id"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    new = uuid.uuid4().hex[:12]
    tmp = path.with_name(f"clone-id.{os.getpid()}.{new}")
    tmp.write_text(new + "\n")
    try:
        os.link(tmp, path)  # atomic: fails if another process won the race
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return path.read_text().strip()


def signature(repo: pygit2.Repository) -> pygit2.Signature:
    """The user's identity when configured, else a neutral one: recording must never fail on it."""
    try:
        return repo.default_signature
    except (KeyError, pygit2.GitError):
        return pygit2.Signature("git-flor", "git-flor@localhost")


def config_value(repo: pygit2.Repository, key: str) -> str | None:
    """A git config value (repository, then global), or None when unset or empty."""
    try:
        value = str(repo.config[key]).strip()
    except KeyError:
        return None
    return value or None
