"""Operator "Grade labels": ``grader.grade()`` in one click (delegated for large views)."""
from __future__ import annotations

import queue
import threading

import fiftyone.operators as foo
import fiftyone.operators.types as types

from grader.detectors import SHIPPED
from grader.fields import detections_path
from grader.grade_shards import grade_shard, plan_grade
from grader.pipeline import DEFAULT_DETECTOR, grade, will_finetune, will_train_boxgrader

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


def _from_app(ctx) -> bool:
    """Whether the App started this run (it sends its current sample with every request; a
    script's ``execute_operator`` does not), so progress can stream to it."""
    return not ctx.delegated and "current_sample" in (ctx.request_params or {})


def _streamed(ctx, run, title: str):
    """Run ``run(progress)`` in a worker thread and stream its step progress to the App
    (``set_progress`` messages: "detector 12/48"...), then the result's output.

    FiftyOne shows an immediate run's progress only when its operator yields it: a plain
    return shows nothing until the end (issue 23: "no step progress")."""
    events: queue.Queue = queue.Queue()
    out: dict = {}

    def progress(step: str, done: int, total: int) -> None:
        events.put((step, done, total))

    def work() -> None:
        try:
            out["result"] = run(progress)
        except BaseException as e:  # noqa: BLE001 - re-raised in the operator's thread
            out["error"] = e
        finally:
            events.put(None)

    threading.Thread(target=work, daemon=True).start()
    finished = False
    while not finished:
        batch = [events.get()]
        while not events.empty():  # a burst of updates: only each step's newest is sent
            batch.append(events.get_nowait())
        finished = None in batch
        newest = {ev[0]: ev for ev in batch if ev is not None}
        for step, done, total in newest.values():
            yield ctx.ops.set_progress(label=f"{step} {done}/{total}",
                                       progress=done / total if total else None)
    if "error" in out:
        raise out["error"]
    yield ctx.ops.set_progress(label=f"{title}: done", progress=1.0)
    yield ctx.trigger("reload_dataset")
    for request in _review_panel_refreshes(ctx):  # open Label review panels re-read their queue
        yield request
    yield ctx.ops.show_output(_grade_output(title, summary=True).to_json(), out["result"])


def _review_panel_refreshes(ctx) -> list:
    """The App requests that make open Label review panels on this dataset re-read their
    queue (issue 23: the panel did not refresh when a grade run ended)."""
    from ..panels.review import refresh_requests  # here: the panels import the operators

    return refresh_requests(ctx)


def _grade_args(params) -> tuple:
    """(detector, pred_field, other grade() options) from the grade form's parameters: what
    ``execute`` runs and ``resolve_delegation`` asks about."""
    det = params.get("onnx_path") or params.get("detector", DEFAULT_DETECTOR)
    opts = {s: False for s in ("zoom", "overlooked", "cleanlab") if params.get(f"run_{s}") is False}
    if params.get("onnx_path"):
        opts["detector_classes"] = params.get("onnx_classes") or None
    if params.get("finetune") is False:
        opts["finetune"] = False
    return (None if det == "none" else det), (params.get("pred_field") or None), opts


class GradeLabels(foo.Operator):
    @property
    def config(self):
        cfg = operator_config(
            "grade_labels", "label-grader: Grade labels",
            "Run every judge that can run (detector, cleanlab, zoom, overlooked, consistency, ...) "
            "and the ensemble, with the recommended defaults")
        cfg.execute_as_generator = True  # step progress streams to the App (see _streamed)
        return cfg

    def resolve_delegation(self, ctx):
        view = target_view(ctx)
        if len(view) > DELEGATE_ABOVE:
            return True
        # Training a box grader on these labels takes minutes: never inside an App request.
        gt = ctx.params.get("gt_field") or "ground_truth"
        try:
            detections_path(view, gt)
        except ValueError:  # a missing / wrong field is reported by execute(), not here
            return False
        # Fine-tuning YOLOX-Nano on the labels' classes too (minutes on a CPU).
        det, pred, opts = _grade_args(ctx.params)
        return (will_finetune(view, gt, pred_field=pred, detector=det, **opts)
                or will_train_boxgrader(view, gt))

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
        inputs.bool("finetune", default=True, label="Fine-tune YOLOX-Nano on your classes",
                    description="Where the detector does not know most classes, a YOLOX-Nano "
                                "fine-tuned on your labels (2 folds, out-of-fold predictions) "
                                "replaces it; minutes on a CPU (runs delegated). Off: the COCO "
                                "detector's classes are mapped onto yours")
        for step in ("zoom", "overlooked", "cleanlab"):
            inputs.bool(f"run_{step}", default=True, label=f"Run {step}")
        add_shards_input(inputs)
        return types.Property(inputs, view=types.View(label="Grade labels"))

    def execute(self, ctx):
        p = dict(ctx.params)
        det, pred, opts = _grade_args(p)

        num_shards = int(p.get("num_shards") or 1)
        if num_shards > 1:
            # Per-image judges: one delegated op per shard; the last shard runs the rest.
            view = target_view(ctx)
            plan = plan_grade(view, num_shards, p.get("gt_field", "ground_truth"), pred,
                              detector=det, **opts)
            ops = queue_shards(view, "grade_labels_shard", plan)
            return {"summary": f"queued {len(ops)} shards (plan {plan['_id']})",
                    "not_run": {}, "reports": {},
                    "plan_id": plan["_id"], "delegated_operation_ids": ops}

        def run(progress) -> dict:
            report = grade(target_view(ctx), p.get("gt_field", "ground_truth"), pred,
                           detector=det, progress=progress, **opts)
            return {"summary": report.summary(), **report.to_dict()}

        if _from_app(ctx):
            return _streamed(ctx, run, "Grade labels")

        def progress(step: str, done: int, total: int) -> None:
            if total:
                ctx.set_progress(progress=done / total, label=f"{step} {done}/{total}")

        result = run(progress)
        reload_unless_delegated(ctx)
        return result

    def resolve_output(self, ctx):
        return _grade_output("Grade labels", summary=True)


def _grade_output(title: str, summary: bool = False) -> types.Property:
    outputs = types.Object()
    if summary:  # plain text: the code view loads its editor from the network
        outputs.str("summary", label="Summary", view=types.TextView())
    outputs.obj("not_run", label="Not run (why)", view=types.JSONView())
    outputs.obj("reports", label="Reports", view=types.JSONView())
    return types.Property(outputs, view=types.View(label=title))


GradeLabelsShard = make_shard_operator("grade_labels_shard", "label-grader: grade labels (shard)",
                                       grade_shard, output=_grade_output)

OPERATORS = [GradeLabels, GradeLabelsShard]
