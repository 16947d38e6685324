"""How a replay child is started: the original run's launch form, resolved inside the scratch copy.

A run started as ``python /abs/path/train.py`` recorded an ``argv[0]`` pointing
at today's file, and one started as ``python -m pkg.train`` an ``argv[0]`` that
is the module's path; re-running either literally executes today's code. So the
child is always ``python runtime/launch.py LAUNCH.json`` and the launch spec
names the script *in the scratch copy*, by path or as a module, with the
recorded arguments and working directory (see :mod:`git_flor.runtime.launch`).
"""

from __future__ import annotations

import ast
import importlib.util
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


#: Never warmed: git-flor reads the script's command line when it is imported.
_NOT_WARMED = frozenset({"git_flor", "flor", "__future__", "__main__"})
#: What a library imports lazily on its first common use, warmed with it: building any torch
#: optimizer imports ``torch._dynamo`` (and sympy) — seconds per job, more than ``import torch``.
_LAZY = {"torch": ("torch._dynamo",)}


def warm_imports(source: str, roots: list[Path]) -> tuple[str, ...]:
    """The installed libraries the script imports at its top level, for a warm worker to import once.

    Only what resolves outside ``roots`` (the user's tree, the scratch copy): a module of
    the run's own code differs per version and must be the snapshot's, so the job imports
    it. Statements inside functions are not warmed (they may never run).
    """
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return ()
    names: list[str] = []
    for node in _top_level(tree.body):
        if isinstance(node, ast.Import):
            names.extend(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module.split(".")[0])
    homes = [os.path.realpath(r) + os.sep for r in roots]
    out: list[str] = []
    for name in dict.fromkeys(names):
        if name in _NOT_WARMED:
            continue
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        where = (spec.origin or next(iter(spec.submodule_search_locations or []), "")) if spec else ""
        if spec is None or where in ("", None) or any(os.path.realpath(where).startswith(h) for h in homes):
            continue
        out.append(name)
        out.extend(_LAZY.get(name, ()))
    return tuple(out)


def _top_level(body: list[ast.stmt]) -> list[ast.stmt]:
    """Module-level statements, with those of top-level ``try``/``if`` blocks (optional imports)."""
    out: list[ast.stmt] = []
    for node in body:
        if isinstance(node, ast.Try):
            out.extend(_top_level(node.body))
        elif isinstance(node, ast.If):
            out.extend(_top_level(node.body))
        else:
            out.append(node)
    return out
