"""``git flor propagate`` end to end: source, diff, json, run ids, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import flor, git, run_script


def today_with(repo: Path, line: str) -> None:
    text = (repo / "train.py").read_text()
    (repo / "train.py").write_text(text.replace(
        "        flor.log(\"val\", np.mean((X @ w - y) ** 2))\n",
        "        flor.log(\"val\", np.mean((X @ w - y) ** 2))\n        " + line + "\n"))


def test_propagate_prints_source_diff_and_json(repo: Path) -> None:
    (repo / "train.py").write_text((repo / "train.py").read_text().replace("range(4)", "range(2)"))
    git(repo, "commit", "-qam", "two steps")
    today_with(repo, 'flor.log("w_norm", float(w @ w))')
    out = flor(repo, "propagate", "HEAD~1", "--", "train.py")
    assert out.returncode == 0, out.stderr
    old = git(repo, "show", "HEAD~1:train.py")
    assert out.stdout.replace('        flor.log("w_norm", float(w @ w))\n', "") == old
    assert out.stdout.count("w_norm") == 1
    diff = flor(repo, "propagate", "HEAD~1", "--diff")
    assert diff.returncode == 0 and '+        flor.log("w_norm", float(w @ w))' in diff.stdout
    placements = json.loads(flor(repo, "propagate", "HEAD~1", "--json").stdout)
    assert [p["name"] for p in placements[0]["placements"]] == ["w_norm"]


def test_propagate_into_a_run_snapshot_and_failures_exit_3(repo: Path) -> None:
    run_script(repo)
    run = json.loads(flor(repo, "runs", "--format", "json").stdout)[0]["run"]
    today_with(repo, 'flor.log("ghost", never_defined)')
    out = flor(repo, "propagate", run[:6], "--", "train.py")
    assert out.returncode == 3
    assert "ghost: reads `never_defined`" in out.stderr
    assert flor(repo, "propagate", "nosuchrev", "--", "train.py").returncode == 2
