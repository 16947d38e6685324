#!/usr/bin/env python
"""Benchmark statement propagation on the real histories of public training scripts.

For each (project, repository, file): take the newest version, add probe statements
`flor.log("probe_i", v)` right after chosen anchor statements, then carry them into every
older version with git-flor, FlorDB 4.0.1 (`flordb.hlast.backprop`) and `git merge-file`.
A probe is placed correctly when it lands directly after the statement equal (by `ast`) to its
anchor, in versions where that anchor occurs exactly once. Cases whose anchor sits inside
more or fewer loops (of its function) than today are also counted apart: git-flor never moves
a statement into or out of a loop it relates to today's, so some of them have no right
place under its contract. Nothing from the repositories is
copied into this project: versions are read with `git show` from local mirrors.

Mirrors are bare clones under --mirror-root named `owner+name/repo` (what the fetch tool of
this project's sessions produces); `git clone --bare https://github.com/OWNER/NAME
ROOT/OWNER+NAME/repo` makes the same layout.

A case whose mirror is missing is skipped with a message saying how to get it (`--clone`
clones it there); with none present the benchmark says so and measures nothing.

`--set dev` (default) is the histories the matcher was developed on; `--set held-out` are
histories never looked at while developing it; `--set all` is both.

Example:
    python scripts/bench_propagate.py --flordb-sample 12
    python scripts/bench_propagate.py --no-flordb --kind lineage --set held-out
    python scripts/bench_propagate.py --case karpathy/nanoGPT:train.py --no-flordb
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import multiprocessing as mp
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from git_flor.propagate import Propagator  # noqa: E402

CASES = [
    ("pytorch/examples", "word_language_model/main.py"),
    ("pytorch/examples", "mnist/main.py"),
    ("pytorch/examples", "imagenet/main.py"),
    ("pytorch/examples", "dcgan/main.py"),
    ("karpathy/nanoGPT", "train.py"),
    ("huggingface/pytorch-image-models", "train.py"),
    ("ultralytics/yolov5", "train.py"),
    ("kuangliu/pytorch-cifar", "main.py"),
]
# Never looked at while the matcher was developed (chosen after it was finished, for their
# long histories of training scripts): a score here is a held-out score, not a tuned one.
HELD_OUT = [
    ("facebookresearch/fairseq", "fairseq_cli/train.py"),
    ("lucidrains/DALLE-pytorch", "train_dalle.py"),
    ("lucidrains/DALLE-pytorch", "train_vae.py"),
    ("facebookresearch/detectron2", "tools/train_net.py"),
    ("facebookresearch/detectron2", "tools/plain_train_net.py"),
    ("pytorch/examples", "vae/main.py"),
    ("pytorch/examples", "reinforcement_learning/actor_critic.py"),
    ("pytorch/examples", "snli/train.py"),
]
SETS = {"dev": CASES, "held-out": HELD_OUT, "all": CASES + HELD_OUT}
_SIMPLE = (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Expr)


# ------------------------------------------------------------------ history

def git(gitdir: str, *args: str, check: bool = True) -> str:
    return subprocess.run(["git", "--git-dir", gitdir, *args], check=check,
                          capture_output=True, text=True, errors="replace").stdout


def mirror(root: str, repo: str, clone: bool) -> str | None:
    """The bare git directory of `repo` under `root`, cloned there first if `clone`; None
    (after saying why on stderr) when it is not there."""
    gitdir = os.path.join(root, repo.replace("/", "+"), "repo")
    if os.path.isdir(gitdir):
        return gitdir
    if clone:
        print(f"cloning https://github.com/{repo} into {gitdir} ...", file=sys.stderr, flush=True)
        res = subprocess.run(["git", "clone", "--bare", "--quiet", f"https://github.com/{repo}",
                              gitdir], capture_output=True, text=True, errors="replace")
        if res.returncode == 0:
            return gitdir
        why = (res.stderr.strip().splitlines() or ["no message"])[-1]
        print(f"skipped {repo}: git clone failed: {why}", file=sys.stderr)
        return None
    print(f"skipped {repo}: no mirror at {gitdir} (rerun with --clone to `git clone --bare` it "
          "there, or pass --mirror-root)", file=sys.stderr)
    return None


def history(gitdir: str, path: str) -> list[tuple[str, str, str]]:
    """(commit, path, source) of each distinct version of `path`, newest first."""
    # Not checked: a mirror may lack an old object, and the history up to it still counts.
    out = git(gitdir, "log", "--follow", "--format=@%H", "--name-only", "--", path, check=False)
    seen: set[str] = set()
    versions = []
    commit = None
    for line in out.splitlines():
        if line.startswith("@"):
            commit = line[1:]
        elif line.strip() and commit:
            try:
                src = git(gitdir, "show", f"{commit}:{line.strip()}")
            except subprocess.CalledProcessError:
                continue
            digest = hashlib.sha1(src.encode()).hexdigest()
            if digest not in seen:
                seen.add(digest)
                versions.append((commit, line.strip(), src))
            commit = None
    return versions


# ------------------------------------------------------------------ probes

def dump(node: ast.AST) -> str:
    return ast.dump(node, annotate_fields=False, include_attributes=False)


def owned_bodies(tree: ast.AST):  # type: ignore[no-untyped-def]
    """(owner, field, statements) for every statement list of the tree."""
    for node in ast.walk(tree):
        for name in ("body", "orelse", "finalbody"):
            body = getattr(node, name, None)
            if isinstance(body, list) and body and isinstance(body[0], ast.stmt):
                yield node, name, body


def bodies(tree: ast.AST):  # type: ignore[no-untyped-def]
    """Every statement list of the tree (bodies, orelse, handlers' bodies, ...)."""
    for _, _, body in owned_bodies(tree):
        yield body


_NESTED = ("body", "orelse", "finalbody", "handlers", "cases")
_COMPOUND = (ast.For, ast.AsyncFor, ast.While, ast.If, ast.With, ast.AsyncWith,
             ast.FunctionDef, ast.AsyncFunctionDef)


def header(node: ast.stmt) -> str:
    """`ast.dump` of a compound statement without its nested statements."""
    saved = {f: getattr(node, f) for f in _NESTED if hasattr(node, f)}
    for f in saved:
        setattr(node, f, [])
    try:
        return "H" + dump(node)
    finally:
        for f, v in saved.items():
            setattr(node, f, v)


def statement_counts(tree: ast.AST, depths: dict[str, int] | None = None) -> dict[str, int]:
    """Occurrences of each statement (by `dump`) and of each compound header (by `header`);
    with `depths`, also fills it with each one's loop depth (see `_keyed`)."""
    counts: dict[str, int] = {}
    for key, depth in _keyed(tree):
        counts[key] = counts.get(key, 0) + 1
        if depths is not None:
            depths.setdefault(key, depth)
    return counts


_LOOPS = (ast.For, ast.AsyncFor, ast.While)
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)


def _keyed(tree: ast.AST):  # type: ignore[no-untyped-def]
    """(key, loop depth) of every statement and compound header. The loop depth is the
    number of loops around the statement inside its own function (or the module): how
    often it runs per call, which placement must keep (a statement is never moved into or
    out of a loop, so an anchor whose depth changed has no right place)."""
    stack: list[tuple[list, int]] = [(getattr(tree, "body", []), 0)]  # type: ignore[type-arg]
    while stack:
        body, depth = stack.pop()
        for st in body:
            yield dump(st), depth
            if isinstance(st, _COMPOUND):
                yield header(st), depth
            inner = 0 if isinstance(st, _SCOPES) else depth + isinstance(st, _LOOPS)
            for f in _NESTED:
                sub = getattr(st, f, None)
                if not isinstance(sub, list):
                    continue
                # A loop's `else:` runs once, after the loop.
                d = depth if f == "orelse" and isinstance(st, _LOOPS) else inner
                for item in sub:
                    if isinstance(item, ast.stmt):
                        stack.append((sub, d))
                        break
                    stack.append((item.body, d))  # an except handler or a match case


def probe_value(st: ast.stmt) -> str | None:
    if isinstance(st, ast.Assign) and isinstance(st.targets[0], ast.Name):
        return st.targets[0].id
    if isinstance(st, (ast.AugAssign, ast.AnnAssign)) and isinstance(st.target, ast.Name):
        return st.target.id
    if isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef)):
        args = st.args.posonlyargs + st.args.args + st.args.kwonlyargs
        return args[0].arg if args else None
    part: ast.AST = st
    if isinstance(st, (ast.For, ast.AsyncFor)):
        part = st.target
    elif isinstance(st, (ast.While, ast.If)):
        part = st.test
    elif isinstance(st, (ast.With, ast.AsyncWith)):
        part = st.items[0].optional_vars or st.items[0].context_expr
    for n in ast.walk(part):
        if isinstance(n, ast.Name):
            return n.id
    return None


@dataclass
class Probe:
    """`flor.log(name, value)` goes on a new line before line `line` (1-based), indented by
    `indent`; `anchor` identifies the statement it must follow (kind "after") or the
    compound statement whose body it must open (kind "first")."""

    name: str
    kind: str
    anchor: str
    line: int
    indent: str
    value: str
    anchor_line: int = 0


def _candidates(src: str, tree: ast.AST, kind: str):  # type: ignore[no-untyped-def]
    """(line, key, value, insert-before line, indent) of each usable anchor."""
    lines = src.split("\n")
    for body in bodies(tree):
        for st in body:
            if lines[st.lineno - 1][: st.col_offset].strip():
                continue  # shares its line with other code
            value = probe_value(st)
            if value is None:
                continue
            if kind == "after":
                if not isinstance(st, _SIMPLE) or (isinstance(st, ast.Expr)
                                                   and isinstance(st.value, ast.Constant)):
                    continue
                end_line = lines[st.end_lineno - 1]  # type: ignore[operator]
                if end_line[st.end_col_offset:].strip().startswith(";"):
                    continue
                yield st.lineno, dump(st), value, st.end_lineno + 1, lines[st.lineno - 1][: st.col_offset]  # type: ignore[operator]
            elif isinstance(st, _COMPOUND):
                first = st.body[0]
                if first.lineno == st.lineno or lines[first.lineno - 1][: first.col_offset].strip():
                    continue  # one-line block
                if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                    continue  # a docstring must stay first
                yield st.lineno, header(st), value, first.lineno, lines[first.lineno - 1][: first.col_offset]


def choose_probes(src: str, pasts: list[ast.AST], k: int, kind: str,
                  lineages: list[tuple[Lines, dict[int, int]]] | None = None) -> list[Probe]:
    """Up to `k` anchors spread over the file, unique today, preferring those that occur
    exactly once in most past versions (so most versions can be scored); with kind "fuzzy",
    those that were *edited* in most past versions (see `fuzzy_case`); with "lineage",
    those whose line was edited in most past versions (see `lineage_case`)."""
    tree = ast.parse(src)
    counts = statement_counts(tree)
    past_counts = [statement_counts(t) for t in pasts]
    cands = []
    if kind == "fuzzy":
        today = Assigns(tree)
        olds = [Assigns(t) for t in pasts]
    for line, key, value, at, indent in _candidates(src, tree, "first" if kind == "first" else "after"):
        if counts.get(key) != 1:
            continue
        if kind == "fuzzy":
            probe = Probe("probe", "after", key, at, indent, value)
            cover = sum(1 for a in olds if fuzzy_case(today, a, probe) is not None)
            if not cover:
                continue
        elif kind == "lineage":
            probe = Probe("probe", "after", key, at, indent, value, line)
            cover = sum(1 for lines, m in lineages or [] if lineage_case(lines, m, probe, counts))
            if not cover:
                continue
        else:
            cover = sum(1 for c in past_counts if c.get(key) == 1)
        cands.append((line, cover, key, value, at, indent))
    n_lines = src.count("\n") + 1
    chosen = []
    used: set[int] = set()
    for part in range(k):
        lo, hi = part * n_lines / k, (part + 1) * n_lines / k
        pool = [c for c in cands if lo <= c[0] < hi and c[4] not in used]
        if pool:
            best = max(pool, key=lambda c: (c[1], -c[0]))
            used.add(best[4])
            chosen.append(best)
    chosen.sort(key=lambda c: c[4])
    return [Probe(f"probe_{i}", "first" if kind == "first" else "after", key, at, indent, value,
                  line) for i, (line, _, key, value, at, indent) in enumerate(chosen)]


def add_probes(src: str, probes: list[Probe]) -> tuple[str, dict[str, int]]:
    """Today's file: the newest version plus the probes and the git_flor import."""
    lines = src.split("\n")
    for p in sorted(probes, key=lambda p: -p.line):
        lines.insert(p.line - 1, f'{p.indent}flor.log("{p.name}", {p.value})')
    tree = ast.parse("\n".join(lines))
    at = 0
    for st in tree.body:
        if isinstance(st, (ast.Import, ast.ImportFrom)) or (
                isinstance(st, ast.Expr) and isinstance(st.value, ast.Constant) and at == 0):
            at = st.end_lineno  # type: ignore[assignment]
            if isinstance(st, (ast.Import, ast.ImportFrom)):
                break
    lines.insert(at, "import git_flor as flor")
    text = "\n".join(lines)
    where = {}
    for i, line in enumerate(text.split("\n")):
        s = line.strip()
        for p in probes:
            if s.startswith(f'flor.log("{p.name}",'):
                where[p.name] = i + 1
    return text, where


def _binds(st: ast.stmt) -> str | None:
    """The one plain name a simple assignment binds (`x = ...`, `x += ...`, `x: T = ...`)."""
    if isinstance(st, ast.Assign) and len(st.targets) == 1 and isinstance(st.targets[0], ast.Name):
        return st.targets[0].id
    if isinstance(st, (ast.AugAssign, ast.AnnAssign)) and isinstance(st.target, ast.Name):
        return st.target.id
    return None


class Assigns:
    """Per tree: statement counts and, per name, the assignments binding it with the header
    of the body that holds each (for `fuzzy_case`, computed once per version)."""

    def __init__(self, tree: ast.AST) -> None:
        self.counts = statement_counts(tree)
        self.by_name: dict[str, list[tuple[ast.stmt, str]]] = {}
        for owner, _, body in owned_bodies(tree):
            if isinstance(owner, ast.Module):
                where = "module"
            elif isinstance(owner, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                where = type(owner).__name__ + owner.name
            else:
                where = header(owner) if isinstance(owner, _COMPOUND) else type(owner).__name__
            for st in body:
                if not isinstance(st, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
                    continue
                for tgt in (st.targets if isinstance(st, ast.Assign) else [st.target]):
                    for t in ast.walk(tgt):
                        if isinstance(t, ast.Name):
                            self.by_name.setdefault(t.id, []).append((st, where))


def fuzzy_case(today: Assigns, past: Assigns, p: Probe) -> Probe | None:
    """The probe as a case whose anchor was *edited* in `past`, or None. The ground truth
    does not depend on any propagation tool: the anchor is an assignment, the only one today
    that binds its name `v` (which the probe logs); `past` has no copy of it but exactly one
    assignment binding `v`, of the same kind, in a body with the same owner (same `def`, same
    loop header) as today's. The probe belongs right after that edited assignment."""
    if p.kind != "after" or past.counts.get(p.anchor, 0) != 0:
        return None
    now = today.by_name.get(p.value, [])
    if len(now) != 1 or dump(now[0][0]) != p.anchor or _binds(now[0][0]) != p.value:
        return None
    olds = past.by_name.get(p.value, [])
    if len(olds) != 1 or type(olds[0][0]) is not type(now[0][0]) \
            or _binds(olds[0][0]) != p.value or olds[0][1] != now[0][1]:
        return None
    if past.counts.get(dump(olds[0][0])) != 1:
        return None
    return Probe(p.name, "after", dump(olds[0][0]), p.line, p.indent, p.value)


def line_lineage(srcs: list[str]) -> list[dict[int, int]]:
    """For each version (newest first), where each line of the newest one went: a line
    follows through `difflib` between neighbouring versions when it is kept or rewritten in
    place (a changed hunk of as many lines on both sides); it is lost otherwise. This is how
    a person reading `git log -p` follows an edited line, independent of any AST matcher."""
    import difflib

    maps = [{i: i for i in range(1, srcs[0].count("\n") + 2)}] if srcs else []
    for newer, older in zip(srcs, srcs[1:]):
        a, b = newer.split("\n"), older.split("\n")
        step: dict[int, int] = {}
        for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
            if op == "equal" or (op == "replace" and i2 - i1 == j2 - j1):
                for d in range(i2 - i1):
                    step[i1 + d + 1] = j1 + d + 1
        maps.append({t: step[x] for t, x in maps[-1].items() if x in step})
    return maps


class Lines:
    """Per past version: its simple statements by first line, statement counts, bound names."""

    def __init__(self, tree: ast.AST) -> None:
        self.tree = tree
        self.counts = statement_counts(tree)
        self.at: dict[int, ast.stmt] = {}
        for body in bodies(tree):
            for st in body:
                if isinstance(st, _SIMPLE):
                    self.at.setdefault(st.lineno, st)
        self.bound = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)
                      and isinstance(n.ctx, ast.Store)}
        self.bound |= {a.arg for a in ast.walk(tree) if isinstance(a, ast.arg)}
        self.bound |= {(al.asname or al.name).split(".")[0] for n in ast.walk(tree)
                       if isinstance(n, (ast.Import, ast.ImportFrom)) for al in n.names}


def lineage_case(lines: Lines, lineage: dict[int, int], p: Probe,
                 today: dict[str, int]) -> Probe | None:
    """The probe as an edited-anchor case by line lineage, or None: its anchor's line
    survives (edited) into this version as the first line of a simple statement that differs
    from today's anchor, occurs once, is not a statement today's file still has unchanged
    (`today`: today's `statement_counts`), and the version binds the name the probe logs
    somewhere (else no tool could place it). The probe belongs right after that statement.

    The unchanged-today rule: a line diff aligns an *inserted* statement with the next one
    of the same shape (`parser.add_argument("--new", ...)` added before an unchanged
    `parser.add_argument("--old", ...)` lines up with the old one's lines), so the anchor
    would seem edited into a statement that is still there today, unchanged, as itself. The
    anchor is new in that version, not edited, and no place is right.

    The bound-later rule: when that version binds the logged name only after the statement
    (in its function), a probe right after it would read the name before its definition
    (`reads_before_definition`); the right place is after the definition, not there."""
    at = lineage.get(p.anchor_line)
    st = lines.at.get(at) if at is not None else None
    if st is None or dump(st) == p.anchor or lines.counts.get(dump(st)) != 1 \
            or p.value not in lines.bound or dump(st) in today \
            or bound_only_later(lines.tree, st, p.value):
        return None
    return Probe(p.name, "after", dump(st), p.line, p.indent, p.value, p.anchor_line)


def scope_bindings(sc: ast.AST) -> tuple[list[ast.AST], dict[str, list[int]], set[str], set[str]]:
    """(nodes of the function or module `sc` outside scopes nested in it, lines binding each
    name there, its parameters, names it declares global/nonlocal)."""
    own: list[ast.AST] = []
    stack = list(ast.iter_child_nodes(sc))
    while stack:  # nodes of this scope, not of scopes nested in it
        n = stack.pop()
        own.append(n)
        if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            stack.extend(ast.iter_child_nodes(n))
    bound: dict[str, list[int]] = {}
    params: set[str] = set()
    if not isinstance(sc, ast.Module):
        a = sc.args  # type: ignore[attr-defined]
        params = {x.arg for x in a.posonlyargs + a.args + a.kwonlyargs}
        params |= {x.arg for x in (a.vararg, a.kwarg) if x is not None}
    declared: set[str] = set()
    for n in own:
        if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del)):
            bound.setdefault(n.id, []).append(n.lineno)
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.setdefault(n.name, []).append(n.lineno)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            for al in n.names:
                bound.setdefault((al.asname or al.name).split(".")[0], []).append(n.lineno)
        elif isinstance(n, (ast.Global, ast.Nonlocal)):
            declared.update(n.names)
        elif isinstance(n, ast.ExceptHandler) and n.name:
            bound.setdefault(n.name, []).append(n.lineno)
    return own, bound, params, declared


def bound_only_later(tree: ast.AST, st: ast.stmt, name: str) -> bool:
    """Is `name` a variable of the function (or module) holding `st` that nothing in it binds
    before `st` ends (by text order, as `reads_before_definition` judges)?"""
    sc: ast.AST = tree
    for n in ast.walk(tree):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) \
                and n.lineno <= st.lineno and st.end_lineno <= n.end_lineno \
                and n.lineno > getattr(sc, "lineno", 0):  # type: ignore[operator]
            sc = n
    _, bound, params, declared = scope_bindings(sc)
    if name in params or name in declared or name not in bound:
        return False
    return min(bound[name]) > st.end_lineno  # type: ignore[operator]


def reads_before_definition(out: str | None, probes: list[Probe]) -> int:
    """Probes in `out` that read their name where nothing earlier in the same function (or
    module) binds it: the statement would raise NameError (or read a stale value) there.
    Judged by text order with `ast`, independently of git-flor's own analysis."""
    if out is None:
        return 0
    try:
        tree = ast.parse(out)
    except SyntaxError:
        return 0
    names = {p.name: p.value for p in probes}
    bad = 0
    scopes: list[ast.AST] = [tree] + [n for n in ast.walk(tree)
                                      if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    for sc in scopes:
        own, bound, params, declared = scope_bindings(sc)
        for n in own:
            if isinstance(n, ast.Call) and n.args and isinstance(n.args[0], ast.Constant) \
                    and n.args[0].value in names and isinstance(n.func, ast.Attribute) \
                    and n.func.attr == "log":
                v = names[n.args[0].value]
                if v in params or v in declared or v not in bound:
                    continue  # a parameter, or not a name of this scope
                if min(bound[v]) > n.lineno:
                    bad += 1
    return bad


def score(out: str | None, probes: list[Probe], cases: list[Probe]) -> tuple[int, bool]:
    """(probes placed right among `cases`, output parses)."""
    if out is None:
        return 0, True
    try:
        tree = ast.parse(out)
    except SyntaxError:
        return 0, False
    where: dict[str, list[tuple[ast.AST, str, list[ast.stmt], int]]] = {}
    for owner, field_, body in owned_bodies(tree):
        for i, st in enumerate(body):
            if isinstance(st, ast.Expr) and isinstance(st.value, ast.Call) \
                    and st.value.args and isinstance(st.value.args[0], ast.Constant) \
                    and isinstance(st.value.args[0].value, str) \
                    and st.value.args[0].value.startswith("probe_"):
                where.setdefault(st.value.args[0].value, []).append((owner, field_, body, i))
    right = 0
    for p in cases:
        spots = where.get(p.name, [])
        if len(spots) != 1:
            continue
        owner, field_, body, i = spots[0]
        if p.kind == "after":
            right += i > 0 and dump(body[i - 1]) == p.anchor
        else:
            # First, after the docstring a def's body may open with (it must stay first).
            doc = isinstance(owner, (ast.FunctionDef, ast.AsyncFunctionDef)) \
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str)
            right += (i == int(doc) and field_ == "body" and isinstance(owner, _COMPOUND)
                      and header(owner) == p.anchor)  # type: ignore[arg-type]
    return right, True


# ------------------------------------------------------------------ tools

def run_gitflor(prop: Propagator, past: str) -> tuple[str | None, float]:
    t = time.perf_counter()
    res = prop.apply(past)
    return res.source, time.perf_counter() - t


def run_merge(base: str, today: str, past: str) -> tuple[str | None, float]:
    with tempfile.TemporaryDirectory() as d:
        paths = []
        for name, text in (("past", past), ("base", base), ("today", today)):
            path = os.path.join(d, name)
            with open(path, "w") as f:
                f.write(text)
            paths.append(path)
        t = time.perf_counter()
        res = subprocess.run(["git", "merge-file", "-p", *paths], capture_output=True,
                             text=True, errors="replace")
        return res.stdout, time.perf_counter() - t


class _Timeout(Exception):
    pass


def _alarm(*_: object) -> None:
    raise _Timeout


def flordb_task(args: tuple[str, str, int, str, int]) -> tuple[str, str | None, float, str]:
    """One FlorDB call (in a worker process): returns (key, output, seconds, error)."""
    key, today_path, lineno, past, timeout = args
    from flordb.hlast import backprop  # imported in the worker: needs a git repo as cwd

    with tempfile.TemporaryDirectory() as d:
        past_path, out_path = os.path.join(d, "past.py"), os.path.join(d, "out.py")
        with open(past_path, "w") as f:
            f.write(past)
        signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(timeout)
        t = time.perf_counter()
        err = ""
        try:
            backprop(lineno, today_path, past_path, out=out_path)
        except _Timeout:
            err = "timeout"
        except Exception as e:  # noqa: BLE001 - any peer failure is a miss, never a crash
            err = type(e).__name__
        finally:
            signal.alarm(0)
        dt = time.perf_counter() - t
        out = None
        if os.path.exists(out_path):
            with open(out_path) as f:
                out = f.read()
        return key, out, dt, err


# ------------------------------------------------------------------ main

@dataclass
class Tally:
    versions: int = 0
    cases: int = 0
    right: int = 0
    unparsable: int = 0
    errors: int = 0
    kept: int = 0
    times: list[float] = field(default_factory=list)

    def add(self, other: Tally) -> None:
        self.versions += other.versions
        self.cases += other.cases
        self.right += other.right
        self.unparsable += other.unparsable
        self.errors += other.errors
        self.kept += other.kept
        self.times += other.times

    def acc(self) -> str:
        return f"{self.right / self.cases:.3f}" if self.cases else "-"

    def kept_frac(self) -> str:
        return f"{self.kept / self.versions:.2f}" if self.versions else "-"

    def ms(self) -> str:
        return f"{1000 * statistics.median(self.times):.0f}" if self.times else "-"


def sample(items: list, n: int) -> list:  # type: ignore[type-arg]
    if n <= 0 or len(items) <= n:
        return items
    step = (len(items) - 1) / (n - 1) if n > 1 else 1
    return [items[round(i * step)] for i in range(n)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mirror-root", default="/work/.mirror")
    ap.add_argument("--clone", action="store_true",
                    help="git clone --bare the histories missing under --mirror-root (network)")
    ap.add_argument("--case", action="append", help="OWNER/NAME:PATH (repeatable; default: --set)")
    ap.add_argument("--set", choices=tuple(SETS), default="dev",
                    help="dev: the histories the matcher was developed on; held-out: histories "
                         "never looked at while developing it; all: both")
    ap.add_argument("--probes", type=int, default=4)
    ap.add_argument("--kind", choices=("after", "first", "fuzzy", "lineage"), default="after",
                    help="after: probe right after a simple statement (the headline number); "
                         "first: probe as the first statement of a loop/if/with/def body; "
                         "fuzzy: probe after assignments that were edited in most past "
                         "versions (the edited-anchor score, truth: the one assignment of the "
                         "logged name); lineage: probe after statements whose line was edited "
                         "in most past versions (truth: the line followed through diffs, unless "
                         "it lands on a statement today still has unchanged or before the logged name is "
                         "bound there)")
    ap.add_argument("--max-versions", type=int, default=0, help="per file, evenly spaced (0: all)")
    ap.add_argument("--flordb-sample", type=int, default=12,
                    help="versions per file given to FlorDB (slow: ~15 s per probe on 1,500 lines)")
    ap.add_argument("--no-flordb", action="store_true")
    ap.add_argument("--flordb-timeout", type=int, default=120)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--show-misses", action="store_true")
    args = ap.parse_args()
    cases = [tuple(c.split(":", 1)) for c in args.case] if args.case else SETS[args.set]

    totals = {k: Tally() for k in ("gitflor", "gitflor@flordb", "flordb", "merge", "fuzzy",
                                   "fuzzy-merge")}
    read_before_def = 0
    # Cases whose anchor's loop depth changed: [cases, git-flor right].
    other_depth = {"exact": [0, 0], "edited": [0, 0]}
    rows = []
    flordb_jobs = []
    flordb_jobs_src: dict[str, str] = {}
    flordb_meta: dict[str, tuple[str, list[Probe], list[Probe]]] = {}
    work = tempfile.mkdtemp(prefix="bench-propagate-")
    per_project: dict[str, dict[str, Tally]] = {}
    skipped = 0
    gitdirs = {repo: mirror(args.mirror_root, repo, args.clone) for repo in dict.fromkeys(r for r, _ in cases)}
    for repo, path in cases:
        gitdir = gitdirs[repo]
        if gitdir is None:
            continue
        versions = history(gitdir, path)
        if len(versions) < 2:
            print(f"skipped {repo}:{path}: fewer than two versions of it in {gitdir}", file=sys.stderr)
            continue
        newest = versions[0][2]
        parsed = []
        for commit, _, src in versions[1:]:
            try:
                parsed.append((commit, src, ast.parse(src)))
            except SyntaxError:
                skipped += 1
        parsed = sample(parsed, args.max_versions)
        lineage = dict(zip((c for c, _, _ in versions), line_lineage([v[2] for v in versions])))
        lines_of = {c: Lines(t) for c, _, t in parsed} if args.kind == "lineage" else {}
        probes = choose_probes(newest, [t for _, _, t in parsed], args.probes, args.kind,
                               [(lines_of[c], lineage[c]) for c, _, _ in parsed] if lines_of else None)
        today, lines = add_probes(newest, probes)
        today_path = os.path.join(work, f"{repo.replace('/', '+')}+{path.replace('/', '+')}")
        with open(today_path, "w") as f:
            f.write(today)
        prop = Propagator(today)
        tallies = per_project.setdefault(repo, {k: Tally() for k in totals})
        fl_versions = {c for c, _, _ in sample(parsed, args.flordb_sample)}
        today_assigns = Assigns(ast.parse(newest))
        today_depths: dict[str, int] = {}
        today_counts = statement_counts(ast.parse(newest), today_depths)
        for commit, src, tree in parsed:
            depths: dict[str, int] = {}
            counts = statement_counts(tree, depths)
            live = [p for p in probes if counts.get(p.anchor) == 1]
            past_assigns = Assigns(tree)
            if args.kind == "lineage":
                fuzzy = [f for p in probes
                         if (f := lineage_case(lines_of[commit], lineage[commit], p, today_counts))]
            else:
                fuzzy = [f for p in probes if (f := fuzzy_case(today_assigns, past_assigns, p))]
            if not live and not fuzzy:
                continue
            # Anchors inside more or fewer loops (of their function) there than today: still
            # cases, counted apart too, since git-flor refuses to move a statement into or
            # out of a loop it relates to today's (and places it when the loop count changed
            # only because code moved into a helper or under a new outer loop).
            today_of = {p.name: today_depths.get(p.anchor) for p in probes}
            moved_live = [p for p in live if depths.get(p.anchor) != today_of[p.name]]
            moved_fuzzy = [f for f in fuzzy if depths.get(f.anchor) != today_of[f.name]]
            out, dt = run_gitflor(prop, src)
            read_before_def += reads_before_definition(out, probes)
            for t, moved in ((other_depth["exact"], moved_live), (other_depth["edited"], moved_fuzzy)):
                if moved:
                    t[0] += len(moved)
                    t[1] += score(out, probes, moved)[0]
            right, ok = score(out, probes, live)
            if live:
                _tally(tallies["gitflor"], len(live), right, ok, dt, layout_kept(out, src))
            if fuzzy:
                right_f, ok_f = score(out, probes, fuzzy)
                _tally(tallies["fuzzy"], len(fuzzy), right_f, ok_f, dt, layout_kept(out, src))
                if args.show_misses and right_f < len(fuzzy):
                    print(f"fuzzy miss {repo}:{path}@{commit[:10]} {right_f}/{len(fuzzy)}",
                          file=sys.stderr)
            if args.show_misses and right < len(live):
                print(f"miss {repo}:{path}@{commit[:10]} {right}/{len(live)}", file=sys.stderr)
            out_m, dt = run_merge(newest, today, src)
            if fuzzy:
                right_fm, ok_fm = score(out_m, probes, fuzzy)
                _tally(tallies["fuzzy-merge"], len(fuzzy), right_fm, ok_fm, dt,
                       layout_kept(out_m, src))
            if not live:
                continue
            right_m, ok = score(out_m, probes, live)
            _tally(tallies["merge"], len(live), right_m, ok, dt, layout_kept(out_m, src))
            if not args.no_flordb and commit in fl_versions:
                _tally(tallies["gitflor@flordb"], len(live), right, True, 0.0, True)
                for p in live:
                    key = f"{repo}|{path}|{commit}|{p.name}"
                    flordb_meta[key] = (repo, [p], [p])
                    flordb_jobs.append((key, today_path, lines[p.name], src, args.flordb_timeout))
                    flordb_jobs_src[key] = src
        rows.append((repo, path, len(versions)))

    if not rows:
        print("nothing measured: none of the histories is here (see the messages above)",
              file=sys.stderr)
        return 0
    if flordb_jobs:
        fl_by_version: dict[tuple[str, str, str], list[tuple[int, int, bool, float, str]]] = {}
        cwd = os.getcwd()
        os.chdir(work)
        subprocess.run(["git", "init", "-q", "."], check=True)
        with mp.Pool(args.workers, maxtasksperchild=20) as pool:
            for done, (key, out, dt, err) in enumerate(
                    pool.imap_unordered(flordb_task, flordb_jobs), 1):
                if done % 25 == 0 or done == len(flordb_jobs):
                    print(f"flordb: {done}/{len(flordb_jobs)} calls", file=sys.stderr, flush=True)
                repo, path, commit, _ = key.split("|")
                p = flordb_meta[key][1][0]
                right, ok = score(out, [p], [p])
                kept = layout_kept(out, flordb_jobs_src[key])
                fl_by_version.setdefault((repo, path, commit), []).append(
                    (int(kept), right, ok, dt, err))
        os.chdir(cwd)
        for (repo, _, _), results in fl_by_version.items():
            t = per_project[repo]["flordb"]
            t.versions += 1
            t.cases += len(results)
            t.right += sum(r[1] for r in results)
            t.unparsable += int(any(not r[2] for r in results))
            t.errors += sum(1 for r in results if r[4])
            t.kept += int(all(r[0] for r in results))
            t.times.append(sum(r[3] for r in results))

    head = (f"{'project':32} {'vers':>5} {'cases':>5} | {'git-flor':>8} {'unpars':>6} {'kept':>4} "
            f"{'ms':>4} | {'merge-file':>10} {'unpars':>6} {'kept':>4} {'ms':>3} | {'flordb':>6} "
            f"{'vers':>4} {'unpars':>6} {'kept':>4} {'errs':>4} {'ms':>6} {'git-flor same':>13}")
    print(head)
    print("-" * len(head))
    for repo, tallies in per_project.items():
        for k in totals:
            totals[k].add(tallies[k])
        print(_row(repo, tallies))
    print("-" * len(head))
    print(_row("TOTAL", totals))
    fz, fm = totals["fuzzy"], totals["fuzzy-merge"]
    print(f"\nedited anchors ({args.kind if args.kind in ('fuzzy', 'lineage') else 'fuzzy'}): git-flor {fz.acc()} of {fz.cases} cases in {fz.versions} "
          f"versions ({fz.unparsable} unparsable, kept {fz.kept_frac()}); merge-file {fm.acc()}")
    print(f"git-flor outputs reading a probed name before any definition of it: {read_before_def}")
    (ne, pe), (nf, pf) = other_depth["exact"], other_depth["edited"]
    print(f"of these, anchors inside more or fewer loops there than today: {ne} exact cases "
          f"(git-flor placed {pe} right), {nf} edited-anchor cases ({pf} right)")
    files = ", ".join(f"{r}:{p} ({n} versions)" for r, p, n in rows)
    print(f"\nfiles: {files}\noriginal versions that do not parse as Python 3 (skipped): {skipped}")
    print("cases = (version, probe) pairs whose anchor occurs exactly once in that version; "
          "'git-flor same' = git-flor on exactly FlorDB's sampled cases; ms = median per version;\n"
          "kept = share of versions whose output is the past file byte for byte plus the new "
          "lines; errs = FlorDB exceptions and timeouts")
    return 0


def layout_kept(out: str | None, past: str) -> bool:
    """Is the output the past file plus probe/import lines, every other byte as it was?"""
    if out is None:
        return False

    def strip(text: str) -> list[str]:
        return [line for line in text.split("\n")
                if "probe_" not in line and line.strip() != "import git_flor as flor"]

    return strip(out) == strip(past)


def _tally(t: Tally, cases: int, right: int, ok: bool, dt: float, kept: bool) -> None:
    t.versions += 1
    t.kept += int(kept)
    t.cases += cases
    t.right += right
    t.unparsable += 0 if ok else 1
    t.times.append(dt)


def _row(name: str, t: dict[str, Tally]) -> str:
    g, m, f, gs = t["gitflor"], t["merge"], t["flordb"], t["gitflor@flordb"]
    return (f"{name:32} {g.versions:>5} {g.cases:>5} | {g.acc():>8} {g.unparsable:>6} "
            f"{g.kept_frac():>4} {g.ms():>4} | {m.acc():>10} {m.unparsable:>6} {m.kept_frac():>4} "
            f"{m.ms():>3} | {f.acc():>6} {f.versions:>4} {f.unparsable:>6} {f.kept_frac():>4} "
            f"{f.errors:>4} {f.ms():>6} {gs.acc():>13}")


if __name__ == "__main__":
    raise SystemExit(main())
