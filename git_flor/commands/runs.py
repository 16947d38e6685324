"""``git flor runs`` and ``git flor show RUN``."""

from __future__ import annotations

import json
import sys
from typing import Any

from ..errors import EXIT_OK
from ..query.output import emit, short_time
from ..query.runs import resolve_run, select_runs
from ..query.strict_json import strict_dumps
from ..storage import index_links as links
from ..storage.checkpoints import read_manifest
from ..storage.index import connect
from ..storage.revs import newest_commit
from ..storage.shadow import loop_timings, read_witness
from .common import open_session


def runs(*, rev: str | None = None, fmt: str = "table") -> int:
    repo = open_session()
    conn = connect(repo)
    try:
        table = select_runs(repo, conn, rev=rev)
        also = links.also_at(conn)
    finally:
        conn.close()
    # The commits a run belongs to besides the one it ran at: the commit that captured
    # its dirty tree (post-commit hook) and rewrites of either (amend, rebase).
    table = table.assign(also_at=[also.get(r, []) for r in table["run"]])
    if fmt == "table":
        table = table.assign(
            dirty=[f"→{newest_commit(repo, a)[:8]}" if d and a else str(d) for d, a in zip(table["dirty"], table["also_at"])],
        ).drop(columns=["also_at"])
        table = table.assign(
            commit=table["commit"].fillna("").str.slice(0, 8),
            tstamp=short_time(table["tstamp"]),
            duration=table["duration"].map(lambda d: "" if d != d or d is None else f"{d:.1f}s"),
            args=table["args"].map(lambda a: " ".join(f"{k}={v}" for k, v in a.items())),
        ).rename(columns={"tstamp": "start"})
    else:
        table = table.rename(columns={"tstamp": "start"})
    emit(table, fmt, empty="no runs recorded yet: run a training script that uses flor.log")
    return EXIT_OK


def show(run: str, *, fmt: str = "text") -> int:
    repo = open_session()
    conn = connect(repo)
    try:
        ids = [r[0] for r in conn.execute("SELECT run FROM runs")]
        run_id = resolve_run(ids, run)
        shadow, meta = conn.execute("SELECT shadow, meta FROM runs WHERE run = ?", (run_id,)).fetchone()
        other = links.links_of(conn, run_id, json.loads(meta).get("commit"))
        names = conn.execute(
            "SELECT name, SUM(n), MAX(src) FROM chunks WHERE run = ? AND src != 2 GROUP BY name "
            "ORDER BY MIN(rowid)",
            (run_id,),
        ).fetchall()
    finally:
        conn.close()
    info: dict[str, Any] = json.loads(meta)
    info["shadow"] = shadow
    info["values"] = {n: {"count": c, "hindsight": s in (1, 3)} for n, c, s in names}
    info["also_at"] = [{"commit": link.commit, "why": _why(link)} for link in other]
    info["checkpoints"] = {
        str(i): {"bytes": sum(p.size for p in e["objects"].values()), "unsaved": e.get("unsaved", [])}
        for i, e in sorted(read_manifest(repo, run_id).items())
    }
    fingerprints = read_witness(repo, shadow).fingerprints
    info["fingerprints"] = len([i for i in fingerprints if i >= 0])
    info["replay"] = _replay_reach(info["checkpoints"], loop_timings(repo, shadow))
    if fmt == "json":
        sys.stdout.write(strict_dumps(info, indent=2, sort_keys=True) + "\n")
        return EXIT_OK
    order = ["id", "status", "error", "warnings", "script", "cwd", "commit", "branch", "dirty", "shadow",
             "start", "duration", "argv", "args", "checkpointing", "python", "platform", "packages", "host"]
    for key in order:
        if key in info and info[key] not in (None, {}, []):
            print(f"{key + ':':15} {_fmt(info[key])}")
    for item in info["also_at"]:
        print(f"{'also at:':15} {item['commit'][:12]} ({item['why']})")
    launch = info.get("launch") or {}
    if launch.get("kind") == "module":
        print(f"{'launched as:':15} python -m {launch.get('module')}")
    wrote = sorted((info.get("outputs") or {}).get("files") or {})
    if wrote:
        more = f", … ({len(wrote)} files)" if len(wrote) > 5 else ""
        print(f"{'wrote:':15} {', '.join(wrote[:5])}{more}")
    print("values:")
    for name, meta_v in info["values"].items():
        tag = " (hindsight)" if meta_v["hindsight"] else ""
        print(f"  {name}: {meta_v['count']} value{'s' if meta_v['count'] != 1 else ''}{tag}")
    ckpts = info["checkpoints"]
    if ckpts:
        total = sum(c["bytes"] for c in ckpts.values())
        print(f"checkpoints:    {len(ckpts)} iterations, {total / 1e6:.2f} MB")
        for i, c in ckpts.items():
            unsafe = f"  (not a safe resume point: {', '.join(c['unsaved'])})" if c["unsaved"] else ""
            print(f"  iteration {i}: {c['bytes'] / 1e6:.2f} MB{unsafe}")
    if info["fingerprints"]:
        print(f"witnesses:      state fingerprints of {info['fingerprints']} iteration ends (replays are checked "
              "against them)")
    reach = info["replay"]
    if reach["iterations"]:
        n, skip, loop = reach["iterations"], reach["skippable"], reach["loop"]
        if len(skip) == n:
            print(f"{'replay:':15} an epoch-level statement is replayed from checkpoints at every {loop} "
                  "(its nested loops and helper calls are skipped, not re-run)")
        else:
            redo = [i for i in range(n) if i not in set(skip)]
            shown = ", ".join(map(str, redo[:10])) + (", …" if len(redo) > 10 else "")
            print(f"{'replay:':15} an epoch-level statement skips the nested loops and helper calls of "
                  f"{len(skip)} of {n} {loop}s; at {shown} it re-executes from the nearest earlier checkpoint")
        after = "restores the last checkpoint" if reach["suffix"] else "re-runs the loop"
        print(f"{'':15} a statement after the loop {after}")
    print(f"(code as it ran: git show {shadow[:12]}:src/{info.get('script', '')})")
    return EXIT_OK


def _replay_reach(ckpts: dict[str, dict[str, Any]], loops: list[Any]) -> dict[str, Any]:
    """What a replay of this run can skip: the iterations whose epoch-level statements are
    replayed by restores (a safe checkpoint at its end and at the end of the one before,
    as ``replay.plan`` requires), and whether code after the loop starts from a checkpoint."""
    n = len(loops[0].get("iters", [])) if loops else 0
    safe = {int(i) for i, c in ckpts.items() if not c["unsaved"]}
    skippable = [i for i in range(n) if i in safe and (i == 0 or i - 1 in safe)]
    return {"loop": loops[0].get("name", "") if loops else "", "iterations": n, "skippable": skippable,
            "suffix": n > 0 and n - 1 in safe}


def _why(link: links.Link) -> str:
    if link.rewritten_from:
        return f"rewrite of {link.rewritten_from[:12]}"
    if link.ran_at:
        return "committed the run's uncommitted edits"
    return "its note was copied here"


def _fmt(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    if isinstance(value, float) and value > 1e9:  # an epoch timestamp (start, end)
        from datetime import datetime

        return datetime.fromtimestamp(value).astimezone().isoformat(timespec="seconds")
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)
