"""Carry today's flor statements into past versions of a file (pure: source text in, out).

The only module of git-flor that imports tree-sitter; the replay engine and `git flor
propagate` call `propagate_source` / `Propagator.apply` with blobs they read from git.
"""

from .carry import Carried, Carrier
from .propagator import Propagator, propagate_source
from .result import Drift, Failure, Placement, PropagationError, PropagationResult
from .statements import Alias, flor_alias, flor_statement_names

__all__ = [
    "Alias",
    "Carried",
    "Carrier",
    "Drift",
    "Failure",
    "Placement",
    "PropagationError",
    "PropagationResult",
    "Propagator",
    "flor_alias",
    "flor_statement_names",
    "propagate_source",
]
