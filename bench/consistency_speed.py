"""Time of the consistency judge per 100k boxes (synthetic boxes).

    .venv/bin/python bench/consistency_speed.py               # 100k boxes, numpy core + full run
    .venv/bin/python bench/consistency_speed.py --no-db       # numpy core only

Two figures: the pure-numpy scoring (``consistency_arrays``: pairwise IoU per image, robust
z-scores per class) on 100k boxes in 10k images, and the whole ``run_consistency`` on a
FiftyOne dataset of the same boxes (one read, the scoring, one bulk write of 4 attributes per
box, the duplicate tags), on a private mongod.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import _harness as H


def synthetic(n_boxes: int, per_image: int, n_classes: int, seed: int = 0):
    """Images of 1 .. 2*per_image - 1 boxes (mean per_image) until ``n_boxes`` boxes."""
    rng = np.random.default_rng(seed)
    boxes, labels = [], []
    total = 0
    while total < n_boxes:
        k = int(min(rng.integers(1, 2 * per_image), n_boxes - total))
        wh = rng.uniform(0.02, 0.4, (k, 2))
        xy = rng.uniform(0, 1, (k, 2)) * (1 - wh)
        boxes.append(np.concatenate([xy, wh], axis=1))
        labels.append([f"c{c}" for c in rng.integers(n_classes, size=k)])
        total += k
    return boxes, labels


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--boxes", type=int, default=100_000)
    ap.add_argument("--per-image", type=int, default=10)
    ap.add_argument("--classes", type=int, default=80)
    ap.add_argument("--no-db", action="store_true")
    args = ap.parse_args(argv)
    from grader.judges.consistency import consistency_arrays

    boxes, labels = synthetic(args.boxes, args.per_image, args.classes)
    n_img = len(boxes)
    w = [640.0] * n_img
    h = [480.0] * n_img
    t = time.perf_counter()
    consistency_arrays(boxes, labels, w, h)
    core = time.perf_counter() - t
    print(f"numpy core: {args.boxes} boxes in {n_img} images: {core:.2f} s "
          f"({core * 100_000 / args.boxes:.2f} s per 100k boxes)")
    if args.no_db:
        return 0
    with H.bench_db("lg-cspeed-", always=True):
        import fiftyone as fo

        from grader.judges.consistency import run_consistency

        ds = fo.Dataset("C-consistency-speed", overwrite=True)
        ds.add_samples([fo.Sample(filepath=f"/nonexistent/{i}.jpg",
                                  metadata=fo.ImageMetadata(width=640, height=480),
                                  ground_truth=fo.Detections(detections=[
                                      fo.Detection(label=l, bounding_box=b.tolist())
                                      for l, b in zip(labels[i], boxes[i])]))
                        for i in range(n_img)])
        t = time.perf_counter()
        rep = run_consistency(ds, "ground_truth")
        full = time.perf_counter() - t
        print(f"run_consistency (read + score + bulk write + tags): {rep.labels_scored} boxes: "
              f"{full:.2f} s ({full * 100_000 / rep.labels_scored:.2f} s per 100k boxes); "
              f"numpy core = {core / full:.0%} of it")
        ds.delete()
    return 0


if __name__ == "__main__":
    sys.exit(main())
