"""Review panel (filled in by its feature)."""

PANELS = []
