"""``grade()`` past one machine: the per-image judges run in shards on FiftyOne's delegated
workers, the dataset-wide ones once at the end.

The detector, the zoom judge and the box grader score each image from that image alone, and
they are most of ``grade()``'s time (about 0.7 s of 0.85 s per image on a CPU). A sharded run
splits the collection into contiguous ranges of sample ids (``grader.runs``), runs those steps
on each range as one delegated operation per shard (any number of ``fiftyone delegated
launch`` workers on the same database), and the worker that completes the last shard runs
the steps that need every image at once: cleanlab (dataset-wide statistics), the overlooked
finder (it merges into cleanlab's candidates), consistency (per-class statistics) and the
ensemble (percentiles over the collection). The fields written equal a single-process
``grade()``. A shard holds its own lease, so no two workers run it at once; a re-queued shard
re-runs its range (every write is idempotent).
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Callable

from . import runs
from .pipeline import (DEFAULT_DETECTOR, DEFAULT_PRED_FIELD, STEPS, GradeContext, GradeReport,
                       _boxgrader_checkpoint, _validate, grade)

RUN_KEY = "label_grader_grade"
#: Steps whose results for an image depend on that image alone: they run in the shards.
SHARD_STEPS = ("detector", "zoom", "boxgrader")


def plan_grade(collection, num_shards: int, gt_field: str = "ground_truth",
               pred_field: str | None = None, *, detector: str | None = DEFAULT_DETECTOR,
               lease_ttl_s: float = runs.DEFAULT_TTL_S, **options: Any) -> dict[str, Any]:
    """Check the inputs, decide what every shard must decide the same way, and record the
    plan (:func:`grade_shard` runs each shard). Same arguments as :func:`grader.grade`, except
    that the detector is a name or a path (each worker loads it) and options must be JSON."""
    _validate(collection, gt_field, pred_field)
    if detector is not None and not isinstance(detector, str):
        raise TypeError("a sharded grade() needs the detector as a shipped name or an .onnx "
                        "path: each worker loads it")
    try:
        json.dumps(options)
    except TypeError as e:
        raise TypeError(f"options of a sharded grade() travel in the plan and must be JSON: {e}")
    options = dict(options)
    # The box grader runs where most labels are of its classes: decided on the whole
    # collection, not per shard, so every shard runs it (or none does).
    if options.get("boxgrader", True) is not False:
        ctx = GradeContext(collection, gt_field, pred_field, options, lambda *a: None)
        ckpt, why = _boxgrader_checkpoint(ctx)
        options["boxgrader"] = ({**ctx.opt("boxgrader"), "checkpoint": ckpt} if ckpt else False)
        if why:
            options["_boxgrader_not_run"] = why
    if pred_field is None and detector is not None:
        from .detectors.runner import guard_prediction_field

        # Created here, once, so the shards' first writes do not race to create it.
        guard_prediction_field(collection, DEFAULT_PRED_FIELD, False, [gt_field])
    payload = {"gt_field": gt_field, "pred_field": pred_field, "detector": detector,
               "options": options, "lease_ttl_s": float(lease_ttl_s)}
    config = hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
    plan = runs.create_plan(collection, RUN_KEY, gt_field, num_shards, config, payload)
    runs.record_state(collection, RUN_KEY, {**payload, "num_shards": int(num_shards),
                                            "plan_id": plan["_id"]},
                      runs.STATE_RUNNING, None, started_at=runs._now().isoformat())
    return plan


def _options(pl: dict[str, Any], steps: tuple[str, ...]) -> dict[str, Any]:
    """The plan's options with every step outside ``steps`` disabled."""
    opts = {k: v for k, v in pl["options"].items() if not k.startswith("_")}
    for s in STEPS:
        # ("detector" is grade()'s model argument: its step runs where no pred_field is given)
        if s.name not in steps and s.name != "detector":
            opts[s.name] = False
    return opts


def grade_shard(collection, plan_id: str, index: int, *,
                progress: Callable[[int, int], None] | None = None,
                wait_timeout_s: float | None = None) -> GradeReport:
    """Run the per-image steps on shard ``index`` of a planned run over ``collection`` (the
    run's full view); the worker completing the last shard also runs :func:`finalize_grade`."""
    plan = runs.get_plan(plan_id)
    n, pl = plan["num_shards"], plan["payload"]
    if not 0 <= index < n:
        raise ValueError(f"shard index {index} out of range for {n} shards")
    ttl = pl["lease_ttl_s"]
    lease = runs.acquire(runs.shard_lease_id(plan_id, index), ttl_s=ttl, wait=True,
                         wait_timeout_s=wait_timeout_s if wait_timeout_s is not None else 4 * ttl,
                         info={"plan_id": plan_id, "shard": index})
    try:
        shard = runs.shard_range_view(collection, plan["bounds"], index)
        report = GradeReport()
        if len(shard):
            step_progress = (lambda step, d, t: progress(d, t)) if progress else None
            report = grade(shard, pl["gt_field"], pl["pred_field"], detector=pl["detector"],
                           progress=step_progress, **_options(pl, SHARD_STEPS))
        runs.add_scored(plan_id, index, len(shard), lease.holder)
    finally:
        lease.release()
    if lease.lost:
        raise runs.LeaseHeld(f"shard {index} lease was taken over during the run; re-queue it")
    if runs.mark_shard_done(plan_id, index):
        final = finalize_grade(collection, plan_id)
        for k, v in final.reports.items():
            report.reports[k] = v
            report.not_run.pop(k, None)
        report.pred_field = final.pred_field
    return report


def finalize_grade(collection, plan_id: str) -> GradeReport:
    """The dataset-wide steps (cleanlab, overlooked, consistency, ensemble) over the whole
    collection, once every shard is done; the run record becomes ``complete``."""
    plan = runs.get_plan(plan_id)
    pl = plan["payload"]
    pred = pl["pred_field"]
    if pred is None and pl["detector"] is not None:
        pred = DEFAULT_PRED_FIELD  # the shards' detector wrote it
    final_steps = tuple(s.name for s in STEPS if s.name not in SHARD_STEPS)
    report = grade(collection, pl["gt_field"], pred, detector=pl["detector"],
                   **_options(pl, final_steps))
    if pl["options"].get("_boxgrader_not_run"):
        report.not_run["boxgrader"] = pl["options"]["_boxgrader_not_run"]
    runs.record_state(collection, RUN_KEY, {**pl, "num_shards": plan["num_shards"],
                                            "plan_id": plan_id},
                      runs.STATE_COMPLETE, {"info": {"reports": sorted(report.reports),
                                                     "scored_per_shard": plan.get("scored", {})}},
                      finished_at=runs._now().isoformat())
    runs.mark_plan_complete(plan_id)
    return report
