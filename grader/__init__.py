"""label-grader core library: judges, fields, fixes and evaluation for detection labels.

Import the submodule you need (``grader.judges.cleanlab``, ``grader.judges.clipgrader``, ``grader.judges.vlm``,
``grader.review``, ``grader.evaluate``...); this package imports nothing heavy by itself so
the FiftyOne plugin loads fast.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    # ``grader.grade(ds)`` without importing the heavy modules up front: the submodule
    # ``grader.grade`` is callable (it forwards to ``grader.grade.grade``).
    if name == "grade":
        import importlib

        return importlib.import_module(".grade", __name__)
    raise AttributeError(f"module 'grader' has no attribute {name!r}")
