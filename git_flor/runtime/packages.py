"""Versions of the third-party packages a run imported, read at exit from ``sys.modules``.

The post-commit hook records them as the commit's environment ("this code ran
with numpy 1.26.4, torch 2.3.0"). Reading ``__version__`` of modules already
imported costs well under a millisecond, where asking importlib.metadata would
scan every installed distribution on the training path.
"""

from __future__ import annotations

import sys


def imported_versions() -> dict[str, str]:
    """``{top-level module: __version__}`` for the imported non-stdlib modules that declare one."""
    stdlib = sys.stdlib_module_names
    out: dict[str, str] = {}
    for name, module in list(sys.modules.items()):
        if "." in name or name.startswith("_") or name in stdlib or name == "git_flor":
            continue
        version = getattr(module, "__version__", None)
        if isinstance(version, str):
            out[name] = version
    return dict(sorted(out.items()))
