"""The run's record formats, shared by the journal, the shadow branch and the index.

Plain JSON, no pygit2: the runtime imports this module on the training path.
A run is three things: ``run.json`` (who/what/when/how it ended), ``logs.jsonl``
(one line per ``flor.log`` call with its loop position) and ``loops.json`` (wall
times of the outermost loop, which replay's cost model reads).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
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
    name, value, pos = record
    return _dumps({"name": name, "value": value, "pos": [list(f) for f in pos]})


def encode_records(records: Iterable[Record]) -> bytes:
    return "".join(encode_record(r) + "\n" for r in records).encode()


def decode_records(data: bytes, *, origin: str = "") -> Iterator[Record]:
    """Parse ``logs.jsonl``; a corrupt line is skipped with a warning, never a crash."""
    for lineno, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            pos = tuple((str(f[0]), int(f[1]), f[2] if len(f) > 2 else None) for f in obj["pos"])
            yield (str(obj["name"]), obj["value"], pos)
        except (ValueError, KeyError, TypeError, IndexError):
            warn(f"skipping corrupt log record {origin}:{lineno}")


def dumps(obj: Any) -> str:
    return _dumps(obj)


def warn(message: str) -> None:
    print(f"git-flor: warning: {message}", file=sys.stderr)
