"""cleanlab's inputs built from FiftyOne fields: the judge's parameters, the per-class
probability sources, and ``labels`` / ``predictions`` in cleanlab's own format (see the
package docstring)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
from cleanlab.internal import constants as cl_const

from ... import fields as lgf
from ...boxes import BOX_CLIPPED, BOX_DEGENERATE, rel_xywh_to_abs_xyxy, sanitize_rel_boxes
from ...classes import resolve_classes
from ...report import RunReport

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
