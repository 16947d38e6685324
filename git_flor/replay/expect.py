"""How many values a replay job must bring back: never "0 values, exit 0".

A statement that runs unconditionally in the outer loop's body logs at least one
value in every iteration it runs; one in a nested ``flor.loop`` of it, or before
or after the loop, at least one per job. A job that covered
iterations and came back with fewer values than that did not compute what it
was asked to (a helper never called, a loop shape the plan misread, a restore
that skipped the statement) — that is a failure of the run, with a reason, not
a success with nothing in it. Statements under a condition (``if``, ``while``,
a plain ``for``, after a ``continue``/``break``) may legitimately log nothing,
so they get no expectation; a ``full`` re-execution is the truth by definition.
"""

from __future__ import annotations

import ast
from collections import Counter
from typing import Any

#: Nodes between a statement and its loop that make running it conditional.
_CONDITIONAL = (ast.If, ast.While, ast.For, ast.AsyncFor, ast.ExceptHandler, ast.IfExp, ast.BoolOp,
                ast.comprehension, ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp,
                ast.Match, ast.match_case, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
_EXITS = (ast.Continue, ast.Break, ast.Return, ast.Raise)


def expectations(source: str, positions: dict[str, list[Any]]) -> dict[str, str]:
    """Per name: ``"each"`` (a value in every covered outer iteration), ``"once"`` (at least one), or absent."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return {}
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    calls: dict[str, list[ast.Call]] = {}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, (ast.Attribute, ast.Name))
                and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id) == "log"
                and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            calls.setdefault(node.args[0].value, []).append(node)
    out: dict[str, str] = {}
    for name, found in positions.items():
        wheres = {p.where for p in found}
        if not found or "unknown" in wheres or name not in calls or any(getattr(p, "via_call", False) for p in found):
            continue
        if not any(_unconditional(c, parents) for c in calls[name]):
            continue
        # In a nested loop it runs only if that loop has iterations (a loader may be empty).
        out[name] = "each" if "epoch" in wheres else "once"
    return out


def _is_flor_loop(node: ast.AST) -> bool:
    """A ``for`` over ``flor.loop(...)``, also wrapped: ``enumerate(flor.loop(...))``, ``tqdm(...)``."""
    it = getattr(node, "iter", None)
    return isinstance(node, (ast.For, ast.AsyncFor)) and it is not None and any(
        isinstance(c, ast.Call) and isinstance(c.func, (ast.Attribute, ast.Name))
        and (c.func.attr if isinstance(c.func, ast.Attribute) else c.func.id) == "loop"
        for c in ast.walk(it))


def _unconditional(call: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """No condition between the call and its flor loops (above the outermost one nothing matters)."""
    line = getattr(call, "lineno", 0)
    cur, conditional, seen_loop = call, False, False
    while cur in parents:
        parent = parents[cur]
        if _is_flor_loop(parent) and cur in parent.body:  # type: ignore[attr-defined]
            if conditional or _early_exit(parent.body, line):  # type: ignore[attr-defined]
                return False
            seen_loop = True
        elif isinstance(parent, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return seen_loop or not (conditional or _early_exit(parent.body, line))
        elif _main_guard(parent) and cur in parent.body:  # type: ignore[attr-defined]
            pass
        elif isinstance(parent, _CONDITIONAL) or (isinstance(parent, ast.Try) and cur not in parent.body):
            conditional = True
        cur = parent
    return seen_loop or not conditional


def _early_exit(body: list[ast.stmt], line: int) -> bool:
    return any(isinstance(n, _EXITS) and getattr(n, "lineno", line) < line for s in body for n in ast.walk(s))


def _main_guard(node: ast.AST) -> bool:
    """``if __name__ == "__main__":`` — the script's body, not a condition."""
    test = getattr(node, "test", None)
    return (isinstance(node, ast.If) and isinstance(test, ast.Compare) and isinstance(test.left, ast.Name)
            and test.left.id == "__name__")


def shortfall(target: Any, job: Any, records: list[tuple[str, Any, Any]]) -> str | None:
    """Why this job's values fall short of what its statements log, or None."""
    expect: dict[str, str] = getattr(target, "expect", {}) or {}
    if job.mode == "full":
        return None
    per_iter: Counter[tuple[str, int]] = Counter()
    total: Counter[str] = Counter()
    entries = target.entries
    for name, _, pos in records:
        total[name] += 1
        if pos and pos[0][0] == target.outer_name:
            per_iter[(name, entries.flat_of(pos))] += 1
    problems = []
    for name in job.names:
        kind = expect.get(name)
        if kind == "each" and job.mode in ("skip", "reexec"):
            # The iteration a `break` left may not have run the statement (or any of the body:
            # `zip(flor.loop(...), shorter)` enters one more item than it uses).
            missing = [i for i in job.epochs if per_iter[(name, i)] == 0 and i not in entries.broken]
            if missing:
                problems.append(f"{name} logged no value in iteration(s) {_short(missing)} although the "
                                "statement runs in every iteration")
        elif kind == "once" and total[name] == 0:
            problems.append(f"{name} logged no value although the statement runs unconditionally")
    return "; ".join(problems) or None


def _short(items: list[int]) -> str:
    return ",".join(map(str, items[:8])) + (f",… ({len(items)} in all)" if len(items) > 8 else "")
