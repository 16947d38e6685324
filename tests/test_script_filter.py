"""`git flor log --script` / `flor.dataframe(script=...)`: the runs of one script of a repository."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import flor, git, run_script


def test_script_selects_the_runs_of_that_script_by_path_or_file_name(repo: Path) -> None:
    (repo / "steps").mkdir()
    (repo / "steps" / "prepare.py").write_text("import git_flor as flor\nflor.log('rows', 64)\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "prepare step")
    run_script(repo / "steps", "prepare.py")
    run_script(repo, "train.py")

    def scripts(*args: str) -> list[str]:
        out = flor(repo, "log", "--format", "json", *args)
        assert out.returncode == 0, out.stderr
        return sorted({row["script"] for row in json.loads(out.stdout)})

    assert scripts() == ["steps/prepare.py", "train.py"]
    assert scripts("--script", "train.py") == ["train.py"]
    assert scripts("--script", "steps/prepare.py") == scripts("--script", "prepare.py") == ["steps/prepare.py"]
    assert scripts("--script", "prepare.py", "--script", "./train.py") == ["steps/prepare.py", "train.py"]
    rows = json.loads(flor(repo, "log", "rows", "--script", "prepare.py", "--format", "json").stdout)
    assert [r["rows"] for r in rows] == [64]
    none = flor(repo, "log", "loss", "--script", "evaluate.py")
    assert none.returncode == 0 and none.stdout == "" and "no values" in none.stderr
