"""Operators: thin App/SDK adapters over ``grader``. Each module exports ``OPERATORS``."""
import importlib

# One module per judge/feature; each owns its operator classes.
_MODULES = ["cleanlab", "clipgrader", "boxgrader", "vlm", "review", "evaluation", "grade", "detectors"]

OPERATORS = []
for _m in _MODULES:
    OPERATORS.extend(importlib.import_module(f".{_m}", __name__).OPERATORS)
