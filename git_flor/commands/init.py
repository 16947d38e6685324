"""``git flor init`` / ``git flor uninstall``: hooks and config, added and removed exactly.

Modelled on pre-commit's installer: the hooks are tiny shims shipped in the
package (``hooks/`` in the source tree) that carry a marker line, so we only
ever overwrite or delete our own files; a hook that was there before is kept as
``<hook>.legacy`` and the shim runs it first. What ``init`` added (config
values, renamed hooks) is written to ``$GIT_COMMON_DIR/flor/install.json`` so
``uninstall`` removes exactly that and nothing the user had set themselves.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import EXIT_OK, UsageError
from ..storage import gitcmd
from ..storage.refs import NOTES_REF, SHADOW_PREFIX
from ..storage.repo import ensure_flor_dir, flor_dir, open_repo, workdir
from ..storage.sharing import fetch_refspecs

HOOKS = ("post-commit", "post-rewrite")
MARKER = "git-flor-hook-shim"
INSTALL_FILE = "install.json"
#: git >= 2.29 understands negative refspecs (``^refs/…``), which keep a fetch
#: from rewinding this clone's own shadow ref.
NEGATIVE_REFSPECS = (2, 29)


def shim_text(name: str) -> str:
    """The shipped shim for hook ``name``, as in ``hooks/<name>`` of the source tree."""
    return resources.files("git_flor._hooks").joinpath(name).read_text()


def is_ours(path: Path) -> bool:
    try:
        with open(path, errors="replace") as fh:
            return MARKER in fh.read(4096)
    except OSError:
        return False


def _filled(name: str) -> str:
    """The shim with the installing environment's git-flor filled in (works without the venv active)."""
    here = Path(sys.executable).parent / "git-flor"
    flor_bin = str(here) if here.is_file() else (shutil.which("git-flor") or "")
    text = shim_text(name)
    text = text.replace("FLOR_BIN=''", f"FLOR_BIN={shlex.quote(flor_bin)}", 1)
    return text.replace("INSTALL_PYTHON=''", f"INSTALL_PYTHON={shlex.quote(sys.executable)}", 1)


def _write_executable(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.git-flor-{os.getpid()}")
    tmp.write_text(text)
    tmp.chmod(0o755)
    os.replace(tmp, path)


def _record_path(cwd: Path, *, create: bool = False) -> Path:
    repo = open_repo(cwd)
    return (ensure_flor_dir(repo) if create else flor_dir(repo)) / INSTALL_FILE


def _load_record(cwd: Path) -> dict[str, Any]:
    try:
        return json.loads(_record_path(cwd).read_text())
    except (OSError, ValueError):
        return {"hooks_dirs": [], "legacy": [], "config": []}


def _hooks_dir(cwd: Path) -> Path:
    hooks = gitcmd.hooks_dir(cwd)
    scope = gitcmd.config_scope(cwd, "core.hooksPath")
    if scope is not None and scope not in ("local", "worktree"):
        raise UsageError(
            f"core.hooksPath is set in your {scope} git config ({hooks}), so hooks there run in "
            "every repository; to install for this repository only, run "
            "`git config core.hooksPath .git/hooks` here (or any directory), then `git flor init`"
        )
    return hooks


def init(*, remotes: bool = True) -> int:
    """Install the hooks, make notes follow rewrites and merge as a union, add fetch refspecs."""
    repo = open_repo()
    cwd = workdir(repo)
    hooks = _hooks_dir(cwd)
    record = _load_record(cwd)
    hooks.mkdir(parents=True, exist_ok=True)
    said: list[str] = []
    for name in HOOKS:
        path, legacy = hooks / name, hooks / f"{name}.legacy"
        if os.path.lexists(path) and not is_ours(path):
            if os.path.lexists(legacy):
                raise UsageError(
                    f"both {path} and {legacy} exist and neither is git-flor's: merge them into "
                    f"one {name} hook (or delete one), then run `git flor init` again"
                )
            os.replace(path, legacy)
            if str(legacy) not in record["legacy"]:
                record["legacy"].append(str(legacy))
            said.append(f"kept your {name} hook as {legacy.name}; it still runs, first")
        _write_executable(path, _filled(name))
    if str(hooks) not in record["hooks_dirs"]:
        record["hooks_dirs"].append(str(hooks))
    said.insert(0, f"installed {', '.join(HOOKS)} hooks in {hooks}")

    wanted = [("notes.rewriteRef", NOTES_REF)]
    for key in ("notes.rewrite.amend", "notes.rewrite.rebase", "notes.flor.mergeStrategy"):
        if not gitcmd.config_get_all(cwd, key, local_only=False):  # the user's choice stands
            wanted.append((key, "cat_sort_uniq" if key.endswith("Strategy") else "true"))
    if remotes:
        names = gitcmd.git(["remote"], cwd).stdout.split()
        negative_ok = gitcmd.version(cwd) >= NEGATIVE_REFSPECS
        for remote in names:
            for spec in fetch_refspecs(repo, remote):
                if spec.startswith("^") and not negative_ok:
                    continue
                if spec.startswith(f"+{SHADOW_PREFIX}") and not negative_ok:
                    said.append(f"git older than 2.29: `git fetch {remote}` will not bring "
                                f"teammates' runs; use `git flor pull {remote}`")
                    continue
                wanted.append((f"remote.{remote}.fetch", spec))
    added = 0
    before: dict[str, list[str]] = {}
    for key, value in wanted:
        have = before.setdefault(key, gitcmd.config_get_all(cwd, key))
        if value in have:
            continue
        gitcmd.config_add(cwd, key, value)
        if [key, value] not in record["config"]:
            record["config"].append([key, value])
        added += 1
    fresh = sorted({key.split(".")[1] for key, value in wanted if key.startswith("remote.")
                    and [key, value] in record["config"] and value not in before.get(key, [])})
    if fresh:
        said.append(f"`git fetch {fresh[0]}` now also brings teammates' runs"
                    + (f" (and from {', '.join(fresh[1:])})" if fresh[1:] else ""))
    if added:
        said.append(f"set {added} git config value{'s' if added != 1 else ''} (notes follow amend/rebase, "
                    "merge as a union)")
    _record_path(cwd, create=True).write_text(json.dumps(record, indent=1) + "\n")
    for line in said:
        print(line)
    return EXIT_OK


def uninstall() -> int:
    """Remove the hooks and config values ``init`` added and put back the hooks it moved aside."""
    repo = open_repo()
    cwd = workdir(repo)
    record = _load_record(cwd)
    dirs = {Path(d) for d in record["hooks_dirs"]}
    dirs.add(gitcmd.hooks_dir(cwd))
    removed = 0
    for hooks in sorted(dirs):
        for name in HOOKS:
            path, legacy = hooks / name, hooks / f"{name}.legacy"
            if os.path.lexists(path) and is_ours(path):
                path.unlink()
                removed += 1
                if os.path.lexists(legacy):  # only init moves hooks there
                    os.replace(legacy, path)
                    print(f"restored your {name} hook")
    for key, value in record["config"]:
        gitcmd.config_unset_value(cwd, key, value)
    _record_path(cwd).unlink(missing_ok=True)
    print(f"removed {removed} hook{'s' if removed != 1 else ''} and {len(record['config'])} git "
          "config value(s) git flor init had added (your runs and notes are kept)")
    return EXIT_OK
