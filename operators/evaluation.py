"""Operators for evaluation (filled in by its feature)."""

OPERATORS = []
