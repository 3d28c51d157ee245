"""Sharded cleanlab runs: one delegated operation per shard (see operators/_shards.py), the
statistics computed once by the plan, each shard resumable, the last one finalising."""
from __future__ import annotations

from dataclasses import asdict
from typing import Any, Callable

from fiftyone import ViewField as F

from ...images import ensure_metadata
from ...report import RunReport
from ... import runs
from ...runs import DEFAULT_TTL_S, run_lease
from .inputs import CleanlabParams
from .run import DEFAULT_CHUNK, config_hash, prepare, score_samples
from .scoring import CleanlabStats
from .writing import CONFIG_FIELD, RUN_KEY, check_output_fields

def plan_sharded_run(collection, num_shards: int, gt_field: str = "ground_truth",
                     pred_field: str = "predictions", *, overwrite: bool = False,
                     chunk_size: int = DEFAULT_CHUNK, lease_ttl_s: float = DEFAULT_TTL_S,
                     **kwargs: Any) -> dict[str, Any]:
    """First pass of a sharded run: validate, compute the dataset-wide statistics once, and
    record the plan (parameters, statistics, deterministic id ranges) every shard reads.

    The run record reads ``state="running"`` until the last shard finalises it. Shards are
    run by :func:`run_shard` (any process, any machine on the same database).
    """
    params = CleanlabParams(gt_field=gt_field, pred_field=pred_field, **kwargs)
    params.validate()
    ov_field = check_output_fields(collection, params, overwrite)
    record = {**asdict(params), "overlooked_field": ov_field, "num_shards": int(num_shards)}
    with run_lease(collection, RUN_KEY, record, resource=gt_field, ttl_s=lease_ttl_s,
                   record=False):
        ensure_metadata(collection)
        stats, _ = prepare(collection, params, chunk_size=chunk_size)
        config = config_hash(params, ov_field, stats)
        plan = runs.create_plan(collection, RUN_KEY, gt_field, num_shards, config, {
            "params": asdict(params), "ov_field": ov_field, "stats": stats.to_dict(),
            "chunk_size": int(chunk_size), "lease_ttl_s": float(lease_ttl_s)})
        runs.record_state(collection, RUN_KEY, {**record, "plan_id": plan["_id"]},
                          runs.STATE_RUNNING, None, started_at=runs._now().isoformat())
    return plan


def run_shard(collection, plan_id: str, index: int, *,
              progress: Callable[[int, int], None] | None = None,
              wait_timeout_s: float | None = None) -> RunReport:
    """Score shard ``index`` of a planned run over ``collection`` (the run's full view).

    Idempotent and resumable: it holds the shard's lease (a second worker on the same shard
    waits, or takes over once a dead holder's lease expires) and only scores samples whose
    ``cleanlab_config`` is not this run's configuration. The worker completing the last
    shard marks the run record complete.
    """
    plan = runs.get_plan(plan_id)
    n = plan["num_shards"]
    if not 0 <= index < n:
        raise ValueError(f"shard index {index} out of range for {n} shards")
    pl = plan["payload"]
    params = CleanlabParams(**pl["params"])
    stats = CleanlabStats.from_dict(pl["stats"])
    ttl = pl["lease_ttl_s"]
    report = RunReport(judge="cleanlab")
    report.info["shard"] = f"{index + 1}/{n}"
    lease = runs.acquire(runs.shard_lease_id(plan_id, index), ttl_s=ttl, wait=True,
                         wait_timeout_s=wait_timeout_s if wait_timeout_s is not None else 4 * ttl,
                         info={"plan_id": plan_id, "shard": index})
    try:
        shard = runs.shard_range_view(collection, plan["bounds"], index)
        before = [0]

        def on_chunk(done: int, total: int) -> None:
            runs.add_scored(plan_id, index, done - before[0], lease.holder)
            before[0] = done
            if progress:
                progress(done, total)

        n_done = score_samples(shard, params, stats, pl["ov_field"], report,
                               chunk_size=pl["chunk_size"], config=plan["config"],
                               skip_done=True, progress=on_chunk)
        report.info["samples_processed"] = n_done
    finally:
        lease.release()
    if lease.lost:
        raise runs.LeaseHeld(f"shard {index} lease was taken over during the run; re-queue it")
    if runs.mark_shard_done(plan_id, index):
        finalize_sharded_run(collection, plan_id)
        report.info["finalized_run"] = True
    return report


def finalize_sharded_run(collection, plan_id: str) -> None:
    """Final step once every shard is done: the run record becomes ``complete``."""
    plan = runs.get_plan(plan_id)
    pl = plan["payload"]
    n_cfg = len(collection.match(F(CONFIG_FIELD) == plan["config"]))
    summary = {"num_shards": plan["num_shards"], "scored_per_shard": plan.get("scored", {}),
               "samples_with_this_config": n_cfg, "samples_in_scope": len(collection),
               "min_possible_similarity": pl["stats"]["min_possible_similarity"],
               "class_list": pl["stats"]["classes"]}
    runs.record_state(collection, RUN_KEY,
                      {**pl["params"], "overlooked_field": pl["ov_field"],
                       "num_shards": plan["num_shards"], "plan_id": plan_id},
                      runs.STATE_COMPLETE, {"info": summary},
                      finished_at=runs._now().isoformat())
    runs.mark_plan_complete(plan_id)
