"""The git hook shims, shipped inside the package as ``git_flor._hooks``.

This directory is the shims' one home in the source tree; ``setup.py`` maps it
to the ``git_flor._hooks`` package so a wheel carries the files and
``git flor init`` finds them with ``importlib.resources`` however git-flor was
installed (this file only makes the directory importable for that lookup).
"""
