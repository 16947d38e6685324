"""Carry today's flor statements into a past version of the same file.

The pipeline for one past version:
  1. decide which of today's flor statements the past lacks (by logged name: idempotent);
  2. build today's matching tree *without* them (a pure `flor.log(...)` is dropped, a wrapped
     `y = flor.log("k", expr)` is seen as `y = expr`), since the past cannot contain them;
  3. match that tree against the past tree (`matcher`);
  4. place each statement after the image of its nearest matched preceding sibling, else
     before the nearest matched following one, else at the start of the image of its block;
     a wrapped call becomes a wrap of the image of its expression;
  5. follow the data: every name it reads must be bound on every path to that spot
     (reaching definitions, `flow`; renaming through the mapping when the past spelled the
     variable differently). If not, the nearest position in the same block where they are
     is taken, then in the enclosing block -- never across a loop or a `def`, and never
     into or out of a loop the matching relates to today's; if there is none, it is
     reported with the reason;
  6. warn when a name it reads is computed by a different expression there than today
     (`drift`); add the git_flor import if missing;
  7. insert bytes and re-parse: the output must parse, or the statement is reported instead.
"""

from __future__ import annotations

import gc
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from . import cst, edits, follow, scope
from .matcher import Mapping, match
from .matcher import statement_key as matcher_key
from .result import Drift, Failure, Placement, PropagationError, PropagationResult
from .statements import Alias, FlorStatement, find_alias, flor_calls, flor_statements

_UNWRAP = frozenset({"loop", "arg"})
_DEFS = frozenset({"function_definition", "class_definition", "decorated_definition"})
_COMPOUND = frozenset({"if_statement", "for_statement", "while_statement", "with_statement",
                       "try_statement", "match_statement"})


@dataclass
class _Unit:
    """A piece of today's code to insert: one flor statement, or the new compound statement
    (`if step % 100 == 0:` ...) that holds it when the past has nothing of that block."""

    node: cst.TsNode
    names: list[str]
    parent: cst.Node | None
    index: int
    bindings: set[str]


@dataclass
class _Placed:
    edit_seqs: list[int]
    names: list[str]
    from_line: int
    anchor: str
    confidence: float
    bindings: set[str]
    warnings: list[Drift] | None = None


class Propagator:
    """Today's file parsed once, ready to be applied to many past versions."""

    def __init__(self, today_src: str, names: Sequence[str] | None = None) -> None:
        self.src = today_src.encode()
        self.tree = cst.parse(self.src)
        bad = cst.first_error_line(self.tree)
        if bad is not None:
            raise PropagationError(
                f"today's source does not parse (syntax error at line {bad}); fix it first")
        self.alias = find_alias(self.tree.root_node)
        self.statements = flor_statements(self.tree.root_node, self.alias)
        known = {n for s in self.statements for n in s.names}
        self.statement_ids = {s.stmt.id for s in self.statements}
        self.names = list(names) if names is not None else None
        self.missing = [n for n in (self.names or []) if n not in known]
        self._cache: dict[tuple[int, ...], tuple[cst.Tree, dict[int, cst.Node],
                                                 dict[int, tuple[cst.Node, int]]]] = {}
        self.today = follow.Today(self.src)

    # ------------------------------------------------------------ public

    def apply(self, past_src: str, force: bool = False) -> PropagationResult:
        """Propagate into one past version (pure: text in, text out)."""
        # The trees are tens of thousands of short-lived objects with parent links; letting
        # the cyclic collector rescan them while they are built and walked cost more than
        # all the matching. They are freed by reference counting when the call returns.
        enabled = gc.isenabled()
        gc.disable()
        try:
            return self._apply(past_src, force)
        finally:
            if enabled:
                gc.enable()

    def _apply(self, past_src: str, force: bool) -> PropagationResult:
        failures = [Failure(n, "today's source has no flor.log statement with this name")
                    for n in self.missing]
        wanted = [s for s in self.statements
                  if self.names is None or any(n in self.names for n in s.names)]
        past = past_src.encode()
        ptree = cst.parse(past)
        bad = cst.first_error_line(ptree)
        if bad is not None:
            for s in wanted:
                for n in self._wanted_names(s):
                    failures.append(Failure(n, f"the past version does not parse (syntax "
                                               f"error at line {bad}); nothing was inserted"))
            return PropagationResult(past_src, [], failures)
        palias = find_alias(ptree.root_node, fallback=False)
        both = Alias(self.alias.modules | palias.modules, self.alias.functions | palias.functions)
        present = {c.name for c in flor_calls(ptree.root_node, both)}
        todo = [s for s in wanted if not set(self._wanted_names(s)) <= present]
        if not todo:
            return PropagationResult(past_src, [], failures)
        return _Run(self, todo, past, ptree, palias, both, force, failures).run()

    def _wanted_names(self, s: FlorStatement) -> list[str]:
        return [n for n in s.names if self.names is None or n in self.names]

    # ------------------------------------------------------------ today's tree

    def minus_tree(self, todo: list[FlorStatement]) -> tuple[
            cst.Tree, dict[int, cst.Node], dict[int, tuple[cst.Node, int]]]:
        """Today's matching tree without `todo`; by-ts-id index; removed stmt → (parent, idx)."""
        key = tuple(s.stmt.id for s in todo)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        drop = {s.stmt.id for s in todo if s.pure}
        unwrap: dict[int, cst.TsNode] = {}
        for s in todo:
            if not s.pure:
                for c in s.calls:
                    if c.value is not None:
                        unwrap[c.call.id] = c.value
        alias = self.alias

        def substitute(n: cst.TsNode) -> cst.TsNode | str | None:
            if n.id in drop:
                return "skip"
            changed = False
            while n.type == "call":
                inner = unwrap.get(n.id) or _unwrappable(n, alias)
                if inner is None:
                    break
                n, changed = inner, True
            return n if changed else None

        tree = cst.build(self.tree, self.src, substitute)
        index = {n.ts.id: n for n in tree.nodes}
        slots: dict[int, tuple[cst.Node, int]] = {}
        for s in todo:
            if s.stmt.id in drop and s.stmt.parent is not None:
                parent = index.get(s.stmt.parent.id)
                if parent is not None:
                    pos = sum(1 for c in parent.children if c.start < s.stmt.start_byte)
                    slots[s.stmt.id] = (parent, pos)
        self._cache[key] = (tree, index, slots)
        return tree, index, slots


def _unwrappable(call: cst.TsNode, alias: Alias) -> cst.TsNode | None:
    """`flor.loop("epoch", it)` → `it`, `flor.arg("lr", 1e-3)` → `1e-3`: the past spelled
    these without flor, and matching should not see the difference."""
    fn = call.child_by_field_name("function")
    if fn is None or fn.type != "attribute":
        return None
    obj, attr = fn.child_by_field_name("object"), fn.child_by_field_name("attribute")
    if obj is None or attr is None or obj.text.decode() not in alias.modules \
            or attr.text.decode() not in _UNWRAP:
        return None
    args = call.child_by_field_name("arguments")
    if args is None:
        return None
    pos = [a for a in args.named_children if a.type not in ("keyword_argument", "comment")]
    return pos[1] if len(pos) > 1 else None


class _Run:
    """State of one propagation into one past version."""

    def __init__(self, prop: Propagator, todo: list[FlorStatement], past: bytes, ptree,  # type: ignore[no-untyped-def]
                 palias: Alias, both: Alias, force: bool, failures: list[Failure]) -> None:
        self.p = prop
        self.todo = todo
        self.past = past
        self.ptree = ptree
        self.palias = palias
        self.both = both
        self.force = force
        self.failures = failures
        self.edits: list[edits.Edit] = []
        self.placed: list[_Placed] = []
        self.seq = 0

    def run(self) -> PropagationResult:
        tree, index, slots = self.p.minus_tree(self.todo)
        both = self.both

        def substitute(n: cst.TsNode) -> cst.TsNode | None:
            changed = False
            while n.type == "call":
                inner = _unwrappable(n, both)
                if inner is None:
                    break
                n, changed = inner, True
            return n if changed else None

        self.ptree_c = cst.build(self.ptree, self.past, substitute)
        self.pindex = {n.ts.id: n for n in self.ptree_c.nodes}
        self.index = index
        self.m = match(tree, self.ptree_c)
        self.votes = _rename_votes(self.m)
        self.follower = follow.Follower(
            self.past, self.ptree.root_node, self.votes, self.force, self.p.today,
            self.p.alias, self.palias, [st.stmt for st in self.todo])
        done: set[int] = set()
        for s in self.todo:
            if s.stmt.id in done:
                continue
            names = self.p._wanted_names(s)
            try:
                if s.pure or not self._wrap(s, names):
                    unit = self._unit(s, slots)
                    if unit.node.id in done:
                        continue
                    done.add(unit.node.id)
                    self._place(unit)
            except _Skip as e:
                self.failures.extend(Failure(n, str(e)) for n in names)
        return self._finish()

    # ------------------------------------------------------------ units

    def _unit(self, s: FlorStatement, slots: dict[int, tuple[cst.Node, int]]) -> _Unit:
        names = self.p._wanted_names(s)
        if s.stmt.id in slots:
            parent, idx = slots[s.stmt.id]
        else:
            node = self.index.get(s.stmt.id)
            if node is None or node.parent is None:
                raise _Skip("cannot locate it in today's file")
            parent, idx = node.parent, node.idx
        node = s.stmt
        # Climb out of blocks the past has none of: propagate the new `if`/`for` whole.
        while parent.type == "block" and parent.parent is not None:
            owner = parent.parent
            while owner.parent is not None and not owner.is_stmt:
                owner = owner.parent
            if owner.type in _DEFS or not owner.is_stmt or self._touches_past(owner) \
                    or self._same_key_in_past(owner) is not None:
                break
            other = self._other_new_code(owner.ts)
            if other is not None and not self.force:
                # Carrying the block would also carry code that changes what the old run
                # computes; only the user can decide that (--force).
                raise _Skip(f"its enclosing `{_first_line(owner.ts)}` block is new and also "
                            f"holds other new code (line {other.start_point[0] + 1}); "
                            "use --force to carry the whole block")
            node = owner.ts
            assert owner.parent is not None
            parent, idx = owner.parent, owner.idx
        inner = flor_calls(node, self.p.alias)
        unit_names = names if node.id == s.stmt.id else list(dict.fromkeys(
            c.name for c in inner if self.p.names is None or c.name in self.p.names))
        bindings = {c.binding for c in inner}
        return _Unit(node, unit_names, parent, idx, bindings)

    def _other_new_code(self, owner: cst.TsNode) -> cst.TsNode | None:
        """The first simple statement in `owner` that is neither a flor statement nor `pass`."""
        flor_ids = self.p.statement_ids
        stack = [owner]
        while stack:
            n = stack.pop()
            if n.id in flor_ids:
                continue
            if n.parent is not None and n.parent.type == "block" and n.type != "pass_statement" \
                    and not any(c.type == "block" for c in n.named_children) \
                    and n.type not in ("if_statement", "for_statement", "while_statement",
                                       "with_statement", "try_statement", "match_statement"):
                return n
            stack.extend(reversed(n.named_children))
        return None

    def _same_key_in_past(self, node: cst.Node) -> cst.Node | None:
        """The one past statement with `node`'s header (`if args.evaluate:`), or the one past
        definition with its qualified name, when the matcher left `node` unmatched because
        everything inside it changed."""
        if node.type in ("function_definition", "class_definition"):
            # A definition is who it is by its qualified name (`Trainer.build_evaluator`),
            # however much of its body was rewritten.
            key = self._qualified(node)
            found = [n for n in self.ptree_c.nodes if n.type == node.type
                     and self._qualified(n) == key]
            return found[0] if len(found) == 1 else None
        if not node.is_stmt or node.type not in _COMPOUND:
            return None
        key = matcher_key(node, self.m.headers)
        found = [n for n in self.ptree_c.nodes if n.type == node.type and n.is_stmt
                 and matcher_key(n, self.m.headers) == key]
        return found[0] if len(found) == 1 else None

    def _qualified(self, node: cst.Node) -> tuple[int, ...]:
        """The keys of a definition and of the definitions around it, innermost first."""
        out = []
        n: cst.Node | None = node
        while n is not None:
            if n.type in ("function_definition", "class_definition"):
                out.append(matcher_key(n, self.m.headers))
            n = n.parent
        return tuple(out)

    def _touches_past(self, owner: cst.Node) -> bool:
        """Does any statement inside `owner` (or `owner` itself) have a past image?"""
        m = self.m
        if m.matched_src(owner):
            return True
        nodes = self.m.src.nodes
        return any(n.is_stmt and m.matched_src(n) for n in nodes[owner.pre : owner.last + 1])

    # ------------------------------------------------------------ placing

    def _place(self, unit: _Unit) -> None:
        parent, idx = unit.parent, unit.index
        assert parent is not None
        siblings = parent.children
        exclude = unit.node.id
        # The loops around it are part of what a statement means (once per step, once per
        # epoch, once per run): an image in or out of a loop is no place for it, however well
        # it matches.
        wrong_loop: list[str] = []

        def image(s: cst.Node) -> cst.Node | None:
            img = self._stmt_image(s)
            why = self._loops_differ(unit.node, img.ts) if img is not None else None
            if why is not None:
                wrong_loop.append(why)
                return None
            return img

        def opening(block: cst.Node | None) -> cst.TsNode | None:
            first = edits.first_stmt(block.ts) if block is not None else None
            why = self._loops_differ(unit.node, first) if first is not None else None
            if why is not None:
                wrong_loop.append(why)
                return None
            return first

        target: tuple[str, cst.TsNode, float] | None = None
        for s in reversed(siblings[:idx]):
            if s.ts.id == exclude:
                continue
            img = image(s)
            if img is not None:
                target = ("after", img.ts, self.m.score.get(s.pre, 0.5))
                break
        if target is None and not any(s.ts.id != exclude for s in siblings[:idx]):
            # First in its block today: open the same block in the past. Its old first
            # statement may have been deleted since, and today's next statement may have
            # come from elsewhere, so the following sibling is the weaker clue here.
            first = opening(self._block_image(parent))
            if first is not None:
                target = ("before", first, self.m.score.get(parent.pre, 0.5))
        if target is None:
            for s in siblings[idx:]:
                if s.ts.id == exclude:
                    continue
                img = image(s)
                if img is not None:
                    target = ("before", img.ts, 0.9 * self.m.score.get(s.pre, 0.5))
                    break
        if target is None:
            first = opening(self._block_image(parent))
            if first is not None:
                target = ("before", first, 0.6 * self.m.score.get(parent.pre, 0.5))
        if target is None and wrong_loop:
            raise _Skip(f"the code around it in the past version would move it {wrong_loop[0]}; "
                        "a statement is not moved into or out of a loop")
        if target is None:
            raise _Skip("none of the code around it exists in the past version")
        kind, anchor, confidence = target
        fol = self.follower
        prev = next((x for x in reversed(siblings[:idx]) if x.ts.id != exclude), None)
        img = self._stmt_image(prev) if prev is not None else None
        followed = fol.follow_definition(unit.node, prev.ts, img.ts if img is not None else None,
                                         anchor) if prev is not None else None
        if followed is not None and self._loops_differ(unit.node, followed[0]) is None:
            kind, anchor = "after", followed[0]
        try:
            kind, anchor, renames, note = fol.fit(unit.node, kind, anchor)
        except follow.NoPlace as e:
            raise _Skip(str(e)) from None
        note = (followed[1] if followed is not None and anchor.id == followed[0].id else "") + note
        if note:
            confidence *= 0.8
        lines, old_indent, keep = self._text(unit.node, renames)
        seq = self._next()
        try:
            if kind == "after":
                edit = edits.after(self.past, anchor, lines, old_indent, keep, seq)
            else:
                edit = edits.before(self.past, anchor, lines, old_indent, keep, seq)
        except edits.CannotInsert as e:
            raise _Skip(str(e)) from None
        self.edits.append(edit)
        line = anchor.start_point[0] + 1
        first_line = self.past[anchor.start_byte : anchor.end_byte].split(b"\n", 1)[0].decode(
            "utf-8", "replace").strip()
        note += "".join(f" (renamed `{a}` to `{b}`)" for a, b in renames.items())
        self.placed.append(_Placed([seq], unit.names, unit.node.start_point[0] + 1,
                                   f"{kind} line {line}: {first_line}{note}",
                                   round(min(confidence, 1.0), 3), unit.bindings,
                                   fol.drift(unit.node, unit.names, kind, anchor, renames)))

    def _loops_differ(self, stmt: cst.TsNode, at: cst.TsNode) -> str | None:
        """Would putting today's `stmt` next to the past statement `at` move it out of a loop
        it is in today, or into one it is not in? That takes two signs at once: a loop the
        matching relates disagrees (today's loop's image does not hold `at`, or a loop around
        `at` has a twin today that does not hold `stmt`), and the number of loops around
        differs the same way. On the way in, only twins in `stmt`'s own function count: a
        loop body extracted since into a helper (`train_step()` called in `for batch`) is
        the same nesting, and so is code wrapped in a new outer loop since. On the way out,
        the same holds the other way: today's inline epoch body was a helper the past calls
        in that loop (`eval_metric = train_epoch(...)` in `for epoch`)."""
        mine = follow.loops(stmt)
        theirs = follow.loops(at)
        if len(mine) > len(theirs):
            theirs_ids = {n.id for n in theirs}
            for loop in mine:
                node = self.index.get(loop.id)
                img = self.m.image(node) if node is not None else None
                if img is not None and img.ts.type == loop.type and img.ts.id not in theirs_ids \
                        and not _calls_home(img.ts, at):
                    return f"out of the loop `{_first_line(loop)}`"
        elif len(mine) < len(theirs):
            mine_ids = {n.id for n in mine}
            home = follow.scope_of_stmt(stmt)
            for loop in theirs:
                pnode = self.pindex.get(loop.id)
                j = self.m.bwd.get(pnode.pre) if pnode is not None else None
                if j is None:
                    continue
                twin = self.m.src.nodes[j].ts
                if twin.type == loop.type and twin.id not in mine_ids \
                        and follow.scope_of_stmt(twin).id == home.id:
                    return f"into the loop `{_first_line(loop)}` (line {loop.start_point[0] + 1})"
        return None

    def _stmt_image(self, s: cst.Node) -> cst.Node | None:
        img = self.m.image(s)
        if img is None and s.type == "decorated_definition":
            # A decorator added since: the definition itself may still be there.
            defn = next((c for c in s.children if c.type in _DEFS), None)
            img = self.m.image(defn) if defn is not None else None
        while img is not None and not img.is_stmt:
            img = img.parent
        return img

    def _block_image(self, block: cst.Node) -> cst.Node | None:
        img = self.m.image(block)
        if img is not None and img.type in cst.BLOCKS:
            return img
        owner = block.parent
        if owner is None:
            return None
        oimg = self.m.image(owner)
        if oimg is None:
            oimg = self._same_key_in_past(owner)
        if oimg is None:
            return None
        same = [c for c in owner.children if c.type == block.type]
        cand = [c for c in oimg.children if c.type == block.type]
        pos = next(i for i, c in enumerate(same) if c is block)
        return cand[pos] if pos < len(cand) else None

    def _text(self, node: cst.TsNode, renames: dict[str, str]) -> tuple[list[bytes], bytes, bool]:
        src = self.p.src
        start, end = node.start_byte, node.end_byte
        body = bytearray(src[start:end])
        if renames:
            spots = [(n.start_byte, n.end_byte, renames[name]) for name, n in scope.reads(node)
                     if name in renames]
            for s, e, new in sorted(spots, reverse=True):
                body[s - start : e - start] = new.encode()
        lines = bytes(body).replace(b"\r\n", b"\n").split(b"\n")
        keep = _has_multiline_string(node)
        return lines, edits.leading_ws(src, start), keep

    def _wrap(self, s: FlorStatement, names: list[str]) -> bool:
        """Wrap the past image of each wrapped call's expression; False when the whole
        statement is new (so it is inserted as a statement instead)."""
        stmt_node = self.index.get(s.stmt.id)
        stmt_img = self.m.image(stmt_node) if stmt_node is not None else None
        plans = []
        for c in s.calls:
            if c.name not in names:
                continue
            if c.value is None:
                return False
            vnode = self.index.get(c.value.id)
            img = self.m.image(vnode) if vnode is not None else None
            if img is None or img.type != vnode.type:  # type: ignore[union-attr]
                if stmt_img is None:
                    return False
                raise _Skip(f"the expression `{c.value.text.decode()}` it wraps is not in "
                            "the past version")
            plans.append((c, img))
        src = self.p.src
        for c, img in plans:
            prefix = src[c.call.start_byte : c.value.start_byte]  # type: ignore[union-attr]
            suffix = src[c.value.end_byte : c.call.end_byte]  # type: ignore[union-attr]
            open_seq, close_seq = self._next(), self._next()
            self.edits.append(edits.Edit(img.start, prefix, open_seq))
            self.edits.append(edits.Edit(img.end, suffix, close_seq))
            anchor_text = self.past[img.start:img.end].split(b"\n", 1)[0].decode(
                "utf-8", "replace")
            self.placed.append(_Placed([open_seq, close_seq], [c.name], c.call.start_point[0] + 1,
                                       f"wraps `{anchor_text}` at line "
                                       f"{cst.line_of(self.past, img.start)}",
                                       round(min(self.m.score.get(vnode.pre, 0.5), 1.0), 3),  # type: ignore[union-attr]
                                       {c.binding}))
        return True

    def _next(self) -> int:
        self.seq += 1
        return self.seq

    # ------------------------------------------------------------ output

    def _import_edit(self, spellings: set[str]) -> list[edits.Edit]:
        have = self.palias.modules | self.palias.functions
        missing = sorted(b for b in spellings if b not in have)
        if not missing:
            return []
        texts = list(dict.fromkeys(self.p.alias.imports.get(b, f"import git_flor as {b}")
                                   for b in missing))
        root = self.ptree.root_node
        stmts = [c for c in root.named_children if c.type != "comment"]
        last = None
        for i, st in enumerate(stmts):
            if st.type in ("import_statement", "import_from_statement", "future_import_statement") \
                    or (i == 0 and edits.is_docstring(st)):
                last = st
                continue
            break
        lines = [t.encode() for t in texts]
        out = []
        for k, line in enumerate(lines):
            seq = -len(lines) + k
            if last is not None:
                out.append(edits.after(self.past, last, [line], b"", False, seq))
            elif stmts:
                out.append(edits.before(self.past, stmts[0], [line], b"", False, seq))
            else:
                nl = edits.newline_of(self.past)
                prefix = nl if self.past and not self.past.endswith(b"\n") else b""
                out.append(edits.Edit(len(self.past), prefix + line + nl, seq))
        return out

    def _finish(self) -> PropagationResult:
        kept = list(self.placed)
        while True:
            result = self._render(kept)
            if result is not None or not kept:
                break
            # Some insertion breaks the parse: keep the largest prefix of placements that
            # parses, report the first one that does not, and try the rest again.
            good: list[_Placed] = []
            for p in kept:
                if self._render(good + [p]) is not None:
                    good.append(p)
                else:
                    self.failures.extend(Failure(n, "inserting it would not parse in the past "
                                                    "version") for n in p.names)
            kept = good
        if result is None:
            return PropagationResult(self.past.decode(), [], self.failures)
        return result

    def _render(self, placed: list[_Placed]) -> PropagationResult | None:
        seqs = {q for p in placed for q in p.edit_seqs}
        chosen = [e for e in self.edits if e.seq in seqs]
        chosen += self._import_edit({b for p in placed for b in p.bindings})
        out, where = edits.apply(self.past, chosen)
        tree = cst.parse(out)
        if tree.root_node.has_error:
            return None
        by_seq = {e.seq: e for e in chosen}
        placements = []
        for p in placed:
            e = by_seq[p.edit_seqs[0]]
            line = cst.line_of(out, where[e.seq]) + e.lead
            for n in p.names:
                placements.append(Placement(n, p.from_line, line, p.anchor, p.confidence))
        placements.sort(key=lambda pl: pl.from_line)
        warnings = [w for p in placed for w in (p.warnings or [])]
        return PropagationResult(out.decode(), placements, self.failures, warnings)


class _Skip(Exception):
    """One statement cannot be placed; the message is the user-facing reason."""


def _rename_votes(m: Mapping) -> dict[str, str]:
    """For each identifier spelling today, the past spelling it maps to most often."""
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    src, dst = m.src.nodes, m.dst.nodes
    for i, j in m.fwd.items():
        a = src[i]
        if a.type == "identifier":
            counts[a.label][dst[j].label] += 1
    return {k: c.most_common(1)[0][0] for k, c in counts.items()}


def _calls_home(loop: cst.TsNode, at: cst.TsNode) -> bool:
    """Does `loop` call the function `at` is in (`train_epoch(...)`, `self.train_epoch(...)`)?"""
    home = follow.scope_of_stmt(at)
    if home.type != "function_definition":
        return False
    name = home.child_by_field_name("name")
    if name is None:
        return False
    want = name.text
    stack = [loop]
    while stack:
        n = stack.pop()
        if n.type == "call":
            fn = n.child_by_field_name("function")
            if fn is not None and fn.type == "attribute":
                fn = fn.child_by_field_name("attribute")
            if fn is not None and fn.type == "identifier" and fn.text == want:
                return True
        stack.extend(n.named_children)
    return False


def _first_line(node: cst.TsNode) -> str:
    return node.text.decode("utf-8", "replace").split("\n", 1)[0].rstrip(":").strip()


def _has_multiline_string(node: cst.TsNode) -> bool:
    stack = [node]
    while stack:
        n = stack.pop()
        if n.type == "string" and n.start_point[0] != n.end_point[0]:
            return True
        stack.extend(n.named_children)
    return False


def propagate_source(today_src: str, past_src: str, names: Sequence[str] | None = None, *,
                     force: bool = False) -> PropagationResult:
    """Carry today's flor statements (all new ones, or those in `names`) into `past_src`."""
    return Propagator(today_src, names).apply(past_src, force=force)


__all__ = ["Failure", "Placement", "PropagationError", "PropagationResult", "Propagator",
           "propagate_source"]
