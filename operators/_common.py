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


class GraderOperator(foo.Operator):
    """One operator form, as every label-grader operator has it: config from the class
    attributes; an input form of the target, the Detections field (``field``: ``(param,
    label, default)``), then what :meth:`add_inputs` adds; :meth:`run` on the target view; the
    App refreshed after an immediate run (``reload``); the output form of :meth:`output`.
    ``target = False``: a form without the target choice, run on the whole dataset.

    Subclasses set ``op_name`` / ``label`` / ``description`` / ``title`` and write
    ``add_inputs`` and ``run``; the default output is :func:`report_output` titled
    ``result_title``. (``op_name``: ``name`` is the operator's property, read from the config.)"""

    op_name: str
    label: str
    description: str
    title: str                                     # the input form's title
    result_title: str = ""
    field: tuple[str, str, str] | None = None
    delegated: bool = True
    delegate_by_default: bool = False
    reload: bool = True                            # writes labels: refresh the App after
    target: bool = True

    @property
    def config(self) -> foo.OperatorConfig:
        return operator_config(self.op_name, self.label, self.description, delegated=self.delegated,
                               delegate_by_default=self.delegate_by_default)

    def add_inputs(self, ctx, inputs: types.Object) -> None:
        """The form's own inputs, after the target and the field."""

    def resolve_input(self, ctx) -> types.Property:
        inputs = types.Object()
        if self.target:
            add_target_input(ctx, inputs)
        if self.field is not None:
            add_detection_field_input(ctx, inputs, *self.field)
        self.add_inputs(ctx, inputs)
        return types.Property(inputs, view=types.View(label=self.title))

    def run(self, ctx, view, p: dict) -> dict:
        """Do the work on the target ``view`` with the form's params ``p``; the result dict."""
        raise NotImplementedError

    def reloads(self, p: dict) -> bool:
        """Whether a run with params ``p`` wrote to the dataset (the App is then refreshed)."""
        return self.reload

    def execute(self, ctx) -> dict:
        p = dict(ctx.params)
        out = self.run(ctx, target_view(ctx) if self.target else ctx.dataset, p)
        if self.reloads(p):
            reload_unless_delegated(ctx)
        return out

    def output(self) -> types.Property:
        return report_output(self.result_title)

    def resolve_output(self, ctx) -> types.Property:
        return self.output()


#: the Detections field inputs most forms start with: ``(param, label, default)``
GT_FIELD = ("gt_field", "Ground truth field", "ground_truth")
HELD_OUT_GT_FIELD = ("gt_field", "Ground truth field (held-out images)", "ground_truth")
GRADED_FIELD = ("field", "Detections field to grade", "ground_truth")


class TrainOperator(GraderOperator):
    """Training a grader on the target's ground truth: delegated by default (minutes), writes
    no labels; ``run`` returns ``TrainResult.to_dict()`` (``good_threshold``: the result shows
    the threshold chosen on the validation images)."""

    field = GT_FIELD
    delegate_by_default = True
    reload = False
    good_threshold = False

    def output(self) -> types.Property:
        return training_output(self.result_title, good_threshold=self.good_threshold)


class EvaluateOperator(GraderOperator):
    """Evaluating a grader on held-out images: writes no labels; ``run`` returns
    :func:`evaluation_result`."""

    field = HELD_OUT_GT_FIELD
    reload = False

    def output(self) -> types.Property:
        return evaluation_output(self.result_title)


def add_quality_thresholds(inputs: types.Object, judge: str) -> None:
    """A quality grader's (ClipGrader's, the box grader's) two tag thresholds."""
    inputs.float("bad_threshold", default=0.5, min=0.0, max=1.0,
                 label=f"Tag suspect:{judge}_bad when p_bad >=")
    inputs.float("background_threshold", default=0.5, min=0.0, max=1.0,
                 label=f"Tag suspect:{judge}_background when p_background >=")


def quality_thresholds(p: dict) -> dict:
    """The form's :func:`add_quality_thresholds` as grading keyword arguments."""
    return {"bad_threshold": float(p.get("bad_threshold", 0.5)),
            "background_threshold": float(p.get("background_threshold", 0.5))}
