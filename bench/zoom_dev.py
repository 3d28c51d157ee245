"""Helper B's dev bench: detector decoding check, zoom judge AUROC/time, overlooked recall.

    .venv/bin/python bench/zoom_dev.py decoder [--split val|dev] [--model yolox-nano]
    .venv/bin/python bench/zoom_dev.py zoom [--seed 0]          # coco128 (dev) only
    .venv/bin/python bench/zoom_dev.py overlooked [--seed 0]    # coco128 (dev) only

Starts its own mongod (tests/mongod_helper.py); never touches FiftyOne's default database.
"""
from __future__ import annotations

import argparse
import os
import time

import _harness as H

os.environ["FIFTYONE_DATABASE_VALIDATION"] = "false"
_SRV = H.start_db("lg-b-mongo-", always=True)

import numpy as np  # noqa: E402


def load_split(split: str):
    return H.load_split(split, prefix="b")


def cmd_decoder(args) -> None:
    from grader.detectors import run_detector

    ds = load_split(args.split)
    t = time.time()
    rep = run_detector(ds, model=args.model, label_field="pred", conf_threshold=args.thr, nms_iou=0.45)
    dt = time.time() - t
    ds.evaluate_detections("pred", gt_field="ground_truth", eval_key="ev", iou=0.5)
    n_pred = ds.count("pred.detections")
    print(f"{args.model} on {args.split}: {len(ds.values('ground_truth.detections', unwind=True))} GT "
          f"boxes, score>{args.thr}: {n_pred} predictions, {sum(ds.values('ev_tp'))} correct at IoU 0.5 "
          f"({dt / len(ds) * 1000:.0f} ms/image)")
    print(rep.summary())


def _inject(ds, seed: int, rates=None):
    from grader.noise import ERROR_TYPES

    rates = rates or {"badloc": 0.05, "swap": 0.05, "spurious": 0.05, "overlooked": 0.05}
    H.inject(ds, seed=seed, rates={k: v for k, v in rates.items() if k in ERROR_TYPES})


def _auroc_table(ds, field: str, judges=("zoom",)) -> None:
    from grader.evaluate import auroc, average_precision, read_label_scores
    from grader.scores import SCORES

    specs = [s for s in SCORES if s.judge in judges and not s.on_candidates]
    sc = read_label_scores(ds, field, specs=specs)
    truth = np.asarray([t or "none" for t in sc.truth])
    types = [t for t in ("badloc", "swap", "spurious", "duplicate") if (truth == t).any()]
    print(f"{'score':28s} " + " ".join(f"{t + ' AUROC':>15s}" for t in types))
    for name, col in sc.columns.items():
        col = np.where(np.isfinite(col), col, np.nanmin(col) - 1 if np.isfinite(col).any() else 0)
        cells = []
        for t in types:
            m = (truth == t) | (truth == "none")
            cells.append(f"{auroc((truth[m] == t).astype(int), col[m]):15.3f}")
        print(f"{name:28s} " + " ".join(cells))
    print("counts:", {t: int((truth == t).sum()) for t in types + ["none"]})


def cmd_zoom(args) -> None:
    from grader.detectors import load_detector
    from grader.judges.zoom import _render, _Job, run_zoom
    from grader import fields as lgf

    ds = load_split(args.split)
    _inject(ds, args.seed)
    kw = dict(context=args.context, min_crop=args.min_crop, input_size=args.input_size,
              conf_threshold=args.conf, match_iou=args.match_iou)
    rep = run_zoom(ds, "noisy", args.model, **kw)
    print(rep.summary())
    _auroc_table(ds, "noisy")
    # bare forward on the same crops (prerendered, not timed), same detector and input size
    det = load_detector(args.model)
    if hasattr(det, "set_input_size"):
        det.set_input_size(args.input_size)
    tab = lgf.read_detections(ds, "noisy")
    crops = []
    for job in (_Job(*r) for r in zip(tab.sample_ids, tab.filepaths, tab.ids, tab.labels, tab.boxes)):
        crops += [c for *_, c in _render(job, context=args.context, min_crop=args.min_crop,
                                          out_size=getattr(det, "size", None))[2]]
    t = time.perf_counter()
    for i in range(0, len(crops), 16):
        det.predict(crops[i:i + 16])
    bare = time.perf_counter() - t
    n = len(ds)
    print(f"zoom judge: {rep.info['total_s'] / n * 1000:.0f} ms/image end-to-end; bare detector forward "
          f"on the same {len(crops)} crops: {bare / n * 1000:.0f} ms/image; ratio "
          f"{rep.info['total_s'] / bare:.2f}x")


def cmd_overlooked(args) -> None:
    from grader.detectors import run_detector
    from grader.evaluate import evaluate_judges
    from grader.judges.overlooked import find_overlooked

    ds = load_split(args.split)
    _inject(ds, args.seed, {"overlooked": 0.05})
    run_detector(ds, args.model, label_field="pred25", conf_threshold=0.25, gt_field="noisy")
    t = time.perf_counter()
    rep = find_overlooked(ds, "noisy", args.model,
                          slice_size=("auto" if args.slice < 0 else args.slice or None),
                          conf_threshold=args.ov_conf, gt_iou=args.gt_iou,
                          slice_weight=args.slice_weight)
    dt = time.perf_counter() - t
    print(rep.summary())
    res = evaluate_judges(ds, "noisy", pred_field="pred25", exclude_tag=None)
    row = res["overlooked"].get("overlooked:overlooked_score", {})
    ceil = res.get("overlooked_ceiling", float("nan"))
    print(f"deleted {res['counts']['overlooked']}; ceiling (pred >= 0.25 covers, IoU 0.5) {ceil:.3f}; "
          f"recall@1xN {row.get('recall@1xN', float('nan')):.3f}, recall@2xN "
          f"{row.get('recall@2xN', float('nan')):.3f} (= {row.get('recall@2xN', 0) / ceil:.2f} x ceiling); "
          f"candidates cover {row.get('coverage', float('nan')):.3f}; {dt / len(ds) * 1000:.0f} ms/image")


def cmd_zoomcache(args) -> None:
    """Run the zoom judge once on injected coco128, pickling every box's crop predictions."""
    import pickle

    import grader.judges.zoom as z

    ds = load_split(args.split)
    _inject(ds, args.seed)
    rec = []
    orig = z._features

    def spy(box, xyxy, conf, probs, label_idx, *a, **k):
        rec.append((box, xyxy, conf, probs, label_idx))
        return orig(box, xyxy, conf, probs, label_idx, *a, **k)

    z._features = spy
    z.run_zoom(ds, "noisy", args.model, context=args.context, min_crop=args.min_crop,
               input_size=args.input_size, num_workers=0)
    truth = ds.values("noisy.detections.injected_error", unwind=True)
    with open(f"/tmp/b_zoomcache_{args.seed}.pkl", "wb") as f:
        pickle.dump({"rec": rec, "truth": truth}, f)
    print("cached", len(rec), len(truth))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["decoder", "zoom", "overlooked", "zoomcache"])
    ap.add_argument("--split", default="dev", choices=["dev", "val"])
    ap.add_argument("--model", default="yolox-nano")
    ap.add_argument("--thr", type=float, default=0.25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--context", type=float, default=2.0)
    ap.add_argument("--min-crop", type=int, default=64)
    ap.add_argument("--input-size", type=int, default=256)
    ap.add_argument("--conf", type=float, default=0.25)
    ap.add_argument("--match-iou", type=float, default=0.3)
    ap.add_argument("--slice", type=int, default=-1, help="-1: auto (the default), 0: none")
    ap.add_argument("--ov-conf", type=float, default=0.1)
    ap.add_argument("--gt-iou", type=float, default=0.3)
    ap.add_argument("--slice-weight", type=float, default=1.0)
    args = ap.parse_args()
    try:
        globals()[f"cmd_{args.cmd}"](args)
    finally:
        _SRV.stop()


if __name__ == "__main__":
    main()
