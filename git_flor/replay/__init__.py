"""The replay room: plan, materialise, execute, write back (DESIGN §4, §6: → storage, propagate)."""
