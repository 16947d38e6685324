"""Which names a statement reads, and which names the scopes around a position bind.

The check exists so propagation never *injects* a NameError into a past version: if the past
function never defines `total_norm`, inserting `flor.log("grad_norm", total_norm)` there would
crash the replay after minutes of work. Names of the position's own scope are judged in
statement order by `flow` (reaching definitions); this module answers for the others -- a
module global read inside a function is looked up when the function runs, so any binding in
an enclosing scope counts -- and finds where else a name is bound, for messages.
"""

from __future__ import annotations

import builtins

from .cst import TsNode

BUILTINS = frozenset(dir(builtins)) | {"__file__", "__name__", "__doc__", "__builtins__",
                                        "__spec__", "__loader__", "__package__", "__path__"}
_SCOPES = frozenset({"function_definition", "class_definition", "lambda", "list_comprehension",
                     "set_comprehension", "dictionary_comprehension", "generator_expression"})
_TARGET_GROUPS = frozenset({"pattern_list", "tuple_pattern", "list_pattern", "tuple", "list",
                            "parenthesized_expression", "list_splat_pattern", "list_splat",
                            "expression_list"})


def _targets(node: TsNode, out: set[str]) -> None:
    if node.type == "identifier":
        out.add(node.text.decode())
    elif node.type in _TARGET_GROUPS:
        for c in node.named_children:
            _targets(c, out)


def param_names(params: TsNode, out: set[str]) -> None:
    for p in params.named_children:
        if p.type == "identifier":
            out.add(p.text.decode())
        elif p.type in ("default_parameter", "typed_default_parameter"):
            name = p.child_by_field_name("name")
            if name is not None:
                out.add(name.text.decode())
        else:
            stack = [p]
            while stack:
                n = stack.pop()
                if n.type == "identifier":
                    out.add(n.text.decode())
                    break
                if n.type == "type":
                    continue
                stack.extend(reversed(n.named_children))


class Bindings:
    """Names bound directly in one scope (not in scopes nested inside it)."""

    def __init__(self, scope: TsNode, nested: bool = False) -> None:
        self.names: set[str] = set()
        self.star = False
        if scope.type in ("function_definition", "lambda"):
            params = scope.child_by_field_name("parameters")
            if params is not None:
                param_names(params, self.names)
        body = scope.child_by_field_name("body") if scope.type != "module" else scope
        if body is not None:
            self._collect(body, nested)

    def _collect(self, root: TsNode, nested: bool) -> None:
        """Walk `root`; when `nested`, also take bindings inside nested scopes (used for a
        statement's own bindings, e.g. the loop variable of a comprehension it contains)."""
        stack = [root]
        names = self.names
        while stack:
            n = stack.pop()
            t = n.type
            if t in ("function_definition", "class_definition"):
                name = n.child_by_field_name("name")
                if name is not None:
                    names.add(name.text.decode())
                if nested:
                    if t == "function_definition":
                        params = n.child_by_field_name("parameters")
                        if params is not None:
                            param_names(params, names)
                    stack.extend(n.named_children)
                else:
                    # Decorators and defaults are evaluated in this scope.
                    stack.extend(c for c in n.named_children
                                 if c.type not in ("block", "identifier", "parameters"))
                continue
            if t == "lambda" and nested:
                params = n.child_by_field_name("parameters")
                if params is not None:
                    param_names(params, names)
            elif t in _SCOPES and not nested:
                continue
            if t in ("assignment", "augmented_assignment", "for_statement", "for_in_clause"):
                left = n.child_by_field_name("left")
                if left is not None:
                    _targets(left, names)
            elif t == "as_pattern_target":
                for c in n.named_children:
                    _targets(c, names)
            elif t == "named_expression":
                name = n.child_by_field_name("name")
                if name is not None:
                    names.add(name.text.decode())
            elif t == "import_statement":
                for item in n.named_children:
                    if item.type == "aliased_import":
                        alias = item.child_by_field_name("alias")
                        if alias is not None:
                            names.add(alias.text.decode())
                    else:
                        names.add(item.text.decode().split(".")[0])
                continue
            elif t in ("import_from_statement", "future_import_statement"):
                if any(c.type == "wildcard_import" for c in n.named_children):
                    self.star = True
                for item in n.children_by_field_name("name"):
                    if item.type == "aliased_import":
                        alias = item.child_by_field_name("alias")
                        if alias is not None:
                            names.add(alias.text.decode())
                    else:
                        names.add(item.text.decode().split(".")[-1])
                continue
            elif t in ("global_statement", "nonlocal_statement", "except_clause"):
                for c in n.named_children:
                    if c.type == "identifier":
                        names.add(c.text.decode())
            elif t == "case_pattern":
                _case_names(n, names)
            stack.extend(n.named_children)


def _case_names(node: TsNode, out: set[str]) -> None:
    stack = [node]
    while stack:
        n = stack.pop()
        if n.type == "identifier":
            out.add(n.text.decode())
        stack.extend(n.named_children)


def reads(stmt: TsNode) -> list[tuple[str, TsNode]]:
    """Identifiers `stmt` reads that it does not bind itself, in source order."""
    own = Bindings.__new__(Bindings)
    own.names = set()
    own.star = False
    own._collect(stmt, nested=True)
    out: list[tuple[str, TsNode]] = []
    stack = [stmt]
    while stack:
        n = stack.pop()
        if n.type == "identifier":
            parent = n.parent
            if parent is not None:
                if parent.type == "attribute" and parent.child_by_field_name("attribute") == n:
                    continue
                if parent.type == "keyword_argument" and parent.child_by_field_name("name") == n:
                    continue
            name = n.text.decode()
            if name not in own.names:
                out.append((name, n))
            continue
        if n.type in ("import_statement", "import_from_statement", "future_import_statement"):
            continue
        stack.extend(reversed(n.named_children))
    return out


class ScopeIndex:
    """Caches per-scope bindings of one past tree, for many lookups."""

    def __init__(self) -> None:
        self._cache: dict[int, Bindings] = {}

    def _bindings(self, scope: TsNode) -> Bindings:
        b = self._cache.get(scope.id)
        if b is None:
            b = self._cache[scope.id] = Bindings(scope)
        return b

    def chain(self, at: TsNode) -> list[TsNode]:
        """Enclosing scopes of position `at`, innermost first, skipping class bodies that
        are not the innermost (methods do not see class-level names)."""
        out: list[TsNode] = []
        n: TsNode | None = at
        while n is not None:
            if n.type in ("function_definition", "class_definition", "module"):
                if n.type != "class_definition" or not out:
                    out.append(n)
            n = n.parent
        return out

    def bound(self, name: str, at: TsNode) -> bool:
        """Is `name` bound in some scope enclosing `at` (or a builtin)?"""
        if name in BUILTINS:
            return True
        for scope in self.chain(at):
            b = self._bindings(scope)
            if name in b.names or b.star:
                return True
        return False

    def bound_anywhere(self, name: str, root: TsNode) -> bool:
        """Is `name` bound in any scope of the file (for a more helpful message)?"""
        own = Bindings.__new__(Bindings)
        own.names = set()
        own.star = False
        own._collect(root, nested=True)
        return name in own.names
