"""grade() past one machine: the per-image judges in shards (FiftyOne delegated workers), the
dataset-wide ones once at the end; the fields equal a single-process grade()."""
from __future__ import annotations

import math

import fiftyone.operators as foo
import pytest

from grader import runs
from grader.grade_shards import RUN_KEY, SHARD_STEPS, grade_shard, plan_grade
from grader.pipeline import grade

from conftest import shared_path
from test_sharding import _shard_ops, _start_worker, _state, _stop, _wait

OP = "@label-grader/label-grader"


@pytest.fixture()
def two_copies(coco128_base):
    if shared_path("detectors") is None:
        pytest.skip("../shared/data/detectors is not present")
    ids = coco128_base.values("id")[:12]
    a = coco128_base.select(ids).clone("lg-gshard-a")
    b = coco128_base.select(ids).clone("lg-gshard-b")
    a.persistent = b.persistent = True   # workers load them by name
    yield a, b
    for d in (a, b):
        d.delete()


def _written(ds) -> dict:
    """Every judge's value on every GT label and every candidate, keyed by filepath + index
    (label ids differ between the two copies' candidates)."""
    out = {}
    schema = ds.get_field_schema(flat=True)
    judges = ("cleanlab", "zoom", "boxgrader", "consistency", "ensemble")
    # (not *_pred_id: ids of each copy's own predictions)
    attrs = sorted(k.split(".")[-1] for k in schema if k.startswith("ground_truth.detections.")
                   and k.split(".")[-1].split("_")[0] in judges and not k.endswith("_pred_id"))
    for fp, dets in zip(*ds.values(["filepath", "ground_truth.detections"])):
        for i, d in enumerate(dets or []):
            out[(fp, i)] = {a: d.get_field(a) if d.has_field(a) else None for a in attrs}
            out[(fp, i)]["tags"] = sorted(d.tags or [])
    for fp, dets in zip(*ds.values(["filepath", "ground_truth_overlooked.detections"])):
        out[(fp, "overlooked")] = sorted((d.label, d.overlooked_score or 0.0) for d in dets or [])
    for fp, dets in zip(*ds.values(["filepath", "lg_predictions.detections"])):
        out[(fp, "pred")] = sorted((d.label, d.confidence) for d in dets or [])
    return out


def _same(x: dict, y: dict) -> None:
    assert x.keys() == y.keys()
    for k in x:
        vx, vy = x[k], y[k]
        if isinstance(vx, dict):
            assert vx.keys() == vy.keys(), k
            for a in vx:
                p, q = vx[a], vy[a]
                if isinstance(p, float) and isinstance(q, float):
                    assert (math.isnan(p) and math.isnan(q)) or p == pytest.approx(q, abs=1e-4), (k, a)
                else:
                    assert p == q, (k, a, p, q)
        else:
            # (label, score) lists: onnxruntime's sums depend slightly on the batch an image
            # shares, and shards batch other images together
            assert [a for a, _ in vx] == [a for a, _ in vy], k
            assert [b for _, b in vx] == pytest.approx([b for _, b in vy], abs=1e-4), k


def test_shards_then_final_equal_one_process(two_copies):
    ref, ds = two_copies
    single = grade(ref)
    plan = plan_grade(ds, 3)
    assert runs.run_state(ds, RUN_KEY) == runs.STATE_RUNNING
    assert plan["payload"]["options"]["boxgrader"]["checkpoint"]  # decided once, for all shards
    reports = [grade_shard(ds, plan["_id"], i) for i in range(3)]
    # shards ran the per-image steps only; the last one also the dataset-wide ones
    for r in reports[:2]:
        assert set(r.reports) <= set(SHARD_STEPS)
    assert set(reports[2].reports) == set(single.reports)
    assert runs.get_plan(plan["_id"])["completed"]
    assert runs.run_state(ds, RUN_KEY) == runs.STATE_COMPLETE
    assert sum(runs.get_plan(plan["_id"])["scored"].values()) == len(ds)
    _same(_written(ds), _written(ref))
    with pytest.raises(ValueError, match="out of range"):
        grade_shard(ds, plan["_id"], 3)


def test_two_delegated_workers_run_a_sharded_grade(two_copies, tmp_path):
    ref, ds = two_copies
    grade(ref)
    res = foo.execute_operator(f"{OP}/grade_labels", ctx={"view": ds.view(), "params": {
        "target": "DATASET", "gt_field": "ground_truth", "num_shards": 3}}).result
    plan_id = res["plan_id"]
    assert len(res["delegated_operation_ids"]) == 3
    logs = [tmp_path / f"w{i}.log" for i in range(2)]
    workers = [_start_worker(l) for l in logs]
    try:
        shard_uri = f"{OP}/grade_labels_shard"
        _wait(lambda: [_state(o) for o in _shard_ops(ds, shard_uri)] == ["completed"] * 3, 240,
              "3 grade shards completed", logs)
        assert runs.get_plan(plan_id)["completed"]
    finally:
        for w in workers:
            _stop(w)
    ds.reload()
    assert runs.run_state(ds, RUN_KEY) == runs.STATE_COMPLETE
    _same(_written(ds), _written(ref))
