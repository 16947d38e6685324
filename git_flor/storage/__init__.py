"""The storage room: the only importer of pygit2 (docs/design.md §6).

Everything durable lives in the repository: runs on the clone's shadow ref,
a JSON-Lines note per commit, a crash journal and a rebuildable query index
under ``$GIT_COMMON_DIR/flor/``. Submodules are imported where needed so that a
training script that only records pays for what it uses.
"""
