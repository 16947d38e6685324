"""Concrete syntax trees for matching: tree-sitter nodes flattened into plain Python objects.

Why a copy instead of the tree-sitter nodes themselves: the matcher touches every node many
times (hashes, heights, descendant ranges, parents) and attribute access on tree-sitter node
wrappers allocates a new Python object each time. One pass that builds small slotted objects
is cheaper than thousands of repeated crossings into C, and lets the caller *edit* the tree
it matches (drop today's new statements, unwrap `flor.log(k, expr)` to `expr`) without
touching the source text.

This module is the project's only importer of tree-sitter.
"""

from __future__ import annotations

import gc
import re
from collections.abc import Callable
from dataclasses import dataclass

import tree_sitter as ts
import tree_sitter_python as tsp

LANGUAGE = ts.Language(tsp.language())
_PARSER = ts.Parser(LANGUAGE)

BLOCKS = frozenset({"block", "module"})
STRING_RE = re.compile(r"([A-Za-z]*)('''|\"\"\"|'|\")(.*)\2\Z", re.S)

TsNode = ts.Node


def parse(src: bytes) -> ts.Tree:
    """Parse Python source bytes (tree-sitter never raises; check `root_node.has_error`)."""
    return _PARSER.parse(src)


def first_error_line(tree: ts.Tree) -> int | None:
    """1-based line of the first ERROR or MISSING node, None when the tree is clean."""
    if not tree.root_node.has_error:
        return None
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        if node.is_error or node.is_missing:
            return node.start_point[0] + 1
        stack.extend(c for c in reversed(node.children) if c.has_error or c.is_missing)
    return tree.root_node.start_point[0] + 1


class Node:
    """One named CST node prepared for matching.

    `label` is what makes two nodes of the same type equal: the text of leaves (strings with
    their quote style normalised, since `'a'` and `"a"` are the same value) and the
    anonymous tokens of inner nodes (`+` vs `-`, `async def` vs `def`), which tree-sitter
    does not expose as named children.
    """

    __slots__ = (
        "type", "label", "children", "parent", "ts", "start", "end", "hash",
        "height", "size", "pre", "last", "is_stmt", "idx",
    )

    def __init__(self, tsnode: TsNode, type_: str, label: str, parent: Node | None) -> None:
        self.type = type_
        self.label = label
        self.children: list[Node] = []
        self.parent = parent
        self.ts = tsnode
        self.start = tsnode.start_byte
        self.end = tsnode.end_byte
        self.hash = 0
        self.height = 1
        self.size = 1
        self.pre = 0
        self.last = 0
        self.is_stmt = parent is not None and parent.type in BLOCKS
        self.idx = 0

    def contains(self, other: Node) -> bool:
        """True when `other` is this node or one of its descendants (pre-order interval)."""
        return self.pre <= other.pre <= self.last

    def __repr__(self) -> str:
        return f"Node({self.type} {self.label!r} @{self.start}:{self.end})"


@dataclass
class Tree:
    """A prepared tree: the root and all nodes in pre-order (`nodes[n.pre] is n`)."""

    root: Node
    nodes: list[Node]
    src: bytes


def _leaf_label(tsnode: TsNode, src: bytes) -> str:
    # Sliced from `src`: `Node.text` costs far more per call on large files.
    text = src[tsnode.start_byte : tsnode.end_byte].decode("utf-8", "replace")
    if tsnode.type == "string":
        m = STRING_RE.match(text)
        if m:
            return m.group(1).lower().replace("u", "") + "|" + m.group(3)
    return text


# Visit hook: given a tree-sitter node, return None to keep it, "skip" to drop it (and its
# subtree) from the matching tree, or another tree-sitter node to use in its place.
Substitute = Callable[[TsNode], "TsNode | str | None"]


def build(tree: ts.Tree, src: bytes, substitute: Substitute | None = None) -> Tree:
    """Flatten a tree-sitter tree into `Node`s, dropping comments and applying `substitute`."""
    nodes: list[Node] = []
    # Tens of thousands of small objects with parent links: the cyclic collector would
    # rescan them many times over while they are being made (it dominated the runtime).
    enabled = gc.isenabled()
    gc.disable()
    try:
        root = _build(tree.root_node, None, nodes, substitute, src)
    finally:
        if enabled:
            gc.enable()
    assert root is not None
    return Tree(root, nodes, src)


def _build(tsnode: TsNode, parent: Node | None, nodes: list[Node],
           substitute: Substitute | None, src: bytes) -> Node | None:
    if substitute is not None:
        sub = substitute(tsnode)
        if sub == "skip":
            return None
        if sub is not None:
            tsnode = sub  # type: ignore[assignment]
    type_ = tsnode.type
    is_string = type_ == "string" or type_ == "concatenated_string"
    kids = tsnode.children
    if not kids or is_string:
        node = Node(tsnode, type_, _leaf_label(tsnode, src) if type_ != "concatenated_string"
                    else " ".join(_leaf_label(k, src) for k in kids if k.type == "string"), parent)
        node.pre = node.last = len(nodes)
        nodes.append(node)
        node.hash = hash((type_, node.label))
        return node
    tokens = [k.type for k in kids if not k.is_named]
    node = Node(tsnode, type_, " ".join(tokens) if type_ not in _NO_TOKEN_LABEL else "", parent)
    node.pre = len(nodes)
    nodes.append(node)
    height = 0
    size = 1
    hashes: list[int] = []
    for kid in kids:
        if not kid.is_named or kid.type == "comment":
            continue
        child = _build(kid, node, nodes, substitute, src)
        if child is None:
            continue
        child.idx = len(node.children)
        node.children.append(child)
        height = max(height, child.height)
        size += child.size
        hashes.append(child.hash)
    node.height = height + 1
    node.size = size
    node.last = len(nodes) - 1
    node.hash = hash((type_, node.label, tuple(hashes)))
    return node


# Punctuation-only labels carry no information for these and would make two argument lists
# differ just because one has a trailing comma.
_NO_TOKEN_LABEL = frozenset({
    "argument_list", "parameters", "list", "tuple", "dictionary", "set", "pattern_list",
    "expression_list", "tuple_pattern", "list_pattern", "block", "module", "import_from_statement",
    "import_statement", "subscript", "parenthesized_expression", "global_statement",
    "nonlocal_statement", "with_clause", "lambda_parameters", "decorator",
})


def line_of(src: bytes, byte: int) -> int:
    """1-based line number of a byte offset."""
    return src.count(b"\n", 0, byte) + 1
