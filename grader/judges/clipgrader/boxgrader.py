"""Moved to :mod:`grader.judges.boxgrader` (``features`` / ``model`` / ``train`` / ``grade``).

This path re-exports the names it had, for one release; import from the new package.
"""
import warnings

# noqa: F401 throughout: these imports are the module's contents
from ..boxgrader.features import (  # noqa: F401
    BOX_FEATURES_FILE, _backbone_key, _box_keys, _decode, _feature_cache, extract_features,
    item_features, load_box_features, one_thread, save_box_features)
from ..boxgrader.grade import (  # noqa: F401
    ATTRS, TAG_BACKGROUND, TAG_BAD, evaluate_boxgrader, grade_boxgrader)
from ..boxgrader.model import (  # noqa: F401
    CHECKPOINT_KIND, FOLDS_FILE, NUM_LABEL_INPUTS, BoxGrader, BoxGraderHead, _backbone,
    _build_head, _load_folds, decide, fit_quality_model, label_inputs, load_boxgrader,
    quality_proba)
from ..boxgrader.train import (  # noqa: F401
    DEFAULT_MAX_FPR, BoxTrainResult, _crossfit, _run_epoch, _targets, _val_record,
    balanced_accuracy, choose_good_threshold, train_boxgrader)

warnings.warn("grader.judges.clipgrader.boxgrader moved to grader.judges.boxgrader",
              DeprecationWarning, stacklevel=2)
