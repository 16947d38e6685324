"""Recording a run: typed values, loop positions, args, snapshot, and the user's state untouched."""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import pandas as pd
import pygit2
import pytest

import git_flor
from tests.conftest import flor, git, run_script, user_state


def shadow_tip(repo: Path) -> str:
    refs = git(repo, "for-each-ref", "--format=%(objectname)", "refs/flor/shadow/").split()
    assert len(refs) == 1
    return refs[0]


def test_every_value_type_round_trips(repo: Path) -> None:
    (repo / "types.py").write_text(textwrap.dedent(
        """\
        import numpy as np
        import git_flor as flor
        flor.log("i", 3)
        flor.log("f", 0.1)
        flor.log("b", True)
        flor.log("s", "héllo")
        flor.log("none", None)
        flor.log("lst", [1, 2.5, "x", None, [True]])
        flor.log("dct", {"a": 1, "b": [0.5]})
        flor.log("np_f32", np.float32(0.25))
        flor.log("np_i64", np.int64(7))
        flor.log("np_0d", np.array(1.5))
        flor.log("big", 2**70)
        flor.log("nan", float("nan"))
        """
    ))
    run_script(repo, "types.py")
    df = git_flor.dataframe(repo=pygit2.Repository(str(repo)))
    row = df.iloc[0]
    assert row["i"] == 3 and df["i"].dtype == "Int64"
    assert row["f"] == 0.1 and df["f"].dtype == "float64"
    assert row["b"] is True or row["b"] == True  # noqa: E712 (pandas BooleanDtype scalar)
    assert df["b"].dtype == "boolean"
    assert row["s"] == "héllo"
    assert row["none"] is None
    assert row["lst"] == [1, 2.5, "x", None, [True]]
    assert row["dct"] == {"a": 1, "b": [0.5]}
    assert row["np_f32"] == 0.25 and df["np_f32"].dtype == "float64"
    assert row["np_i64"] == 7
    assert row["np_0d"] == 1.5
    assert row["big"] == 2**70
    assert math.isnan(row["nan"])


def test_an_unloggable_value_warns_once_and_training_goes_on(repo: Path) -> None:
    (repo / "bad.py").write_text(textwrap.dedent(
        """\
        import numpy as np
        import git_flor as flor
        for epoch in flor.loop("epoch", range(3)):
            flor.log("weights", np.zeros(1000))
            flor.log("obj", object())
            flor.log("ok", epoch)
        print("finished")
        """
    ))
    out = run_script(repo, "bad.py")
    assert "finished" in out.stdout and "Traceback" not in out.stderr
    assert out.stderr.count("flor.log('weights')") == 1  # once per name, not per call
    assert "numpy.ndarray" in out.stderr and ".tolist()" in out.stderr
    assert out.stderr.count("flor.log('obj'): cannot store a builtins.object") == 1
    [run] = json.loads(flor(repo, "runs", "--format", "json").stdout)
    assert run["status"] == "ok (2 warnings)"
    shown = json.loads(flor(repo, "show", run["run"], "--format", "json").stdout)
    assert len(shown["warnings"]) == 2 and shown["values"] == {"ok": {"count": 3, "hindsight": False}}


def test_nested_loop_positions_and_broadcast(repo: Path) -> None:
    run_script(repo, "train.py", "--kwargs", "epochs=2")
    df = git_flor.dataframe("loss", "val", "lr", repo=pygit2.Repository(str(repo)))
    assert list(df.columns) == ["run", "commit", "tstamp", "script", "epoch", "step", "loss", "val", "lr"]
    assert df[["epoch", "step"]].to_numpy().tolist() == [[e, s] for e in range(2) for s in range(4)]
    assert df["epoch"].dtype == "Int64"
    # val is logged once per epoch: it fills that epoch's step rows; lr fills every row of the run.
    assert df.groupby("epoch")["val"].nunique().tolist() == [1, 1]
    assert (df["lr"] == 0.1).all()
    vals = git_flor.dataframe("val", repo=pygit2.Repository(str(repo)))
    assert list(vals.columns) == ["run", "commit", "tstamp", "script", "epoch", "val"]
    assert vals["epoch"].tolist() == [0, 1]
    assert df.loc[df["epoch"] == 1, "val"].iloc[0] == vals["val"].iloc[1]


def test_log_records_iterated_scalar_values_in_the_records(repo: Path) -> None:
    (repo / "it.py").write_text(
        "import git_flor as flor\nfor lr in flor.loop('sweep', [0.1, 0.01]):\n    flor.log('x', lr * 2)\n"
    )
    run_script(repo, "it.py")
    logs = git(repo, "show", f"{shadow_tip(repo)}:logs.jsonl").splitlines()
    assert [json.loads(line)["pos"] for line in logs] == [[["sweep", 0, 0.1]], [["sweep", 1, 0.01]]]


def test_log_returns_its_value_and_echoes_unless_quiet(repo: Path) -> None:
    (repo / "echo.py").write_text("import git_flor as flor\nassert flor.log('a', 5) == 5\n")
    loud = run_script(repo, "echo.py", env={"FLOR_QUIET": "0"})
    assert "a: 5" in loud.stdout
    quiet = run_script(repo, "echo.py", env={"FLOR_QUIET": "1"})
    assert quiet.stdout == ""


@pytest.mark.parametrize(
    ("default", "given", "expected"),
    [(0.1, "5e-4", 5e-4), (3, "7", 7), (True, "false", False), (False, "yes", True), ("adam", "sgd", "sgd")],
)
def test_kwargs_cast_to_the_default_type(repo: Path, default: object, given: str, expected: object) -> None:
    (repo / "args.py").write_text(
        f"import git_flor as flor\nv = flor.arg('p', {default!r})\nprint(repr(v))\n"
    )
    out = run_script(repo, "args.py", "--kwargs", f"p={given}", env={"FLOR_QUIET": "1"})
    assert out.stdout.strip() == repr(expected)
    runs = json.loads(flor(repo, "runs", "--format", "json").stdout)
    assert runs[-1]["args"] == {"p": expected}


def test_kwargs_bad_cast_is_one_line_and_exit_2(repo: Path) -> None:
    out = run_script(repo, "train.py", "--kwargs", "epochs=three", check=False)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert "flor.arg('epochs')" in out.stderr and "'three' is not a valid int" in out.stderr
    out = run_script(repo, "train.py", "--kwargs", "epochs", check=False)
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "--kwargs expects name=value pairs" in out.stderr
    assert json.loads(flor(repo, "runs", "--format", "json").stdout) == []  # nothing ran: no run
    assert git(repo, "for-each-ref", "refs/flor/live/") == ""


def test_a_misspelled_kwargs_name_is_named_with_the_declared_args(repo: Path) -> None:
    out = run_script(repo, "train.py", "--kwargs", "lrr=0.5")
    assert "lrr=0.5" in out.stderr and "did you mean lr?" in out.stderr
    assert "declares: lr, epochs" in out.stderr


def test_kwargs_are_removed_from_argv_for_argparse(repo: Path) -> None:
    (repo / "ap.py").write_text(textwrap.dedent(
        """\
        import argparse
        import git_flor as flor
        p = argparse.ArgumentParser()
        p.add_argument("--depth", type=int, default=2)
        a = p.parse_args()
        flor.log("depth", a.depth)
        flor.log("lr", flor.arg("lr", 0.1))
        """
    ))
    run_script(repo, "ap.py", "--depth", "5", "--kwargs", "lr=0.5")
    df = git_flor.dataframe("depth", "lr", repo=pygit2.Repository(str(repo)))
    assert df[["depth", "lr"]].to_numpy().tolist() == [[5, 0.5]]
    meta = json.loads(git(repo, "show", f"{shadow_tip(repo)}:run.json"))
    assert meta["argv"] == ["ap.py", "--depth", "5", "--kwargs", "lr=0.5"]


def test_uncommitted_edits_are_in_the_snapshot_and_user_state_is_untouched(repo: Path) -> None:
    edited = (repo / "train.py").read_text().replace("range(4)", "range(2)")
    (repo / "train.py").write_text(edited)
    (repo / "data").mkdir()
    (repo / "data" / "x.bin").write_bytes(b"ignored input")
    (repo / "notes.txt").write_text("untracked")
    (repo / "staged.py").write_text("x = 1\n")
    git(repo, "add", "staged.py")
    (repo / "staged.py").write_text("x = 2  # edited after staging\n")
    before = user_state(repo)
    run_script(repo)
    assert user_state(repo) == before
    tip = shadow_tip(repo)
    assert git(repo, "show", f"{tip}:src/train.py") == edited
    assert git(repo, "show", f"{tip}:src/staged.py") == "x = 2  # edited after staging\n"
    listing = git(repo, "ls-tree", "-r", "--name-only", f"{tip}:src").split()
    assert sorted(listing) == [".gitignore", "staged.py", "train.py"]  # untracked/ignored files are not
    meta = json.loads(git(repo, "show", f"{tip}:run.json"))
    assert meta["dirty"] is True and meta["status"] == "ok"
    assert meta["commit"] == git(repo, "rev-parse", "HEAD").strip()
    assert meta["checkpointing"] == {"w": "numpy.ndarray"}
    # Shadow commit: previous shadow commit first, the user's HEAD second.
    parents = git(repo, "rev-list", "--parents", "-n1", tip).split()[1:]
    assert parents[1] == meta["commit"]


def test_clean_run_is_not_dirty_and_note_is_on_head(repo: Path) -> None:
    run_script(repo)
    head = git(repo, "rev-parse", "HEAD").strip()
    note = git(repo, "notes", "--ref=flor", "show", head).splitlines()
    assert len(note) == 1
    line = json.loads(note[0])
    assert line["status"] == "ok" and line["dirty"] is False and line["script"] == "train.py"
    assert line["args"] == {"lr": 0.1, "epochs": 3}
    assert set(line["final"]) == {"loss", "val"}


def test_detached_head_is_recorded(repo: Path) -> None:
    head = git(repo, "rev-parse", "HEAD").strip()
    git(repo, "checkout", "-q", "--detach")
    run_script(repo)
    meta = json.loads(git(repo, "show", f"{shadow_tip(repo)}:run.json"))
    assert meta["commit"] == head and meta["branch"] is None


def test_flor_commit_writes_now_and_starts_a_new_run(repo: Path) -> None:
    (repo / "nb.py").write_text(
        "import git_flor as flor\nflor.log('a', 1)\nassert flor.commit()\nflor.log('a', 2)\n"
    )
    run_script(repo, "nb.py")
    df = git_flor.dataframe("a", repo=pygit2.Repository(str(repo)))
    assert df["a"].tolist() == [1, 2] and df["run"].nunique() == 2


def test_failed_run_is_recorded_with_the_exception_type(repo: Path) -> None:
    (repo / "boom.py").write_text(
        "import git_flor as flor\nflor.log('before', 1)\nraise ValueError('diverged')\n"
    )
    out = run_script(repo, "boom.py", check=False)
    assert out.returncode == 1 and "ValueError: diverged" in out.stderr
    runs = json.loads(flor(repo, "runs", "--format", "json").stdout)
    assert runs[0]["status"] == "failed"
    show = json.loads(flor(repo, "show", runs[0]["run"], "--format", "json").stdout)
    assert show["error"] == "ValueError: diverged"
    assert git_flor.dataframe("before", repo=pygit2.Repository(str(repo)))["before"].tolist() == [1]


def test_outside_a_repository_the_script_runs_and_says_nothing_is_recorded(tmp_path: Path) -> None:
    (tmp_path / "s.py").write_text("import git_flor as flor\nprint(flor.log('a', 1))\n")
    out = run_script(tmp_path, "s.py")
    assert out.stdout.strip() == "1"
    assert "not a git repository" in out.stderr and "NOT recorded" in out.stderr


def test_dataframe_dtypes_for_mixed_runs(repo: Path) -> None:
    (repo / "m.py").write_text("import git_flor as flor\nflor.log('m', flor.arg('v', 1))\n")
    run_script(repo, "m.py")
    run_script(repo, "m.py", "--kwargs", "v=2")
    df = git_flor.dataframe("m", repo=pygit2.Repository(str(repo)))
    assert df["m"].tolist() == [1, 2] and df["m"].dtype == "Int64"
    assert isinstance(df, pd.DataFrame)


def test_nan_is_not_missing_and_json_is_strict(repo: Path) -> None:
    (repo / "nan.py").write_text(textwrap.dedent(
        """\
        import git_flor as flor
        for epoch in flor.loop("epoch", range(4)):
            if epoch == 0:
                flor.log("x", float("nan"))
            elif epoch == 1:
                flor.log("x", float("inf"))
            elif epoch == 2:
                flor.log("x", [float("-inf"), 1.0])
            flor.log("y", epoch)
        """
    ))
    run_script(repo, "nan.py")
    out = flor(repo, "log", "x", "y", "--format", "json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout, parse_constant=lambda c: pytest.fail(f"non-strict JSON: {c}"))
    assert [r["x"] for r in rows] == ["NaN", "Infinity", ["-Infinity", 1.0], None]
    strict = {"parse_constant": lambda c: pytest.fail(f"non-strict JSON: {c}")}
    jsonl = flor(repo, "log", "x", "--format", "jsonl").stdout.splitlines()
    assert [json.loads(line, **strict)["x"] for line in jsonl][:2] == ["NaN", "Infinity"]
    table = flor(repo, "log", "x", "y").stdout.splitlines()
    assert table[1].split()[-2:] == ["nan", "0"] and table[4].split()[-1] == "3"
    assert len(table[4].split()) == len(table[1].split()) - 1  # missing: an empty cell
    csv = flor(repo, "log", "x", "y", "--format", "csv").stdout.splitlines()
    assert [line.split(",")[-2] for line in csv[1:3]] == ["nan", "inf"] and csv[4].endswith(",,3")
    df = git_flor.dataframe("y", repo=pygit2.Repository(str(repo)))  # the Python API: float64 as before
    assert df["y"].tolist() == [0, 1, 2, 3]


def test_a_value_holding_a_records_shape_is_one_record_and_lines_say_their_kind(repo: Path) -> None:
    """Records are cut from one encoder call per flush; a value that looks like the cut must not split.

    Also: old ``logs.jsonl`` lines (no ``kind``, written before records said theirs) still read.
    """
    tricky = [{"a": 1}, {"kind": "rec", "name": "forged", "value": 0, "pos": []}]
    (repo / "tricky.py").write_text(textwrap.dedent(
        f"""\
        import git_flor as flor
        for epoch in flor.loop("epoch", range(3)):
            flor.log("t", {tricky!r})
            flor.log("x", float(epoch))
        """
    ))
    assert run_script(repo, "tricky.py").returncode == 0
    shadow = pygit2.Repository(str(repo))[shadow_tip(repo)]
    lines = shadow.tree["logs.jsonl"].data.decode().splitlines()
    assert [json.loads(line)["kind"] for line in lines] == ["rec"] * 6
    assert [json.loads(line)["name"] for line in lines] == ["t", "x"] * 3
    rows = json.loads(flor(repo, "log", "t", "x", "--format", "json").stdout)
    assert [r["t"] for r in rows] == [tricky] * 3 and [r["x"] for r in rows] == [0.0, 1.0, 2.0]

    from git_flor.storage.records import decode_records

    legacy = b'{"name":"x","value":NaN,"pos":[["epoch",0,null]]}\n{"t":"iter","seq":0,"dt":0.1}\n'
    (record,) = decode_records(legacy)  # the event line is not a record (a warning says it was skipped)
    assert record[0] == "x" and math.isnan(record[1]) and record[2] == (("epoch", 0, None),)
