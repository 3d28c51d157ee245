"""Operator "Grade labels": ``grader.grade()`` in one click (delegated for large views)."""
from __future__ import annotations

import fiftyone.operators as foo
import fiftyone.operators.types as types

from grader.detectors import SHIPPED
from grader.grade_shards import grade_shard, plan_grade
from grader.pipeline import DEFAULT_DETECTOR, grade

from ._common import (
    add_detection_field_input,
    add_target_input,
    operator_config,
    reload_unless_delegated,
    target_view,
)
from ._shards import add_shards_input, make_shard_operator, queue_shards

#: views larger than this run delegated by default (the detector and zoom take ~0.5 s/image on CPU)
DELEGATE_ABOVE = 200


class GradeLabels(foo.Operator):
    @property
    def config(self):
        return operator_config(
            "grade_labels", "label-grader: Grade labels",
            "Run every judge that can run (detector, cleanlab, zoom, overlooked, consistency, ...) "
            "and the ensemble, with the recommended defaults")

    def resolve_delegation(self, ctx):
        return len(target_view(ctx)) > DELEGATE_ABOVE

    def resolve_input(self, ctx):
        inputs = types.Object()
        add_target_input(ctx, inputs)
        add_detection_field_input(ctx, inputs, "gt_field", "Ground truth field", "ground_truth")
        inputs.str("pred_field", required=False, label="Predictions field (optional)",
                   description="Existing model predictions; blank: the detector predicts into "
                               "lg_predictions")
        choices = types.DropdownView()
        for name in SHIPPED:
            choices.add_choice(name, label=name)
        choices.add_choice("none", label="none (model-free judges only)")
        inputs.enum("detector", choices.values(), default=DEFAULT_DETECTOR, view=choices,
                    label="Detector", description="Also drives the zoom and overlooked judges")
        inputs.str("onnx_path", required=False, label="Or: Ultralytics ONNX export path")
        inputs.list("onnx_classes", types.String(), required=False,
                    label="Class names of the ONNX export")
        for step in ("zoom", "overlooked", "cleanlab"):
            inputs.bool(f"run_{step}", default=True, label=f"Run {step}")
        add_shards_input(inputs)
        return types.Property(inputs, view=types.View(label="Grade labels"))

    def execute(self, ctx):
        p = dict(ctx.params)
        det = p.get("onnx_path") or p.get("detector", DEFAULT_DETECTOR)
        det = None if det == "none" else det
        opts = {s: False for s in ("zoom", "overlooked", "cleanlab") if p.get(f"run_{s}") is False}
        if p.get("onnx_path"):
            opts["detector_classes"] = p.get("onnx_classes") or None

        num_shards = int(p.get("num_shards") or 1)
        if num_shards > 1:
            # Per-image judges: one delegated op per shard; the last shard runs the rest.
            view = target_view(ctx)
            plan = plan_grade(view, num_shards, p.get("gt_field", "ground_truth"),
                              p.get("pred_field") or None, detector=det, **opts)
            ops = queue_shards(view, "grade_labels_shard", plan)
            return {"summary": f"queued {len(ops)} shards (plan {plan['_id']})",
                    "not_run": {}, "reports": {},
                    "plan_id": plan["_id"], "delegated_operation_ids": ops}

        def progress(step: str, done: int, total: int) -> None:
            if total:
                ctx.set_progress(progress=done / total, label=f"{step} {done}/{total}")

        report = grade(target_view(ctx), p.get("gt_field", "ground_truth"),
                       p.get("pred_field") or None, detector=det, progress=progress, **opts)
        reload_unless_delegated(ctx)
        return {"summary": report.summary(), **report.to_dict()}

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.str("summary", label="Summary", view=types.CodeView(language="text"))
        outputs.obj("not_run", label="Not run (why)", view=types.JSONView())
        outputs.obj("reports", label="Reports", view=types.JSONView())
        return types.Property(outputs, view=types.View(label="Grade labels"))


def _grade_output(title: str) -> types.Property:
    outputs = types.Object()
    outputs.obj("not_run", label="Not run (why)", view=types.JSONView())
    outputs.obj("reports", label="Reports", view=types.JSONView())
    return types.Property(outputs, view=types.View(label=title))


GradeLabelsShard = make_shard_operator("grade_labels_shard", "label-grader: grade labels (shard)",
                                       grade_shard, output=_grade_output)

OPERATORS = [GradeLabels, GradeLabelsShard]
