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
from ..storage.refs import MANIFESTS_PREFIX, NOTES_REF, SHADOW_PREFIX
from ..storage.repo import ensure_flor_dir, flor_dir, open_repo, workdir
from ..storage.sharing import fetch_refspecs
from . import hook_managers

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


def _filled(name: str, *, portable: bool = False) -> str:
    """The shim with the installing environment's git-flor filled in (works without the venv active).

    ``portable``: left unfilled, for a hooks directory the team shares through git
    (a path into this machine's virtualenv means nothing on a teammate's).
    """
    text = shim_text(name)
    if portable:
        return text
    here = Path(sys.executable).parent / "git-flor"
    flor_bin = str(here) if here.is_file() else (shutil.which("git-flor") or "")
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
    record: dict[str, Any] = {"hooks_dirs": [], "legacy": [], "config": [], "shims": [], "husky": []}
    try:
        loaded = json.loads(_record_path(cwd).read_text())
    except (OSError, ValueError):
        return record
    if isinstance(loaded, dict):
        record.update({k: v for k, v in loaded.items() if k in record and isinstance(v, list)})
    return record


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


def _note(record: dict[str, Any], key: str, value: str) -> None:
    if value not in record[key]:
        record[key].append(value)


def _install_husky(layout: hook_managers.Layout, record: dict[str, Any], edit_tracked: bool) -> list[str]:
    """husky: a line in each ``.husky/<hook>`` (husky's own ``_/`` scripts are regenerated)."""
    assert layout.husky is not None
    rel = layout.husky.relative_to(layout.root).as_posix()
    if not edit_tracked:
        raise UsageError(
            f"husky manages this repository's hooks ({rel}/); git-flor integrates by adding two lines "
            f"to {rel}/post-commit and {rel}/post-rewrite, files you share through git: run "
            "`git flor init --edit-tracked` to let it (it says what it changed), or add "
            "`git-flor hook post-commit \"$@\"` (and `git-flor hook post-rewrite \"$@\"`) there yourself"
        )
    said = []
    for name in HOOKS:
        path = layout.husky / name
        existed = path.exists()
        if hook_managers.add_husky_lines(path, name):
            _note(record, "husky", str(path))
            said.append(f"{'added 2 lines to' if existed else 'created'} {rel}/{name} (husky runs it; "
                        f"{'a tracked file: ' if existed else ''}commit it to share git-flor's hook with "
                        "your team; git-flor must be on PATH when you commit)")
    return said or [f"git-flor's lines are already in {rel}/post-commit and {rel}/post-rewrite"]


def _install_hooks(layout: hook_managers.Layout, record: dict[str, Any], edit_tracked: bool) -> list[str]:
    hooks = layout.hooks
    if layout.tracked and not edit_tracked:
        raise UsageError(
            f"core.hooksPath is {hooks}, a directory tracked in this repository: installing would "
            "change files your team shares; run `git flor init --edit-tracked` to install portable "
            "hooks there (it lists the files it changed), or point core.hooksPath elsewhere"
        )
    # Paths into this machine's virtualenv only where nobody else reads the shims.
    portable = bool(layout.tracked)
    tracked = set(layout.tracked)
    hooks.mkdir(parents=True, exist_ok=True)
    said: list[str] = []
    installed: list[str] = []
    for name in HOOKS:
        path, legacy = hooks / name, hooks / f"{name}.legacy"
        if (not os.path.lexists(path) or is_ours(path)) and layout.pre_commit(legacy.name):
            # pre-commit's script moved aside (by an older git-flor): it cannot run as a
            # legacy hook, so give it its name back and become its legacy hook instead.
            os.replace(legacy, path)
            record["legacy"] = [p for p in record["legacy"] if p != str(legacy)]
        if name in layout.configured:
            said.append(f"your hook manager's config already runs `git flor hook {name}`: no shim needed")
            continue
        if os.path.lexists(path) and not is_ours(path) and layout.pre_commit(name):
            # pre-commit runs <hook>.legacy first ("migration mode"): be that hook.
            if os.path.lexists(legacy) and not is_ours(legacy):
                raise UsageError(
                    f"pre-commit manages {name} and already chains {legacy.name}; add git-flor to "
                    f"{hook_managers.PRE_COMMIT_CONFIG} as a `repo: local` hook with `entry: git flor "
                    f"hook {name}` and `stages: [{name}]` (see `git flor help init`)"
                )
            _write_executable(legacy, _filled(name, portable=portable))
            _note(record, "shims", str(legacy))
            installed.append(legacy.name)
            said.append(
                f"pre-commit manages {name}: git-flor's hook is {legacy.name}, which pre-commit runs "
                f"first; `pre-commit install -f` removes it, so for a lasting set-up add a `repo: local` "
                f"hook with `entry: git flor hook {name}` to {hook_managers.PRE_COMMIT_CONFIG} "
                "(see `git flor help init`)"
            )
            continue
        if os.path.lexists(path) and not is_ours(path):
            if os.path.lexists(legacy):
                raise UsageError(
                    f"both {path} and {legacy} exist and neither is git-flor's: merge them into "
                    f"one {name} hook (or delete one), then run `git flor init` again"
                )
            os.replace(path, legacy)
            _note(record, "legacy", str(legacy))
            moved = f"kept your {name} hook as {legacy.name}; it still runs, first"
            if layout.inside_worktree() and path.relative_to(layout.root).as_posix() in tracked:
                moved += f" (renamed a tracked file: commit {hooks.name}/ to share it)"
            said.append(moved)
        _write_executable(path, _filled(name, portable=portable))
        _note(record, "shims", str(path))
        installed.append(name)
    if installed:
        where = f"installed {', '.join(installed)} hook{'s' if len(installed) != 1 else ''} in {hooks}"
        if layout.tracked:
            where += " (a tracked directory: portable shims that find git-flor on PATH; commit them to share)"
        said.insert(0, where)
    if layout.lefthook:
        said.append("lefthook is set up here: `lefthook install` replaces git-flor's hooks; to keep "
                    f"them, add to lefthook.yml: {hook_managers.LEFTHOOK_SNIPPET} (and the same for "
                    "post-rewrite)")
    return said


def init(*, remotes: bool = True, edit_tracked: bool = False) -> int:
    """Install the hooks, make notes follow rewrites and merge as a union, add fetch refspecs."""
    repo = open_repo()
    cwd = workdir(repo)
    hooks = _hooks_dir(cwd)
    record = _load_record(cwd)
    layout = hook_managers.detect(cwd, hooks, HOOKS)
    if layout.husky is not None:
        said = _install_husky(layout, record, edit_tracked)
    else:
        said = _install_hooks(layout, record, edit_tracked)
        _note(record, "hooks_dirs", str(hooks))

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
                if spec.startswith(f"+{MANIFESTS_PREFIX}") and not negative_ok:
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
                if os.path.lexists(legacy) and not is_ours(legacy):  # only init moves hooks there
                    os.replace(legacy, path)
                    print(f"restored your {name} hook")
            if os.path.lexists(legacy) and is_ours(legacy):  # under pre-commit
                legacy.unlink()
                removed += 1
    for husky in record["husky"]:
        if hook_managers.remove_husky_lines(Path(husky)):
            removed += 1
            print(f"removed git-flor's lines from {husky}")
    for key, value in record["config"]:
        gitcmd.config_unset_value(cwd, key, value)
    _record_path(cwd).unlink(missing_ok=True)
    print(f"removed {removed} hook{'s' if removed != 1 else ''} and {len(record['config'])} git "
          "config value(s) git flor init had added (your runs and notes are kept)")
    return EXIT_OK
