"""Helper B's dev bench: detector decoding check, zoom judge AUROC/time, overlooked recall.

    .venv/bin/python bench/zoom_dev.py decoder [--split val|dev] [--model yolox-nano]
    .venv/bin/python bench/zoom_dev.py zoom [--seed 0]          # coco128 (dev) only
    .venv/bin/python bench/zoom_dev.py overlooked [--seed 0]    # coco128 (dev) only

Starts its own mongod (tests/mongod_helper.py); never touches FiftyOne's default database.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
os.environ.setdefault("FIFTYONE_SHOW_PROGRESS_BARS", "false")
os.environ["FIFTYONE_DATABASE_VALIDATION"] = "false"

from mongod_helper import MongodServer  # noqa: E402

_SRV = MongodServer(Path(tempfile.mkdtemp(prefix="lg-b-mongo-"))).start()
os.environ["FIFTYONE_DATABASE_URI"] = _SRV.uri

import numpy as np  # noqa: E402

from grader import io  # noqa: E402

DATA = Path(os.environ.get("LABEL_GRADER_DATA", REPO.parent / "shared" / "data"))


def load_split(split: str):
    if split == "dev":
        root = DATA / "coco128"
        return io.load_coco(str(root / "images"), str(root / "labels.json"),
                            name="b-coco128", overwrite=True)
    root = DATA / "coco128-val"
    return io.load_yolo(str(root / "images"), str(root / "labels"), str(root / "classes.yaml"),
                        name="b-coco128-val", overwrite=True)


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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["decoder", "zoom", "overlooked"])
    ap.add_argument("--split", default="dev", choices=["dev", "val"])
    ap.add_argument("--model", default="yolox-nano")
    ap.add_argument("--thr", type=float, default=0.25)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    try:
        globals()[f"cmd_{args.cmd}"](args)
    finally:
        _SRV.stop()


if __name__ == "__main__":
    main()
