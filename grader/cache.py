"""Where grade() keeps what it trains (box graders, fine-tuned detectors) and the content hash
that keys them, so a cached model is reused only for the exact labels it was trained on."""
from __future__ import annotations

import hashlib
import json
import os


def cache_root() -> str:
    """``$LABEL_GRADER_CACHE`` or, by default, ``fo.config.model_zoo_dir``/label-grader."""
    root = os.environ.get("LABEL_GRADER_CACHE")
    if not root:
        import fiftyone as fo

        root = os.path.join(fo.config.model_zoo_dir, "label-grader")
    return os.path.expanduser(root)


def boxgrader_cache_root() -> str:
    """Where grade() keeps the box graders it trains (``<cache_root>/boxgrader``)."""
    return os.path.join(cache_root(), "boxgrader")


def detector_cache_root() -> str:
    """Where grade() keeps cross-fitted detectors (``<cache_root>/detector``)."""
    return os.path.join(cache_root(), "detector")


def label_content_hash(collection, gt_field: str) -> tuple[str, int, int]:
    """(hash, boxes, images with boxes) of ``gt_field``'s content: sample ids and file paths, and
    each detection's id, label and box, read with one ``values()`` call (no per-sample loop)."""
    p = f"{gt_field}.detections"
    sids, paths, ids, labels, boxes = collection.values(
        ["id", "filepath", f"{p}.id", f"{p}.label", f"{p}.bounding_box"])
    blob = json.dumps([sids, paths, ids, labels, boxes], default=str, separators=(",", ":"))
    n_boxes = sum(len(x) for x in ids if x)
    n_images = sum(1 for x in ids if x)
    return hashlib.sha1(blob.encode()).hexdigest()[:16], n_boxes, n_images
