"""What hindsight replay costs: ``git flor replay`` vs re-running, vs FlorDB 4.0.1, side by side.

Three questions from issue 9 ("Measure"), each answered by times measured in the
same run (never against a number from another day or machine):

1. **Epoch-level statement vs the original run.** A numpy MLP (synthetic data,
   fixed seed, 20 epochs, a ``flor.log`` per step and per epoch) is recorded,
   then today's code gains ``flor.log("w1_norm", ...)`` right after the nested
   step loop. It reads only a checkpointed object and no code between the loop
   and it changes checkpointed state, so the planner may *skip* the step loops
   by restoring checkpoints (the benchmark checks the ``--dry-run --format json``
   plan says ``"mode": "skip"``). The original run's wall time (``python
   train.py``, recorded) is compared with the wall time of ``git flor replay
   RUN --apply w1_norm --yes --force`` exactly as a user runs it: CLI start,
   planning, materialising, the replay processes and the write-back to git.
   Two recordings are replayed: one with ``FLOR_CKPT_BOUND=1`` (a checkpoint
   every epoch, so every epoch can be skipped) and one with the default 1 %
   bound (few checkpoints on a short run, so most epochs are re-executed).
   FlorDB 4.0.1 records the same script (``import flordb as flor``) and replays
   the same statement the way its users do: edit the script, ``python -m
   flordb replay --apply w1_norm`` and answer ``y``; it commits the edit, checks
   out each run's auto-commit, propagates the statement with
   ``flordb.hlast.backprop`` and re-runs the script with ``--replay_flor``,
   which executes every epoch from iteration 0 (it keeps no checkpoints).
   The replayed values of both systems are compared: they must be equal.

2. **Parallel efficiency of step-level replay.** A statement inside the step
   loop cannot skip anything: the requested epochs are re-executed from the
   previous checkpoint. On the ``FLOR_CKPT_BOUND=1`` run, all 20 epochs are
   replayed with ``--workers 1`` and ``--workers 2`` (interleaved);
   efficiency = t1 / (2 x t2). The same on a torch MLP (2b; ``--skip-torch`` leaves it
   out), whose replayed values must equal a hand re-run's with the statement written in.

3. **Many versions.** 10 commits of the script, each a small real change
   (learning rate, decay factor), 3 runs each (seeds 0-2), all with
   ``FLOR_CKPT_BOUND=1``. One epoch-level statement is replayed over all 30
   runs (default workers): the total. Per-job overhead is measured two ways:
   (a) a *no-op job*: a statement before the training loop, so each job only
   starts Python, imports, runs the script's set-up and stops, plus the
   materialisation and write-back around it -- ``--workers 1`` so times add
   up, minus the CLI's fixed cost (its ``--dry-run`` time, which plans the
   same jobs); (b) by subtraction: a step-level statement at ``--iter
   epoch=19`` re-executes one recorded epoch per run from checkpoint 18, so
   (wall - dry-run wall - sum of the recorded compute of those epochs) / jobs
   is what each job costs beyond its compute (process start, imports, set-up,
   materialise, restore, write-back).

The machine may be shared and has few cores, so variants are interleaved (the
order rotates every repetition) and tables quote medians over ``--reps``.
Nothing outside a temporary directory is written: repositories, HOME (git
identity; FlorDB reads it), bytecode caches. The checkout itself is never
used as a repository.

    .venv/bin/python scripts/bench_replay.py            # full: ~10 minutes on 2 busy CPUs
    .venv/bin/python scripts/bench_replay.py --quick    # smoke run: ~2 minutes
    .venv/bin/python scripts/bench_replay.py --skip-flordb
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

from bench_workload import (  # the shared training workload (scripts/)
    LOOP,
    MODEL,
    flordb_version,
    snapshot_gitflor,
)

#: Issue 9's targets.
SPEED_TARGET = 15.0
EFFICIENCY_TARGET = 0.90

TRAIN = '''\
"""A small numpy MLP trained with minibatch SGD on synthetic data (fixed seed). {what}"""

import numpy as np
{import_line}

lr = flor.arg("lr", {lr})
epochs = flor.arg("epochs", 20)
batch = flor.arg("batch", 128)
hidden = flor.arg("hidden", {hidden})
n_train = flor.arg("n_train", {n_train})
seed = flor.arg("seed", 0)

''' + MODEL + '''

best_val = float("inf")
''' + LOOP

#: The hindsight statements today's code gains: (anchor line, statement at that indent).
STEP_ANCHOR = '            flor.log("loss", loss)\n'
EPOCH_STMT = '        flor.log("w1_norm", float(np.linalg.norm(W1)))\n'  # right after the step loop
STEP_STMT = '            flor.log("grad_norm", float(np.linalg.norm(gh)))\n'  # inside it
PREFIX_ANCHOR = (
    "X_train, y_train, X_val, y_val = X[:n_train], y[:n_train], X[n_train:], y[n_train:]\n"
)
PREFIX_STMT = 'flor.log("n_val", len(X_val))\n'  # before the training loop: a no-op job


#: Part 2 on torch: an MLP of the same shape (20 epochs, a nested step loop, batches of 128).
TORCH_TRAIN = '''\
"""A small torch MLP trained with SGD + momentum on synthetic data (fixed seed)."""

import torch
import git_flor as flor

steps = flor.arg("steps", {steps})
torch.manual_seed(flor.arg("seed", 0))
X = torch.randn(steps * 128, 64)
y = (X[:, :8].sum(1) > 0).long()
model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 2))
opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
with flor.checkpointing(model=model, opt=opt):
    for epoch in flor.loop("epoch", range(20)):
        for step in flor.loop("step", range(steps)):
            xb, yb = X[step * 128 : (step + 1) * 128], y[step * 128 : (step + 1) * 128]
            loss = torch.nn.functional.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            flor.log("loss", float(loss))
'''
TORCH_ANCHOR = '            flor.log("loss", float(loss))\n'
TORCH_STMT = '            flor.log("grad_norm", float(model[0].weight.grad.norm()))\n'


def script(
    flor_module: str,
    *,
    n_train: int,
    hidden: int,
    lr: float = 0.05,
    decay: float = 2.0,
    what: str = "",
) -> str:
    return TRAIN.format(
        import_line=f"import {flor_module} as flor",
        n_train=n_train,
        hidden=hidden,
        lr=lr,
        decay=decay,
        what=what,
    )


def with_statements(src: str) -> str:
    """Today's code: the recorded script plus the three hindsight statements."""
    assert src.count(STEP_ANCHOR) == 1 and src.count(PREFIX_ANCHOR) == 1
    src = src.replace(STEP_ANCHOR, STEP_ANCHOR + STEP_STMT + EPOCH_STMT)
    return src.replace(PREFIX_ANCHOR, PREFIX_ANCHOR + PREFIX_STMT)


def epoch_statement_only(src: str) -> str:
    """FlorDB's today's code: its replay re-runs everything anyway, so only the statement measured."""
    return src.replace(STEP_ANCHOR, STEP_ANCHOR + EPOCH_STMT)


# -- plumbing ------------------------------------------------------------------------------


class BenchError(SystemExit):
    pass


@dataclass
class Done:
    seconds: float
    out: str


class World:
    """The temporary world: repositories, HOME, logs; a clean environment for children."""

    def __init__(self, root: Path, python: str, flordb_python: str | None) -> None:
        self.root = root
        self.python = python
        self.flordb_python = flordb_python
        self.home = root / "home"
        self.logs = root / "logs"
        for d in (self.home, self.logs, root / "pycache"):
            d.mkdir(parents=True)
        (self.home / ".gitconfig").write_text(
            "[user]\n\tname = bench\n\temail = bench@example.com\n[init]\n\tdefaultBranch = main\n"
        )
        # No inherited git plumbing or flor switches; one BLAS thread (on a 2-core shared
        # box multithreaded BLAS is the noisiest part, and replay workers are processes);
        # bytecode cached in the sandbox (not in the checkout).
        drop = ("GIT_", "FLOR_", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE", "VIRTUAL_ENV")
        base = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
        base.update(
            HOME=str(self.home),
            GIT_CONFIG_NOSYSTEM="1",
            PYTHONPYCACHEPREFIX=str(root / "pycache"),
            OPENBLAS_NUM_THREADS="1",
            OMP_NUM_THREADS="1",
            MKL_NUM_THREADS="1",
            FLOR_QUIET="1",
        )
        path = os.environ.get("PATH", "")
        self.env = {**base, "PATH": f"{Path(python).parent}{os.pathsep}{path}"}
        # FlorDB's replay starts its children as plain `python`: its venv must come first.
        fpy = flordb_python or python
        self.fenv = {**base, "PATH": f"{Path(fpy).parent}{os.pathsep}{path}"}
        self._n = 0
        self._ids: dict[Path, set[str]] = {}

    def run(
        self,
        argv: list[str],
        cwd: Path,
        *,
        env: dict[str, str] | None = None,
        extra: dict[str, str] | None = None,
        stdin: str | None = None,
    ) -> Done:
        """Run one command to completion, timed from outside; fail loudly with its output."""
        self._n += 1
        log = self.logs / f"{self._n:04d}.log"
        full_env = {**(env or self.env), **(extra or {})}
        with open(log, "w") as fh:
            t0 = time.perf_counter()
            proc = subprocess.run(
                argv,
                cwd=cwd,
                env=full_env,
                stdout=fh,
                stderr=subprocess.STDOUT,
                input=stdin,
                text=True,
                stdin=None if stdin is not None else subprocess.DEVNULL,
            )
            seconds = time.perf_counter() - t0
        out = log.read_text(errors="replace")
        if proc.returncode != 0:
            raise BenchError(
                f"bench_replay: {' '.join(argv)} (in {cwd}) exited {proc.returncode}:\n{out[-3000:]}"
            )
        return Done(seconds, out)

    def repo(self, name: str, files: dict[str, str]) -> Path:
        path = self.root / name
        path.mkdir()
        for rel, text in files.items():
            (path / rel).write_text(text)
        self.git(path, "init", "-q", "-b", "main")
        self.commit(path, "v0")
        return path

    def git(self, repo: Path, *args: str) -> str:
        return self.run(["git", *args], repo).out

    def commit(self, repo: Path, message: str) -> None:
        self.git(repo, "add", "-A")
        self.git(repo, "commit", "-qm", message)

    def flor(self, repo: Path, *args: str) -> Done:
        """``git flor ...`` exactly as a user types it (the installed git-flor on PATH)."""
        return self.run(["git", "flor", *args], repo)

    def record(self, repo: Path, *args: str, bound: str | None = None) -> tuple[str, float]:
        """Record one git-flor run; return (run id, wall seconds of ``python train.py``).

        The run ids seen so far are cached per repository (replays are not runs), so each
        record costs one ``git flor runs`` after it, none before.
        """
        before = self._ids.get(repo)
        if before is None:
            before = set(self.run_ids(repo))
        extra = {"FLOR_CKPT_BOUND": bound} if bound is not None else None
        done = self.run([self.python, "train.py", *args], repo, extra=extra)
        after = set(self.run_ids(repo))
        new = sorted(after - before)
        if len(new) != 1:
            raise BenchError(f"bench_replay: expected one new run in {repo}, found {new}")
        self._ids[repo] = after
        return new[0], done.seconds

    def record_only(self, repo: Path, *args: str, bound: str | None = None) -> float:
        """Record one git-flor run when its id is not needed; wall seconds."""
        extra = {"FLOR_CKPT_BOUND": bound} if bound is not None else None
        return self.run([self.python, "train.py", *args], repo, extra=extra).seconds

    def run_ids(self, repo: Path) -> list[str]:
        return [
            r["run"] for r in json.loads(self.flor(repo, "runs", "--format", "json").out or "[]")
        ]

    def plan(self, repo: Path, *args: str) -> tuple[list[dict], float]:
        """The ``--dry-run --format json`` schedule, and how long the CLI took to print it."""
        done = self.flor(repo, "replay", *args, "--dry-run", "--format", "json", "--force")
        text = done.out[done.out.index("{") :]
        return json.loads(text[: text.rindex("}") + 1])["jobs"], done.seconds

    def values(self, repo: Path, name: str, run: str | None) -> list[float]:
        """``name``'s values of ``run`` (None: the repository's only run), in loop order."""
        rows = json.loads(
            self.flor(repo, "log", name, *(["--run", run] if run else []), "--format", "json").out
        )
        order = sorted(rows, key=lambda r: (r["epoch"], r.get("step") or 0))
        return [r[name] for r in order if r.get(name) is not None]


def job_seconds(out: str) -> list[float]:
    """Per-job wall times from replay's progress lines ("[3/20] run ...: ok in 0.8s")."""
    return [float(s) for s in re.findall(r"ok in ([0-9.]+)s", out)]


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def rotated(items: list, rnd: int) -> list:
    k = rnd % len(items)
    return items[k:] + items[:k]


def modes(jobs: list[dict]) -> str:
    counts: dict[str, int] = {}
    for j in jobs:
        counts[j["mode"]] = counts.get(j["mode"], 0) + 1
    return ", ".join(f"{n} {m}" for m, n in sorted(counts.items()))


def progress(text: str) -> None:
    print(f"  [{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def note(text: str) -> None:
    print(textwrap.fill(" ".join(text.split()), width=100))


def recorded_epoch_seconds(repo: Path) -> dict[str, list[float]]:
    """Per recorded run, each epoch's compute time as the run itself measured it (loops.json)."""
    import pygit2

    r = pygit2.Repository(str(repo))
    out: dict[str, list[float]] = {}
    for ref in r.references:
        if not ref.startswith("refs/flor/shadow/"):
            continue
        for commit in r.walk(r.references[ref].target):
            tree = commit.tree  # the walk reaches the user's commits too: no run.json there
            if "run.json" not in tree or "loops.json" not in tree:
                continue
            meta = json.loads(r[tree["run.json"].id].data)
            if "replay_of" in meta:
                continue
            loops = json.loads(r[tree["loops.json"].id].data)
            out[meta["id"]] = list(loops[0]["iters"]) if loops else []
    return out


# -- part 1: epoch-level statement vs the original run, and FlorDB ------------------------


def part1(w: World, reps: int, n_train: int, hidden: int) -> dict:
    """Record (git-flor default bound, git-flor bound 1, FlorDB), then replay w1_norm, per rep."""
    src = script("git_flor", n_train=n_train, hidden=hidden, what="Recorded by git-flor.")
    repo = w.repo("p1-gitflor", {"train.py": src})
    res: dict = {
        "rec_b1": [],
        "rec_def": [],
        "rep_b1": [],
        "rep_def": [],
        "dry_b1": [],
        "jobs_b1": [],
        "jobs_def": [],
        "fell_b1": [],
        "fell_def": [],
        "f_rec": [],
        "f_rep": [],
        "agree": [],
        "plans": {},
        "runs": {},
    }
    fsrc = script("flordb", n_train=n_train, hidden=hidden, what="Recorded by FlorDB.")
    # Warm-up (discarded): the first imports compile bytecode into the sandbox's cache. FlorDB
    # writes .flor/ into any repository it is imported in, so it warms up in one of its own.
    code = "import numpy, pygit2, git_flor, git_flor.cli; print('FILE', git_flor.__file__)"
    found = w.run([w.python, "-c", code], repo).out.split("FILE ")[-1].strip()
    if not found.startswith(str(w.root / "src")):
        raise BenchError(f"bench_replay: children import {found}, not the copy in {w.root / 'src'}")
    w.flor(repo, "runs")
    if w.flordb_python:
        warm = w.repo("flordb-warm-up", {"README": "warm-up\n"})
        w.run([w.flordb_python, "-c", "import flordb, flordb.repl"], warm, env=w.fenv)
    for rnd in range(reps):
        # Records, rotated; the working tree holds the committed script while recording.
        (repo / "train.py").write_text(src)
        runs: dict[str, str] = {}
        frepo = None
        recorders = ["def", "b1"] + (["flordb"] if w.flordb_python else [])
        for who in rotated(recorders, rnd):
            if who == "flordb":
                frepo = w.repo(f"p1-flordb-{rnd}", {"train.py": fsrc})
                res["f_rec"].append(w.run([w.flordb_python, "train.py"], frepo, env=w.fenv).seconds)
            else:
                run, secs = w.record(repo, bound="1" if who == "b1" else None)
                runs[who] = run
                res[f"rec_{who}"].append(secs)
        progress(f"part 1 rep {rnd + 1}/{reps}: recorded")
        # Today's code gains the statement; replays, rotated.
        (repo / "train.py").write_text(with_statements(src))
        for who in ("b1", "def"):
            jobs, secs = w.plan(repo, runs[who], "--apply", "w1_norm")
            res["plans"][who] = jobs
            if who == "b1":
                res["dry_b1"].append(secs)
        if any(j["mode"] != "skip" for j in res["plans"]["b1"]):
            raise BenchError(
                f"bench_replay: the planner does not skip on the FLOR_CKPT_BOUND=1 run: "
                f"{modes(res['plans']['b1'])}"
            )
        replayers = ["b1", "def"] + (["flordb"] if frepo is not None else [])
        for who in rotated(replayers, rnd):
            if who == "flordb":
                assert frepo is not None
                (frepo / "train.py").write_text(epoch_statement_only(fsrc))
                done = w.run(
                    [w.flordb_python, "-m", "flordb", "replay", "--apply", "w1_norm"],
                    frepo,
                    env=w.fenv,
                    stdin="y\n",
                )
                res["f_rep"].append(done.seconds)
            else:
                done = w.flor(repo, "replay", runs[who], "--apply", "w1_norm", "--yes", "--force")
                res[f"rep_{who}"].append(done.seconds)
                res[f"jobs_{who}"].append(job_seconds(done.out))
                res[f"fell_{who}"].append(done.out.count("fell back"))
        # The same statement, the same old run: every replay must give the same values.
        ours = w.values(repo, "w1_norm", runs["b1"])
        agree = {
            "git-flor (checkpoint every epoch)": ours,
            "git-flor (default bound)": w.values(repo, "w1_norm", runs["def"]),
        }
        if frepo is not None:
            agree["flordb 4.0.1"] = flordb_values(w, frepo)
        res["agree"].append(agree)
        res["runs"] = runs
        progress(f"part 1 rep {rnd + 1}/{reps}: replayed")
    res["repo"] = repo
    return res


def flordb_values(w: World, frepo: Path) -> list[float]:
    """FlorDB's w1_norm for its one run, read through its own API (as a notebook would)."""
    code = (
        "import json, flordb\n"
        "df = flordb.dataframe('w1_norm').dropna(subset=['w1_norm'])\n"
        "df = df.assign(epoch=df['epoch'].astype(int)).sort_values('epoch').drop_duplicates('epoch')\n"
        "print('VALUES', json.dumps([float(v) for v in df['w1_norm']]))\n"
    )
    out = w.run([w.flordb_python or w.python, "-c", code], frepo, env=w.fenv).out
    line = next(ln for ln in out.splitlines() if ln.startswith("VALUES "))
    return json.loads(line[len("VALUES ") :])


def report1(r: dict, reps: int, n_train: int, hidden: int, flordb: bool, flordb_why: str) -> None:
    steps = n_train // 128
    print(
        f"\n## 1. Epoch-level hindsight statement (numpy MLP, 20 epochs x {steps} steps, hidden {hidden}; "
        f"medians of {reps})\n"
    )
    print("statement, right after the nested step loop:  " + EPOCH_STMT.strip())
    print(
        f"plan on the FLOR_CKPT_BOUND=1 run:  {modes(r['plans']['b1'])}  (dry-run JSON, checked every rep)"
    )
    print(
        f"plan on the default-bound run:      {modes(r['plans']['def'])}: "
        + "; ".join(j["plan"] for j in r["plans"]["def"])
    )
    print()
    head = f"{'system / recording':44}{'record s':>10}{'replay s':>10}{'speed-up':>10}"
    print(head)
    print("-" * len(head))
    rows = [
        ("git-flor, FLOR_CKPT_BOUND=1", "rec_b1", "rep_b1"),
        ("git-flor, default bound (1 %)", "rec_def", "rep_def"),
    ]
    for label, rec, rep in rows:
        print(f"{label:44}{med(r[rec]):10.2f}{med(r[rep]):10.2f}{med(r[rec]) / med(r[rep]):9.1f}x")
    if flordb:
        print(
            f"{'flordb 4.0.1 (replays from iteration 0)':44}{med(r['f_rec']):10.2f}{med(r['f_rep']):10.2f}"
            f"{med(r['f_rec']) / med(r['f_rep']):9.2f}x"
        )
    else:
        print(f"flordb 4.0.1: not measured -- {flordb_why}")
    print()
    best = med(r["rec_b1"]) / med(r["rep_b1"])
    cheap = med(r["rec_def"]) / med(r["rep_b1"])
    ok = "meets" if best >= SPEED_TARGET else "MISSES"
    print(
        f"target >= {SPEED_TARGET:.0f}x faster than the original run: {ok} ({best:.1f}x vs its own "
        f"original; {cheap:.1f}x vs the default-bound original, the cheaper recording)"
    )
    if flordb:
        print(
            f"git-flor replay vs flordb replay of the same statement: {med(r['f_rep']) / med(r['rep_b1']):.1f}x faster"
        )
    fell = sum(r["fell_b1"]) + sum(r["fell_def"])
    print(f"segments that fell back to re-execution (a witness disagreed): {fell}"
          + ("" if not fell else " -- the plan's skips did not hold: replay paid re-execution"))
    jobs = [s for js in r["jobs_b1"] for s in js]
    dry = med(r["dry_b1"])
    print(
        f"where git-flor's replay time goes (FLOR_CKPT_BOUND=1 run): CLI start + planning (its --dry-run) "
        f"{dry:.2f} s; {len(r['plans']['b1'])} skip job(s) of {med(jobs):.2f} s each (median, in parallel); "
        f"the rest is materialising and write-back"
    )
    fixed = med(r["rep_b1"])
    print(
        f"  -> this replay costs ~{fixed:.1f} s whatever the run's length, so {SPEED_TARGET:.0f}x needs an "
        f"original run of >= {SPEED_TARGET * fixed:.0f} s"
    )
    print(
        "replay s by rep: "
        + "; ".join(
            f"{k} " + " ".join(f"{x:.2f}" for x in r[k])
            for k in ("rep_b1", "rep_def", "f_rep")
            if r[k]
        )
    )
    print(
        "skip jobs s by rep (FLOR_CKPT_BOUND=1 run): "
        + "; ".join(" ".join(f"{x:.2f}" for x in js) for js in r["jobs_b1"])
    )
    print(
        "record s by rep: "
        + "; ".join(
            f"{k} " + " ".join(f"{x:.2f}" for x in r[k])
            for k in ("rec_b1", "rec_def", "f_rec")
            if r[k]
        )
    )
    same = all(
        len({json.dumps(v) for v in a.values()}) == 1 and len(next(iter(a.values()))) == 20
        for a in r["agree"]
    )
    names = ", ".join(r["agree"][0])
    print(
        f"replayed w1_norm values ({names}): {'identical, 20 epochs, every rep' if same else 'DIFFER'}"
    )
    if not same:
        for a in r["agree"]:
            for k, v in a.items():
                print(f"  {k}: {v}")


# -- part 2: step-level statement, --workers 1 vs 2 ----------------------------------------


def part2(w: World, reps: int, repo: Path, run: str) -> dict:
    """Re-execute all 20 epochs of a FLOR_CKPT_BOUND=1 run for a statement inside the step loop."""
    res: dict = {"1": [], "2": [], "plans": {}, "jobs": {"1": [], "2": []}}
    for n in ("1", "2"):
        res["plans"][n], _ = w.plan(repo, run, "--apply", "grad_norm", "--workers", n)
    for rnd in range(reps):
        for n in rotated(["1", "2"], rnd):
            done = w.flor(
                repo, "replay", run, "--apply", "grad_norm", "--workers", n, "--yes", "--force"
            )
            res[n].append(done.seconds)
            res["jobs"][n].append(job_seconds(done.out))
        progress(f"part 2 rep {rnd + 1}/{reps}")
    res["epochs"] = recorded_epoch_seconds(repo)[run]
    return res


def part2_torch(w: World, reps: int, steps: int) -> dict:
    """Part 2 on a torch workload: record (a checkpoint every epoch), then a step-level statement
    replayed with --workers 1 and 2 (interleaved); the values of both equal a hand re-run's."""
    src = TORCH_TRAIN.format(steps=steps)
    repo = w.repo("p2-torch", {"train.py": src})
    run, rec = w.record(repo, bound="1")
    today = src.replace(TORCH_ANCHOR, TORCH_ANCHOR + TORCH_STMT)
    hand = w.repo("p2-torch-hand", {"train.py": today})
    w.run([w.python, "train.py"], hand)
    expected = w.values(hand, "grad_norm", run=None)
    (repo / "train.py").write_text(today)
    res: dict = {"1": [], "2": [], "plans": {}, "jobs": {"1": [], "2": []}, "rec": rec, "exact": True}
    for n in ("1", "2"):
        res["plans"][n], _ = w.plan(repo, run, "--apply", "grad_norm", "--workers", n)
    for rnd in range(reps):
        for n in rotated(["1", "2"], rnd):
            done = w.flor(repo, "replay", run, "--apply", "grad_norm", "--workers", n, "--yes", "--force")
            res[n].append(done.seconds)
            res["jobs"][n].append(job_seconds(done.out))
            res["exact"] = res["exact"] and w.values(repo, "grad_norm", run) == expected
        progress(f"part 2 (torch) rep {rnd + 1}/{reps}")
    res["epochs"] = recorded_epoch_seconds(repo)[run]
    res["values"] = len(expected)
    return res


def report2(r: dict, reps: int, rec_b1: float, workload: str = "numpy") -> None:
    print(f"\n## 2{'' if workload == 'numpy' else 'b'}. Step-level statement, {workload}, all 20 epochs "
          f"re-executed (medians of {reps})\n")
    print("statement, inside the step loop:  " + (STEP_STMT if workload == "numpy" else TORCH_STMT).strip())
    for n in ("1", "2"):
        jobs = r["plans"][n]
        print(
            f"plan --workers {n}: {modes(jobs)}: "
            + "; ".join(j["plan"] for j in jobs[:3])
            + (" ..." if len(jobs) > 3 else "")
        )
    t1, t2 = med(r["1"]), med(r["2"])
    eff = t1 / (2 * t2)
    print()
    print(f"{'':30}{'wall s':>10}{'job s (median)':>16}")
    for n, t in (("1", t1), ("2", t2)):
        js = [s for j in r["jobs"][n] for s in j]
        print(f"{'--workers ' + n:30}{t:10.2f}{med(js):16.2f}")
    print(f"{'the original run (recording)':30}{rec_b1:10.2f}")
    print(f"{'its 20 epochs, as recorded':30}{sum(r['epochs']):10.2f}")
    print()
    ok = "meets" if eff >= EFFICIENCY_TARGET else "MISSES"
    print(
        f"parallel efficiency t1 / (2 x t2) = {eff * 100:.0f} %: target >= {EFFICIENCY_TARGET * 100:.0f} % {ok}"
    )
    print(
        "wall s by rep: "
        + "; ".join(f"workers {n}: " + " ".join(f"{x:.2f}" for x in r[n]) for n in ("1", "2"))
    )
    if "exact" in r:
        print(f"replayed grad_norm ({r['values']} values) equal to a hand re-run's, both worker counts, every "
              f"rep: {'yes' if r['exact'] else 'NO'}")
    n1, n2 = len(r["plans"]["1"]), len(r["plans"]["2"])
    note(f"""The plan has {n1} re-execution job(s) with --workers 1 and {n2} with --workers 2: one
          job per segment between checkpoints, whatever --workers is. Each job pays a process start,
          imports and the script's set-up on top of its epochs, so replaying all epochs with one worker
          takes {t1 / rec_b1:.1f}x the original run ({t1 / max(sum(r["epochs"]), 1e-9):.1f}x its recorded
          epoch compute).""")


# -- part 3: 10 versions x 3 runs ----------------------------------------------------------


def part3(w: World, reps: int, versions: int, runs_per: int, n_train: int, hidden: int) -> dict:
    """Record runs over many commits; replay an epoch, a prefix and a one-epoch step statement."""

    def version(k: int) -> str:
        return script(
            "git_flor",
            n_train=n_train,
            hidden=hidden,
            lr=round(0.05 + 0.005 * k, 4),
            decay=2.0 if k % 2 == 0 else 1.5,
            what=f"Version {k}.",
        )

    repo = w.repo("p3-versions", {"train.py": version(0)})
    t0 = time.perf_counter()
    rec = []
    for k in range(versions):
        if k:
            (repo / "train.py").write_text(version(k))
            w.commit(
                repo, f"v{k}: lr {round(0.05 + 0.005 * k, 4)}, decay {2.0 if k % 2 == 0 else 1.5}"
            )
        for s in range(runs_per):
            rec.append(w.record_only(repo, "--kwargs", f"seed={s}", bound="1"))
    progress(f"part 3: recorded {versions * runs_per} runs in {time.perf_counter() - t0:.0f} s")
    (repo / "train.py").write_text(with_statements(version(versions - 1)))
    cases = {
        "epoch": ["--apply", "w1_norm"],
        "prefix": ["--apply", "n_val", "--workers", "1"],
        "step19": ["--apply", "grad_norm", "--iter", "epoch=19", "--workers", "1"],
    }
    res: dict = {
        "rec": rec,
        "plans": {},
        "dry": {k: [] for k in cases},
        "wall": {k: [] for k in cases},
        "jobs": {k: [] for k in cases},
    }
    for rnd in range(reps):
        for key in rotated(list(cases), rnd):
            jobs, dry = w.plan(repo, *cases[key])
            res["plans"][key] = jobs
            res["dry"][key].append(dry)
            done = w.flor(repo, "replay", *cases[key], "--yes", "--force")
            res["wall"][key].append(done.seconds)
            res["jobs"][key].append(job_seconds(done.out))
        progress(f"part 3 rep {rnd + 1}/{reps}")
    if any(j["mode"] != "skip" for j in res["plans"]["epoch"]):
        raise BenchError(
            f"bench_replay: part 3 epoch statement is not skipped: {modes(res['plans']['epoch'])}"
        )
    epochs = recorded_epoch_seconds(repo)
    res["compute19"] = sum(it[19] for it in epochs.values() if len(it) > 19)
    res["nruns"] = len(epochs)
    return res


def report3(r: dict, reps: int, versions: int, runs_per: int) -> None:
    n = r["nruns"]
    print(
        f"\n## 3. {versions} versions x {runs_per} runs ({n} runs, FLOR_CKPT_BOUND=1; medians of {reps})\n"
    )
    print(f"recording: {med(r['rec']):.2f} s per run (median), {sum(r['rec']):.0f} s for all {n}")
    head = (
        f"{'statement':44}{'plan':>22}{'wall s':>9}{'dry-run s':>11}{'job s':>8}{'per run s':>11}"
    )
    print(head)
    print("-" * len(head))
    labels = {
        "epoch": "w1_norm, epoch level, all epochs (workers 2)",
        "prefix": "n_val, before the loop (no-op job, workers 1)",
        "step19": "grad_norm, step level, epoch 19 (workers 1)",
    }
    for key, label in labels.items():
        jobs = [s for j in r["jobs"][key] for s in j]
        wall = med(r["wall"][key])
        print(
            f"{label:44}{modes(r['plans'][key]):>22}{wall:9.2f}{med(r['dry'][key]):11.2f}{med(jobs):8.2f}"
            f"{wall / n:11.2f}"
        )
    print()
    pj = len(r["plans"]["prefix"])
    noop = (med(r["wall"]["prefix"]) - med(r["dry"]["prefix"])) / pj
    sj = len(r["plans"]["step19"])
    sub = (med(r["wall"]["step19"]) - med(r["dry"]["step19"]) - r["compute19"]) / sj
    total = med(r["wall"]["epoch"])
    print(
        f"total: one epoch-level statement over all {n} runs of {versions} versions: {total:.1f} s "
        f"({len(r['plans']['epoch'])} jobs)"
    )
    print(
        f"per-job overhead, no-op method:    ({med(r['wall']['prefix']):.2f} - {med(r['dry']['prefix']):.2f}) "
        f"/ {pj} jobs = {noop:.2f} s"
    )
    print(
        f"per-job overhead, subtraction:     ({med(r['wall']['step19']):.2f} - {med(r['dry']['step19']):.2f} - "
        f"{r['compute19']:.2f} recorded compute) / {sj} jobs = {sub:.2f} s"
    )
    note("""wall = `git flor replay ... --yes --force` end to end; dry-run = the same command with
          --dry-run: CLI start, finding the runs, propagating the statement into each version and
          planning -- the fixed cost, subtracted. job = the executor's per-job wall time (process
          start, imports, the script's set-up, restore, the replayed work), read from replay's
          progress lines. No-op method: a statement before the training loop makes each job run only
          the script's prefix and stop, so (wall - dry-run) / jobs is the per-job overhead (process
          start, imports, set-up, materialising the version, write-back) with no training in it.
          Subtraction: a step-level statement at epoch 19 re-executes exactly one recorded epoch per
          run from checkpoint 18; minus the compute those epochs took when recorded (loops.json),
          what is left per job is the overhead including the checkpoint restore.""")


# -- main ----------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, help="repetitions (default 3; 1 with --quick)")
    parser.add_argument(
        "--quick", action="store_true", help="smaller workloads, fewer versions: a smoke run"
    )
    parser.add_argument("--skip-flordb", action="store_true", help="leave FlorDB out of part 1")
    parser.add_argument("--skip-torch", action="store_true", help="leave out part 2 on torch")
    parser.add_argument(
        "--flordb-python",
        default=sys.executable,
        help="a python with flordb==4.0.1 installed (default: this one)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--n-train",
        type=int,
        help="training-set size in parts 1 and 2 (default 40,960): a longer original run, same shape",
    )
    args = parser.parse_args()
    reps = args.reps or (1 if args.quick else 3)
    if reps < 1:
        parser.error("--reps must be at least 1")
    n1, h1 = (12_800, 256) if args.quick else (40_960, 512)
    n1 = args.n_train or n1
    versions, runs_per = (3, 2) if args.quick else (10, 3)
    n3, h3 = 6_400, 128

    root = Path(tempfile.mkdtemp(prefix="git-flor-bench-replay-"))
    try:
        flordb_python, fversion, why = None, None, "skipped (--skip-flordb)"
        if not args.skip_flordb:
            fversion = flordb_version(args.flordb_python, root)
            if fversion is None:
                why = f"flordb is not installed in {args.flordb_python} (pass --flordb-python)"
            else:
                flordb_python = args.flordb_python
        where = snapshot_gitflor(sys.executable, root / "src")
        w = World(root, sys.executable, flordb_python)
        w.env["PYTHONPATH"] = str(root / "src")
        load0, t0 = os.getloadavg(), time.time()
        print(f"[1/3] epoch-level statement: {reps} rep(s)", file=sys.stderr, flush=True)
        r1 = part1(w, reps, n1, h1)
        print("[2/3] step-level statement, workers 1 vs 2", file=sys.stderr, flush=True)
        r2 = part2(w, reps, r1["repo"], r1["runs"]["b1"])
        r2t = None
        if not args.skip_torch:
            print("[2b/3] step-level statement on torch, workers 1 vs 2", file=sys.stderr, flush=True)
            r2t = part2_torch(w, reps, 180 if args.quick else 720)
        print(f"[3/3] {versions} versions x {runs_per} runs", file=sys.stderr, flush=True)
        r3 = part3(w, reps, versions, runs_per, n3, h3)
        load1 = os.getloadavg()

        print(
            f"# bench_replay: --reps {reps}{' --quick' if args.quick else ''}, variants interleaved"
        )
        print(
            f"python {sys.version.split()[0]} ({sys.executable}); {os.cpu_count()} CPUs; load average "
            f"{load0[0]:.1f} at start, {load1[0]:.1f} at end; {time.time() - t0:.0f} s in all"
        )
        print(f"git-flor: {where}")
        print(f"flordb: {fversion} ({flordb_python})" if fversion else f"flordb: {why}")
        report1(r1, reps, n1, h1, flordb_python is not None, why)
        report2(r2, reps, med(r1["rec_b1"]))
        if r2t is not None:
            report2(r2t, reps, r2t["rec"], "torch")
        report3(r3, reps, versions, runs_per)
        if args.keep:
            print(f"\n(kept {root})")
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
