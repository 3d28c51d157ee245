"""ClipGrader: CLIP-based grading of every box as good / bad / background (arXiv 2503.02897).

SDK entry points: :func:`grade_clipgrader`, :func:`train_clipgrader`, :func:`evaluate_clipgrader`,
:func:`load_grader` (zero-shot or fine-tuned model). The box grader, the same recipe's head on
a frozen YOLOX-Nano's features instead of CLIP, lives in :mod:`grader.judges.boxgrader`; its
entry points are still importable from here (one release) and it shares this package's
synthesis (``synth``, ``prompts``) and result types.
"""
import importlib

# Lazy so that the model can be used without FiftyOne (e.g. a bare GPU box): grading,
# training and evaluation pull in the database layer only when first used.
_EXPORTS = {
    "ClipGrader": ".model", "ClipWeightsError": ".model", "load_grader": ".model",
    "register_tiny_config": ".model", "grade_clipgrader": ".grade",
    "train_clipgrader": ".train", "evaluate_clipgrader": ".evaluate",
    # the box grader (grader.judges.boxgrader), re-exported here for one release
    "train_boxgrader": "..boxgrader.train", "grade_boxgrader": "..boxgrader.grade",
    "evaluate_boxgrader": "..boxgrader.grade", "load_boxgrader": "..boxgrader.model",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
