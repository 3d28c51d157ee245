"""Review speed on a synthetic dataset: queue/counts/histogram reads, per-fix latency, bulk accept.

Usage: ``python bench/review_bench.py [--samples 2000] [--labels 8] [--fixes 40]``
(CPU only; no images are read). Prints absolute times and the ratios measured in this run.
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

import numpy as np  # noqa: E402
import fiftyone as fo  # noqa: E402

from grader import review  # noqa: E402
from grader.fields import set_label_tag, write_label_attr  # noqa: E402


def build(n: int, k: int, seed: int = 0) -> fo.Dataset:
    rng = np.random.default_rng(seed)
    ds = fo.Dataset()
    samples = []
    for i in range(n):
        dets = [fo.Detection(label=str(rng.choice(["cat", "dog", "bird"])),
                             bounding_box=[*rng.uniform(0, .5, 2), *rng.uniform(.1, .4, 2)])
                for _ in range(k)]
        samples.append(fo.Sample(filepath=f"/nonexistent/{i}.jpg",
                                 ground_truth=fo.Detections(detections=dets)))
    ds.add_samples(samples, progress=False)
    sids, ids = ds.values(["id", "ground_truth.detections.id"])
    badloc = {(s, l): float(rng.uniform()) for s, ls in zip(sids, ids) for l in ls}
    swap = {(s, l): float(rng.uniform()) for s, ls in zip(sids, ids) for l in ls}
    write_label_attr(ds, "ground_truth", "cleanlab_badloc", badloc)
    write_label_attr(ds, "ground_truth", "cleanlab_swap", swap)
    write_label_attr(ds, "ground_truth", "cleanlab_swap_label", {key: "cat" for key in swap})
    set_label_tag(ds, "ground_truth", "suspect:badloc", [l for (s, l), v in badloc.items() if v < .1])
    set_label_tag(ds, "ground_truth", "suspect:swap", [l for (s, l), v in swap.items() if v < .1])
    return ds


def timed(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--labels", type=int, default=8)
    ap.add_argument("--fixes", type=int, default=40)
    a = ap.parse_args()

    t0 = time.perf_counter()
    ds = build(a.samples, a.labels)
    n_labels = a.samples * a.labels
    print(f"dataset: {a.samples} samples, {n_labels} labels (built in {time.perf_counter() - t0:.1f}s)")

    t_queue = timed(lambda: review.review_queue(ds, score="cleanlab_badloc", limit=15))
    t_thr = timed(lambda: review.review_queue(ds, score="cleanlab_swap", threshold=0.05, limit=15))
    t_counts = timed(lambda: review.issue_counts(ds))
    t_hist = timed(lambda: review.score_histogram(ds, "cleanlab_badloc"))
    t_scores = timed(lambda: review.available_scores(ds))
    print(f"review_queue (tagged, sorted):   {t_queue * 1e3:8.1f} ms  "
          f"({t_queue / n_labels * 1e6:.2f} us/label)")
    print(f"review_queue (threshold):        {t_thr * 1e3:8.1f} ms")
    print(f"issue_counts:                    {t_counts * 1e3:8.1f} ms")
    print(f"score_histogram:                 {t_hist * 1e3:8.1f} ms")
    print(f"available_scores:                {t_scores * 1e3:8.1f} ms")
    panel_refresh = t_queue + t_counts + t_hist + t_scores
    print(f"panel refresh (sum of the above): {panel_refresh * 1e3:7.1f} ms")

    items = review.review_queue(ds, score="cleanlab_swap", suspects_only=False)[: a.fixes]
    t = time.perf_counter()
    recs = [review.accept_label(ds, it.sample_id, it.label_id) for it in items]
    t_fix = (time.perf_counter() - t) / len(items)
    t = time.perf_counter()
    for r in reversed(recs):
        review.undo_fix(ds, r.fix_id)
    t_undo = (time.perf_counter() - t) / len(items)
    print(f"single fix (accept) latency:     {t_fix * 1e3:8.1f} ms")
    print(f"single undo latency:             {t_undo * 1e3:8.1f} ms")

    ids = [it.label_id for it in review.review_queue(ds, score="cleanlab_swap", suspects_only=False)]
    t = time.perf_counter()
    rec = review.accept_labels(ds, "ground_truth", label_ids=ids)
    t_bulk = time.perf_counter() - t
    print(f"bulk accept of {len(ids)} labels:      {t_bulk * 1e3:8.1f} ms "
          f"({t_bulk / len(ids) * 1e6:.1f} us/label)")
    print(f"ratio per-label fix / bulk accept per label: {t_fix / (t_bulk / len(ids)):.0f}x")
    t = time.perf_counter()
    review.undo_fix(ds, rec.fix_id)
    print(f"bulk undo:                       {(time.perf_counter() - t) * 1e3:8.1f} ms")

    n_log = review.count_fixes(ds, include_undone=True)
    t_log = timed(lambda: review.fix_log(ds, limit=5))
    print(f"fix_log(limit=5) with {n_log} records: {t_log * 1e3:6.2f} ms")
    review.clear_fix_log(ds)
    ds.delete()


if __name__ == "__main__":
    main()
