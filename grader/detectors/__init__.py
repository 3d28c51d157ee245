"""Detectors: the shipped cv2.dnn COCO models, Ultralytics ONNX exports and FiftyOne models.

``run_detector(collection, model=...)`` writes predictions with ``confidence`` and the full
per-class ``probs`` vector; ``load_detector(model)`` returns an :class:`ArrayDetector` that the
zoom judge and sliced inference run on image arrays.
"""
from .base import ArrayDetector, Boxes, letterbox, postprocess, read_names
from .runner import DEFAULT_DETECTOR, SHIPPED, load_detector, predict_boxes, run_detector

__all__ = ["ArrayDetector", "Boxes", "DEFAULT_DETECTOR", "SHIPPED", "letterbox", "load_detector",
           "postprocess", "predict_boxes", "read_names", "run_detector"]
