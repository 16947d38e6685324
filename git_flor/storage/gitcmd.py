"""Running the ``git`` binary: for what only git does (config scopes, hooks paths, transport).

pygit2 reads and writes objects and refs; fetch, push, ``rev-parse --git-path``
and config with scopes are git's job, and calling git keeps git-flor's remote
behaviour identical to the user's own ``git fetch`` (credentials helpers, ssh
config, proxies). Every call runs with :func:`clean_env`, because git exports
``GIT_DIR``, ``GIT_INDEX_FILE`` and friends to hooks and a child git inheriting
them would act on the wrong index or worktree (pre-commit's lesson).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..errors import FlorError, NotARepository

# Variables that describe the user's setup rather than the repository being
# operated on: kept so transport, identity and ``git -c`` settings still apply.
_KEEP = {
    "GIT_EXEC_PATH", "GIT_SSH", "GIT_SSH_COMMAND", "GIT_SSL_CAINFO", "GIT_SSL_NO_VERIFY",
    "GIT_ASKPASS", "GIT_TERMINAL_PROMPT", "GIT_HTTP_PROXY_AUTHMETHOD", "GIT_ALLOW_PROTOCOL",
    "GIT_CONFIG_NOSYSTEM", "GIT_CONFIG_GLOBAL", "GIT_CONFIG_SYSTEM", "GIT_CONFIG_PARAMETERS",
    "GIT_CONFIG_COUNT", "GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_AUTHOR_DATE",
    "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL", "GIT_COMMITTER_DATE",
}
_KEEP_PREFIXES = ("GIT_CONFIG_KEY_", "GIT_CONFIG_VALUE_", "GIT_TRACE")


class GitFailed(FlorError):
    """A git command git-flor ran failed; the message carries git's own first error line."""

    exit_code = 1


def clean_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: ours) without the ``GIT_*`` variables that pin a repository, index or worktree."""
    source = os.environ if env is None else env
    return {
        k: v for k, v in source.items()
        if not k.startswith("GIT_") or k in _KEEP or k.startswith(_KEEP_PREFIXES)
    }


def strip_hook_env() -> None:
    """Drop, in this process, what git exported to the hook (before anything opens the repository)."""
    for key in list(os.environ):
        if key.startswith("GIT_") and key not in _KEEP and not key.startswith(_KEEP_PREFIXES):
            del os.environ[key]


def git(
    args: Sequence[str],
    cwd: str | os.PathLike[str] | None = None,
    *,
    check: bool = True,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``git ARGS`` in ``cwd`` with a clean environment; raise :class:`GitFailed` if ``check``."""
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=clean_env(), capture_output=True, text=True,
        input=input, stdin=None if input is not None else subprocess.DEVNULL,
    )
    if check and done.returncode != 0:
        raise GitFailed(f"`git {' '.join(args)}` failed: {first_error(done.stderr)}")
    return done


def first_error(stderr: str) -> str:
    """The line of git's stderr that says what went wrong (hints and progress dropped)."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip() and not ln.startswith("hint:")]
    for line in lines:
        if line.startswith(("fatal:", "error:", "!")):
            return line
    return lines[-1] if lines else "no message"


def hooks_dir(cwd: Path) -> Path:
    """Where git runs hooks from: ``core.hooksPath`` or the common dir's ``hooks`` (worktrees share it)."""
    done = git(["rev-parse", "--git-path", "hooks"], cwd, check=False)
    if done.returncode != 0:
        raise NotARepository(f"not a git repository: {cwd}; run inside a git repository")
    return (cwd / done.stdout.strip()).resolve()


def config_get_all(cwd: Path, key: str, *, local_only: bool = True) -> list[str]:
    """Values of ``key`` in ``.git/config`` (or, with ``local_only=False``, in any config file)."""
    scope = ["--local"] if local_only else []
    done = git(["config", *scope, "--get-all", key], cwd, check=False)
    return done.stdout.splitlines() if done.returncode == 0 else []


def config_scope(cwd: Path, key: str) -> str | None:
    """Which config file the effective value of ``key`` comes from (local, global, system, …)."""
    done = git(["config", "--show-scope", "--get", key], cwd, check=False)
    if done.returncode != 0:
        return None
    return done.stdout.split("\t", 1)[0]


def config_add(cwd: Path, key: str, value: str) -> None:
    git(["config", "--local", "--add", key, value], cwd)


def config_unset_value(cwd: Path, key: str, value: str) -> None:
    """Remove exactly the ``key = value`` entries (others of a multi-valued key stay)."""
    done = git(["config", "--local", "--fixed-value", "--unset-all", key, value], cwd, check=False)
    if done.returncode not in (0, 5):  # 5: there was no such entry
        raise GitFailed(f"could not remove {key}={value} from .git/config: {first_error(done.stderr)}")


def version(cwd: Path | None = None) -> tuple[int, int]:
    out = git(["--version"], cwd).stdout.split()[-1]
    major, minor = out.split(".")[:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)
