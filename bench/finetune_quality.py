"""How well YOLOX-Nano fine-tuned on a dataset's own classes detects them, per recipe setting.

    .venv/bin/python bench/finetune_quality.py --data raccoon --epochs 5 --lr 1e-4
    python3 bench/finetune_quality.py --data raccoon coco128-custom --epochs 5 10 20 --lr 5e-5 1e-4 2e-4

No database: labels are read from the files (raccoon's VOC XML; coco128's COCO JSON with its
classes merged into :data:`custom_classes.TAXONOMY`, names no detector knows). The images are
split in two halves as grade()'s 2 folds are; a model is fine-tuned on the first half
(``grader.detectors.finetune.train_fold``) and scored on the second: AP at IoU 0.5 over all
classes (pycocotools-free, VOC-style all-point AP per class, averaged), and the share of
labelled boxes some prediction >= 0.25 of the right class covers at IoU 0.5 (recall, what
cleanlab's overlooked / swap evidence needs). The pretrained COCO model is the reference,
class-agnostic (its best class's score stands for every dataset class).
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
DATA = Path(os.environ.get("LABEL_GRADER_DATA", REPO.parent / "shared" / "data"))
DET = Path(os.environ.get("LABEL_GRADER_DETECTORS", DATA / "detectors")) / "yolox-nano"


def coco_custom(size: int):
    """coco128 with classes merged into the custom taxonomy: RGB images, TrainingImages, names."""
    from custom_classes import OTHER, TAXONOMY

    from grader.detectors.base import letterbox
    from grader.detectors.finetune import TrainingImages
    from grader.images import load_rgb

    root = DATA / "coco128"
    js = json.loads((root / "labels.json").read_text())
    cat = {c["id"]: c["name"] for c in js["categories"]}
    to = {c: new for new, olds in TAXONOMY.items() for c in olds}
    names = sorted(set(TAXONOMY) | {OTHER})
    anns: dict[int, list] = {}
    for a in js["annotations"]:
        if not a.get("iscrowd"):
            anns.setdefault(a["image_id"], []).append(a)
    rgbs, ids, blobs, boxes, classes = [], [], [], [], []
    for im in sorted(js["images"], key=lambda x: x["file_name"]):
        rgb = load_rgb(str(root / "images" / im["file_name"]))
        blob, meta = letterbox([rgb], size, bgr=True, dtype=np.uint8)
        a = anns.get(im["id"], [])
        b = np.array([[x, y, x + w, y + h] for x, y, w, h in (t["bbox"] for t in a)],
                     dtype=np.float32).reshape(-1, 4) * meta[0][0]
        c = np.array([names.index(to.get(cat[t["category_id"]], OTHER)) for t in a], dtype=np.int64)
        rgbs.append(rgb)
        ids.append(im["file_name"])
        blobs.append(blob[0])
        boxes.append(b)
        classes.append(c)
    return rgbs, TrainingImages(ids, np.stack(blobs), boxes, classes), names


def load(name: str, size: int):
    if name == "raccoon":
        from finetune_speed import voc_images

        rgbs, data = voc_images(DATA / "raccoon", size)
        return rgbs, data, ["raccoon"]
    return coco_custom(size)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    ua = (a[:, 2:] - a[:, :2]).prod(1)[:, None] + (b[:, 2:] - b[:, :2]).prod(1)[None] - inter
    return inter / np.maximum(ua, 1e-9)


def score(preds, gts, k: int) -> tuple[float, float]:
    """(mean AP50 over classes, recall of labelled boxes at score >= 0.25); ``preds`` per image
    ``(xyxy, conf, cls)``, ``gts`` per image ``(xyxy, cls)``."""
    aps, hit, n_gt = [], 0, 0
    for c in range(k):
        recs, total = [], 0
        for (pb, pc, pk), (gb, gk) in zip(preds, gts):
            g = gb[gk == c]
            total += len(g)
            m = pk == c
            p, s = pb[m], pc[m]
            order = np.argsort(-s)
            used = np.zeros(len(g), bool)
            iou = _iou(p[order], g) if len(g) and len(p) else np.zeros((len(p), len(g)))
            for j, o in enumerate(order):
                tp = False
                if len(g):
                    best = int(np.argmax(np.where(used, -1, iou[j])))
                    if iou[j, best] >= 0.5 and not used[best]:
                        used[best] = tp = True
                recs.append((s[o], tp))
            if len(g) and len(p):
                hit += int(((iou >= 0.5) & (s[order][:, None] >= 0.25)).any(0).sum())
        n_gt += total
        if not total:
            continue
        recs.sort(key=lambda r: -r[0])
        tp = np.cumsum([r[1] for r in recs])
        prec = tp / np.arange(1, len(recs) + 1)
        rec = tp / total
        # all-point interpolated AP
        mprec = np.concatenate([[0], prec, [0]])
        mrec = np.concatenate([[0], rec, [rec[-1] if len(rec) else 0]])
        for i in range(len(mprec) - 2, -1, -1):
            mprec[i] = max(mprec[i], mprec[i + 1])
        aps.append(float(np.sum((mrec[1:] - mrec[:-1]) * mprec[1:])))
    return float(np.mean(aps)) if aps else float("nan"), hit / max(n_gt, 1)


def predictions(det, rgbs, agnostic_k: int | None = None):
    """Post-processed (xyxy, conf, cls) per image; ``agnostic_k``: a COCO model's best class
    score standing for each of k dataset classes (its class index ignored: class 0)."""
    from grader.detectors.base import postprocess

    out = []
    for rows, im in zip(det.predict(rgbs), rgbs):
        if agnostic_k is not None:
            rows = np.concatenate([rows[:, :4], rows[:, 4:].max(1, keepdims=True)], 1)
        b = postprocess(rows, rows.shape[1] - 4, 0.05, 0.45, im.shape[:2])
        out.append((b.xyxy, b.conf, b.cls))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", nargs="+", default=["raccoon", "coco128-custom"])
    ap.add_argument("--epochs", nargs="+", type=int, default=[None])
    ap.add_argument("--lr", nargs="+", type=float, default=[None])
    ap.add_argument("--device", default=None)
    args = ap.parse_args(argv)

    import torch

    from grader.detectors.finetune import FinetuneSettings, TrainingImages, train_fold
    from grader.detectors.torch_yolox import TorchYolox, default_device

    device = args.device or default_device()
    if device == "cpu":
        torch.set_num_threads(1)  # a shared 2-core machine: more threads spin (see tests)
    base = FinetuneSettings(device=device)
    for name in args.data:
        rgbs, data, names = load(name, base.input_size)
        half = len(rgbs) // 2
        train = TrainingImages(data.ids[:half], data.blobs[:half], data.boxes[:half], data.classes[:half])
        r = [min(base.input_size / h, base.input_size / w) for h, w in (im.shape[:2] for im in rgbs)]
        gts = [(data.boxes[i] / r[i], data.classes[i]) for i in range(half, len(rgbs))]
        test = rgbs[half:]
        pre = predictions(TorchYolox(str(DET), device=device), test, agnostic_k=len(names))
        if len(names) == 1:
            ap_, rc = score(pre, gts, 1)
            print(f"{name}: pretrained COCO model, class-agnostic: AP50 {ap_:.3f}  recall@0.25 {rc:.3f}")
        for ep, lr in itertools.product(args.epochs, args.lr):
            st = FinetuneSettings(device=device)
            st.epochs = ep or st.epochs
            st.lr = lr or st.lr
            t0 = time.time()
            losses: list[float] = []
            state = train_fold(train, len(names), st, str(DET), losses=losses)
            secs = time.time() - t0
            det = TorchYolox(str(DET), names, state_dict=state, device=device)
            ap_, rc = score(predictions(det, test), gts, len(names))
            print(f"{name}: fine-tuned on {half} images, epochs {st.epochs} lr {st.lr:g}: AP50 "
                  f"{ap_:.3f}  recall@0.25 {rc:.3f}  ({secs:.0f} s; loss {losses[0]:.2f} -> "
                  f"{losses[-1]:.2f})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
