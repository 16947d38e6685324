"""``git flor ckpt list RUN`` and ``git flor ckpt export RUN --name N [--iter loop=I] -o FILE``.

The checkpoints of a run are its model registry (``runtime/registry.py``): list
what was saved, and write one saved object as a plain file — ``torch.load``,
``numpy.load`` or ``pickle.load`` reads it — for tools that know nothing of git-flor.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from ..errors import EXIT_OK, UsageError
from ..runtime.registry import INTERNAL, IterSpec, checkpointed_run, export_bytes, find, payload
from ..storage.checkpoints import read_manifest
from ..storage.remote_store import local_payload
from .common import open_session, parse_iters


def _iteration(spec: str | None) -> IterSpec:
    """``epoch=7`` → {"epoch": 7}; ``7`` → 7; None → the last saved iteration."""
    if spec is None:
        return None
    if "=" not in spec:
        try:
            return int(spec)
        except ValueError:
            raise UsageError(f"--iter expects LOOP=N (e.g. epoch=7) or N; got {spec!r}") from None
    (loop, values), = parse_iters([spec]).items()
    if len(values) != 1:
        raise UsageError(f"--iter names one iteration to export, e.g. {loop}=7; got {spec!r}")
    return {loop: next(iter(values))}


def export(run: str, *, name: str, iteration: str | None, output: str) -> int:
    repo = open_session()
    saved = find(repo, name, run, _iteration(iteration))
    data, reader = export_bytes(saved, payload(repo, saved))
    if output == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        dest = Path(output)
        if dest.is_dir():
            raise UsageError(f"{output} is a directory; give a file name, e.g. -o {name}.pt")
        # Whole or not at all: a temp file beside the target, then rename.
        fd, tmp = tempfile.mkstemp(dir=dest.parent if str(dest.parent) else ".", prefix=f".{dest.name}.")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    print(f"wrote {saved.describe()} to {output} ({_size(len(data))}; read it with {reader})",
          file=sys.stderr)
    return EXIT_OK


def listing(run: str, *, fmt: str = "text") -> int:
    """Every saved object of every checkpointed iteration of RUN, with its size and whether it is here."""
    repo = open_session()
    run_id = checkpointed_run(repo, run)
    rows = []
    for i, entry in sorted(read_manifest(repo, run_id).items()):
        for key, ptr in sorted(entry["objects"].items()):
            if key in INTERNAL:
                continue
            rows.append({"run": run_id, "loop": entry.get("loop"), "iteration": i, "name": key,
                         "kind": ptr.kind, "serializer": ptr.serializer, "bytes": ptr.size,
                         "local": local_payload(repo, ptr.sha256) is not None})
    if fmt == "json":
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return EXIT_OK
    print(f"run {run_id}: {len({r['iteration'] for r in rows})} checkpointed iterations")
    for r in rows:
        where = "" if r["local"] else "  (in the store only)"
        print(f"  {r['loop']}={r['iteration']:<5} {r['name']:<24} {r['serializer']:<12} {_size(r['bytes']):>9}{where}")
    return EXIT_OK


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"
