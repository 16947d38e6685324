"""`git flor check metric`: CI gates whose exit codes are the contract (0 pass, 1 fail, 3 nothing, 2 usage)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import flor, git, run_script

SCRIPT = (
    "import git_flor as flor\n"
    "acc = flor.arg('acc', 0.5)\n"
    "for epoch in flor.loop('epoch', range(3)):\n"
    "    flor.log('val_acc', acc * (epoch + 1) / 3)\n"
    "flor.log('name', 'resnet')\n"
)


def gate(repo: Path, *args: str) -> tuple[int, str, str]:
    out = flor(repo, "check", "metric", *args)
    return out.returncode, out.stdout, out.stderr


def test_metric_bounds_decide_the_exit_code(repo: Path) -> None:
    (repo / "gate.py").write_text(SCRIPT)
    git(repo, "add", "gate.py")
    git(repo, "commit", "-qm", "gate script")
    run_script(repo, "gate.py", "--kwargs", "acc=0.95")

    code, out, _ = gate(repo, "val_acc", "--min", "0.9")
    assert code == 0 and out.startswith("ok: val_acc = 0.95")  # the last value logged
    code, out, _ = gate(repo, "val_acc", "--min", "0.99")
    assert code == 1 and "FAILED" in out and "below --min 0.99" in out
    code, out, _ = gate(repo, "val_acc", "--min", "0.5", "--max", "0.9")
    assert code == 1 and "above --max 0.9" in out

    code, out, _ = gate(repo, "val_acc", "--min", "0.9", "--format", "json")
    result = json.loads(out)
    assert code == 0 and result["ok"] is True and result["value"] == pytest.approx(0.95)
    assert result["commit"] == git(repo, "rev-parse", "HEAD").strip()

    # The latest run decides: a worse run made later fails the same gate.
    run_script(repo, "gate.py", "--kwargs", "acc=0.6")
    assert gate(repo, "val_acc", "--min", "0.9")[0] == 1
    assert gate(repo, "acc", "--max", "0.7")[0] == 0  # an argument can be gated too


def test_nothing_to_check_is_exit_3_and_bad_usage_exit_2(repo: Path) -> None:
    run_script(repo)  # logs loss and val, not val_acc
    code, _, err = gate(repo, "val_acc", "--min", "0.9")
    assert code == 3 and "no run logged 'val_acc'" in err
    code, out, _ = gate(repo, "val_acc", "--min", "0.9", "--format", "json")
    assert code == 3 and json.loads(out)["ok"] is None
    assert gate(repo, "val", "--rev", "HEAD")[0] == 2  # no bound given
    code, _, err = gate(repo, "val", "--max", "1", "--rev", "no-such-rev")
    assert code == 2 and "unknown revision" in err


def test_rev_selects_the_runs_of_a_commit_including_captured_dirty_runs(repo: Path) -> None:
    (repo / "gate.py").write_text(SCRIPT)
    git(repo, "add", "gate.py")
    git(repo, "commit", "-qm", "gate script")
    run_script(repo, "gate.py", "--kwargs", "acc=0.95")
    assert flor(repo, "init").returncode == 0
    (repo / "gate.py").write_text(SCRIPT.replace("range(3)", "range(6)"))
    code, _, _ = gate(repo, "val_acc", "--min", "0.9", "--rev", "HEAD")
    assert code == 0
    run_script(repo, "gate.py", "--kwargs", "acc=0.3")  # on uncommitted edits
    git(repo, "commit", "-qam", "longer training")  # the hook links that run to the new commit
    assert gate(repo, "val_acc", "--min", "0.9", "--rev", "HEAD")[0] == 1
    assert gate(repo, "val_acc", "--min", "0.9", "--rev", "HEAD~1")[0] == 1  # it ran there too
    code, _, err = gate(repo, "name", "--min", "1", "--rev", "HEAD")
    assert code == 2 and "not a number" in err


def test_check_propagate_dry_runs_today_into_every_recorded_version(repo: Path) -> None:
    code, _, err = gate_propagate(repo)
    assert code == 3 and "nothing to check" in err  # no recorded version yet
    run_script(repo)
    (repo / "train.py").write_text((repo / "train.py").read_text().replace("range(4)", "range(2)"))
    git(repo, "commit", "-qam", "fewer steps")
    run_script(repo)
    run_script(repo)  # same version twice: checked once
    today = (repo / "train.py").read_text()
    new_line = '        flor.log("val", np.mean((X @ w - y) ** 2))\n'
    assert new_line in today
    refs = git(repo, "for-each-ref")

    (repo / "train.py").write_text(today.replace(new_line, new_line + new_line.replace(
        'flor.log("val", np.mean((X @ w - y) ** 2))', 'flor.log("wnorm", float(np.linalg.norm(w)))')))
    code, out, _ = gate_propagate(repo, "--format", "json")
    report = json.loads(out)
    assert code == 0 and report["ok"] is True
    assert len(report["versions"]) == 2 and sorted(len(v["runs"]) for v in report["versions"]) == [1, 2]
    assert all(v["placed"] == ["wnorm"] for v in report["versions"])

    (repo / "train.py").write_text((repo / "train.py").read_text() + 'flor.log("bad", not_defined_anywhere)\n')
    code, out, err = gate_propagate(repo)
    assert code == 3
    assert out.count("FAILED") == 2 and "bad:" in out and "not_defined_anywhere" in out
    assert "2 of 2 version(s)" in err
    assert gate_propagate(repo, "--names", "wnorm")[0] == 0  # only the statement asked about
    code, out, _ = gate_propagate(repo, "--names", "wnrom")  # a typo is not a pass
    assert code == 3 and "wnrom: today's code has no flor.log statement with this name" in out
    assert gate_propagate(repo, "--rev", "HEAD~1", "--names", "wnorm")[0] == 0
    assert git(repo, "for-each-ref") == refs  # a dry run: nothing written


def gate_propagate(repo: Path, *args: str) -> tuple[int, str, str]:
    out = flor(repo, "check", "propagate", *args)
    return out.returncode, out.stdout, out.stderr


def test_check_metric_is_a_plain_function_returning_the_exit_code(
    repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from git_flor.commands.check import check_metric
    from git_flor.errors import UsageError

    run_script(repo)
    (repo / "sub").mkdir()
    monkeypatch.chdir(repo / "sub")  # from anywhere in the working tree
    assert check_metric("val", maximum=1e9) == 0
    assert check_metric("val", maximum=-1.0) == 1
    assert check_metric("absent", minimum=0.0) == 3
    with pytest.raises(UsageError):
        check_metric("val")
    assert "FAILED: val" in capsys.readouterr().out
