"""Package discovery that ``pyproject.toml`` cannot express (everything else lives there).

The hook shims' one home is the top-level ``hooks/`` directory; it is shipped
as the ``git_flor._hooks`` package so every install, wheel or editable, carries
them where ``importlib.resources`` finds them. The man page also goes to
``share/man/man1`` of the installing prefix, where ``man`` (and so
``git flor --help``) finds it when that prefix's ``bin`` is on ``PATH``.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["git_flor", "git_flor.*"]), "git_flor._hooks"],
    package_dir={"git_flor._hooks": "hooks"},
    data_files=[("share/man/man1", ["git_flor/man/man1/git-flor.1"])],
)
