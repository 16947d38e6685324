"""A GumTree-style matcher between today's tree and a past tree.

Phases, following Falleri et al. (GumTree, ASE 2014), with two changes that matter on real
training-script histories:

1. Top-down: pair isomorphic subtrees, tallest first. Unique pairs are taken at once.
   Ambiguous ones (the same `optimizer.zero_grad()` in the train and the eval loop) are
   ranked by *context* -- agreement of the ancestors' headers (enclosing `def` name, loop
   header, ...), of the neighbouring siblings, and of relative position -- instead of
   GumTree's parent dice, which is expensive on large blocks and uninformative when the
   parents themselves have changed.
2. Bottom-up: a container (statement, block, clause) whose descendants are partly matched is
   paired with the same-type past container holding most of their images (dice), then a
   recovery pass aligns their still-unmatched children by a longest common subsequence of
   types. Recovery is what pairs `loss` with `l` in `loss = crit(out, y)` / `l = crit(out, y)`,
   so identifiers can be renamed through the mapping.
3. Neighbours: an unmatched statement next to a matched pair is paired with the unmatched
   past statement at the same side of the image when both do the same thing (`_roles`: bind
   the same target with the same operator, or compute the same value, or call the same
   function). That is how `check_requirements(ROOT / "requirements.txt")` finds its edited
   `check_requirements()` inside an `if` whose condition was rewritten, where no container
   above it is matched and recovery never runs.
4. Lone statements: a statement still unmatched, with no matched neighbour, is paired with
   the one unmatched past statement of the same role in the image of its function that
   shares most of its leaves, when no other comes close (`_lone`).
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Callable

from .cst import BLOCKS, Node, Tree

MIN_HEIGHT = 2
MIN_DICE = 0.3
# Beyond this many candidate pairs for one subtree shape (`args.x` used fifty times) context
# ranking costs more than it is worth; such nodes are left to the bottom-up phase.
MAX_AMBIGUOUS = 2500
_CONTAINERS = BLOCKS | {
    "else_clause", "elif_clause", "except_clause", "finally_clause", "case_clause",
    "except_group_clause",
}


class Mapping:
    """A one-to-one partial map from today's nodes to past nodes, with a score per pair
    (1.0 for isomorphic subtrees, the dice similarity for containers, lower for recovery)."""

    def __init__(self, src: Tree, dst: Tree) -> None:
        self.src = src
        self.dst = dst
        self.fwd: dict[int, int] = {}
        self.bwd: dict[int, int] = {}
        self.score: dict[int, float] = {}
        self.headers: dict[int, int] = {}
        self.leafsets: dict[int, frozenset[str]] = {}
        self.heads: dict[int, frozenset[str]] = {}

    def add(self, a: Node, b: Node, score: float) -> None:
        self.fwd[a.pre] = b.pre
        self.bwd[b.pre] = a.pre
        self.score[a.pre] = score

    def add_subtree(self, a: Node, b: Node, score: float = 1.0) -> None:
        """Pair two isomorphic subtrees node by node (same shape, so pre-order zips them)."""
        sn, dn = self.src.nodes, self.dst.nodes
        for i in range(a.size):
            x, y = sn[a.pre + i], dn[b.pre + i]
            self.fwd[x.pre] = y.pre
            self.bwd[y.pre] = x.pre
            self.score[x.pre] = score

    def image(self, a: Node) -> Node | None:
        j = self.fwd.get(a.pre)
        return None if j is None else self.dst.nodes[j]

    def matched_src(self, a: Node) -> bool:
        return a.pre in self.fwd

    def matched_dst(self, b: Node) -> bool:
        return b.pre in self.bwd


def match(src: Tree, dst: Tree) -> Mapping:
    """Compute the mapping from today's tree (`src`) to a past tree (`dst`)."""
    m = Mapping(src, dst)
    _top_down(m)
    _bottom_up(m)
    _neighbours(m)
    if _lone(m):
        _neighbours(m)
    return m


# ---------------------------------------------------------------- top-down

def _top_down(m: Mapping) -> None:
    heap1: list[tuple[int, int, Node]] = [(-m.src.root.height, 0, m.src.root)]
    heap2: list[tuple[int, int, Node]] = [(-m.dst.root.height, 0, m.dst.root)]
    ambiguous: list[tuple[Node, Node]] = []

    def pop_level(heap: list[tuple[int, int, Node]]) -> list[Node]:
        h = heap[0][0]
        out = []
        while heap and heap[0][0] == h:
            out.append(heapq.heappop(heap)[2])
        return out

    def open_(heap: list[tuple[int, int, Node]], node: Node) -> None:
        for c in node.children:
            if c.height >= MIN_HEIGHT:
                heapq.heappush(heap, (-c.height, c.pre, c))

    while heap1 and heap2:
        h1, h2 = -heap1[0][0], -heap2[0][0]
        if h1 != h2:
            if h1 > h2:
                for n in pop_level(heap1):
                    open_(heap1, n)
            else:
                for n in pop_level(heap2):
                    open_(heap2, n)
            continue
        level1, level2 = pop_level(heap1), pop_level(heap2)
        groups1: dict[int, list[Node]] = defaultdict(list)
        groups2: dict[int, list[Node]] = defaultdict(list)
        for n in level1:
            groups1[n.hash].append(n)
        for n in level2:
            groups2[n.hash].append(n)
        for h, ns1 in groups1.items():
            ns2 = groups2.get(h)
            if not ns2:
                for n in ns1:
                    open_(heap1, n)
            elif len(ns1) == 1 and len(ns2) == 1:
                m.add_subtree(ns1[0], ns2[0])
            elif len(ns1) * len(ns2) <= MAX_AMBIGUOUS:
                ambiguous.extend((a, b) for a in ns1 for b in ns2)
        for h, ns2 in groups2.items():
            if h not in groups1:
                for n in ns2:
                    open_(heap2, n)

    ranked = sorted(ambiguous, key=lambda p: _context_score(m, p[0], p[1]), reverse=True)
    for a, b in ranked:
        if not m.matched_src(a) and not m.matched_dst(b):
            m.add_subtree(a, b)


def _header(node: Node, cache: dict[int, int]) -> int:
    """A hash of a node without its nested blocks: `def train(args)` without the body."""
    h = cache.get(id(node))
    if h is None:
        h = cache[id(node)] = hash((node.type, node.label, tuple(
            c.hash for c in node.children if c.type not in _CONTAINERS)))
    return h


def _key(node: Node, cache: dict[int, int]) -> int:
    """What identifies a statement across rewrites: a definition's name, else its header."""
    if node.type == "decorated_definition":
        defn = next((c for c in node.children if c.type != "decorator"), None)
        if defn is not None:
            return _key(defn, cache)
    if node.type in ("function_definition", "class_definition"):
        name = next((c for c in node.children if c.type == "identifier"), None)
        return hash((node.type, name.label if name is not None else ""))
    return _header(node, cache)


statement_key = _key


def _context_score(m: Mapping, a: Node, b: Node) -> tuple[float, float]:
    score = 0.0
    pa, pb = a.parent, b.parent
    depth = 0
    while pa is not None and pb is not None and depth < 6:
        if pa.type != pb.type:
            break
        weight = 1.0 / (depth + 1)
        if _header(pa, m.headers) == _header(pb, m.headers):
            score += 2 * weight
        if m.fwd.get(pa.pre) == pb.pre:
            score += 3 * weight
        pa, pb = pa.parent, pb.parent
        depth += 1
    for da in (-1, 1):
        sa, sb = _sibling(a, da), _sibling(b, da)
        if sa is not None and sb is not None:
            if sa.hash == sb.hash:
                score += 1.5
            elif m.fwd.get(sa.pre) == sb.pre:
                score += 1.0
    sa, sb = _statement(a), _statement(b)
    if sa is not None and sb is not None and sa is not a and sb is not b:
        # Which statement the copy sits in: `math.inf` of `max_epoch = cfg.max_epoch or
        # math.inf` belongs in `max_epoch = args.max_epoch or math.inf`, not in the
        # `max_update = ...` next to it, though the two contexts above tie.
        ha, hb = _head_leaves(m, m.src, sa), _head_leaves(m, m.dst, sb)
        union = len(ha | hb)
        score += 2.0 * len(ha & hb) / union if union else 0.0
    closeness = -abs(a.pre / max(len(m.src.nodes), 1) - b.pre / max(len(m.dst.nodes), 1))
    return score, closeness


def _statement(n: Node) -> Node | None:
    """The statement `n` is part of (`n` itself when it is one)."""
    while n is not None and not n.is_stmt:
        n = n.parent  # type: ignore[assignment]
    return n


def _head_leaves(m: Mapping, tree: Tree, stmt: Node) -> frozenset[str]:
    """The leaves of a statement outside its nested blocks (`for x in xs:` without the body)."""
    key = id(stmt)
    got = m.heads.get(key)
    if got is None:
        out: set[str] = set()
        stack = [c for c in stmt.children if c.type not in _CONTAINERS]
        while stack:
            n = stack.pop()
            if n.children:
                stack.extend(c for c in n.children if c.type not in _CONTAINERS)
            else:
                out.add(f"{n.type}:{n.label}")
        got = m.heads[key] = frozenset(out)
    return got


def _sibling(n: Node, delta: int) -> Node | None:
    p = n.parent
    if p is None:
        return None
    i = n.idx + delta
    return p.children[i] if 0 <= i < len(p.children) else None


# ---------------------------------------------------------------- bottom-up

def _is_container(n: Node) -> bool:
    return n.is_stmt or n.type in _CONTAINERS or (n.parent is not None and n.parent.is_stmt)


def _matched_weight(m: Mapping, node: Node) -> list[tuple[Node, int]]:
    """Maximal matched parts of `node`'s subtree with their weights (nodes covered)."""
    out: list[tuple[Node, int]] = []
    stack = list(node.children)
    sn = m.src.nodes
    while stack:
        n = stack.pop()
        j = m.fwd.get(n.pre)
        if j is not None and m.score.get(n.pre) == 1.0 and m.dst.nodes[j].hash == n.hash:
            out.append((m.dst.nodes[j], n.size))
            continue
        if j is not None:
            out.append((m.dst.nodes[j], 1))
        stack.extend(sn[c.pre] for c in n.children)
    return out


def _bottom_up(m: Mapping) -> None:
    src_nodes = m.src.nodes
    # Post-order: children are settled before the container that holds them.
    for a in sorted(src_nodes, key=lambda n: (n.last, -n.pre)):
        if m.matched_src(a) or not a.children or not _is_container(a):
            continue
        if a is m.src.root:
            m.add(a, m.dst.root, 1.0)
            _recover(m, a, m.dst.root)
            continue
        parts = _matched_weight(m, a)
        if not parts:
            continue
        common: dict[int, int] = defaultdict(int)
        for img, w in parts:
            p = img.parent
            steps = 0
            while p is not None and steps < 8:
                if p.type == a.type and not m.matched_dst(p):
                    common[p.pre] += w
                p = p.parent
                steps += 1
        best, best_dice = None, 0.0
        for j, c in common.items():
            b = m.dst.nodes[j]
            dice = 2.0 * c / (a.size + b.size)
            if a.label != b.label:
                dice *= 0.8
            if a.type in _CONTAINERS:
                # A block is what its owner is: the body of `for epoch` is not the body of
                # the `if` that later took over half of its statements.
                # Unless nearly identical, blocks of different owners are left unmatched;
                # their owners, once matched, pair them in recovery.
                same = a.parent is not None and b.parent is not None \
                    and _key(a.parent, m.headers) == _key(b.parent, m.headers)
                if not same and dice < 0.8:
                    continue
                dice = dice + 0.3 if same else dice
            elif _key(a, m.headers) == _key(b, m.headers):
                # Same `def main` / same loop header: a rewritten body (large literals
                # replaced, a docstring added) should not hide that it is the same statement.
                dice += 0.3
            elif _other_role(a, b):
                # `date_str = datetime.now().strftime(...)` shares its whole value with
                # `args.name = '-'.join([datetime.now().strftime(...), ...])`, yet binds
                # another name from another value: a part in common is not the statement.
                dice *= 0.5
            if dice > best_dice:
                best, best_dice = b, dice
        if best is not None and best_dice >= MIN_DICE:
            m.add(a, best, best_dice)
            _recover(m, a, best)


def _recover(m: Mapping, a: Node, b: Node, depth: int = 0) -> None:
    """Pair the unmatched children of a matched pair, in order: first identical subtrees,
    then same-type nodes by similarity (and recurse into those)."""
    ka = [c for c in a.children if not m.matched_src(c)]
    kb = [c for c in b.children if not m.matched_dst(c)]
    if not ka or not kb or len(ka) * len(kb) > 40000:
        return
    for x, y in _lcs(ka, kb, lambda x, y: 1.0 if x.hash == y.hash else 0.0):
        m.add_subtree(x, y, 1.0)
    ka = [c for c in ka if not m.matched_src(c)]
    kb = [c for c in kb if not m.matched_dst(c)]
    if not ka or not kb:
        return
    if len(ka) * len(kb) <= 2500:
        pairs = _lcs(ka, kb, lambda x, y: _similarity(m, x, y))
    else:
        pairs = _lcs(ka, kb, lambda x, y: 1.0 if x.type == y.type else 0.0)
    for x, y in pairs:
        score = m.score.get(a.pre, 0.5) * 0.9
        m.add(x, y, score)
        if x.children and depth < 30 and not (x.is_stmt and _is_big(x, y)):
            _recover(m, x, y, depth + 1)


def _similarity(m: Mapping, x: Node, y: Node) -> float:
    """How alike two same-type nodes are (0: never pair them). A `for`/`if`/`def` with the
    same header is almost surely the same statement whatever happened to its body; other
    pairs are ranked by the leaves they share, with a floor so that `loss = f(x)` and
    `l = f(x)` still pair (that is how renames are found)."""
    if x.type != y.type or (x.children == []) != (y.children == []):
        return 0.0
    if not x.children:
        return 1.0 if x.label == y.label else 0.1
    if _key(x, m.headers) == _key(y, m.headers) and x.height > 2:
        return 3.0
    lx, ly = _leaves(m, m.src, x), _leaves(m, m.dst, y)
    union = len(lx | ly)
    same = 0.0
    if x.is_stmt and y.is_stmt and _same_role(x, y):
        # `test_loss /= len(loader.dataset)` is the edited `test_loss /= (n / batch)`, not
        # the `test_loss = test_loss.data[0]` before it, though the latter shares as many
        # identifiers: what a statement binds, and how, says more than its leaves.
        same = 0.5
    return 0.1 + same + (len(lx & ly) / union if union else 0.0)


def _roles(n: Node) -> tuple[int, ...]:
    """What a simple statement does, as hashes that survive an edit of the rest of it: an
    assignment's operator with its target and with its value (`loss = f(x)` renamed to
    `l = f(x)` keeps the second), a bare call's function (`check_requirements(...)` with
    other arguments). Empty for anything else."""
    if n.type != "expression_statement" or len(n.children) != 1:
        return ()
    e = n.children[0]
    out: tuple[int, ...] = ()
    if e.type in ("assignment", "augmented_assignment") and len(e.children) >= 2:
        op, lhs, e = (e.type, e.label), e.children[0], e.children[-1]
        out = (hash(("=", op, lhs.hash)), hash(("v", op, e.hash)))
    while e.type == "await" and e.children:
        e = e.children[0]
    if e.type == "call" and e.children:
        # `train(epoch)` and `loss = train(epoch)` call the same function.
        out += (hash(("call", e.children[0].hash)),)
    return out


def _same_role(x: Node, y: Node) -> bool:
    rx = _roles(x)
    return bool(rx) and any(r in rx for r in _roles(y))


def _other_role(x: Node, y: Node) -> bool:
    """Both statements have a role (`_roles`) and share none of it."""
    rx, ry = _roles(x), _roles(y)
    return bool(rx) and bool(ry) and not any(r in rx for r in ry)


# ---------------------------------------------------------------- lone statements

LONE_MIN = 0.5
LONE_MARGIN = 0.1


def _lone(m: Mapping) -> bool:
    """Pair each unmatched statement with its clearly most similar unmatched past statement
    of the same role (`evaluate(model, data, start_epoch, args, tb_writer=writer)` with
    `evaluate(model, data, start_epoch, args, writer, 0)` in a block whose every other
    statement and owner changed). Candidates are those in the image of the statement's
    function when it has any (else the whole file: the code may have moved between
    functions); the best must share at least `LONE_MIN` of the leaves
    (Jaccard) and beat the runner-up by `LONE_MARGIN`, so a call made in several places is
    left alone. True when something was paired."""
    src, dst = m.src.nodes, m.dst.nodes
    by_role: dict[int, list[Node]] = defaultdict(list)
    for b in dst:
        if b.is_stmt and not m.matched_dst(b):
            for r in _roles(b):
                by_role[r].append(b)
    if not by_role:
        return False
    added = False
    for a in src:
        if not a.is_stmt or m.matched_src(a):
            continue
        roles = _roles(a)
        cands = {b.pre: b for r in roles for b in by_role.get(r, ()) if not m.matched_dst(b)}
        if not cands:
            continue
        home = _function(a)
        where = m.image(home) if home is not None else None
        inside = [b for b in cands.values() if where is not None and where.contains(b)]
        la = _leaves(m, m.src, a)
        ranked = []
        for b in inside or cands.values():
            lb = _leaves(m, m.dst, b)
            union = len(la | lb)
            ranked.append((len(la & lb) / union if union else 0.0, b.pre))
        if not ranked:
            continue
        ranked.sort(reverse=True)
        best, j = ranked[0]
        if best < LONE_MIN or (len(ranked) > 1 and ranked[1][0] > best - LONE_MARGIN):
            continue
        m.add(a, dst[j], 0.5 * best)
        _recover(m, a, dst[j])
        added = True
    return added


def _function(n: Node) -> Node | None:
    """The function definition `n` is in, if any."""
    p = n.parent
    while p is not None and p.type != "function_definition":
        p = p.parent
    return p


# ---------------------------------------------------------------- neighbours

def _neighbours(m: Mapping) -> None:
    """Grow matched runs of statements sideways: for each matched statement pair, the next
    (and the previous) unmatched statement on both sides are paired when they have the
    same role (`_same_role`), and so on along the block. Only the adjacent slot is tried, so
    a statement is never pulled from elsewhere in the block."""
    src, dst = m.src.nodes, m.dst.nodes
    pairs = sorted((i, j) for i, j in m.fwd.items() if src[i].is_stmt and dst[j].is_stmt)
    for i, j in pairs:
        a, b = src[i], dst[j]
        for delta in (1, -1):
            x, y = _sibling(a, delta), _sibling(b, delta)
            base = m.score.get(i, 0.5)
            while x is not None and y is not None and not m.matched_src(x) \
                    and not m.matched_dst(y) and _same_role(x, y):
                base *= 0.9
                m.add(x, y, base)
                _recover(m, x, y)
                x, y = _sibling(x, delta), _sibling(y, delta)


def _leaves(m: Mapping, tree: Tree, n: Node) -> frozenset[str]:
    key = -id(n)
    cached = m.leafsets.get(key)
    if cached is None:
        cached = m.leafsets[key] = frozenset(
            f"{k.type}:{k.label}" for k in tree.nodes[n.pre : n.last + 1] if not k.children)
    return cached


def _is_big(x: Node, y: Node) -> bool:
    # Recovery pairs whole statements by position; recursing into two large unrelated
    # compound statements would invent identifier pairs (and renames) from noise.
    return x.height > 4 and x.label != y.label


def _lcs(xs: list[Node], ys: list[Node],
         sim: Callable[[Node, Node], float]) -> list[tuple[Node, Node]]:
    """Order-preserving pairing of `xs` with `ys` maximising total similarity (pairs with
    similarity 0 are never made)."""
    n, k = len(xs), len(ys)
    sims = [[sim(x, y) for y in ys] for x in xs]
    table = [[0.0] * (k + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        row, nxt, srow = table[i], table[i + 1], sims[i]
        for j in range(k - 1, -1, -1):
            best = nxt[j] if nxt[j] > row[j + 1] else row[j + 1]
            if srow[j] > 0 and nxt[j + 1] + srow[j] > best:
                best = nxt[j + 1] + srow[j]
            row[j] = best
    out = []
    i = j = 0
    while i < n and j < k:
        if sims[i][j] > 0 and table[i][j] == table[i + 1][j + 1] + sims[i][j]:
            out.append((xs[i], ys[j]))
            i += 1
            j += 1
        elif table[i + 1][j] >= table[i][j + 1]:
            i += 1
        else:
            j += 1
    return out
