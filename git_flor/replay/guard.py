"""One statement's failure is its own: requested statements run guarded in a replay.

A hindsight statement carried into an old version may raise there (it reads an
attribute the old model lacks, a name the old code computes differently). Left
alone, the exception ends the script and every other requested statement of
that run loses its values too. So the code a replay *executes* wraps each
requested ``flor.log(...)`` expression statement as

    try: flor.log("name", expr)
    except Exception as __flor_exc: __import__("git_flor")._hindsight_failed("name", __flor_exc)

which reports the failure for that name alone and goes on. Only standalone
statements that begin their line are wrapped: a ``flor.log`` whose value is used
(``y = flor.log(...)``) cannot be skipped without changing what follows. The
text is edited in place (``try: `` before, one ``except`` line after), so every
other line keeps its bytes; the provenance stored with the values is the
propagated source without the guard.
"""

from __future__ import annotations

import ast

from .strategy import flor_aliases


def guard(source: str, names: list[str]) -> str:
    """``source`` with each standalone requested ``flor.log`` statement wrapped (see module doc)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source
    modules, direct = flor_aliases(tree)
    wanted = set(names)
    spots: list[tuple[int, int, int, int, str]] = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)):
            continue
        call = node.value
        f = call.func
        is_log = (isinstance(f, ast.Attribute) and f.attr == "log" and isinstance(f.value, ast.Name)
                  and f.value.id in modules) or (isinstance(f, ast.Name) and direct.get(f.id) == "log")
        if not is_log or not call.args or not isinstance(call.args[0], ast.Constant):
            continue
        name = call.args[0].value
        if name in wanted and isinstance(name, str) and node.end_lineno is not None:
            spots.append((node.lineno, node.col_offset, node.end_lineno, node.end_col_offset or 0, name))
    if not spots:
        return source
    lines = source.splitlines(keepends=True)
    for start, col, end, end_col, name in sorted(spots, reverse=True):
        head = lines[start - 1].encode()
        rest = lines[end - 1].encode()[end_col:].strip()
        if head[:col].strip() or (rest and not rest.startswith(b"#")):
            continue  # shares its line with other code: leave it as it is
        indent = head[:col].decode()
        newline = "\r\n" if lines[end - 1].endswith("\r\n") else "\n"
        if not lines[end - 1].endswith(("\n", "\r")):
            lines[end - 1] += newline
        lines.insert(end, f"{indent}except Exception as __flor_exc: "
                          f"__import__('git_flor')._hindsight_failed({name!r}, __flor_exc){newline}")
        first = lines[start - 1].encode()
        lines[start - 1] = (first[:col] + b"try: " + first[col:]).decode()
    return "".join(lines)


def skippable(source: str, lines: list[int]) -> str:
    """``source`` with each call statement starting at one of ``lines`` made skippable by replay.

    ``train(model, opt)`` becomes ``if not __import__('git_flor')._skip_call(16): train(model, opt)``
    (``_skip_call(17, 16)`` when the statement before it is rewritten too: nothing runs
    between them, so the runtime restores once for both) on the same line (so every line keeps its number and the guard above still applies):
    in a skip job the runtime restores the end of the iteration instead and answers True;
    anywhere else (re-execution, a fallback) it answers False and the call runs. Only a
    statement that begins its line and is alone on it is rewritten; another is left to run.
    """
    if not lines:
        return source
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source
    wanted = set(lines)
    text = source.splitlines(keepends=True)

    def alone(node: ast.stmt) -> bool:
        head = text[node.lineno - 1].encode()
        end = text[(node.end_lineno or node.lineno) - 1].encode()[node.end_col_offset or 0:].strip()
        return not head[:node.col_offset].strip() and (not end or end.startswith(b"#"))

    for body in (b for n in ast.walk(tree) for b in _bodies(n)):
        before = 0  # the rewritten statement right before, whose restore a next one can reuse
        for node in body:
            if not (isinstance(node, (ast.Expr, ast.Assign)) and node.lineno in wanted and alone(node)):
                before = 0
                continue
            head = text[node.lineno - 1].encode()
            col = node.col_offset
            after = f", {before}" if before else ""
            text[node.lineno - 1] = (head[:col] + f"if not __import__('git_flor')._skip_call({node.lineno}{after}): "
                                     .encode() + head[col:]).decode()
            before = node.lineno
    return "".join(text)


def _bodies(node: ast.AST) -> list[list[ast.stmt]]:
    """The statement lists directly under ``node`` (a loop's body and else, an if's branches…)."""
    return [v for f in ("body", "orelse", "finalbody") if isinstance(v := getattr(node, f, None), list)
            and v and isinstance(v[0], ast.stmt)] + [h.body for h in getattr(node, "handlers", [])]
