"""Operators for review: apply a fix, undo a fix, save the review views (adapters over ``grader.review``)."""
from __future__ import annotations

import fiftyone.operators.types as types

from grader import review
from grader.scores import GT_ISSUES

from ._common import GT_FIELD, GraderOperator, add_detection_field_input, add_target_input

_KIND_LABELS = {
    "accept": "Accept as correct (tag reviewed:ok)",
    "relabel": "Change class",
    "delete": "Delete label",
    "replace_box": "Replace box with matched prediction",
    "adopt": "Adopt overlooked candidate into ground truth",
    "accept_all": "Accept every label of the field in the target",
}


def ctx_user(ctx) -> str | None:
    """The App user's name when there is one (FiftyOne Enterprise); None lets the OS user stand."""
    user = getattr(ctx, "user", None)
    return getattr(user, "name", None) or (str(ctx.user_id) if getattr(ctx, "user_id", None) else None)


def _selected_label(ctx) -> dict | None:
    sel = list(ctx.selected_labels or [])
    return sel[0] if len(sel) == 1 else None


def _validate_fix_params(p: dict, kind, field) -> None:
    """Check every parameter before anything is written (clear errors, no partial fixes)."""
    if kind not in _KIND_LABELS:
        raise ValueError(f"unknown fix kind {kind!r}; choose one of {list(_KIND_LABELS)}")
    if not isinstance(field, str) or not field:
        raise ValueError("field must be the name of a Detections field")
    if kind == "accept_all":
        return
    for key in ("sample_id", "label_id"):
        v = p.get(key)
        if not isinstance(v, str) or len(v) != 24 or any(c not in "0123456789abcdefABCDEF" for c in v):
            raise ValueError(f"{key} must be a 24-hex-digit id, got {str(v)[:40]!r}")
    es = p.get("expected_state")
    if es is not None and not isinstance(es, str):
        raise ValueError("expected_state must be the token given by review.label_state()")


def _summary_output(label: str) -> types.Property:
    outputs = types.Object()
    outputs.str("summary", label=label)
    return types.Property(outputs)


class ApplyFix(GraderOperator):
    op_name = "apply_fix"
    label = "label-grader: fix a label"
    description = "Accept, relabel, delete, replace box or adopt a candidate; undoable"

    def resolve_input(self, ctx):  # the fix kind first; the target only for accept_all
        inputs = types.Object()
        kinds = types.RadioGroup()
        for k, lab in _KIND_LABELS.items():
            kinds.add_choice(k, label=lab)
        inputs.enum("kind", kinds.values(), default="accept", label="Fix", view=kinds)
        kind = ctx.params.get("kind", "accept")
        add_detection_field_input(ctx, inputs, "field", "Ground truth field", "ground_truth")
        if kind == "accept_all":
            add_target_input(ctx, inputs)
            return types.Property(inputs, view=types.View(label="Fix labels"))
        sel = _selected_label(ctx)
        inputs.str("sample_id", default=sel["sample_id"] if sel else None, required=True,
                   label="Sample id")
        inputs.str("label_id", default=sel["label_id"] if sel else None, required=True,
                   label="Label id (the candidate's id for adopt)",
                   description="Select one label in the App to fill these in")
        if kind == "relabel":
            inputs.str("new_label", required=False, label="New class",
                       description="Blank: cleanlab's suggested class (cleanlab_swap_label)")
            inputs.bool("allow_new_class", default=False, label="Allow a class not in the class list")
        if kind == "delete":
            why = types.Dropdown()
            for i in GT_ISSUES:
                why.add_choice(i, label=i)
            inputs.enum("issue", why.values(), required=False, label="Why (issue)", view=why,
                        description="Blank: the likelier of spurious / duplicate by the label's "
                                    "ensemble scores; kept in the fix log for the ensemble")
        if kind == "replace_box":
            add_detection_field_input(ctx, inputs, "pred_field", "Predictions field", "predictions")
            inputs.str("pred_id", required=False, label="Prediction id",
                       description="Blank: the matched prediction (cleanlab_badloc_pred_id)")
        return types.Property(inputs, view=types.View(label="Fix a label"))

    def run(self, ctx, view, p):
        kind = p.get("kind", "accept")
        field = p.get("field", "ground_truth")
        _validate_fix_params(p, kind, field)
        user = ctx_user(ctx)
        if kind == "accept_all":
            rec = review.accept_labels(view, field, user=user)
        else:
            extra = {}
            if kind == "relabel":
                extra["new_label"] = p.get("new_label") or None
                extra["allow_new_class"] = bool(p.get("allow_new_class"))
            if kind == "adopt" and p.get("allow_new_class"):
                extra["allow_new_class"] = True
            if p.get("expected_state"):
                extra["expected_state"] = str(p["expected_state"])
            if kind == "delete":
                extra["issue"] = p.get("issue") or None
            if kind == "replace_box":
                extra["pred_field"] = p.get("pred_field") or "predictions"
                extra["pred_id"] = p.get("pred_id") or None
            rec = review.apply_fix(ctx.dataset, kind, p["sample_id"], p["label_id"], field,
                                   user=user, **extra)
        return {"fix": review.record_to_json(rec) if rec else None,
                "summary": rec.summary() if rec else "nothing to accept"}

    def output(self):
        return _summary_output("Fix")


class _OnTheDataset(GraderOperator):
    """A review step on the whole dataset, run at once (the reviewer waits for it)."""

    delegated = False
    target = False


class UndoFix(_OnTheDataset):
    op_name = "undo_fix"
    label = "label-grader: undo a fix"
    description = "Restore a label exactly as it was before a fix (newest fix by default)"

    def resolve_input(self, ctx):  # the recent fixes to choose from
        inputs = types.Object()
        recent = review.fix_log(ctx.dataset, limit=20, include_undone=False) if ctx.dataset else []
        if not recent:
            inputs.view("none", types.Notice(label="No fix to undo on this dataset"))
            return types.Property(inputs)
        dd = types.Dropdown(label="Fix to undo")
        for r in recent:
            dd.add_choice(r.fix_id, label=r.summary())
        inputs.enum("fix_id", dd.values(), default=recent[0].fix_id, label="Fix to undo", view=dd)
        inputs.bool("force", default=False, label="Undo even if the label changed since")
        return types.Property(inputs, view=types.View(label="Undo a fix"))

    def run(self, ctx, dataset, p):
        fix_id = p.get("fix_id") or None
        if fix_id is not None and not isinstance(fix_id, str):
            raise ValueError(f"fix_id must be a fix log id string, got {type(fix_id).__name__}")
        rec = review.undo_fix(dataset, fix_id, force=bool(p.get("force")), user=ctx_user(ctx))
        return {"fix": review.record_to_json(rec), "summary": rec.summary()}

    def output(self):
        return _summary_output("Undone")


class SaveReviewViews(_OnTheDataset):
    op_name = "save_review_views"
    label = "label-grader: save review views"
    description = "Saved views: suspect <issue>, overlooked candidates, reviewed"
    title = "Save review views"
    field = GT_FIELD

    def run(self, ctx, dataset, p):
        return {"views": review.save_review_views(dataset, p.get("gt_field", "ground_truth"))}

    def output(self):
        outputs = types.Object()
        outputs.list("views", types.String(), label="Saved views")
        return types.Property(outputs)


OPERATORS = [ApplyFix, UndoFix, SaveReviewViews]
