"""``import git_flor`` sits on every training script's path: it must stay light."""

import subprocess
import sys


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
