"""FiftyOne plugin entry point: registers label-grader's operators and panels.

The core library lives in ``grader/`` (``pip install -e .``); when the plugin directory is
used straight from ``FIFTYONE_PLUGINS_DIR`` without installing, it is put on ``sys.path``.
"""
import os
import sys

try:
    import grader  # noqa: F401
except ImportError:  # plugin copied/linked into the plugins dir but not pip-installed
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import grader  # noqa: F401

from .operators import OPERATORS
from .panels import PANELS


def register(p):
    for op in OPERATORS:
        p.register(op)
    for panel in PANELS:
        p.register(panel)
