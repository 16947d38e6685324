"""Where a hindsight statement sits in the (propagated) script, and how cheaply it can be replayed.

Read with :mod:`ast` on the source that will actually run. The position decides
the plan (docs/design.md §4): before the outermost ``flor.loop`` → run the prefix only;
after it → restore the last checkpoint and run the suffix; in the outer body
outside nested loops → per requested iteration restore the previous
checkpoint and *skip* nested ``flor.loop``s, if that is safe; inside a nested
loop, or whenever skipping is not provably safe → re-execute the requested
iterations from the previous safe checkpoint. Never a wrong value fast.

Skipping a nested loop replaces it with a restore of the end of the iteration
(objects, saved loop-carried variables, the RNG as it was when that loop
ended). A statement after a skipped loop therefore sees the right state only
if (a) everything it reads — and everything the code between the loop and it
reads — that the skipped loops assign is restored by the checkpoint, and (b)
that code does not change checkpointed state (``sched.step()``, ``lr /= 4``):
it would run a second time on top of the restored end-of-iteration state.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

#: Methods that leave a model/optimizer in the same state when called twice.
IDEMPOTENT = frozenset({"eval", "train", "zero_grad", "requires_grad_", "cpu", "cuda", "to"})


@dataclass(frozen=True)
class Position:
    name: str
    where: str  # "prefix" | "suffix" | "epoch" | "step" | "unknown"
    skip_safe: bool = False
    reason: str = ""
    line: int = 0
    #: names the code after a skipped loop changes and the statement never reads: a skip
    #: restores their end-of-iteration state early, which is harmless (verification ignores them)
    ignore: frozenset[str] = frozenset()
    #: in a function the outer loop calls: it may be called conditionally, so no value count is expected
    via_call: bool = False
    #: lines of call statements of the outer body (``train(model, opt)``, no ``flor.loop`` inside)
    #: a skip replaces by a restore of the end of the iteration — speculatively: the original's
    #: values after them and its iteration-end fingerprint must agree, or the segment falls back
    skip_calls: frozenset[int] = frozenset()
    #: names the functions those calls run log: a skip does not produce them (not expected)
    skip_logged: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Shape:
    """What the planner needs to know about one version of the script."""

    positions: dict[str, list[Position]]
    outer_loop: str | None  # the outer flor.loop's name, when it is a literal
    registered: frozenset[str]  # variable names passed to flor.checkpointing(...)


def analyse(
    source: str,
    names: list[str],
    saved_vars: frozenset[str] = frozenset(),
    registered_types: dict[str, str] | None = None,
) -> Shape:
    """Positions of ``names``' statements. ``saved_vars``: loop-carried variables the run's
    checkpoints hold; ``registered_types``: ``flor.checkpointing`` keyword → type, as recorded."""
    tree = ast.parse(source)
    module_alias, direct = _aliases(tree)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}

    def is_flor(call: ast.AST, attr: str) -> bool:
        if not isinstance(call, ast.Call):
            return False
        f = call.func
        if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
            return f.attr == attr and f.value.id in module_alias
        return isinstance(f, ast.Name) and direct.get(f.id) == attr

    flor_loops = [n for n in ast.walk(tree) if isinstance(n, (ast.For, ast.AsyncFor))
                  and any(is_flor(c, "loop") for c in ast.walk(n.iter))]
    flor_loops.sort(key=lambda n: (n.lineno, n.col_offset))
    calls = _Calls(tree, parents, flor_loops)
    outer = next((lp for lp in flor_loops
                  if not any(_inside(lp, o, parents) for o in flor_loops if o is not lp)
                  and not calls.nested_by_call(lp)), None)
    var_of = {
        kw.arg: kw.value.id
        for n in ast.walk(tree)
        if is_flor(n, "checkpointing")
        for kw in n.keywords  # type: ignore[attr-defined]
        if isinstance(kw.value, ast.Name) and kw.arg
    }
    registered = frozenset(var_of.values())
    kinds = {var_of[k]: t for k, t in (registered_types or {}).items() if k in var_of}
    checkpointed = registered | saved_vars
    # Method calls on modules (np.mean, flor.log) change no training state.
    imported = frozenset(
        (a.asname or a.name).split(".")[0]
        for n in ast.walk(tree)
        if isinstance(n, (ast.Import, ast.ImportFrom))
        for a in n.names
    )
    nested = [lp for lp in flor_loops if outer is not None and lp is not outer and _inside(lp, outer, parents)]
    positions: dict[str, list[Position]] = {n: [] for n in names}
    for node in ast.walk(tree):
        if not (is_flor(node, "log") and node.args and isinstance(node.args[0], ast.Constant)):  # type: ignore[attr-defined]
            continue
        name = node.args[0].value  # type: ignore[attr-defined]
        if name not in positions:
            continue
        positions[name].append(
            _position(name, node, outer, nested, parents, checkpointed, imported,
                      _Links(registered, kinds, _constructed_with(tree)), calls)
        )
    outer_name = None
    if outer is not None:
        head = next(c for c in ast.walk(outer.iter) if is_flor(c, "loop"))
        if head.args and isinstance(head.args[0], ast.Constant):  # type: ignore[attr-defined]
            outer_name = head.args[0].value  # type: ignore[attr-defined]
    return Shape(positions, outer_name, registered)


class _Calls:
    """Which of the script's own functions each piece of code calls, and which of them run a ``flor.loop``.

    A ``flor.loop`` in a helper (``train_one_epoch()``) called from the outer loop's body is
    nested *by call*: at run time it is a nested loop, whatever its place in the file.
    Calls are resolved by name: ``f(...)`` to a function ``f`` of the script, ``self.f(...)``
    to a method ``f`` of one of its classes (``model.train()`` is not the script's ``train``).
    """

    def __init__(self, tree: ast.AST, parents: dict[ast.AST, ast.AST], flor_loops: list[ast.AST]) -> None:
        self.parents = parents
        self.functions: dict[str, list[ast.AST]] = {}
        self.methods: dict[str, list[ast.AST]] = {}
        for n in ast.walk(tree):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                table = self.methods if isinstance(parents.get(n), ast.ClassDef) else self.functions
                table.setdefault(n.name, []).append(n)
        self.flor_loops = flor_loops
        self._reach: dict[int, frozenset[ast.AST]] = {}

    def callees(self, node: ast.AST) -> list[ast.AST]:
        """The script's functions ``node`` calls directly (not counting nested definitions), and
        those it hands to a call — ``optimizer.step(closure)`` runs ``closure``."""
        out: list[ast.AST] = []
        for n in ast.walk(node):
            if not isinstance(n, ast.Call):
                continue
            f = n.func
            if isinstance(f, ast.Name):
                out.extend(self.functions.get(f.id, []))
            elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id in ("self", "cls"):
                out.extend(self.methods.get(f.attr, []))
            for a in self.handed(n):
                out.extend(self.functions[a])
        return out

    def handed(self, call: ast.Call) -> list[str]:
        """The script's functions passed to ``call`` as arguments (by name)."""
        return [a.id for a in [*call.args, *(k.value for k in call.keywords)]
                if isinstance(a, ast.Name) and a.id in self.functions]

    def reach(self, node: ast.AST) -> frozenset[ast.AST]:
        """Every function of the script ``node`` runs, directly or through other calls."""
        key = id(node)
        if key not in self._reach:
            seen: set[ast.AST] = set()
            todo = self.callees(node)
            while todo:
                fn = todo.pop()
                if fn not in seen:
                    seen.add(fn)
                    todo.extend(self.callees(fn))
            self._reach[key] = frozenset(seen)
        return self._reach[key]

    def runs_flor_loop(self, node: ast.AST) -> bool:
        """``node`` calls (at any depth) a function of the script that has a ``flor.loop``."""
        fns = self.reach(node)
        return any(_inside(lp, fn, self.parents) for lp in self.flor_loops for fn in fns)

    def nested_by_call(self, loop: ast.AST) -> bool:
        """``loop`` sits in a function that the body of another ``flor.loop`` calls."""
        fns = {f for f in _enclosing_functions(loop, self.parents)}
        if not fns:
            return False
        return any(
            other is not loop and not _inside(other, fn, self.parents) and self.reach(other) & {fn}
            for other in self.flor_loops for fn in fns
        )


def _enclosing_functions(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> list[ast.AST]:
    out = []
    cur = parents.get(node)
    while cur is not None:
        if isinstance(cur, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out.append(cur)
        cur = parents.get(cur)
    return out


def flor_aliases(tree: ast.AST) -> tuple[set[str], dict[str, str]]:
    """(names git_flor is imported as, ``from git_flor import X as Y`` → {Y: X})."""
    return _aliases(tree)


def _aliases(tree: ast.AST) -> tuple[set[str], dict[str, str]]:
    modules: set[str] = set()
    direct: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "git_flor":
                    modules.add(a.asname or a.name)
        elif isinstance(node, ast.ImportFrom) and node.module == "git_flor":
            for a in node.names:
                direct[a.asname or a.name] = a.name
    return modules, direct


def _inside(node: ast.AST, container: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    cur = parents.get(node)
    while cur is not None:
        if cur is container:
            return True
        cur = parents.get(cur)
    return False


def _enclosing_function(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> ast.AST | None:
    cur = parents.get(node)
    while cur is not None:
        if isinstance(cur, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            return cur
        cur = parents.get(cur)
    return None


def _position(
    name: str,
    call: ast.AST,
    outer: ast.For | ast.AsyncFor | None,
    nested: list[ast.AST],
    parents: dict[ast.AST, ast.AST],
    checkpointed: frozenset[str],
    imported: frozenset[str],
    links: _Links,
    calls: _Calls,
) -> Position:
    line = call.lineno  # type: ignore[attr-defined]
    if outer is None:
        return Position(name, "unknown", reason="no flor.loop in the script", line=line)
    fn = _enclosing_function(call, parents)
    if fn is not None and not _inside(outer, fn, parents):
        return _in_helper(name, call, fn, outer, nested, parents, calls)
    if not _inside(call, outer, parents):
        if line > outer.lineno and not isinstance(outer.target, ast.Name) \
                and _reads(_statement(call, parents)) & _target_names(outer.target):
            # After `for k, epoch in enumerate(flor.loop(...))` a restore cannot set `k`.
            return Position(name, "unknown", reason="reads the outer loop's variables after it", line=line)
        return Position(name, "prefix" if line < outer.lineno else "suffix", line=line)
    if any(_inside(call, lp, parents) for lp in nested):
        return Position(name, "step", reason="inside a nested loop", line=line)
    body_stmt = _body_statement(call, outer, parents)
    if calls.runs_flor_loop(body_stmt):
        return Position(name, "epoch", reason="shares a statement with a call that runs a nested flor.loop",
                        line=line)
    units = [s for s in outer.body if s.end_lineno is not None and s.end_lineno < line  # type: ignore[attr-defined]
             and calls.runs_flor_loop(s)]
    lexical = [lp for lp in nested if lp.end_lineno is not None and lp.end_lineno < line]  # type: ignore[attr-defined]
    skipped = _call_skips(outer, body_stmt, calls, checkpointed, imported, lexical + units)
    speculative = {"skip_calls": frozenset(s.lineno for s in skipped),
                   "skip_logged": frozenset(_logged_in(skipped, calls))}
    before_calls = [s for s in skipped if s.lineno < line]
    before = lexical + units + before_calls
    if not skipped and not any(_inside(lp, outer, parents) for lp in nested) \
            and not any(calls.runs_flor_loop(s) for s in outer.body):  # type: ignore[attr-defined]
        # A skip would restore the iteration before and run this one whole: a re-execution
        # paying a restore per iteration. Re-executing from a checkpoint is that work, once.
        return Position(name, "epoch", reason="the iteration has no nested loop or call to skip", line=line)
    if not before:
        # Calls after the statement may still be skipped: code after them that changes restored
        # state changes it twice, which the statement, already run, cannot see.
        after_skip = [s for s in outer.body if skipped and s.lineno > min(c.lineno for c in skipped)
                      and s not in skipped]
        aliases = _aliases_of(outer, checkpointed)
        twice = links.closure(set().union(*(_changes(s, checkpointed, aliases) for s in after_skip)))
        return Position(name, "epoch", skip_safe=True, line=line, ignore=frozenset(twice), **speculative)
    if _reads_gradients(body_stmt):
        return Position(name, "epoch", reason="reads gradients (`.grad`), which a skipped loop leaves and no "
                                              "checkpoint holds", line=line)
    skipped_writes: set[str] = set()
    for lp in before:
        skipped_writes |= _writes(lp) - imported
    for unit in units:
        why = _helper_skip_unsafe(unit, calls, parents)
        if why:
            return Position(name, "epoch", reason=why, line=line)
        skipped_writes |= {g for fn in calls.reach(unit) for n in ast.walk(fn) if isinstance(n, ast.Global)
                           for g in n.names}
        # what the helper is handed it may change (`train_one_epoch(model, opt)`)
        skipped_writes |= {a.id for c in ast.walk(unit) if isinstance(c, ast.Call)
                           for a in [*c.args, *(k.value for k in c.keywords)] if isinstance(a, ast.Name)} - imported
    for stmt in before_calls:
        skipped_writes |= _call_writes(stmt, calls, imported)
    first_end = min(lp.end_lineno for lp in before)  # type: ignore[attr-defined]
    between = [s for s in outer.body if first_end < s.lineno < body_stmt.lineno and s not in before]
    reads = set().union(*(_reads(s) | _free_reads(s, calls) for s in [body_stmt, *between]))
    unrestored = sorted((reads & skipped_writes) - checkpointed)
    if unrestored:
        return Position(name, "epoch", reason=f"reads `{unrestored[0]}`, which a skipped loop assigns and no checkpoint restores", line=line)
    # The restore gives the state at the *end* of the iteration: anything the code after
    # the skipped loop changes (before or after the statement) must not be read by it.
    after = [s for s in outer.body if s.lineno > first_end and s not in before]
    aliases = _aliases_of(outer, checkpointed)
    changed = links.closure(set().union(*(_changes(s, checkpointed, aliases) for s in after)) if after else set())
    stale = sorted(changed & reads)
    if stale:
        return Position(name, "epoch", reason=f"reads `{stale[0]}`, which code after the skipped loop changes", line=line)
    # That code runs again on the end-of-iteration state: where it decides to leave the loop
    # on what it changes (``bad += 1; if bad >= patience: break``), a skip would leave it early.
    steer = sorted(changed & set().union(set(), *(_reads(s) for s in after if _leaves_loop(s))))
    if steer:
        return Position(name, "epoch", reason=f"code after the skipped loop changes `{steer[0]}` and leaves the "
                                              "loop on it", line=line)
    return Position(name, "epoch", skip_safe=True, line=line, ignore=frozenset(changed - reads), **speculative)


def _call_skips(
    outer: ast.AST, stmt: ast.stmt, calls: _Calls, checkpointed: frozenset[str], imported: frozenset[str],
    skipped_loops: list[ast.AST],
) -> list[ast.stmt]:
    """Call statements of the outer body a skip may replace by a restore of the end of the iteration.

    ``train(model, opt)`` or ``loss = train(...)`` calling a function of the script that runs
    no ``flor.loop``: the iteration's work sits in it, and a checkpoint holds what it leaves
    when what it changes is checkpointed. A call is kept (run) when the statement, or a
    statement before it that is not skipped (or a function that one calls), reads a name the
    call assigns, is handed, or mutates that no checkpoint restores; or when a name it
    assigns is read anywhere else in the body (a skip leaves it unbound). Which calls are
    safe is a guess about code the planner cannot see into (C extensions, aliasing), so the
    skip is speculative: the child compares the original's values after the call and its
    iteration-end fingerprint, and a mismatch re-executes the segment (docs/design.md §7).
    """
    body = [s for s in outer.body if s is not stmt and s not in skipped_loops]  # type: ignore[attr-defined]
    candidates = [s for s in body if _script_call(s, calls, checkpointed) and not calls.runs_flor_loop(s)]
    if not candidates:
        return []
    others = [s for s in outer.body if s is not stmt]  # type: ignore[attr-defined]
    for s in list(candidates):
        targets = _assigned(s)
        if targets and any(targets & _reads(o) for o in others if o is not s):
            candidates.remove(s)  # a skip would leave a name the body reads unbound
    changed = True
    while changed:
        changed = False
        needed = [stmt] + [s for s in body if s.lineno < stmt.lineno and s not in candidates]
        reads = set().union(*(_reads(s) | _free_reads(s, calls) for s in needed))
        for s in list(candidates):
            if s.lineno < stmt.lineno and (_call_writes(s, calls, imported) & reads) - checkpointed:
                candidates.remove(s)
                changed = True
    return candidates


def _script_call(stmt: ast.stmt, calls: _Calls, checkpointed: frozenset[str] = frozenset()) -> bool:
    """A whole statement that runs the script's own code: ``f(...)`` / ``x = f(...)`` /
    ``self.f(...)``, ``f`` a function of the script; or a method of a checkpointed object
    handed one (``optimizer.step(closure)``: the checkpoint restores the receiver, the
    closure is the iteration's work)."""
    if isinstance(stmt, ast.Expr):
        value = stmt.value
    elif isinstance(stmt, ast.Assign) and all(isinstance(t, (ast.Name, ast.Tuple)) for t in stmt.targets):
        value = stmt.value
    else:
        return False
    if not isinstance(value, ast.Call):
        return False
    f = value.func
    if isinstance(f, ast.Name):
        return f.id in calls.functions
    if not isinstance(f, ast.Attribute):
        return False
    if isinstance(f.value, ast.Name) and f.value.id in ("self", "cls"):
        return f.attr in calls.methods
    return _root(f.value) in checkpointed and bool(calls.handed(value))


def _assigned(stmt: ast.stmt) -> set[str]:
    return {n.id for t in getattr(stmt, "targets", []) for n in ast.walk(t) if isinstance(n, ast.Name)}


def _call_writes(stmt: ast.stmt, calls: _Calls, imported: frozenset[str]) -> set[str]:
    """What a skipped call statement may change: what it assigns, what it hands the call, and the
    module-level names the functions it runs declare ``global`` or mutate (``counter["n"] += 1``)."""
    out = _assigned(stmt) | _handed_and_changed(stmt, calls)
    func = stmt.value.func  # type: ignore[attr-defined]
    if isinstance(func, ast.Attribute):
        out.add(_root(func.value) or "")  # the receiver of ``optimizer.step(closure)``
    for fn in calls.reach(stmt):
        local = _locals(fn)
        out |= {g for n in ast.walk(fn) if isinstance(n, (ast.Global, ast.Nonlocal)) for g in n.names}
        out |= {w for w in _writes(fn) if w not in local}
    return out - imported


def _handed_and_changed(stmt: ast.stmt, calls: _Calls) -> set[str]:
    """Names the call statement hands a function of the script that may change them.

    A parameter the function only reads (``X`` in ``xb = X[i:j]``, ``model`` in ``model(xb)``)
    is not changed; one it stores into, augments (``w -= ...`` is in place for arrays), calls
    a method on, or hands on to another call may be. Anything not mapped to a parameter
    (``*args``, a call inside the arguments) counts as changed.
    """
    call = stmt.value  # type: ignore[attr-defined]
    handed = [a.id for c in ast.walk(stmt) if isinstance(c, ast.Call)
              for a in [*c.args, *(k.value for k in c.keywords)] if isinstance(a, ast.Name)]
    f = call.func
    fns = calls.functions.get(f.id, []) if isinstance(f, ast.Name) else calls.methods.get(f.attr, [])
    if not fns or any(isinstance(a, ast.Starred) for a in call.args) or any(k.arg is None for k in call.keywords):
        return set(handed)
    out = {a.id for c in ast.walk(stmt) if isinstance(c, ast.Call) and c is not call
           for a in [*c.args, *(k.value for k in c.keywords)] if isinstance(a, ast.Name)}
    for fn in fns:
        params = [a.arg for a in [*fn.args.posonlyargs, *fn.args.args]]  # type: ignore[attr-defined]
        if isinstance(f, ast.Attribute):
            params = params[1:]  # self
        changed = _changed_params(fn)
        for i, a in enumerate(call.args):
            if isinstance(a, ast.Name) and (i >= len(params) or params[i] in changed):
                out.add(a.id)
        for k in call.keywords:
            if isinstance(k.value, ast.Name) and (k.arg not in params or k.arg in changed):
                out.add(k.value.id)
    return out


def _changed_params(fn: ast.AST) -> set[str]:
    """Names in ``fn`` that are changed in place: stored into, augmented, a method called on, handed on."""
    out: set[str] = set()
    for n in ast.walk(fn):
        if isinstance(n, (ast.Attribute, ast.Subscript)) and isinstance(n.ctx, ast.Store):
            out.add(_root(n) or "")
        elif isinstance(n, ast.AugAssign):
            out.add(_root(n.target) or "")
        elif isinstance(n, ast.Call):
            if isinstance(n.func, ast.Attribute):
                out.add(_root(n.func.value) or "")
            out |= {a.id for a in [*n.args, *(k.value for k in n.keywords)] if isinstance(a, ast.Name)}
    return out


def _free_reads(stmt: ast.AST, calls: _Calls) -> set[str]:
    """Module-level names the script's functions ``stmt`` runs read (``evaluate()`` reading ``lr``)."""
    return {n for fn in calls.reach(stmt) for n in _reads(fn) - _locals(fn)}


def _locals(fn: ast.AST) -> set[str]:
    args = fn.args  # type: ignore[attr-defined]
    params = {a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]}
    params |= {a.arg for a in (args.vararg, args.kwarg) if a is not None}
    declared = {g for n in ast.walk(fn) if isinstance(n, (ast.Global, ast.Nonlocal)) for g in n.names}
    stored = {n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    return (params | stored) - declared


def _logged_in(stmts: list[ast.stmt], calls: _Calls) -> set[str]:
    """Names ``flor.log``-ged (first argument a literal) in the functions these statements run."""
    return {c.args[0].value for s in stmts for fn in calls.reach(s) for c in ast.walk(fn)
            if isinstance(c, ast.Call) and isinstance(c.func, (ast.Attribute, ast.Name))
            and (c.func.attr if isinstance(c.func, ast.Attribute) else c.func.id) == "log"
            and c.args and isinstance(c.args[0], ast.Constant) and isinstance(c.args[0].value, str)}


def _leaves_loop(stmt: ast.AST) -> bool:
    """``stmt`` of the outer body holds a ``break``/``continue`` of that loop, a ``return`` or a ``raise``."""
    todo = [stmt]
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Return, ast.Raise)) or (isinstance(node, (ast.Break, ast.Continue))):
            return True
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
                continue
            if isinstance(child, (ast.For, ast.AsyncFor, ast.While)):
                # a break/continue in there is that loop's; a return or raise still leaves ours
                todo.extend(n for n in ast.walk(child) if isinstance(n, (ast.Return, ast.Raise)))
                continue
            todo.append(child)
    return False


def _in_helper(
    name: str, call: ast.AST, fn: ast.AST, outer: ast.AST, nested: list[ast.AST],
    parents: dict[ast.AST, ast.AST], calls: _Calls,
) -> Position:
    """A statement in a function of the script: placed by where that function is called from.

    Called from a nested loop (lexical or by call), or sitting in a ``flor.loop`` of its own
    that the outer body reaches → a step-level statement; called from the outer body →
    an epoch-level one, re-executed (its function's locals are in no checkpoint); called
    from nowhere in the outer loop → the whole run.
    """
    line = call.lineno  # type: ignore[attr-defined]
    if fn not in calls.reach(outer):
        return Position(name, "unknown", reason="inside a function called from elsewhere", line=line)
    inner = [lp for lp in calls.flor_loops if lp is not outer and not _inside(lp, outer, parents)
             and any(f in calls.reach(outer) for f in _enclosing_functions(lp, parents))]
    if any(_inside(call, lp, parents) for lp in nested + inner) \
            or any(fn in calls.reach(lp) for lp in nested + inner):
        return Position(name, "step", reason="inside a nested loop (in a function the outer loop calls)",
                        line=line, via_call=True)
    return Position(name, "epoch", reason="inside a function the outer loop calls", line=line, via_call=True)


def _helper_skip_unsafe(unit: ast.AST, calls: _Calls, parents: dict[ast.AST, ast.AST]) -> str | None:
    """Why the ``flor.loop`` a call in the outer body runs cannot be skipped like a nested one, or None.

    A skip replaces the helper's loop by a restore of the end of the iteration; the helper
    then goes on. That is right only if what it does after the loop reads nothing the loop
    assigned (its locals are in no checkpoint: ``return total / n`` would see ``total = 0``)
    and changes nothing (``sched.step()`` would run twice on the restored state). The loop
    must be in the called function itself: code of an intermediate caller is not analysed.
    """
    holders = [fn for fn in calls.reach(unit)
               if any(_inside(lp, fn, parents) for lp in calls.flor_loops)]
    for fn in calls.reach(unit):
        if fn not in holders and calls.runs_flor_loop(fn):
            return f"calls `{fn.name}`, which runs a flor.loop through another call"  # type: ignore[attr-defined]
    for fn in holders:
        fname = fn.name  # type: ignore[attr-defined]
        declared = {g for n in ast.walk(fn) if isinstance(n, (ast.Global, ast.Nonlocal)) for g in n.names}
        for lp in calls.flor_loops:
            if _enclosing_function(lp, parents) is not fn:
                continue
            if calls.runs_flor_loop(lp) or any(o is not lp and _inside(o, lp, parents) for o in calls.flor_loops):
                return f"`{fname}` has loops nested in its flor.loop"
            assigned = _writes(lp) - declared
            end = lp.end_lineno or lp.lineno  # type: ignore[attr-defined]
            tail = [s for s in ast.walk(fn) if isinstance(s, ast.stmt) and s.lineno > end
                    and _enclosing_function(s, parents) is fn]
            read = sorted({n.id for s in tail for n in ast.walk(s)
                           if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load) and n.id in assigned})
            if read:
                return f"`{fname}` reads `{read[0]}` after its flor.loop, which a skip does not restore"
            for s in tail:
                if isinstance(s, ast.Expr) and isinstance(s.value, ast.Call) \
                        and isinstance(s.value.func, ast.Attribute) and s.value.func.attr not in IDEMPOTENT:
                    return f"`{fname}` changes state after its flor.loop (line {s.lineno})"
                if isinstance(s, ast.AugAssign) or any(
                        isinstance(t, (ast.Attribute, ast.Subscript)) for t in getattr(s, "targets", [])):
                    return f"`{fname}` changes state after its flor.loop (line {s.lineno})"
    return None


def _statement(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> ast.AST:
    cur = node
    while not isinstance(cur, ast.stmt) and cur in parents:
        cur = parents[cur]
    return cur


def _target_names(target: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}


class _Links:
    """Registered objects that change each other: a scheduler its optimizer, an optimizer its model."""

    def __init__(
        self, registered: frozenset[str], kinds: dict[str, str], built_from: dict[str, set[str]] | None = None
    ) -> None:
        self.registered = registered
        self.kinds = kinds
        #: variable → the names passed when it was built (``sched = StepLR(opt, ...)``)
        self.built_from = built_from or {}

    def closure(self, changed: set[str]) -> set[str]:
        out = set(changed)
        # An object built from another changes that one when stepped (an unregistered
        # scheduler sets its optimizer's lr). One level: the optimizer's lr changing does
        # not change the model.
        for name in changed - self.registered:
            out |= self.built_from.get(name, set())
        optimizers = {v for v, t in self.kinds.items() if ".optim." in t and "lr_scheduler" not in t}
        unknown = self.registered - set(self.kinds)
        for name in changed & self.registered:
            kind = self.kinds.get(name, "")
            if "lr_scheduler" in kind:
                out |= optimizers
            elif name in optimizers or name in unknown:
                out |= self.registered  # an optimizer step (or an unknown object) may touch them all
        return out


def _body_statement(node: ast.AST, outer: ast.AST, parents: dict[ast.AST, ast.AST]) -> ast.stmt:
    cur = node
    while parents.get(cur) is not outer:
        cur = parents[cur]
    return cur  # type: ignore[return-value]


def _writes(node: ast.AST) -> set[str]:
    out: set[str] = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del)):
            out.add(n.id)
        elif isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute):
            root = _root(n.func.value)
            if root:
                out.add(root)
        elif isinstance(n, (ast.Attribute, ast.Subscript)) and isinstance(n.ctx, ast.Store):
            root = _root(n)
            if root:
                out.add(root)
    return out


def _reads(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def _root(node: ast.AST) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def _constructed_with(tree: ast.AST) -> dict[str, set[str]]:
    """``x = Something(a, b.c, k=d)`` → {"x": {"a", "b", "d"}} (object-building calls only)."""
    out: dict[str, set[str]] = {}
    for n in ast.walk(tree):
        if isinstance(n, ast.Assign) and isinstance(n.value, ast.Call):
            args = [*n.value.args, *(k.value for k in n.value.keywords)]
            roots = {r for r in (_root(a) for a in args) if r}
            for t in n.targets:
                key = t.id if isinstance(t, ast.Name) else _root(t)
                if key and roots:
                    out.setdefault(key, set()).update(roots - {key})
    return out


def _reads_gradients(stmt: ast.AST) -> bool:
    return any(isinstance(n, ast.Attribute) and n.attr in ("grad", "grads") for n in ast.walk(stmt))


def _aliases_of(outer: ast.AST, checkpointed: frozenset[str]) -> dict[str, str]:
    """Names that refer into a checkpointed object: ``for g in opt.param_groups``, ``p = w[0:2]``."""
    out: dict[str, str] = {}
    for n in ast.walk(outer):
        if isinstance(n, (ast.For, ast.comprehension)) and isinstance(n.target, ast.Name):
            root = _root(n.iter)
            if root in checkpointed:
                out[n.target.id] = root
        elif isinstance(n, ast.Assign) and len(n.targets) == 1 and isinstance(n.targets[0], ast.Name):
            root = _root(n.value)
            if root in checkpointed and not isinstance(n.value, ast.Call):
                out[n.targets[0].id] = root
    return out


def _changes(stmt: ast.AST, checkpointed: frozenset[str], aliases: dict[str, str] | None = None) -> set[str]:
    """Checkpointed names this statement changes in a way a second run would not repeat.

    Also through an alias (``for g in opt.param_groups: g["lr"] *= 0.5``) and an ``out=``
    argument (``np.clip(w, -1, 1, out=w)``).
    """
    aliases = aliases or {}
    out: set[str] = set()

    def root_of(node: ast.AST) -> str | None:
        root = _root(node)
        return aliases.get(root, root) if root is not None else None

    for n in ast.walk(stmt):
        if isinstance(n, ast.Call):
            for kw in n.keywords:
                if kw.arg == "out" and root_of(kw.value) in checkpointed:
                    out.add(root_of(kw.value))  # type: ignore[arg-type]
        if isinstance(n, (ast.Subscript, ast.Attribute)) and isinstance(n.ctx, ast.Store) \
                and root_of(n) in checkpointed:
            out.add(root_of(n))  # type: ignore[arg-type]
        elif isinstance(n, ast.AugAssign) and root_of(n.target) in checkpointed and not isinstance(n.target, ast.Name):
            out.add(root_of(n.target))  # type: ignore[arg-type]
    for n in ast.walk(stmt):
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store) and n.id in checkpointed:
            out.add(n.id)
        elif isinstance(n, ast.AugAssign):
            root = _root(n.target)
            if root in checkpointed:
                out.add(root)
        elif (
            isinstance(n, ast.Expr)  # a method called for its effect, not its value: sched.step()
            and isinstance(n.value, ast.Call)
            and isinstance(n.value.func, ast.Attribute)
            and n.value.func.attr not in IDEMPOTENT
        ):
            root = _root(n.value.func.value)
            if root in checkpointed:
                out.add(root)
        elif isinstance(n, (ast.Attribute, ast.Subscript)) and isinstance(n.ctx, ast.Store):
            root = _root(n)
            if root in checkpointed:
                out.add(root)
    return out
