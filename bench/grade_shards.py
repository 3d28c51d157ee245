"""grade() in one process vs the same run sharded over FiftyOne delegated workers.

    .venv/bin/python bench/grade_shards.py --images 64 --shards 4 --workers 2

On a private mongod: ``grader.grade()`` on N coco128 images in this process (wall time), then
the same on a fresh copy through the ``grade_labels`` operator with ``num_shards`` (the
per-image judges in shards, the dataset-wide ones by the worker finishing last), run by
``--workers`` ``fiftyone delegated launch`` processes started here; wall time from queueing
to the run's completion, worker start-up included. Prints both and their ratio, and checks the
two copies' ensemble scores agree.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _harness as H
from _harness import REPO


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)

    H.one_thread_env()   # (as importing eval_judges for these did)
    from _harness import load_split, start_db as _start_db

    srv = _start_db()
    plugins = Path(tempfile.mkdtemp(prefix="lg-bench-plugins-"))
    (plugins / "label-grader").symlink_to(REPO)
    os.environ["FIFTYONE_PLUGINS_DIR"] = str(plugins)
    workers = []
    try:
        import numpy as np
        import fiftyone.operators as foo

        from grader import runs
        from grader.pipeline import grade

        base = load_split("dev")
        ids = base.values("id")[:args.images]
        one = base.select(ids).clone("G-shards-one")
        many = base.select(ids).clone("G-shards-many")
        many.persistent = True
        t = time.perf_counter()
        grade(one)
        t_one = time.perf_counter() - t
        print(f"one process: grade() on {len(one)} images {t_one:.1f} s", flush=True)

        exe = Path(sys.executable).with_name("fiftyone")
        t = time.perf_counter()
        res = foo.execute_operator("@label-grader/label-grader/grade_labels", ctx={
            "view": many.view(), "params": {"target": "DATASET", "gt_field": "ground_truth",
                                            "num_shards": args.shards}}).result
        plan_id = res["plan_id"]
        for i in range(args.workers):
            workers.append(subprocess.Popen([str(exe), "delegated", "launch"],
                                            stdout=open(plugins / f"w{i}.log", "wb"),
                                            stderr=subprocess.STDOUT, env=dict(os.environ),
                                            start_new_session=True))
        while not runs.get_plan(plan_id).get("completed"):
            if time.perf_counter() - t > 3600:
                raise SystemExit("sharded run did not complete in an hour")
            time.sleep(0.5)
        t_many = time.perf_counter() - t
        plan = runs.get_plan(plan_id)
        pids = {h.split(":")[1] for hs in plan["holders"].values() for h in hs}
        print(f"sharded: {args.shards} shards, {args.workers} workers ({len(pids)} ran shards): "
              f"{t_many:.1f} s from queueing to complete, worker start-up included", flush=True)
        print(f"ratio one / sharded: {t_one / t_many:.2f}x")
        many.reload()
        a = np.array(one.values("ground_truth.detections.ensemble_any", unwind=True), dtype=float)
        b = np.array(many.values("ground_truth.detections.ensemble_any", unwind=True), dtype=float)
        print(f"ensemble_any max |difference| between the copies: {np.nanmax(np.abs(a - b)):.2e}")
        for d in (one, many):
            d.delete()
    finally:
        for w in workers:
            if w.poll() is None:
                os.killpg(w.pid, signal.SIGTERM)
                w.wait(timeout=30)
        if srv is not None:
            srv.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
