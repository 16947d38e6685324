"""``git flor hook NAME``: what the installed hook shims run.

A hook must never fail or hold up the user's commit: this always returns 0,
writes any error to ``$GIT_COMMON_DIR/flor/hook.log`` with one line on stderr
saying where, and imports only the storage room (no pandas, no tree-sitter,
no numpy: it runs on every commit, budget 200 ms). Before it touches the
repository it drops the ``GIT_*`` variables git exported to the hook, so the
repository is found from the working directory like any command's.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

from ..errors import EXIT_OK

HOOK_LOG = "hook.log"
_LOG_LIMIT = 1 << 20  # start over past 1 MiB: a log nobody reads must not grow forever
KNOWN = ("post-commit", "post-rewrite")


def hook(name: str, args: list[str], stdin: str = "") -> int:
    """Run hook ``name`` with git's ``args`` (and stdin, for post-rewrite); always exit 0."""
    from ..storage.gitcmd import strip_hook_env

    strip_hook_env()
    try:
        from ..storage.repo import flor_dir, open_repo

        repo = open_repo()
        if name == "post-commit":
            from ..storage.hook_notes import link_head

            link_head(repo)
        elif name == "post-rewrite":
            from ..storage.hook_notes import amend_from_reflog, follow_rewrites

            kind = args[0] if args else "amend"
            pairs = [tuple(line.split()[:2]) for line in stdin.splitlines() if len(line.split()) >= 2]
            if not pairs and kind == "amend":
                pairs = amend_from_reflog(repo)  # type: ignore[assignment]  # no stdin (pre-commit)
            follow_rewrites(repo, kind, pairs)  # type: ignore[arg-type]
        else:
            raise ValueError(f"unknown hook {name!r} (git-flor handles {', '.join(KNOWN)})")
        (flor_dir(repo) / "hook-shim-warned").unlink(missing_ok=True)
    except BaseException as exc:  # noqa: BLE001 — a hook never fails the commit, whatever happened
        where = _log(name, exc)
        print(f"git-flor: the {name} hook failed ({type(exc).__name__}: {exc}); "
              f"your commit is fine. Details: {where}", file=sys.stderr)
    return EXIT_OK


def _log(name: str, exc: BaseException) -> Path:
    path = _log_path()
    try:
        if path.exists() and path.stat().st_size > _LOG_LIMIT:
            path.unlink()
        with open(path, "a") as fh:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            fh.write(f"--- {stamp} git flor hook {name} (cwd {os.getcwd()})\n")
            traceback.print_exception(type(exc), exc, exc.__traceback__, file=fh)
    except OSError:
        pass
    return path


def _log_path() -> Path:
    """``$GIT_COMMON_DIR/flor/hook.log``, found even when the repository cannot be opened."""
    try:
        from ..storage.gitcmd import git

        done = git(["rev-parse", "--git-common-dir"], Path.cwd(), check=False)
        if done.returncode == 0:
            path = (Path.cwd() / done.stdout.strip() / "flor").resolve()
            path.mkdir(parents=True, exist_ok=True)
            return path / HOOK_LOG
    except OSError:
        pass
    return Path(tempfile.gettempdir()) / "git-flor-hook.log"
