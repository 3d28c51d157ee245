"""Detectors: the shipped cv2.dnn COCO models, Ultralytics ONNX exports and FiftyOne models.

``run_detector(collection, model=...)`` writes predictions with ``confidence`` and the full
per-class ``probs`` vector; ``load_detector(model)`` returns an :class:`ArrayDetector` that the
zoom judge and sliced inference run on image arrays. The runner (which needs FiftyOne) loads
on first use, so the array-level modules (``base``, ``cvdnn``, ``ort``, ``torch_yolox``,
``finetune``'s training) import without it, e.g. on a GPU worker with torch alone.
"""
from .base import ArrayDetector, Boxes, letterbox, postprocess, read_names

_RUNNER = ("DEFAULT_DETECTOR", "SHIPPED", "load_detector", "predict_boxes", "run_detector")

__all__ = ["ArrayDetector", "Boxes", "letterbox", "postprocess", "read_names", *_RUNNER]


def __getattr__(name: str):
    if name in _RUNNER:
        from . import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'grader.detectors' has no attribute {name!r}")
