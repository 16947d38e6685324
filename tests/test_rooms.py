"""The rooms of docs/design.md §6, enforced from the imports themselves.

Every module of the package is parsed (not imported) and every import in it —
at the top, inside functions, under ``TYPE_CHECKING`` — is checked against the
plan: which room may import which, and which room alone may import each heavy
library. A new import that breaks a rule fails here with the file and line.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import git_flor

PACKAGE = Path(git_flor.__file__).parent

#: Room → the rooms it may import (besides itself). ``errors`` is the shared leaf.
MAY_IMPORT: dict[str, set[str]] = {
    "errors": set(),
    "storage": {"errors"},
    "propagate": {"errors"},
    "runtime": {"errors", "storage"},
    "replay": {"errors", "storage", "propagate", "runtime.replay_mode", "runtime.launch"},
    "query": {"errors", "storage"},
    "commands": {"errors", "storage", "propagate", "replay", "query", "runtime"},
    "cli": {"errors", "commands"},
    "__main__": {"cli"},
    "__init__": {"errors", "runtime", "query"},
}

#: Library → the only room that may import it.
ONLY_IMPORTER = {
    "pygit2": "storage",
    "pandas": "query",
    "click": "cli",
    "tree_sitter": "propagate",
    "tree_sitter_python": "propagate",
}


def _modules() -> list[tuple[str, Path]]:
    """(dotted module name, file) for every module of the package."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out.append((".".join(parts), path))
    return out


def _room(module: str) -> str:
    """``git_flor.storage.notes`` → ``storage``; ``git_flor.cli`` → ``cli``; ``git_flor`` → ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(module: str, path: Path) -> list[tuple[str, int]]:
    """Every module ``module`` imports, as absolute dotted names, with the line of the import."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            # `from . import serial` imports a module: count the submodule, not just the package.
            names = [f"{prefix}.{a.name}" for a in node.names] if node.module is None else [prefix]
            found.extend((name, node.lineno) for name in names)
    return found


def _allowed(room: str, target: str) -> bool:
    """May ``room`` import ``target`` (an absolute ``git_flor.…`` name)?"""
    parts = target.split(".")
    if len(parts) == 1:
        return room in ("__main__", "__init__")  # the package itself
    target_room = parts[1]
    if target_room == room:
        return True
    rules = MAY_IMPORT[room]
    return target_room in rules or ".".join(parts[1:3]) in rules


def test_every_module_is_in_a_known_room() -> None:
    rooms = {_room(m) for m, _ in _modules()}
    assert rooms <= set(MAY_IMPORT), f"modules outside any room: {rooms - set(MAY_IMPORT)}"


def test_rooms_import_only_the_rooms_they_may() -> None:
    broken = []
    for module, path in _modules():
        room = _room(module)
        for target, line in _imports(module, path):
            if target.split(".")[0] == "git_flor" and not _allowed(room, target):
                broken.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {room} imports {target}")
    assert not broken, "room rules broken (docs/design.md §6):\n" + "\n".join(broken)


def test_each_heavy_library_has_one_importing_room() -> None:
    broken = []
    for module, path in _modules():
        room = _room(module)
        for target, line in _imports(module, path):
            owner = ONLY_IMPORTER.get(target.split(".")[0])
            if owner is not None and owner != room:
                broken.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {target} outside {owner}")
    assert not broken, "\n".join(broken)


#: Library → the only module that may import it (optional extras stay behind one door).
ONLY_MODULE = {"matplotlib": "git_flor.query.plot"}


def test_optional_libraries_have_one_importing_module() -> None:
    broken = []
    for module, path in _modules():
        for target, line in _imports(module, path):
            owner = ONLY_MODULE.get(target.split(".")[0])
            if owner is not None and owner != module:
                broken.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {target} outside {owner}")
    assert not broken, "\n".join(broken)
    assert any(t.startswith("matplotlib") for t, _ in _imports("git_flor.query.plot", PACKAGE / "query" / "plot.py"))


def test_the_check_sees_relative_and_nested_imports() -> None:
    """The parser itself: a relative import is resolved, one inside a function is seen."""
    found = dict(_imports("git_flor.commands.common", PACKAGE / "commands" / "common.py"))
    assert "git_flor.storage.journal" in found
    lazy = {name for name, _ in _imports("git_flor.cli", PACKAGE / "cli.py")}
    assert "git_flor.commands.runs" in lazy  # imported inside the command function
    assert not _allowed("storage", "git_flor.query.table")
    assert not _allowed("replay", "git_flor.runtime.session")
    assert _allowed("replay", "git_flor.runtime.replay_mode")


def test_import_git_flor_loads_no_heavy_library() -> None:
    code = (
        "import sys, git_flor\n"
        "print(','.join(m for m in ('pygit2', 'pandas', 'click', 'tree_sitter', 'matplotlib') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_every_design_citation_resolves() -> None:
    """Code cites ``docs/design.md §N``; every such section exists, and no older citation form is left."""
    root = PACKAGE.parent
    design = (root / "docs" / "design.md").read_text()
    sections = set(re.findall(r"^#{2,3} §([\d.]+) ", design, flags=re.MULTILINE))
    cited: list[tuple[str, str]] = []
    stale: list[str] = []
    files = [*PACKAGE.rglob("*.py"), *(root / "tests").rglob("*.py"), *(root / "scripts").glob("*.py"),
             root / "README.md"]
    for path in files:
        text = path.read_text()
        for match in re.finditer(r"docs/design\.md ((?:§[\d.]+(?:, )?)+)", text):
            cited.extend((str(path.relative_to(root)), n) for n in re.findall(r"§(\d+(?:\.\d+)*)", match.group(1)))
        if re.search("DESIGN" + r" §", text):  # split so this file does not match itself
            stale.append(str(path.relative_to(root)))
    assert cited, "no citation found: the pattern is wrong"
    missing = [f"{where}: §{n}" for where, n in cited if n not in sections]
    assert not missing and not stale, f"unresolved: {missing}; uppercase citation form in: {stale}"
