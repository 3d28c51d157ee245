"""Review panel speed at dataset scale: the panel refresh (scores present, counts, histogram, one
page of the queue) at 10k / 100k / 1M labels, paging deep into the queue, and per-fix latency.

Usage: ``python bench/review_bench.py [--labels 10000 100000 1000000] [--per-sample 10]``

Synthetic labels are written with one bulk ``insert_many`` per 50k samples straight into the
dataset's collection (not ``add_samples``), on a private mongod (tests/mongod_helper.py). CPU
only, no images are read. Prints absolute times measured in this run (best of 3).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
os.environ.setdefault("FIFTYONE_SHOW_PROGRESS_BARS", "false")
if "FIFTYONE_DATABASE_URI" not in os.environ:
    from mongod_helper import MongodServer  # noqa: E402

    _server = MongodServer(Path(tempfile.mkdtemp(prefix="lgF-bench-db-"))).start()
    os.environ["FIFTYONE_DATABASE_URI"] = _server.uri

import numpy as np  # noqa: E402
import fiftyone as fo  # noqa: E402
from bson import ObjectId  # noqa: E402

from grader import review  # noqa: E402

CLASSES = [f"class{k}" for k in range(80)]


def build(n_labels: int, per_sample: int, seed: int = 0, chunk: int = 50_000) -> fo.Dataset:
    """A dataset with ``n_labels`` GT boxes carrying cleanlab-like scores/tags (≈10 % suspect)."""
    rng = np.random.default_rng(seed)
    ds = fo.Dataset(f"lgF-bench-{n_labels}-{int(time.time())}")
    # one real sample declares the schema; the rest go in as raw documents
    ds.add_sample(fo.Sample(filepath="/nonexistent/schema.jpg", ground_truth=fo.Detections(
        detections=[fo.Detection(label="class0", bounding_box=[0.1, 0.1, 0.2, 0.2],
                                 cleanlab_badloc=0.5, cleanlab_swap=0.5,
                                 cleanlab_swap_label="class1")])))
    ds.add_dynamic_sample_fields()
    template = ds._sample_collection.find_one({})
    coll = ds._sample_collection
    n_samples = n_labels // per_sample
    for start in range(0, n_samples, chunk):
        m = min(chunk, n_samples - start)
        k = m * per_sample
        badloc, swap = rng.uniform(size=k), rng.uniform(size=k)
        labels = rng.integers(0, len(CLASSES), size=k)
        swap_to = rng.integers(0, len(CLASSES), size=k)
        xy, wh = rng.uniform(0, .5, (k, 2)), rng.uniform(.05, .4, (k, 2))
        docs = []
        for s in range(m):
            dets = []
            for j in range(s * per_sample, (s + 1) * per_sample):
                tags = (["suspect:badloc"] if badloc[j] < .1 else []) + (
                    ["suspect:swap"] if swap[j] < .05 else [])
                dets.append({"_id": ObjectId(), "_cls": "Detection", "attributes": {},
                             "tags": tags, "label": CLASSES[labels[j]],
                             "bounding_box": [*xy[j].tolist(), *wh[j].tolist()],
                             "cleanlab_badloc": float(badloc[j]), "cleanlab_swap": float(swap[j]),
                             "cleanlab_swap_label": CLASSES[swap_to[j]]})
            doc = {**template, "_id": ObjectId(), "filepath": f"/nonexistent/{start + s}.jpg",
                   "ground_truth": {"_cls": "Detections", "detections": dets}}
            docs.append(doc)
        coll.insert_many(docs, ordered=False)
    coll.delete_one({"_id": template["_id"]})
    return ds


def timed(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def panel_refresh(ds, score="cleanlab_badloc", issues=None, classes=None) -> None:
    """What the panel computes on refresh (panels/review.py ``_refresh``), previews aside."""
    avail = review.available_scores(ds, "ground_truth")
    snap = review.review_snapshot(ds, "ground_truth", score=score, issues=issues,
                                  classes=classes, limit=12, available=avail)
    review.add_suggestions(ds, snap["page"].items)


def separate_queries(ds, score="cleanlab_badloc", issues=None, classes=None) -> None:
    """The same results from one aggregation each (counts, histogram, page)."""
    avail = review.available_scores(ds, "ground_truth")
    review.issue_counts(ds, "ground_truth")
    review.score_histogram(ds, score, "ground_truth", issues=issues, classes=classes)
    page = review.review_page(ds, "ground_truth", score=score, issues=issues, classes=classes,
                              limit=12, available=avail)
    review.add_suggestions(ds, page.items)


def bench(n_labels: int, per_sample: int, fixes: int) -> None:
    t0 = time.perf_counter()
    ds = build(n_labels, per_sample)
    t_build = time.perf_counter() - t0
    n = ds.count("ground_truth.detections")
    print(f"\n== {n} labels in {len(ds)} samples (built in {t_build:.1f}s)")
    rows = {}
    for indexed in (False, True):
        if indexed:
            review.ensure_review_indexes(ds)
        tag = "indexed" if indexed else "no index"
        rows[f"panel refresh, any suspect ({tag})"] = timed(lambda: panel_refresh(ds))
        rows[f"panel refresh, swap + class ({tag})"] = timed(
            lambda: panel_refresh(ds, "cleanlab_swap", ["swap"], [CLASSES[3]]))
    rows["  available_scores"] = timed(lambda: review.available_scores(ds))
    rows["  issue_counts"] = timed(lambda: review.issue_counts(ds))
    rows["  score_histogram"] = timed(lambda: review.score_histogram(ds, "cleanlab_badloc"))
    rows["  review_page (first 20)"] = timed(lambda: review.review_page(ds, limit=20))
    total = review.review_page(ds, limit=1).total
    rows[f"  review_page (page at {total // 2}, of {total})"] = timed(
        lambda: review.review_page(ds, skip=total // 2, limit=20))
    rows["  review_page all scored, threshold 0.5"] = timed(
        lambda: review.review_page(ds, score="cleanlab_swap", threshold=0.5, limit=20))
    for k, v in rows.items():
        print(f"{k:48s} {v * 1e3:9.1f} ms")
    items = review.review_page(ds, limit=fixes).items
    t = time.perf_counter()
    recs = [review.accept_label(ds, it.sample_id, it.label_id) for it in items]
    t_fix = (time.perf_counter() - t) / max(len(items), 1)
    t = time.perf_counter()
    for r in reversed(recs):
        review.undo_fix(ds, r.fix_id)
    t_undo = (time.perf_counter() - t) / max(len(items), 1)
    print(f"{'single fix (accept) latency':48s} {t_fix * 1e3:9.1f} ms")
    print(f"{'single undo latency':48s} {t_undo * 1e3:9.1f} ms")
    review.clear_fix_log(ds)
    ds.delete()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--labels", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--per-sample", type=int, default=10)
    ap.add_argument("--fixes", type=int, default=20)
    a = ap.parse_args()
    for n in a.labels:
        bench(n, a.per_sample, a.fixes)


if __name__ == "__main__":
    main()
