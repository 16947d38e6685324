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
"""

from __future__ import annotations

import argparse
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
    import json

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


def sweep(root: Path, label: str, counts: list[int], reps: int, spread: int) -> list[tuple[int, float]]:
    base = root / label.replace(" ", "_")
    base.mkdir()
    remote, a, tmpl, commits = setup(base)
    targets = commits[-spread:]
    busiest = targets[0]
    print(f"\n== {label}: runs over {spread} commit(s) ==")
    print(f"{'runs':>6} {'push 20 new':>11} {'push none':>9} {'fresh pull':>10} {'notes B/run':>11} "
          f"{'log -1 KB':>9} {'refspecs':>8} {'loose/run':>9}")
    have = 1
    pulls = []
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
        pulls.append((have, pull))
        per = notes_bytes(a) / have
        shown = len(sh(a, "git", "log", "--notes=flor", "-1", busiest).stdout.encode()) / 1024
        print(f"{have:>6} {statistics.median(push_new):>10.2f}s {push_none:>8.2f}s {pull:>9.2f}s "
              f"{per:>11.0f} {shown:>9.1f} {push_refspecs(a):>8} {per_run:>9.1f}", flush=True)
    return pulls


def projection(pulls: list[tuple[int, float]], target: int = 100_000) -> str:
    xs, ys = [float(x) for x, _ in pulls], [y for _, y in pulls]
    if len(xs) < 2:
        return "n/a"
    mx, my = statistics.mean(xs), statistics.mean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    # A flat (or noisy, falling) curve projects no lower than the largest measurement.
    projected = max(my + slope * (target - mx), max(ys))
    return f"{projected:.1f}s (slope {slope * 1000:+.3f} s per 1,000 runs)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="50/100/200 runs, one rep")
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--spread-only", action="store_true", help="skip the one-commit sweep")
    args = parser.parse_args()
    counts = [50, 100, 200] if args.quick else [250, 500, 1000, 2000]
    reps = args.reps or (1 if args.quick else 3)
    os.environ.setdefault("FLOR_QUIET", "1")
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    with tempfile.TemporaryDirectory(prefix="flor-scale-") as tmp:
        root = Path(tmp)
        if not args.spread_only:
            pulls = sweep(root, "one commit", counts, reps, spread=1)
            print(f"fresh pull projected to 100,000 runs (linear fit): {projection(pulls)}")
        pulls = sweep(root, "5 commits", counts, reps, spread=5)
        print(f"fresh pull projected to 100,000 runs (linear fit): {projection(pulls)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
