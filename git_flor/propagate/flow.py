"""Reaching definitions inside one scope: which assignments of a name can reach a position,
and whether the name is bound there on every path.

Why flow-sensitive: a flow-insensitive check ("`y` is assigned somewhere in this function")
let propagation put `flor.log("data_mean", float(y.mean()))` on the line *before* the old
version computes `y`, and replay died with `NameError`. Here each position between two
statements of a block gets, for each name asked about, the set of definitions that can reach
it; the pseudo-definition `UNBOUND` (the scope's entry) reaching means some path arrives with
the name unbound.

Conventions, chosen for training scripts:
- Loops run at least once (`for epoch in range(epochs)` does); so a name assigned in the
  loop body is bound after the loop, as today's code after the loop already assumes. Inside
  the body, definitions from later in the body reach earlier positions through the back
  edge (loop-carried: `best = max(best, acc)`), but `UNBOUND` still reaches them from the
  first iteration unless the name was bound before the loop.
- Any statement of a `try` body may raise: a handler starts from what reached any point of
  the body. `with` blocks are assumed not to swallow exceptions.
- A read is evidence: once a statement has read `wandb` (unconditionally: not in a lambda,
  the right side of `and`/`or`, a branch of `x if c else y`), any run that got past it had
  `wandb` bound -- however it was bound (`import wandb` under `if wandb_log:`, whose
  correlation with a later `if wandb_log: wandb.log(...)` no path analysis sees). A statement
  placed after such a read cannot raise a NameError the original code did not raise first.
- Only names local to the scope are tracked; a name the scope never binds (a module global
  read in a function, a builtin) is resolved elsewhere, flow-insensitively (see `scope`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from .cst import TsNode
from .scope import Bindings, param_names

UNBOUND = -1
PARAMETER = -2
READ = -3  # bound by something the analysis cannot see, known only because the code read it

_LOOPS = frozenset({"for_statement", "while_statement"})
_DEFS = frozenset({"function_definition", "class_definition"})
_SCOPE_NODES = frozenset({"function_definition", "class_definition", "lambda",
                          "list_comprehension", "set_comprehension",
                          "dictionary_comprehension", "generator_expression"})
_TARGETS = frozenset({"pattern_list", "tuple_pattern", "list_pattern", "tuple", "list",
                      "parenthesized_expression", "list_splat_pattern", "list_splat",
                      "expression_list"})

# name -> ids of the definitions that may reach (UNBOUND, PARAMETER or a statement's ts id)
State = dict[str, frozenset[int]]


def statements(block: TsNode) -> list[TsNode]:
    """The statements of a block or module, comments left out (the slots between these are
    the positions a statement can be inserted at)."""
    return [c for c in block.named_children if c.type != "comment"]


def _join(a: State | None, b: State | None) -> State | None:
    if a is None:
        return b
    if b is None:
        return a
    return {k: a[k] | b[k] for k in a}


@dataclass
class _Loop:
    exits: list[State] = field(default_factory=list)  # states at `break`
    back: list[State] = field(default_factory=list)  # states at `continue`


class Flow:
    """Reaching definitions of `names` in one scope (a function, class body or module).

    `at(block, i)` is the state at slot `i` of `block` (before its i-th statement; `i ==
    len(statements(block))` is after the last); `definitions[id]` is the node of each
    definition, to say where it is and what it assigns.
    """

    def __init__(self, scope: TsNode, names: Iterable[str]) -> None:
        self.scope = scope
        self.names = sorted(set(names))
        self._tracked = frozenset(self.names)
        self.slots: dict[int, list[State | None]] = {}
        self.definitions: dict[int, TsNode] = {}
        self.defs_of: dict[str, set[int]] = {}
        self._binds: dict[tuple[int, bool], list[str]] = {}
        self._reads: dict[tuple[int, bool], list[str]] = {}
        self._record = True
        entry: State = {n: frozenset((UNBOUND,)) for n in self.names}
        body = scope if scope.type == "module" else scope.child_by_field_name("body")
        if scope.type in ("function_definition", "lambda"):
            params = scope.child_by_field_name("parameters")
            if params is not None:
                bound: set[str] = set()
                param_names(params, bound)
                for n in bound & set(self.names):
                    entry[n] = frozenset((PARAMETER,))
        self._loops: list[_Loop] = []
        self._try_points: list[list[State]] = []
        if body is not None:
            self._block(body, entry)

    def at(self, block: TsNode, i: int) -> State | None:
        """The state at slot `i` of `block`; None when the slot is unreachable (after a
        `return`) or the block is not part of this scope."""
        states = self.slots.get(block.id)
        if states is None or not 0 <= i < len(states):
            return None
        return states[i]

    def bound(self, name: str, block: TsNode, i: int) -> bool:
        """Is `name` bound on every path to slot `i` of `block`?"""
        state = self.at(block, i)
        return state is not None and UNBOUND not in state.get(name, frozenset((UNBOUND,)))

    # ------------------------------------------------------------ statements

    def _own(self, node: TsNode, header: bool) -> list[str]:
        """Tracked names `node` binds (only its header when `header`): cached, since loop
        bodies are walked until their state settles."""
        k = (node.id, header)
        got = self._binds.get(k)
        if got is None:
            found = _header_binds(node) if header else _simple_binds(node)
            got = self._binds[k] = [n for n in found if n in self._tracked]
        return got

    def _block(self, block: TsNode, state: State | None) -> State | None:
        stmts = statements(block)
        slots: list[State | None] = []
        for st in stmts:
            slots.append(state)
            if self._try_points and state is not None:
                self._try_points[-1].append(state)
            state = self._stmt(st, state)
        slots.append(state)
        if self._try_points and state is not None:
            self._try_points[-1].append(state)
        if self._record:
            self.slots[block.id] = slots
        return state

    def _define(self, state: State | None, names: Iterable[str], node: TsNode) -> State | None:
        if state is None:
            return None
        hit = [n for n in names if n in state]
        if not hit:
            return state
        self.definitions[node.id] = node
        out = dict(state)
        for n in hit:
            out[n] = frozenset((node.id,))
            self.defs_of.setdefault(n, set()).add(node.id)
        return out

    def _stmt(self, st: TsNode, state: State | None) -> State | None:
        t = st.type
        if state is None:
            # Unreachable code still gets its slots recorded (as unreachable).
            if t in _LOOPS or t in ("if_statement", "with_statement", "try_statement",
                                    "match_statement"):
                for b in _blocks_of(st):
                    self._block(b, None)
            return None
        if t == "decorated_definition":
            inner = st.child_by_field_name("definition")
            return self._stmt(inner, state) if inner is not None else state
        if t in _DEFS:
            name = st.child_by_field_name("name")
            return self._define(state, [name.text.decode()] if name is not None else [], st)
        if t in ("return_statement", "raise_statement"):
            return None
        if t == "break_statement":
            if self._loops:
                self._loops[-1].exits.append(state)
            return None
        if t == "continue_statement":
            if self._loops:
                self._loops[-1].back.append(state)
            return None
        if t == "delete_statement":
            out = dict(state)
            for n in self._own(st, False):
                if n in out:
                    out[n] = frozenset((UNBOUND,))
            return out
        if t == "if_statement":
            return self._if(st, state)
        if t in _LOOPS:
            return self._loop(st, state)
        if t == "with_statement":
            state = self._define(self._evidence(state, st, True), self._own(st, True), st)
            body = st.child_by_field_name("body")
            return self._block(body, state) if body is not None else state
        if t == "try_statement":
            return self._try(st, state)
        if t == "match_statement":
            return self._match(st, state)
        return self._define(self._evidence(state, st, False), self._own(st, False), st)

    def _evidence(self, state: State | None, node: TsNode, header: bool) -> State | None:
        """`state` after `node` (only its header when `header`) read its sure reads."""
        if state is None:
            return None
        k = (node.id, header)
        names = self._reads.get(k)
        if names is None:
            found: list[str] = []
            _sure_reads(node, found, header)
            names = self._reads[k] = [n for n in dict.fromkeys(found) if n in self._tracked]
        hit = [n for n in names if UNBOUND in state[n]]
        if not hit:
            return state
        out = dict(state)
        for n in hit:
            rest = out[n] - {UNBOUND}
            out[n] = rest or frozenset((READ,))
        return out

    def _if(self, st: TsNode, state: State) -> State | None:
        state = self._define(self._evidence(state, st, True), self._own(st, True), st)  # type: ignore[assignment]
        out: State | None = None
        body = st.child_by_field_name("consequence")
        out = _join(out, self._block(body, state) if body is not None else state)
        has_else = False
        for clause in st.children_by_field_name("alternative"):
            if clause.type == "elif_clause":
                state = self._define(state, self._own(clause, True), clause)
                b = clause.child_by_field_name("consequence")
                out = _join(out, self._block(b, state) if b is not None else state)
            else:
                has_else = True
                b = clause.child_by_field_name("body")
                out = _join(out, self._block(b, state) if b is not None else state)
        return out if has_else else _join(out, state)

    def _loop(self, st: TsNode, state: State) -> State | None:
        header = self._define(self._evidence(state, st, True), self._own(st, True), st)
        assert header is not None
        body = st.child_by_field_name("body")
        else_ = next((c for c in st.named_children if c.type == "else_clause"), None)
        entry: State = header
        record, self._record = self._record, False
        loop = _Loop()
        # Iterate to the fixpoint without recording: definitions from later in the body
        # reach its top through the back edge; the last pass records the slots.
        for _ in range(50):
            loop = _Loop()
            self._loops.append(loop)
            end = self._block(body, entry) if body is not None else entry
            self._loops.pop()
            back = _join(end, None)
            for s in loop.back:
                back = _join(back, s)
            # Re-entering the header (next iteration) re-binds the loop variable.
            back = self._define(back, self._own(st, True), st) if back is not None else None
            new = _join(entry, back)
            assert new is not None
            if new == entry:
                break
            entry = new
        self._record = record
        loop = _Loop()
        self._loops.append(loop)
        end = self._block(body, entry) if body is not None else entry
        self._loops.pop()
        # At least one iteration: leave through the end of the body, a `continue` followed
        # by a failed test, or a `break`.
        normal = end
        for s in loop.back:
            normal = _join(normal, s)
        cond = st.child_by_field_name("condition")
        if st.type == "while_statement" and cond is not None and cond.type == "true":
            normal = None  # `while True:` is left only through a `break`
        if else_ is not None:
            b = else_.child_by_field_name("body")
            normal = self._block(b, normal) if b is not None else normal
        out = normal
        for s in loop.exits:
            out = _join(out, s)
        return out

    def _try(self, st: TsNode, state: State) -> State | None:
        body = st.child_by_field_name("body")
        self._try_points.append([state])
        end = self._block(body, state) if body is not None else state
        points = self._try_points.pop()
        raised: State | None = None
        for p in points:
            raised = _join(raised, p)
        normal = end
        handlers: State | None = None
        finally_: TsNode | None = None
        for clause in st.named_children:
            if clause.type in ("except_clause", "except_group_clause"):
                hstate = self._define(raised, _except_binds(clause), clause)
                b = next((c for c in clause.named_children if c.type == "block"), None)
                handlers = _join(handlers, self._block(b, hstate) if b is not None else hstate)
            elif clause.type == "else_clause":
                b = clause.child_by_field_name("body")
                normal = self._block(b, normal) if b is not None else normal
            elif clause.type == "finally_clause":
                finally_ = clause
        after = _join(normal, handlers)
        if finally_ is not None:
            b = next((c for c in finally_.named_children if c.type == "block"), None)
            if b is not None:
                # Its slots see every way in (an exception too); what follows the `try`
                # is reached only when it completes normally.
                self._block(b, _join(after, raised))
                record, self._record = self._record, False
                after = self._block(b, after) if after is not None else None
                self._record = record
        return after

    def _match(self, st: TsNode, state: State) -> State | None:
        state = self._define(state, self._own(st, True), st)  # type: ignore[assignment]
        out: State | None = state  # no case matched
        body = st.child_by_field_name("body")
        cases = [c for c in (body.named_children if body is not None else [])
                 if c.type == "case_clause"]
        for case in cases:
            cstate = self._define(state, _case_binds(case), case)
            b = case.child_by_field_name("consequence") or next(
                (c for c in case.named_children if c.type == "block"), None)
            out = _join(out, self._block(b, cstate) if b is not None else cstate)
        return out


def _sure_reads(node: TsNode, out: list[str], header: bool) -> None:
    """Identifiers `node` certainly reads whenever it completes: not inside nested scopes,
    the right operand of `and`/`or`, the branches of a conditional expression, nor (with
    `header`) nested blocks; not assignment targets, attribute names or keyword names."""
    stack = [node]
    while stack:
        n = stack.pop()
        t = n.type
        if n is not node and t in _SCOPE_NODES:
            continue
        if t in ("block", "else_clause", "elif_clause", "except_clause", "finally_clause",
                 "case_clause", "except_group_clause") and (header or n is not node):
            continue
        if t == "identifier":
            p = n.parent
            if p is not None and p.type == "attribute" and p.child_by_field_name("attribute") == n:
                continue
            if p is not None and p.type == "keyword_argument" and p.child_by_field_name("name") == n:
                continue
            out.append(n.text.decode())
            continue
        if t == "boolean_operator":
            left = n.child_by_field_name("left")
            if left is not None:
                stack.append(left)
            continue
        if t == "conditional_expression":
            kids = n.named_children
            if len(kids) > 1:
                stack.append(kids[1])
            continue
        if t in ("assignment", "augmented_assignment"):
            right = n.child_by_field_name("right")
            if right is not None:
                stack.append(right)
            left = n.child_by_field_name("left")
            if t == "augmented_assignment" and left is not None:
                stack.append(left)
            elif left is not None and left.type in ("subscript", "attribute"):
                stack.append(left)  # `a[i] = x` reads `a` and `i`
            continue
        if t in ("for_statement", "for_in_clause"):
            right = n.child_by_field_name("right")
            if right is not None:
                stack.append(right)
            continue
        if t == "named_expression":
            value = n.child_by_field_name("value")
            if value is not None:
                stack.append(value)
            continue
        if t in ("as_pattern_target", "import_statement", "import_from_statement",
                 "future_import_statement", "global_statement", "nonlocal_statement",
                 "delete_statement"):
            continue
        stack.extend(n.named_children)


def _blocks_of(st: TsNode) -> list[TsNode]:
    out = []
    stack = [st]
    while stack:
        n = stack.pop()
        for c in n.named_children:
            if c.type == "block":
                out.append(c)
            elif c.type in ("else_clause", "elif_clause", "except_clause", "finally_clause",
                            "except_group_clause", "case_clause", "block"):
                stack.append(c)
    return out


def _targets(node: TsNode, out: list[str]) -> None:
    if node.type == "identifier":
        out.append(node.text.decode())
    elif node.type in _TARGETS:
        for c in node.named_children:
            _targets(c, out)


def _walk_binds(root: TsNode, out: list[str], skip_blocks: bool) -> None:
    """Names bound by `root` itself in its scope (assignment targets, walrus, imports, `as`
    targets), not inside nested scopes nor, with `skip_blocks`, nested blocks."""
    stack = [root]
    while stack:
        n = stack.pop()
        t = n.type
        if n is not root and t in _SCOPE_NODES:
            continue
        if skip_blocks and t in ("block", "else_clause", "elif_clause", "except_clause",
                                 "finally_clause", "case_clause", "except_group_clause"):
            continue
        if t in ("assignment", "augmented_assignment", "for_statement", "for_in_clause"):
            left = n.child_by_field_name("left")
            if left is not None and t != "for_in_clause":
                _targets(left, out)
        elif t == "as_pattern_target":
            for c in n.named_children:
                _targets(c, out)
        elif t == "named_expression":
            name = n.child_by_field_name("name")
            if name is not None:
                out.append(name.text.decode())
        elif t == "import_statement":
            for item in n.named_children:
                if item.type == "aliased_import":
                    alias = item.child_by_field_name("alias")
                    if alias is not None:
                        out.append(alias.text.decode())
                else:
                    out.append(item.text.decode().split(".")[0])
            continue
        elif t in ("import_from_statement", "future_import_statement"):
            for item in n.children_by_field_name("name"):
                if item.type == "aliased_import":
                    alias = item.child_by_field_name("alias")
                    if alias is not None:
                        out.append(alias.text.decode())
                else:
                    out.append(item.text.decode().split(".")[-1])
            continue
        elif t == "delete_statement":
            for c in n.named_children:
                _targets(c, out)
            continue
        stack.extend(n.named_children)


def simple_binds(st: TsNode) -> list[str]:
    """Names a simple statement binds in its scope (`X, y = ...` → X, y)."""
    return _simple_binds(st)


def _simple_binds(st: TsNode) -> list[str]:
    out: list[str] = []
    _walk_binds(st, out, skip_blocks=False)
    return out


def _header_binds(st: TsNode) -> list[str]:
    out: list[str] = []
    _walk_binds(st, out, skip_blocks=True)
    return out


def _except_binds(clause: TsNode) -> list[str]:
    """`except E as e:` binds `e` (the `as_pattern_target` of its `as_pattern`)."""
    out: list[str] = []
    for c in clause.named_children:
        if c.type == "as_pattern":
            for k in c.named_children:
                if k.type == "as_pattern_target":
                    for x in k.named_children:
                        _targets(x, out)
    return out


def _case_binds(case: TsNode) -> list[str]:
    out: list[str] = []
    stack = [c for c in case.named_children if c.type != "block"]
    while stack:
        n = stack.pop()
        if n.type == "identifier" and (n.parent is None or n.parent.type != "attribute"):
            out.append(n.text.decode())
        if n.type != "block":
            stack.extend(n.named_children)
    return out


def scope_of(node: TsNode) -> TsNode:
    """The innermost function, class body or module holding `node` (a statement)."""
    n = node.parent
    while n is not None and n.type not in ("function_definition", "class_definition", "module"):
        n = n.parent
    assert n is not None
    return n


def local_names(scope: TsNode) -> tuple[set[str], set[str], bool]:
    """(names the scope binds, names it declares `global`/`nonlocal`, has `import *`)."""
    b = Bindings(scope)
    declared: set[str] = set()
    body = scope if scope.type == "module" else scope.child_by_field_name("body")
    stack = [body] if body is not None else []
    while stack:
        n = stack.pop()
        if n.type in _SCOPE_NODES:
            continue
        if n.type in ("global_statement", "nonlocal_statement"):
            declared.update(c.text.decode() for c in n.named_children if c.type == "identifier")
            continue
        stack.extend(n.named_children)
    return b.names - declared, declared, b.star
