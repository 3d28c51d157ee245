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


def register(p):
    # Imported here, not at module level: this file is also imported outside FiftyOne's plugin
    # loader (e.g. by pytest, as the checkout's top-level package), where there is no parent
    # package for relative imports unless the folder name happens to be a valid identifier.
    from .operators import OPERATORS
    from .panels import PANELS

    for op in OPERATORS:
        p.register(op)
    for panel in PANELS:
        p.register(panel)
