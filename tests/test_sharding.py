"""Sharded cleanlab runs on real FiftyOne delegated-operation workers.

Two `fiftyone delegated launch` processes on the test session's own standalone mongod
(tests/mongod_helper.py, FIFTYONE_DATABASE_URI inherited) run the shards queued by the
run_cleanlab operator; every sample is scored exactly once and the written fields equal a
single-process run. Then a worker is SIGKILLed mid-shard and a re-queue finishes only what
is missing.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import fiftyone as fo
import fiftyone.operators as foo
from fiftyone.operators.delegated import DelegatedOperationService

from grader import runs
from grader.judges import cleanlab as cj
from grader.judges.cleanlab import run_cleanlab

URI = "@label-grader/label-grader/run_cleanlab"
SHARD_URI = "@label-grader/label-grader/run_cleanlab_shard"
CLASSES = [f"c{i}" for i in range(8)]


def _make_dataset(name: str, n: int, seed: int = 0) -> fo.Dataset:
    """``n`` images (metadata only: the judge never decodes pixels), ~5 GT / ~7 predictions."""
    rng = np.random.default_rng(seed)
    ds = fo.Dataset(name)
    samples = []
    for i in range(n):
        gt, pr = [], []
        for _ in range(int(rng.integers(2, 8))):
            x, y = rng.uniform(0.0, 0.7, size=2)
            w, h = rng.uniform(0.05, 0.3, size=2)
            c = str(rng.choice(CLASSES))
            gt.append(fo.Detection(label=c, bounding_box=[x, y, w, h]))
            if rng.uniform() < 0.85:
                c2 = c if rng.uniform() < 0.85 else str(rng.choice(CLASSES))
                pr.append(fo.Detection(
                    label=c2, bounding_box=[x + rng.normal(0, 0.02), y + rng.normal(0, 0.02), w, h],
                    confidence=float(rng.choice([0.3, 0.6, 0.96, 0.99]))))
        for _ in range(int(rng.integers(0, 3))):
            x, y = rng.uniform(0.0, 0.7, size=2)
            pr.append(fo.Detection(label=str(rng.choice(CLASSES)), bounding_box=[x, y, 0.1, 0.1],
                                   confidence=float(rng.uniform(0.2, 0.99))))
        samples.append(fo.Sample(filepath=f"/nonexistent/{name}/{i:05d}.jpg",
                                 metadata=fo.ImageMetadata(width=640, height=480),
                                 ground_truth=fo.Detections(detections=gt),
                                 predictions=fo.Detections(detections=pr)))
    ds.add_samples(samples)
    ds.persistent = True   # workers load it by name
    return ds


def _fields(ds) -> dict:
    """Everything the judge writes, keyed by filepath / label id (stable across clones)."""
    fp = ds.values("filepath")
    out = {}
    for a in ("cleanlab_badloc", "cleanlab_swap", "cleanlab_support", "cleanlab_swap_label",
              "cleanlab_swap_pred_id", "cleanlab_badloc_pred_id", "tags"):
        ids = ds.values("ground_truth.detections.id", unwind=True)
        out[a] = dict(zip(ids, ds.values(f"ground_truth.detections.{a}", unwind=True)))
    for f in ("cleanlab_label_quality", "cleanlab_issue", "tags"):
        out[f] = dict(zip(fp, ds.values(f)))
    out["overlooked"] = dict(zip(fp, [sorted(x or []) for x in ds.values(
        "ground_truth_overlooked.detections.cleanlab_overlooked")]))
    return out


def _start_worker(log: Path) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("fiftyone")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "fiftyone.core.cli"]
    return subprocess.Popen(cmd + ["delegated", "launch"], stdout=open(log, "wb"),
                            stderr=subprocess.STDOUT, env=dict(os.environ),
                            start_new_session=True)


def _stop(p: subprocess.Popen, sig=signal.SIGTERM) -> None:
    if p.poll() is None:
        os.killpg(p.pid, sig)
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def _wait(cond, timeout: float, what: str, logs=()) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.1)
    tails = "\n".join(Path(l).read_text()[-3000:] for l in logs if Path(l).exists())
    raise AssertionError(f"timed out waiting for {what}\n{tails}")


def _queue(ds, num_shards: int, **params) -> dict:
    res = foo.execute_operator(URI, ctx={"view": ds.view(), "params": {
        "target": "DATASET", "gt_field": "ground_truth", "pred_field": "predictions",
        "num_shards": num_shards, **params}})
    info = res.result["info"]
    assert info["queued_shards"] == num_shards
    return runs.get_plan(info["plan_id"])


def _shard_ops(ds, uri: str = SHARD_URI):
    return DelegatedOperationService().list_operations(operator=uri, dataset_name=ds.name)


def _state(op) -> str:
    return str(op.run_state).lower().rsplit(".", 1)[-1]


def test_two_workers_score_every_sample_once_and_equal_single_process(tmp_path):
    ds = _make_dataset("lg-shard-two-workers", 240)
    ref = ds.clone("lg-shard-two-workers-ref")
    workers = []
    try:
        run_cleanlab(ref)
        expected = _fields(ref)

        plan = _queue(ds, 6, chunk_size=15)
        assert runs.run_state(ds, cj.RUN_KEY) == runs.STATE_RUNNING
        assert ds.count("ground_truth.detections.cleanlab_badloc") == 0   # only queued
        logs = [tmp_path / f"w{i}.log" for i in range(2)]
        workers = [_start_worker(l) for l in logs]
        _wait(lambda: [_state(o) for o in _shard_ops(ds)] == ["completed"] * 6, 80,
              "6 shards completed", logs)
        assert runs.get_plan(plan["_id"]).get("completed")

        ds.reload()   # the workers added fields: refresh this process's schema
        plan = runs.get_plan(plan["_id"])
        sizes = [len(runs.shard_range_view(ds, plan["bounds"], i)) for i in range(6)]
        assert sum(sizes) == 240 and min(sizes) > 0          # a partition of the view
        assert {int(k): v for k, v in plan["scored"].items()} == dict(enumerate(sizes))
        assert plan["finalized"] and sorted(plan["done"]) == list(range(6))
        pids = {h.split(":")[1] for hs in plan["holders"].values() for h in hs}
        assert len(pids) == 2, plan["holders"]                # both workers ran shards
        assert ds.count_values(cj.CONFIG_FIELD) == {plan["config"]: 240}
        assert runs.run_state(ds, cj.RUN_KEY) == runs.STATE_COMPLETE
        assert _fields(ds) == expected                        # equal to one process
    finally:
        for w in workers:
            _stop(w)
        for d in (ds, ref):
            d.delete()


def test_killed_worker_requeue_finishes_only_what_is_missing(tmp_path):
    ds = _make_dataset("lg-shard-kill", 300, seed=1)
    ref = ds.clone("lg-shard-kill-ref")
    workers = []
    try:
        params = dict(high_probability_threshold=0.9, low_probability_threshold=0.4)
        run_cleanlab(ref, **params)
        expected = _fields(ref)

        plan = _queue(ds, 2, chunk_size=5, lease_ttl_s=3.0, **params)
        log0 = tmp_path / "w0.log"
        victim = _start_worker(log0)
        workers.append(victim)

        def mid_shard():
            sc = runs.get_plan(plan["_id"]).get("scored", {})
            return any(0 < v < 100 for v in sc.values())

        _wait(mid_shard, 60, "a shard partly scored", [log0])
        _stop(victim, signal.SIGKILL)
        ds.reload()
        n_before = ds.count_values(cj.CONFIG_FIELD).get(plan["config"], 0)
        assert 0 < n_before < 300
        assert not runs.get_plan(plan["_id"])["finalized"]
        assert runs.run_state(ds, cj.RUN_KEY) == runs.STATE_RUNNING   # visibly incomplete

        # Re-queue the same run: same configuration, so the same plan and per-sample hash.
        plan2 = _queue(ds, 2, chunk_size=5, lease_ttl_s=3.0, **params)
        assert plan2["_id"] == plan["_id"] and plan2["config"] == plan["config"]
        logs = [tmp_path / f"w{i}.log" for i in (1, 2)]
        workers += [_start_worker(l) for l in logs]
        _wait(lambda: runs.get_plan(plan["_id"]).get("completed"), 80,
              "re-queued run finalised", logs)
        ds.reload()
        scored = sum(runs.get_plan(plan["_id"])["scored"].values())
        assert scored == 300 - n_before                       # only what was missing
        assert ds.count_values(cj.CONFIG_FIELD) == {plan["config"]: 300}
        assert runs.run_state(ds, cj.RUN_KEY) == runs.STATE_COMPLETE
        assert _fields(ds) == expected
    finally:
        for w in workers:
            _stop(w)
        for d in (ds, ref):
            d.delete()
