"""Keeping a replayed script's writes out of the user's working tree.

A replay runs in a scratch copy of the old version; the user's untracked and
ignored inputs (data folders, caches) are reachable through links into the
user's tree. A script that writes ``model.pt`` or ``results/run.json`` must not
write *through* such a link. So in replay mode:

- an audit hook (PEP 578: it runs *before* every Python-level open, mkdir,
  rename, remove) first "copies up" what the operation would reach through a
  link, like overlayfs: each linked component along the path becomes a real
  directory of links (the file itself a private copy when appending/updating,
  else nothing), so the write lands in the scratch; whatever would still reach
  the user's tree is refused: a failed replay is recoverable, a clobbered file
  is not;
- ``torch.save(obj, path)`` and ``torch.jit.save(m, path)``, which open files in
  C++ where no audit hook sees them, are given a file opened in Python instead —
  patched the moment torch is imported, so ``from torch import save`` gets it too;
- ``sqlite3.connect(path)`` is seen by its own audit event;
- absolute paths outside the repository that the original run wrote (an
  ``out_dir``) are protected like the user's tree: such writes are refused.

This is the fallback. Where the kernel offers user + mount namespaces the
replay child runs with an overlay over the user's tree and the run's output
directories (see :mod:`.launch`), and every write, from C or not, lands in the
scratch; the parent then checks the user's files either way.
"""

from __future__ import annotations

import builtins
import importlib.abc
import importlib.util
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC


class Sandbox:
    def __init__(self, user_root: str, scratch_root: str, protected: Sequence[str] = ()) -> None:
        self.user = os.path.realpath(user_root)
        self.scratch = os.path.abspath(scratch_root)
        #: absolute output directories of the original run, outside the repository
        self.protected = tuple(os.path.realpath(p) for p in protected)

    def in_user_tree(self, path: str) -> bool:
        real = os.path.realpath(path)
        return real == self.user or real.startswith(self.user + os.sep)

    def is_protected(self, path: str) -> bool:
        real = os.path.realpath(path)
        if real == self.user or real.startswith(self.user + os.sep):
            return True
        return any(real == p or real.startswith(p + os.sep) for p in self.protected)

    def copy_up(self, path: Any, append: bool) -> None:
        """Make ``path`` (inside the scratch) a real, private place to write."""
        full = os.path.abspath(os.fspath(path))
        if not full.startswith(self.scratch + os.sep) or not self.is_protected(full):
            return
        parts = Path(full).relative_to(self.scratch).parts
        cur = self.scratch
        for idx, part in enumerate(parts):
            cur = os.path.join(cur, part)
            last = idx == len(parts) - 1
            if not os.path.islink(cur):
                continue
            target = os.path.realpath(cur)
            os.unlink(cur)
            if last:
                if append and os.path.isfile(target):
                    shutil.copy2(target, cur)
            elif os.path.isdir(target):
                os.mkdir(cur)
                for child in os.listdir(target):
                    os.symlink(os.path.join(target, child), os.path.join(cur, child))

    def install(self) -> None:
        sys.addaudithook(self._audit)

    def _audit(self, event: str, args: tuple[Any, ...]) -> None:
        """Runs before the operation: copy up what it would write through, refuse the rest."""
        if event == "open":
            path, mode, flags = args
            writing = (mode is not None and any(c in str(mode) for c in "wax+")) or (
                mode is None and isinstance(flags, int) and bool(flags & _WRITE_FLAGS)
            )
            if writing and isinstance(path, (str, bytes, os.PathLike)):
                p = os.fsdecode(path)
                self.copy_up(p, append=mode is None or any(c in str(mode) for c in "a+"))
                self._refuse_if_user(p)
        elif event in ("os.mkdir", "os.symlink", "os.link"):
            path = args[1] if event in ("os.symlink", "os.link") else args[0]
            if isinstance(path, (str, bytes, os.PathLike)):
                p = os.fsdecode(path)
                self.copy_up(os.path.dirname(os.path.abspath(p)), append=False)
                self._refuse_if_user(p)
        elif event in ("os.remove", "os.rmdir", "os.truncate", "os.chmod", "os.utime", "shutil.rmtree"):
            path = args[0]
            if isinstance(path, (str, bytes, os.PathLike)):
                p = os.path.abspath(os.fsdecode(path))
                self.copy_up(os.path.dirname(p), append=False)
                if not (event == "os.remove" and os.path.islink(p)):
                    self._refuse_if_user(p)
        elif event == "sqlite3.connect":
            path = args[0] if args else None
            if isinstance(path, (str, bytes, os.PathLike)) and os.fsdecode(path) != ":memory:":
                p = os.fsdecode(path)
                self.copy_up(p, append=True)  # sqlite updates the file in place
                self._refuse_if_user(p)
        elif event in ("os.rename", "shutil.move", "shutil.copyfile", "shutil.copytree"):
            src, dst = args[0], args[1]
            for path in (src, dst):
                if isinstance(path, (str, bytes, os.PathLike)):
                    p = os.path.abspath(os.fsdecode(path))
                    self.copy_up(os.path.dirname(p), append=False)
            if isinstance(dst, (str, bytes, os.PathLike)):
                p = os.fsdecode(dst)
                if os.path.islink(p):
                    os.unlink(p)
                self._refuse_if_user(p)

    def _refuse_if_user(self, path: str) -> None:
        if self.is_protected(path):
            where = "in your working tree" if self.in_user_tree(path) else "in an output folder of the original run"
            raise PermissionError(f"git-flor replay: refusing to write {path} {where}")


_ACTIVE: Sandbox | None = None
#: set by the launcher when the child runs in its own user + mount namespace
_KERNEL = False


def activate(user_root: str, scratch_root: str, protected: Sequence[str] = (), kernel: bool = False) -> None:
    """Called by the replay launcher before the script's first line runs."""
    global _ACTIVE, _KERNEL
    _KERNEL = kernel
    if kernel or _ACTIVE is not None:
        return
    _ACTIVE = Sandbox(user_root, scratch_root, protected)
    _ACTIVE.install()
    route_torch_save(_ACTIVE)
    sys.meta_path.insert(0, _TorchImport(_ACTIVE))


def installed_sandbox(user_root: str, scratch_root: str) -> Sandbox | None:
    """The replay child's guard: the launcher's, or (started without it) a new one; None in a namespace."""
    if _KERNEL:
        return None
    if _ACTIVE is None:
        activate(user_root, scratch_root)
    return _ACTIVE


class _TorchImport(importlib.abc.MetaPathFinder):
    """Route torch's savers the moment torch is imported: ``from torch import save`` binds the routed one."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "torch":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        loader = getattr(spec, "loader", None)
        if spec is None or loader is None or not hasattr(loader, "exec_module"):
            return spec
        original = loader.exec_module
        sandbox = self.sandbox

        def exec_module(module: ModuleType) -> None:
            original(module)
            route_torch_save(sandbox)

        loader.exec_module = exec_module
        return spec


def route_torch_save(sandbox: Sandbox) -> None:
    """torch.save / torch.jit.save to a path write from C++: give them a file opened through the sandbox."""
    torch = sys.modules.get("torch")
    if torch is None:
        return
    for owner, attr in ((torch, "save"), (getattr(torch, "jit", None), "save")):
        original = getattr(owner, attr, None) if owner is not None else None
        if original is None or getattr(original, "_git_flor", False):
            continue
        setattr(owner, attr, _routed(original, sandbox))


def _routed(original: Any, sandbox: Sandbox) -> Any:
    def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(f, (str, bytes, os.PathLike)):
            sandbox.copy_up(os.fsdecode(f), append=False)
            with builtins.open(f, "wb") as fh:
                return original(obj, fh, *args, **kwargs)
        return original(obj, f, *args, **kwargs)

    save._git_flor = True  # type: ignore[attr-defined]
    save.__wrapped__ = original  # type: ignore[attr-defined]
    return save
