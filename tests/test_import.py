"""``import git_flor`` sits on every training script's path: it must stay light."""

import os
import subprocess
import sys
from pathlib import Path


def test_import_pulls_in_neither_pandas_nor_tree_sitter_nor_pygit2() -> None:
    code = (
        "import sys, git_flor\n"
        "heavy = [m for m in ('pandas', 'tree_sitter', 'tree_sitter_python', 'pygit2', 'numpy') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_python_dash_m_is_the_cli() -> None:
    out = subprocess.run([sys.executable, "-m", "git_flor", "-h"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "hindsight logging" in out.stdout


def test_without_fcntl_the_import_refuses_in_one_line(tmp_path: Path) -> None:
    """A platform without POSIX file locks (Windows), simulated: fcntl cannot be imported."""
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['fcntl'] = None  # import fcntl fails\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    code = (
        "try:\n"
        "    import git_flor\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
        "else:\n"
        "    print('imported')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    message = out.stdout.strip()
    assert "\n" not in message and "Linux and macOS" in message, message
    cli = subprocess.run([sys.executable, "-m", "git_flor", "runs"], capture_output=True, text=True, env=env)
    assert cli.returncode != 0
    assert "Linux and macOS" in cli.stderr.strip().splitlines()[-1]  # `git flor` says the same
