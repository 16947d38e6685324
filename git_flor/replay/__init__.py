"""The replay room: plan, materialise, execute, write back (docs/design.md §4, §6: → storage, propagate)."""
