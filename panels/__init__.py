"""Panels: thin App adapters over ``grader``. Each module exports ``PANELS``."""
import importlib

_MODULES = ["review"]

PANELS = []
for _m in _MODULES:
    PANELS.extend(importlib.import_module(f".{_m}", __name__).PANELS)
