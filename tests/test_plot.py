"""`git flor plot` / `flor.plot`: real runs (and a real replay) drawn as PNG, SVG, PDF and text."""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

import git_flor
from tests.conftest import TRAIN, flor, git, isolate, run_script

pytest.importorskip("matplotlib")

W_NORM = '        flor.log("val", np.mean((X @ w - y) ** 2))\n'
TODAY = TRAIN.replace(W_NORM, W_NORM + '        flor.log("w_norm", float(np.linalg.norm(w)))\n')
assert TODAY != TRAIN


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Three runs on two commits (lr 0.1, 0.05; then 0.1 again with 4 epochs), and w_norm filled in by replay."""
    mp = pytest.MonkeyPatch()
    isolate(tmp_path_factory, mp)
    repo = tmp_path_factory.mktemp("plot") / "project"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "train.py").write_text(TRAIN)
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "v1")
    run_script(repo, "train.py")
    run_script(repo, "train.py", "--kwargs", "lr=0.05")
    (repo / "train.py").write_text(TRAIN.replace('flor.arg("epochs", 3)', 'flor.arg("epochs", 4)'))
    git(repo, "commit", "-qam", "v2: 4 epochs")
    run_script(repo, "train.py")
    (repo / "train.py").write_text(TODAY.replace('flor.arg("epochs", 3)', 'flor.arg("epochs", 4)'))
    out = flor(repo, "replay", "--apply", "w_norm", "--yes")
    assert out.returncode == 0, out.stderr
    yield repo
    mp.undo()


def series_ids(svg: Path, name: str) -> list[str]:
    root = ET.parse(svg).getroot()  # well-formed XML, an <svg> document
    assert root.tag.endswith("svg")
    return sorted({el.get("id") for el in root.iter() if re.fullmatch(rf"flor-series-{name}-\d+", el.get("id") or "")})


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_one_series_per_run_or_group_in_svg_png_and_pdf(history: Path, tmp_path: Path) -> None:
    out = flor(history, "plot", "val", "loss", "-o", str(tmp_path / "runs.svg"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(tmp_path / "runs.svg")
    assert len(series_ids(tmp_path / "runs.svg", "val")) == 3
    assert len(series_ids(tmp_path / "runs.svg", "loss")) == 3

    assert flor(history, "plot", "val", "--by", "lr", "-o", str(tmp_path / "lr.svg")).returncode == 0
    assert len(series_ids(tmp_path / "lr.svg", "val")) == 2  # lr 0.1 (two runs) and 0.05
    assert flor(history, "plot", "val", "--by", "commit", "--rev", "HEAD", "-o", str(tmp_path / "c.svg")).returncode == 0
    assert len(series_ids(tmp_path / "c.svg", "val")) == 1

    assert flor(history, "plot", "val", "loss", "-o", str(tmp_path / "runs.png")).returncode == 0
    width, height = png_size(tmp_path / "runs.png")
    assert width > 400 and height > width // 2  # two panels, stacked
    assert flor(history, "plot", "val", "-o", str(tmp_path / "runs.pdf")).returncode == 0
    assert (tmp_path / "runs.pdf").read_bytes()[:5] == b"%PDF-"


def test_x_axes_and_grouping_carry_the_tables_values(history: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(history)
    table = git_flor.dataframe("loss", "lr")
    fig = git_flor.plot("loss", x="epoch", by="lr")
    (ax,) = fig.axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"lr=0.05 (1 run)", "lr=0.1 (2 runs)"}
    one = table[table["lr"] == 0.05].groupby("epoch")["loss"].mean()  # per-step loss averaged per epoch
    assert list(lines["lr=0.05 (1 run)"].get_xdata()) == list(one.index)
    assert list(lines["lr=0.05 (1 run)"].get_ydata()) == pytest.approx(list(one), rel=0, abs=0)

    step = git_flor.plot("loss").axes[0]  # default x: the finest loop, counted across epochs
    assert [len(line.get_xdata()) for line in step.get_lines()] == [12, 12, 16]
    assert step.get_xlabel() == "step (counted across epoch)"

    history_fig = git_flor.plot("val", x="tstamp")  # each run's last value at its start time
    (line,) = history_fig.axes[0].get_lines()
    finals = table.groupby("run", sort=False).tail(1)
    vals = git_flor.dataframe("val").groupby("run", sort=False)["val"].last()
    assert len(line.get_xdata()) == len(finals) == 3
    assert list(line.get_ydata()) == list(vals)


def test_hindsight_values_are_drawn_like_recorded_ones_and_ringed_with_provenance(
    history: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(history)
    table = git_flor.dataframe("w_norm", provenance=True)
    assert set(table["w_norm@"]) == {"hindsight"}
    plain = git_flor.plot("w_norm").axes[0]
    assert [list(line.get_ydata()) for line in plain.get_lines()] == [
        list(part["w_norm"]) for _, part in table.groupby("run", sort=False)
    ]
    assert not plain.collections  # no rings without --provenance
    marked = git_flor.plot("w_norm", provenance=True, output=str(tmp_path / "h.svg")).axes[0]
    rings = [c for c in marked.collections if (c.get_gid() or "").endswith("-hindsight")]
    assert sum(len(c.get_offsets()) for c in rings) == len(table)
    assert "hindsight (replayed)" in [t.get_text() for t in marked.get_legend().get_texts()]
    svg = (tmp_path / "h.svg").read_text()
    assert len(series_ids(tmp_path / "h.svg", "w_norm")) == 3 and "-hindsight" in svg


def test_text_chart_and_one_line_errors(history: Path, tmp_path: Path) -> None:
    out = flor(history, "plot", "val", "--text", "--provenance")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "val" and "x: epoch" in out.stdout
    runs = flor(history, "runs", "--format", "csv").stdout.splitlines()[1:]
    legend = lines[-1]
    assert all(r.split(",")[0][:8] in legend for r in runs)
    assert sum("┤" in line for line in lines) == 12 and "\x1b[" not in out.stdout  # no colour off a terminal
    w = flor(history, "plot", "w_norm", "--text", "--provenance")
    assert "○" in w.stdout and "○ hindsight" in w.stdout.splitlines()[-1]

    for args, says in (
        (["val"], "-o FILE"),  # stdout is not a terminal and no -o
        (["val", "--x", "batch", "--text"], "--x can be: epoch, tstamp"),
        (["val", "--by", "nope", "--text"], "no run has a value named 'nope'"),
        (["val", "-o", str(tmp_path / "x.gif")], "end it in .png, .svg or .pdf"),
        (["nope", "--text"], "no run has a value named 'nope'"),
    ):
        res = flor(history, "plot", *args)
        assert res.returncode == 2 and says in res.stderr and len(res.stderr.splitlines()) == 1, (args, res.stderr)
    assert not (tmp_path / "x.gif").exists()


def test_without_matplotlib_the_text_chart_works_and_an_image_says_how_to_get_it(
    history: Path, tmp_path: Path
) -> None:
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['matplotlib'] = None\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    run = lambda *a: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "git_flor", "plot", *a], cwd=history, env=env, capture_output=True, text=True)
    assert run("val", "--text").returncode == 0
    res = run("val", "-o", str(tmp_path / "x.png"))
    assert res.returncode == 2 and "pip install 'git-flor[plot]'" in res.stderr
