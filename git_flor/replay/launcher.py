"""How a replay child is started: the original run's launch form, resolved inside the scratch copy.

A run started as ``python /abs/path/train.py`` recorded an ``argv[0]`` pointing
at today's file, and one started as ``python -m pkg.train`` an ``argv[0]`` that
is the module's path; re-running either literally executes today's code. So the
child is always ``python runtime/launch.py LAUNCH.json`` and the launch spec
names the script *in the scratch copy*, by path or as a module, with the
recorded arguments and working directory (see :mod:`git_flor.runtime.launch`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path, PurePosixPath
from typing import Any

from .isolation import LAUNCHER


def launch_spec(meta: dict[str, Any], scratch: Path, user_root: Path, isolation: dict[str, Any]) -> dict[str, Any]:
    """The launcher's JSON for one job of the run described by ``meta``."""
    script = meta["script"]
    script_abs = scratch / script
    cwd = scratch / (meta.get("cwd") or ".")
    argv = list(meta.get("argv") or [script])
    form = meta.get("launch") or {"kind": "path"}
    spec: dict[str, Any] = {
        "kind": form.get("kind", "path"), "script": str(script_abs), "cwd": str(cwd),
        "user_root": str(user_root), "scratch_root": str(scratch), "isolation": isolation,
    }
    if spec["kind"] == "module":
        module = form["module"]
        spec["module"] = module
        depth = len(module.split("."))
        root = PurePosixPath(script).parents[depth - 1] if depth <= len(PurePosixPath(script).parents) else None
        spec["package_root"] = str(scratch / root) if root is not None else None
        argv[0] = str(script_abs)  # what `python -m` sets (runpy sets it again)
    elif argv and os.path.isabs(argv[0]):
        argv[0] = str(script_abs)  # `python /abs/path/train.py`: the scratch's copy, never today's
    spec["argv"] = argv
    return spec


def command(launch_path: Path, script: str) -> list[str]:
    """The child's command line; the script's path at the end (ignored) shows in ``ps`` what runs."""
    return [sys.executable, str(LAUNCHER), str(launch_path), script]
