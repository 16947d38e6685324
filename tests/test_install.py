"""The README's install path: build the wheel, install it into a fresh venv, use `git flor` anywhere.

What this proves that the editable install of the test environment cannot: the
wheel carries everything (packages, hook shims, man page, the ``git-flor``
console script), its declared dependencies are enough, and once its ``bin`` is
on ``PATH`` git finds ``git flor`` in any repository, the hooks call back into
that environment, and a training script run by that environment's Python records.

No network: the wheel is installed with ``pip --no-index``, and its dependencies
are the ones this test environment already has, made visible in the fresh venv
one distribution at a time (only those the wheel's metadata asks for, followed
transitively) so that pip must find each one it needs and nothing else.
"""

from __future__ import annotations

import email
import importlib.metadata as md
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from packaging.requirements import Requirement

from tests.conftest import git

ROOT = Path(__file__).resolve().parent.parent


def _sh(*cmd: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    out = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True,
                         stdin=subprocess.DEVNULL)
    assert out.returncode == 0, f"{' '.join(map(str, cmd))} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}"
    return out.stdout


def _source_copy(dest: Path) -> Path:
    """The checkout's files as git would ship them (tracked and new, not ignored), so building writes nothing here."""
    if (ROOT / ".git").exists():
        names = _sh("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=ROOT).split("\0")
    else:
        names = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if p.is_file() and ".venv" not in p.parts]
    for name in filter(None, names):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def _requires(meta_requires: list[str]) -> list[str]:
    """Distribution names the given requirement lines need here (markers evaluated, no extras)."""
    out = []
    for line in meta_requires:
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            out.append(req.name)
    return out


def _closure(names: list[str]) -> list[md.Distribution]:
    seen: dict[str, md.Distribution] = {}
    todo = list(names)
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen:
            continue
        dist = md.distribution(name)
        seen[name] = dist
        todo.extend(_requires(dist.requires or []))
    return list(seen.values())


def _link_installed(dists: list[md.Distribution], site: Path) -> None:
    """Make these installed distributions (code and metadata) part of ``site`` by symlinks."""
    for dist in dists:
        base = Path(dist.locate_file(""))
        tops = {Path(f).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops:
            target = site / top
            if (base / top).exists() and not target.exists():
                target.symlink_to(base / top)


def test_wheel_installs_into_a_fresh_venv_and_git_flor_works_in_any_repository(tmp_path: Path) -> None:
    src = _source_copy(tmp_path / "src")
    dist = tmp_path / "dist"
    _sh(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
        "-w", dist, src)
    wheel = next(dist.glob("git_flor-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        meta = email.message_from_bytes(zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))))
    assert {"git_flor/_hooks/post-commit", "git_flor/man/man1/git-flor.1", "git_flor/cli.py"} <= names

    env_dir = tmp_path / "env"
    _sh(sys.executable, "-m", "venv", env_dir)
    py = env_dir / "bin" / "python"
    site = Path(_sh(py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip())
    _link_installed(_closure(_requires(meta.get_all("Requires-Dist") or [])), site)
    _sh(py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-index",
        "--find-links", dist, "git-flor")
    _sh(py, "-m", "pip", "check", "--disable-pip-version-check")

    # A user's shell: the fresh environment's bin on PATH, not this test environment's.
    test_bin = str(Path(sys.executable).parent)
    path = os.pathsep.join([str(env_dir / "bin"), *(p for p in os.environ["PATH"].split(os.pathsep) if p != test_bin)])
    env = {**os.environ, "PATH": path}
    env.pop("PYTHONPATH", None)
    where = _sh(py, "-c", "import git_flor; print(git_flor.__file__)", cwd=tmp_path, env=env)
    assert Path(where.strip()).is_relative_to(env_dir), where
    assert (env_dir / "share" / "man" / "man1" / "git-flor.1").is_file()
    assert shutil.which("git-flor", path=path) == str(env_dir / "bin" / "git-flor")
    assert "git-flor, version" in _sh("git", "flor", "--version", cwd=tmp_path, env=env)

    project = tmp_path / "anywhere" / "project"
    project.mkdir(parents=True)
    git(project, "init", "-q", "-b", "main")
    (project / "train.py").write_text(
        "import git_flor as flor\n"
        "lr = flor.arg('lr', 0.5)\n"
        "for epoch in flor.loop('epoch', range(3)):\n"
        "    flor.log('loss', lr / (epoch + 1))\n"
    )
    git(project, "add", ".")
    git(project, "commit", "-qm", "train")
    _sh("git", "flor", "init", cwd=project, env=env)
    (project / "sub").mkdir()
    _sh("python", "../train.py", "--kwargs", "lr=0.25", cwd=project / "sub", env=env)
    rows = json.loads(_sh("git", "flor", "log", "loss", "lr", "--format", "json", cwd=project / "sub", env=env))
    assert [(r["epoch"], r["loss"], r["lr"]) for r in rows] == [(0, 0.25, 0.25), (1, 0.125, 0.25), (2, 0.25 / 3, 0.25)]
    # The installed hook calls back into the fresh environment: a dirty run follows the commit.
    (project / "train.py").write_text((project / "train.py").read_text().replace("0.5", "0.75"))
    _sh("python", "train.py", cwd=project, env=env)
    git(project, "commit", "-qam", "lr 0.75")
    runs = json.loads(_sh("git", "flor", "runs", "--rev", "HEAD", "--format", "json", cwd=project, env=env))
    assert [r["args"] for r in runs] == [{"lr": 0.75}]


def test_the_readme_installs_from_a_checkout_or_git_never_by_a_registry_name() -> None:
    """git-flor is not on a package index: every `pip install` of it in the README names a path or a git URL."""
    readme = (ROOT / "README.md").read_text()
    assert "## Install" in readme
    for line in readme.splitlines():
        command = line.split("#", 1)[0]
        if ("pip install" in command or "pipx install" in command) and "git-flor" in command:
            assert "/path/to/git-flor" in line or "git+" in line, line
