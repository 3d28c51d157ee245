"""Per-detection field writes: grader's bulk path vs a per-sample ``save()`` loop.

Builds a dataset with >= 100k detections, writes one float attribute per detection through
``grader.fields.write_label_attr`` (FiftyOne ``set_label_values``) and through the naive
per-sample loop, and prints detections/second for both and their ratio, measured in one run.
The loop is timed on a subset (``--loop-samples``) because at 100k detections it takes minutes;
rates (detections/s) are comparable because both paths are linear in detections.

    python bench/bulk_writes.py [--samples 10000 --per-sample 10 --loop-samples 1000]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("FIFTYONE_DATABASE_DIR", tempfile.mkdtemp(prefix="lg-bench-db-"))
os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
os.environ.setdefault("FIFTYONE_SHOW_PROGRESS_BARS", "false")

import fiftyone as fo  # noqa: E402
import numpy as np  # noqa: E402

from grader.fields import write_label_attr  # noqa: E402


def build(n_samples: int, per_sample: int) -> fo.Dataset:
    rng = np.random.default_rng(0)
    ds = fo.Dataset()
    samples = []
    for i in range(n_samples):
        boxes = rng.uniform(0, 0.5, size=(per_sample, 4))
        samples.append(fo.Sample(filepath=f"/nonexistent/{i}.jpg", ground_truth=fo.Detections(
            detections=[fo.Detection(label="a", bounding_box=b.tolist()) for b in boxes])))
    ds.add_samples(samples, progress=False)
    return ds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=10000)
    ap.add_argument("--per-sample", type=int, default=10)
    ap.add_argument("--loop-samples", type=int, default=1000)
    a = ap.parse_args()
    ds = build(a.samples, a.per_sample)
    n_det = ds.count("ground_truth.detections")
    ids, lids = ds.values(["id", "ground_truth.detections.id"])
    values = {(s, l): float(k % 97) / 97 for s, ls in zip(ids, lids) for k, l in enumerate(ls)}

    t0 = time.perf_counter()
    write_label_attr(ds, "ground_truth", "bench_bulk", values)
    t_bulk = time.perf_counter() - t0
    assert ds.count("ground_truth.detections.bench_bulk") == n_det

    t0 = time.perf_counter()
    ds.set_label_values("ground_truth.detections.bench_fo", [
        {"sample_id": s, "label_id": l, "value": v} for (s, l), v in values.items()])
    t_fo = time.perf_counter() - t0

    sub = ds.limit(a.loop_samples)
    n_loop = sub.count("ground_truth.detections")
    t0 = time.perf_counter()
    for sample in sub.iter_samples(autosave=False):
        for det in sample.ground_truth.detections:
            det["bench_loop"] = values[(sample.id, det.id)]
        sample.save()
    t_loop = time.perf_counter() - t0
    assert sub.count("ground_truth.detections.bench_loop") == n_loop

    bulk_rate, loop_rate = n_det / t_bulk, n_loop / t_loop
    print(f"detections: bulk path {n_det}, save() loop {n_loop} (subset of {a.loop_samples} samples)")
    print(f"grader bulk write     : {bulk_rate:12,.0f} detections/s ({t_bulk:.2f} s)")
    print(f"FiftyOne set_label_values: {n_det / t_fo:9,.0f} detections/s ({t_fo:.2f} s)")
    print(f"per-sample save() loop: {loop_rate:12,.0f} detections/s ({t_loop:.2f} s)")
    print(f"ratio bulk / loop     : {bulk_rate / loop_rate:.1f}x  (target >= 20x)")
    ds.delete()


if __name__ == "__main__":
    main()
