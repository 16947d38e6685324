"""What a propagation returns: the new source, where each statement went, and what could not
be placed (with a reason meant for the person who wrote the statement)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Placement:
    """Where one statement went: `from_line` in today's file, `to_line` in the result."""

    name: str
    from_line: int
    to_line: int
    anchor: str
    confidence: float


@dataclass(frozen=True)
class Failure:
    """A statement that was not placed, and why (phrased for the person who wrote it)."""

    name: str
    reason: str

    def __str__(self) -> str:
        return f"{self.name}: {self.reason}"


@dataclass(frozen=True)
class Drift:
    """A name the statement reads is computed by a different expression in the past version
    than today: the value logged there will not mean what it means today (`total` is the
    training total there, the validation total today). A warning, not a failure: the
    statement was placed and runs."""

    name: str
    variable: str
    past: str
    today: str

    def __str__(self) -> str:
        return (f"{self.name}: `{self.variable}` is computed differently in the past version "
                f"({self.past}) than today ({self.today})")


@dataclass
class PropagationResult:
    source: str
    placements: list[Placement] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    warnings: list[Drift] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


class PropagationError(ValueError):
    """Today's source itself cannot be analysed (it does not parse)."""
