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
- ``torch.save(obj, path)``, which opens files in C++ where no audit hook sees
  them, is given a file opened in Python instead.
"""

from __future__ import annotations

import builtins
import os
import shutil
import sys
from pathlib import Path
from typing import Any

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC


class Sandbox:
    def __init__(self, user_root: str, scratch_root: str) -> None:
        self.user = os.path.realpath(user_root)
        self.scratch = os.path.abspath(scratch_root)

    def in_user_tree(self, path: str) -> bool:
        real = os.path.realpath(path)
        return real == self.user or real.startswith(self.user + os.sep)

    def copy_up(self, path: Any, append: bool) -> None:
        """Make ``path`` (inside the scratch) a real, private place to write."""
        full = os.path.abspath(os.fspath(path))
        if not full.startswith(self.scratch + os.sep) or not self.in_user_tree(full):
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
        if self.in_user_tree(path):
            raise PermissionError(f"git-flor replay: refusing to write {path} in your working tree")


def route_torch_save(sandbox: Sandbox) -> None:
    """torch.save(obj, "model.pt") writes from C++: give it a file opened through the sandbox."""
    torch = sys.modules.get("torch")
    if torch is None or getattr(torch.save, "_git_flor", False):
        return
    original = torch.save

    def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(f, (str, bytes, os.PathLike)):
            sandbox.copy_up(os.fsdecode(f), append=False)
            with builtins.open(f, "wb") as fh:
                return original(obj, fh, *args, **kwargs)
        return original(obj, f, *args, **kwargs)

    save._git_flor = True  # type: ignore[attr-defined]
    torch.save = save
