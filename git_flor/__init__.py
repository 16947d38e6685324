"""git-flor: multiversion hindsight logging for machine learning, built into git.

    import git_flor as flor
    lr = flor.arg("lr", 1e-3)
    for epoch in flor.loop("epoch", range(10)):
        flor.log("loss", train_one_epoch(lr))

Importing this module is light on purpose (it sits on every training script's
import path): the git bindings load at the first call, pandas only for ``dataframe``.
"""

from __future__ import annotations

from typing import Any

from .errors import FlorError
from .runtime.api import arg, checkpointing, commit, log, loop

__all__ = ["FlorError", "arg", "checkpointing", "commit", "dataframe", "log", "loop"]
__version__ = "0.1.0"


def dataframe(*names: str, **filters: Any) -> Any:
    """All runs of all versions as one pandas DataFrame (docs/design.md §5); see ``git flor log``."""
    from .query.table import dataframe as build

    return build(*names, **filters)
