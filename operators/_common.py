"""Helpers shared by every operator: target view selection and label-field choices."""
from __future__ import annotations

import fiftyone as fo
import fiftyone.operators as foo
import fiftyone.operators.types as types


def target_view(ctx):
    """The collection an operator acts on: the selected samples, the current view, or the dataset."""
    target = ctx.params.get("target", "CURRENT_VIEW")
    if target == "SELECTED_SAMPLES" and ctx.selected:
        return ctx.dataset.select(ctx.selected)
    if target == "DATASET":
        return ctx.dataset
    return ctx.view if ctx.view is not None else ctx.dataset


def add_target_input(ctx, inputs: types.Object) -> None:
    """Radio choice of the target (dataset / current view / selected samples)."""
    choices = types.RadioGroup()
    choices.add_choice("DATASET", label="Entire dataset")
    choices.add_choice("CURRENT_VIEW", label="Current view")
    if ctx.selected:
        choices.add_choice("SELECTED_SAMPLES", label="Selected samples")
    inputs.enum("target", choices.values(), default="CURRENT_VIEW", label="Target",
                view=choices)


def detection_fields(ctx) -> list[str]:
    """Names of the dataset's ``Detections`` fields."""
    if ctx.dataset is None:
        return []
    return sorted(ctx.dataset.get_field_schema(embedded_doc_type=fo.Detections).keys())


def add_detection_field_input(ctx, inputs: types.Object, name: str, label: str,
                              default: str | None = None, required: bool = True) -> None:
    """Dropdown over the dataset's Detections fields."""
    fields = detection_fields(ctx)
    dropdown = types.Dropdown(label=label)
    for f in fields:
        dropdown.add_choice(f, label=f)
    if default not in fields:
        default = fields[0] if fields else None
    inputs.enum(name, dropdown.values(), default=default, required=required, label=label,
                view=dropdown)


def progress_callback(ctx, label: str):
    """A ``(done, total)`` callback that forwards progress to the App."""
    def _cb(done: int, total: int) -> None:
        if total:
            ctx.set_progress(progress=done / total, label=f"{label} {done}/{total}")
    return _cb


def operator_config(name: str, label: str, description: str, *, delegated: bool = True,
                    delegate_by_default: bool = False) -> foo.OperatorConfig:
    """The config every label-grader operator shares: dynamic form, immediate or delegated."""
    return foo.OperatorConfig(
        name=name, label=label, description=description, dynamic=True,
        allow_immediate_execution=True, allow_delegated_execution=delegated,
        default_choice_to_delegated=delegate_by_default,
    )


def report_output(title: str) -> types.Property:
    """Output form for a ``RunReport.to_dict()`` result."""
    outputs = types.Object()
    outputs.int("samples_scored", label="Samples scored")
    outputs.int("labels_scored", label="Labels scored")
    outputs.obj("skipped", label="Skipped (by reason)", view=types.JSONView())
    outputs.obj("tagged", label="Tagged", view=types.JSONView())
    outputs.obj("info", label="Details", view=types.JSONView())
    return types.Property(outputs, view=types.View(label=title))


def training_output(title: str, good_threshold: bool = False) -> types.Property:
    """Output form for a grader's ``TrainResult.to_dict()`` (checkpoints, history; the box
    grader's result also holds the ``good_threshold`` chosen on its validation images)."""
    outputs = types.Object()
    outputs.str("best_checkpoint", label="Best checkpoint (grade with it)")
    outputs.str("last_checkpoint", label="Last checkpoint (resume from it)")
    if good_threshold:
        outputs.float("good_threshold", label="Good threshold (chosen on the validation images)")
    outputs.list("history", types.Object(), label="History", view=types.JSONView())
    return types.Property(outputs, view=types.View(label=title))


def evaluation_result(res) -> dict:
    """A grader evaluation (``EvalResult``) as an operator result, with its table as markdown."""
    out = res.to_dict()
    out["table"] = "```\n" + res.table() + "\n```"
    return out


def evaluation_output(title: str) -> types.Property:
    """Output form for :func:`evaluation_result`."""
    outputs = types.Object()
    outputs.str("table", label="Evaluation", view=types.MarkdownView())
    outputs.float("accuracy", label="3-way accuracy")
    outputs.float("false_positive_rate", label="False-positive rate")
    return types.Property(outputs, view=types.View(label=title))


def reload_unless_delegated(ctx) -> None:
    """Refresh the App after an immediate run (a delegated run has no App to refresh)."""
    if not ctx.delegated:
        ctx.trigger("reload_dataset")
