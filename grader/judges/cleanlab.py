"""cleanlab ObjectLab judge: per-image label quality and per-box overlooked / swap / badloc scores.

Inputs are built in cleanlab's own format (checked against cleanlab 2.9's source):

- ``labels[i] = {"bboxes": (L, 4) absolute xyxy, "labels": (L,) int class}``
- ``predictions[i] = [K arrays of shape (M_k, 5)]``, row ``[x1, y1, x2, y2, p]``: one array
  per class (MMDetection style). A predicted box whose class distribution is known appears
  in every class array where its probability is at least ``min_class_prob``.

Scores come from cleanlab's public ``compute_*_box_scores`` functions; this module only adds
what cleanlab does not return: which prediction / class each score refers to, the mapping
back to FiftyOne label ids, thresholds, and the bulk writes.

Score convention (cleanlab's): every score is in [0, 1] and LOW means suspect.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, Sequence

import fiftyone as fo
import numpy as np
from cleanlab.internal import constants as cl_const
from cleanlab.object_detection import filter as cl_filter
from cleanlab.object_detection import rank as cl_rank

from .. import fields as lgf
from ..boxes import BOX_CLIPPED, BOX_DEGENERATE, rel_xywh_to_abs_xyxy, sanitize_rel_boxes
from ..classes import resolve_classes
from ..images import ensure_metadata
from ..report import RunReport
from ..runs import DEFAULT_TTL_S, run_lease

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
    - ``min_class_prob`` (0-1): a predicted box enters a class's array only if its probability
      for that class is at least this; lower values cost time, and entries below
      ``low_probability_threshold`` only affect cleanlab's dataset-wide minimum similarity.
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
    min_class_prob: float = 0.01
    badloc_threshold: float | None = None
    swap_threshold: float | None = None
    overlooked_threshold: float | None = None
    overlooked_field: str | None = None

    def validate(self) -> None:
        for name in ("alpha", "low_probability_threshold", "high_probability_threshold",
                     "min_class_prob"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
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


def build_inputs(collection, params: CleanlabParams, report: RunReport) -> CleanlabInputs:
    """Read both fields in one query each and build cleanlab's input arrays.

    Bad input is skipped and counted, never altered in the dataset: samples without image
    size or without predictions, degenerate boxes, unknown classes, predictions with no
    probability. Boxes partly outside the image are clipped for scoring only.
    """
    # store=False: a judge never writes dataset.classes as a side effect; the class list it
    # used is kept in the run record instead.
    classes = resolve_classes(collection, [params.gt_field, params.pred_field], params.classes,
                              store=False)
    if not classes:
        raise ValueError(
            f"No classes: '{params.gt_field}' and '{params.pred_field}' have no labels and the "
            "dataset has no class list; pass classes=[...]"
        )
    cls_index = {c: i for i, c in enumerate(classes)}
    k = len(classes)
    probs_attr = _detect_probs_attr(collection, params.pred_field, params.probs_attr)
    pred_attrs = ["confidence"] + ([probs_attr] if probs_attr else [])
    gt = lgf.read_detections(collection, params.gt_field)
    pr = lgf.read_detections(collection, params.pred_field, attrs=pred_attrs)
    report.samples_seen = len(gt)

    out = CleanlabInputs([], [], [], [], [], [], [], PROB_SOURCE_SPREAD, classes, gt_table=gt)
    sources = set()
    n_pred_total = n_pred_no_prob = 0
    for i, sid in enumerate(gt.sample_ids):
        w, h = gt.widths[i], gt.heights[i]
        if not w or not h:
            report.skip("sample_missing_metadata")
            out.skipped_samples.append(sid)
            continue
        if not pr.present[i]:
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

        # Predictions -> (class, box, prob, pred id) entries
        prel, pstatus = sanitize_rel_boxes(pr.boxes[i])
        entries: list[tuple[int, np.ndarray, float, str, list[float]]] = []
        confs = pr.attrs["confidence"][i]
        probs_col = pr.attrs[probs_attr][i] if probs_attr else [None] * len(pr.ids[i])
        pabs = rel_xywh_to_abs_xyxy(prel, w, h)
        for j, pid in enumerate(pr.ids[i]):
            n_pred_total += 1
            lab = pr.labels[i][j]
            if pstatus[j] == BOX_DEGENERATE:
                report.skip("pred_degenerate_box")
                continue
            dist = None
            raw = probs_col[j]
            if raw is not None:
                raw = np.asarray(raw, dtype=np.float64)
                if raw.shape != (k,) or not np.all(np.isfinite(raw)):
                    report.skip("pred_probs_wrong_length_used_confidence")
                else:
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
            for c in np.nonzero(dist >= params.min_class_prob)[0]:
                entries.append((int(c), pabs[j], float(dist[c]), pid, list(pr.boxes[i][j])))

        # cleanlab flattens the K class arrays in class order: keep ours in the same order.
        entries.sort(key=lambda e: e[0])
        per_class = [[] for _ in range(k)]
        for c, box, p, _, _ in entries:
            per_class[c].append([*box, p])
        out.sample_ids.append(sid)
        out.labels.append({
            "bboxes": rel_xywh_to_abs_xyxy(keep_boxes, w, h).astype(np.float32),
            "labels": np.asarray(keep_cls, dtype=np.int64),
        })
        out.predictions.append([
            np.asarray(rows, dtype=np.float32).reshape(-1, 5) for rows in per_class
        ])
        out.gt_ids.append(keep_ids)
        out.pred_ids.append([e[3] for e in entries])
        out.pred_classes.append(np.asarray([e[0] for e in entries], dtype=np.int64))
        out.pred_boxes_rel.append([e[4] for e in entries])

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
        sm = np.full(len(ll), -1, dtype=np.int64)
        bm = np.full(len(ll), -1, dtype=np.int64)
        for r, kcls in enumerate(ll):
            cand = np.nonzero((pl != kcls) & (pp > params.high_probability_threshold))[0]
            if cand.size:
                sm[r] = cand[np.argmax(sim[r, cand])]
            cand = np.nonzero((pl == kcls) & (pp > params.low_probability_threshold) & (iou[r] > 0))[0]
            if cand.size:
                bm[r] = cand[np.argmax(sim[r, cand])]
        swaps.append(sm)
        badlocs.append(bm)
    return swaps, badlocs


def compute_scores(inputs: CleanlabInputs, params: CleanlabParams) -> CleanlabScores:
    """Run cleanlab's scorers once over all images (shared auxiliary inputs)."""
    labels, preds = inputs.labels, inputs.predictions
    aux = cl_rank._get_valid_inputs_for_compute_scores(params.alpha, labels, preds)
    overlooked = cl_rank.compute_overlooked_box_scores(
        alpha=params.alpha, high_probability_threshold=params.high_probability_threshold,
        auxiliary_inputs=aux)
    badloc = cl_rank.compute_badloc_box_scores(
        alpha=params.alpha, low_probability_threshold=params.low_probability_threshold,
        auxiliary_inputs=aux)
    swap = cl_rank.compute_swap_box_scores(
        alpha=params.alpha, high_probability_threshold=params.high_probability_threshold,
        overlapping_label_check=params.overlapping_label_check, auxiliary_inputs=aux)
    quality = cl_rank._get_subtype_label_quality_scores(
        labels, preds, alpha=params.alpha,
        low_probability_threshold=params.low_probability_threshold,
        high_probability_threshold=params.high_probability_threshold,
        temperature=params.temperature, aggregation_weights=params.aggregation_weights,
        overlapping_label_check=params.overlapping_label_check)
    swap_match, badloc_match = _best_matches(aux, params)
    # Does any confident prediction (of any class) overlap the box at all? A box with no
    # support is what a spurious label (a box on background) looks like; cleanlab's own
    # scores read "clean" (1.0) there, so this is the complementary signal.
    support = []
    for a in aux:
        conf = a["pred_label_probs"] > params.low_probability_threshold
        iou = a["iou_matrix"][:, conf] if a["iou_matrix"].size else np.zeros((len(a["lab_labels"]), 0))
        support.append(iou.max(axis=1) if iou.shape[1] else np.zeros(len(a["lab_labels"])))

    thresholds: dict[str, Any] = {}
    need_auto = None in (params.badloc_threshold, params.swap_threshold, params.overlooked_threshold)
    ap = cl_filter._get_per_class_ap(labels, preds) if need_auto else {}
    for name, factor in (("badloc", cl_const.BADLOC_THRESHOLD_FACTOR),
                         ("swap", cl_const.SWAP_THRESHOLD_FACTOR),
                         ("overlooked", cl_const.OVERLOOKED_THRESHOLD_FACTOR)):
        fixed = getattr(params, f"{name}_threshold")
        thresholds[name] = fixed if fixed is not None else {
            inputs.classes[c]: float(v * factor) for c, v in ap.items()}
    return CleanlabScores(quality, badloc, swap, overlooked, swap_match, badloc_match, support,
                          thresholds)


def _threshold_for(thresholds: dict, name: str, cls: str) -> float:
    t = thresholds[name]
    return float(t) if not isinstance(t, dict) else float(t.get(cls, 0.0))


def _nan_to_none(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def run_cleanlab(collection, gt_field: str = "ground_truth", pred_field: str = "predictions",
                 *, progress: Callable[[int, int], None] | None = None,
                 overwrite: bool = False, wait: bool = False,
                 lease_ttl_s: float = DEFAULT_TTL_S, **kwargs: Any) -> RunReport:
    """Score ``gt_field`` against ``pred_field`` with cleanlab ObjectLab and write the results.

    Writes (all LOW = suspect, see :class:`CleanlabParams` for parameters):

    - on each ground-truth detection: ``cleanlab_badloc``, ``cleanlab_swap``,
      ``cleanlab_support`` (max IoU with any prediction above ``low_probability_threshold``,
      any class: 0 = nothing the model sees is there, a possibly spurious box),
      ``cleanlab_swap_label`` (the class the swap score points to), ``cleanlab_swap_pred_id``,
      ``cleanlab_badloc_pred_id`` (the prediction a fix could take the box from);
    - on each sample: ``cleanlab_label_quality`` and ``cleanlab_issue`` (any box flagged);
    - ``<gt_field>_overlooked``: predicted boxes cleanlab considers possibly overlooked, with
      ``cleanlab_overlooked`` and ``source_pred_id``, ready to review and adopt;
    - tags ``suspect:badloc`` / ``suspect:swap`` / ``suspect:overlooked`` on labels and samples
      past the thresholds, and ``suspect:cleanlab_issue`` on flagged samples.

    Only these fields and tags are written; labels and boxes are never changed. Samples that
    cannot be scored get ``None`` so no stale score survives a re-run. An existing
    ``overlooked_field`` that this judge did not write is refused unless ``overwrite=True``.

    The run holds a lease on (dataset, judge, ``gt_field``): a concurrent run on the same field
    raises :class:`grader.runs.LeaseHeld` (or waits, ``wait=True``); the run record reads
    ``state="running"`` until it is ``"complete"`` or ``"failed"``.
    """
    params = CleanlabParams(gt_field=gt_field, pred_field=pred_field, **kwargs)
    params.validate()
    progress = progress or (lambda done, total: None)
    report = RunReport(judge="cleanlab")
    ov_field = check_output_fields(collection, params, overwrite)

    with run_lease(collection, RUN_KEY, {**asdict(params), "overlooked_field": ov_field},
                   resource=gt_field, ttl_s=lease_ttl_s, wait=wait) as lease:
        progress(0, 4)
        ensure_metadata(collection)
        inputs = build_inputs(collection, params, report)
        if not inputs.sample_ids:
            raise ValueError(
                f"Nothing to score: none of the {report.samples_seen} samples in scope has "
                f"both image size and '{pred_field}' (skipped: {dict(report.skipped)}); "
                "nothing was written")
        progress(1, 4)
        scores = compute_scores(inputs, params)
        progress(2, 4)
        _write_results(collection, params, ov_field, inputs, scores, report)
        progress(3, 4)
        report.info["class_list"] = list(inputs.classes)
        lease.report = report.to_dict()
    progress(4, 4)
    return report


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
                   scores: CleanlabScores | None, report: RunReport) -> None:
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
            if np.nan_to_num(b, nan=1.0) <= _threshold_for(scores.thresholds, "badloc", cname):
                tagged[TAG_BADLOC].append(lid)
                sample_tags[TAG_BADLOC].add(sid)
                flagged = True
            if np.nan_to_num(s, nan=1.0) <= _threshold_for(scores.thresholds, "swap", cname):
                tagged[TAG_SWAP].append(lid)
                sample_tags[TAG_SWAP].add(sid)
                flagged = True
            report.labels_scored += 1

        cands = []
        for j, sc in enumerate(scores.overlooked[i]):
            if not np.isfinite(sc):
                continue
            cname = classes[inputs.pred_classes[i][j]]
            is_flag = sc <= _threshold_for(scores.thresholds, "overlooked", cname)
            cands.append(fo.Detection(
                label=cname,
                bounding_box=inputs.pred_boxes_rel[i][j],
                confidence=_pred_prob(inputs, i, j),
                cleanlab_overlooked=float(sc),
                source_pred_id=inputs.pred_ids[i][j],
                tags=[TAG_OVERLOOKED] if is_flag else [],
            ))
            if is_flag:
                sample_tags[TAG_OVERLOOKED].add(sid)
                flagged = True
        overlooked[sid] = fo.Detections(detections=cands)
        quality[sid] = float(scores.label_quality[i])
        issue[sid] = flagged
        if flagged:
            sample_tags[TAG_ISSUE].add(sid)
        report.samples_scored += 1

    lgf.write_label_attrs(collection, gt_field, values)
    for tag, ids in tagged.items():
        report.tagged[tag] = lgf.set_label_tag(collection, gt_field, tag, ids)
    lgf.write_sample_field(collection, "cleanlab_label_quality", quality)
    lgf.write_sample_field(collection, "cleanlab_issue", issue)
    lgf.write_sample_field(collection, ov_field, overlooked)
    lgf.declare_attrs(collection._dataset, f"{ov_field}.detections",
             {"cleanlab_overlooked": fo.FloatField, "source_pred_id": fo.StringField})
    report.tagged[TAG_OVERLOOKED] = sum(
        1 for d in overlooked.values() if d for x in d.detections if TAG_OVERLOOKED in x.tags)
    for tag, sids in sample_tags.items():
        lgf.set_sample_tag(collection, tag, sids)
    report.info["samples_flagged"] = len(sample_tags[TAG_ISSUE])
    report.info["thresholds"] = {
        k: (v if not isinstance(v, dict) else "per-class (cleanlab find_label_issues rule)")
        for k, v in (scores.thresholds.items() if scores else [])}
    report.fields = [f"{gt_field}.detections.{a}" for a in values] + [
        "cleanlab_label_quality", "cleanlab_issue", ov_field]


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
