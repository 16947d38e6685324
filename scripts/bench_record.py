"""What recording costs a training script: git-flor vs no recording vs FlorDB, side by side.

Two questions, each answered by ratios measured in the same run (never against a
number from another day or machine):

1. **flor.log per call.** A training loop calls ``flor.log`` once per step, so its
   hot path must stay near the cost of the ``list.append`` it is built on. Each
   variant runs N calls (1e6 by default) in its own child process inside a
   throw-away git repository: ``list.append`` of the same ``(name, value, ctx)``
   tuple, and ``flor.log`` inside a ``flor.loop`` with the echo off
   (``FLOR_QUIET=1``), on (stdout to /dev/null, buffered as Python buffers a
   non-terminal), on with ``PYTHONUNBUFFERED=1`` (common in containers and CI),
   and with a ``numpy.float64`` value (what ``loss.mean()`` returns). Besides the
   in-loop time per call, the child's exit phase is timed: git-flor writes the
   run to git at exit and its journal thread serialises records in the
   background, so the *after-loop* cost per record is the rest of the bill.

2. **Training overhead.** A few seconds of numpy MLP training (synthetic data,
   fixed seed, 20 epochs, a ``flor.log`` per step and per epoch, ``flor.arg``,
   nested ``flor.loop``, ``flor.checkpointing``) run as separate processes with
   (a) a no-op ``flor`` shim, (b) git-flor: echo on, ``FLOR_QUIET=1``, and
   ``FLOR_CKPT_BOUND=0`` (checkpoints of the first and last epoch only, which
   separates checkpointing from recording), and (c) FlorDB 4.0.1, the research
   system's published implementation. The training loop is timed inside the
   script, in wall and CPU time (CPU time of all threads: background writers
   count, and other load on a shared machine mostly does not); the whole
   process (interpreter start, imports, set-up, training, exit-time writes) from
   outside.

The machine may be shared, so variants are interleaved (the order rotates every
repetition), each variant runs ``--reps`` times after one discarded warm-up
round, and the tables quote medians and ratios of medians (plus the median of
per-repetition ratios for the training loop, which cancels slow drifts in load).

Nothing outside a temporary directory is written: the repositories, HOME (FlorDB
writes ``.flor/`` into the repository and commits to a branch of its own),
bytecode caches and results all live there and are removed at the end unless
``--keep``. The children import a copy of the git_flor package taken at start, so
edits to the checkout during a run cannot mix versions in one table.

    .venv/bin/python scripts/bench_record.py                 # full: ~8 minutes on 2 busy CPUs
    .venv/bin/python scripts/bench_record.py --quick         # smoke run: ~1.5 minutes
    .venv/bin/python scripts/bench_record.py --skip-flordb
    .venv/bin/python scripts/bench_record.py --flordb-python /tmp/flordb-venv/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from bench_workload import (  # the shared training workload (scripts/)
    LOOP,
    MODEL,
    flordb_version,
    snapshot_gitflor,
)

#: Per-call budget of ``flor.log`` (docs/design.md §1, README promise: recording is free next to a step).
LOG_TARGET_NS = 2000.0
#: Budget of git-flor's overhead on the training loop, in percent of the no-op run.
TRAIN_TARGET_PCT = 1.0

# -- the files the benchmark writes into its throw-away repositories -----------------------

NOOP_SHIM = '''\
"""A flor that records nothing: the baseline every recording variant is compared to."""

from contextlib import contextmanager


def arg(name, default=None):
    return default


def loop(name, iterable):
    return iterable


def log(name, value):
    return value


@contextmanager
def checkpointing(**objects):
    yield


def commit():
    return None
'''

MICRO_SCRIPT = '''\
"""flor.log micro-benchmark child: N calls of one variant, timed in-process.

BENCH_VARIANT is "append" (list.append of the tuple flor.log stores; git_flor is
not imported) or "flor" (flor.log inside a flor.loop); BENCH_NUMPY=1 logs a
numpy.float64. Timings go to the JSON file BENCH_OUT (stdout is /dev/null).
"""

import json
import os
import time

import numpy as np  # in every variant, so that only the logged value's type differs

T_START = time.time()
N = int(os.environ["BENCH_N"])
VARIANT = os.environ["BENCH_VARIANT"]
VALUE = np.float64(0.123) if os.environ.get("BENCH_NUMPY") == "1" else 0.123


def empty(n):
    for _ in range(n):
        pass


def appends(n, records, value, ctx):
    for _ in range(n):
        records.append(("loss", value, ctx))


def logs(n, flor, value):
    for _ in range(n):
        flor.log("loss", value)


clock = time.perf_counter
if VARIANT == "append":
    records = []
    ctx = (("bench", 0, 0),)  # the shape of git-flor's loop position
    t0 = clock()
    empty(N)
    t1 = clock()
    appends(N, records, VALUE, ctx)
    t2 = clock()
else:
    import git_flor as flor

    for _ in flor.loop("bench", range(1)):
        t0 = clock()
        empty(N)
        t1 = clock()
        logs(N, flor, VALUE)
        t2 = clock()
result = {"start": T_START, "empty": t1 - t0, "loop": t2 - t1, "loop_end": time.time()}
if VARIANT != "append":
    result["flor_file"] = flor.__file__
with open(os.environ["BENCH_OUT"], "w") as out:
    json.dump(result, out)
'''

TRAIN_TEMPLATE = '''\
"""A small numpy MLP trained with minibatch SGD on synthetic data (fixed seed).

The benchmark's training workload: {what}. Timings go to the JSON file
BENCH_OUT; the size comes from BENCH_N_TRAIN so every variant trains the same.
"""

import json
import os
import time

T_START = time.time()
import numpy as np  # noqa: E402

T_NUMPY = time.time()
{import_line}  # noqa: E402

T_FLOR = time.time()

lr = flor.arg("lr", 0.05)
epochs = flor.arg("epochs", 20)
batch = flor.arg("batch", 128)
hidden = flor.arg("hidden", 256)
n_train = flor.arg("n_train", int(os.environ.get("BENCH_N_TRAIN", "25600")))
seed = flor.arg("seed", 0)

''' + MODEL + '''

best_val = float("inf")
T_SETUP = time.time()
t0, c0 = time.perf_counter(), time.process_time()
''' + LOOP + '''train_s, train_cpu = time.perf_counter() - t0, time.process_time() - c0

with open(os.environ["BENCH_OUT"], "w") as out:
    json.dump(
        {{
            "start": T_START,
            "numpy": T_NUMPY,
            "flor": T_FLOR,
            "setup": T_SETUP,
            "loop_end": time.time(),
            "train": train_s,
            "train_cpu": train_cpu,
            "final": [float(loss), val_loss],
            "flor_file": flor.__file__,
        }},
        out,
    )
'''

# -- plumbing ------------------------------------------------------------------------------


@dataclass
class Sample:
    """One child process: wall and CPU time seen from outside, and what it timed inside."""

    e2e: float
    cpu: float  # user + system of the child and everything it waited for (git, ...)
    inner: dict


@dataclass
class Variant:
    """A benchmarked configuration and its samples (warm-up excluded)."""

    key: str
    label: str
    python: str
    cwd: Path
    script: str
    env: dict[str, str] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)

    def med(self, fn) -> float:
        return statistics.median(fn(s) for s in self.samples)


class Bench:
    """The temporary world the children run in: repos, HOME, pycache, results."""

    def __init__(self, root: Path, python: str) -> None:
        self.root = root
        self.python = python
        self.home = root / "home"
        self.out = root / "out"
        for d in (self.home, self.out, root / "pycache"):
            d.mkdir(parents=True)
        self._n = 0
        # A clean, predictable child environment: no inherited git plumbing or
        # flor switches, HOME in the sandbox (FlorDB and git read it), one BLAS
        # thread (a 2-core shared box makes multithreaded BLAS the noisiest part),
        # stdout buffered as for any non-terminal (this shell may set
        # PYTHONUNBUFFERED=1, which turns every echo into a write syscall), and
        # bytecode cached under the sandbox so imports cost what they cost a user
        # after the first run (PYTHONDONTWRITEBYTECODE would recompile git_flor
        # in every child; writing __pycache__ into the checkout is not ours to do).
        drop = ("GIT_", "FLOR_", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "PYTHONPATH")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
        self.env.update(
            HOME=str(self.home),
            PATH=f"{Path(python).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            PYTHONPYCACHEPREFIX=str(root / "pycache"),
            OPENBLAS_NUM_THREADS="1",
            OMP_NUM_THREADS="1",
            MKL_NUM_THREADS="1",
            GIT_AUTHOR_NAME="bench",
            GIT_AUTHOR_EMAIL="bench@example.com",
            GIT_COMMITTER_NAME="bench",
            GIT_COMMITTER_EMAIL="bench@example.com",
        )

    def repo(self, name: str, files: dict[str, str]) -> Path:
        """A fresh repository with ``files`` committed (so runs are not dirty)."""
        path = self.root / name
        path.mkdir()
        for rel, text in files.items():
            (path / rel).write_text(text)
        for cmd in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-qm", "benchmark"]):
            subprocess.run(["git", *cmd], cwd=path, env=self.env, check=True)
        return path

    def run(self, v: Variant, extra_env: dict[str, str]) -> Sample:
        """Run one child with stdout to /dev/null; its own timings come back as JSON."""
        self._n += 1
        result = self.out / f"{self._n:04d}-{v.key}.json"
        errors = self.out / f"{self._n:04d}-{v.key}.stderr"
        env = {**self.env, **v.env, **extra_env, "BENCH_OUT": str(result)}
        with open(errors, "wb") as err:
            r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.time()
            proc = subprocess.run(
                [v.python, v.script], cwd=v.cwd, env=env, stdout=subprocess.DEVNULL, stderr=err
            )
            t1 = time.time()
            r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0 or not result.exists():
            tail = errors.read_text(errors="replace")[-2000:]
            raise SystemExit(f"bench_record: {v.label} exited {proc.returncode}:\n{tail}")
        inner = json.loads(result.read_text())
        src = str(self.root / "src")
        if "git_flor" in inner.get("flor_file", "") and not inner["flor_file"].startswith(src):
            raise SystemExit(f"bench_record: {v.label} imported {inner['flor_file']}, not {src}")
        inner["spawn"], inner["done"] = t0, t1
        cpu = r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime
        return Sample(e2e=t1 - t0, cpu=cpu, inner=inner)


def interleaved(
    bench: Bench, variants: list[Variant], reps: int, extra_env: dict[str, str]
) -> None:
    """One warm-up round, then ``reps`` rounds, each in a rotated order."""
    for rnd in range(reps + 1):
        shift = rnd % len(variants)
        for v in variants[shift:] + variants[:shift]:
            sample = bench.run(v, extra_env)
            if rnd > 0:
                v.samples.append(sample)
        label = "warm-up" if rnd == 0 else f"rep {rnd}/{reps}"
        print(f"  {label} done", file=sys.stderr, flush=True)


def note(text: str) -> None:
    """Print a legend paragraph wrapped to the tables' width."""
    print(textwrap.fill(text, width=100))


# -- part 1: flor.log per call -------------------------------------------------------------


def bench_log(bench: Bench, n: int, reps: int) -> list[Variant]:
    repo = bench.repo("log-repo", {"micro.py": MICRO_SCRIPT})
    py = bench.python

    def variant(key: str, label: str, **env: str) -> Variant:
        return Variant(key, label, py, repo, "micro.py", env=env)

    variants = [
        variant("append", "list.append(tuple)", BENCH_VARIANT="append"),
        variant("quiet", "flor.log  FLOR_QUIET=1", BENCH_VARIANT="flor", FLOR_QUIET="1"),
        variant("echo", "flor.log  echo > /dev/null", BENCH_VARIANT="flor"),
        variant(
            "unbuf",
            "flor.log  echo, PYTHONUNBUFFERED=1",
            BENCH_VARIANT="flor",
            PYTHONUNBUFFERED="1",
        ),
        variant(
            "np",
            "flor.log  np.float64, QUIET",
            BENCH_VARIANT="flor",
            FLOR_QUIET="1",
            BENCH_NUMPY="1",
        ),
    ]
    print(f"[1/2] flor.log: {n:,} calls per child, {len(variants)} variants", file=sys.stderr)
    interleaved(bench, variants, reps, {"BENCH_N": str(n)})
    return variants


def report_log(variants: list[Variant], n: int) -> None:
    base = variants[0]
    reps = len(base.samples)

    def per_call(v: Variant, fn) -> float:
        return v.med(fn) / n * 1e9

    print(f"\n## 1. flor.log per call ({n:,} calls per child, medians of {reps})\n")
    cols = ("in loop", "net", "x append", "after loop", "all-in", "all-in", "process")
    units = ("ns/call", "ns/call", "ratio", "ns/record", "ns wall", "ns cpu", "s wall")
    print(f"{'variant':36}" + "".join(f"{c:>11}" for c in cols))
    print(f"{'':36}" + "".join(f"{u:>11}" for u in units))
    print("-" * (36 + 11 * len(cols)))

    def outside(s: Sample) -> float:
        """Wall time the child spent outside its two timed loops."""
        return s.e2e - s.inner["loop"] - s.inner["empty"]

    def exit_phase(s: Sample) -> float:
        return s.inner["done"] - s.inner["loop_end"]

    loop = {v.key: per_call(v, lambda s: s.inner["loop"]) for v in variants}
    for v in variants:
        net = per_call(v, lambda s: s.inner["loop"] - s.inner["empty"])
        if v is base:
            after, all_wall, all_cpu = "-", f"{loop[v.key]:.0f}", "-"
        else:
            after = f"{per_call(v, exit_phase) - per_call(base, exit_phase):.0f}"
            all_wall = f"{per_call(v, outside) - per_call(base, outside) + loop[v.key]:.0f}"
            cpu = per_call(v, lambda s: s.cpu) - per_call(base, lambda s: s.cpu)
            all_cpu = f"{cpu + loop[base.key]:.0f}"
        print(
            f"{v.label:36}{loop[v.key]:11.0f}{net:11.0f}{loop[v.key] / loop[base.key]:11.2f}"
            f"{after:>11}{all_wall:>11}{all_cpu:>11}{v.med(lambda s: s.e2e):11.2f}"
        )
    print()
    note(
        "in loop = loop time / calls; net = minus an empty loop of the same length; x append "
        "= in loop / list.append's; after loop = the child's exit phase (journal thread "
        "catching up, run written to git, interpreter teardown) minus the list.append "
        "child's, per record; all-in = what the whole process spent beyond the list.append "
        "child (importing git_flor, attaching to the repository, journal, exit write), per "
        "call, plus list.append's own cost: from wall clocks, and from the child's CPU time "
        "(robust to other load on the machine)."
    )
    for key in ("quiet", "echo", "np"):
        v = next(x for x in variants if x.key == key)
        ok = "meets" if loop[key] <= LOG_TARGET_NS else "MISSES"
        print(
            f"target <= {LOG_TARGET_NS:.0f} ns/call in loop: {v.label:34} {ok} ({loop[key]:.0f} ns)"
        )
    print("in-loop ns/call by repetition:")
    for v in variants:
        print(f"  {v.label:34} " + " ".join(f"{s.inner['loop'] / n * 1e9:6.0f}" for s in v.samples))


# -- part 2: a training workload -----------------------------------------------------------


def bench_train(bench: Bench, reps: int, n_train: int, flordb_python: str | None) -> list[Variant]:
    def script(what: str, import_line: str) -> str:
        return TRAIN_TEMPLATE.format(what=what, import_line=import_line, decay=2.0)

    files = {
        "noop_flor.py": NOOP_SHIM,
        "train_noop.py": script("no recording (the no-op shim)", "import noop_flor as flor"),
        "train_git_flor.py": script("recorded by git-flor", "import git_flor as flor"),
    }
    repo = bench.repo("train-repo", files)
    py = bench.python
    variants = [
        Variant("noop", "no-op flor shim", py, repo, "train_noop.py"),
        Variant("git-flor", "git-flor (echo > /dev/null)", py, repo, "train_git_flor.py"),
        Variant(
            "git-flor-q",
            "git-flor FLOR_QUIET=1",
            py,
            repo,
            "train_git_flor.py",
            env={"FLOR_QUIET": "1"},
        ),
        # The adaptive checkpoint policy saves the first and last epoch plus what fits in
        # 1 % of compute; a bound of 0 keeps only first and last, which separates the
        # cost of checkpointing from the cost of recording logs.
        Variant(
            "git-flor-b0",
            "git-flor FLOR_CKPT_BOUND=0",
            py,
            repo,
            "train_git_flor.py",
            env={"FLOR_CKPT_BOUND": "0"},
        ),
        # Verified replay's witnesses (state fingerprints at iteration ends) off, side by
        # side: what the fingerprints cost within the same overhead bound.
        Variant(
            "git-flor-nofp",
            "git-flor FLOR_WITNESS=0 (no fingerprints)",
            py,
            repo,
            "train_git_flor.py",
            env={"FLOR_WITNESS": "0"},
        ),
    ]
    if flordb_python is not None:
        # Its own repository: FlorDB switches to a branch of its own, edits .gitignore
        # and commits the working tree after every run, which would make git-flor's
        # runs dirty and move their HEAD.
        frepo = bench.repo(
            "flordb-repo",
            {"train_flordb.py": script("recorded by FlorDB", "import flordb as flor")},
        )
        variants.append(
            Variant("flordb", "flordb 4.0.1 (defaults)", flordb_python, frepo, "train_flordb.py")
        )
    print(
        f"[2/2] training: MLP, 20 epochs x {n_train // 128} steps, {len(variants)} variants",
        file=sys.stderr,
    )
    interleaved(bench, variants, reps, {"BENCH_N_TRAIN": str(n_train)})
    return variants


def report_train(variants: list[Variant], n_train: int) -> None:
    base = variants[0]
    reps = len(base.samples)
    steps = n_train // 128

    def overhead(v: Variant, fn) -> tuple[str, str]:
        """(ratio of medians - 1, median of same-round ratios - 1), in percent."""
        if v is base:
            return "-", "-"
        ratio = v.med(fn) / base.med(fn) - 1
        paired = statistics.median(fn(a) / fn(b) - 1 for a, b in zip(v.samples, base.samples))
        return f"{ratio * 100:+.2f}", f"{paired * 100:+.2f}"

    def train_wall(s: Sample) -> float:
        return s.inner["train"]

    def train_cpu(s: Sample) -> float:
        return s.inner["train_cpu"]

    print(
        f"\n## 2. Training overhead (numpy MLP, 20 epochs x {steps} steps: {20 * steps:,} "
        f"step logs + 60 epoch logs + 6 args per run; medians of {reps})\n"
    )
    print("The training loop, timed inside the script:\n")
    head = f"{'variant':30}{'wall s':>9}{'ovh %':>8}{'paired %':>10}{'cpu s':>9}{'ovh %':>8}{'paired %':>10}"
    print(head)
    print("-" * len(head))
    for v in variants:
        wall, cpu = overhead(v, train_wall), overhead(v, train_cpu)
        print(
            f"{v.label:30}{v.med(train_wall):9.3f}{wall[0]:>8}{wall[1]:>10}"
            f"{v.med(train_cpu):9.3f}{cpu[0]:>8}{cpu[1]:>10}"
        )
    print("\nThe whole process, timed from outside (phases: medians of wall time):\n")
    head = (
        f"{'variant':30}{'wall s':>9}{'ovh %':>8}{'cpu s':>9}{'ovh %':>8}"
        f"{'import':>9}{'setup':>8}{'train':>8}{'exit':>8}"
    )
    print(head)
    print("-" * len(head))
    for v in variants:
        e2e, cpu = overhead(v, lambda s: s.e2e), overhead(v, lambda s: s.cpu)
        phases = [
            v.med(lambda s: s.inner["flor"] - s.inner["numpy"]),
            v.med(lambda s: s.inner["setup"] - s.inner["flor"]),
            v.med(lambda s: s.inner["loop_end"] - s.inner["setup"]),
            v.med(lambda s: s.inner["done"] - s.inner["loop_end"]),
        ]
        print(
            f"{v.label:30}{v.med(lambda s: s.e2e):9.3f}{e2e[0]:>8}{v.med(lambda s: s.cpu):9.3f}{cpu[0]:>8}"
            + "".join(f"{p:8.3f}" if i else f"{p:9.3f}" for i, p in enumerate(phases))
        )
    print()
    note(
        "ovh % = ratio of medians - 1; paired % = median of same-round ratios - 1 (a round "
        "runs every variant back to back, so slow drifts in the machine's load cancel); cpu = "
        "user + system time of the process, all its threads (git-flor's journal, checkpoint "
        "and prefault threads included: on idle cores they would cost no wall time, on a busy "
        "machine they do), and for the whole process also of the git commands it waited for; "
        "import = `import ... as flor`; setup = flor.arg calls, data and model (the recorder "
        "attaches here); exit = after the script's last line until the process is gone "
        "(git-flor writes the run to git; FlorDB writes JSONL + SQLite and commits the "
        "working tree to its branch)."
    )
    finals = {json.dumps(s.inner["final"]) for v in variants for s in v.samples}
    same = (
        "identical in every run" if len(finals) == 1 else f"NOT identical ({len(finals)} distinct)"
    )
    print(f"final (loss, val_loss): {same} across variants (recording does not change training)")

    def verdict(pct: str) -> str:
        return f"{'meets' if float(pct) <= TRAIN_TARGET_PCT else 'MISSES'} ({pct} %)"

    print(f"target <= {TRAIN_TARGET_PCT:.0f} % on the training loop (ratio of medians; paired):")
    for v in variants[1:]:
        if v.key.startswith("git-flor"):
            wall, cpu = overhead(v, train_wall), overhead(v, train_cpu)
            print(
                f"  {v.label:28} wall {verdict(wall[0]):17} {wall[1]:>7} %   "
                f"cpu {verdict(cpu[0]):17} {cpu[1]:>7} %"
            )
    for what, fn in (("wall", train_wall), ("cpu", train_cpu)):
        print(f"training-loop {what} s by round:")
        for v in variants:
            print(f"  {v.label:30} " + " ".join(f"{fn(s):6.3f}" for s in v.samples))
    spread = {
        what: (max(map(fn, base.samples)) - min(map(fn, base.samples))) / 2 / base.med(fn) * 100
        for what, fn in (("wall", train_wall), ("cpu", train_cpu))
    }
    note(
        f"Noise floor: the no-op runs alone spread by +/-{spread['wall']:.1f} % (wall) and "
        f"+/-{spread['cpu']:.1f} % (cpu) around their median (half the min-max range); "
        "overheads well inside that are not resolved by this run: add --reps or use a quieter machine."
    )


def check_recorded(bench: Bench, variants: list[Variant], reps: int) -> None:
    """What the recorders stored: an overhead measured while recording nothing is no result.

    git-flor runs are matched to the benchmark's children by start time, to show
    how many epochs each configuration checkpointed.
    """
    gitflor = [v for v in variants if v.key.startswith("git-flor")]
    repo = gitflor[0].cwd

    def git(*cmd: str) -> str:
        return subprocess.run(
            ["git", *cmd], cwd=repo, env=bench.env, capture_output=True, text=True
        ).stdout

    proc = subprocess.run(
        [bench.python, "-m", "git_flor", "runs", "--format", "json"],
        cwd=repo,
        env=bench.env,
        capture_output=True,
        text=True,
    )
    runs = json.loads(proc.stdout) if proc.returncode == 0 else []
    ok = sum(1 for r in runs if r.get("status") == "ok")
    print(
        f"git-flor stored {len(runs)} runs ({ok} ok) of the {len(gitflor) * (reps + 1)} "
        "it ran (warm-up included)"
    )
    ckpts: dict[str, list[int]] = {v.key: [] for v in gitflor}
    for r in runs:
        start = datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", r["start"])).timestamp()
        near = min(
            ((abs(s.inner["start"] - start), v.key) for v in gitflor for s in v.samples),
            default=(1e9, ""),
        )
        if near[0] < 1.0:  # warm-up runs have no sample and match nothing
            names = git("ls-tree", "--name-only", f"refs/flor/ckpt/{r['run']}").split()
            ckpts[near[1]].append(sum(1 for n in names if n.isdigit()))
    store = repo / ".git" / "flor" / "objects"
    size = sum(f.stat().st_size for f in store.rglob("*") if f.is_file()) if store.is_dir() else 0
    for v in gitflor:
        got = ckpts[v.key]
        med = f"{statistics.median(got):.0f}" if got else "?"
        print(f"  {v.label:30} checkpointed epochs per run: {med} of 20 (runs matched: {len(got)})")
    print(f"  payload store: {size / 1e6:.1f} MB (content-addressed, shared by all runs)")
    flordb = next((v for v in variants if v.key == "flordb"), None)
    if flordb is not None:
        stored = len(list((flordb.cwd / ".flor" / "runs").glob("*.jsonl")))
        print(
            f"flordb stored {stored} runs of the {reps + 1} it ran (warm-up included); its "
            "flor.checkpointing is retired in 4.0.1 (a no-op that says so), so it saved no checkpoints"
        )


# -- main ----------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--reps", type=int, help="repetitions per variant (default 7; 3 with --quick)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer reps, smaller workloads: a smoke run"
    )
    parser.add_argument("--skip-flordb", action="store_true", help="leave FlorDB out of part 2")
    parser.add_argument(
        "--flordb-python",
        default=sys.executable,
        help="a python with flordb==4.0.1 installed (default: this one)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    reps = args.reps or (3 if args.quick else 7)
    calls = 200_000 if args.quick else 1_000_000
    n_train = 6_400 if args.quick else 25_600
    if reps < 1:
        parser.error("--reps must be at least 1")

    root = Path(tempfile.mkdtemp(prefix="git-flor-bench-"))
    try:
        bench = Bench(root, sys.executable)
        flordb_python = None
        version = None
        if not args.skip_flordb:
            version = flordb_version(args.flordb_python, root)
            if version is None:
                print(
                    f"bench_record: flordb is not installed in {args.flordb_python}; install "
                    "flordb==4.0.1 there, pass --flordb-python, or --skip-flordb",
                    file=sys.stderr,
                )
                return 2
            flordb_python = args.flordb_python
        where = snapshot_gitflor(bench.python, root / "src")
        bench.env["PYTHONPATH"] = str(root / "src")
        load0 = os.getloadavg()
        t0 = time.time()
        log_variants = bench_log(bench, calls, reps)
        train_variants = bench_train(bench, reps, n_train, flordb_python)
        load1 = os.getloadavg()

        print(f"# bench_record: --reps {reps} (+ 1 warm-up round) per variant, interleaved")
        print(
            f"python {sys.version.split()[0]} ({sys.executable}); {os.cpu_count()} CPUs; "
            f"load average {load0[0]:.1f} at start, {load1[0]:.1f} at end; "
            f"{time.time() - t0:.0f} s in all"
        )
        print(f"git-flor: {where}")
        if version is not None:
            print(f"flordb {version} ({flordb_python})")
        report_log(log_variants, calls)
        report_train(train_variants, n_train)
        print()
        check_recorded(bench, train_variants, reps)
        if args.keep:
            print(f"(kept {root})")
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
