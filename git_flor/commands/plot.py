"""``git flor plot NAME...``: metrics across runs and versions as an image, or a text chart on a terminal."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence

from ..errors import EXIT_OK, UsageError
from ..query.plot import figure, panels, save, text_chart
from .common import open_session


def plot(
    names: Sequence[str],
    *,
    x: str | None = None,
    by: str = "run",
    rev: str | None = None,
    where: str | None = None,
    output: str | None = None,
    provenance: bool = False,
    text: bool = False,
) -> int:
    terminal = sys.stdout.isatty()
    if output is None and not (text or terminal):
        raise UsageError("say where to draw: -o FILE (.png, .svg or .pdf), or --text for a text chart")
    repo = open_session()
    found = panels(list(names), x=x, by=by, rev=rev, where=where, repo=repo)
    if output is not None:
        print(save(figure(found, provenance=provenance), output))
        return EXIT_OK
    width = shutil.get_terminal_size((100, 24)).columns
    sys.stdout.write(text_chart(found, width=min(width, 160), provenance=provenance, color=terminal))
    return EXIT_OK
