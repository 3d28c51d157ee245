"""The one interface every detector runs through, and the shared post-processing.

An :class:`ArrayDetector` maps a batch of RGB arrays to raw rows ``[x1, y1, x2, y2, p_0..p_K-1]``
per image (absolute pixels of that image, per-class scores). Everything downstream (the
runner, the zoom judge, sliced inference) needs only this, so a shipped cv2.dnn model, an
Ultralytics ONNX export and a FiftyOne model are interchangeable.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from ..classes import COCO_SPELLINGS


def read_names(path: str) -> list[str]:
    """Class names, one per line (Darknet ``coco.names`` style), mapped to COCO's spelling
    (coco.names says VOC's ``tvmonitor`` and the like: :data:`grader.classes.COCO_SPELLINGS`)."""
    with open(path) as f:
        return [COCO_SPELLINGS.get(n.strip(), n.strip()) for n in f if n.strip()]


class ArrayDetector:
    """Base class: ``predict(images) -> [rows (N, 4 + K)]`` with xyxy in image pixels.

    ``has_probs`` is False for detectors that give only one confidence per box (their rows
    carry the confidence at the predicted class and 0 elsewhere).
    """

    name: str = "detector"
    classes: list[str]
    has_probs: bool = True
    batch_size: int = 8

    def predict(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:  # pragma: no cover
        raise NotImplementedError

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """Rows for one image."""
        return self.predict([rgb])[0]


@dataclass
class Boxes:
    """Post-processed predictions of one image: xyxy pixels, scores, class index, per-class probs."""

    xyxy: np.ndarray    # (N, 4) float
    conf: np.ndarray    # (N,)
    cls: np.ndarray     # (N,) int
    probs: np.ndarray   # (N, K)

    def __len__(self) -> int:
        return len(self.conf)

    @staticmethod
    def empty(k: int) -> "Boxes":
        return Boxes(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int), np.zeros((0, k)))

    def take(self, idx) -> "Boxes":
        return Boxes(self.xyxy[idx], self.conf[idx], self.cls[idx], self.probs[idx])


def postprocess(rows: np.ndarray, k: int, conf_threshold: float, nms_iou: float,
                image_hw: tuple[int, int] | None = None) -> Boxes:
    """Score threshold, class-wise NMS (``cv2.dnn.NMSBoxesBatched``), clip to the image.

    The score of a box is its best class's score; ``probs`` keeps the whole vector.
    """
    if len(rows) == 0:
        return Boxes.empty(k)
    probs = rows[:, 4:4 + k]
    cls = probs.argmax(1)
    conf = probs[np.arange(len(rows)), cls]
    m = conf >= conf_threshold
    if not m.any():
        return Boxes.empty(k)
    xyxy, probs, cls, conf = rows[m, :4].astype(np.float64), probs[m], cls[m], conf[m]
    xywh = np.stack([xyxy[:, 0], xyxy[:, 1], xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]], 1)
    keep = np.asarray(cv2.dnn.NMSBoxesBatched(xywh.tolist(), conf.tolist(), cls.tolist(),
                                              float(conf_threshold), float(nms_iou)),
                      dtype=int).reshape(-1)
    keep = keep[np.argsort(-conf[keep], kind="stable")]
    out = Boxes(xyxy[keep], conf[keep].astype(np.float64), cls[keep], probs[keep].astype(np.float64))
    if image_hw is not None:
        h, w = image_hw
        out.xyxy[:, [0, 2]] = out.xyxy[:, [0, 2]].clip(0, w)
        out.xyxy[:, [1, 3]] = out.xyxy[:, [1, 3]].clip(0, h)
        ok = (out.xyxy[:, 2] > out.xyxy[:, 0]) & (out.xyxy[:, 3] > out.xyxy[:, 1])
        out = out.take(np.nonzero(ok)[0])
    return out


def letterbox(images: Sequence[np.ndarray], size: int | tuple[int, int], *, center: bool = False,
              fill: int = 114, bgr: bool = False,
              dtype: type = np.float32) -> tuple[np.ndarray, list[tuple[float, float, float]]]:
    """Resize each image by ``r = min(H/h, W/w)`` onto a ``fill`` canvas; return an NCHW 0-255
    blob (``dtype``: float32, or uint8 for a 4x smaller copy to a GPU) and per image
    ``(r, dx, dy)`` (pixel offsets of the placed image).

    YOLOX places the image top-left; Ultralytics centres it (``center=True``).
    """
    th, tw = (size, size) if isinstance(size, int) else size
    blob = np.full((len(images), th, tw, 3), fill, dtype=np.uint8)
    meta = []
    for i, im in enumerate(images):
        h, w = im.shape[:2]
        r = min(th / h, tw / w)
        nh, nw = max(int(round(h * r)), 1), max(int(round(w * r)), 1)
        dy, dx = ((th - nh) // 2, (tw - nw) // 2) if center else (0, 0)
        resized = cv2.resize(im, (nw, nh), interpolation=cv2.INTER_LINEAR)
        blob[i, dy:dy + nh, dx:dx + nw] = resized[..., ::-1] if bgr else resized
        meta.append((r, float(dx), float(dy)))
    return np.ascontiguousarray(blob.transpose(0, 3, 1, 2), dtype=dtype), meta
