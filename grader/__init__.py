"""label-grader core library: judges, fields, fixes and evaluation for detection labels.

Import the submodule you need (``grader.judges.cleanlab``, ``grader.judges.clipgrader``,
``grader.judges.boxgrader``, ``grader.judges.vlm``, ``grader.review``, ``grader.evaluate``...);
this package imports nothing heavy by itself so the FiftyOne plugin loads fast.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    # ``grader.grade(ds)``, the one-call entry point, without importing the heavy modules when
    # the plugin loads: resolved on first use.
    if name == "grade":
        from .pipeline import grade

        return grade
    raise AttributeError(f"module 'grader' has no attribute {name!r}")
