"""Ultralytics-style YOLO ONNX exports (YOLOv8/v11 ``model.export(format="onnx")``) via ``cv2.dnn``.

Output ``(B, 4 + K, N)``: per candidate ``cx, cy, w, h`` in input pixels, then K class scores
(already sigmoid-ed, no objectness). Input: RGB 0-1, letterboxed (centred, 114 grey) to a square.
"""
from __future__ import annotations

import os
from typing import Sequence

import cv2
import numpy as np

from .base import ArrayDetector, letterbox, read_names


class UltralyticsOnnx(ArrayDetector):
    """A YOLO ONNX export with the Ultralytics head layout; ``classes``: names or a names file."""

    def __init__(self, path: str, classes: Sequence[str] | str, input_size: int = 640):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"ONNX model not found: {path}")
        if classes is None:
            raise ValueError("an ONNX detector needs its class names: classes=[...] or a names file")
        self.classes = read_names(classes) if isinstance(classes, str) else list(classes)
        self.net = cv2.dnn.readNetFromONNX(path)
        self.size = int(input_size)
        self.name = os.path.basename(path)

    def _forward(self, blob: np.ndarray) -> np.ndarray:
        self.net.setInput(blob)
        out = self.net.forward()
        k = len(self.classes)
        if out.ndim != 3 or out.shape[1] != 4 + k:
            raise ValueError(f"expected an output of shape (B, 4+K={4 + k}, N), got {out.shape}: "
                             "is this an Ultralytics detection export with these classes?")
        return out

    def predict(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        blob, meta = letterbox(images, self.size, center=True)
        blob /= 255.0
        try:
            out = self._forward(blob)
            if out.shape[0] != len(images):
                raise cv2.error("batch not kept")
        except cv2.error:
            # Most exports have a fixed batch of 1: run the images one by one.
            out = np.concatenate([self._forward(blob[i:i + 1]) for i in range(len(images))])
        res = []
        for o, (r, dx, dy) in zip(out, meta):
            o = o.T  # (N, 4 + K)
            cx, cy, w, h = o[:, 0], o[:, 1], o[:, 2], o[:, 3]
            xyxy = np.stack([(cx - w / 2 - dx) / r, (cy - h / 2 - dy) / r,
                             (cx + w / 2 - dx) / r, (cy + h / 2 - dy) / r], 1)
            res.append(np.concatenate([xyxy, o[:, 4:]], 1))
        return res
