"""How long the script spent importing modules before its outer loop (for replay's cost model).

A replay job is forked from a warm worker that imported the script's libraries once
(``replay.launcher.warm_imports``), so the code before the loop runs much faster
there than it did in the run when it imported something heavy on the way: building a
torch optimizer imports ``torch._dynamo`` (~0.8 s), a dataset class imports its
library. The recorded time from the script's start to its loop alone would make a
replay's estimate seconds too long per job; with each outermost import's time kept,
the planner subtracts what the warm worker will already have imported.

The clock wraps ``importlib._bootstrap._find_and_load``, which CPython calls only for a
module not yet in ``sys.modules``: an import that is already done costs nothing
extra, and the clock is taken off at the loop's start (and never set in a replay).
"""

from __future__ import annotations

import importlib._bootstrap as bootstrap  # type: ignore[import-not-found]
import threading
import time
from typing import Any

#: Imports shorter than this are not worth keeping (most modules load in a millisecond).
MIN_SECONDS = 0.005


class ImportClock:
    """Seconds spent in each outermost module load, while installed."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._local = threading.local()
        self._original: Any = None

    def install(self) -> None:
        if self._original is not None:
            return
        original = self._original = bootstrap._find_and_load
        local = self._local
        seconds = self.seconds

        def _find_and_load(name: str, import_: Any) -> Any:
            if getattr(local, "depth", 0):
                return original(name, import_)  # (nested in an outer import: counted there)
            local.depth = 1
            t0 = time.perf_counter()
            try:
                return original(name, import_)
            finally:
                local.depth = 0
                seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - t0

        bootstrap._find_and_load = _find_and_load

    def remove(self) -> dict[str, float]:
        """Take the clock off; the outermost imports that took ``MIN_SECONDS`` or more."""
        if self._original is not None:
            bootstrap._find_and_load = self._original
            self._original = None
        out = {k: round(v, 4) for k, v in self.seconds.items() if v >= MIN_SECONDS}
        self.seconds.clear()  # (a second run of the process, after flor.commit(), imported nothing yet)
        return out

