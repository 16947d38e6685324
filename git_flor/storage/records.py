"""The run's record formats, shared by the journal, the shadow branch and the index.

Plain JSON, no pygit2: the runtime imports this module on the training path.
A run is three things: ``run.json`` (who/what/when/how it ended), ``logs.jsonl``
(one line per ``flor.log`` call with its loop position) and ``loops.json`` (wall
times of the outermost loop, which replay's cost model reads).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict

RUN_FILE = "run.json"
LOGS_FILE = "logs.jsonl"
LOOPS_FILE = "loops.json"
#: State fingerprints at outer-loop iteration ends: the witnesses verified replay checks.
WITNESS_FILE = "witness.json"
#: How fingerprints are encoded (``runtime.fingerprint``): 1 sampled RNG states like any tensor
#: and hashed dicts in key order; 2 hashes RNG states in full and dicts whatever their order.
#: A replay fingerprints in the format of the run it checks against.
WITNESS_FORMAT = 2
#: A replay's values that a full re-execution could not reproduce witnesses for (not deterministic).
UNVERIFIED_FILE = "unverified.jsonl"
SRC_DIR = "src"

#: One loop frame of a record's position: (loop name, 0-based index, iterated value or None),
#: plus, for the outer loop entered again (a second training phase), which entry (1, 2, ...);
#: the first entry's frames have no fourth element, so runs recorded before entries look the same.
Frame = tuple[Any, ...]
#: One ``flor.log`` call: (name, value, position).
Record = tuple[str, Any, tuple[Frame, ...]]

#: The ``kind`` of a record line (journal events say theirs under ``"t"``).
REC = "rec"

#: Every JSON line git-flor writes: the standard library's encoder with fixed separators,
#: non-ASCII kept as UTF-8, NaN/Infinity spelled as Python's json module reads them back.
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
#: The same, for records: their values are fresh JSON trees (``runtime.values`` copies
#: every list and dict), never cyclic, so the encoder's cycle bookkeeping is skipped.
_dumps_records = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, check_circular=False).encode


class LoopTiming(TypedDict, total=False):
    """One ``flor.loop`` of a run, as ``loops.json`` holds it (replay's cost model reads these)."""

    name: str
    #: an entry of the outer loop (its first top-level loop's name): which one, and the flat
    #: number of its first iteration (checkpoints and fingerprints are keyed by flat numbers);
    #: absent in runs recorded before entries were keyed, and in other top-level loops
    entry: int
    offset: int
    start: float  # wall clock when the loop began
    iters: list[float]  # seconds of each iteration, in order
    #: outermost loop: seconds of each iteration spent in the nested loops directly in its body
    #: (or in helpers it calls) — what a skip does not run (absent in older runs)
    inner: list[float]
    end: float | None  # wall clock when it ended (None while running)
    ckpts: list[int]  # iterations with a checkpoint (outermost loop)
    broke: float  # present when the body left the loop part-way through one more iteration (its seconds)


@dataclass
class RunData:
    """Everything a run writes; built live by the runtime or rebuilt from a journal."""

    meta: dict[str, Any]
    records: list[Record] = field(default_factory=list)
    loops: list[LoopTiming] = field(default_factory=list)
    #: iteration → its checkpoint (a :class:`.checkpoints.IterationCheckpoint`)
    checkpoints: dict[int, dict[str, Any]] = field(default_factory=dict)
    #: a replay's values that are not verified (kept apart from ``records``, see UNVERIFIED_FILE)
    unverified: list[Record] = field(default_factory=list)
    #: outer-loop iteration → state fingerprint at its end (component → digest)
    fingerprints: dict[int, dict[str, str]] = field(default_factory=dict)
    #: outer-loop iteration → fingerprints where each nested loop of its body ended
    nested_fps: dict[int, list[dict[str, str]]] = field(default_factory=dict)
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
    """One ``logs.jsonl`` line: ``{"kind":"rec","name":…,"value":…,"pos":[[loop,index,value],…]}``."""
    name, value, pos = record
    return _dumps_records({"kind": REC, "name": name, "value": value, "pos": pos})


#: Where one record ends and the next begins when a batch is encoded as one JSON array.
_BETWEEN = '},{"kind":"rec",'


def encode_lines(records: Sequence[Record]) -> str:
    """Records as ``logs.jsonl`` text, a line each (what the journal appends and the run keeps).

    One encoder call for the whole batch (a call per record would cost the encoder's
    set-up each time, on the training path): the array is cut into lines where one
    record object ends and the next begins. Every boundary looks like ``_BETWEEN``;
    a value can contain that text only as structure (a string escapes its quotes),
    so when it occurs more often than there are boundaries, the batch is encoded
    record by record instead.
    """
    if not records:
        return ""
    text = _dumps_records([{"kind": REC, "name": n, "value": v, "pos": p} for n, v, p in records])[1:-1]
    if text.count(_BETWEEN) == len(records) - 1:
        return text.replace(_BETWEEN, '}\n{"kind":"rec",') + "\n"
    return "".join([encode_record(r) + "\n" for r in records])


def encode_records(records: Iterable[Record]) -> bytes:
    return encode_lines(list(records)).encode()


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
        if all(is_record(o) for o in objs):
            return objs
    except ValueError:
        pass
    out = []
    for lineno, line in enumerate(lines, 1):
        try:
            obj = json.loads(line)
        except ValueError:
            obj = None
        if is_record(obj):
            out.append(obj)
        else:
            warn(f"skipping corrupt log record {origin}:{lineno}")
    return out


def is_record(obj: Any) -> bool:
    """A record line's object: kind ``rec`` (or no kind: lines written before records said it)."""
    return type(obj) is dict and obj.get("kind", REC) == REC and "t" not in obj and _well_formed(obj)


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
    return (obj["name"], obj["value"], frames(obj["pos"]))


def frames(pos: list[Any]) -> tuple[Frame, ...]:
    """A stored position as frames: (loop, index, value) and the entry of a re-entered outer loop."""
    return tuple((f[0], f[1], f[2] if len(f) > 2 else None) + ((f[3],) if len(f) > 3 and f[3] else ())
                 for f in pos)


def entry_of(frame: Frame | list[Any]) -> int:
    """Which entry of the outer loop a position's first frame belongs to (0: the first)."""
    return int(frame[3]) if len(frame) > 3 and frame[3] else 0


def position_key(pos: tuple[Frame, ...] | list[Any]) -> tuple[tuple[Any, ...], ...]:
    """A position as a key: (loop, index) per frame, and the entry of a re-entered outer loop.

    Two phases of one ``flor.loop("epoch", ...)`` both log at epoch 0; their values are
    different positions, and a run of one entry keys exactly as before entries existed.
    """
    return tuple((f[0], f[1], int(f[3])) if len(f) > 3 and f[3] else (f[0], f[1]) for f in pos)


def position_order(pos: tuple[Frame, ...] | list[Any]) -> tuple[int, ...]:
    """Loop order of positions: the outer loop's entry, then each frame's index."""
    return (entry_of(pos[0]), *(f[1] for f in pos)) if pos else ()


def dumps(obj: Any) -> str:
    return _dumps(obj)


def warn(message: str) -> None:
    print(f"git-flor: warning: {message}", file=sys.stderr)
