"""label-grader core library: judges, fields, fixes and evaluation for detection labels.

Import the submodule you need (``grader.judges.cleanlab``, ``grader.judges.clipgrader``, ``grader.judges.vlm``,
``grader.review``, ``grader.evaluate``...); this package imports nothing heavy by itself so
the FiftyOne plugin loads fast.
"""

__version__ = "0.1.0"
