"""ClipGrader: CLIP-based grading of every box as good / bad / background (arXiv 2503.02897).

SDK entry points: :func:`grade_clipgrader`, :func:`train_clipgrader`, :func:`evaluate_clipgrader`,
:func:`load_grader` (zero-shot or fine-tuned model).
"""
from .model import ClipGrader, ClipWeightsError, load_grader, register_tiny_config  # noqa: F401
from .grade import grade_clipgrader  # noqa: F401
from .train import train_clipgrader  # noqa: F401
from .evaluate import evaluate_clipgrader  # noqa: F401
