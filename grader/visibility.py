"""What the evidence cannot see: size-aware abstention for tiny boxes.

On unchanged coco128 labels, the boxes the judges put first are often tiny (a 3x4 px person, a
5x3 px ball): a detector has nothing to say about them, so every judge scores them as
unsupported, and a reviewer cannot verify them either. Pulling a tiny box's suspicion towards
the column's median (rather than dropping it) keeps it rankable but out of the top:

    from grader.visibility import label_pixel_areas, size_reliability, shrink_unreliable

    area = label_pixel_areas(ds, "ground_truth", label_ids)      # px^2, NaN if size unknown
    s = shrink_unreliable(ensemble_any, size_reliability(area))

Pure numpy (no App machinery); ``bench/real_errors.py`` prints its effect on real errors.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

#: Boxes at or above this area (px^2) are fully trusted: COCO's "small" object limit (32^2).
FULL_AREA = 32.0 ** 2
#: Boxes at or below this area (px^2) get no weight: about what a reviewer can still verify.
FLOOR_AREA = 8.0 ** 2


def pixel_areas(boxes: np.ndarray, widths: Sequence[float | None],
                heights: Sequence[float | None]) -> np.ndarray:
    """Area in px^2 of relative xywh ``boxes`` (N, 4) in images of the given sizes (NaN where
    the size is unknown)."""
    b = np.asarray(boxes, dtype=float).reshape(-1, 4)
    w = np.array([np.nan if v is None else float(v) for v in widths], dtype=float)
    h = np.array([np.nan if v is None else float(v) for v in heights], dtype=float)
    return b[:, 2] * w * b[:, 3] * h


def size_reliability(area_px: np.ndarray, full: float = FULL_AREA,
                     floor: float = FLOOR_AREA) -> np.ndarray:
    """Weight in [0, 1] per box: 0 at or below ``floor`` px^2, 1 at or above ``full``, linear in
    log area between; NaN areas (size unknown) get 1 (no evidence to abstain on)."""
    if not 0 < floor < full:
        raise ValueError("need 0 < floor < full")
    a = np.asarray(area_px, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = (np.log(np.maximum(a, 1e-9)) - np.log(floor)) / (np.log(full) - np.log(floor))
    return np.where(np.isfinite(a), np.clip(r, 0.0, 1.0), 1.0)


def shrink_unreliable(scores: np.ndarray, reliability: np.ndarray,
                      center: float | None = None) -> np.ndarray:
    """``r s + (1 - r) c``: each score pulled towards ``center`` (default: the median of the
    finite scores) by its reliability ``r``; NaN scores stay NaN."""
    s = np.asarray(scores, dtype=float)
    r = np.asarray(reliability, dtype=float)
    if s.shape != r.shape:
        raise ValueError(f"scores {s.shape} and reliability {r.shape} differ in shape")
    ok = np.isfinite(s)
    c = float(np.median(s[ok])) if center is None and ok.any() else (center or 0.0)
    return np.where(ok, r * s + (1.0 - r) * c, np.nan)


def label_pixel_areas(collection, gt_field: str,
                      label_ids: Sequence[str] | None = None) -> np.ndarray:
    """Pixel area of every detection of ``gt_field`` (in the field's order, or in the order of
    ``label_ids``); needs ``metadata`` (``compute_metadata()``), NaN where it is missing."""
    from .fields import read_detections

    tab = read_detections(collection, gt_field)
    ids, areas = [], []
    for i, row in enumerate(tab.ids):
        if not row:
            continue
        b = [[np.nan] * 4 if x is None else x for x in tab.boxes[i]]
        areas.append(pixel_areas(np.asarray(b, dtype=float), [tab.widths[i]] * len(row),
                                 [tab.heights[i]] * len(row)))
        ids += list(row)
    flat = np.concatenate(areas) if areas else np.zeros(0)
    if label_ids is None:
        return flat
    pos = {lid: k for k, lid in enumerate(ids)}
    return np.array([flat[pos[l]] if l in pos else np.nan for l in label_ids], dtype=float)
