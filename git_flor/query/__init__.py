"""The query room: records → pandas (the only pandas importer, docs/design.md §6)."""
