"""Following the data: where a statement may go in a past version, given what it reads.

A statement is carried to the spot the matcher found (`propagator`), but it only runs there
if every name it reads is bound on every path to that spot (`flow`). When it is not -- today
computes `X, y = make_data(seed)` in a helper, the old version computes `y` inline three
lines further down -- the statement moves to the nearest slot of the same block where it is,
then of the enclosing blocks; never across a loop or a `def`, since how often a statement
runs (per step, per epoch, per run) is part of what it means. And when the statement logs
what today's previous statement computes, it follows that name to where the past computes
it. Finally, a name computed by a different expression there than today is reported (drift).
"""

from __future__ import annotations

from collections.abc import Sequence

from . import drift, flow, scope
from .cst import BLOCKS, TsNode
from .edits import first_stmt
from .result import Drift
from .statements import Alias

_DEFS = frozenset({"function_definition", "class_definition", "decorated_definition"})


class NoPlace(Exception):
    """No slot has what the statement reads bound; the message is the user-facing reason."""


class Today:
    """Reaching definitions in today's file, cached across the past versions it is carried into."""

    def __init__(self, src: bytes) -> None:
        self.src = src
        self._flows: dict[tuple[int, str], flow.Flow] = {}
        self._locals: dict[int, set[str]] = {}

    def flow(self, scope_node: TsNode, name: str) -> flow.Flow:
        k = (scope_node.id, name)
        f = self._flows.get(k)
        if f is None:
            f = self._flows[k] = flow.Flow(scope_node, [name])
        return f

    def locals(self, scope_node: TsNode) -> set[str]:
        got = self._locals.get(scope_node.id)
        if got is None:
            got = self._locals[scope_node.id] = flow.local_names(scope_node)[0]
        return got


class Follower:
    """The data-flow side of placing today's statements into one past version."""

    def __init__(self, past: bytes, root: TsNode, votes: dict[str, str], force: bool,
                 today: Today, alias: Alias, past_alias: Alias,
                 statements: Sequence[TsNode]) -> None:
        self.past = past
        self.root = root
        self.votes = votes
        self.force = force
        self.today = today
        self.spellings = alias.modules | alias.functions
        self.modules = alias.modules | past_alias.modules
        self.scopes = scope.ScopeIndex()
        self.flows: dict[tuple[int, frozenset[str]], flow.Flow] = {}
        self.assigned: dict[tuple[int, str], list[TsNode]] = {}
        self.locals: dict[int, tuple[set[str], set[str], bool]] = {}
        reads = {n for st in statements for n, _ in scope.reads(st)}
        # One analysis per scope serves every statement: it tracks every name any of them
        # reads, and the past spellings of those.
        self.flow_names = reads | {c for n in reads if (c := votes.get(n)) is not None}

    def reads(self, node: TsNode) -> list[str]:
        """Names today's statement `node` reads (not the spellings of git_flor itself)."""
        return list(dict.fromkeys(n for n, _ in scope.reads(node) if n not in self.spellings))

    def _flow(self, scope_node: TsNode, names: set[str]) -> flow.Flow:
        """Reaching definitions in one past scope. One analysis per scope serves every
        statement: it tracks every name any of them reads (and the past spellings of those)."""
        track = self.flow_names if names <= self.flow_names else self.flow_names | names
        k = (scope_node.id, frozenset(track))
        f = self.flows.get(k)
        if f is None:
            f = self.flows[k] = flow.Flow(scope_node, track)
        return f

    def _locals(self, scope_node: TsNode) -> tuple[set[str], set[str], bool]:
        got = self.locals.get(scope_node.id)
        if got is None:
            got = self.locals[scope_node.id] = flow.local_names(scope_node)
        return got

    def _bound(self, name: str, block: TsNode, slot: int, names: set[str]) -> bool:
        """Is `name` bound on every path to slot `slot` of `block` in the past version?
        Names of the block's own scope are judged in order (reaching definitions); others
        (module globals read in a function, builtins) wherever the enclosing scopes bind them."""
        sc = flow.scope_of(block) if block.type != "module" else block
        mine, _, star = self._locals(sc)
        if name in mine:
            return self._flow(sc, names & mine | {name}).bound(name, block, slot)
        if star or name in scope.BUILTINS:
            return True
        return self.scopes.bound(name, block)

    def spelling(self, name: str, sc: TsNode) -> str:
        """How the past spells today's variable `name` in its scope `sc`: the matching's vote
        (`loss` was `l`), unless the scope still binds `name` itself -- a variable spelled
        the same in the same scope is the same variable, and a vote that says otherwise
        comes from a statement paired with an edited one (`criterion = ...` with
        `num_gpus = ...`), so following it would log another quantity."""
        choice = self.votes.get(name, name)
        if choice == name or name in self._locals(sc)[0]:
            return name
        return choice

    def _names_at(self, reads: list[str], block: TsNode,
                  slot: int) -> tuple[dict[str, str] | None, str]:
        """Renames that make every read bound at the slot, or None and the first name that
        is not."""
        renames: dict[str, str] = {}
        wanted = set(reads) | {c for n in reads if (c := self.votes.get(n)) is not None}
        sc = flow.scope_of(block) if block.type != "module" else block
        for name in reads:
            if self._bound(name, block, slot, wanted):
                continue
            choice = self.spelling(name, sc)
            if choice != name and self._bound(choice, block, slot, wanted):
                renames[name] = choice
                continue
            return None, name
        return renames, ""

    def fit(self, node: TsNode, kind: str, anchor: TsNode) -> tuple[
            str, TsNode, dict[str, str], str]:
        """Where the statement goes: the matched spot when what it reads is bound there, else the
        nearest slot that has it bound in the same block, then in enclosing blocks up to the
        first loop or definition (the statement keeps its loop depth). Returns (kind,
        anchor, renames, a note for the placement when it was moved); raises `NoPlace`."""
        block = anchor.parent
        assert block is not None
        kids = flow.statements(block)
        k = next(i for i, c in enumerate(kids) if c.id == anchor.id)
        primary = k + 1 if kind == "after" else k
        reads = self.reads(node)
        renames, missing = self._names_at(reads, block, primary)
        if renames is not None:
            return kind, anchor, renames, ""
        if self.force:
            return kind, anchor, {}, ""
        centre = float(primary)
        crossed = ""
        while True:
            lo = lowest_slot(block, kids)
            for i in sorted(range(lo, len(kids) + 1), key=lambda i: (abs(i - centre), -i)):
                if block.id == anchor.parent.id and i == primary:  # type: ignore[union-attr]
                    continue
                got, _ = self._names_at(reads, block, i)
                if got is None:
                    continue
                new_kind, new_anchor = ("after", kids[i - 1]) if i > 0 else ("before", kids[0])
                return new_kind, new_anchor, got, (
                    f" (moved from line {anchor.start_point[0] + 1}, where `{missing}` is not "
                    "yet bound)")
            owner = enclosing_statement(block)
            if owner is None:
                break
            if owner.type in ("for_statement", "while_statement"):
                crossed = f" without moving it out of the loop at line {owner.start_point[0] + 1}"
                break
            if owner.type in _DEFS or owner.parent is None:
                break
            block = owner.parent
            kids = flow.statements(block)
            centre = next(i for i, c in enumerate(kids) if c.id == owner.id) + 0.5
        raise NoPlace(self._unbound_reason(missing, anchor, crossed))

    def follow_definition(self, node: TsNode, prev: TsNode, prev_image: TsNode | None,
                          anchor: TsNode) -> tuple[TsNode, str] | None:
        """Today the statement logs what the statement just before it computes (`loss =
        ...` then `flor.log("loss", loss)`). When the past image of that statement computes
        something else -- or there is none, the computation having moved (inline code
        today in a helper) -- the statement follows the name instead: right after the one
        statement of the past scope that assigns it (the caller checks its loops). None when
        that does not apply or is ambiguous (the matched spot stands, `fit` then checks it).
        `prev` is today's previous statement, `prev_image` its past image."""
        if prev.type != "expression_statement":
            return None
        reads = set(self.reads(node))
        made = [n for n in flow.simple_binds(prev) if n in reads]
        if not made:
            return None
        sc = flow.scope_of(anchor) if anchor.parent is not None else anchor
        spelled = {n: self.spelling(n, sc) for n in made}
        if prev_image is not None and set(spelled.values()) <= set(flow.simple_binds(prev_image)):
            return None  # the past computes it right there: nothing to follow
        defs: list[TsNode] = []
        for name in made:
            found = self._assigned_in(sc, spelled[name]) or self._assigned_in(sc, name)
            if len(found) != 1:
                return None
            defs.append(found[0])
        last = max(defs, key=lambda d: d.start_byte)
        if last.id == anchor.id:
            return None
        names = ", ".join(f"`{spelled[n]}`" for n in made)
        return last, f" (follows {names}, which the past computes at line {last.start_point[0] + 1})"

    def _assigned_in(self, sc: TsNode, name: str) -> list[TsNode]:
        """The simple statements of scope `sc` (not of scopes inside it) that bind `name`."""
        k = (sc.id, name)
        got = self.assigned.get(k)
        if got is None:
            got = []
            body = sc if sc.type == "module" else sc.child_by_field_name("body")
            stack = [body] if body is not None else []
            while stack:
                n = stack.pop()
                for c in flow.statements(n) if n.type in BLOCKS else n.named_children:
                    if c.type in ("function_definition", "class_definition", "decorated_definition"):
                        continue
                    if c.type == "expression_statement":
                        if name in flow.simple_binds(c):
                            got.append(c)
                    elif c.type in BLOCKS or c.named_child_count:
                        stack.append(c)
            self.assigned[k] = got
        return got

    def _unbound_reason(self, name: str, anchor: TsNode, crossed: str) -> str:
        line = anchor.start_point[0] + 1
        sc = flow.scope_of(anchor)
        mine, _, _ = self._locals(sc)
        if name in mine:
            f = self._flow(sc, {name})
            where = sorted({f.definitions[d].start_point[0] + 1 for d in f.defs_of.get(name, ())})
            at = (f" (assigned at line{'s' if len(where) > 1 else ''} "
                  f"{', '.join(map(str, where[:4]))})") if where else ""
            return (f"reads `{name}`, which is not bound on every path to line {line} of the "
                    f"past version{at}, nor anywhere else in its block at the same loop "
                    f"depth{crossed}")
        if self.scopes.bound_anywhere(name, self.root):
            return f"reads `{name}`, which is not defined in scope at line {line} of the past version"
        return f"reads `{name}`, which the past version never defines"

    def drift(self, node: TsNode, names: list[str], kind: str, anchor: TsNode,
              renames: dict[str, str]) -> list[Drift]:
        """Names today's statement `node` (logging `names`) reads that are computed by other
        expressions in the past version at its spot (`kind` of `anchor`) than today at its own."""
        block = anchor.parent
        if block is None or node.parent is None:
            return []
        kids = flow.statements(block)
        k = next(i for i, c in enumerate(kids) if c.id == anchor.id)
        slot = k + 1 if kind == "after" else k
        tblock = node.parent
        tslot = next((i for i, c in enumerate(flow.statements(tblock)) if c.id == node.id), None)
        if tslot is None:
            return []
        reads = self.reads(node)
        psc = flow.scope_of(block) if block.type != "module" else block
        tsc = flow.scope_of(tblock) if tblock.type != "module" else tblock
        pmine, tmine = self._locals(psc)[0], self.today.locals(tsc)
        votes = self.votes
        modules = self.modules
        out = []
        for name in reads:
            past_name = renames.get(name, name)
            if past_name not in pmine or name not in tmine:
                continue
            pf = self._flow(psc, {past_name})
            tf = self.today.flow(tsc, name)
            pstate, tstate = pf.at(block, slot), tf.at(tblock, tslot)
            if pstate is None or tstate is None:
                continue
            pdefs, tdefs = drift.reaching(pstate[past_name]), drift.reaching(tstate[name])
            if not pdefs or not tdefs:
                continue
            pkeys = {drift.key(d, pf.definitions.get(d), past_name, lambda x: x, modules)
                     for d in pdefs}
            tkeys = {drift.key(d, tf.definitions.get(d), name,
                               lambda x: votes.get(x, x), modules) for d in tdefs}
            if pkeys != tkeys:
                out.append(Drift(
                    ", ".join(names), past_name,
                    "; ".join(drift.show(d, pf.definitions.get(d), self.past) for d in pdefs[:3]),
                    "; ".join(drift.show(d, tf.definitions.get(d), self.today.src) for d in tdefs[:3])))
        return out


def loops(node: TsNode) -> list[TsNode]:
    """The `for`/`while` loops around `node` within its function (or module), innermost first."""
    out = []
    n = node.parent
    while n is not None and n.type not in ("function_definition", "class_definition", "lambda"):
        if n.type in ("for_statement", "while_statement"):
            out.append(n)
        n = n.parent
    return out


def scope_of_stmt(node: TsNode) -> TsNode:
    """The function, class or module `node` belongs to."""
    return flow.scope_of(node)


def lowest_slot(block: TsNode, kids: list[TsNode]) -> int:
    """The first slot a statement may take in `block`: after a docstring and `from
    __future__` imports (see `edits.first_stmt`)."""
    first = first_stmt(block)
    if first is None:
        return len(kids)
    return next((i for i, c in enumerate(kids) if c.id == first.id), 0)


def enclosing_statement(block: TsNode) -> TsNode | None:
    """The statement that owns `block` (through an `else`/`except` clause), None for a module."""
    n = block.parent
    while n is not None and (n.parent is None or n.parent.type not in BLOCKS):
        n = n.parent
    return n
