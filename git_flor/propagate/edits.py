"""Byte-range insertions into a past file that respect its layout.

Everything in the past file outside the inserted text stays byte-identical, so a propagated
version diffs against the original as exactly the added lines (FlorDB re-prints the whole
file with `ast.unparse`, which drops comments and reflows code). Indentation is copied from
the line the new statement joins, so tab-indented files stay tab-indented.
"""

from __future__ import annotations

from dataclasses import dataclass

from .cst import TsNode


@dataclass(frozen=True)
class Edit:
    """Insert `text` at byte `offset`; `lead` is how many newlines precede the statement in
    `text` (to report the line it lands on), `seq` orders edits at the same offset."""

    offset: int
    text: bytes
    seq: int
    lead: int = 0


class CannotInsert(Exception):
    """The layout around the chosen spot cannot take the statement (reason in the message)."""


def newline_of(src: bytes) -> bytes:
    return b"\r\n" if b"\r\n" in src else b"\n"


def line_start(src: bytes, pos: int) -> int:
    return src.rfind(b"\n", 0, pos) + 1


def leading_ws(src: bytes, pos: int) -> bytes:
    """The indentation of the line holding byte `pos`."""
    start = line_start(src, pos)
    end = start
    while end < len(src) and src[end : end + 1] in (b" ", b"\t"):
        end += 1
    return src[start:end]


def _first_on_line(src: bytes, node: TsNode) -> bool:
    return src[line_start(src, node.start_byte) : node.start_byte].strip() == b""


def _rest_is_blank(src: bytes, node: TsNode) -> tuple[bool, int]:
    nl = src.find(b"\n", node.end_byte)
    rest = src[node.end_byte : nl if nl >= 0 else len(src)].strip()
    return rest == b"" or rest.startswith(b"#"), nl


def reindent(lines: list[bytes], indent: bytes, old_indent: bytes, keep: bool) -> list[bytes]:
    """Move a statement's lines from `old_indent` to `indent`; `keep` leaves continuation
    lines untouched (they sit inside a multi-line string whose content must not change)."""
    out = [indent + lines[0]]
    for line in lines[1:]:
        if keep:
            out.append(line)
        elif line.startswith(old_indent):
            out.append(indent + line[len(old_indent):])
        elif line.strip() == b"":
            out.append(b"")
        else:
            out.append(line)
    return out


def after(src: bytes, node: TsNode, lines: list[bytes], old_indent: bytes, keep: bool,
          seq: int) -> Edit:
    """Insert the statement right after `node` (a statement of the past file)."""
    nl = newline_of(src)
    blank, nl_pos = _rest_is_blank(src, node)
    if _first_on_line(src, node) and blank:
        body = nl.join(reindent(lines, leading_ws(src, node.start_byte), old_indent, keep))
        if nl_pos < 0:
            return Edit(len(src), nl + body + nl, seq, lead=1)
        return Edit(nl_pos + 1, body + nl, seq)
    if len(lines) != 1:
        raise CannotInsert("its anchor shares a line with other code and the statement spans lines")
    return Edit(node.end_byte, b"; " + lines[0], seq)


def before(src: bytes, node: TsNode, lines: list[bytes], old_indent: bytes, keep: bool,
           seq: int) -> Edit:
    """Insert the statement right before `node` (a statement of the past file)."""
    nl = newline_of(src)
    if _first_on_line(src, node):
        body = nl.join(reindent(lines, leading_ws(src, node.start_byte), old_indent, keep))
        return Edit(line_start(src, node.start_byte), body + nl, seq)
    if len(lines) != 1:
        raise CannotInsert("its anchor shares a line with other code and the statement spans lines")
    return Edit(node.start_byte, lines[0] + b"; ", seq)


def apply(src: bytes, edits: list[Edit]) -> tuple[bytes, dict[int, int]]:
    """Apply insertions; return the new bytes and each edit's (by `seq`) output offset of
    its statement's first character line."""
    out: list[bytes] = []
    where: dict[int, int] = {}
    pos = 0
    size = 0
    for e in sorted(edits, key=lambda e: (e.offset, e.seq)):
        out.append(src[pos : e.offset])
        size += e.offset - pos
        where[e.seq] = size
        out.append(e.text)
        size += len(e.text)
        pos = e.offset
    out.append(src[pos:])
    return b"".join(out), where


def first_stmt(block: TsNode) -> TsNode | None:
    """The statement a new first statement goes before: after a docstring (which would
    stop being one) and, in a module, after `from __future__` imports (which must be first)."""
    kids = [c for c in block.named_children if c.type != "comment"]
    owner = block.parent
    has_doc = block.type == "module" or (owner is not None and owner.type in (
        "function_definition", "class_definition"))
    i = 0
    while i < len(kids) and ((i == 0 and has_doc and is_docstring(kids[i]))
                             or kids[i].type == "future_import_statement"):
        i += 1
    if i == len(kids) and i > 0:
        return None
    return kids[i] if kids else None


def is_docstring(node: TsNode) -> bool:
    return node.type == "expression_statement" and node.named_child_count == 1 \
        and node.named_children[0].type in ("string", "concatenated_string")
