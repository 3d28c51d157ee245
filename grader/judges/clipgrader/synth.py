"""Training/evaluation data synthesis from ground truth (the paper's protocol).

good = the GT box; bad = a random perturbation with IoU to that GT box in [0.5, 0.8];
background = a random box with IoU <= 0.2 to every GT box of the image. Objects smaller than
``min_size`` px (either side) are skipped. Everything is driven by one seed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ...boxes import BOX_DEGENERATE, iou_matrix, rel_xywh_to_abs_xyxy, sanitize_rel_boxes
from ...fields import read_detections
from ...images import ensure_metadata
from ...report import RunReport
from .prompts import BACKGROUND, BAD, GOOD


def _iou1(a: np.ndarray, b: np.ndarray) -> float:
    return float(iou_matrix(a[None], b[None])[0, 0])


def perturb_box(gt_xyxy: Sequence[float], image_wh: tuple[float, float], rng: np.random.Generator,
                iou_range: tuple[float, float] = (0.5, 0.8), max_tries: int = 50) -> np.ndarray:
    """A random "bad" box: shifted/rescaled ``gt_xyxy`` with IoU to it inside ``iou_range``.

    Rejection-samples shifts and per-side scalings inside the image; if none lands in range,
    falls back to shrinking the box about its centre by ``sqrt(target IoU)`` (always inside
    the image, IoU = target exactly up to float error).
    """
    lo, hi = iou_range
    gt = np.asarray(gt_xyxy, dtype=np.float64)
    W, H = image_wh
    w, h = gt[2] - gt[0], gt[3] - gt[1]
    for _ in range(max_tries):
        sw, sh = np.exp(rng.uniform(-0.5, 0.5, size=2))
        dx, dy = rng.uniform(-0.3, 0.3, size=2) * (w, h)
        cx, cy = (gt[0] + gt[2]) / 2 + dx, (gt[1] + gt[3]) / 2 + dy
        nw, nh = w * sw, h * sh
        cand = np.array([cx - nw / 2, cy - nh / 2, cx + nw / 2, cy + nh / 2])
        cand = np.clip(cand, 0, [W, H, W, H])
        if cand[2] - cand[0] < 1 or cand[3] - cand[1] < 1:
            continue
        if lo <= _iou1(cand, gt) <= hi:
            return cand
    target = rng.uniform(lo + 0.02 * (hi - lo), hi - 0.02 * (hi - lo))
    s = np.sqrt(target) / 2
    cx, cy = (gt[0] + gt[2]) / 2, (gt[1] + gt[3]) / 2
    return np.array([cx - s * w, cy - s * h, cx + s * w, cy + s * h])


def background_box(gt_boxes_xyxy, image_wh: tuple[float, float], size_wh: tuple[float, float],
                   rng: np.random.Generator, max_iou: float = 0.2, min_size: float = 1.0,
                   max_tries: int = 50) -> np.ndarray | None:
    """A random box about ``size_wh`` (x 0.5-1.5) with IoU <= ``max_iou`` to every GT box, or None."""
    W, H = image_wh
    gts = np.asarray(gt_boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    for _ in range(max_tries):
        bw = min(max(size_wh[0] * rng.uniform(0.5, 1.5), min_size), W)
        bh = min(max(size_wh[1] * rng.uniform(0.5, 1.5), min_size), H)
        x1, y1 = rng.uniform(0, W - bw), rng.uniform(0, H - bh)
        cand = np.array([x1, y1, x1 + bw, y1 + bh])
        if len(gts) == 0 or iou_matrix(cand[None], gts).max() <= max_iou:
            return cand
    return None


@dataclass
class SynthItem:
    """One synthetic example: a box on an image with its class and quality target."""

    sample_id: str
    filepath: str
    label: str
    quality: str          # "good" | "bad" | "background"
    box_xyxy: tuple[float, float, float, float]
    source_label_id: str  # the GT detection it was made from


def synthesize(collection, gt_field: str = "ground_truth", *, min_size: float = 20.0,
               bad_iou: tuple[float, float] = (0.5, 0.8), background_max_iou: float = 0.2,
               per_object: tuple[int, int, int] = (1, 1, 1), good_iou: float | None = None,
               seed: int = 0,
               classes: Sequence[str] | None = None,
               report: RunReport | None = None) -> list[SynthItem]:
    """Make good/bad/background examples from the GT of ``collection``, reproducibly from ``seed``.

    ``per_object`` = how many (good, bad, background) examples each eligible GT object yields.
    The first good example is the GT box itself; with ``good_iou`` set, the further ones are
    the GT box nudged to an IoU in [``good_iou``, 0.98] with it (a careful annotator's
    variation), otherwise copies of the GT box.
    Background boxes are sized like the object they come from and carry its class (as if a
    spurious label of that class). Skips counted in ``report``: ``small_object``,
    ``degenerate_box``, ``unknown_class`` (when ``classes`` is given), ``missing_metadata``,
    ``no_background_found``.
    """
    ensure_metadata(collection, report)
    table = read_detections(collection, gt_field)
    allowed = set(classes) if classes else None
    items: list[SynthItem] = []
    n_good, n_bad, n_bg = per_object
    for i, sid in enumerate(table.sample_ids):
        W, H = table.widths[i], table.heights[i]
        if not W or not H or not table.ids[i]:
            continue
        # Per-sample generator: the examples of one image do not depend on the others.
        rng = np.random.default_rng([seed, i])
        clipped, status = sanitize_rel_boxes(table.boxes[i])
        boxes = rel_xywh_to_abs_xyxy(clipped, W, H)
        valid = [j for j, st in enumerate(status) if st != BOX_DEGENERATE]
        all_gt = boxes[valid]
        for j, (lid, lab) in enumerate(zip(table.ids[i], table.labels[i])):
            if status[j] == BOX_DEGENERATE:
                _skip(report, "degenerate_box")
                continue
            if lab is None or (allowed is not None and lab not in allowed):
                _skip(report, "unknown_class")
                continue
            b = boxes[j]
            bw, bh = b[2] - b[0], b[3] - b[1]
            if min(bw, bh) < min_size:
                _skip(report, "small_object")
                continue
            mk = lambda q, box: SynthItem(sid, table.filepaths[i], lab, q,
                                          tuple(float(v) for v in box), lid)
            items += [mk(GOOD, b) for _ in range(min(n_good, 1) if good_iou else n_good)]
            if good_iou:
                items += [mk(GOOD, perturb_box(b, (W, H), rng, (good_iou, 0.98)))
                          for _ in range(n_good - 1)]
            items += [mk(BAD, perturb_box(b, (W, H), rng, bad_iou)) for _ in range(n_bad)]
            for _ in range(n_bg):
                bg = background_box(all_gt, (W, H), (bw, bh), rng, background_max_iou,
                                    min_size=min_size)
                if bg is None:
                    _skip(report, "no_background_found")
                else:
                    items.append(mk(BACKGROUND, bg))
    return items


def _skip(report: RunReport | None, reason: str) -> None:
    if report is not None:
        report.skip(reason)


def split_by_image(items: Sequence[SynthItem], val_fraction: float, seed: int = 0,
                   ) -> tuple[list[SynthItem], list[SynthItem]]:
    """Split items into train/val so that no image contributes to both."""
    sids = sorted({it.sample_id for it in items})
    rng = np.random.default_rng(seed)
    rng.shuffle(sids)
    n_val = int(round(len(sids) * val_fraction))
    if val_fraction > 0 and n_val == 0 and len(sids) > 1:
        n_val = 1
    val_ids = set(sids[:n_val])
    return ([it for it in items if it.sample_id not in val_ids],
            [it for it in items if it.sample_id in val_ids])
