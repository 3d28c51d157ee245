"""Zoom judge: re-detect every ground-truth box on a square context crop around it.

A small detector run once on the full image misses most small or crowded objects, so cleanlab
and Brain abstain on most boxes. Here each GT box gets its own crop (``context`` x the box's
longer side, square, at least ``min_crop`` source pixels), resized to the detector's input, so
the object fills a good part of the input. The crop's predictions are mapped back to image
pixels and compared with the box:

- ``zoom_support``: max IoU with any confident prediction (``conf >= conf_threshold``), any class
- ``zoom_label_prob``: the labeled class's score at the matching prediction (best IoU among
  predictions with IoU >= ``match_iou``; 0 when none matches)
- ``zoom_other_label`` / ``zoom_other_prob``: the best other class there and its score
- ``zoom_iou``: best IoU with a prediction of the labeled class (``conf >= low_threshold``)
- ``zoom_badloc``: ``p(label) * (1 - IoU)`` of the prediction most sure of the labeled class
  among those overlapping the box (IoU >= 0.1) that no neighbouring label of its class claims
  (:func:`claimed_by_neighbour`): high when the detector is sure of an object of this class
  that the box only partly covers; a box with no detection near it is *not* suspect of bad
  location (unlike ``zoom_iou``, which is 0 there)
- ``zoom_swap``: ``zoom_other_prob - zoom_label_prob`` (-1..1, high = another class fits better)
- ``zoom_evidence``: ``max_j IoU_j * conf_j`` over all crop predictions (low = nothing there)

A prediction whose class is that of another labelled box of the image, which it covers at IoU
>= 0.5 and at least as well, is that box's evidence and is not matched for ``zoom_label_prob`` /
``zoom_other_prob`` (:func:`explained_elsewhere`): on coco128's own labels, couches, benches, beds and tables with a
person or food on them, bags and bats held by a labelled person were the top "swaps" a curator
found to be correct labels (``bench/real_errors.py``). A box overlapping this one at IoU >= 0.5
does so only when the dataset's labels hold that class pair legitimately
(:func:`grader.judges.consistency.legit_partners`: a close-up pizza filling its table), not as a
likely cross-class duplicate.

On coco128 (dev, 5% of each error injected, ``bench/zoom_dev.py``) these scored best per type
among the variants tried: badloc ``zoom_badloc``, swap ``zoom_swap``, spurious ``zoom_evidence``.

Each image is decoded once; crops are cut and resized in a thread/process pool ahead of the
detector (``grader.parallel.prefetch_map``). Works with any detector ``load_detector`` accepts
(shipped names, Ultralytics ONNX, FiftyOne models). Labels and boxes are never modified.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Collection, Sequence

import cv2
import numpy as np

from .. import fields as lgf
from ..boxes import BOX_DEGENERATE, iou_matrix, rel_xywh_to_abs_xyxy, sanitize_rel_boxes
from ..detectors import ArrayDetector, load_detector, postprocess
from ..images import ImageReadError, load_rgb
from ..parallel import prefetch_map
from ..render import CropWindow, cut_window, default_workers
from ..report import RunReport
from .consistency import legit_partners

ZOOM_ATTRS = ("zoom_support", "zoom_label_prob", "zoom_other_label", "zoom_other_prob", "zoom_iou",
              "zoom_badloc", "zoom_swap", "zoom_evidence")


def square_window(image_hw: tuple[int, int], box_xyxy, context: float, min_crop: int) -> CropWindow:
    """A square window of side ``max(context * longer side, min_crop)`` centred on the box and
    moved inside the image where it fits (more real context, less padding); where it is larger
    than the image along an axis it stays centred and the outside is padded (``render.cut_window``)."""
    h, w = image_hw
    x1, y1, x2, y2 = (float(v) for v in box_xyxy)
    side = max(int(round(context * max(x2 - x1, y2 - y1))), int(min_crop), 1)
    x0 = int(math.floor((x1 + x2) / 2 - side / 2))
    y0 = int(math.floor((y1 + y2) / 2 - side / 2))
    if side <= w:
        x0 = min(max(x0, 0), w - side)
    if side <= h:
        y0 = min(max(y0, 0), h - side)
    return CropWindow(x0, y0, side, side, (x1 - x0, y1 - y0, x2 - x0, y2 - y0))


@dataclass
class _Job:
    sample_id: str
    filepath: str
    label_ids: list[str]
    labels: list[str]
    boxes: list[list[float]]


def _render(job: _Job, *, context: float, min_crop: int, out_size: int | None):
    """Decode once, cut every box's square window (resized to ``out_size``)."""
    if not job.label_ids:
        return job, None, [], {}
    try:
        image = load_rgb(job.filepath)
    except ImageReadError:
        return job, None, [], {"unreadable_image": len(job.label_ids)}
    h, w = image.shape[:2]
    clipped, status = sanitize_rel_boxes(job.boxes)
    abs_boxes = rel_xywh_to_abs_xyxy(clipped, w, h)
    items, skips = [], {}
    for i, (st, box) in enumerate(zip(status, abs_boxes)):
        if st == BOX_DEGENERATE or job.labels[i] is None:
            k = "degenerate_box" if st == BOX_DEGENERATE else "missing_label"
            skips[k] = skips.get(k, 0) + 1
            continue
        win = square_window((h, w), box, context, min_crop)
        crop = np.ascontiguousarray(cut_window(image, win))
        if out_size:
            crop = cv2.resize(crop, (out_size, out_size), interpolation=cv2.INTER_LINEAR)
        items.append((i, box, win, crop))
    return job, (h, w), items, skips


#: Another labelled box of the image overlapping this one below this IoU is a distinct object
#: (above it, a twin: a duplicate, whose class evidence stays this box's).
DISTINCT_IOU = 0.5
#: A prediction is another box's object where it covers that box at least this well (and
#: better than this one). Without the floor, predictions loosely over two boxes were assigned
#: too: coco128-val duplicate AP 0.692 -> 0.673; with it 0.693 (2 seeds, bench/eval_judges.py),
#: coco128 and the real-error figures the same either way.
EXPLAINED_IOU = 0.5


def explained_elsewhere(box: np.ndarray, xyxy: np.ndarray, probs: np.ndarray,
                        label_idx: int | None, image_xyxy: np.ndarray,
                        image_idx: np.ndarray, iou: np.ndarray | None = None,
                        twins: Collection[int] = ()) -> np.ndarray:
    """Per prediction: True where its class is another labelled box's (of ``image_xyxy`` /
    ``image_idx``, :func:`image_boxes`), which it covers at IoU >= :data:`EXPLAINED_IOU` and at
    least as well as it covers ``box``: the person sitting on a couch, the pizza on a table,
    the bat in a batter's hands. Such a prediction is that box's evidence, not a sign that
    ``box`` has the wrong class. Boxes overlapping ``box`` at IoU >= :data:`DISTINCT_IOU`
    explain nothing: two labels on one object are a duplicate, and the prediction's class is
    what decides which of them is right (``box`` itself, among the image's boxes, is one) --
    unless their class is in ``twins``: classes this dataset's labels show lying on or in
    ``box``'s class legitimately (:func:`grader.judges.consistency.legit_partners`: a pizza
    filling most of its table)."""
    if not len(xyxy) or not len(image_xyxy):
        return np.zeros(len(xyxy), dtype=bool)
    image_idx = np.asarray(image_idx)
    may = iou_matrix(box[None], image_xyxy)[0] < DISTINCT_IOU
    if len(twins):
        may |= np.isin(image_idx, list(twins)) & (image_idx != (-1 if label_idx is None else label_idx))
    top = probs.argmax(1)
    out = _covered_by(box, xyxy, top, image_xyxy[may], image_idx[may], iou, strict=False)
    if label_idx is not None:
        out &= top != label_idx
    return out


def _covered_by(box: np.ndarray, xyxy: np.ndarray, pred_idx: np.ndarray, o_xyxy: np.ndarray,
                o_idx: np.ndarray, iou: np.ndarray | None, strict: bool) -> np.ndarray:
    """Per prediction: True where a box of ``o_xyxy`` of the prediction's class (``pred_idx``)
    covers it at IoU >= :data:`EXPLAINED_IOU` and at least as well as ``box`` does (better,
    with ``strict``)."""
    if not len(xyxy) or not len(o_xyxy):
        return np.zeros(len(xyxy), dtype=bool)
    own = (iou_matrix(box[None], xyxy)[0] if iou is None else iou)[:, None]
    cover = iou_matrix(xyxy, o_xyxy)                                   # (P, G)
    same = (o_idx[None, :] == pred_idx[:, None]) & (o_idx[None, :] >= 0)
    better = cover > own if strict else cover >= own
    return (same & better & (cover >= EXPLAINED_IOU)).any(1)


def claimed_by_neighbour(box: np.ndarray, xyxy: np.ndarray, label_idx: int, image_xyxy: np.ndarray,
                         image_idx: np.ndarray, iou: np.ndarray | None = None) -> np.ndarray:
    """Per prediction: True where another labelled box of ``box``'s class (a distinct object:
    IoU with ``box`` below :data:`DISTINCT_IOU`) covers it at IoU >= :data:`EXPLAINED_IOU` and
    better than ``box`` does: that neighbour's detection, which says nothing about where
    ``box`` should be. A moved box keeps the detection of the object it left, which no other
    label claims."""
    if not len(xyxy) or not len(image_xyxy):
        return np.zeros(len(xyxy), dtype=bool)
    image_idx = np.asarray(image_idx)
    nb = (image_idx == label_idx) & (iou_matrix(box[None], image_xyxy)[0] < DISTINCT_IOU)
    return _covered_by(box, xyxy, np.full(len(xyxy), label_idx), image_xyxy[nb], image_idx[nb],
                       iou, strict=True)


def _features(box: np.ndarray, xyxy: np.ndarray, conf: np.ndarray, probs: np.ndarray,
              label_idx: int | None, conf_threshold: float, low_threshold: float,
              match_iou: float, classes: list[str],
              others: tuple[np.ndarray, np.ndarray] | None = None,
              twins: Collection[int] = ()) -> dict[str, Any]:
    """Per-box zoom attributes from the crop's predictions (image pixels); ``others``: the
    image's labelled boxes (:func:`image_boxes`), whose objects' predictions do not count as
    class evidence for this box (:func:`explained_elsewhere`, with ``twins``)."""
    if len(xyxy) == 0:
        return {"zoom_support": 0.0, "zoom_label_prob": 0.0 if label_idx is not None else None,
                "zoom_other_label": None, "zoom_other_prob": 0.0, "zoom_iou": 0.0,
                "zoom_badloc": 0.0 if label_idx is not None else None,
                "zoom_swap": 0.0 if label_idx is not None else None, "zoom_evidence": 0.0}
    iou = iou_matrix(box[None], xyxy)[0]
    confident = conf >= conf_threshold
    support = float(iou[confident].max()) if confident.any() else 0.0
    m = iou >= match_iou
    if others is not None and m.any():
        m &= ~explained_elsewhere(box, xyxy, probs, label_idx, others[0], others[1], iou, twins)
    out: dict[str, Any] = {"zoom_support": support,
                           "zoom_evidence": float((iou * probs.max(1)).max())}
    if m.any():
        j = int(np.flatnonzero(m)[np.argmax(iou[m])])
        p = probs[j].copy()
        out["zoom_label_prob"] = float(p[label_idx]) if label_idx is not None else None
        if label_idx is not None:
            p[label_idx] = -1.0
        o = int(np.argmax(p))
        out["zoom_other_label"], out["zoom_other_prob"] = classes[o], float(p[o])
    else:
        out.update(zoom_label_prob=0.0 if label_idx is not None else None,
                   zoom_other_label=None, zoom_other_prob=0.0)
    if label_idx is not None:
        same = (probs[:, label_idx] >= low_threshold)
        out["zoom_iou"] = float(iou[same].max()) if same.any() else 0.0
        near = iou >= 0.1
        if others is not None and near.any():
            near &= ~claimed_by_neighbour(box, xyxy, label_idx, others[0], others[1], iou)
        near = np.flatnonzero(near)
        if len(near):
            j = near[np.argmax(probs[near, label_idx])]
            out["zoom_badloc"] = float(probs[j, label_idx] * (1 - iou[j]))
        else:
            out["zoom_badloc"] = 0.0
        out["zoom_swap"] = (out["zoom_other_prob"] - out["zoom_label_prob"]
                            if out["zoom_other_label"] is not None else -out["zoom_label_prob"])
    else:
        out["zoom_iou"] = out["zoom_badloc"] = out["zoom_swap"] = None
    return out


@dataclass(frozen=True)
class ZoomSettings:
    """The zoom judge's window and thresholds (``run_zoom``'s keywords of the same names)."""

    context: float = 2.0
    min_crop: int = 64
    conf_threshold: float = 0.25
    low_threshold: float = 0.05
    match_iou: float = 0.3
    nms_iou: float = 0.45

    def check(self) -> None:
        for name, lo, hi in (("conf_threshold", 0, 1), ("low_threshold", 0, 1),
                             ("match_iou", 0, 1), ("nms_iou", 1e-9, 1)):
            v = getattr(self, name)
            if not lo <= float(v) <= hi:
                raise ValueError(f"{name} must be in [{lo}, {hi}], got {v}")
        if self.context < 1 or self.min_crop < 1:
            raise ValueError("context must be >= 1 and min_crop >= 1")


def crop_attrs(box_xyxy: np.ndarray, rows: np.ndarray, win: CropWindow, crop_side: int,
               label_idx: int | None, classes: list[str], s: ZoomSettings,
               others: tuple[np.ndarray, np.ndarray] | None = None,
               twins: Collection[int] = ()) -> dict[str, Any]:
    """The ``zoom_*`` attributes of one box from the detector's rows on its crop (``rows``:
    ``(A, 4 + K)`` in the pixels of the ``crop_side`` input the window was resized to; ``others``:
    :func:`image_boxes`; ``twins``: see :func:`explained_elsewhere`). Shared by :func:`run_zoom`
    and the box grader, which runs the same crops for its own features."""
    b = postprocess(rows, len(classes), s.low_threshold, s.nms_iou)
    # crop pixels -> window pixels -> image pixels
    xyxy = b.xyxy * (win.width / crop_side) + np.array([win.x0, win.y0, win.x0, win.y0],
                                                        dtype=np.float64)
    return _features(np.asarray(box_xyxy, dtype=np.float64), xyxy, b.conf, b.probs, label_idx,
                     s.conf_threshold, s.low_threshold, s.match_iou, classes, others, twins)


def image_boxes(boxes_xyxy: np.ndarray, label_idx: Sequence[int | None]
                ) -> tuple[np.ndarray, np.ndarray]:
    """One image's labelled boxes and their detector class indices (-1 for a class the detector
    lacks): the ``others`` of :func:`crop_attrs` for every box of the image (each box excludes
    itself, as a box at IoU 1)."""
    return (np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4),
            np.array([-1 if i is None else int(i) for i in label_idx], dtype=np.int64))


def _twins(classes: set[str] | None, index: dict[str, int]) -> list[int]:
    return [index[c] for c in classes if c in index] if classes else []


class SharedZoom:
    """The zoom judge scored inside another step's crop passes (grade()'s box grader runs the
    same YOLOX-Nano on a crop around every box): that step calls :meth:`add` per image, then
    :meth:`write` once. Samples it did not cover (unreadable, no metadata, features read from
    a cache, no labels) are left for :func:`run_zoom` on the rest (:attr:`covered`)."""

    def __init__(self, settings: ZoomSettings, classes: Sequence[str], detector: str = "yolox-nano"):
        settings.check()
        self.settings, self.classes = settings, list(classes)
        self.index = {c: i for i, c in enumerate(self.classes)}
        # legit_partners() of the labels being graded: set by grade_boxgrader from its own read
        self.partners: dict[str, set[str]] = {}
        self.report = RunReport(judge=f"zoom:{detector}")
        self.report.info.update(shared_with="boxgrader", detector=detector)
        self.values: dict[str, dict[tuple[str, str], Any]] = {a: {} for a in ZOOM_ATTRS}
        self.covered: set[str] = set()

    @property
    def judge(self) -> tuple[float, int]:
        """(context, min_crop): the window the crops must have."""
        return self.settings.context, self.settings.min_crop

    def add(self, sample_id: str, label_ids: Sequence[str], labels: Sequence[str | None],
            boxes_xyxy: np.ndarray, crops: Sequence[tuple[CropWindow, np.ndarray]],
            crop_side: int, degenerate: int = 0) -> None:
        """One image's boxes (its non-degenerate ones, ``degenerate`` more skipped) and the
        detector's rows on the judge's crop of each."""
        self.covered.add(sample_id)
        self.report.samples_seen += 1
        self.report.samples_scored += 1
        self.report.skip("degenerate_box", degenerate)
        idx = [self.index.get(l) for l in labels]
        others = image_boxes(boxes_xyxy, idx)
        for lid, label, li, box, (win, rows) in zip(label_ids, labels, idx, boxes_xyxy, crops):
            if label is None:
                self.report.skip("missing_label")
                continue
            if li is None:
                self.report.skip("class_unknown_to_detector")
            feats = crop_attrs(box, rows, win, crop_side, li, self.classes, self.settings, others,
                               _twins(self.partners.get(lid), self.index))
            for a in ZOOM_ATTRS:
                self.values[a][(sample_id, lid)] = feats[a]
            self.report.labels_scored += 1
        self.report.info["crops"] = self.report.labels_scored

    def write(self, collection, gt_field: str) -> RunReport:
        write_attrs(collection, gt_field, self.values, self.report)
        return self.report


def run_zoom(collection, gt_field: str = "ground_truth", model: Any = "yolox-nano", *,
             detectors_dir: str | None = None, context: float = 2.0, min_crop: int = 64,
             input_size: int | None = 256, conf_threshold: float = 0.25,
             low_threshold: float = 0.05, match_iou: float = 0.3, nms_iou: float = 0.45,
             batch_size: int = 16, num_workers: int | None = None, pool: str = "threads",
             detector: ArrayDetector | None = None,
             progress: Callable[[int, int], None] | None = None) -> RunReport:
    """Re-detect every box of ``gt_field`` on its own context crop; write the ``zoom_*`` attributes.

    ``model``: anything :func:`grader.detectors.load_detector` accepts (default YOLOX-Nano).
    ``input_size``: the detector input for crops where the detector can change it (YOLOX is
    fully convolutional; 256 is ~4x cheaper than 416 and the crop is already zoomed in).
    Returns a report whose ``info`` holds the time in the detector (``forward_s``) and in all
    (``total_s``). Degenerate boxes, unreadable images and classes the detector does not know
    (``zoom_label_prob``/``zoom_iou`` None) are counted skips.
    """
    settings = ZoomSettings(context, min_crop, conf_threshold, low_threshold, match_iou, nms_iou)
    settings.check()
    table = lgf.read_detections(collection, gt_field)  # raises clearly on a missing/wrong field
    det = detector or load_detector(model, detectors_dir)
    size_before = getattr(det, "size", None)
    if input_size and hasattr(det, "set_input_size"):
        det.set_input_size(int(input_size))
    try:
        return _run(collection, gt_field, table, det, settings, batch_size=batch_size,
                    num_workers=num_workers, pool=pool, progress=progress)
    finally:
        # a detector shared with other steps (grade()) gets its full-image input size back
        if input_size and hasattr(det, "set_input_size") and size_before:
            det.set_input_size(size_before)


def _run(collection, gt_field, table, det, settings: ZoomSettings, *, batch_size, num_workers,
         pool, progress) -> RunReport:
    out_size = getattr(det, "size", None)
    classes = list(det.classes)
    index = {c: i for i, c in enumerate(classes)}
    report = RunReport(judge=f"zoom:{getattr(det, 'name', 'detector')}")
    t_start = time.perf_counter()
    forward_s = 0.0
    jobs = [_Job(*r) for r in zip(table.sample_ids, table.filepaths, table.ids, table.labels,
                                  table.boxes)]
    partners = legit_partners(table)   # the dataset's own on/in class pairs
    work = partial(_render, context=settings.context, min_crop=settings.min_crop, out_size=out_size)
    workers = default_workers() if num_workers is None else num_workers
    values: dict[str, dict[tuple[str, str], Any]] = {a: {} for a in ZOOM_ATTRS}
    pending: list[tuple[_Job, tuple[int, int], int, np.ndarray, CropWindow, np.ndarray, tuple]] = []

    def flush() -> None:
        nonlocal forward_s
        if not pending:
            return
        t0 = time.perf_counter()
        rows = det.predict([p[5] for p in pending])
        forward_s += time.perf_counter() - t0
        for (job, hw, i, box, win, crop, oth), r in zip(pending, rows):
            li = index.get(job.labels[i])
            if li is None:
                report.skip("class_unknown_to_detector")
            feats = crop_attrs(box, r, win, crop.shape[1], li, classes, settings, oth,
                               _twins(partners.get(job.label_ids[i]), index))
            key = (job.sample_id, job.label_ids[i])
            for a in ZOOM_ATTRS:
                values[a][key] = feats[a]
            report.labels_scored += 1
        pending.clear()

    for n, (job, hw, items, skips) in enumerate(prefetch_map(work, jobs, workers=workers,
                                                             prefetch=8, pool=pool)):
        report.samples_seen += 1
        for key, v in skips.items():
            report.skip(key, v)
        if hw is not None or not job.label_ids:
            report.samples_scored += 1
        others = image_boxes(np.array([it[1] for it in items]).reshape(-1, 4),
                             [index.get(job.labels[it[0]]) for it in items])
        for i, box, win, crop in items:
            pending.append((job, hw, i, box, win, crop, others))
            if len(pending) >= batch_size:
                flush()
        if progress:
            progress(n + 1, len(jobs))
    flush()
    write_attrs(collection, gt_field, values, report)
    total = time.perf_counter() - t_start
    report.info.update(forward_s=round(forward_s, 3), total_s=round(total, 3),
                       crops=report.labels_scored, detector=getattr(det, "name", "detector"))
    return report


def write_attrs(collection, gt_field: str, values: dict[str, dict[tuple[str, str], Any]],
                report: RunReport) -> None:
    """Bulk-write ``{attr: {(sample_id, label_id): value}}`` of :data:`ZOOM_ATTRS`."""
    # Attributes of a label the detector has no class for stay absent rather than None-typed.
    lgf.write_label_attrs(collection, gt_field, {a: {k: v for k, v in m.items() if v is not None}
                                                 for a, m in values.items()})
    report.fields = [f"{gt_field}.detections.{a}" for a in ZOOM_ATTRS]
