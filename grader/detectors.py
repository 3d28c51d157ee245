"""Run the pretrained COCO detectors shipped as data (OpenCV ``cv2.dnn``) to get predictions.

Each predicted detection carries ``confidence`` and ``probs``: the per-class scores
(objectness x class probability, YOLO style) over the detector's class list, which is
what cleanlab's object-detection scorer wants.
"""
from __future__ import annotations

import os
from typing import Callable

import cv2
import fiftyone as fo
import numpy as np

from . import fields as lgf
from .images import ImageReadError, load_rgb
from .report import RunReport

# coco.names differs from COCO's category names in one place.
_NAME_FIXES = {"tvmonitor": "tv", "motorbike": "motorcycle", "aeroplane": "airplane",
               "sofa": "couch", "diningtable": "dining table", "pottedplant": "potted plant"}


def _read_names(path: str) -> list[str]:
    with open(path) as f:
        return [_NAME_FIXES.get(n.strip(), n.strip()) for n in f if n.strip()]


class YoloV3Tiny:
    """YOLOv3-tiny (Darknet cfg + weights) through ``cv2.dnn``."""

    def __init__(self, model_dir: str, input_size: int = 416):
        cfg = os.path.join(model_dir, "yolov3-tiny.cfg")
        weights = os.path.join(model_dir, "yolov3-tiny.weights")
        for p in (cfg, weights):
            if not os.path.isfile(p):
                raise FileNotFoundError(f"YOLOv3-tiny file missing: {p}")
        self.net = cv2.dnn.readNetFromDarknet(cfg, weights)
        self.classes = _read_names(os.path.join(model_dir, "coco.names"))
        self.size = input_size
        self.out_names = self.net.getUnconnectedOutLayersNames()

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """Return rows ``[cx, cy, w, h, p_0..p_K-1]`` in relative coordinates."""
        blob = cv2.dnn.blobFromImage(rgb, 1 / 255.0, (self.size, self.size), swapRB=False, crop=False)
        self.net.setInput(blob)
        outs = np.concatenate(self.net.forward(self.out_names), axis=0)
        # OpenCV's region layer already multiplies the class scores by objectness.
        return np.concatenate([outs[:, :4], outs[:, 5:]], axis=1)


class YoloFastestV2:
    """Yolo-FastestV2 (ONNX, 352x352) through ``cv2.dnn``; decodes its raw head.

    The head has one row per grid cell (22x22 at stride 16, then 11x11 at stride 32) and 95
    columns: 3 anchors x 4 box terms, 3 objectness scores, 80 class scores (shared by the
    anchors), all already through a sigmoid. Decoding follows the model's reference code.
    """

    STRIDES = (16, 32)
    ANCHORS = ((12.64, 19.39, 37.88, 51.48, 55.71, 138.31),
               (126.91, 78.23, 131.57, 214.55, 279.92, 258.87))

    def __init__(self, model_dir: str, input_size: int = 352):
        onnx = os.path.join(model_dir, "model.onnx")
        if not os.path.isfile(onnx):
            raise FileNotFoundError(f"Yolo-FastestV2 file missing: {onnx}")
        self.net = cv2.dnn.readNetFromONNX(onnx)
        self.classes = _read_names(os.path.join(model_dir, "coco.names"))
        self.size = input_size
        rows = []  # (grid x, grid y, stride, anchor w, anchor h) for every (cell, anchor)
        for stride, anchors in zip(self.STRIDES, self.ANCHORS):
            n = input_size // stride
            ys, xs = np.mgrid[0:n, 0:n]
            rows.append((xs.ravel(), ys.ravel(), stride, np.asarray(anchors).reshape(3, 2)))
        self._grid = rows

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """Return rows ``[cx, cy, w, h, p_0..p_K-1]`` in relative coordinates."""
        # The reference code feeds OpenCV's BGR image unswapped: give it BGR.
        blob = cv2.dnn.blobFromImage(rgb, 1 / 255.0, (self.size, self.size), swapRB=True)
        self.net.setInput(blob)
        out = self.net.forward()
        out = out.reshape(-1, out.shape[-1])
        gx = np.concatenate([g[0] for g in self._grid])
        gy = np.concatenate([g[1] for g in self._grid])
        stride = np.concatenate([np.full(len(g[0]), g[2], dtype=np.float64) for g in self._grid])
        anchors = np.concatenate([np.repeat(g[3][None], len(g[0]), 0) for g in self._grid])  # (R,3,2)
        cls = out[:, 15:]
        res = []
        for q in range(3):
            box = out[:, 4 * q:4 * q + 4]
            cx = (box[:, 0] * 2 - 0.5 + gx) * stride / self.size
            cy = (box[:, 1] * 2 - 0.5 + gy) * stride / self.size
            w = (box[:, 2] * 2) ** 2 * anchors[:, q, 0] / self.size
            h = (box[:, 3] * 2) ** 2 * anchors[:, q, 1] / self.size
            probs = out[:, 12 + q:13 + q] * cls
            res.append(np.concatenate([np.stack([cx, cy, w, h], 1), probs], 1))
        return np.concatenate(res, 0)


def load_detector(model: str = "yolov3-tiny", detectors_dir: str | None = None):
    """Load one of the shipped detectors by name."""
    if detectors_dir is None:
        detectors_dir = os.environ.get("LABEL_GRADER_DETECTORS", os.path.join(
            os.path.dirname(__file__), "..", "..", "shared", "data", "detectors"))
    if model == "yolov3-tiny":
        return YoloV3Tiny(os.path.join(detectors_dir, "yolov3-tiny"))
    if model == "yolo-fastestv2":
        return YoloFastestV2(os.path.join(detectors_dir, "yolo-fastestv2"))
    raise ValueError(f"unknown detector '{model}'; available: yolov3-tiny, yolo-fastestv2")


def run_detector(collection, model: str = "yolov3-tiny", label_field: str = "predictions",
                 detectors_dir: str | None = None, conf_threshold: float = 0.05,
                 nms_iou: float = 0.45, classes: list[str] | None = None,
                 progress: Callable[[int, int], None] | None = None) -> RunReport:
    """Predict boxes on every sample and write ``label_field`` in one bulk ``set_values``.

    ``conf_threshold`` is low on purpose: cleanlab wants the model's uncertain boxes too.
    Boxes of classes outside ``classes`` (default: the dataset's class list) are dropped.
    """
    det = load_detector(model, detectors_dir)
    keep = set(classes or collection._dataset.default_classes or det.classes)
    report = RunReport(judge=f"detector:{model}")
    ids, paths = collection.values(["id", "filepath"])
    report.samples_seen = len(ids)
    out: dict[str, fo.Detections] = {}
    for n, (sid, path) in enumerate(zip(ids, paths)):
        try:
            rgb = load_rgb(path)
        except ImageReadError:
            report.skip("unreadable_image")
            continue
        rows = det(rgb)
        probs = rows[:, 4:]
        cls = probs.argmax(1)
        conf = probs[np.arange(len(rows)), cls]
        m = conf >= conf_threshold
        rows, probs, cls, conf = rows[m], probs[m], cls[m], conf[m]
        xywh = np.stack([rows[:, 0] - rows[:, 2] / 2, rows[:, 1] - rows[:, 3] / 2,
                         rows[:, 2], rows[:, 3]], 1)
        dets = []
        for c in np.unique(cls):
            idx = np.nonzero(cls == c)[0]
            kept = cv2.dnn.NMSBoxes(xywh[idx].tolist(), conf[idx].tolist(), conf_threshold, nms_iou)
            for t in np.asarray(kept).reshape(-1):
                r = idx[t]
                name = det.classes[c]
                if name not in keep:
                    continue
                x, y, w, h = np.clip(xywh[r], 0, 1).tolist()
                w, h = min(w, 1 - x), min(h, 1 - y)
                if w <= 0 or h <= 0:
                    continue
                dets.append(fo.Detection(label=name, bounding_box=[x, y, w, h],
                                         confidence=float(conf[r]),
                                         probs=[float(p) for p in probs[r]]))
        out[sid] = fo.Detections(detections=dets)
        report.samples_scored += 1
        report.labels_scored += len(dets)
        if progress:
            progress(n + 1, len(ids))
    lgf.write_sample_field(collection, label_field, out)
    report.fields = [label_field]
    if det.classes != list(collection._dataset.default_classes or det.classes):
        report.info["note"] = "detector classes differ from the dataset's class list"
    return report
