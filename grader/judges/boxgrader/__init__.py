"""The box grader: ClipGrader's recipe on a frozen pretrained detector's features.

Same synthesis as ClipGrader (``clipgrader/synth.py``: good = GT, bad = IoU 0.5-0.8,
background = IoU <= 0.2), same image-level split, checkpoints and resume, same evaluation protocol; the backbone
is YOLOX-Nano (:mod:`.features`, frozen: each box seen on the full image at two sizes and on
its own zoom crop; features cached) and the trainable part is:

- **quality** (good / bad / background), a gradient-boosted tree model (scikit-learn's
  ``HistGradientBoostingClassifier``) → ``boxgrader_p_bad`` (badloc), ``_p_background``
  (spurious), ``_p_not_good`` (any). On a coco128 image split it graded 3-way at 0.84 against
  0.78 for the MLP's own quality head on the same features;
- **class** (which of the training classes is in the box), a small MLP →
  ``boxgrader_p_other_class`` = 1 - p(labelled class) (swap), without the classes of other
  labelled objects on or in the box (:func:`.grade.other_class_prob`). Its quality head is trained
  alongside (it picks the best epoch) and grades only checkpoints without the tree model.

Modules: :mod:`.features` (the frozen detector's per-box features and their caches),
:mod:`.model` (head, quality model, checkpoints), :mod:`.train` (:func:`train_boxgrader`),
:mod:`.grade` (:func:`grade_boxgrader`, :func:`evaluate_boxgrader`). The synthesis and the
result types are ClipGrader's (``grader.judges.clipgrader.synth`` / ``.prompts``), shared.

Figures in docs/clipgrader.md (``bench/boxgrader.py``).
"""
import importlib
import os

#: The box grader shipped with the package: trained on coco128's labels (COCO classes) over
#: YOLOX-Nano features (bench/boxgrader.py; figures in docs/clipgrader.md).
SHIPPED_CHECKPOINT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "models", "boxgrader-yolox-nano-coco128.pt")
#: a checkpoint's ``config["quality_prior"]`` naming :data:`SHIPPED_CHECKPOINT`
SHIPPED = "shipped"

# Lazy, as grader.judges.clipgrader: importing the package (or .features for a detector path)
# does not pull in training, scikit-learn or the database layer until they are used.
_EXPORTS = {
    "train_boxgrader": ".train", "BoxTrainResult": ".train", "DEFAULT_MAX_FPR": ".train",
    "grade_boxgrader": ".grade", "evaluate_boxgrader": ".grade", "ATTRS": ".grade",
    "TAG_BAD": ".grade", "TAG_BACKGROUND": ".grade",
    "load_boxgrader": ".model", "BoxGrader": ".model", "BoxGraderHead": ".model",
    "YoloxFeatures": ".features", "load_backbone": ".features",
    "default_detector_path": ".features",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
