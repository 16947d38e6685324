"""Loop-carried state the user never registered: which variables, and how to read/write them.

Real scripts carry plain variables across epochs (``lr /= 4``, ``best = val``,
``history.append(acc)``). Resuming epoch *i* is only exact if those are restored
too, so the outermost ``flor.loop`` saves them with each checkpoint. Which ones
is decided by a static read of the loop body with :mod:`ast` (stdlib: the
training path stays free of tree-sitter), once per code version:

- a name the body assigns and that may be read before the body assigns it
  (upward-exposed: its value flows from the previous iteration), or that is
  read after the loop, or that the body assigns only conditionally;
- a name defined outside the body that the body mutates in place (a method
  call on it, an item or attribute store, ``del x[k]``);
- (``left``, saved when it can be) a name a nested ``flor.loop`` assigns that the
  body reads after it (the last step's ``loss`` logged per epoch): a replay skipping
  the nested loop restores it.

Nested ``for`` loops are assumed to run at least once (their targets are then
ordinary assignments); ``if``/``while``/``except`` branches are conditional.
"""

from __future__ import annotations

import ast
import ctypes
import functools
import sys
from dataclasses import dataclass
from types import FrameType
from typing import Any


@dataclass(frozen=True)
class LoopScope:
    names: tuple[str, ...]  # loop-carried variable names, sorted
    module_level: bool  # the loop runs in module scope (variables live in globals)
    #: names defined outside the body and passed to a call in it (``next(it)``,
    #: ``shuffle(xs, rng)``): the callee may advance them. Saved when their value is
    #: an iterator or an RNG; data (arrays, tensors) passed to functions is assumed
    #: to be read, not mutated.
    passed: tuple[str, ...] = ()
    #: the loop variable when it is a plain name (``for epoch in ...``): code after
    #: the loop may read it, and a replay that skips every iteration must set it
    target: str | None = None
    #: every name the loop's header binds (``k, epoch`` of ``enumerate(flor.loop(...))``):
    #: set by the loop itself each iteration, so never state to compare or restore
    targets: tuple[str, ...] = ()
    #: names a nested ``flor.loop`` leaves that the body reads after it (see :func:`_left_by_nested`):
    #: saved when they can be — only a skip of that loop needs them, resuming does not
    left: tuple[str, ...] = ()


@functools.lru_cache(maxsize=64)
def analyse(source: str, lineno: int) -> LoopScope | None:
    """The loop-carried names of the ``for`` statement at ``lineno``; None if it is not found."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    found = _find_loop(tree, lineno)
    if found is None:
        return None
    loop, scope = found
    written = _Writes.of(loop.body)
    exposed = _Exposed(written)
    exposed.block(loop.body, set())
    after = _reads_after(scope, loop)
    carried = {n for n in written if n in exposed.exposed or n in after or n in exposed.conditional}
    carried |= {n for n in exposed.mutated_outside}
    carried -= _Writes.targets(loop.target)
    passed = exposed.passed_outside - carried
    left = _left_by_nested(loop.body) - carried - _Writes.targets(loop.target)
    target = loop.target.id if isinstance(loop.target, ast.Name) else None
    return LoopScope(tuple(sorted(carried)), isinstance(scope, ast.Module), tuple(sorted(passed)), target,
                     tuple(sorted(_Writes.targets(loop.target))), tuple(sorted(left)))


def _left_by_nested(body: list[ast.stmt]) -> set[str]:
    """Names a nested ``flor.loop`` of the body assigns that the body reads after it.

    ``flor.log("loss", float(loss))`` after the step loop reads the last step's ``loss``. A
    replay that skips the step loop restores what it leaves from the iteration's
    checkpoint, so such a name must be in it — or every epoch-level replay re-executes.
    """
    out: set[str] = set()
    for k, stmt in enumerate(body):
        if not isinstance(stmt, (ast.For, ast.AsyncFor, ast.While)) or not _runs_flor_loop(stmt):
            continue
        later = {n.id for s in body[k + 1:] for n in ast.walk(s) if isinstance(n, ast.Name)
                 and isinstance(n.ctx, ast.Load)}
        out |= _Writes.of(stmt.body) & later
    return out


def _runs_flor_loop(loop: ast.For | ast.AsyncFor | ast.While) -> bool:
    """The loop iterates a ``flor.loop(...)`` (``for step in flor.loop("step", loader)``, wrapped or not)."""
    head = loop.iter if isinstance(loop, (ast.For, ast.AsyncFor)) else loop.test
    return any(isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute) and c.func.attr == "loop"
               for c in ast.walk(head))


def _find_loop(tree: ast.Module, lineno: int) -> tuple[ast.For | ast.AsyncFor, ast.AST] | None:
    def walk(node: ast.AST, scope: ast.AST) -> tuple[ast.For | ast.AsyncFor, ast.AST] | None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.For, ast.AsyncFor)) and child.lineno <= lineno <= child.iter.end_lineno:
                return child, scope
            inner = child if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else scope
            if isinstance(child, (ast.stmt, ast.ExceptHandler, ast.match_case)):
                hit = walk(child, inner)
                if hit:
                    return hit
        return None

    return walk(tree, tree)


def _reads_after(scope: ast.AST, loop: ast.AST) -> set[str]:
    end = loop.end_lineno or loop.lineno
    body = scope.body if isinstance(scope, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef)) else []
    reads: set[str] = set()
    for stmt in body:
        for node in ast.walk(stmt):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.lineno > end:
                reads.add(node.id)
    return reads


class _Writes(ast.NodeVisitor):
    """Names bound anywhere in a block (not inside nested function or class bodies)."""

    def __init__(self) -> None:
        self.names: set[str] = set()

    @classmethod
    def of(cls, body: list[ast.stmt]) -> set[str]:
        v = cls()
        for stmt in body:
            v.visit(stmt)
        return v.names

    @staticmethod
    def targets(node: ast.AST) -> set[str]:
        return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, (ast.Store, ast.Del)):
            self.names.add(node.id)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self.names.add(node.name)

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.names.add(node.name)

    def visit_Lambda(self, node: ast.Lambda) -> None:
        return

    def _comprehension(self, node: ast.AST) -> None:
        for gen in node.generators:  # type: ignore[attr-defined]
            self.visit(gen.iter)

    visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = _comprehension  # type: ignore[assignment]

    def visit_alias(self, node: ast.alias) -> None:
        self.names.add((node.asname or node.name).split(".")[0])

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.name:
            self.names.add(node.name)
        self.generic_visit(node)


class _Exposed:
    """Walks a block in execution order, tracking which names are surely bound so far."""

    def __init__(self, written: set[str]) -> None:
        self.written = written
        self.exposed: set[str] = set()
        self.conditional: set[str] = set()
        self.mutated_outside: set[str] = set()
        self.passed_outside: set[str] = set()

    def block(self, body: list[ast.stmt], defined: set[str]) -> set[str]:
        for stmt in body:
            defined = self.stmt(stmt, defined)
        return defined

    def reads(self, node: ast.AST | None, defined: set[str]) -> None:
        if node is None:
            return
        bound_here: set[str] = set()
        for sub in ast.walk(node):
            if isinstance(sub, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
                for gen in sub.generators:
                    bound_here |= _Writes.targets(gen.target)
            elif isinstance(sub, ast.Lambda):
                bound_here |= {a.arg for a in sub.args.args + sub.args.kwonlyargs}
        for sub in ast.walk(node):
            if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load):
                if sub.id not in defined and sub.id not in bound_here:
                    self.exposed.add(sub.id)
            elif isinstance(sub, ast.Call):
                if isinstance(sub.func, ast.Attribute):
                    self._mutates(sub.func.value, defined)
                for arg in [*sub.args, *(k.value for k in sub.keywords)]:
                    if isinstance(arg, ast.Name) and arg.id not in defined and arg.id not in bound_here:
                        self.passed_outside.add(arg.id)

    def _mutates(self, target: ast.AST, defined: set[str]) -> None:
        while isinstance(target, (ast.Attribute, ast.Subscript)):
            target = target.value
        if isinstance(target, ast.Name) and target.id not in defined:
            self.mutated_outside.add(target.id)

    def store(self, target: ast.AST, defined: set[str]) -> set[str]:
        if isinstance(target, (ast.Attribute, ast.Subscript)):
            self.reads(target, defined)
            self._mutates(target, defined)
            return defined
        if isinstance(target, (ast.Tuple, ast.List)):
            for elt in target.elts:
                defined = self.store(elt, defined)
            return defined
        if isinstance(target, ast.Starred):
            return self.store(target.value, defined)
        if isinstance(target, ast.Name):
            return defined | {target.id}
        return defined

    def branch(self, bodies: list[list[ast.stmt]], defined: set[str], exhaustive: bool) -> set[str]:
        outs = [self.block(b, set(defined)) for b in bodies]
        for out in outs:
            self.conditional |= out - defined
        if not exhaustive:
            return defined
        common = set.intersection(*outs) if outs else set(defined)
        return defined | common

    def stmt(self, node: ast.stmt, defined: set[str]) -> set[str]:
        if isinstance(node, ast.Assign):
            self.reads(node.value, defined)
            for t in node.targets:
                defined = self.store(t, defined)
            return defined
        if isinstance(node, ast.AnnAssign):
            self.reads(node.value, defined)
            return self.store(node.target, defined) if node.value is not None else defined
        if isinstance(node, ast.AugAssign):
            self.reads(node.value, defined)
            if isinstance(node.target, ast.Name):
                if node.target.id not in defined:
                    self.exposed.add(node.target.id)
                return defined | {node.target.id}
            return self.store(node.target, defined)
        if isinstance(node, (ast.For, ast.AsyncFor)):
            self.reads(node.iter, defined)
            inner = self.store(node.target, set(defined))
            defined = self.block(node.body, inner)  # assumed to run at least once
            return self.branch([node.orelse], defined, exhaustive=False) if node.orelse else defined
        if isinstance(node, ast.While):
            self.reads(node.test, defined)
            return self.branch([node.body, node.orelse], defined, exhaustive=False)
        if isinstance(node, ast.If):
            self.reads(node.test, defined)
            return self.branch([node.body, node.orelse], defined, exhaustive=bool(node.orelse))
        if isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                self.reads(item.context_expr, defined)
                if item.optional_vars is not None:
                    defined = self.store(item.optional_vars, defined)
            return self.block(node.body, defined)
        if isinstance(node, (ast.Try, getattr(ast, "TryStar", ast.Try))):
            defined = self.block(node.body, defined)
            self.branch([h.body for h in node.handlers], defined, exhaustive=False)
            if node.orelse:
                defined = self.block(node.orelse, defined)
            return self.block(node.finalbody, defined)
        if isinstance(node, ast.Match):
            self.reads(node.subject, defined)
            return self.branch([c.body for c in node.cases], defined, exhaustive=False)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            for deco in node.decorator_list:
                self.reads(deco, defined)
            return defined | {node.name}
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            return defined | {(a.asname or a.name).split(".")[0] for a in node.names}
        if isinstance(node, ast.Delete):
            for t in node.targets:
                if isinstance(t, ast.Name):
                    defined = defined - {t.id}
                else:
                    self.reads(t, defined)
                    self._mutates(t, defined)
            return defined
        if isinstance(node, (ast.Global, ast.Nonlocal)):
            return defined
        for child in ast.iter_child_nodes(node):  # Expr, Return, Raise, Assert, ...
            self.reads(child, defined)
        return defined


# -- reading and writing the variables of a running frame ----------------------------------


def read_vars(frame: FrameType, names: tuple[str, ...]) -> dict[str, Any]:
    scope = frame.f_locals
    return {n: scope[n] for n in names if n in scope}


def write_vars(frame: FrameType, values: dict[str, Any], module_level: bool) -> None:
    """Rebind variables in a running frame (module globals, or a function's fast locals)."""
    if not values:
        return
    if module_level:
        frame.f_globals.update(values)
        return
    if sys.version_info >= (3, 13):
        for k, v in values.items():
            frame.f_locals[k] = v  # PEP 667: a write-through proxy
        return
    frame.f_locals.update(values)
    ctypes.pythonapi.PyFrame_LocalsToFast(ctypes.py_object(frame), ctypes.c_int(0))
