"""Operators: inject known errors, evaluate judges (with the Brain baseline), compute the ensemble,
run the consistency judge.

Thin adapters over ``grader.noise``, ``grader.evaluate``, ``grader.ensemble``,
``grader.judges.consistency`` and ``grader.review_cost``.
"""
from __future__ import annotations

import math
from typing import Any

import fiftyone.operators.types as types

from grader.ensemble import compute_ensemble
from grader.evaluate import TRUSTED_TAG, evaluate_judges, format_table, run_brain_mistakenness
from grader.noise import DEFAULT_RATES, ERROR_TYPES, TRUTH_ATTR, inject_errors
from grader.review_cost import estimate_review_cost, format_review_cost

from ._common import GT_FIELD, GraderOperator, add_detection_field_input


def _json_safe(x: Any) -> Any:
    """NaN/inf -> None, recursively (the App's JSON cannot carry them)."""
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


class InjectErrors(GraderOperator):
    op_name = "inject_errors"
    label = "label-grader: inject known label errors (for evaluation)"
    description = ("Copy a ground-truth field and inject " + "/".join(ERROR_TYPES)
                   + " errors with the truth recorded per label")
    title = "Inject errors"
    result_title = "Injected errors"
    field = ("src_field", "Source ground truth field", "ground_truth")

    def add_inputs(self, ctx, inputs):
        inputs.str("dst_field", default="noisy_ground_truth", required=True,
                   label="New field for the noisy copy",
                   description="The source field is never modified; deleted boxes go to <new>_deleted")
        for t in ERROR_TYPES:
            inputs.float(f"rate_{t}", default=DEFAULT_RATES[t], min=0.0, max=1.0,
                         label=f"{t} rate (fraction of boxes)")
        inputs.int("seed", default=0, label="Random seed")
        inputs.float("badloc_iou_min", default=0.3, min=0.0, max=0.99, label="badloc: min IoU with the original")
        inputs.float("badloc_iou_max", default=0.6, min=0.0, max=0.99, label="badloc: max IoU with the original")
        swap = types.RadioGroup()
        swap.add_choice("uniform", label="any other class")
        swap.add_choice("confusable", label="a class of the same supercategory")
        inputs.enum("swap_to", swap.values(), default="uniform", label="swap to", view=swap)
        inputs.bool("overwrite", default=False, label="Replace the noisy field if it exists")

    def run(self, ctx, view, p):
        rates = {t: float(p.get(f"rate_{t}", DEFAULT_RATES[t]) or 0.0) for t in ERROR_TYPES}
        report = inject_errors(
            view, p.get("src_field", "ground_truth"),
            p.get("dst_field", "noisy_ground_truth"), rates=rates, seed=int(p.get("seed", 0)),
            badloc_iou=(float(p.get("badloc_iou_min", 0.3)), float(p.get("badloc_iou_max", 0.6))),
            swap_to=p.get("swap_to", "uniform"), overwrite=bool(p.get("overwrite", False)),
        )
        return _json_safe(report.to_dict())


class EvaluateJudges(GraderOperator):
    op_name = "evaluate_judges"
    label = "label-grader: evaluate judges on injected errors"
    description = ("AUROC / AP / precision@k / recall@top-10% per judge and error type, "
                   "with FiftyOne Brain's mistakenness as a baseline")
    title = "Evaluate judges"
    field = ("gt_field", "Noisy ground truth field", "noisy_ground_truth")

    def add_inputs(self, ctx, inputs):
        add_detection_field_input(ctx, inputs, "pred_field", "Predictions field", "predictions",
                                  required=False)
        inputs.bool("run_brain", default=True, label="Run FiftyOne Brain compute_mistakenness first")
        inputs.str("exclude_tag", default=TRUSTED_TAG, required=False,
                   label="Leave out samples with this tag (the ensemble's trusted subset)")
        inputs.int("k", default=20, min=1, label="k for precision@k")

    def run(self, ctx, view, p):
        gt, pred = p.get("gt_field", "noisy_ground_truth"), p.get("pred_field")
        if p.get("run_brain", True) and pred:
            run_brain_mistakenness(view, gt, pred)
        result = evaluate_judges(view, gt, pred_field=pred, truth_attr=TRUTH_ATTR,
                                 exclude_tag=p.get("exclude_tag") or None, k=int(p.get("k", 20)))
        text = format_table(result, title=f"Judges vs injected errors on '{gt}'")
        rc = None
        if "ensemble:ensemble_any" in result["gt"].get("any", {}):
            rc = estimate_review_cost(view, gt, "ensemble_any", exclude_tag=p.get("exclude_tag") or None)
            text += "\n\n" + format_review_cost(rc)
        return _json_safe({"table": f"```\n{text}\n```", "result": result, "review_cost": rc})

    def output(self):
        outputs = types.Object()
        outputs.str("table", label="Results", view=types.MarkdownView())
        outputs.obj("result", label="Metrics", view=types.JSONView())
        return types.Property(outputs, view=types.View(label="Judge evaluation"))


class ComputeEnsemble(GraderOperator):
    op_name = "compute_ensemble"
    label = "label-grader: combine judges (reliability-weighted ensemble)"
    description = ("One suspect score per issue type from every judge's scores, weighted by "
                   "each judge's reliability on a trusted (verified) subset")
    title = "Ensemble"
    result_title = "Ensemble"
    field = GT_FIELD

    def add_inputs(self, ctx, inputs):
        inputs.str("trusted_tag", default=TRUSTED_TAG, label="Trusted subset: samples tagged",
                   description="Labels on these samples are known: a label tagged error:<issue> "
                               "has that issue, the others are correct. Without such samples every "
                               "judge registered for an issue gets equal weight.")
        inputs.str("truth", default="tags", label="Truth on the trusted subset",
                   description="'tags' (error:<issue> label tags) or a label attribute, e.g. "
                               "'injected_error' after inject_errors")
        inputs.float("tag_fraction", default=0.05, min=0.0, max=1.0,
                     label="Tag the top fraction per issue suspect:ensemble_<issue>")
        inputs.float("sharpness", default=2.0, min=0.0, label="Weight sharpness (power of 2*(AUROC-0.5))")
        inputs.int("min_positives", default=3, min=1, label="Min trusted errors per issue to estimate weights")
        method = types.RadioGroup()
        method.add_choice("stouffer", label="Stouffer z (agreeing judges add up)")
        method.add_choice("mean", label="Weighted mean of percentiles")
        inputs.enum("method", method.values(), default="stouffer", label="Combination", view=method)
        learner = types.RadioGroup()
        learner.add_choice("auto", label="Learned when the trusted subset allows (else the vote)",
                           description="Chooses among the vote, logistic regression and gradient "
                                       "boosting by cross-validated AUROC on the trusted labels")
        learner.add_choice("vote", label="Reliability-weighted vote only")
        inputs.enum("learner", learner.values(), default="auto", label="Learner", view=learner)
        inputs.int("min_stack_positives", default=10, min=1,
                   label="Min trusted errors per issue to fit a learned model")
        inputs.bool("adapt_prevalence", default=True,
                    label="Read the shipped model's probabilities at this dataset's share of errors",
                    description="Where more labels look wrong than in the model's training runs "
                                "(about 5 % per issue), its probabilities are re-read at the share "
                                "estimated here (README: 'At your dataset's share of errors')")
        inputs.bool("one_issue_per_label", default=True,
                    label="Read badloc, swap and spurious as exclusive issues",
                    description="A label has at most one of them: a box the spurious model is "
                                "sure of leaves the badloc and swap queues (README: 'One issue "
                                "per label')")

    def run(self, ctx, view, p):
        report = compute_ensemble(
            view, p.get("gt_field", "ground_truth"),
            trusted_tag=p.get("trusted_tag") or TRUSTED_TAG, truth=p.get("truth") or "tags",
            tag_fraction=float(p.get("tag_fraction", 0.05)), sharpness=float(p.get("sharpness", 2.0)),
            min_positives=int(p.get("min_positives", 3)), method=p.get("method") or "stouffer",
            learner=p.get("learner") or "auto",
            min_stack_positives=int(p.get("min_stack_positives", 10)),
            adapt_prevalence=bool(p.get("adapt_prevalence", True)),
            one_issue_per_label=bool(p.get("one_issue_per_label", True)),
        )
        return _json_safe(report.to_dict())


class RunConsistency(GraderOperator):
    op_name = "run_consistency"
    label = "label-grader: find duplicate and odd-shaped boxes (no model)"
    description = ("Duplicate boxes (high IoU with a same-class box) and per-class geometry "
                   "outliers, from the labels alone")
    title = "Consistency judge"
    result_title = "Consistency judge"
    field = GT_FIELD

    def add_inputs(self, ctx, inputs):
        inputs.int("min_class_size", default=10, min=2,
                   label="Min boxes of a class to score geometry outliers")
        inputs.float("duplicate_tag_iou", default=0.7, min=0.01, max=1.0,
                     label="Tag suspect:duplicate from this IoU (the weaker box of a pair)")
        from grader.judges.consistency import DEFAULT_EVIDENCE, DEFAULT_MARGIN, EVIDENCE_RULES

        rules = types.Dropdown(label="Evidence that picks the weaker box of a duplicate pair")
        for r in EVIDENCE_RULES:
            rules.add_choice(r, label=r)
        inputs.enum("evidence", rules.values(), default=DEFAULT_EVIDENCE, view=rules,
                    description="Other judges' registered scores, chosen by the issue they speak to")
        inputs.float("evidence_margin", default=DEFAULT_MARGIN, min=0.0,
                     label="Evidence gap for a clear split (0: the weaker box always first)")

    def run(self, ctx, view, p):
        from grader.judges.consistency import DEFAULT_EVIDENCE, DEFAULT_MARGIN, run_consistency

        report = run_consistency(view, p.get("gt_field", "ground_truth"),
                                 min_class_size=int(p.get("min_class_size", 10)),
                                 duplicate_tag_iou=float(p.get("duplicate_tag_iou", 0.7)),
                                 evidence=p.get("evidence") or DEFAULT_EVIDENCE,
                                 evidence_margin=float(p.get("evidence_margin", DEFAULT_MARGIN)))
        return _json_safe(report.to_dict())


OPERATORS = [InjectErrors, EvaluateJudges, ComputeEnsemble, RunConsistency]
