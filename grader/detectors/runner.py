"""Load a detector from what the user has, and run it over a collection in batches."""
from __future__ import annotations

import os
from typing import Any, Callable, Iterator, Sequence

import fiftyone as fo
import numpy as np

from .. import fields as lgf
from ..images import ImageReadError, load_rgb
from ..parallel import prefetch_map
from ..report import RunReport
from .base import ArrayDetector, Boxes, postprocess

DEFAULT_DETECTOR = "yolox-nano"
SHIPPED = ("yolox-nano", "yolov3-tiny", "yolo-fastestv2")
#: owner recorded on the fields run_detector writes (it may rewrite those without overwrite=True)
_OWNER = "detector"
#: run_detector's defaults: minimum confidence kept, NMS IoU
DEFAULT_CONF_THRESHOLD = 0.05
DEFAULT_NMS_IOU = 0.45


def prediction_record(model: str, input_size: int | None, conf_threshold: float,
                      nms_iou: float) -> dict[str, Any]:
    """What run_detector records on the field it writes (:func:`grader.fields.field_model`):
    the model and the settings its predictions depend on."""
    return {"model": model, "input_size": input_size, "conf_threshold": float(conf_threshold),
            "nms_iou": float(nms_iou)}


#: the record of the shipped YOLOX-Nano's predictions at run_detector's defaults (the shipped
#: ensemble reads cleanlab's scores on them against its training runs)
SHIPPED_PREDICTIONS = prediction_record(DEFAULT_DETECTOR, None, DEFAULT_CONF_THRESHOLD,
                                        DEFAULT_NMS_IOU)


def _detectors_dir(detectors_dir: str | None) -> str:
    if detectors_dir is not None:
        return detectors_dir
    return os.environ.get("LABEL_GRADER_DETECTORS", os.path.join(
        os.path.dirname(__file__), "..", "..", "..", "shared", "data", "detectors"))


def _is_fiftyone_model(model: Any) -> bool:
    from fiftyone.core.models import Model

    return isinstance(model, Model)


def load_detector(model: Any = DEFAULT_DETECTOR, detectors_dir: str | None = None, *,
                  classes: Sequence[str] | str | None = None,
                  input_size: int | None = None) -> ArrayDetector:
    """An :class:`ArrayDetector` from a shipped name, an ``.onnx`` path (Ultralytics layout, needs
    ``classes``), a FiftyOne model, or an ``ArrayDetector`` (returned as is)."""
    from .cvdnn import YoloFastestV2, YoloV3Tiny, YoloXNano

    if isinstance(model, ArrayDetector):
        return model
    if not isinstance(model, str):
        if _is_fiftyone_model(model):
            from .fiftyone_model import FiftyOneModelDetector

            return FiftyOneModelDetector(model, classes if not isinstance(classes, str) else None)
        raise TypeError(f"model must be a detector name, an .onnx path, a FiftyOne model or an "
                        f"ArrayDetector, got {type(model).__name__}")
    if model.lower().endswith(".onnx"):
        from .ultralytics_onnx import UltralyticsOnnx

        return UltralyticsOnnx(model, classes, **({"input_size": input_size} if input_size else {}))
    d = _detectors_dir(detectors_dir)
    kw = {"input_size": input_size} if input_size else {}
    if model == "yolox-nano":
        return YoloXNano(os.path.join(d, "yolox-nano"), **kw)
    if model == "yolov3-tiny":
        return YoloV3Tiny(os.path.join(d, "yolov3-tiny"), **kw)
    if model == "yolo-fastestv2":
        return YoloFastestV2(os.path.join(d, "yolo-fastestv2"), **kw)
    raise ValueError(f"unknown detector '{model}'; available: {', '.join(SHIPPED)}, "
                     "a path to an Ultralytics .onnx export, or a FiftyOne model")


def _check_params(conf_threshold: float, nms_iou: float) -> None:
    if not 0.0 <= float(conf_threshold) <= 1.0:
        raise ValueError(f"conf_threshold must be in [0, 1], got {conf_threshold}")
    if not 0.0 < float(nms_iou) <= 1.0:
        raise ValueError(f"nms_iou must be in (0, 1], got {nms_iou}")


def guard_prediction_field(collection, field: str, overwrite: bool, gt_fields: Sequence[str]) -> None:
    """Refuse to write over labels the detector did not write (never over a GT field)."""
    lgf.guard_output_field(collection, field, overwrite=overwrite, inputs=tuple(gt_fields),
                           owner=_OWNER)
    lgf.claim_output_field(collection, field, _OWNER)


def _batches(it: Iterator, n: int) -> Iterator[list]:
    buf = []
    for x in it:
        buf.append(x)
        if len(buf) == n:
            yield buf
            buf = []
    if buf:
        yield buf


def _decode(path: str):
    try:
        return load_rgb(path)
    except ImageReadError:
        return None


def predict_boxes(det: ArrayDetector, images: Sequence[np.ndarray], conf_threshold: float = 0.05,
                  nms_iou: float = 0.45) -> list[Boxes]:
    """Run ``det`` on a batch and post-process (threshold, class-wise NMS, clip) each image."""
    k = len(det.classes)
    return [postprocess(r, k, conf_threshold, nms_iou, im.shape[:2])
            for r, im in zip(det.predict(images), images)]


def run_detector(collection, model: Any = DEFAULT_DETECTOR, label_field: str = "predictions",
                 detectors_dir: str | None = None, conf_threshold: float = DEFAULT_CONF_THRESHOLD,
                 nms_iou: float = DEFAULT_NMS_IOU, classes: list[str] | None = None,
                 progress: Callable[[int, int], None] | None = None, *,
                 overwrite: bool = False, gt_field: str | Sequence[str] = "ground_truth",
                 batch_size: int = 8, workers: int | None = None,
                 input_size: int | None = None) -> RunReport:
    """Predict boxes on every sample and write ``label_field`` in one bulk ``set_values``.

    ``model``: a shipped name (``"yolox-nano"``, the default; ``"yolov3-tiny"``,
    ``"yolo-fastestv2"``), a path to an Ultralytics-style ``.onnx`` export (then ``classes``
    gives its class names), a FiftyOne model (run with ``apply_model``), or an ArrayDetector.
    ``conf_threshold`` is low on purpose: cleanlab wants the model's uncertain boxes too.
    Boxes of classes outside the dataset's class list (``default_classes``) are dropped.
    ``label_field`` must not be the GT field, nor an existing field this function did not
    write unless ``overwrite=True``.
    """
    _check_params(conf_threshold, nms_iou)
    gt_fields = (gt_field,) if isinstance(gt_field, str) else tuple(gt_field)
    guard_prediction_field(collection, label_field, overwrite, gt_fields)
    if not isinstance(model, (str, ArrayDetector)) and _is_fiftyone_model(model):
        report = RunReport(judge=f"detector:{type(model).__name__}")
        report.samples_seen = len(collection)
        collection.apply_model(model, label_field=label_field, confidence_thresh=conf_threshold)
        report.samples_scored = report.samples_seen
        report.labels_scored = int(collection.count(f"{label_field}.detections"))
        report.fields = [label_field]
        report.info["note"] = "FiftyOne model: confidence only, no per-class probs"
        return report

    det = load_detector(model, detectors_dir, classes=classes if isinstance(model, str) and
                        model.lower().endswith(".onnx") else None, input_size=input_size)
    ds_classes = list(collection._dataset.default_classes or [])
    keep = set(ds_classes or det.classes)
    if isinstance(model, str) and model.lower().endswith(".onnx"):
        keep = set(det.classes)
    report = RunReport(judge=f"detector:{det.name}")
    ids, paths = collection.values(["id", "filepath"])
    report.samples_seen = len(ids)
    out: dict[str, fo.Detections] = {}
    from ..render import default_workers

    w = default_workers() if workers is None else workers
    done = 0
    for batch in _batches(zip(ids, prefetch_map(_decode, paths, workers=w)), max(1, batch_size)):
        ok = [(sid, im) for sid, im in batch if im is not None]
        report.skip("unreadable_image", len(batch) - len(ok))
        if ok:
            for (sid, im), boxes in zip(ok, predict_boxes(det, [im for _, im in ok],
                                                          conf_threshold, nms_iou)):
                h, w_ = im.shape[:2]
                dets = []
                for b in range(len(boxes)):
                    name = det.classes[boxes.cls[b]]
                    if name not in keep:
                        report.skip("class_not_in_dataset")
                        continue
                    x1, y1, x2, y2 = boxes.xyxy[b]
                    attrs = {"confidence": float(boxes.conf[b])}
                    if det.has_probs:
                        attrs["probs"] = boxes.probs[b].tolist()
                    dets.append(fo.Detection(label=name, bounding_box=[
                        x1 / w_, y1 / h, (x2 - x1) / w_, (y2 - y1) / h], **attrs))
                out[sid] = fo.Detections(detections=dets)
                report.samples_scored += 1
                report.labels_scored += len(dets)
        done += len(batch)
        if progress:
            progress(done, len(ids))
    lgf.write_sample_field(collection, label_field, out)
    if det.has_probs:
        lgf.set_probs_classes(collection, label_field, det.classes)
    # which model wrote these (the ensemble reads cleanlab's scores on the shipped detector's
    # predictions against its training runs, grader.pipeline.reference_judges)
    lgf.record_field_model(collection, label_field,
                           prediction_record(det.name, input_size, conf_threshold, nms_iou))
    report.fields = [label_field]
    if ds_classes and det.classes != ds_classes:
        report.info["note"] = "detector classes differ from the dataset's class list"
    return report
