"""What a run's ``run.json`` must look like to be used: the trust check on teammates' data.

Runs arrive from other clones with a plain ``git fetch``; one malformed field
(``"start": "abc"``, ``"args": [...]``) must cost that run, not every command of
every clone. So every ``run.json`` read from git passes :func:`check_meta`
first: a field git-flor uses must have its type, unknown keys are ignored (a
newer git-flor may add some; ``format`` says which layout wrote it), and the
values later used as paths or commands — the run id, ``cwd``, ``script``,
``argv`` — are checked so a crafted run cannot point replay outside its scratch
directory. Replaying a teammate's run still executes their code and loads their
checkpoints (pickles): trust the people you fetch from (README, "Trust").
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Any

#: The layout of ``run.json`` this git-flor writes. Readers accept older and newer
#: formats alike: fields are only ever added, and unknown ones are ignored.
RUN_FORMAT = 1

#: Run ids name files and refs (``refs/flor/ckpt/<id>``, ``journal/<id>.jsonl``).
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_HEX = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?")
#: Loop positions are stored as int64 in the query index.
INT64 = 2**63


class BadRecord(ValueError):
    """A record read from git does not have the shape git-flor needs; the message says which field."""


def valid_run_id(value: object) -> bool:
    return isinstance(value, str) and RUN_ID.fullmatch(value) is not None


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _relative_path(value: object) -> bool:
    if not isinstance(value, str) or not value or "\0" in value:
        return False
    path = PurePosixPath(value)
    return not path.is_absolute() and ".." not in path.parts


# field → (check, what it must be); absent fields are fine unless listed in _REQUIRED.
_FIELDS: dict[str, tuple[Any, str]] = {
    "id": (valid_run_id, "a run id (letters, digits, '-', '_')"),
    "format": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "a positive integer"),
    "start": (_number, "a number (seconds since the epoch)"),
    "end": (lambda v: v is None or _number(v), "a number"),
    "duration": (lambda v: v is None or _number(v), "a number"),
    "status": (lambda v: isinstance(v, str), "a string"),
    "dirty": (lambda v: v is None or isinstance(v, bool), "true or false"),
    "args": (lambda v: isinstance(v, dict) and all(isinstance(k, str) for k in v), "an object"),
    "argv": (lambda v: isinstance(v, list) and all(isinstance(a, str) and "\0" not in a for a in v),
             "a list of strings"),
    "commit": (lambda v: v is None or (isinstance(v, str) and _HEX.fullmatch(v) is not None),
               "a commit id"),
    "tree": (lambda v: isinstance(v, str) and _HEX.fullmatch(v) is not None, "a tree id"),
    "cwd": (lambda v: v == "." or _relative_path(v), "a relative path inside the repository"),
    "script": (lambda v: isinstance(v, str) and (v.startswith("<") or _relative_path(v) or v.startswith("/")),
               "a path"),
    "replay_of": (lambda v: v is None or valid_run_id(v), "a run id"),
    "warnings": (lambda v: isinstance(v, list) and all(isinstance(w, str) for w in v), "a list of strings"),
    "epochs": (lambda v: v is None or isinstance(v, list), "a list"),
}
_REQUIRED = ("id",)


def check_meta(meta: object) -> dict[str, Any]:
    """``meta`` if it is a usable ``run.json``; else :class:`BadRecord` naming the field."""
    if not isinstance(meta, dict):
        raise BadRecord("run.json is not a JSON object")
    for key in _REQUIRED:
        if key not in meta:
            raise BadRecord(f"run.json has no {key!r}")
    for key, (ok, what) in _FIELDS.items():
        if key in meta and not ok(meta[key]):
            raise BadRecord(f"run.json field {key!r} is {_show(meta[key])}, not {what}")
    return meta


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
