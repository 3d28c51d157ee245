"""Operator: run a detector into a predictions field (thin adapter over ``grader.detectors``)."""
from __future__ import annotations

import fiftyone.operators.types as types

from grader.detectors import DEFAULT_DETECTOR, SHIPPED, run_detector

from ._common import GraderOperator, progress_callback


class RunDetector(GraderOperator):
    op_name = "run_detector"
    label = "label-grader: run a detector"
    description = ("Predict boxes with confidence and per-class probs (YOLOX-Nano by default, or "
                   "an Ultralytics ONNX export)")
    title = "Run detector"
    result_title = "detector results"

    def add_inputs(self, ctx, inputs):
        choices = types.DropdownView()
        for name in SHIPPED:
            choices.add_choice(name, label=name)
        inputs.enum("model", choices.values(), default=DEFAULT_DETECTOR, view=choices, label="Detector")
        inputs.str("onnx_path", required=False, label="Or: Ultralytics ONNX export path")
        inputs.list("classes", types.String(), required=False, label="Class names of the ONNX export")
        inputs.str("label_field", default="predictions", label="Write predictions to")
        inputs.float("conf_threshold", default=0.05, min=0.0, max=1.0, label="Confidence threshold")
        inputs.bool("overwrite", default=False, label="Overwrite an existing field")

    def run(self, ctx, view, p):
        report = run_detector(view, model=p.get("onnx_path") or p.get("model", DEFAULT_DETECTOR),
                              label_field=p.get("label_field", "predictions"),
                              conf_threshold=float(p.get("conf_threshold", 0.05)),
                              classes=p.get("classes") or None, overwrite=bool(p.get("overwrite")),
                              progress=progress_callback(ctx, "detector"))
        return report.to_dict()


OPERATORS = [RunDetector]
