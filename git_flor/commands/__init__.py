"""The commands room: one plain function per verb, returning an exit code (docs/design.md §6).

Commands are tested as functions; ``cli`` only parses arguments and maps
:class:`~git_flor.errors.FlorError` to a message and an exit code.
"""
