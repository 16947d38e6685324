"""Which files of a run's snapshot today's statements are carried into, and carrying them.

One place decides this for `git flor replay` (which re-executes the propagated snapshot) and
`git flor check propagate` (the CI gate that promises replay will be able to): if the two
chose files differently, a statement in an imported `model.py` that cannot be placed would
pass the gate and fail the replay. The rule: the run's script first, then every other Python
file of the snapshot that today's working tree also has and whose today's version holds one
of the requested statements (modules the script imports, wherever they are).

Pure like the rest of this package: files come in as text through the callables.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from .propagator import Propagator
from .result import PropagationError, PropagationResult
from .statements import flor_statement_names

Read = Callable[[str], "str | None"]


@dataclass
class Carried:
    """What carrying today's statements into one snapshot gave.

    `results` has every file something was to be carried into (placed or not); `sources`
    the files where some statement was placed, with those placed (what replay
    materialises: one statement's failure costs only its own values); `names` the
    requested names carried; `found` the requested names today's files of the
    snapshot hold at all (a name in neither is a typo or a statement since deleted); `problems` one line per statement (or file) that
    failed, prefixed with its path; `unreadable` the today's files among them that do not
    parse (the user's to fix before anything can be carried).
    """

    results: dict[str, PropagationResult] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)
    found: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class Carrier:
    """Today's files, each parsed once, carried into many snapshots (one per run/version).

    `names` None means every flor statement of today's files.
    """

    def __init__(self, today_of: Read, names: Sequence[str] | None = None) -> None:
        self.today_of = today_of
        self.names = list(names) if names is not None else None
        self._props: dict[str, tuple[Propagator | None, list[str], str | None]] = {}

    def _today(self, path: str) -> tuple[Propagator | None, list[str], str | None]:
        """(propagator, the requested names today's file has, why it cannot be read)."""
        got = self._props.get(path)
        if got is not None:
            return got
        text = self.today_of(path)
        here: list[str] = []
        prop: Propagator | None = None
        problem: str | None = None
        # A cheap text test before parsing: most files of a project hold no statement.
        if text is not None and (self.names is None or any(n in text for n in self.names)):
            found = flor_statement_names(text)
            here = found if self.names is None else [n for n in self.names if n in set(found)]
            if here:
                try:
                    prop = Propagator(text, here)
                except PropagationError as exc:
                    problem = f"today's {path} cannot be read: {exc}"
        got = self._props[path] = (prop, here, problem)
        return got

    @staticmethod
    def files(script: str, snapshot_paths: Iterable[str]) -> list[str]:
        """The order files are carried in: the script, then the snapshot's other files."""
        return [script] + [p for p in snapshot_paths if p != script]

    def carry(self, script: str, snapshot_paths: Iterable[str], past_of: Read,
              force: bool = False) -> Carried:
        """Carry today's statements into every file of one snapshot that has them today."""
        out = Carried()
        for path in self.files(script, snapshot_paths):
            prop, here, problem = self._today(path)
            if problem is not None:
                out.problems.append(problem)
                out.unreadable.append(problem)
                continue
            out.found.extend(n for n in here if n not in out.found)
            if prop is None:
                continue
            past = past_of(path)
            if past is None:
                continue
            result = prop.apply(past, force=force)
            out.results[path] = result
            out.problems.extend(f"{path}: {f}" for f in result.failures)
            # A statement's failure is its own: the others of the file are still carried.
            failed = {f.name for f in result.failures}
            placed = [n for n in here if n not in failed]
            if not placed:
                continue
            out.sources[path] = result.source
            out.names.extend(n for n in placed if n not in out.names)
        return out
