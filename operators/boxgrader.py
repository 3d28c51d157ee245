"""App operators for the box grader (ClipGrader's recipe on frozen YOLOX-Nano features):
train it on this dataset's ground truth, evaluate it on held-out images, grade boxes with it."""
from __future__ import annotations

import fiftyone.operators.types as types

from ._common import (GRADED_FIELD, EvaluateOperator, GraderOperator, TrainOperator,
                      add_quality_thresholds, evaluation_result, progress_callback,
                      quality_thresholds)


def _add_checkpoint_input(inputs: types.Object, required: bool = False) -> None:
    inputs.str("checkpoint", required=required, label="Box grader checkpoint (best.pt)",
               description="From train_boxgrader; blank: the grader shipped with label-grader "
                           "(trained on COCO classes)")


def _checkpoint(p: dict) -> str:
    from grader.pipeline import SHIPPED_BOXGRADER

    return p.get("checkpoint") or SHIPPED_BOXGRADER


class TrainBoxGrader(TrainOperator):
    op_name = "train_boxgrader"
    label = "label-grader: train the box grader on this ground truth"
    description = ("Good / bad / background boxes made from GT, graded over frozen YOLOX-Nano "
                   "features (CPU, minutes)")
    title = "Box grader: train"
    result_title = "Box grader training"
    good_threshold = True

    def add_inputs(self, ctx, inputs):
        from grader.judges.boxgrader import DEFAULT_MAX_FPR

        inputs.str("out_dir", required=True, label="Checkpoint folder",
                   description="best.pt, last.pt and the per-image feature cache are written here")
        inputs.int("epochs", default=15, min=1, label="Epochs")
        inputs.float("val_fraction", default=0.15, min=0.05, max=0.9,
                     label="Validation fraction (by image)")
        inputs.float("max_fpr", default=DEFAULT_MAX_FPR, min=0.0, max=1.0,
                     label="Most bad/background boxes graded good (sets the good threshold)")
        inputs.int("seed", default=0, label="Seed")
        inputs.bool("resume", default=True, label="Resume from out_dir/last.pt if present")

    def run(self, ctx, view, p):
        from grader.judges.boxgrader import DEFAULT_MAX_FPR, train_boxgrader

        step = progress_callback(ctx, "Box grader")
        result = train_boxgrader(
            view, p.get("gt_field", "ground_truth"), p["out_dir"],
            epochs=int(p.get("epochs", 15)), val_fraction=float(p.get("val_fraction", 0.15)),
            max_fpr=float(p.get("max_fpr", DEFAULT_MAX_FPR)), seed=int(p.get("seed", 0)),
            resume=bool(p.get("resume", True)),
            progress=lambda stage, done, total: step(done, total))
        return result.to_dict()


class EvaluateBoxGrader(EvaluateOperator):
    op_name = "evaluate_boxgrader"
    label = "label-grader: evaluate the box grader"
    description = ("3-way accuracy, false-positive rate and confusion on boxes made from GT "
                   "(use images it was not trained on)")
    title = "Box grader: evaluate"
    result_title = "Box grader evaluation"

    def add_inputs(self, ctx, inputs):
        _add_checkpoint_input(inputs)
        inputs.int("seed", default=12345, label="Seed")

    def run(self, ctx, view, p):
        from grader.judges.boxgrader import evaluate_boxgrader

        res = evaluate_boxgrader(view, p.get("gt_field", "ground_truth"),
                                 checkpoint=_checkpoint(p), seed=int(p.get("seed", 12345)),
                                 progress=progress_callback(ctx, "Box grader evaluation"))
        return evaluation_result(res)


class GradeBoxGrader(GraderOperator):
    op_name = "grade_boxgrader"
    label = "label-grader: grade boxes with the box grader"
    description = "Per box: p_good / p_bad / p_background and the class head's other-class score"
    title = "Box grader: grade boxes"
    result_title = "Box grader results"
    field = GRADED_FIELD

    def add_inputs(self, ctx, inputs):
        _add_checkpoint_input(inputs)
        add_quality_thresholds(inputs, "boxgrader")

    def run(self, ctx, view, p):
        from grader.judges.boxgrader import grade_boxgrader

        report = grade_boxgrader(
            view, p.get("field", "ground_truth"), checkpoint=_checkpoint(p),
            **quality_thresholds(p), progress=progress_callback(ctx, "Box grader"))
        return report.to_dict()


OPERATORS = [TrainBoxGrader, EvaluateBoxGrader, GradeBoxGrader]
