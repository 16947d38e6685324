"""The run's record formats, shared by the journal, the shadow branch and the index.

Plain JSON, no pygit2: the runtime imports this module on the training path.
A run is three things: ``run.json`` (who/what/when/how it ended), ``logs.jsonl``
(one line per ``flor.log`` call with its loop position) and ``loops.json`` (wall
times of the outermost loop, which replay's cost model reads).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

RUN_FILE = "run.json"
LOGS_FILE = "logs.jsonl"
LOOPS_FILE = "loops.json"
SRC_DIR = "src"

#: One loop frame of a record's position: (loop name, 0-based index, iterated value or None).
Frame = tuple[str, int, Any]
#: One ``flor.log`` call: (name, value, position).
Record = tuple[str, Any, tuple[Frame, ...]]

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


@dataclass
class RunData:
    """Everything a run writes; built live by the runtime or rebuilt from a journal."""

    meta: dict[str, Any]
    records: list[Record] = field(default_factory=list)
    loops: list[dict[str, Any]] = field(default_factory=list)
    #: iteration → manifest entry ({"loop", "objects": {name: Pointer}, "unsaved", "seconds"})
    checkpoints: dict[int, dict[str, Any]] = field(default_factory=dict)
    #: ``logs.jsonl`` already encoded (the journal's record lines), else encoded from ``records``
    logs: bytes | None = None

    @property
    def run_id(self) -> str:
        return self.meta["id"]

    def final_values(self) -> dict[str, Any]:
        """The last value of each logged name: the note's at-a-glance summary."""
        out: dict[str, Any] = {}
        for name, value, _ in self.records:
            out[name] = value
        return out


def encode_record(record: Record) -> str:
    """One ``logs.jsonl`` line: ``{"name":…,"value":…,"pos":[[loop,index,value],…]}``.

    Built by hand rather than through a dict and ``json.dumps``: this runs once per
    ``flor.log`` call, and the common values (floats, ints, None) need no encoder.
    """
    name, value, pos = record
    frames = ",".join([f"[{_string(f[0])},{f[1]},{_value(f[2])}]" for f in pos])
    return f'{{"name":{_string(name)},"value":{_value(value)},"pos":[{frames}]}}'


def encode_records(records: Iterable[Record]) -> bytes:
    return "".join([encode_record(r) + "\n" for r in records]).encode()


def _value(value: Any) -> str:
    kind = type(value)
    if kind is float and -_INF < value < _INF:  # NaN and infinities: the encoder's spelling
        return float.__repr__(value)
    if kind is int:
        return int.__repr__(value)
    if value is None:
        return "null"
    return _dumps(value)


_INF = float("inf")
_string = json.encoder.encode_basestring  # type: ignore[attr-defined]


def decode_records(data: bytes, *, origin: str = "") -> list[Record]:
    """Parse ``logs.jsonl`` into records; a corrupt line is skipped with a warning."""
    return [_record(obj) for obj in decode_lines(data, origin=origin)]


def decode_lines(data: bytes, *, origin: str = "") -> list[dict[str, Any]]:
    """Parse ``logs.jsonl`` into its JSON objects, checked for shape, never crashing.

    The whole blob is parsed as one JSON array first (one C-level parse instead of
    a call per line: the cold query index reads a million records this way).
    """
    lines = [line for line in data.splitlines() if line.strip()]
    try:
        objs = json.loads(b"[" + b",".join(lines) + b"]")
        if all(_well_formed(o) for o in objs):
            return objs
    except ValueError:
        pass
    out = []
    for lineno, line in enumerate(lines, 1):
        try:
            obj = json.loads(line)
        except ValueError:
            obj = None
        if _well_formed(obj):
            out.append(obj)
        else:
            warn(f"skipping corrupt log record {origin}:{lineno}")
    return out


def _well_formed(obj: Any) -> bool:
    return (
        type(obj) is dict
        and type(obj.get("name")) is str
        and "value" in obj
        and type(obj.get("pos")) is list
        and all(type(f) is list and len(f) >= 2 and type(f[0]) is str and type(f[1]) is int
                and 0 <= f[1] < _INT64 for f in obj["pos"])
    )


_INT64 = 2**63  # loop positions are int64 in the query index


def _record(obj: dict[str, Any]) -> Record:
    return (obj["name"], obj["value"], tuple((f[0], f[1], f[2] if len(f) > 2 else None) for f in obj["pos"]))


def dumps(obj: Any) -> str:
    return _dumps(obj)


def warn(message: str) -> None:
    print(f"git-flor: warning: {message}", file=sys.stderr)
