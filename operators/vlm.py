"""Operators for vlm (filled in by its feature)."""

OPERATORS = []
