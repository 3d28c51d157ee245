"""Any FiftyOne image model (zoo models, ``fiftyone.core.models.Model``) as an array detector.

FiftyOne detection models return ``Detections`` with one ``confidence`` per box, so rows carry
the confidence at the predicted class and 0 elsewhere (``has_probs`` False).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .base import ArrayDetector


class FiftyOneModelDetector(ArrayDetector):
    """Wrap ``model`` (``predict_all`` on RGB arrays) for the zoom judge and sliced inference."""

    has_probs = False

    def __init__(self, model, classes: Sequence[str] | None = None):
        self.model = model
        names = classes or getattr(model, "classes", None) or []
        self.classes = list(names)
        self.name = type(model).__name__

    def _index(self, label: str) -> int:
        try:
            return self.classes.index(label)
        except ValueError:
            self.classes.append(label)
            return len(self.classes) - 1

    def predict(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        preds = self.model.predict_all(list(images))
        res = []
        for im, dets in zip(images, preds):
            h, w = im.shape[:2]
            items = [] if dets is None else dets.detections
            rows = []
            for d in items:
                x, y, bw, bh = d.bounding_box
                rows.append((x * w, y * h, (x + bw) * w, (y + bh) * h, self._index(d.label),
                             float(d.confidence if d.confidence is not None else 1.0)))
            out = np.zeros((len(rows), 4 + len(self.classes)))
            for i, (x1, y1, x2, y2, c, conf) in enumerate(rows):
                out[i, :4] = (x1, y1, x2, y2)
                out[i, 4 + c] = conf
            res.append(out)
        k = len(self.classes)  # classes may have grown: pad earlier rows
        return [np.pad(r, ((0, 0), (0, 4 + k - r.shape[1]))) for r in res]
