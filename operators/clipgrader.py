"""Operators for clipgrader (filled in by its feature)."""

OPERATORS = []
