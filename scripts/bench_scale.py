"""A team's runs at scale: what sharing and notes cost as runs pile up.

Set-up (in a temporary directory): a project repository with a small numpy
training script, a bare remote, and a clone ``a`` that is ``git flor init``-ed.
One run is recorded for real (``python train.py``: the recording runtime, its
checkpoints and payloads); every further run is written **in-process through the
same storage call the runtime makes at exit** (``storage.shadow.commit_run``: run
commit, checkpoint manifest, note line), with a fresh run id and start time, so
2,000 runs do not take 2,000 interpreter launches. The runs' payloads are the
real run's (content-addressed, stored once).

Two sweeps, each printing one row per run count:

- ``one commit``: every run on the same commit (the worst case for notes);
- ``5 commits``: runs spread round-robin over five commits.

Per row (medians of ``--reps``): ``git flor push`` with 20 new runs and with
nothing new, ``git flor pull`` into a fresh ``git clone`` of the remote (clone
and ``init`` not timed), the bytes of every version of the notes (sum of the
uncompressed objects reachable from ``refs/notes/flor``'s history) per run, what
``git log --notes=flor -1`` prints under the busiest commit, the refspecs ``push``
hands git, and loose objects written per run. Then a linear fit of fresh-pull
time against runs, projected to 100,000.

    python scripts/bench_scale.py            # 250, 500, 1000, 2000 runs
    python scripts/bench_scale.py --quick    # 50, 100, 200 runs, one rep
    python scripts/bench_scale.py --baseline /work/main   # side by side with another checkout
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

TRAIN = """\
import numpy as np
import git_flor as flor

lr = flor.arg("lr", 0.1)
w = np.zeros(16)
with flor.checkpointing(w=w):
    for epoch in flor.loop("epoch", range(3)):
        w += lr
        flor.log("loss", float(1.0 / (1 + w.sum())))
"""

BATCH = 20  # "pushing 20 new runs"


def sh(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                         env=os.environ)
    if check and out.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed in {cwd}: {out.stderr.strip()}")
    return out


def timed(cwd: Path, *args: str) -> float:
    t0 = time.perf_counter()
    sh(cwd, *args)
    return time.perf_counter() - t0


def template(repo_path: Path):  # type: ignore[no-untyped-def]
    """The real run's RunData, read back from git: what each copy writes again."""

    import pygit2

    from git_flor.storage.checkpoints import read_manifest
    from git_flor.storage.records import LOGS_FILE, LOOPS_FILE, RunData, decode_records
    from git_flor.storage.refs import shadow_refs
    from git_flor.storage.shadow import read_blob, read_meta

    repo = pygit2.Repository(str(repo_path))
    [tip] = shadow_refs(repo).values()
    commit = repo[tip]
    meta = read_meta(repo, commit)
    records = list(decode_records(read_blob(repo, commit, LOGS_FILE)))
    loops = json.loads(read_blob(repo, commit, LOOPS_FILE) or b"[]")
    checkpoints = read_manifest(repo, meta["id"])
    return RunData(meta=meta, records=records, loops=loops, checkpoints=dict(checkpoints))


def add_runs(repo_path: Path, tmpl, commits: list[str], n: int) -> None:  # type: ignore[no-untyped-def]
    """Write ``n`` runs through the recording path (``commit_run``), round-robin over ``commits``."""
    import pygit2

    from git_flor.storage.records import RunData
    from git_flor.storage.shadow import commit_run

    repo = pygit2.Repository(str(repo_path))
    for i in range(n):
        meta = {**tmpl.meta, "id": uuid.uuid4().hex[:12], "start": time.time(),
                "commit": commits[i % len(commits)], "args": {"lr": 0.1 + i * 1e-6}}
        commit_run(repo, RunData(meta=meta, records=list(tmpl.records), loops=tmpl.loops,
                                 checkpoints=dict(tmpl.checkpoints)))


def notes_bytes(cwd: Path) -> int:
    objs = sh(cwd, "git", "rev-list", "--objects", "refs/notes/flor").stdout
    ids = "".join(line.split()[0] + "\n" for line in objs.splitlines() if line.strip())
    sizes = subprocess.run(["git", "cat-file", "--batch-check=%(objectsize)"], cwd=cwd, input=ids,
                           capture_output=True, text=True, check=True).stdout
    return sum(int(s) for s in sizes.split())


def loose(cwd: Path) -> int:
    out = sh(cwd, "git", "count-objects", "-v").stdout
    return int(next(ln.split()[1] for ln in out.splitlines() if ln.startswith("count:")))


def push_refspecs(cwd: Path) -> int:
    import pygit2

    from git_flor.storage.sharing import own_push_refspecs

    return len(own_push_refspecs(pygit2.Repository(str(cwd))))


def setup(root: Path) -> tuple[Path, Path, object, list[str]]:
    proj = root / "proj"
    proj.mkdir()
    sh(proj, "git", "init", "-q", "-b", "main")
    commits = []
    for k in range(5):
        (proj / "train.py").write_text(TRAIN.replace("0.1", f"0.{k + 1}"))
        sh(proj, "git", "add", "train.py")
        sh(proj, "git", "commit", "-qm", f"version {k}")
        commits.append(sh(proj, "git", "rev-parse", "HEAD").stdout.strip())
    remote = root / "remote.git"
    sh(root, "git", "clone", "-q", "--bare", str(proj), str(remote))
    a = root / "a"
    sh(root, "git", "clone", "-q", str(remote), str(a))
    sh(a, "git", "flor", "init")
    sh(a, sys.executable, "train.py")  # the one real recorded run
    return remote, a, template(a), commits


def fresh_pull(root: Path, remote: Path, tag: str) -> float:
    fresh = root / f"fresh-{tag}"
    sh(root, "git", "clone", "-q", str(remote), str(fresh))
    sh(fresh, "git", "flor", "init")
    took = timed(fresh, "git", "flor", "pull")
    log = sh(fresh, "git", "flor", "runs", "--format", "json").stdout
    shutil.rmtree(fresh)
    return took if log.count('"run"') else float("nan")


def sweep(root: Path, label: str, counts: list[int], reps: int, spread: int) -> list[dict[str, float]]:
    base = root / label.replace(" ", "_")
    base.mkdir()
    remote, a, tmpl, commits = setup(base)
    targets = commits[-spread:]
    busiest = targets[0]
    out = sys.stderr if JSON_OUT else sys.stdout
    print(f"\n== {label}: runs over {spread} commit(s) ({Path(git_flor_file()).parent.parent}) ==", file=out)
    print(f"{'runs':>6} {'push 20 new':>11} {'push none':>9} {'fresh pull':>10} {'notes B/run':>11} "
          f"{'log -1 KB':>9} {'refspecs':>8} {'loose/run':>9}", file=out)
    have = 1
    rows = []
    for count in counts:
        if count - BATCH * reps > have:
            add_runs(a, tmpl, targets, count - BATCH * reps - have)
            sh(a, "git", "flor", "push")
            have = count - BATCH * reps
        push_new = []
        for _ in range(reps):
            before = loose(a)
            add_runs(a, tmpl, targets, BATCH)
            per_run = (loose(a) - before) / BATCH
            have += BATCH
            push_new.append(timed(a, "git", "flor", "push"))
        push_none = statistics.median(timed(a, "git", "flor", "push") for _ in range(max(3, reps)))
        pull = statistics.median(fresh_pull(base, remote, f"{count}-{r}") for r in range(reps))
        row = {"runs": have, "push_new": statistics.median(push_new), "push_none": push_none, "pull": pull,
               "notes_per_run": notes_bytes(a) / have,
               "log_kb": len(sh(a, "git", "log", "--notes=flor", "-1", busiest).stdout.encode()) / 1024,
               "refspecs": push_refspecs(a), "loose_per_run": per_run}
        rows.append(row)
        print(f"{have:>6} {row['push_new']:>10.2f}s {push_none:>8.2f}s {pull:>9.2f}s "
              f"{row['notes_per_run']:>11.0f} {row['log_kb']:>9.1f} {row['refspecs']:>8} {per_run:>9.1f}",
              file=sys.stderr if JSON_OUT else sys.stdout, flush=True)
    return rows


JSON_OUT = False


def git_flor_file() -> str:
    import git_flor

    return git_flor.__file__ or "?"


def projection(rows: list[dict[str, float]], target: int = 100_000) -> str:
    xs, ys = [float(r["runs"]) for r in rows], [r["pull"] for r in rows]
    if len(xs) < 2:
        return "n/a"
    mx, my = statistics.mean(xs), statistics.mean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    # A flat (or noisy, falling) curve projects no lower than the largest measurement.
    projected = max(my + slope * (target - mx), max(ys))
    return f"{projected:.1f}s (slope {slope * 1000:+.3f} s per 1,000 runs)"


def ratios(label: str, old: list[dict[str, float]], new: list[dict[str, float]]) -> None:
    """This checkout's figures over the baseline's, row by row (below 1: this checkout is cheaper)."""
    print(f"\n== {label}: this checkout / baseline ==")
    print(f"{'runs':>6} {'push 20 new':>11} {'push none':>9} {'fresh pull':>10} {'notes B/run':>11} {'log -1 KB':>9}")
    for o, n in zip(old, new):
        cells = [n[k] / o[k] if o[k] else float("nan")
                 for k in ("push_new", "push_none", "pull", "notes_per_run", "log_kb")]
        print(f"{n['runs']:>6} " + " ".join(f"{c:>{w}.3f}" for c, w in zip(cells, (11, 9, 10, 11, 9))))


def main() -> int:
    global JSON_OUT
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="50/100/200 runs, one rep")
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--sweeps", choices=["one", "five", "both"], default="both",
                        help="runs on one commit, over five commits, or both")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="a git-flor checkout (e.g. /work/main) to measure first, in a child process "
                             "importing it (PYTHONPATH), and print this checkout's ratios to it")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    JSON_OUT = args.json
    counts = [50, 100, 200] if args.quick else [250, 500, 1000, 2000]
    reps = args.reps or (1 if args.quick else 3)
    os.environ.setdefault("FLOR_QUIET", "1")
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    labels = {"one": [("one commit", 1)], "five": [("5 commits", 5)],
              "both": [("one commit", 1), ("5 commits", 5)]}[args.sweeps]
    baseline: dict[str, list[dict[str, float]]] = {}
    if args.baseline is not None:
        child = [sys.executable, __file__, "--json", "--sweeps", args.sweeps, "--reps", str(reps)]
        env = {**os.environ, "PYTHONPATH": str(args.baseline.resolve())}
        done = subprocess.run(child + (["--quick"] if args.quick else []), env=env, stdout=subprocess.PIPE,
                              text=True, check=True)
        baseline = json.loads(done.stdout)
    results: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="flor-scale-") as tmp:
        for label, spread in labels:
            rows = sweep(Path(tmp), label, counts, reps, spread)
            results[label] = rows
            if not args.json:
                print(f"fresh pull projected to 100,000 runs (linear fit): {projection(rows)}")
    if args.json:
        print(json.dumps(results))
    for label in baseline:
        ratios(label, baseline[label], results[label])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
