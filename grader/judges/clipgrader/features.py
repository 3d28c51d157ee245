"""Moved to :mod:`grader.judges.boxgrader.features`; this path re-exports it for one release."""
import warnings

from ..boxgrader.features import *  # noqa: F401,F403
from ..boxgrader.features import _rowwise_iou  # noqa: F401

warnings.warn("grader.judges.clipgrader.features moved to grader.judges.boxgrader.features",
              DeprecationWarning, stacklevel=2)
