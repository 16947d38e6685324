"""git-flor: multiversion hindsight logging for machine learning, built into git.

    import git_flor as flor
    lr = flor.arg("lr", 1e-3)
    for epoch in flor.loop("epoch", range(10)):
        flor.log("loss", train_one_epoch(lr))

Importing this module is light on purpose (it sits on every training script's
import path): the git bindings load at the first call, pandas only for ``dataframe``.

Linux and macOS only (docs/design.md §9): elsewhere the import fails at once,
with one line saying so, rather than deep inside with a missing module.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

try:  # the crash journal's liveness rule needs POSIX file locks
    import fcntl  # noqa: F401
except ImportError:
    raise ImportError(
        f"git-flor runs on Linux and macOS (POSIX) only, not on {sys.platform}: it needs fcntl file locks"
    ) from None

from .errors import FlorError  # noqa: E402
from .runtime.api import _hindsight_failed as _hindsight_failed  # noqa: E402 - the replay guard calls it
from .runtime.api import _skip_call as _skip_call  # noqa: E402 - replay's skippable calls ask it
from .runtime.api import arg, checkpointing, commit, log, loop  # noqa: E402

__all__ = ["FlorError", "arg", "checkpointing", "commit", "dataframe", "load", "log", "loop", "plot"]
__version__ = "0.1.0"


def dataframe(*names: str, **filters: Any) -> Any:
    """All runs of all versions as one pandas DataFrame (docs/design.md §5); see ``git flor log``."""
    from .query.table import dataframe as build

    return build(*names, **filters)


def load(name: str, run: str | None = None, iter: int | Mapping[str, int] | None = None, into: Any = None) -> Any:
    """A checkpointed object of any run: restored into ``into`` in place (and returned), or its saved state.

    ``name`` is what the run registered with ``flor.checkpointing(name=...)`` (or a
    loop-carried variable); ``run`` a run id or unique prefix (default: the newest
    run that saved ``name``); ``iter`` the outer-loop iteration, ``{"epoch": 7}`` or
    ``7`` (default: the last saved one). The payload comes from this clone or, when
    only its manifest was pulled, from the ``flor.store`` (docs/design.md §1)::

        df = flor.dataframe("val_acc")
        best = df.loc[df["val_acc"].idxmax()]
        flor.load("model", run=best["run"], iter={"epoch": int(best["epoch"])}, into=net)
    """
    from .runtime.registry import load as restore

    return restore(name, run, iter, into)



def plot(*names: str, **options: Any) -> Any:
    """``git flor plot`` from Python: the matplotlib ``Figure`` (Jupyter shows it inline).

    Options as the command's: ``x``, ``by``, ``rev``, ``where``, ``provenance``, and
    ``output`` (a .png/.svg/.pdf to write). Needs matplotlib: ``pip install 'git-flor[plot]'``.
    """
    from .query.plot import plot as draw

    return draw(*names, **options)
