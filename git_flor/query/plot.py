"""Metrics across versions as pictures: ``git flor plot`` and ``flor.plot`` (docs/design.md §5).

The table of §5 is turned into curves — one per run, or per group of runs
(``--by commit`` or ``--by ARG``: the mean at each x, with the min–max band) —
one panel per name. What x means:

- a loop name: the outermost loop by its index; a nested one as a running count
  of its positions within the run (``step`` across epochs: the global step); a
  value logged more finely than x is averaged over each x (per-step ``loss`` at
  ``--x epoch``: the epoch's mean loss);
- ``tstamp``: one point per run (its last value) at the run's start time — how a
  metric moved across versions.

Hindsight values are points like recorded ones; with ``provenance`` they are also
ringed. Drawing uses matplotlib's object API (``Figure`` without ``pyplot``), so no
GUI backend ever loads: headless by construction. This is the only module that
imports matplotlib (the optional ``[plot]`` extra); the terminal chart needs none.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..errors import UsageError
from .table import INFO, dataframe

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..storage.repo import Repository

FORMATS = ("png", "svg", "pdf")
TSTAMP = "tstamp"
#: Terminal glyphs, one per curve (cycled), and the ring for hindsight points.
GLYPHS = "●■▲◆+x*#"
RING = "○"
_ANSI = ["\x1b[34m", "\x1b[31m", "\x1b[32m", "\x1b[35m", "\x1b[33m", "\x1b[36m"]


@dataclass
class Curve:
    """One line of one panel: sorted x, the values, the run-to-run band (groups), which points are hindsight."""

    label: str
    x: np.ndarray
    y: np.ndarray
    hindsight: np.ndarray  # bool per point: a hindsight value went into it
    lo: np.ndarray | None = None
    hi: np.ndarray | None = None


@dataclass
class Panel:
    name: str
    xlabel: str
    curves: list[Curve]
    time_axis: bool  # x is a datetime64 array


def panels(
    names: tuple[str, ...] | list[str],
    *,
    x: str | None = None,
    by: str = "run",
    rev: str | None = None,
    where: str | None = None,
    repo: Repository | None = None,
) -> list[Panel]:
    """The curves to draw, one panel per name (no matplotlib: the terminal chart uses them too)."""
    if not names:
        raise UsageError("name at least one value to plot, e.g. `git flor plot val_acc`")
    out = []
    for name in dict.fromkeys(names):
        extra = [by] if by not in ("run", "commit") and by != name else []
        table = dataframe(name, *extra, rev=rev, where=where, provenance=True, repo=repo)
        out.append(_panel(table, name, x, by))
    return out


def _panel(table: pd.DataFrame, name: str, x: str | None, by: str) -> Panel:
    shown = {name, f"{name}@", by, f"{by}@"}
    dims = [c for c in table.columns if c not in INFO and c not in shown]
    rows = table[table[name].notna()]
    col = rows[name]
    if not (pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col)):
        raise UsageError(f"{name!r} holds values that are not numbers ({col.iloc[0]!r}); plot a numeric name")
    x = x or (dims[-1] if dims else TSTAMP)
    if x != TSTAMP and x not in dims:
        raise UsageError(f"{name!r} is not logged per {x!r}; --x can be: {', '.join([*dims, TSTAMP])}")
    points = pd.DataFrame({
        "run": rows["run"], "commit": rows["commit"], "tstamp": rows["tstamp"],
        "y": col.astype("float64"), "h": (rows[f"{name}@"] == "hindsight").to_numpy(),
        "g": _group_keys(rows, by),
    })
    points["o"] = pd.factorize(points["run"])[0]  # the table's run order (oldest first), kept through sorting
    if x == TSTAMP:
        points = points.groupby("run", sort=False).tail(1)  # rows are in loop order: the run's last value
        points = points.assign(x=points["tstamp"].dt.tz_localize(None))
        xlabel = "run start"
    else:
        upto = dims[: dims.index(x) + 1]
        for d in upto:
            points[d] = rows[d].to_numpy()
        points = points.groupby(["run", *upto], sort=False).agg(
            commit=("commit", "first"), tstamp=("tstamp", "first"), y=("y", "mean"), h=("h", "any"),
            g=("g", "first"), o=("o", "first")).reset_index()
        if x == dims[0]:
            points["x"] = points[x].astype("int64")
            xlabel = x
        else:  # a nested loop: a running count of its positions within the run
            points = points.sort_values(["o", *upto], kind="stable")
            points["x"] = points.groupby("run", sort=False).cumcount()
            xlabel = f"{x} (counted across {', '.join(upto[:-1])})"
    curves = _curves(points, by, x == TSTAMP)
    return Panel(name, xlabel, curves, x == TSTAMP)


def _group_keys(rows: pd.DataFrame, by: str) -> list[Any]:
    if by == "run":
        return list(rows["run"])
    if by == "commit":
        return list(rows["commit"].fillna(""))
    if by not in rows:
        raise UsageError(f"--by {by!r}: no such argument or value; use run, commit or an argument name")
    per_run = rows.groupby("run")[by].nunique(dropna=False)
    if (per_run > 1).any():
        raise UsageError(f"--by {by!r}: it changes within a run; group by a run-level argument (flor.arg)")
    return [None if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA else v
            for v in rows[by].astype(object)]


def _curves(points: pd.DataFrame, by: str, per_run_points: bool) -> list[Curve]:
    curves: list[Curve] = []
    if by == "run" and per_run_points:  # one point per run: a single line through them, in time order
        part = points.sort_values("x", kind="stable")
        return [Curve("each run's last value", part["x"].to_numpy(), part["y"].to_numpy(),
                      part["h"].to_numpy(dtype=bool))]
    if by == "run":
        for run, part in points.groupby("run", sort=False):
            part = part.sort_values("x", kind="stable")
            commit = str(part["commit"].iloc[0] or "")[:8]
            curves.append(Curve(f"{str(run)[:8]} @ {commit}", part["x"].to_numpy(), part["y"].to_numpy(),
                                part["h"].to_numpy(dtype=bool)))
        return curves
    keyed = points.assign(k=[repr(k) for k in points["g"]])
    order = sorted(dict.fromkeys(zip(keyed["k"], keyed["g"])), key=lambda kg: _sort_key(kg[1]))
    for k, g in order:
        part = keyed[keyed["k"] == k]
        runs = part["run"].nunique()
        label = str(g)[:8] if by == "commit" else f"{by}={'(none)' if g is None else g}"
        label += f" ({runs} run{'s' if runs != 1 else ''})"
        if per_run_points:  # one point per run: the group's runs in time order
            part = part.sort_values("x", kind="stable")
            curves.append(Curve(label, part["x"].to_numpy(), part["y"].to_numpy(), part["h"].to_numpy(dtype=bool)))
            continue
        agg = part.groupby("x").agg(y=("y", "mean"), lo=("y", "min"), hi=("y", "max"), h=("h", "any"),
                                    n=("run", "nunique")).reset_index()
        several = bool((agg["n"] > 1).any())
        curves.append(Curve(label, agg["x"].to_numpy(), agg["y"].to_numpy(), agg["h"].to_numpy(dtype=bool),
                            agg["lo"].to_numpy() if several else None, agg["hi"].to_numpy() if several else None))
    return curves


def _sort_key(value: Any) -> tuple[int, Any]:
    if value is None:
        return (2, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value)
    return (1, str(value))


# -- matplotlib -------------------------------------------------------------------------------


def figure(found: list[Panel], *, provenance: bool = False) -> Figure:
    """The panels drawn with matplotlib (the ``[plot]`` extra); each curve's artists carry gid ``flor-series-…``."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise UsageError(
            "drawing an image needs matplotlib: pip install 'git-flor[plot]' (or matplotlib); "
            "on a terminal, `git flor plot NAME` without -o draws a text chart"
        ) from None
    fig = Figure(figsize=(8, 2.8 * len(found) + 0.6), layout="constrained")
    axes = fig.subplots(len(found), 1, squeeze=False)[:, 0]
    for ax, panel in zip(axes, found):
        for i, curve in enumerate(panel.curves):
            gid = f"flor-series-{_slug(panel.name)}-{i}"
            (line,) = ax.plot(curve.x, curve.y, marker="." if len(curve.x) < 60 else None, label=curve.label,
                              gid=gid, linewidth=1.4)
            if curve.lo is not None and curve.hi is not None:
                ax.fill_between(curve.x, curve.lo, curve.hi, color=line.get_color(), alpha=0.15, linewidth=0)
            if provenance and curve.hindsight.any():
                ax.scatter(curve.x[curve.hindsight], curve.y[curve.hindsight], s=40, facecolors="none",
                           edgecolors=line.get_color(), linewidths=1.2, zorder=3, gid=f"{gid}-hindsight")
        if provenance and any(c.hindsight.any() for c in panel.curves):
            ax.scatter([], [], s=40, facecolors="none", edgecolors="black", label="hindsight (replayed)")
        ax.set_title(panel.name, loc="left", fontsize=10)
        ax.set_xlabel(panel.xlabel)
        ax.grid(True, alpha=0.3)
        if len(panel.curves) <= 12:
            ax.legend(fontsize=8, loc="best")
        else:
            ax.text(0.99, 0.02, f"{len(panel.curves)} series", transform=ax.transAxes, ha="right", fontsize=8)
        if panel.time_axis:
            fig.autofmt_xdate()
    return fig


def save(fig: Figure, output: str) -> str:
    """Write the figure in the format its extension names (png, svg, pdf)."""
    ext = Path(output).suffix.lower().lstrip(".")
    if ext not in FORMATS:
        raise UsageError(f"cannot tell the image format of {output!r}: end it in .png, .svg or .pdf")
    if Path(output).is_dir():
        raise UsageError(f"{output} is a directory; give a file name such as {output.rstrip('/')}/plot.png")
    fig.savefig(output, format=ext, dpi=120)
    return output


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


# -- the terminal chart -----------------------------------------------------------------------


def text_chart(found: list[Panel], *, width: int = 80, height: int = 12, provenance: bool = False,
               color: bool = False) -> str:
    """A compact chart in characters: one glyph per curve, y range on the left, x range below."""
    lines: list[str] = []
    for panel in found:
        lines += _text_panel(panel, width, height, provenance, color)
    return "\n".join(lines) + "\n"


def _text_panel(panel: Panel, width: int, height: int, provenance: bool, color: bool) -> list[str]:
    curves = [c for c in panel.curves if len(c.x)]
    if not curves:
        return [f"{panel.name}: no values"]
    xs = [_numeric(c.x, panel.time_axis) for c in curves]
    allx, ally = np.concatenate(xs), np.concatenate([c.y for c in curves])
    ok = np.isfinite(ally)
    x0, x1 = float(allx.min()), float(allx.max())
    y0, y1 = (float(ally[ok].min()), float(ally[ok].max())) if ok.any() else (0.0, 1.0)
    if y1 == y0:
        y0, y1 = y0 - 0.5, y1 + 0.5
    ylab = max(len(_num(y0)), len(_num(y1)))
    cols = max(10, width - ylab - 2)
    grid = [[" "] * cols for _ in range(height)]
    paint = [[-1] * cols for _ in range(height)]

    def cell(xv: float, yv: float) -> tuple[int, int]:
        c = 0 if x1 == x0 else round((xv - x0) / (x1 - x0) * (cols - 1))
        r = round((y1 - yv) / (y1 - y0) * (height - 1))
        return r, c

    fine = np.linspace(x0, x1, cols)
    for k, (curve, cx) in enumerate(zip(curves, xs)):  # the lines first, one dot per column ...
        good = np.isfinite(curve.y)
        if good.sum() > 1:
            inside = fine[(fine >= cx.min()) & (fine <= cx.max())]
            for xv, yv in zip(inside, np.interp(inside, cx[good], curve.y[good])):
                r, c = cell(xv, yv)
                grid[r][c], paint[r][c] = "·", k
    for k, (curve, cx) in enumerate(zip(curves, xs)):  # ... then every curve's points over them
        glyph = GLYPHS[k % len(GLYPHS)]
        for xv, yv, h in zip(cx, curve.y, curve.hindsight):
            if math.isfinite(yv):
                r, c = cell(xv, yv)
                grid[r][c], paint[r][c] = (RING if provenance and h else glyph), k
    out = [f"{panel.name}"]
    for r in range(height):
        label = _num(y1) if r == 0 else _num(y0) if r == height - 1 else ""
        row = "".join(_colored(ch, paint[r][c], color) for c, ch in enumerate(grid[r]))
        out.append(f"{label:>{ylab}} ┤{row}")
    left, right = _xlabel(x0, panel.time_axis), _xlabel(x1, panel.time_axis)
    out.append(" " * ylab + " └" + "─" * cols)
    out.append(" " * (ylab + 2) + left + right.rjust(cols - len(left)) + f"   x: {panel.xlabel}")
    legend = [f"{_colored(GLYPHS[k % len(GLYPHS)], k, color)} {c.label}" for k, c in enumerate(curves)]
    if provenance and any(c.hindsight.any() for c in curves):
        legend.append(f"{RING} hindsight")
    out.append("  " + "   ".join(legend))
    return out


def _numeric(x: np.ndarray, time_axis: bool) -> np.ndarray:
    if time_axis:
        return np.asarray(x, dtype="datetime64[ns]").astype("int64").astype("float64") / 1e9
    return np.asarray(x, dtype="float64")


def _num(v: float) -> str:
    return f"{v:.4g}"


def _xlabel(v: float, time_axis: bool) -> str:
    if time_axis:
        return str(pd.Timestamp(v, unit="s").strftime("%Y-%m-%d %H:%M"))
    return str(int(v)) if float(v).is_integer() else f"{v:.4g}"


def _colored(ch: str, k: int, color: bool) -> str:
    if not color or k < 0 or ch == " ":
        return ch
    return f"{_ANSI[k % len(_ANSI)]}{ch}\x1b[0m"


# -- the Python entry point -------------------------------------------------------------------


def plot(
    *names: str,
    x: str | None = None,
    by: str = "run",
    rev: str | None = None,
    where: str | None = None,
    provenance: bool = False,
    output: str | None = None,
    repo: Repository | None = None,
) -> Figure:
    """``flor.plot``: the figure (shown inline by Jupyter), also written to ``output`` when given."""
    fig = figure(panels(names, x=x, by=by, rev=rev, where=where, repo=repo), provenance=provenance)
    if output is not None:
        save(fig, output)
    return fig
