"""Bulk accept at scale: N labels tagged reviewed:ok by review.accept_labels (pending log
record first, one update_many per chunk, then done), then undone; on a private mongod.

    .venv/bin/python bench/bulk_accept.py --samples 10000 --per-sample 10
"""
from __future__ import annotations

import argparse
import time

import _harness as H


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=10_000)
    ap.add_argument("--per-sample", type=int, default=10)
    args = ap.parse_args()
    with H.bench_db("lg-bench-bulk-", always=True):
        import fiftyone as fo
        from grader import review
        from grader.scores import REVIEWED_OK_TAG

        ds = fo.Dataset("A-bench-bulk-accept")
        t = time.perf_counter()
        samples = [fo.Sample(filepath=f"/tmp/img_{i}.jpg", ground_truth=fo.Detections(detections=[
            fo.Detection(label="cat", bounding_box=[0.1, 0.1, 0.2, 0.2]) for _ in range(args.per_sample)]))
            for i in range(args.samples)]
        ds.add_samples(samples, progress=False)
        # drop our references: FiftyOne reloads every *in-memory* sample a write touches, one
        # query each (~10 ms), for its own tag_labels as for us; an App/script rarely holds 10k
        del samples
        n = args.samples * args.per_sample
        print(f"built {n} labels in {time.perf_counter() - t:.1f}s")

        t = time.perf_counter()
        rec = review.accept_labels(ds, "ground_truth")
        t_accept = time.perf_counter() - t
        tagged = ds.count_label_tags("ground_truth").get(REVIEWED_OK_TAG, 0)
        print(f"accept_labels: {len(rec.extra['label_ids'])} labels in {t_accept:.2f}s "
              f"({tagged} tagged, state={rec.state}, pending={len(review.pending_fixes(ds))})")
        t = time.perf_counter()
        review.undo_fix(ds, rec.fix_id)
        t_undo = time.perf_counter() - t
        left = ds.count_label_tags("ground_truth").get(REVIEWED_OK_TAG, 0)
        print(f"undo: {t_undo:.2f}s ({left} still tagged)")


if __name__ == "__main__":
    main()
