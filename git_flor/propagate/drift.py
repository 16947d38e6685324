"""Comparing what a name *means* at two positions: the definitions that reach it today and
in the past version.

A statement carried into an old version can be placed correctly and still log something
else: `flor.log("total", total)` where `total` summed the training batches back then and
sums the validation batches today. Matching cannot see that (the statement itself is the
same); the reaching definitions can. Two definitions are the same when their expressions
are the same token for token, after today's identifiers are spelled as the past spells them
(a renamed variable is not a different computation) and `flor.arg("lr", 0.1)` is read as
`0.1` (what the past wrote before it adopted flor).
"""

from __future__ import annotations

from collections.abc import Callable

from .cst import STRING_RE, TsNode
from .flow import PARAMETER, READ, UNBOUND

_UNWRAP = frozenset({"arg", "loop"})


def key(defn: int, node: TsNode | None, name: str, spell: Callable[[str], str],
        modules: frozenset[str]) -> str:
    """A comparable form of one definition of `name` (`defn` is its id in a `Flow`)."""
    if defn == PARAMETER:
        return "<parameter>"
    if node is None:
        return f"<{defn}>"
    part = _defining_part(node, name)
    return " ".join(_tokens(part, spell, modules))


def show(defn: int, node: TsNode | None, src: bytes) -> str:
    """How a definition is shown to a person: its first line and line number."""
    if defn == PARAMETER:
        return "a parameter"
    if node is None:
        return "?"
    text = src[node.start_byte : node.end_byte].decode("utf-8", "replace").split("\n", 1)[0]
    return f"`{text.strip().rstrip(':')}` at line {node.start_point[0] + 1}"


def reaching(defs: frozenset[int]) -> list[int]:
    """The real definitions among reaching ones (not the unbound entry), in a stable order."""
    return sorted(d for d in defs if d not in (UNBOUND, READ))


def _defining_part(node: TsNode, name: str) -> TsNode:
    """The expression an assignment gives `name` (`X @ w` of `y = X @ w`); for other
    definitions (`for`, `with`, `def`, imports) the header."""
    stack = [node]
    while stack:
        n = stack.pop()
        if n.type in ("assignment", "augmented_assignment"):
            left, right = n.child_by_field_name("left"), n.child_by_field_name("right")
            if left is not None and right is not None and name in _ids(left):
                if n.type == "augmented_assignment" or right.type != "assignment":
                    return n if n.type == "augmented_assignment" else right
                stack.append(right)
                continue
            if right is not None:
                stack.append(right)
            continue
        if n.type == "named_expression":
            nm = n.child_by_field_name("name")
            if nm is not None and nm.text.decode() == name:
                return n.child_by_field_name("value") or n
        if n.type == "block":
            continue
        stack.extend(n.named_children)
    return node


def _ids(node: TsNode) -> set[str]:
    out = set()
    stack = [node]
    while stack:
        n = stack.pop()
        if n.type == "identifier":
            out.add(n.text.decode())
        stack.extend(n.named_children)
    return out


def _tokens(node: TsNode, spell: Callable[[str], str], modules: frozenset[str]) -> list[str]:
    out: list[str] = []
    stack = [node]
    while stack:
        n = stack.pop()
        if n.type == "comment" or n.type == "block":
            continue
        if n.type == "call":
            inner = _unwrap(n, modules)
            if inner is not None:
                stack.append(inner)
                continue
        if n.child_count == 0 or n.type == "string":
            text = n.text.decode("utf-8", "replace")
            if n.type == "string":
                m = STRING_RE.match(text)  # 'a' and "a" are the same value
                text = m.group(1).lower().replace("u", "") + "|" + m.group(3) if m else text
            elif n.type == "identifier":
                parent = n.parent
                attr = parent is not None and parent.type == "attribute" \
                    and parent.child_by_field_name("attribute") == n
                text = text if attr else spell(text)
            out.append(text)
            continue
        stack.extend(reversed(n.children))
    return out


def _unwrap(call: TsNode, modules: frozenset[str]) -> TsNode | None:
    fn = call.child_by_field_name("function")
    if fn is None or fn.type != "attribute":
        return None
    obj, attr = fn.child_by_field_name("object"), fn.child_by_field_name("attribute")
    if obj is None or attr is None or obj.text.decode() not in modules \
            or attr.text.decode() not in _UNWRAP:
        return None
    args = call.child_by_field_name("arguments")
    pos = [a for a in (args.named_children if args is not None else [])
           if a.type not in ("keyword_argument", "comment")]
    return pos[1] if len(pos) > 1 else None
