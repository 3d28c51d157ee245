"""cleanlab ObjectLab judge: per-image label quality and per-box overlooked / swap / badloc scores.

Inputs are built in cleanlab's own format (checked against cleanlab 2.9's source):

- ``labels[i] = {"bboxes": (L, 4) absolute xyxy, "labels": (L,) int class}``
- ``predictions[i] = [K arrays of shape (M_k, 5)]``, row ``[x1, y1, x2, y2, p]``: one array
  per class (MMDetection style). A predicted box appears in its own class's array and in
  every class where its probability can change a score (see :func:`build_inputs`).

Scores come from cleanlab's public ``compute_*_box_scores`` functions; this module only adds
what cleanlab does not return: which prediction / class each score refers to, the mapping
back to FiftyOne label ids, thresholds, and the bulk writes.

Score convention (cleanlab's): every score is in [0, 1] and LOW means suspect.
"""
from __future__ import annotations

import hashlib
from datetime import datetime, timezone
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import fiftyone as fo
from fiftyone import ViewField as F
import numpy as np
from bson import ObjectId
from pymongo import UpdateOne
from cleanlab.internal import constants as cl_const
from cleanlab.object_detection import rank as cl_rank

from ... import fields as lgf
from ...boxes import BOX_CLIPPED, BOX_DEGENERATE, rel_xywh_to_abs_xyxy, sanitize_rel_boxes
from ...classes import resolve_classes
from ...images import ensure_metadata
from ...report import RunReport
from ... import runs
from ...runs import DEFAULT_TTL_S, run_lease

RUN_KEY = "label_grader_cleanlab"
TAG_BADLOC = "suspect:badloc"
TAG_SWAP = "suspect:swap"
TAG_OVERLOOKED = "suspect:overlooked"
TAG_ISSUE = "suspect:cleanlab_issue"

PROB_SOURCE_ATTR = "attribute"            # per-class probabilities read from a detection attribute
PROB_SOURCE_LOGITS = "logits_softmax"     # per-class logits, softmaxed
PROB_SOURCE_SPREAD = "confidence_spread"  # only `confidence`: rest of the mass spread evenly


@dataclass
class CleanlabParams:
    """Parameters of a cleanlab run. Defaults are cleanlab's own (``cleanlab.internal.constants``).

    - ``alpha`` (0-1): weight of IoU vs. centre distance in box similarity (cleanlab: 0.9).
    - ``low_probability_threshold`` (0-1): predictions of the label's class below this are
      ignored when judging its location (cleanlab: 0.5).
    - ``high_probability_threshold`` (0-1): only predictions above this can flag an overlooked
      object or a swapped class (cleanlab: 0.95). Weak or uncalibrated detectors rarely reach
      0.95; lower it (e.g. 0.5-0.7) to let them speak, at the cost of more false alarms.
    - ``temperature`` (>0): softmin pooling of box scores into image scores (cleanlab: 0.1).
    - ``aggregation_weights``: {"overlooked", "swap", "badloc"} weights summing to 1.
    - ``min_class_prob`` (0-1 or None): None (default) puts a predicted box in its own class
      and in classes where its probability reaches ``min(low, high)_probability_threshold``,
      the only entries that can change a box score; a number also adds every class at or
      above it (``0.0``: cleanlab's plain K-array input). Extra entries cost time and only move
      the per-class AP of the default tagging rule (box scores are identical).
    - ``*_threshold``: a box is tagged when its score is <= the threshold. ``None`` means
      cleanlab's ``find_label_issues`` rule: per class, 0.8 x 0.25 x the class's AP over
      IoU 0.5:0.95 on this data (so classes the model detects poorly are tagged less).
    """

    gt_field: str = "ground_truth"
    pred_field: str = "predictions"
    classes: Sequence[str] | None = None
    probs_attr: str | None = "auto"
    alpha: float = cl_const.ALPHA
    low_probability_threshold: float = cl_const.LOW_PROBABILITY_THRESHOLD
    high_probability_threshold: float = cl_const.HIGH_PROBABILITY_THRESHOLD
    temperature: float = cl_const.TEMPERATURE
    aggregation_weights: Mapping[str, float] | None = None
    overlapping_label_check: bool = True
    min_class_prob: float | None = None
    badloc_threshold: float | None = None
    swap_threshold: float | None = None
    overlooked_threshold: float | None = None
    overlooked_field: str | None = None

    def validate(self) -> None:
        for name in ("alpha", "low_probability_threshold", "high_probability_threshold",
                     "min_class_prob"):
            v = getattr(self, name)
            if v is None and name == "min_class_prob":
                continue
            if not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        for name in ("badloc_threshold", "swap_threshold", "overlooked_threshold"):
            v = getattr(self, name)
            if v is not None and not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1] or None, got {v}")
        if self.gt_field == self.pred_field:
            raise ValueError("gt_field and pred_field must differ")


@dataclass
class CleanlabInputs:
    """cleanlab's inputs plus the bookkeeping to map its rows back to FiftyOne labels."""

    sample_ids: list[str]
    labels: list[dict[str, np.ndarray]]
    predictions: list[list[np.ndarray]]
    gt_ids: list[list[str]]                 # per image, aligned with labels[i] rows
    pred_ids: list[list[str]]               # per image, aligned with cleanlab's flattened preds
    pred_classes: list[np.ndarray]          # per image, class of each flattened pred entry
    pred_boxes_rel: list[list[list[float]]]  # per image, FiftyOne box of each flattened entry
    prob_source: str
    classes: list[str]
    skipped_samples: list[str] = field(default_factory=list)
    gt_table: lgf.DetectionTable | None = None  # every GT label in scope, scored or not


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - np.max(x))
    return e / e.sum()


def _detect_probs_attr(collection, pred_field: str, probs_attr: str | None) -> str | None:
    if probs_attr != "auto":
        return probs_attr
    schema = collection.get_field_schema(flat=True)
    for cand in ("probs", "logits"):
        if f"{pred_field}.detections.{cand}" in schema:
            return cand
    # Undeclared dynamic attributes are not in the schema: look at a few values.
    for cand in ("probs", "logits"):
        vals = collection.limit(50).values(f"{pred_field}.detections.{cand}", unwind=True)
        if any(v is not None for v in vals):
            return cand
    return None


def resolve_run_inputs(collection, params: CleanlabParams) -> tuple[list[str], str | None]:
    """The class list and per-class probability attribute of a run (decided once per run)."""
    # store=False: a judge never writes dataset.classes as a side effect; the class list it
    # used is kept in the run record instead.
    classes = resolve_classes(collection, [params.gt_field, params.pred_field], params.classes,
                              store=False)
    if not classes:
        raise ValueError(
            f"No classes: '{params.gt_field}' and '{params.pred_field}' have no labels and the "
            "dataset has no class list; pass classes=[...]"
        )
    return list(classes), _detect_probs_attr(collection, params.pred_field, params.probs_attr)


def _entry_cut(params: CleanlabParams) -> float:
    """Lowest class probability that can change a cleanlab box score.

    cleanlab's scorers only read a prediction of class k through ``p > low_probability_threshold``
    (badloc) and ``p >= / > high_probability_threshold`` (overlooked / swap); a box's other
    entries only repeat its coordinates (so cleanlab's dataset-wide minimum similarity, a
    minimum over box pairs, is unchanged) and add NaN overlooked entries. Entries below this
    cut are therefore left out unless ``min_class_prob`` asks for them.
    """
    return min(params.low_probability_threshold, params.high_probability_threshold)


def build_inputs(collection, params: CleanlabParams, report: RunReport,
                 classes: Sequence[str] | None = None, probs_attr: str | None = "auto"
                 ) -> CleanlabInputs:
    """Read both fields in one query each and build cleanlab's input arrays.

    Each predicted box enters its own class's array, plus any class whose probability can
    change a score (>= ``min(low, high)_probability_threshold``), plus, when
    ``params.min_class_prob`` is set, every class at or above it (``0.0`` = cleanlab's plain
    K-array input). A box with only ``confidence`` has no mass to spread: it enters its class
    (the rest, ``(1-conf)/(K-1)`` per class, only enters where it reaches the cut, K=2).

    Bad input is skipped and counted, never altered in the dataset: samples without image
    size or without predictions, degenerate boxes, unknown classes, predictions with no
    probability. Boxes partly outside the image are clipped for scoring only.
    """
    if classes is None:
        classes, probs_attr = resolve_run_inputs(collection, params)
    elif probs_attr == "auto":
        probs_attr = _detect_probs_attr(collection, params.pred_field, params.probs_attr)
    classes = list(classes)
    cls_index = {c: i for i, c in enumerate(classes)}
    k = len(classes)
    cut = _entry_cut(params)
    extra = params.min_class_prob
    pred_attrs = ["confidence"] + ([probs_attr] if probs_attr else [])
    # Per-class vectors in another class order (a detector's): map them by class name; a
    # class the model does not know gets probability 0 (a logit of -1e9).
    remap = None
    order = lgf.probs_classes(collection, params.pred_field) if probs_attr else None
    if order and order != classes:
        pos = {c: i for i, c in enumerate(order)}
        remap = np.array([pos.get(c, -1) for c in classes], dtype=np.int64)
        report.info["probs_mapped_from"] = f"{len(order)} model classes by name"
    k_raw = len(order) if remap is not None else k
    gt = lgf.read_detections(collection, params.gt_field)
    pr = lgf.read_detections(collection, params.pred_field, attrs=pred_attrs)
    pr_index = {sid: i for i, sid in enumerate(pr.sample_ids)}
    report.samples_seen += len(gt)

    out = CleanlabInputs([], [], [], [], [], [], [], PROB_SOURCE_SPREAD, classes, gt_table=gt)
    sources = set()
    n_pred_total = n_pred_no_prob = 0
    for i, sid in enumerate(gt.sample_ids):
        w, h = gt.widths[i], gt.heights[i]
        pi = pr_index.get(sid)
        if not w or not h:
            report.skip("sample_missing_metadata")
            out.skipped_samples.append(sid)
            continue
        if pi is None or not pr.present[pi]:
            report.skip("sample_missing_predictions")
            out.skipped_samples.append(sid)
            continue
        if not gt.present[i]:
            report.info["samples_without_ground_truth"] = (
                report.info.get("samples_without_ground_truth", 0) + 1)

        # Ground truth
        rel, status = sanitize_rel_boxes(gt.boxes[i])
        keep_ids, keep_boxes, keep_cls = [], [], []
        for j, lid in enumerate(gt.ids[i]):
            lab = gt.labels[i][j]
            if status[j] == BOX_DEGENERATE:
                report.skip("gt_degenerate_box")
                continue
            if lab not in cls_index:
                report.skip("gt_unknown_class")
                continue
            if status[j] == BOX_CLIPPED:
                report.skip("gt_box_clipped_for_scoring")  # scored, but worth knowing
            keep_ids.append(lid)
            keep_boxes.append(rel[j])
            keep_cls.append(cls_index[lab])

        # Predictions -> one row of class probabilities per usable box
        prel, pstatus = sanitize_rel_boxes(pr.boxes[pi])
        confs = pr.attrs["confidence"][pi]
        probs_col = pr.attrs[probs_attr][pi] if probs_attr else None
        pabs = rel_xywh_to_abs_xyxy(prel, w, h)
        rows, own, used = [], [], []
        for j, pid in enumerate(pr.ids[pi]):
            n_pred_total += 1
            lab = pr.labels[pi][j]
            if pstatus[j] == BOX_DEGENERATE:
                report.skip("pred_degenerate_box")
                continue
            dist = None
            raw = probs_col[j] if probs_col is not None else None
            if raw is not None:
                raw = np.asarray(raw, dtype=np.float64)
                if raw.shape != (k_raw,) or not np.all(np.isfinite(raw)):
                    report.skip("pred_probs_wrong_length_used_confidence")
                else:
                    if remap is not None:
                        fill = -1e9 if probs_attr == "logits" else 0.0
                        raw = np.where(remap >= 0, raw[np.clip(remap, 0, None)], fill)
                    if probs_attr == "logits":
                        dist, src = _softmax(raw), PROB_SOURCE_LOGITS
                    else:
                        dist, src = np.clip(raw, 0.0, 1.0), PROB_SOURCE_ATTR
            if dist is None:
                conf = confs[j]
                if conf is None or not np.isfinite(conf):
                    n_pred_no_prob += 1
                    report.skip("pred_without_probability")
                    continue
                if lab not in cls_index:
                    report.skip("pred_unknown_class")
                    continue
                conf = float(np.clip(conf, 0.0, 1.0))
                dist = np.full(k, (1.0 - conf) / max(k - 1, 1))
                dist[cls_index[lab]] = conf
                src = PROB_SOURCE_SPREAD
            sources.add(src)
            rows.append(dist)
            own.append(cls_index.get(lab, int(np.argmax(dist))))
            used.append(j)
        if rows:
            P = np.asarray(rows)                                   # (M, K)
            mask = P >= cut
            mask[np.arange(len(own)), own] = True
            if extra is not None:
                mask |= P >= extra
            # cleanlab flattens the K class arrays in class order: keep ours in the same order.
            ent_cls, ent_row = np.nonzero(mask.T)
        else:
            P = np.zeros((0, k))
            ent_cls = ent_row = np.zeros(0, dtype=np.int64)
        used_a = np.asarray(used, dtype=np.int64)
        ent_box = pabs[used_a[ent_row]] if len(ent_row) else np.zeros((0, 4))
        ent_p = P[ent_row, ent_cls]
        bounds = np.searchsorted(ent_cls, np.arange(k + 1))
        table = np.concatenate([ent_box, ent_p[:, None]], axis=1).astype(np.float64)
        out.sample_ids.append(sid)
        out.labels.append({
            "bboxes": rel_xywh_to_abs_xyxy(keep_boxes, w, h).astype(np.float64).reshape(-1, 4),
            "labels": np.asarray(keep_cls, dtype=np.int64),
        })
        out.predictions.append([table[bounds[c]:bounds[c + 1]] for c in range(k)])
        src_j = used_a[ent_row]
        out.gt_ids.append(keep_ids)
        out.pred_ids.append([pr.ids[pi][j] for j in src_j])
        out.pred_classes.append(ent_cls.astype(np.int64))
        out.pred_boxes_rel.append([list(pr.boxes[pi][j]) for j in src_j])

    if n_pred_total and n_pred_no_prob == n_pred_total:
        raise ValueError(
            f"None of the {n_pred_total} predictions in '{params.pred_field}' has a confidence "
            "or per-class probabilities; cleanlab needs predicted probabilities. Store "
            "`confidence` (or a per-class `probs`/`logits` list) on each predicted detection."
        )
    if sources:
        # Report the weakest source used so an approximation is never hidden.
        for s in (PROB_SOURCE_SPREAD, PROB_SOURCE_LOGITS, PROB_SOURCE_ATTR):
            if s in sources:
                out.prob_source = s
                break
    report.info["prob_source"] = out.prob_source
    report.info["prob_sources_used"] = sorted(sources)
    report.info["classes"] = len(classes)
    return out


# --- cleanlab's auxiliary inputs, vectorised -------------------------------------------------
# cleanlab computes IoU and centre-distance matrices pair by pair in Python (twice: once for the
# dataset-wide minimum similarity, once per image). These reproduce its arithmetic operation by
# operation in float64 (tests/test_cleanlab.py checks bit equality of the resulting scores
# against cleanlab's public scorers), so the same matrices cost a few numpy calls per image.

def _iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """cleanlab's ``_get_overlap_matrix`` (a: (L,4), b: (M,4) xyxy float64)."""
    xl = np.maximum(a[:, None, 0], b[None, :, 0])
    yt = np.maximum(a[:, None, 1], b[None, :, 1])
    xr = np.minimum(a[:, None, 2], b[None, :, 2])
    yb = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = (xr - xl) * (yb - yt)
    a1 = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    a2 = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    iou = inter / np.clip(a1[:, None] + a2[None, :] - inter, cl_const.EPSILON, None)
    iou[(xr < xl) | (yb < yt)] = 0.0
    return iou


def _dist_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """cleanlab's ``_get_dist_matrix``: exp(-||centre_a - centre_b|| * EUC_FACTOR)."""
    ca = np.stack([(a[:, 0] + a[:, 2]) / 2, (a[:, 1] + a[:, 3]) / 2], axis=1)
    cb = np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], axis=1)
    d = (ca[:, None, :] - cb[None, :, :]).reshape(-1, 2)
    # np.linalg.norm of a 2-vector is sqrt(dot(v, v)); a batched matmul gives the same bits.
    norm = np.sqrt(np.matmul(d[:, None, :], d[:, :, None])[:, 0, 0]).reshape(len(a), len(b))
    return np.exp(-norm * cl_const.EUC_FACTOR)


def _flatten_prediction(prediction: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """cleanlab's ``_separate_prediction_single_box``: boxes, class and probability per entry."""
    lens = [len(p) for p in prediction]
    flat = np.concatenate(prediction, axis=0) if sum(lens) else np.zeros((0, 5))
    flat = flat.astype(np.float64)
    return flat[:, :4], np.repeat(np.arange(len(prediction)), lens), flat[:, 4]


def image_aux(alpha: float, label: Mapping[str, np.ndarray], prediction: Sequence[np.ndarray],
              min_possible_similarity: float | None = None) -> dict[str, Any]:
    """One image's auxiliary inputs in cleanlab's format (``auxiliary_inputs[i]``)."""
    lab_bboxes = np.asarray(label["bboxes"], dtype=np.float64).reshape(-1, 4)
    lab_labels = np.asarray(label["labels"])
    pred_bboxes, pred_labels, pred_probs = _flatten_prediction(prediction)
    iou = _iou_matrix(lab_bboxes, pred_bboxes)
    dist_matrix = 1 - _dist_matrix(lab_bboxes, pred_bboxes)
    sim = iou * alpha + (1 - alpha) * (1 - dist_matrix)
    return {"pred_labels": pred_labels, "pred_label_probs": pred_probs,
            "pred_bboxes": pred_bboxes, "lab_labels": lab_labels, "lab_bboxes": lab_bboxes,
            "similarity_matrix": sim, "iou_matrix": iou,
            "min_possible_similarity": min_possible_similarity}


def _image_min_similarity(sim: np.ndarray) -> float:
    """cleanlab's per-image term of ``_get_min_possible_similarity``."""
    nz = sim[np.nonzero(sim)]
    return 1.0 if 0 in sim.shape or nz.size == 0 else float(np.min(nz))


# --- dataset-wide statistics (computed once, shared by every chunk / shard) -----------------

_AP_IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)


@dataclass
class CleanlabStats:
    """Dataset-wide quantities cleanlab derives from all images at once.

    ``min_possible_similarity`` enters swap / overlooked scores; ``per_class_ap`` (cleanlab's
    ``_get_per_class_ap``: AP over IoU 0.5:0.95 x ``AP_SCALE_FACTOR``) sets the default per-class
    tagging thresholds. Computing them in a first pass and handing them to every chunk or
    shard makes streamed and sharded scores equal single-pass scores.
    """

    min_possible_similarity: float
    per_class_ap: dict[int, float]
    classes: list[str]
    probs_attr: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"min_possible_similarity": self.min_possible_similarity,
                "per_class_ap": {str(k): v for k, v in self.per_class_ap.items()},
                "classes": self.classes, "probs_attr": self.probs_attr}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CleanlabStats":
        return cls(float(d["min_possible_similarity"]),
                   {int(k): float(v) for k, v in d["per_class_ap"].items()},
                   list(d["classes"]), d.get("probs_attr"))


class _StatsAccumulator:
    """Streams images in; keeps one small row per prediction entry for the per-class AP."""

    def __init__(self, k: int):
        self.k = k
        self.min_sim = 1.0
        self.num_gts = np.zeros(k, dtype=np.int64)
        self.parts: list[tuple[np.ndarray, ...]] = []
        self.n_images = 0

    def add(self, labels: Sequence[Mapping], predictions: Sequence[Sequence[np.ndarray]],
            alpha: float) -> list[dict[str, Any]]:
        auxes = []
        img, cls, prob, iou_max, lab_idx = [], [], [], [], []
        for label, prediction in zip(labels, predictions):
            a = image_aux(alpha, label, prediction)
            auxes.append(a)
            self.min_sim = min(self.min_sim, _image_min_similarity(a["similarity_matrix"]))
            ll, pl = a["lab_labels"], a["pred_labels"]
            self.num_gts += np.bincount(ll.astype(np.int64), minlength=self.k)[: self.k]
            m = len(pl)
            if m:
                # cleanlab matches a prediction only against labels of its own class:
                # IoU of other classes' labels is masked out (-1 = no same-class label).
                iou = np.where(ll[:, None] == pl[None, :], a["iou_matrix"], -1.0)
                if len(ll):
                    iou_max.append(iou.max(axis=0))
                    # argmax among same-class labels, in their order (cleanlab's ious.argmax)
                    lab_idx.append(np.argmax(iou, axis=0))
                else:
                    iou_max.append(np.full(m, -1.0))
                    lab_idx.append(np.zeros(m, dtype=np.int64))
                img.append(np.full(m, self.n_images))
                cls.append(pl)
                prob.append(a["pred_label_probs"])
            self.n_images += 1
        if img:
            self.parts.append(tuple(np.concatenate(x) for x in (img, cls, prob, iou_max, lab_idx)))
        return auxes

    def finish(self, classes: list[str], probs_attr: str | None) -> CleanlabStats:
        if self.parts:
            img, cls, prob, iou_max, lab_idx = (np.concatenate(x) for x in zip(*self.parts))
        else:
            img = cls = lab_idx = np.zeros(0, dtype=np.int64)
            prob = iou_max = np.zeros(0)
        return CleanlabStats(float(self.min_sim),
                             _per_class_ap(img, cls, prob, iou_max, lab_idx, self.num_gts, self.k),
                             list(classes), probs_attr)


def _average_precision(recalls: np.ndarray, precisions: np.ndarray) -> float:
    """cleanlab's ``_calculate_average_precision`` with its backward max loop vectorised."""
    r = np.concatenate([[0.0], recalls, [1.0]]).astype(recalls.dtype)
    p = np.concatenate([[0.0], precisions, [0.0]]).astype(precisions.dtype)
    p = np.maximum.accumulate(p[::-1])[::-1]
    idx = np.where(r[1:] != r[:-1])[0]
    return np.float32(np.sum((r[idx + 1] - r[idx]) * p[idx + 1]))


def _per_class_ap(img, cls, prob, iou_max, lab_idx, num_gts, k) -> dict[int, float]:
    """cleanlab's ``_get_per_class_ap`` in-process and vectorised (no fork ``Pool``).

    Per image and class, predictions are matched greedily in decreasing probability to the
    same-class label of highest IoU (a label matched twice makes a false positive), at each
    IoU threshold 0.5:0.95; AP is then cleanlab's all-point interpolation per class.
    """
    n = len(prob)
    order = np.lexsort((np.arange(n), -prob, cls, img))   # per (image, class): prob desc, stable
    lmax = int(lab_idx.max()) + 1 if n else 1
    key = (img.astype(np.int64) * k + cls) * lmax + lab_idx
    tp = np.zeros((len(_AP_IOU_THRESHOLDS), n), dtype=np.float32)
    for t, thr in enumerate(_AP_IOU_THRESHOLDS):
        cand = order[iou_max[order] >= thr]
        _, first = np.unique(key[cand], return_index=True)   # first match of each label = TP
        tp[t, cand[first]] = 1.0
    fp = 1.0 - tp
    eps = np.finfo(np.float32).eps
    by_class = np.argsort(cls, kind="stable")
    bounds = np.searchsorted(cls[by_class], np.arange(k + 1))
    out: dict[int, float] = {}
    for c in range(k):
        idx = by_class[bounds[c]:bounds[c + 1]]    # cleanlab's np.vstack order: image, then row
        sort_inds = np.argsort(-prob[idx])
        aps = []
        for t in range(len(_AP_IOU_THRESHOLDS)):
            tpc = np.cumsum(tp[t, idx][sort_inds])
            fpc = np.cumsum(fp[t, idx][sort_inds])
            recalls = tpc / np.maximum(np.array([num_gts[c]]), eps)
            precisions = tpc / np.maximum(tpc + fpc, eps)
            aps.append(np.array([_average_precision(recalls, precisions)], dtype=np.float32))
        out[c] = float(np.mean(aps) * cl_const.AP_SCALE_FACTOR)
    return out


def compute_stats(chunks: Iterable[CleanlabInputs], params: CleanlabParams, classes: list[str],
                  probs_attr: str | None) -> CleanlabStats:
    """First pass: dataset-wide minimum similarity and per-class AP over every chunk."""
    acc = _StatsAccumulator(len(classes))
    for inputs in chunks:
        acc.add(inputs.labels, inputs.predictions, params.alpha)
    return acc.finish(classes, probs_attr)


@dataclass
class CleanlabScores:
    """Per-box scores from cleanlab, aligned with :class:`CleanlabInputs` rows."""

    label_quality: np.ndarray
    badloc: list[np.ndarray]
    swap: list[np.ndarray]
    overlooked: list[np.ndarray]
    swap_match: list[np.ndarray]    # index into flattened preds, -1 if none
    badloc_match: list[np.ndarray]  # index into flattened preds, -1 if none
    support: list[np.ndarray]       # max IoU with any confident prediction, any class
    thresholds: dict[str, Any]


def _best_matches(aux: list[dict], params: CleanlabParams) -> tuple[list, list]:
    """Which prediction each swap / badloc score was computed from (cleanlab keeps it private).

    Mirrors the candidate sets of cleanlab's ``_compute_swap_box_scores_for_image`` and
    ``_compute_badloc_box_scores_for_image``: the most similar other-class prediction above the
    high threshold, and the most similar same-class prediction above the low threshold that
    overlaps the box.
    """
    swaps, badlocs = [], []
    for a in aux:
        pl, pp, sim, iou = a["pred_labels"], a["pred_label_probs"], a["similarity_matrix"], a["iou_matrix"]
        ll = a["lab_labels"]
        if not len(pl):
            swaps.append(np.full(len(ll), -1, dtype=np.int64))
            badlocs.append(np.full(len(ll), -1, dtype=np.int64))
            continue
        same = ll[:, None] == pl[None, :]
        sw = ~same & (pp > params.high_probability_threshold)[None, :]
        bl = same & (pp > params.low_probability_threshold)[None, :] & (iou > 0)
        swaps.append(np.where(sw.any(1), np.argmax(np.where(sw, sim, -np.inf), 1), -1))
        badlocs.append(np.where(bl.any(1), np.argmax(np.where(bl, sim, -np.inf), 1), -1))
    return swaps, badlocs


def thresholds_for(stats: CleanlabStats, params: CleanlabParams) -> dict[str, Any]:
    """Fixed thresholds, or cleanlab's per-class rule (AP x factor) where left ``None``."""
    thresholds: dict[str, Any] = {}
    for name, factor in (("badloc", cl_const.BADLOC_THRESHOLD_FACTOR),
                         ("swap", cl_const.SWAP_THRESHOLD_FACTOR),
                         ("overlooked", cl_const.OVERLOOKED_THRESHOLD_FACTOR)):
        fixed = getattr(params, f"{name}_threshold")
        thresholds[name] = fixed if fixed is not None else {
            stats.classes[c]: float(v * factor) for c, v in stats.per_class_ap.items()}
    return thresholds


def compute_scores(inputs: CleanlabInputs, params: CleanlabParams,
                   stats: CleanlabStats | None = None) -> CleanlabScores:
    """Run cleanlab's scorers over ``inputs`` with the dataset-wide ``stats`` (computed from
    ``inputs`` alone when not given). Auxiliary inputs are computed once and shared."""
    labels, preds = inputs.labels, inputs.predictions
    if stats is None:
        stats = compute_stats([inputs], params, inputs.classes, None)
    aux = [image_aux(params.alpha, l, p, stats.min_possible_similarity)
           for l, p in zip(labels, preds)]
    overlooked = cl_rank.compute_overlooked_box_scores(
        alpha=params.alpha, high_probability_threshold=params.high_probability_threshold,
        auxiliary_inputs=aux)
    badloc = cl_rank.compute_badloc_box_scores(
        alpha=params.alpha, low_probability_threshold=params.low_probability_threshold,
        auxiliary_inputs=aux)
    swap = cl_rank.compute_swap_box_scores(
        alpha=params.alpha, high_probability_threshold=params.high_probability_threshold,
        overlapping_label_check=params.overlapping_label_check, auxiliary_inputs=aux)
    # cleanlab's _get_subtype_label_quality_scores, on the box scores already computed.
    weights = cl_rank._get_aggregation_weights(params.aggregation_weights)
    pool = lambda s: cl_rank.pool_box_scores_per_image(s, temperature=params.temperature)
    quality = np.exp(
        weights["overlooked"] * np.log(cl_const.TINY_VALUE + pool(overlooked))
        + weights["badloc"] * np.log(cl_const.TINY_VALUE + pool(badloc))
        + weights["swap"] * np.log(cl_const.TINY_VALUE + pool(swap)))
    swap_match, badloc_match = _best_matches(aux, params)
    # Does any confident prediction (of any class) overlap the box at all? A box with no
    # support is what a spurious label (a box on background) looks like; cleanlab's own
    # scores read "clean" (1.0) there, so this is the complementary signal.
    support = []
    for a in aux:
        conf = a["pred_label_probs"] > params.low_probability_threshold
        iou = a["iou_matrix"][:, conf]
        support.append(iou.max(axis=1) if iou.shape[1] else np.zeros(len(a["lab_labels"])))
    return CleanlabScores(quality, badloc, swap, overlooked, swap_match, badloc_match, support,
                          thresholds_for(stats, params))


def _threshold_for(thresholds: dict, name: str, cls: str) -> float:
    t = thresholds[name]
    return float(t) if not isinstance(t, dict) else float(t.get(cls, 0.0))


def _nan_to_none(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


CONFIG_FIELD = "cleanlab_config"   # per sample: hash of the run configuration that scored it
DEFAULT_CHUNK = 5000               # samples read, scored and written together
MAX_CACHED_SAMPLES = 20000         # inputs kept in memory between the two passes up to this


def iter_chunks(collection, params: CleanlabParams, classes: list[str], probs_attr: str | None,
                report: RunReport, sample_ids: Sequence[str] | None = None,
                chunk_size: int = DEFAULT_CHUNK) -> Iterable[tuple[Any, CleanlabInputs]]:
    """Yield ``(chunk view, inputs)`` over ``sample_ids`` (default: all of ``collection``)."""
    ids = list(sample_ids) if sample_ids is not None else collection.values("id")
    for s in range(0, len(ids), chunk_size):
        view = collection.select(ids[s:s + chunk_size])
        yield view, build_inputs(view, params, report, classes, probs_attr)


def config_hash(params: CleanlabParams, ov_field: str, stats: CleanlabStats) -> str:
    """Identity of a run configuration: parameters + dataset-wide statistics."""
    blob = json.dumps({"params": asdict(params), "ov_field": ov_field, "stats": stats.to_dict()},
                      sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def prepare(collection, params: CleanlabParams, *, chunk_size: int = DEFAULT_CHUNK,
            sample_ids: Sequence[str] | None = None, keep_inputs: bool = False,
            report: RunReport | None = None) -> tuple[CleanlabStats, list | None]:
    """First pass over the collection: the dataset-wide statistics (and, if asked and small
    enough, the chunk inputs so the second pass need not read them again; their skips and
    sources are then counted in ``report``)."""
    classes, probs_attr = resolve_run_inputs(collection, params)
    ids = list(sample_ids) if sample_ids is not None else collection.values("id")
    keep = keep_inputs and len(ids) <= MAX_CACHED_SAMPLES
    acc = _StatsAccumulator(len(classes))
    cached = [] if keep else None
    scratch = report if (keep and report is not None) else RunReport(judge="cleanlab-stats")
    for view, inputs in iter_chunks(collection, params, classes, probs_attr, scratch, ids,
                                    chunk_size):
        acc.add(inputs.labels, inputs.predictions, params.alpha)
        if keep:
            cached.append((view, inputs))
    if acc.n_images == 0:
        scratch = scratch if scratch.samples_seen else RunReport(judge="cleanlab-stats")
        raise ValueError(
            f"Nothing to score: none of the {scratch.samples_seen} samples in scope has both "
            f"image size and '{params.pred_field}' (skipped: {dict(scratch.skipped)}); "
            "nothing was written")
    return acc.finish(classes, probs_attr), cached


def _declare_outputs(collection, ov_field: str) -> None:
    """Declare the sample fields up front: a chunk whose values are all None could not infer
    them (FiftyOne's "Cannot infer an appropriate type")."""
    ds = collection._dataset
    schema = ds.get_field_schema()
    for name, ftype, kw in (("cleanlab_label_quality", fo.FloatField, {}),
                            ("cleanlab_issue", fo.BooleanField, {}),
                            (CONFIG_FIELD, fo.StringField, {}),
                            (ov_field, fo.EmbeddedDocumentField, {"embedded_doc_type": fo.Detections})):
        if name not in schema:
            ds.add_sample_field(name, ftype, **kw)
    lgf.declare_attrs(ds, f"{ov_field}.detections",
                      {"cleanlab_overlooked": fo.FloatField, "source_pred_id": fo.StringField})


def score_samples(collection, params: CleanlabParams, stats: CleanlabStats, ov_field: str,
                  report: RunReport, *, sample_ids: Sequence[str] | None = None,
                  chunk_size: int = DEFAULT_CHUNK, config: str | None = None,
                  skip_done: bool = False, cached: list | None = None,
                  progress: Callable[[int, int], None] | None = None) -> int:
    """Second pass: score and write chunk by chunk with the shared ``stats``; returns the
    number of samples processed.

    Each chunk's writes end with ``cleanlab_config = config`` on its samples, so with
    ``skip_done`` a resumed (or re-queued) shard only scores samples not yet written by this
    configuration. Memory is bounded by ``chunk_size``.
    """
    config = config or config_hash(params, ov_field, stats)
    if skip_done:
        scope = collection.select(sample_ids) if sample_ids is not None else collection
        sample_ids = scope.match(F(CONFIG_FIELD) != config).values("id")
    _declare_outputs(collection, ov_field)
    thresholds = thresholds_for(stats, params)
    chunks = cached if cached is not None else iter_chunks(
        collection, params, stats.classes, stats.probs_attr, report, sample_ids, chunk_size)
    total = len(sample_ids) if sample_ids is not None else None
    done = 0
    for view, inputs in chunks:
        scores = compute_scores(inputs, params, stats) if inputs.sample_ids else None
        _write_results(view, params, ov_field, inputs, scores, thresholds, report)
        chunk_ids = inputs.gt_table.sample_ids
        _write_sample_values(view, {sid: {CONFIG_FIELD: config} for sid in chunk_ids})
        done += len(chunk_ids)
        if progress:
            progress(done, total or done)
    return done


def run_cleanlab(collection, gt_field: str = "ground_truth", pred_field: str = "predictions",
                 *, progress: Callable[[int, int], None] | None = None,
                 overwrite: bool = False, wait: bool = False,
                 lease_ttl_s: float = DEFAULT_TTL_S, chunk_size: int = DEFAULT_CHUNK,
                 **kwargs: Any) -> RunReport:
    """Score ``gt_field`` against ``pred_field`` with cleanlab ObjectLab and write the results.

    Writes (all LOW = suspect, see :class:`CleanlabParams` for parameters):

    - on each ground-truth detection: ``cleanlab_badloc``, ``cleanlab_swap``,
      ``cleanlab_support`` (max IoU with any prediction above ``low_probability_threshold``,
      any class: 0 = nothing the model sees is there, a possibly spurious box),
      ``cleanlab_swap_label`` (the class the swap score points to), ``cleanlab_swap_pred_id``,
      ``cleanlab_badloc_pred_id`` (the prediction a fix could take the box from);
    - on each sample: ``cleanlab_label_quality``, ``cleanlab_issue`` (any box flagged) and
      ``cleanlab_config`` (which run configuration scored it);
    - ``<gt_field>_overlooked``: predicted boxes cleanlab considers possibly overlooked, with
      ``cleanlab_overlooked`` and ``source_pred_id``, ready to review and adopt;
    - tags ``suspect:badloc`` / ``suspect:swap`` / ``suspect:overlooked`` on labels and samples
      past the thresholds, and ``suspect:cleanlab_issue`` on flagged samples.

    Only these fields and tags are written; labels and boxes are never changed. Samples that
    cannot be scored get ``None`` so no stale score survives a re-run. An existing
    ``overlooked_field`` that this judge did not write is refused unless ``overwrite=True``.

    Two passes, ``chunk_size`` samples at a time: the dataset-wide statistics (minimum
    similarity, per-class AP), then scores and writes; memory stays bounded by the chunk.
    The run holds a lease on (dataset, judge, ``gt_field``): a concurrent run on the same field
    raises :class:`grader.runs.LeaseHeld` (or waits, ``wait=True``); the run record reads
    ``state="running"`` until it is ``"complete"`` or ``"failed"``.
    """
    params = CleanlabParams(gt_field=gt_field, pred_field=pred_field, **kwargs)
    params.validate()
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    progress = progress or (lambda done, total: None)
    report = RunReport(judge="cleanlab")
    ov_field = check_output_fields(collection, params, overwrite)

    with run_lease(collection, RUN_KEY, {**asdict(params), "overlooked_field": ov_field},
                   resource=gt_field, ttl_s=lease_ttl_s, wait=wait) as lease:
        progress(0, 4)
        ensure_metadata(collection)
        stats, cached = prepare(collection, params, chunk_size=chunk_size, keep_inputs=True,
                                report=report)
        progress(1, 4)
        score_samples(collection, params, stats, ov_field, report, chunk_size=chunk_size,
                      cached=cached)
        progress(3, 4)
        _finish_report(report, stats)
        lease.report = report.to_dict()
    progress(4, 4)
    return report


def _finish_report(report: RunReport, stats: CleanlabStats) -> None:
    report.info["class_list"] = list(stats.classes)
    report.info["min_possible_similarity"] = stats.min_possible_similarity


# --- sharded runs (one delegated operation per shard; see operators/_shards.py) -------------

def plan_sharded_run(collection, num_shards: int, gt_field: str = "ground_truth",
                     pred_field: str = "predictions", *, overwrite: bool = False,
                     chunk_size: int = DEFAULT_CHUNK, lease_ttl_s: float = DEFAULT_TTL_S,
                     **kwargs: Any) -> dict[str, Any]:
    """First pass of a sharded run: validate, compute the dataset-wide statistics once, and
    record the plan (parameters, statistics, deterministic id ranges) every shard reads.

    The run record reads ``state="running"`` until the last shard finalises it. Shards are
    run by :func:`run_shard` (any process, any machine on the same database).
    """
    params = CleanlabParams(gt_field=gt_field, pred_field=pred_field, **kwargs)
    params.validate()
    ov_field = check_output_fields(collection, params, overwrite)
    record = {**asdict(params), "overlooked_field": ov_field, "num_shards": int(num_shards)}
    with run_lease(collection, RUN_KEY, record, resource=gt_field, ttl_s=lease_ttl_s,
                   record=False):
        ensure_metadata(collection)
        stats, _ = prepare(collection, params, chunk_size=chunk_size)
        config = config_hash(params, ov_field, stats)
        plan = runs.create_plan(collection, RUN_KEY, gt_field, num_shards, config, {
            "params": asdict(params), "ov_field": ov_field, "stats": stats.to_dict(),
            "chunk_size": int(chunk_size), "lease_ttl_s": float(lease_ttl_s)})
        runs.record_state(collection, RUN_KEY, {**record, "plan_id": plan["_id"]},
                          runs.STATE_RUNNING, None, started_at=runs._now().isoformat())
    return plan


def run_shard(collection, plan_id: str, index: int, *,
              progress: Callable[[int, int], None] | None = None,
              wait_timeout_s: float | None = None) -> RunReport:
    """Score shard ``index`` of a planned run over ``collection`` (the run's full view).

    Idempotent and resumable: it holds the shard's lease (a second worker on the same shard
    waits, or takes over once a dead holder's lease expires) and only scores samples whose
    ``cleanlab_config`` is not this run's configuration. The worker completing the last
    shard marks the run record complete.
    """
    plan = runs.get_plan(plan_id)
    n = plan["num_shards"]
    if not 0 <= index < n:
        raise ValueError(f"shard index {index} out of range for {n} shards")
    pl = plan["payload"]
    params = CleanlabParams(**pl["params"])
    stats = CleanlabStats.from_dict(pl["stats"])
    ttl = pl["lease_ttl_s"]
    report = RunReport(judge="cleanlab")
    report.info["shard"] = f"{index + 1}/{n}"
    lease = runs.acquire(runs.shard_lease_id(plan_id, index), ttl_s=ttl, wait=True,
                         wait_timeout_s=wait_timeout_s if wait_timeout_s is not None else 4 * ttl,
                         info={"plan_id": plan_id, "shard": index})
    try:
        shard = runs.shard_range_view(collection, plan["bounds"], index)
        before = [0]

        def on_chunk(done: int, total: int) -> None:
            runs.add_scored(plan_id, index, done - before[0], lease.holder)
            before[0] = done
            if progress:
                progress(done, total)

        n_done = score_samples(shard, params, stats, pl["ov_field"], report,
                               chunk_size=pl["chunk_size"], config=plan["config"],
                               skip_done=True, progress=on_chunk)
        report.info["samples_processed"] = n_done
    finally:
        lease.release()
    if lease.lost:
        raise runs.LeaseHeld(f"shard {index} lease was taken over during the run; re-queue it")
    if runs.mark_shard_done(plan_id, index):
        finalize_sharded_run(collection, plan_id)
        report.info["finalized_run"] = True
    return report


def finalize_sharded_run(collection, plan_id: str) -> None:
    """Final step once every shard is done: the run record becomes ``complete``."""
    plan = runs.get_plan(plan_id)
    pl = plan["payload"]
    n_cfg = len(collection.match(F(CONFIG_FIELD) == plan["config"]))
    summary = {"num_shards": plan["num_shards"], "scored_per_shard": plan.get("scored", {}),
               "samples_with_this_config": n_cfg, "samples_in_scope": len(collection),
               "min_possible_similarity": pl["stats"]["min_possible_similarity"],
               "class_list": pl["stats"]["classes"]}
    runs.record_state(collection, RUN_KEY,
                      {**pl["params"], "overlooked_field": pl["ov_field"],
                       "num_shards": plan["num_shards"], "plan_id": plan_id},
                      runs.STATE_COMPLETE, {"info": summary},
                      finished_at=runs._now().isoformat())
    runs.mark_plan_complete(plan_id)


def check_output_fields(collection, params: CleanlabParams, overwrite: bool = False) -> str:
    """Validate input and output fields before any write; return the overlooked field name.

    The overlooked field must not be an input, and an existing field there must be a
    ``Detections`` field this judge wrote (its detections carry ``cleanlab_overlooked``)
    unless ``overwrite=True``.
    """
    lgf.detections_path(collection, params.gt_field)
    lgf.detections_path(collection, params.pred_field)
    ov_field = params.overlooked_field or f"{params.gt_field}_overlooked"
    if ov_field in (params.gt_field, params.pred_field):
        raise ValueError(f"overlooked_field '{ov_field}' would overwrite an input field")
    schema = collection._dataset.get_field_schema(flat=True)
    doc_type = getattr(schema.get(ov_field), "document_type", None)
    if ov_field in schema and doc_type is not fo.Detections:
        raise ValueError(f"overlooked_field '{ov_field}' exists and is not a Detections field "
                         f"({schema[ov_field]}); choose another name")
    if ov_field in schema and not overwrite:
        ours = (doc_type is fo.Detections
                and f"{ov_field}.detections.cleanlab_overlooked" in schema)
        if not ours:
            raise ValueError(
                f"overlooked_field '{ov_field}' already exists and was not written by the "
                "cleanlab judge; choose another name or pass overwrite=True to replace it")
    return ov_field


def _write_results(collection, params: CleanlabParams, ov_field: str, inputs: CleanlabInputs,
                   scores: CleanlabScores | None, thresholds: Mapping[str, Any],
                   report: RunReport) -> None:
    """Write one chunk's scores, fields and tags (tags are replaced within ``collection`` only)."""
    gt_field = params.gt_field
    classes = inputs.classes
    gt_tab = inputs.gt_table
    # Every GT label in scope gets a value (None when unscored) so re-runs leave nothing stale.
    attrs = ("cleanlab_badloc", "cleanlab_swap", "cleanlab_support", "cleanlab_swap_label",
             "cleanlab_swap_pred_id", "cleanlab_badloc_pred_id")
    values: dict[str, dict[tuple[str, str], Any]] = {a: {} for a in attrs}
    for sid, ids in zip(gt_tab.sample_ids, gt_tab.ids):
        for lid in ids:
            for a in attrs:
                values[a][(sid, lid)] = None

    tagged: dict[str, list[str]] = {TAG_BADLOC: [], TAG_SWAP: []}
    sample_tags: dict[str, set[str]] = {TAG_BADLOC: set(), TAG_SWAP: set(),
                                        TAG_OVERLOOKED: set(), TAG_ISSUE: set()}
    quality: dict[str, float | None] = {sid: None for sid in gt_tab.sample_ids}
    issue: dict[str, bool | None] = {sid: None for sid in gt_tab.sample_ids}
    overlooked: dict[str, fo.Detections | None] = {sid: None for sid in gt_tab.sample_ids}

    for i, sid in enumerate(inputs.sample_ids if scores is not None else []):
        lab_cls = inputs.labels[i]["labels"]
        flagged = False
        for r, lid in enumerate(inputs.gt_ids[i]):
            cname = classes[lab_cls[r]]
            b, s = float(scores.badloc[i][r]), float(scores.swap[i][r])
            key = (sid, lid)
            values["cleanlab_badloc"][key] = _nan_to_none(b)
            values["cleanlab_swap"][key] = _nan_to_none(s)
            values["cleanlab_support"][key] = float(scores.support[i][r])
            sm, bm = scores.swap_match[i][r], scores.badloc_match[i][r]
            if sm >= 0:
                values["cleanlab_swap_label"][key] = classes[inputs.pred_classes[i][sm]]
                values["cleanlab_swap_pred_id"][key] = inputs.pred_ids[i][sm]
            if bm >= 0:
                values["cleanlab_badloc_pred_id"][key] = inputs.pred_ids[i][bm]
            # cleanlab's rule: NaN counts as 1.0 (clean) and "issue" means score <= threshold.
            if (b if b == b else 1.0) <= _threshold_for(thresholds, "badloc", cname):
                tagged[TAG_BADLOC].append(lid)
                sample_tags[TAG_BADLOC].add(sid)
                flagged = True
            if (s if s == s else 1.0) <= _threshold_for(thresholds, "swap", cname):
                tagged[TAG_SWAP].append(lid)
                sample_tags[TAG_SWAP].add(sid)
                flagged = True
            report.labels_scored += 1

        cands = []
        for j, sc in enumerate(scores.overlooked[i]):
            if not np.isfinite(sc):
                continue
            cname = classes[inputs.pred_classes[i][j]]
            is_flag = sc <= _threshold_for(thresholds, "overlooked", cname)
            cands.append(fo.Detection(
                label=cname,
                bounding_box=inputs.pred_boxes_rel[i][j],
                confidence=_pred_prob(inputs, i, j),
                cleanlab_overlooked=float(sc),
                source_pred_id=inputs.pred_ids[i][j],
                tags=[TAG_OVERLOOKED] if is_flag else [],
            ).to_mongo())
            if is_flag:
                sample_tags[TAG_OVERLOOKED].add(sid)
                flagged = True
        overlooked[sid] = {"_cls": "Detections", "detections": cands}
        quality[sid] = float(scores.label_quality[i])
        issue[sid] = flagged
        if flagged:
            sample_tags[TAG_ISSUE].add(sid)
        report.samples_scored += 1

    lgf.write_label_attrs(collection, gt_field, values)
    for tag, ids in tagged.items():
        report.tagged[tag] = report.tagged.get(tag, 0) + lgf.set_label_tag(
            collection, gt_field, tag, ids)
    _write_sample_values(collection, {sid: {"cleanlab_label_quality": quality[sid],
                                            "cleanlab_issue": issue[sid],
                                            ov_field: overlooked[sid]} for sid in quality})
    report.tagged[TAG_OVERLOOKED] = report.tagged.get(TAG_OVERLOOKED, 0) + sum(
        1 for d in overlooked.values() if d for x in d["detections"] if TAG_OVERLOOKED in x["tags"])
    for tag, sids in sample_tags.items():
        lgf.set_sample_tag(collection, tag, sids)
    report.info["samples_flagged"] = (report.info.get("samples_flagged", 0)
                                      + len(sample_tags[TAG_ISSUE]))
    report.info["thresholds"] = {
        k: (v if not isinstance(v, dict) else "per-class (cleanlab find_label_issues rule)")
        for k, v in thresholds.items()}
    report.fields = [f"{gt_field}.detections.{a}" for a in values] + [
        "cleanlab_label_quality", "cleanlab_issue", ov_field]


def _write_sample_values(collection, rows: Mapping[str, Mapping[str, Any]]) -> None:
    """``{sample_id: {field: value}}`` as one ``$set`` per sample in one bulk write (the
    fields are declared up front by :func:`_declare_outputs`; values are BSON-ready).
    FiftyOne's ``set_values`` once per field cost ~1 s per 10k samples and field."""
    if not rows:
        return
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    ops = [UpdateOne({"_id": ObjectId(sid)}, {"$set": {**vals, "last_modified_at": now}})
           for sid, vals in rows.items()]
    collection._dataset._bulk_write(ops, ids=list(rows))


def _pred_prob(inputs: CleanlabInputs, i: int, j: int) -> float:
    """Probability of flattened prediction entry ``j`` of image ``i`` (its class array's last column)."""
    c = inputs.pred_classes[i][j]
    offset = int(np.sum(inputs.pred_classes[i] < c))
    return float(inputs.predictions[i][c][j - offset, 4])


def suspects(collection, gt_field: str = "ground_truth", limit: int = 20) -> list[dict[str, Any]]:
    """The most suspect ground-truth boxes by cleanlab's lowest badloc/swap score, for summaries."""
    tab = lgf.read_detections(collection, gt_field, attrs=["cleanlab_badloc", "cleanlab_swap",
                                                             "cleanlab_swap_label"])
    rows = []
    for i, sid in enumerate(tab.sample_ids):
        for j, lid in enumerate(tab.ids[i]):
            b = tab.attrs["cleanlab_badloc"][i][j]
            s = tab.attrs["cleanlab_swap"][i][j]
            if b is None and s is None:
                continue
            issue, score = min((("badloc", b), ("swap", s)),
                               key=lambda t: 1.0 if t[1] is None else t[1])
            rows.append({"sample_id": sid, "filepath": tab.filepaths[i], "label_id": lid,
                         "label": tab.labels[i][j], "issue": issue, "score": score,
                         "suggested_label": tab.attrs["cleanlab_swap_label"][i][j]})
    rows.sort(key=lambda r: r["score"])
    return rows[:limit]
