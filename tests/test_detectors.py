"""Detectors decode to sensible COCO predictions with per-class probabilities; bring-your-own
detectors (Ultralytics ONNX, FiftyOne models) run through the same runner; outputs are guarded."""
from __future__ import annotations

import numpy as np
import pytest

import fiftyone as fo

from grader import detectors
from grader.detectors.base import ArrayDetector

from conftest import shared_path


def _det_dir():
    d = shared_path("detectors")
    if d is None:
        pytest.skip("../shared/data/detectors is not present")
    return str(d)


@pytest.mark.parametrize("model,thr,min_tp,n_range", [
    ("yolox-nano", 0.25, 400, (540, 670)),
    ("yolov3-tiny", 0.25, 180, (200, 600)),
    ("yolo-fastestv2", 0.2, 230, (300, 700))])
def test_detector_predictions_match_ground_truth(coco128, model, thr, min_tp, n_range):
    rep = detectors.run_detector(coco128, model=model, label_field="pred",
                                 detectors_dir=_det_dir(), conf_threshold=thr)
    assert rep.samples_scored == 128 and not rep.skipped.get("unreadable_image")
    dets = [d for s in coco128.select_fields("pred") for d in s.pred.detections]
    assert n_range[0] <= len(dets) <= n_range[1], len(dets)
    for d in dets[:200]:
        assert len(d.probs) == 80
        assert d.confidence == pytest.approx(max(d.probs)) and d.confidence >= thr
        assert d.label == coco128.default_classes[int(np.argmax(d.probs))]
        x, y, w, h = d.bounding_box
        assert 0 <= x and 0 <= y and w > 0 and h > 0 and x + w <= 1 + 1e-9 and y + h <= 1 + 1e-9
    # the probs' class order is recorded on the field, for readers that map by name
    from grader.fields import probs_classes

    order = probs_classes(coco128, "pred")
    assert len(order) == 80 and all(d.label == order[int(np.argmax(d.probs))] for d in dets[:200])
    # and which model wrote them, with its settings (the ensemble's reference_judges reads it)
    from grader.fields import field_model

    assert field_model(coco128, "pred") == {"model": model, "input_size": None,
                                            "conf_threshold": thr, "nms_iou": 0.45}
    coco128.evaluate_detections("pred", gt_field="ground_truth", eval_key="ev", iou=0.5)
    tp = sum(coco128.values("ev_tp"))
    # Measured on coco128 (bench/zoom_dev.py decoder): YOLOX-Nano 603 predictions, 424 correct;
    # yolov3-tiny 221, yolo-fastestv2 277 correct. A decoding mistake (wrong grid, letterbox
    # scale, colour order, doubled objectness) drops far below these.
    assert tp >= min_tp, tp


def test_unknown_detector_is_a_clear_error():
    with pytest.raises(ValueError, match="available: yolox-nano, yolov3-tiny, yolo-fastestv2"):
        detectors.load_detector("yolov9", "/nonexistent")


def test_default_is_yolox_nano():
    assert detectors.DEFAULT_DETECTOR == "yolox-nano"
    import inspect

    assert inspect.signature(detectors.run_detector).parameters["model"].default == "yolox-nano"


def test_params_validated_and_fields_guarded(synthetic_dataset):
    ds = synthetic_dataset
    with pytest.raises(ValueError, match="conf_threshold"):
        detectors.run_detector(ds, conf_threshold=1.5)
    with pytest.raises(ValueError, match="nms_iou"):
        detectors.run_detector(ds, nms_iou=0.0)
    before = ds.values("predictions.detections.id", unwind=True)
    # the GT field, and an existing field the detector did not write, are refused before any work
    with pytest.raises(ValueError):
        detectors.run_detector(ds, label_field="ground_truth", detectors_dir=_det_dir())
    with pytest.raises(ValueError, match="overwrite=True"):
        detectors.run_detector(ds, label_field="predictions", detectors_dir=_det_dir())
    assert ds.values("predictions.detections.id", unwind=True) == before
    # its own field may be rewritten without overwrite=True
    detectors.run_detector(ds, label_field="lg_pred", detectors_dir=_det_dir())
    detectors.run_detector(ds, label_field="lg_pred", detectors_dir=_det_dir())
    detectors.run_detector(ds, label_field="predictions", detectors_dir=_det_dir(), overwrite=True)
    assert ds.values("predictions.detections.id", unwind=True) != before


def _tiny_ultralytics_onnx(path, k=3):
    """An ONNX model with the Ultralytics head layout that outputs two fixed candidates."""
    import torch

    out = torch.zeros(1, 4 + k, 5)
    out[0, :4, 0] = torch.tensor([32.0, 32.0, 32.0, 16.0])  # cx cy w h in input pixels
    out[0, 4 + k - 1, 0] = 0.9  # the last class
    out[0, :4, 1] = torch.tensor([10.0, 20.0, 8.0, 8.0])
    out[0, 4 + 1, 1] = 0.1  # below the threshold

    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("out", out)

        def forward(self, x):
            return self.out + 0.0 * x.mean()

    torch.onnx.export(Head(), torch.zeros(1, 3, 64, 64), str(path), input_names=["images"],
                      output_names=["output0"], dynamo=False)


def test_ultralytics_onnx_decoding(tmp_path):
    onnx = tmp_path / "tiny.onnx"
    _tiny_ultralytics_onnx(onnx)
    det = detectors.load_detector(str(onnx), classes=["a", "b", "c"], input_size=64)
    img = np.zeros((100, 200, 3), dtype=np.uint8)  # letterbox: r = 0.32, centred, dy = 16
    (boxes,) = detectors.predict_boxes(det, [img], conf_threshold=0.25)
    assert len(boxes) == 1 and boxes.cls[0] == 2 and boxes.conf[0] == pytest.approx(0.9)
    np.testing.assert_allclose(boxes.xyxy[0], [50, 25, 150, 75], atol=1e-3)
    assert boxes.probs.shape == (1, 3)


def test_ultralytics_onnx_through_run_detector(tmp_path, synthetic_dataset):
    onnx = tmp_path / "tiny.onnx"
    _tiny_ultralytics_onnx(onnx, k=2)
    rep = detectors.run_detector(synthetic_dataset, model=str(onnx), classes=["cat", "dog"],
                                 label_field="byo", input_size=64, conf_threshold=0.25)
    dets = synthetic_dataset.values("byo.detections", unwind=True)
    assert rep.samples_scored == len(synthetic_dataset) and len(dets) == len(synthetic_dataset)
    assert {d.label for d in dets} == {"dog"} and all(len(d.probs) == 2 for d in dets)
    with pytest.raises(ValueError, match="class names"):
        detectors.load_detector(str(onnx))


class _FixedFoModel(fo.core.models.Model):
    """A FiftyOne model predicting one centred 'cat' box (confidence only) on any image."""

    media_type = "image"
    ragged_batches = False
    transforms = None
    preprocess = False
    config = None  # apply_model reads model.config

    def predict(self, arg):
        return fo.Detections(detections=[fo.Detection(label="cat", bounding_box=[0.25, 0.25, 0.5, 0.5],
                                                      confidence=0.8)])

    def predict_all(self, args):
        return [self.predict(a) for a in args]


def test_fiftyone_model_bring_your_own(synthetic_dataset):
    model = _FixedFoModel()
    rep = detectors.run_detector(synthetic_dataset, model=model, label_field="fo_pred")
    assert rep.labels_scored == len(synthetic_dataset)
    det = detectors.load_detector(model)
    assert isinstance(det, ArrayDetector) and not det.has_probs
    (rows,) = det.predict([np.zeros((100, 200, 3), np.uint8)])
    np.testing.assert_allclose(rows[0, :4], [50, 25, 150, 75])
    assert rows[0, 4 + det.classes.index("cat")] == pytest.approx(0.8)


@pytest.mark.parametrize("size", [416, 640, 256])
def test_yolox_onnxruntime_matches_cv2_dnn(size):
    """The default runtime (onnxruntime, whole batches) gives the rows cv2.dnn gives, one image
    per forward, at each input size grade() uses (detector, overlooked finder, zoom crops)."""
    pytest.importorskip("onnxruntime")
    from grader.detectors.cvdnn import YoloXNano
    from grader.images import load_rgb

    d = shared_path("coco128", "images")
    if d is None:
        pytest.skip("../shared/data/coco128 is not present")
    paths = sorted(p for p in d.rglob("*.jpg"))[:6]
    images = [load_rgb(str(p)) for p in paths]
    images.append(images[0][40:200, 100:260])   # a crop: another shape in the same batch
    model_dir = _det_dir() + "/yolox-nano"
    ox = YoloXNano(model_dir, input_size=size)
    assert ox.backend == "onnxruntime"
    cv = YoloXNano(model_dir, input_size=size, backend="cv2")
    a, b = cv.predict(images), ox.predict(images)
    assert len(a) == len(b) == len(images)
    for x, y in zip(a, b):
        assert x.shape == y.shape
        assert np.abs(x[:, :4] - y[:, :4]).max() < 0.1          # pixels
        assert np.abs(x[:, 4:] - y[:, 4:]).max() < 1e-3         # scores
    assert ox.predict([]) == []
    with pytest.raises(ValueError, match="backend"):
        YoloXNano(model_dir, backend="tensorrt")
