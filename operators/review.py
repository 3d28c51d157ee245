"""Operators for review (filled in by its feature)."""

OPERATORS = []
