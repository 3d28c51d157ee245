"""The shipped cv2.dnn detectors decode to sensible COCO predictions with per-class probabilities."""
from __future__ import annotations

import numpy as np
import pytest

from grader import detectors

from conftest import shared_path


@pytest.mark.parametrize("model,thr,min_tp", [("yolov3-tiny", 0.25, 180), ("yolo-fastestv2", 0.2, 230)])
def test_detector_predictions_match_ground_truth(coco128, model, thr, min_tp):
    det_dir = shared_path("detectors")
    if det_dir is None:
        pytest.skip("../shared/data/detectors is not present")
    rep = detectors.run_detector(coco128, model=model, label_field="pred",
                                 detectors_dir=str(det_dir), conf_threshold=thr)
    assert rep.samples_scored == 128 and not rep.skipped
    dets = [d for s in coco128.select_fields("pred") for d in s.pred.detections]
    assert dets
    for d in dets[:200]:
        assert len(d.probs) == 80
        assert d.confidence == pytest.approx(max(d.probs)) and d.confidence >= thr
        assert d.label == coco128.default_classes[int(np.argmax(d.probs))]
        x, y, w, h = d.bounding_box
        assert 0 <= x and 0 <= y and w > 0 and h > 0 and x + w <= 1 + 1e-9 and y + h <= 1 + 1e-9
    coco128.evaluate_detections("pred", gt_field="ground_truth", eval_key="ev", iou=0.5)
    tp = sum(coco128.values("ev_tp"))
    # Measured 221 (yolov3-tiny) and 277 (yolo-fastestv2) true positives of ~430/534 boxes: a
    # decoding mistake (wrong anchors, colour order, doubled objectness) drops far below these.
    assert tp >= min_tp, tp


def test_unknown_detector_is_a_clear_error():
    with pytest.raises(ValueError, match="available: yolov3-tiny, yolo-fastestv2"):
        detectors.load_detector("yolov9", "/nonexistent")
