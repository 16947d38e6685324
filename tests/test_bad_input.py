"""A user's first mistakes: one line saying what is wrong and what to do, a documented exit code."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import flor, git, run_script


def one_line(out, code: int) -> str:  # type: ignore[no-untyped-def]
    assert out.returncode == code, (out.returncode, out.stderr)
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr
    return out.stderr


def test_replay_of_a_name_no_code_logs_is_a_usage_error_naming_the_logged_ones(repo: Path) -> None:
    run_script(repo)
    err = one_line(flor(repo, "replay", "--apply", "nosuchname", "--yes"), 2)
    assert "'nosuchname'" in err and "loss" in err and "val" in err
    err = one_line(flor(repo, "replay", "--apply", "loss,vall", "--dry-run"), 2)
    assert "'vall'" in err and "'loss'" not in err


def test_a_range_with_an_unknown_end_names_that_end(repo: Path) -> None:
    run_script(repo)
    err = one_line(flor(repo, "runs", "--rev", "HEAD~3..HEAD"), 2)
    assert "'HEAD~3'" in err and "A..B" not in err
    err = one_line(flor(repo, "log", "loss", "--rev", "HEAD..nosuchbranch"), 2)
    assert "'nosuchbranch'" in err


def test_propagate_accepts_format_json_like_every_other_command(repo: Path) -> None:
    (repo / "train.py").write_text((repo / "train.py").read_text() + "flor.log('w_norm', float(abs(w).sum()))\n")
    as_flag = flor(repo, "propagate", "HEAD", "--json", "--", "train.py")
    as_format = flor(repo, "propagate", "HEAD", "--format", "json", "--", "train.py")
    assert as_flag.returncode == as_format.returncode == 0, as_format.stderr
    assert json.loads(as_flag.stdout) == json.loads(as_format.stdout)


def test_the_working_tree_is_untouched_by_bad_input(repo: Path) -> None:
    run_script(repo)
    before = git(repo, "status", "--porcelain", "--ignored")
    for args in (["replay", "--apply", "nosuch", "--yes"], ["runs", "--rev", "HEAD~9..HEAD"],
                 ["gc", "--keep-every", "0"], ["show", "zzzz"]):
        one_line(flor(repo, *args), 2)
    assert git(repo, "status", "--porcelain", "--ignored") == before
