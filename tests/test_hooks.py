"""`git flor init`/`uninstall`, the post-commit and post-rewrite hooks, help and packaging.

Real repositories and the real hooks git runs: every commit here goes through
the installed shim, which runs the installed ``git flor``.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from tests.conftest import TRAIN, flor, git, run_script

ROOT = Path(__file__).resolve().parent.parent
LEGACY = "#!/bin/sh\necho \"legacy $*\" >> \"$(git rev-parse --git-dir)/legacy.log\"\n"


def config(repo: Path) -> str:
    return git(repo, "config", "--local", "--list")


def note(repo: Path, rev: str = "HEAD") -> list[dict]:
    out = git(repo, "notes", "--ref=flor", "show", rev, check=False)
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def runs_at(repo: Path, rev: str) -> list[str]:
    out = flor(repo, "runs", "--rev", rev, "--format", "json")
    assert out.returncode == 0, out.stderr
    return [r["run"] for r in json.loads(out.stdout)]


def only_run(repo: Path) -> str:
    return json.loads(flor(repo, "runs", "--format", "json").stdout)[-1]["run"]


def test_init_chains_a_foreign_hook_and_uninstall_puts_it_back(repo: Path) -> None:
    hooks = repo / ".git" / "hooks"
    (hooks / "post-commit").write_text(LEGACY)
    (hooks / "post-commit").chmod(0o755)
    before = config(repo)

    out = flor(repo, "init")
    assert out.returncode == 0, out.stderr
    assert "post-commit.legacy" in out.stdout
    assert (hooks / "post-commit.legacy").read_text() == LEGACY
    shim = (hooks / "post-commit").read_text()
    assert "git-flor-hook-shim" in shim and os.access(hooks / "post-commit", os.X_OK)
    assert "refs/notes/flor" in git(repo, "config", "--get-all", "notes.rewriteRef")
    assert git(repo, "config", "notes.flor.mergeStrategy").strip() == "cat_sort_uniq"

    again = flor(repo, "init")  # idempotent: nothing wrapped twice, nothing added twice
    assert again.returncode == 0, again.stderr
    assert (hooks / "post-commit.legacy").read_text() == LEGACY
    assert git(repo, "config", "--get-all", "notes.rewriteRef").split() == ["refs/notes/flor"]

    (repo / "a.txt").write_text("a\n")
    git(repo, "add", "a.txt")
    git(repo, "commit", "-qm", "second")
    assert (repo / ".git" / "legacy.log").read_text() == "legacy \n"  # the user's hook ran
    assert any("env" in line for line in note(repo))  # and ours did

    out = flor(repo, "uninstall")
    assert out.returncode == 0, out.stderr
    assert (hooks / "post-commit").read_text() == LEGACY
    assert not (hooks / "post-commit.legacy").exists() and not (hooks / "post-rewrite").exists()
    assert config(repo) == before


def test_init_refuses_to_clobber_when_both_hook_and_legacy_exist(repo: Path) -> None:
    hooks = repo / ".git" / "hooks"
    for name in ("post-commit", "post-commit.legacy"):
        (hooks / name).write_text(LEGACY)
    out = flor(repo, "init")
    assert out.returncode == 2
    assert "merge them" in out.stderr and out.stderr.count("\n") == 1
    assert (hooks / "post-commit").read_text() == LEGACY


def test_core_hooks_path_is_respected(repo: Path, tmp_path: Path) -> None:
    shared = tmp_path / "team-hooks"
    shared.mkdir()
    (shared / "post-commit").write_text(LEGACY)
    (shared / "post-commit").chmod(0o755)
    git(repo, "config", "core.hooksPath", str(shared))
    out = flor(repo, "init")
    assert out.returncode == 0, out.stderr
    assert str(shared) in out.stdout
    assert "git-flor-hook-shim" in (shared / "post-commit").read_text()
    assert not (repo / ".git" / "hooks" / "post-commit").exists()
    git(repo, "commit", "-qm", "empty", "--allow-empty")
    assert (repo / ".git" / "legacy.log").exists() and note(repo)
    assert flor(repo, "uninstall").returncode == 0
    assert (shared / "post-commit").read_text() == LEGACY and not (shared / "post-rewrite").exists()


def test_a_global_core_hooks_path_is_refused_with_the_way_out(repo: Path, tmp_path: Path) -> None:
    git(repo, "config", "--global", "core.hooksPath", str(tmp_path / "everywhere"))
    out = flor(repo, "init")
    assert out.returncode == 2
    assert "global" in out.stderr and "git config core.hooksPath" in out.stderr
    assert not (tmp_path / "everywhere").exists()


def test_commit_links_a_run_made_on_uncommitted_edits(repo: Path) -> None:
    assert flor(repo, "init").returncode == 0
    base = git(repo, "rev-parse", "HEAD").strip()
    (repo / "train.py").write_text((repo / "train.py").read_text().replace("range(4)", "range(2)"))
    run_script(repo)
    run = only_run(repo)
    git(repo, "commit", "-qam", "fewer steps")
    head = git(repo, "rev-parse", "HEAD").strip()

    lines = note(repo)
    linked = [line for line in lines if line.get("run") == run]
    assert linked and linked[0]["ran_at"] == base and linked[0]["dirty"] is True
    env = [line["env"] for line in lines if "env" in line][0]
    assert env["source"] == "runs" and env["python"] == ".".join(map(str, sys.version_info[:3]))
    assert "numpy" in env["packages"]  # the run imported it

    assert runs_at(repo, "HEAD") == [run]  # the run is at the commit that captured its code
    assert runs_at(repo, base) == [run]  # and still at the one it ran on
    shown = json.loads(flor(repo, "show", run, "--format", "json").stdout)
    assert shown["commit"] == base
    assert shown["also_at"] == [{"commit": head, "why": "committed the run's uncommitted edits"}]
    assert f"→{head[:8]}" in flor(repo, "runs").stdout


def test_a_run_links_to_the_commit_that_completes_its_edits_only(repo: Path) -> None:
    assert flor(repo, "init").returncode == 0
    (repo / "notes.txt").write_text("x\n")
    git(repo, "add", "notes.txt")
    (repo / "train.py").write_text((repo / "train.py").read_text() + "# tweak\n")
    run_script(repo)
    git(repo, "commit", "-qm", "only notes.txt")  # train.py's edit stays uncommitted
    assert runs_at(repo, "HEAD") == []
    assert not [line for line in note(repo) if "run" in line]
    git(repo, "commit", "-qam", "and the rest")  # now the tree is the one the run saw
    assert runs_at(repo, "HEAD") == [only_run(repo)]


def test_runs_before_the_first_commit_link_to_it(tmp_path: Path) -> None:
    path = tmp_path / "fresh"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    assert flor(path, "init").returncode == 0
    (path / "train.py").write_text(TRAIN)
    git(path, "add", "train.py")
    run_script(path)
    git(path, "commit", "-qm", "first")
    assert runs_at(path, "HEAD") == [only_run(path)]


def test_the_hook_never_fails_a_commit(repo: Path) -> None:
    assert flor(repo, "init").returncode == 0
    # refs/notes/flor pointing at a blob: every note read fails.
    bad = subprocess.run(["git", "hash-object", "-w", "--stdin"], cwd=repo, input="junk",
                         capture_output=True, text=True, check=True).stdout.strip()
    git(repo, "update-ref", "refs/notes/flor", bad)
    done = subprocess.run(["git", "commit", "-qm", "still fine", "--allow-empty"], cwd=repo,
                          capture_output=True, text=True)
    assert done.returncode == 0
    assert "your commit is fine" in done.stderr and "hook.log" in done.stderr
    assert git(repo, "log", "-1", "--format=%s").strip() == "still fine"
    log = (repo / ".git" / "flor" / "hook.log").read_text()
    assert "Traceback" in log and "post-commit" in log
    listing = flor(repo, "runs")  # queries still work, and say what is wrong
    assert listing.returncode == 0 and "does not point at a notes commit" in listing.stderr
    # Called by hand with nonsense, outside a repository, with git's hook variables set: still 0.
    env = {**os.environ, "GIT_INDEX_FILE": "/nonexistent/index", "GIT_DIR": "/nonexistent"}
    for cwd, args in ((repo, ["post-commit"]), (repo.parent, ["post-commit"]), (repo, ["no-such-hook"])):
        done = subprocess.run(["git", "flor", "hook", *args], cwd=cwd, capture_output=True, text=True,
                              env=env, stdin=subprocess.DEVNULL)
        assert done.returncode == 0, done.stderr


def test_git_hook_variables_are_stripped(repo: Path) -> None:
    """git exports GIT_INDEX_FILE etc. to hooks; a hook acting on them would corrupt the user's state."""
    assert flor(repo, "init").returncode == 0
    (repo / "train.py").write_text((repo / "train.py").read_text() + "# tweak\n")
    run_script(repo)
    env = {**os.environ, "GIT_INDEX_FILE": "elsewhere/index", "GIT_WORK_TREE": "/nonexistent"}
    git(repo, "commit", "-qam", "tweak")
    done = subprocess.run(["git", "flor", "hook", "post-commit"], cwd=repo, env=env,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert done.returncode == 0 and done.stderr == ""
    assert not (repo / "elsewhere").exists()
    assert runs_at(repo, "HEAD") == [only_run(repo)]


def test_shim_without_git_flor_says_so_once_and_never_fails(repo: Path) -> None:
    assert flor(repo, "init").returncode == 0
    hook = repo / ".git" / "hooks" / "post-commit"
    text = "\n".join(
        "FLOR_BIN=/gone/git-flor" if line.startswith("FLOR_BIN=") else
        "INSTALL_PYTHON=/gone/python" if line.startswith("INSTALL_PYTHON=") else line
        for line in hook.read_text().splitlines()
    )
    hook.write_text(text + "\n")
    env = {**os.environ, "PATH": "/usr/bin:/bin"}  # no git-flor, and a python3 without it
    if subprocess.run(["python3", "-c", "import git_flor"], cwd=repo, env=env, capture_output=True).returncode == 0:
        pytest.skip("the system python3 has git_flor installed")
    outs = [subprocess.run(["git", "commit", "-qm", f"c{i}", "--allow-empty"], cwd=repo, env=env,
                           capture_output=True, text=True) for i in range(2)]
    assert [o.returncode for o in outs] == [0, 0]
    assert "cannot find git-flor" in outs[0].stderr and outs[1].stderr == ""


def test_amend_and_rebase_keep_notes_and_links(repo: Path) -> None:
    assert flor(repo, "init").returncode == 0
    base = git(repo, "rev-parse", "HEAD").strip()
    made = {}
    for name in ("a", "b"):
        (repo / f"{name}.txt").write_text(name)
        git(repo, "add", f"{name}.txt")
        git(repo, "commit", "-qm", f"add {name}")
        run_script(repo)
        made[name] = only_run(repo)
    git(repo, "commit", "-q", "--amend", "-m", "add b, amended")
    assert runs_at(repo, "HEAD") == [made["b"]]
    assert {line.get("by") for line in note(repo)} >= {"amend"}

    # Swap the two commits: both are rewritten.
    env = {**os.environ, "GIT_SEQUENCE_EDITOR": "sed -i '1{h;d};2G'"}
    done = subprocess.run(["git", "rebase", "-q", "-i", base], cwd=repo, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    subjects = git(repo, "log", "--format=%s", f"{base}..HEAD").split("\n")
    assert subjects[:2] == ["add a", "add b, amended"]
    assert runs_at(repo, "HEAD") == [made["a"]]
    assert runs_at(repo, "HEAD~1") == [made["b"]]
    assert any(line.get("by") == "rebase" for line in note(repo, "HEAD~1"))


def test_post_rewrite_carries_notes_even_when_git_does_not(repo: Path) -> None:
    assert flor(repo, "init").returncode == 0
    git(repo, "config", "notes.rewrite.amend", "false")
    run_script(repo)
    run = only_run(repo)
    git(repo, "commit", "-q", "--amend", "-m", "reworded")
    assert runs_at(repo, "HEAD") == [run]


def test_init_from_a_linked_worktree_installs_for_all(repo: Path, tmp_path: Path) -> None:
    wt = tmp_path / "wt"
    git(repo, "worktree", "add", "-q", str(wt), "-b", "side")
    assert flor(wt, "init").returncode == 0
    assert (repo / ".git" / "hooks" / "post-commit").exists()
    (wt / "train.py").write_text((wt / "train.py").read_text() + "# side\n")
    run_script(wt)
    git(wt, "commit", "-qam", "side edit")
    assert runs_at(wt, "side") == [only_run(wt)]


HEAVY = ("pandas", "tree_sitter", "tree_sitter_python", "numpy", "fsspec", "click.testing")


def test_the_hook_path_is_light_and_fast(repo: Path) -> None:
    assert flor(repo, "init").returncode == 0
    (repo / "train.py").write_text((repo / "train.py").read_text() + "# tweak\n")
    run_script(repo)
    git(repo, "commit", "-qam", "tweak")
    probe = (
        "import sys\n"
        "sys.argv = ['git-flor', 'hook', 'post-commit']\n"
        "from git_flor.cli import main\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=repo, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""
    # CPU seconds of the hook processes, not wall time: on a loaded 2-core machine the wall
    # clock measures the other processes. 200 ms is the budget (scripts/bench_hook.py).
    times = []
    for _ in range(5):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(["git", "flor", "hook", "post-commit"], cwd=repo, check=True, stdin=subprocess.DEVNULL)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        times.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    assert statistics.median(times) < 1.0, times


def test_help_paths(repo: Path) -> None:
    assert "init" in flor(repo, "help").stdout
    assert "uninstall" in flor(repo, "help", "init").stdout
    assert "--min" in flor(repo, "check", "metric", "-h").stdout
    # git turns `git flor --help` into `man git-flor`: the page ships in the package.
    env = {**os.environ, "MANPATH": str(ROOT / "git_flor" / "man"), "MANPAGER": "cat", "PAGER": "cat"}
    done = subprocess.run(["git", "flor", "--help"], cwd=repo, env=env, capture_output=True, text=True)
    if "no man viewer" in done.stderr or done.returncode == 127:
        pytest.skip("man is not installed")
    assert done.returncode == 0, done.stderr
    assert "git flor init" in done.stdout and "EXIT STATUS" in done.stdout


def test_man_page_is_current_and_every_command_has_help() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import make_manpage
    finally:
        sys.path.pop(0)
    assert make_manpage.PAGE.read_text() == make_manpage.render(), "run scripts/make_manpage.py"
    import click

    from git_flor.cli import cli

    def walk(group: click.Group, ctx: click.Context) -> None:
        for name in group.list_commands(ctx):
            cmd = group.get_command(ctx, name)
            assert cmd is not None and (cmd.help or "").strip(), f"`git flor {name}` has no help"
            if isinstance(cmd, click.Group):
                walk(cmd, click.Context(cmd, parent=ctx))

    walk(cli, click.Context(cli))


def test_a_wheel_carries_the_hooks_and_the_man_page(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q",
                           "-w", str(tmp_path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot build a wheel here: {done.stderr.strip().splitlines()[-1:]}")
    wheel = next(tmp_path.glob("git_flor-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for shim in ("post-commit", "post-rewrite"):
        assert f"git_flor/_hooks/{shim}" in names
        assert zipfile.ZipFile(wheel).read(f"git_flor/_hooks/{shim}") == (ROOT / "hooks" / shim).read_bytes()
    assert any(n.endswith(".data/data/share/man/man1/git-flor.1") for n in names)


def test_init_outside_a_repository_is_128(tmp_path: Path) -> None:
    out = flor(tmp_path, "init")
    assert out.returncode == 128 and out.stderr.count("\n") == 1


def test_a_run_still_going_at_commit_time_is_linked_when_it_finishes(repo: Path) -> None:
    assert flor(repo, "init").returncode == 0
    base = git(repo, "rev-parse", "HEAD").strip()
    (repo / "train.py").write_text((repo / "train.py").read_text() + "# an edit\n")
    (repo / "wait.py").write_text(
        "import pathlib, time\nimport git_flor as flor\nflor.log('started', 1)\n"
        "pathlib.Path('.started').write_text('x')\n"
        "while not pathlib.Path('.go').exists():\n    time.sleep(0.02)\nflor.log('done', 1)\n"
    )
    (repo / ".gitignore").write_text("data/\n.started\n.go\n")
    git(repo, "add", "wait.py", ".gitignore")
    proc = subprocess.Popen([sys.executable, "wait.py"], cwd=repo, stdin=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not (repo / ".started").exists():
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.02)
    git(repo, "commit", "-qam", "the edit, committed while the run goes on")
    head = git(repo, "rev-parse", "HEAD").strip()
    assert runs_at(repo, "HEAD") == []  # not finished: the hook cannot see it
    (repo / ".go").write_text("x")
    assert proc.wait(timeout=60) == 0
    run = only_run(repo)
    assert runs_at(repo, "HEAD") == [run] and runs_at(repo, base) == [run]
    shown = json.loads(flor(repo, "show", run, "--format", "json").stdout)
    assert shown["also_at"] == [{"commit": head, "why": "committed the run's uncommitted edits"}]
