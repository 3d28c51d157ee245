"""Operator: run the cleanlab ObjectLab judge (thin adapter over ``grader.judges.cleanlab``)."""
from __future__ import annotations

from cleanlab.internal import constants as cl_const

from grader.judges.cleanlab import plan_sharded_run, run_cleanlab, run_shard

from ._shards import add_shards_input, make_shard_operator, queue_shards
from ._common import GT_FIELD, GraderOperator, add_detection_field_input, progress_callback


class RunCleanlab(GraderOperator):
    op_name = "run_cleanlab"
    label = "label-grader: score labels with cleanlab ObjectLab"
    description = "Per-image label quality and per-box overlooked / swap / badloc scores"
    title = "cleanlab ObjectLab"
    result_title = "cleanlab results"
    field = GT_FIELD

    def add_inputs(self, ctx, inputs):
        add_detection_field_input(ctx, inputs, "pred_field", "Predictions field", "predictions")
        inputs.str("probs_attr", default="auto", label="Per-class probabilities attribute",
                   description="Attribute on each prediction holding per-class probabilities "
                               "('probs') or logits ('logits'); 'auto' detects them and falls "
                               "back to spreading 1-confidence over the other classes")
        inputs.float("high_probability_threshold", default=cl_const.HIGH_PROBABILITY_THRESHOLD,
                     min=0.0, max=1.0, label="High probability threshold (overlooked / swap)",
                     description="Only predictions above this can flag an overlooked object or a "
                                 "swapped class; lower it for weak detectors")
        inputs.float("low_probability_threshold", default=cl_const.LOW_PROBABILITY_THRESHOLD,
                     min=0.0, max=1.0, label="Low probability threshold (badloc)")
        inputs.float("alpha", default=cl_const.ALPHA, min=0.0, max=1.0,
                     label="IoU vs distance weight (alpha)")
        for name in ("badloc", "swap", "overlooked"):
            inputs.float(f"{name}_threshold", required=False, min=0.0, max=1.0,
                         label=f"Tag {name} when score <= (blank: cleanlab's per-class rule)")
        inputs.str("overlooked_field", required=False,
                   label="Overlooked candidates field (default: <gt>_overlooked)")
        add_shards_input(inputs)

    def reloads(self, p):
        return int(p.get("num_shards") or 1) <= 1   # a sharded run only queues its shards here

    def run(self, ctx, view, p):
        kwargs = {k: p[k] for k in (
            "probs_attr", "high_probability_threshold", "low_probability_threshold", "alpha",
            "badloc_threshold", "swap_threshold", "overlooked_threshold", "overlooked_field",
            "chunk_size", "lease_ttl_s",
        ) if p.get(k) is not None}
        num_shards = int(p.get("num_shards") or 1)
        if num_shards > 1:
            # First pass here (dataset-wide statistics), then one delegated op per shard.
            plan = plan_sharded_run(view, num_shards, p.get("gt_field", "ground_truth"),
                                    p.get("pred_field", "predictions"), **kwargs)
            ops = queue_shards(view, "run_cleanlab_shard", plan)
            return {"info": {"plan_id": plan["_id"], "queued_shards": len(ops),
                             "delegated_operation_ids": ops}}
        report = run_cleanlab(
            view, p.get("gt_field", "ground_truth"), p.get("pred_field", "predictions"),
            progress=progress_callback(ctx, "cleanlab"), **kwargs,
        )
        return report.to_dict()


RunCleanlabShard = make_shard_operator("run_cleanlab_shard", "cleanlab shard", run_shard)

OPERATORS = [RunCleanlab, RunCleanlabShard]
