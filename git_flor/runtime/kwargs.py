"""``--kwargs k=v ...`` on the training script's command line, cast to each default's type.

The pairs are taken out of ``sys.argv`` when ``git_flor`` is imported, so a script
that also parses its argv with argparse does not choke on them; the original
argv is what the run records.
"""

from __future__ import annotations

import difflib
import json
from typing import Any

from ..errors import BadArgument

_TRUE = {"1", "true", "t", "yes", "y", "on"}
_FALSE = {"0", "false", "f", "no", "n", "off"}


def split_argv(argv: list[str]) -> tuple[list[str], dict[str, str], str | None]:
    """Return (argv without the ``--kwargs`` block, the pairs, a parse error or None)."""
    if "--kwargs" not in argv:
        return list(argv), {}, None
    at = argv.index("--kwargs")
    end = at + 1
    while end < len(argv) and not argv[end].startswith("--"):
        end += 1
    pairs: dict[str, str] = {}
    for token in argv[at + 1 : end]:
        key, sep, value = token.partition("=")
        if not sep or not key:
            return argv[:at] + argv[end:], pairs, (
                f"--kwargs expects name=value pairs, got {token!r}; e.g. --kwargs lr=5e-4 epochs=3"
            )
        pairs[key] = value
    return argv[:at] + argv[end:], pairs, None


def cast(name: str, text: str, default: Any) -> Any:
    """Cast an override to the type of ``default``; a failure names the argument."""
    kind = type(default)
    try:
        if kind is bool:
            low = text.strip().lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError(text)
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
        if kind is str or default is None:
            return text
        if kind in (list, dict):
            value = json.loads(text)
            if type(value) is not kind:
                raise ValueError(text)
            return value
        return kind(text)
    except (ValueError, TypeError):
        raise BadArgument(
            f"flor.arg({name!r}): --kwargs {name}={text!r} is not a valid {kind.__name__} "
            f"(the default is {default!r}); pass e.g. {name}={default!r}"
        ) from None


def unused_kwargs(given: dict[str, str], declared: dict[str, object]) -> str | None:
    """A warning for ``--kwargs`` names the script never declared with ``flor.arg`` (a typo
    would otherwise silently train with the default), or None."""
    unused = [name for name in given if name not in declared]
    if not unused:
        return None
    hints = []
    for name in unused:
        close = difflib.get_close_matches(name, list(declared), n=1)
        hints.append(f"{name}={given[name]}" + (f" (did you mean {close[0]}?)" if close else ""))
    known = ", ".join(declared) or "none"
    return (f"--kwargs {' '.join(hints)} not used: no flor.arg of that name; "
            f"the script declares: {known}")
