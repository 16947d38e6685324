"""The query room: records → pandas (the only pandas importer, DESIGN §6)."""
