"""Which variables of a training script are *state* worth a fingerprint, read with :mod:`ast`.

Verified replay (docs/design.md §7) compares, at the end of outer-loop
iterations, a fingerprint of the state the original run had with the state the
replay has. That only works if the fingerprint leaves out what legitimately
differs between two recordings of the same deterministic code — otherwise every
segment would "diverge" and fall back for nothing:

- **iteration temporaries**: names the outer-loop body assigns afresh each
  iteration and that are not loop-carried (``loss``, ``xb``, a nested loop's
  variables). A replay that skips a nested loop never assigns them, and they
  flow into no later iteration;
- **host-derived values**: anything computed from clocks, process ids, host
  names, temporary or absolute paths (``t0 = time.time()``, a throughput
  estimate from ``dt``, ``out = os.path.abspath("out")``: a replay runs at
  another time, in another directory), found by a taint pass to a fixpoint.

It also finds the module-level names that the script's functions declare
``global`` and assign (a ``global step`` bumped in a helper): a checkpoint must
save them, since the loop body does not assign them where the carried-variable
analysis could see it.
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass

#: Calls whose result depends on the host, the clock or the directory, not on the computation.
HOST_CALLS = frozenset({
    "time", "time_ns", "perf_counter", "perf_counter_ns", "monotonic", "monotonic_ns",
    "process_time", "process_time_ns", "thread_time", "now", "utcnow", "today", "getpid",
    "getppid", "gethostname", "uuid1", "uuid4", "getcwd", "cwd", "abspath", "realpath",
    "resolve", "expanduser", "gettempdir", "mkdtemp", "mkstemp", "NamedTemporaryFile",
    "TemporaryDirectory", "urandom", "memory_allocated", "max_memory_allocated",
    "getrusage", "cpu_percent", "virtual_memory",
})
#: Names whose value is the host's: the script's own path differs in a replay's scratch copy.
HOST_NAMES = frozenset({"__file__"})


@dataclass(frozen=True)
class StateScope:
    """What the fingerprint and the checkpoint read from a script's frames (see module doc)."""

    #: names assigned in the outer-loop body (any depth, not in nested functions)
    body_writes: frozenset[str]
    #: names (anywhere in the module) whose value derives from the host or the clock
    host_derived: frozenset[str]
    #: module-level names the module's functions declare ``global`` (or ``nonlocal``) and assign
    declared_global: frozenset[str]


EMPTY = StateScope(frozenset(), frozenset(), frozenset())


@functools.lru_cache(maxsize=64)
def analyse(source: str, lineno: int) -> StateScope:
    """The state scope of the ``for`` at ``lineno`` (its header's first line) in ``source``."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return EMPTY
    loop = next(
        (n for n in ast.walk(tree) if isinstance(n, (ast.For, ast.AsyncFor))
         and n.lineno <= lineno <= n.iter.end_lineno),  # type: ignore[operator]
        None,
    )
    body_writes = frozenset(_writes(loop.body)) if loop is not None else frozenset()
    return StateScope(body_writes, frozenset(_host_derived(tree)), frozenset(_declared_global(tree)))


def _writes(body: list[ast.stmt]) -> set[str]:
    out: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            if not isinstance(node, ast.Lambda):
                out.add(node.name)
            return
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            out.add(node.id)
        for child in ast.iter_child_nodes(node):
            visit(child)

    for stmt in body:
        visit(stmt)
    return out


def _call_name(call: ast.Call) -> str | None:
    f = call.func
    if isinstance(f, ast.Attribute):
        return f.attr
    return f.id if isinstance(f, ast.Name) else None


def _is_host(expr: ast.AST, tainted: set[str]) -> bool:
    for node in ast.walk(expr):
        if isinstance(node, ast.Call) and _call_name(node) in HOST_CALLS:
            return True
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and (
            node.id in tainted or node.id in HOST_NAMES
        ):
            return True
    return False


def _targets(node: ast.AST) -> set[str]:
    """Names a target binds or updates (``x``, ``a, b``, and the root of ``x.y`` / ``x[k]``)."""
    out: set[str] = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name):
            out.add(sub.id)
    return out


def _host_derived(tree: ast.Module) -> set[str]:
    """Names assigned from host-derived expressions, transitively (a fixpoint over assignments)."""
    flows: list[tuple[set[str], ast.AST]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            flows.append((set().union(*(_targets(t) for t in node.targets)), node.value))
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)) and node.value is not None:
            flows.append((_targets(node.target), node.value))
        elif isinstance(node, (ast.For, ast.AsyncFor)):
            flows.append((_targets(node.target), node.iter))
        elif isinstance(node, ast.withitem) and node.optional_vars is not None:
            flows.append((_targets(node.optional_vars), node.context_expr))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            # ``times.append(time.time() - t0)``: the container holds host values now
            root = node.func.value
            while isinstance(root, (ast.Attribute, ast.Subscript)):
                root = root.value
            if isinstance(root, ast.Name):
                for arg in [*node.args, *(k.value for k in node.keywords)]:
                    flows.append(({root.id}, arg))
    tainted: set[str] = set()
    changed = True
    while changed:
        changed = False
        for names, expr in flows:
            if not names <= tainted and _is_host(expr, tainted):
                tainted |= names
                changed = True
    return tainted


def _declared_global(tree: ast.Module) -> set[str]:
    out: set[str] = set()
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        declared: set[str] = set()
        for node in ast.walk(fn):
            if isinstance(node, ast.Global):
                declared |= set(node.names)
        if not declared:
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)) and node.id in declared:
                out.add(node.id)
            elif isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name) and node.target.id in declared:
                out.add(node.target.id)
    return out
