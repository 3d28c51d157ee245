"""Overlooked objects: recall of the ``overlooked`` judge on injected deletions, before vs after.

    .venv/bin/python bench/overlooked_bench.py                      # coco128 (development split)
    .venv/bin/python bench/overlooked_bench.py --split val          # coco128-val (report only)
    .venv/bin/python bench/overlooked_bench.py --errors overlooked   # deletions only
    .venv/bin/python bench/overlooked_bench.py --split raccoon --errors overlooked --rate 0.15
                                            # one class no detector knows (15 % of boxes deleted)
    .venv/bin/python bench/overlooked_bench.py --split coco128-custom   # coco128, 8 made-up classes

``raccoon`` and ``coco128-custom`` are ``bench/custom_classes.py``'s datasets (development data).

Per seed: copy the ground truth into ``noisy`` with ``--rate`` of each error type injected
(``--errors all``, as ``bench/eval_judges.py``; other errors move and add boxes, which makes
distractor candidates) or deletions only (``--errors overlooked``), then run
``find_overlooked(ds, "noisy")`` as ``grader.grade()`` does, once per variant:

- ``before``: the judge before the 640 input, the other-class suppression and the dataset
  classes (``input_size=None, flip=True, other_iou=None, label_mode="detector"``): the
  detector at its own 416 input on the image and its mirror, candidates named by the
  detector's classes;
- ``after``: its defaults.

Recall@1xN / @2xN (N = deleted boxes) and the ceiling (deleted boxes any ``lg_predictions``
box covers, IoU >= 0.5) come from ``grader.evaluate.evaluate_judges``, as in
``bench/eval_judges.py``. The detector's outputs do not depend on the labels: they are cached
per image after the first seed, whose runs (uncached, after an untimed warm-up run) give the
judge's time per image.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import sys
import time
from collections import defaultdict

import numpy as np

import _harness as H
from _harness import DATA, bench_db, load_split

H.one_thread_env()   # (as importing eval_judges for these did)

from grader.detectors import ArrayDetector, load_detector, run_detector  # noqa: E402

VARIANTS = {
    "before": dict(input_size=None, flip=True, other_iou=None, label_mode="detector"),
    "after": {},
}
SCORE = "overlooked:overlooked_score"


class CachedDetector(ArrayDetector):
    """The wrapped detector's rows, memoized per image content (labels never change them)."""

    def __init__(self, det: ArrayDetector):
        self.det = det
        self.classes, self.name = det.classes, det.name
        self.has_probs = det.has_probs
        self.rows: dict[tuple, np.ndarray] = {}

    @property
    def size(self):
        return getattr(self.det, "size", None)

    def set_input_size(self, input_size: int) -> None:
        """As the wrapped detector's (the judge calls it on a copy; the cache stays shared)."""
        self.det = copy.copy(self.det)
        self.det.set_input_size(input_size)

    def predict(self, images):
        keys = [(self.size, im.shape, hashlib.md5(np.ascontiguousarray(im).tobytes()).hexdigest())
                for im in images]
        todo = [i for i, k in enumerate(keys) if k not in self.rows]
        if todo:
            for i, r in zip(todo, self.det.predict([images[i] for i in todo])):
                self.rows[keys[i]] = r
        return [self.rows[k] for k in keys]


def distinct_recall(ds, mult: int) -> float:
    """Distinct deleted boxes among the top ``mult`` x N candidates (N = deleted boxes): the
    evaluator's recall@kxN counts every candidate on a deleted box, two on one box twice (capped
    by the boxes covered), so this one says how many missing objects a reviewer actually sees."""
    from grader.boxes import iou_matrix
    from grader.noise import deleted_field_name

    dels, boxes, scores = ds.values([f"{deleted_field_name('noisy')}.detections.bounding_box",
                                     "noisy_overlooked.detections.bounding_box",
                                     "noisy_overlooked.detections.overlooked_score"])
    xyxy = lambda b: np.c_[np.asarray(b, float).reshape(-1, 4)[:, :2],
                           np.asarray(b, float).reshape(-1, 4)[:, :2] + np.asarray(b, float).reshape(-1, 4)[:, 2:]]
    rows, n_del = [], 0
    for i, (dl, cb, cs) in enumerate(zip(dels, boxes, scores)):
        n_del += len(dl or [])
        if not cb:
            continue
        iou = iou_matrix(xyxy(cb), xyxy(dl)) if dl else np.zeros((len(cb), 0))
        for j, s in enumerate(cs):
            hit = (i, int(iou[j].argmax())) if iou.shape[1] and iou[j].max() >= 0.5 else None
            rows.append((-(s or 0.0), j + 1000 * i, hit))
    top = sorted(rows, key=lambda r: r[:2])[:mult * n_del]
    return len({r[2] for r in top if r[2] is not None}) / max(n_del, 1)


def run(args) -> dict:
    from grader.evaluate import evaluate_judges
    from grader.judges.overlooked import find_overlooked
    from grader.noise import ERROR_TYPES, inject_errors
    from grader.pipeline import DEFAULT_PRED_FIELD

    if args.split in ("dev", "val"):
        ds = load_split(args.split)
    else:  # classes no detector knows, loaded as bench/custom_classes.py does
        from custom_classes import load

        ds = load(args.split)
    n_img = len(ds)
    print(f"split={args.split}: {n_img} images, {ds.count('ground_truth.detections')} boxes; "
          f"errors={args.errors} at {args.rate}; seeds {args.seed}..{args.seed + args.repeats - 1}")
    # grade()'s detector step (default settings): the predictions the ceiling counts
    run_detector(ds, model="yolox-nano", label_field=DEFAULT_PRED_FIELD, gt_field="ground_truth")
    det = load_detector("yolox-nano")
    cached = CachedDetector(det)
    types = ERROR_TYPES if args.errors == "all" else ("overlooked",)
    if len(ds.distinct("ground_truth.detections.label")) < 2:
        types = tuple(t for t in types if t != "swap")  # one class: nothing to swap to
    res = defaultdict(list)         # variant -> [(r1, r2, ceiling, coverage, n_candidates)]
    secs = {}
    for r in range(args.repeats):
        seed = args.seed + r
        for f in list(ds.get_field_schema()):
            if f.startswith("noisy_") and f != "noisy_deleted":
                ds.delete_sample_field(f)
        rep = inject_errors(ds, "ground_truth", "noisy", rates={t: args.rate for t in types},
                            seed=seed, overwrite=True)
        line = [f"seed {seed}: deleted {rep.info['injected'].get('overlooked', 0)}"]
        if r == 0:  # untimed warm-up: the detector's first calls and the image files' first reads
            find_overlooked(ds, "noisy", detector=CachedDetector(det))
        for name, opts in VARIANTS.items():
            # first seed: a fresh detector per variant, so both are timed uncached
            d = CachedDetector(det) if r == 0 else cached
            t0, c0 = time.perf_counter(), time.process_time()
            orep = find_overlooked(ds, "noisy", detector=d, **opts)
            if r == 0:
                secs[name] = (time.perf_counter() - t0, time.process_time() - c0)
                cached.rows.update(d.rows)
            ev = evaluate_judges(ds, "noisy", pred_field=DEFAULT_PRED_FIELD, exclude_tag=None)
            row = ev["overlooked"][SCORE]
            d2 = distinct_recall(ds, 2)
            res[name].append((row["recall@1xN"], row["recall@2xN"], ev["overlooked_ceiling"],
                              row["coverage"], orep.info["candidates"], d2))
            line.append(f"{name} r@1xN {row['recall@1xN']:.3f} r@2xN {row['recall@2xN']:.3f} "
                        f"distinct@2xN {d2:.3f} "
                        f"ceiling {ev['overlooked_ceiling']:.3f} ({orep.info['candidates']} cands)")
        print("  " + " | ".join(line), flush=True)
    print(f"\n== {args.split}: overlooked_score, mean over {args.repeats} seeds "
          f"(errors={args.errors}, rate {args.rate}) ==")
    for name, v in res.items():
        a = np.array(v)
        r2 = a[:, 1]
        # no ceiling where the detector step keeps no box (none of the dataset's classes)
        ratio = (f"(2xN / ceiling {r2.mean() / a[:, 2].mean():.2f})  " if a[:, 2].mean() > 0
                 else "(no ceiling)  ")
        print(f"{name:7s} recall@1xN {a[:, 0].mean():.3f}  recall@2xN {r2.mean():.3f} "
              f"(se {r2.std() / np.sqrt(len(r2)):.3f})  ceiling {a[:, 2].mean():.3f}  " + ratio
              + f"candidates cover {a[:, 3].mean():.3f}  candidates/image {a[:, 4].mean() / n_img:.2f}  "
              f"distinct boxes@2xN {a[:, 5].mean():.3f}")
    if len(res) == 2:
        d = np.array(res["after"])[:, 1] - np.array(res["before"])[:, 1]
        print(f"after - before recall@2xN: {d.mean():+.3f} (paired se {d.std() / np.sqrt(len(d)):.3f})")
    # CPU time of this process too: on the shared machine, wall time swings with the others' load
    print("judge time per image (first seed, uncached detector, same run): " + ", ".join(
        f"{k} {1000 * w / n_img:.0f} ms wall / {1000 * c / n_img:.0f} ms CPU"
        for k, (w, c) in secs.items())
        + (f"; after/before wall {secs['after'][0] / secs['before'][0]:.2f}x, CPU "
           f"{secs['after'][1] / secs['before'][1]:.2f}x" if len(secs) == 2 else ""))
    if not args.keep:
        ds.delete()
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--split", choices=["dev", "val", "raccoon", "coco128-custom"], default="dev")
    ap.add_argument("--errors", choices=["all", "overlooked"], default="all",
                    help="inject every error type (as bench/eval_judges.py) or deletions only")
    ap.add_argument("--rate", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args(argv)
    if not (DATA / "coco128").exists():
        print(f"no data under {DATA}; set LABEL_GRADER_DATA")
        return 1
    with bench_db():
        run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
