"""The pretrained COCO detectors shipped as data, run through OpenCV ``cv2.dnn`` in batches.

Each one decodes its raw head to rows ``[x1, y1, x2, y2, p_0..p_K-1]`` in image pixels, with
per-class scores (objectness x class probability, YOLO style): what cleanlab's scorer wants.
"""
from __future__ import annotations

import os
from typing import Sequence

import cv2
import numpy as np

from .base import ArrayDetector, letterbox, read_names


def _require(*paths: str) -> None:
    for p in paths:
        if not os.path.isfile(p):
            raise FileNotFoundError(f"detector file missing: {p}")


def _rel_cxcywh_to_xyxy(rows: np.ndarray, h: int, w: int) -> np.ndarray:
    out = rows.copy()
    out[:, 0] = (rows[:, 0] - rows[:, 2] / 2) * w
    out[:, 1] = (rows[:, 1] - rows[:, 3] / 2) * h
    out[:, 2] = (rows[:, 0] + rows[:, 2] / 2) * w
    out[:, 3] = (rows[:, 1] + rows[:, 3] / 2) * h
    return out


class YoloV3Tiny(ArrayDetector):
    """YOLOv3-tiny (Darknet cfg + weights), 416x416 stretched input."""

    name = "yolov3-tiny"

    def __init__(self, model_dir: str, input_size: int = 416):
        cfg = os.path.join(model_dir, "yolov3-tiny.cfg")
        weights = os.path.join(model_dir, "yolov3-tiny.weights")
        _require(cfg, weights)
        self.net = cv2.dnn.readNetFromDarknet(cfg, weights)
        self.classes = read_names(os.path.join(model_dir, "coco.names"))
        self.size = input_size
        self.out_names = self.net.getUnconnectedOutLayersNames()

    def predict(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        res = []
        for rgb in images:  # the Darknet region layer flattens a batch: one image at a time
            blob = cv2.dnn.blobFromImage(rgb, 1 / 255.0, (self.size, self.size), swapRB=False, crop=False)
            self.net.setInput(blob)
            outs = np.concatenate(self.net.forward(self.out_names), axis=0)
            # OpenCV's region layer already multiplies the class scores by objectness.
            rows = np.concatenate([outs[:, :4], outs[:, 5:]], axis=1)
            res.append(_rel_cxcywh_to_xyxy(rows, *rgb.shape[:2]))
        return res


class YoloFastestV2(ArrayDetector):
    """Yolo-FastestV2 (ONNX, 352x352); decodes its raw head.

    The head has one row per grid cell (22x22 at stride 16, then 11x11 at stride 32) and 95
    columns: 3 anchors x 4 box terms, 3 objectness scores, 80 class scores (shared by the
    anchors), all already through a sigmoid. Decoding follows the model's reference code.
    """

    name = "yolo-fastestv2"
    STRIDES = (16, 32)
    ANCHORS = ((12.64, 19.39, 37.88, 51.48, 55.71, 138.31),
               (126.91, 78.23, 131.57, 214.55, 279.92, 258.87))

    def __init__(self, model_dir: str, input_size: int = 352):
        onnx = os.path.join(model_dir, "model.onnx")
        _require(onnx)
        self.net = cv2.dnn.readNetFromONNX(onnx)
        self.classes = read_names(os.path.join(model_dir, "coco.names"))
        self.size = input_size
        gx, gy, st, an = [], [], [], []
        for stride, anchors in zip(self.STRIDES, self.ANCHORS):
            n = input_size // stride
            ys, xs = np.mgrid[0:n, 0:n]
            gx.append(xs.ravel()), gy.append(ys.ravel())
            st.append(np.full(n * n, stride, dtype=np.float64))
            an.append(np.repeat(np.asarray(anchors).reshape(1, 3, 2), n * n, 0))
        self._gx, self._gy = np.concatenate(gx), np.concatenate(gy)
        self._stride, self._anchors = np.concatenate(st), np.concatenate(an)

    def _decode(self, out: np.ndarray) -> np.ndarray:
        cls = out[:, 15:]
        res = []
        for q in range(3):
            box = out[:, 4 * q:4 * q + 4]
            cx = (box[:, 0] * 2 - 0.5 + self._gx) * self._stride / self.size
            cy = (box[:, 1] * 2 - 0.5 + self._gy) * self._stride / self.size
            w = (box[:, 2] * 2) ** 2 * self._anchors[:, q, 0] / self.size
            h = (box[:, 3] * 2) ** 2 * self._anchors[:, q, 1] / self.size
            probs = out[:, 12 + q:13 + q] * cls
            res.append(np.concatenate([np.stack([cx, cy, w, h], 1), probs], 1))
        return np.concatenate(res, 0)

    def predict(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        # The reference code feeds OpenCV's BGR image unswapped: give it BGR.
        blob = cv2.dnn.blobFromImages(list(images), 1 / 255.0, (self.size, self.size), swapRB=True)
        res = []
        for i, im in enumerate(images):  # the export's reshapes assume a batch of 1
            self.net.setInput(blob[i:i + 1])
            out = self.net.forward()
            res.append(_rel_cxcywh_to_xyxy(self._decode(out.reshape(-1, out.shape[-1])), *im.shape[:2]))
        return res


def yolox_grid(size: int, strides: Sequence[int] = (8, 16, 32)) -> tuple[np.ndarray, np.ndarray]:
    """A YOLOX head's anchor points at input ``size``: the cell of each row ``(A, 2)`` (row-major
    grids, stride by stride) and its stride ``(A, 1)``."""
    grids, steps = [], []
    for s in strides:
        n = size // s
        ys, xs = np.mgrid[0:n, 0:n]
        grids.append(np.stack([xs.ravel(), ys.ravel()], 1))
        steps.append(np.full((n * n, 1), s, dtype=np.float32))
    return np.concatenate(grids).astype(np.float32), np.concatenate(steps)


class YoloXNano(ArrayDetector):
    """YOLOX-Nano (ONNX): BGR 0-255 input, top-left letterbox on 114 grey.

    The raw head has one row per anchor point of strides 8/16/32 (row-major grids):
    ``xy = (out[:2] + grid) * stride``, ``wh = exp(out[2:4]) * stride``, then objectness and 80
    class scores already through a sigmoid; per-class score = obj * cls. The network is fully
    convolutional, so ``input_size`` (a multiple of 32) may be changed, e.g. smaller for crops.

    ``backend``: ``"onnxruntime"`` (a whole batch per forward, CUDA when onnxruntime has it),
    ``"cv2"`` (``cv2.dnn``, one image per forward, CPU only) or ``"auto"`` (onnxruntime when
    installed). Both give the same rows within 1e-3 (tests/test_detectors.py);
    ``bench/detector_runtime.py`` measures them.
    """

    name = "yolox-nano"
    STRIDES = (8, 16, 32)

    def __init__(self, model_dir: str, input_size: int = 416, backend: str = "auto"):
        from . import ort

        onnx = os.path.join(model_dir, "model.onnx")
        _require(onnx)
        if backend not in ("auto", "onnxruntime", "cv2"):
            raise ValueError(f"backend must be 'auto', 'onnxruntime' or 'cv2', got {backend!r}")
        if backend == "auto":
            backend = "onnxruntime" if ort.available() else "cv2"
        if backend == "onnxruntime" and not ort.available():
            raise ImportError("backend='onnxruntime' needs the onnxruntime package")
        self.backend = backend
        self.model_path = os.path.abspath(onnx)
        self.net = cv2.dnn.readNetFromONNX(onnx) if backend == "cv2" else None
        self.ort = ort.OrtYolox(onnx) if backend == "onnxruntime" else None
        self.classes = read_names(os.path.join(model_dir, "coco.names"))
        self.set_input_size(input_size)

    def set_input_size(self, input_size: int) -> None:
        if input_size % 32:
            raise ValueError(f"YOLOX input size must be a multiple of 32, got {input_size}")
        self.size = input_size
        self._grid, self._stride = yolox_grid(input_size, self.STRIDES)

    def _forward(self, blob: np.ndarray) -> np.ndarray:
        """Raw head rows ``(N, A, 85)`` for an NCHW BGR blob."""
        if self.ort is not None:
            return self.ort.run_batched(blob)[0]
        # One image per forward: this export's head reshapes with a fixed batch of 1, so
        # cv2.dnn returns scrambled rows for a batched blob (checked against single runs).
        outs = []
        for i in range(len(blob)):
            self.net.setInput(blob[i:i + 1])
            outs.append(self.net.forward().reshape(-1, 5 + len(self.classes)))
        return np.stack(outs)

    def predict(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        if not len(images):
            return []
        blob, meta = letterbox(images, self.size, bgr=True)
        out = self._forward(blob)
        res = []
        for o, (r, _, _) in zip(out, meta):
            xy = (o[:, :2] + self._grid) * self._stride
            wh = np.exp(o[:, 2:4]) * self._stride
            xyxy = np.concatenate([xy - wh / 2, xy + wh / 2], 1) / r
            res.append(np.concatenate([xyxy, o[:, 4:5] * o[:, 5:]], 1))
        return res
