"""Finding flor statements in a source file, whatever name the file imports git_flor under.

A flor statement is a statement containing a call to the package's `log` function: spelled
`flor.log(...)` after `import git_flor as flor`, `git_flor.log(...)` after `import git_flor`,
or `log(...)` / `L(...)` after `from git_flor import log [as L]`. FlorDB scripts that still say
`import flordb as flor` are recognised too, so a migration in progress propagates.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import cst

MODULES = ("git_flor", "flordb")
DEFAULT_IMPORT = "import git_flor as flor"


@dataclass(frozen=True)
class Alias:
    """How one file spells `log`: `module.log(...)` for each name in `modules`, or a bare
    call of each name in `functions`. `imports` maps each spelling to the import statement
    text that binds it, so a propagated statement can bring its own import along."""

    modules: frozenset[str]
    functions: frozenset[str]
    imports: dict[str, str] = field(compare=False, hash=False, default_factory=dict)


@dataclass
class FlorCall:
    """One `log` call: its key (`name`), the call node and the logged expression node."""

    name: str
    call: cst.TsNode
    value: cst.TsNode | None
    binding: str


@dataclass
class FlorStatement:
    """A statement holding flor calls. `pure` statements are nothing but the call
    (`flor.log("k", v)`); the others wrap a call inside a larger statement (`y = flor.log(...)`)."""

    stmt: cst.TsNode
    calls: list[FlorCall]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.calls]

    @property
    def pure(self) -> bool:
        s = self.stmt
        return (s.type == "expression_statement" and s.named_child_count == 1
                and len(self.calls) == 1 and s.named_children[0].id == self.calls[0].call.id)


def find_alias(root: cst.TsNode, fallback: bool = True) -> Alias:
    """Read the imports of git_flor; with `fallback`, a file importing none is taken to mean
    the conventional `flor` (today's file may use `flor.log` before adding the import)."""
    modules: set[str] = set()
    functions: set[str] = set()
    imports: dict[str, str] = {}
    stack = list(root.children)
    while stack:
        node = stack.pop()
        if node.type in ("if_statement", "try_statement", "block", "else_clause",
                         "except_clause", "finally_clause", "elif_clause", "with_statement"):
            stack.extend(node.named_children)
            continue
        text = node.text.decode()
        if node.type == "import_statement":
            for item in node.named_children:
                if item.type == "aliased_import":
                    mod = item.child_by_field_name("name")
                    alias = item.child_by_field_name("alias")
                    if mod is not None and alias is not None and mod.text.decode() in MODULES:
                        modules.add(alias.text.decode())
                        imports[alias.text.decode()] = text
                elif item.text.decode() in MODULES:
                    modules.add(item.text.decode())
                    imports[item.text.decode()] = text
        elif node.type == "import_from_statement":
            mod = node.child_by_field_name("module_name")
            if mod is None or mod.text.decode() not in MODULES:
                continue
            for item in node.children_by_field_name("name"):
                if item.type == "aliased_import":
                    name = item.child_by_field_name("name")
                    alias = item.child_by_field_name("alias")
                    if name is not None and alias is not None and name.text.decode() == "log":
                        functions.add(alias.text.decode())
                        imports[alias.text.decode()] = text
                elif item.text.decode() == "log":
                    functions.add("log")
                    imports["log"] = text
    if fallback and not modules and not functions:
        modules.add("flor")
        imports["flor"] = DEFAULT_IMPORT
    return Alias(frozenset(modules), frozenset(functions), imports)


def _call_binding(call: cst.TsNode, alias: Alias) -> str | None:
    """The spelling through which `call` reaches git_flor's log, or None for other calls."""
    fn = call.child_by_field_name("function")
    if fn is None:
        return None
    if fn.type == "identifier":
        name = fn.text.decode()
        return name if name in alias.functions else None
    if fn.type == "attribute":
        obj = fn.child_by_field_name("object")
        attr = fn.child_by_field_name("attribute")
        if obj is not None and attr is not None and attr.text == b"log" \
                and obj.text.decode() in alias.modules:
            return obj.text.decode()
    return None


def _key(call: cst.TsNode) -> tuple[str, cst.TsNode | None] | None:
    """The logged key and value of a `log(name, value)` call."""
    args = call.child_by_field_name("arguments")
    if args is None:
        return None
    positional = [a for a in args.named_children if a.type not in ("keyword_argument", "comment")]
    keywords = {
        (k.child_by_field_name("name").text.decode()): k.child_by_field_name("value")  # type: ignore[union-attr]
        for k in args.named_children if k.type == "keyword_argument"
    }
    name_node = positional[0] if positional else keywords.get("name")
    value = positional[1] if len(positional) > 1 else keywords.get("value")
    if name_node is None:
        return None
    if name_node.type == "string" and not any(c.type == "interpolation" for c in name_node.children):
        m = cst.STRING_RE.match(name_node.text.decode())
        return (m.group(3) if m else name_node.text.decode()), value
    return name_node.text.decode(), value


def flor_calls(node: cst.TsNode, alias: Alias) -> list[FlorCall]:
    """All log calls inside `node`, outermost first."""
    out: list[FlorCall] = []
    stack = [node]
    while stack:
        n = stack.pop()
        if n.type == "call":
            binding = _call_binding(n, alias)
            if binding is not None:
                key = _key(n)
                if key is not None:
                    out.append(FlorCall(key[0], n, key[1], binding))
        stack.extend(reversed(n.named_children))
    return out


def flor_statements(root: cst.TsNode, alias: Alias) -> list[FlorStatement]:
    """Every statement (innermost statement around each call) that holds log calls."""
    by_stmt: dict[int, FlorStatement] = {}
    order: list[int] = []
    for call in flor_calls(root, alias):
        stmt = call.call
        while stmt.parent is not None and stmt.parent.type not in cst.BLOCKS:
            stmt = stmt.parent
        if stmt.id not in by_stmt:
            by_stmt[stmt.id] = FlorStatement(stmt, [])
            order.append(stmt.id)
        by_stmt[stmt.id].calls.append(call)
    stmts = [by_stmt[i] for i in order]
    stmts.sort(key=lambda s: s.stmt.start_byte)
    return stmts


def flor_alias(src: str) -> Alias:
    """How `src` spells git_flor's `log` (see `Alias`)."""
    return find_alias(cst.parse(src.encode()).root_node)


def flor_statement_names(src: str) -> list[str]:
    """Names (keys) of the flor.log statements in `src`, in source order, each once."""
    tree = cst.parse(src.encode())
    alias = find_alias(tree.root_node)
    seen: dict[str, None] = {}
    for stmt in flor_statements(tree.root_node, alias):
        for name in stmt.names:
            seen.setdefault(name, None)
    return list(seen)
