"""Which isolation a replay gets, and the check after it that the user's files did not change.

Two levels (docs/design.md §8):

- ``namespace`` (Linux with unprivileged user namespaces and overlayfs): each
  replay child runs in its own user + mount namespace with an overlay over the
  user's tree and over every directory outside it that the original run wrote;
  the kernel sends every write — Python, C, C++ — to the scratch.
- ``guard``: the in-process audit-hook guard (``runtime.sandbox``) copies up
  Python-level writes through links, routes ``torch.save``/``torch.jit.save``,
  sees ``sqlite3.connect``, and refuses what would still reach the user's files.
  Writes from other C code (h5py, a C extension's own ``fopen``) are not seen.

Either way the replay is followed by a check: every file of the user's tree
(tracked, untracked, ignored; ``.git`` aside) and every recorded absolute output
is compared (type, size, mtime, ctime, inode, link target) with its state before
the replay; a difference is reported loudly.

``FLOR_ISOLATION=guard`` forces the guard; ``FLOR_ISOLATION=namespace`` refuses
to replay without the kernel's isolation.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..runtime.launch import __file__ as _launch_file

LAUNCHER = Path(_launch_file).resolve()


@dataclass
class Isolation:
    mode: str  # "namespace" | "guard"
    why: str  # why this mode (the reason namespaces were not used, or what is overlaid)
    roots: list[str] = field(default_factory=list)  # the user's tree + absolute output dirs

    def describe(self) -> str:
        if self.mode == "namespace":
            return (f"isolation: kernel (user + mount namespace, overlay over {len(self.roots)} "
                    f"folder(s): {', '.join(self.roots)}); every write lands in the scratch")
        return (f"isolation: in-process guard (audit hook; {self.why}); writes from C code other than "
                "torch.save/torch.jit.save/sqlite3 are not intercepted, the check after the replay reports them")

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "why": self.why, "roots": self.roots}


def output_dirs(meta: dict[str, Any], user_root: Path) -> list[str]:
    """Existing directories outside the repository that the run wrote files in (its ``out_dir``s)."""
    files = (meta.get("outputs") or {}).get("files") or {}
    dirs = set()
    for path in files:
        if not os.path.isabs(path) or not os.path.lexists(path):
            continue  # a temporary file, gone since (its folder, /tmp, is not the run's output)
        parent = os.path.dirname(path)
        if os.path.isdir(parent) and not _under(os.path.realpath(parent), str(user_root)):
            dirs.add(os.path.realpath(parent))
    return sorted(dirs)


def linked_dirs(user_root: Path) -> list[str]:
    """Directories outside the tree that links inside it lead to (``data -> /mnt/datasets``).

    Replay reaches the user's untracked files through links, so a write through such a
    link would land there: they are overlaid (or guarded) and checked like the tree.
    """
    out = set()
    root = str(user_root)
    for base, dirs, names in os.walk(user_root):
        if base == root:
            dirs[:] = [d for d in dirs if d != ".git"]
        for name in dirs + names:
            path = os.path.join(base, name)
            if os.path.islink(path) and os.path.isdir(path):
                real = os.path.realpath(path)
                if not _under(real, root) and real != os.sep:
                    out.add(real)
    return sorted(out)


def outside_dirs(user_root: Path, metas: list[dict[str, Any]]) -> list[str]:
    """Everything outside the user's tree a replay of these runs could write to: to overlay and check."""
    dirs = set(linked_dirs(user_root))
    for meta in metas:
        dirs.update(output_dirs(meta, user_root))
    return top_dirs(sorted(dirs))


def created_files(meta: dict[str, Any]) -> list[str]:
    """Files the run created or truncated (not only appended to): replay must see its own, not today's."""
    files = (meta.get("outputs") or {}).get("files") or {}
    return sorted(p for p, events in files.items() if any(kind == "w" for _, kind in events))


def top_dirs(dirs: list[str]) -> list[str]:
    """The directories not inside another one of the list."""
    out: list[str] = []
    for d in sorted(set(dirs), key=len):
        if not any(_under(d, o) for o in out):
            out.append(d)
    return sorted(out)


def _under(path: str, root: str) -> bool:
    root = root.rstrip(os.sep) or os.sep
    return path == root or path.startswith(root if root == os.sep else root + os.sep)


def choose(user_root: Path, extra: list[str]) -> Isolation:
    """Probe (in a throwaway child) whether the kernel can isolate; else the guard."""
    roots = top_dirs([str(user_root), *extra])
    wanted = os.environ.get("FLOR_ISOLATION", "auto").strip().lower() or "auto"
    if wanted not in ("auto", "guard", "namespace"):
        raise UsageError(f"FLOR_ISOLATION={wanted!r}: use auto, namespace or guard")
    if wanted == "guard":
        return Isolation("guard", "FLOR_ISOLATION=guard", roots)
    if not sys.platform.startswith("linux"):
        why = f"user namespaces are Linux-only (this is {sys.platform})"
    else:
        why = _probe(roots)
    if why is None:
        return Isolation("namespace", "", roots)
    if wanted == "namespace":
        raise UsageError(f"FLOR_ISOLATION=namespace, but the kernel cannot isolate a replay here: {why}")
    return Isolation("guard", f"namespaces unavailable: {why}", roots)


def _probe(roots: list[str]) -> str | None:
    probe_dir = Path(tempfile.mkdtemp(prefix="git-flor-probe-"))
    spec = {"overlays": overlays(roots, probe_dir), "keep": [str(probe_dir)]}
    path = probe_dir / "probe.json"
    path.write_text(json.dumps(spec))
    try:
        out = subprocess.run([sys.executable, "-I", str(LAUNCHER), "--probe", str(path)], capture_output=True,
                             text=True, timeout=30, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    finally:
        rmtree(probe_dir)
    if out.returncode == 0 and out.stdout == "ok":
        return None
    return (out.stdout or out.stderr).strip().splitlines()[-1:][0] if (out.stdout or out.stderr).strip() else (
        f"probe exited {out.returncode}")


def rmtree(path: Path) -> None:
    """Remove a scratch tree; an overlay's work dir keeps a mode-000 ``work`` entry, opened first."""
    for base, dirs, _ in os.walk(path):
        for d in dirs:
            full = os.path.join(base, d)
            if not os.path.islink(full):  # never follow a link out of the scratch
                try:
                    os.chmod(full, 0o700)
                except OSError:
                    pass
    shutil.rmtree(path, ignore_errors=True)


def overlays(roots: list[str], where: Path) -> list[dict[str, str]]:
    return [
        {"lower": r, "upper": str(where / f"ov{k}" / "upper"), "work": str(where / f"ov{k}" / "work")}
        for k, r in enumerate(roots)
    ]


def launch_spec(iso: Isolation, scratch: Path, base: Path, hide_abs: list[str], protected: list[str]) -> dict[str, Any]:
    """The launcher's ``isolation`` section for one job."""
    if iso.mode == "namespace":
        return {"mode": "namespace", "overlays": overlays(iso.roots, scratch / ".git-flor-overlay"),
                "keep": [str(base)], "hide": hide_abs, "protected": []}
    return {"mode": "guard", "protected": protected}


# -- the check after the replay -------------------------------------------------------------

State = dict[str, tuple[Any, ...]]


def walked(outside: list[str]) -> list[str]:
    """The outside folders the check walks whole: not shared ones (``/tmp``, ``$HOME``), where other
    programs write all the time; there only the files the run wrote are checked."""
    shared = {os.sep, tempfile.gettempdir(), "/tmp", "/var/tmp", "/dev/shm", os.path.expanduser("~")}
    shared = {os.path.realpath(d) for d in shared}
    return [d for d in outside if os.path.realpath(d) not in shared]


def fingerprint(user_root: Path, outside: list[str], files: list[str], exclude: Path | None = None) -> State:
    """Every file of the user's tree (``.git`` aside), of the ``outside`` folders, and ``files``.

    Links are recorded as links (their targets are among ``outside`` when they lead to
    folders). ``exclude``: the replay's own scratch, should a temporary folder lie inside.
    """
    out: State = {}
    skip = {os.path.join(str(user_root), ".git"), str(exclude) if exclude else ""}
    for top in [str(user_root), *outside]:
        for base, dirs, names in os.walk(top):
            dirs[:] = [d for d in dirs if os.path.join(base, d) not in skip]
            for name in names + [d for d in dirs if os.path.islink(os.path.join(base, d))]:
                _stat(os.path.join(base, name), out)
    for path in files:
        _stat(path, out)
    return out


def _stat(path: str, out: State) -> None:
    try:
        st = os.lstat(path)
    except OSError:
        out[path] = ("missing",)
        return
    link = os.readlink(path) if os.path.islink(path) else None
    out[path] = (st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, link)


def changed(before: State, after: State) -> list[str]:
    """Paths whose state differs (written, created, removed) between the two fingerprints."""
    return sorted(p for p in set(before) | set(after) if before.get(p, ("missing",)) != after.get(p, ("missing",)))
