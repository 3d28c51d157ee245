"""Scoring judges against injected errors, and the FiftyOne Brain ``compute_mistakenness`` baseline.

Metrics (numpy only; checked against scikit-learn in the tests):

- ``auroc``: area under the ROC curve (ties count one half);
- ``average_precision``: scikit-learn's step-wise AP over distinct score thresholds;
- ``precision_at_k`` / ``recall_at_fraction``: what a reviewer finds checking the top of the
  ranking. Tied scores are ordered at random, and these return the *expected* value over that
  random order, so a yes/no flag is not credited for the dataset order of its ties.

Per error type, positives are the labels carrying that injected error and negatives the clean
labels (``injected_error == "none"``); labels with another error type are left out (a badloc
judge is not penalised for also flagging swaps). ``any`` pools every error type. A label a
judge did not score ranks below every scored one.

Overlooked objects have no GT label to score: judges propose candidate boxes instead
(cleanlab's ``<gt>_overlooked`` field, Brain's ``possible_missing`` predictions). A candidate is
a hit when it overlaps a deleted box (IoU >= 0.5); recall counts deleted boxes found, out of
all deleted boxes (so a box no judge proposed still counts as missed).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from .boxes import iou_matrix
from .fields import detections_path, read_detections
from .noise import CLEAN, TRUTH_ATTR, deleted_field_name
from .report import RunReport
from .scores import GT_ISSUES, SCORES, ScoreSpec

GT_ERROR_TYPES = GT_ISSUES
BRAIN_KEY = "mistakenness"
TRUSTED_TAG = "verified"


# --------------------------------------------------------------------------- metrics

def _ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties get their average rank."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    ranks = np.empty(len(x), dtype=np.float64)
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and xs[j + 1] == xs[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def auroc(y_true: Sequence[int], scores: Sequence[float]) -> float:
    """ROC AUC (Mann-Whitney); NaN when only one class is present."""
    y = np.asarray(y_true, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    r = _ranks(s)
    return float((r[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(y_true: Sequence[int], scores: Sequence[float]) -> float:
    """Average precision as scikit-learn computes it: sum over thresholds of (ΔR) * P."""
    y = np.asarray(y_true, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos = int(y.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    ys, ss = y[order], s[order]
    # Last index of each group of tied scores: one operating point per distinct threshold.
    last = np.r_[np.nonzero(np.diff(ss))[0], len(ss) - 1]
    tp = np.cumsum(ys)[last]
    fp = (last + 1) - tp
    precision = tp / (tp + fp)
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def expected_hits_at_k(y_true: Sequence[int], scores: Sequence[float], k: int) -> float:
    """Expected number of positives in the top ``k`` when tied scores are ordered at random."""
    y = np.asarray(y_true, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    k = int(min(max(k, 0), len(s)))
    if k == 0:
        return 0.0
    kth = np.sort(s)[::-1][k - 1]
    above = s > kth
    tied = s == kth
    slots = k - int(above.sum())
    return float(y[above].sum() + slots * y[tied].sum() / tied.sum())


def precision_at_k(y_true: Sequence[int], scores: Sequence[float], k: int) -> float:
    """Share of errors among the top ``k`` (expected over random tie order)."""
    k = int(min(k, len(scores)))
    return expected_hits_at_k(y_true, scores, k) / k if k > 0 else float("nan")


def recall_at_fraction(y_true: Sequence[int], scores: Sequence[float], fraction: float = 0.1,
                       n_pos_total: int | None = None) -> float:
    """Share of all errors found when reviewing the top ``ceil(fraction * n)`` items.

    ``n_pos_total`` counts errors that are not among the items at all (e.g. deleted boxes that
    no candidate covers), so they count as missed.
    """
    y = np.asarray(y_true, dtype=bool)
    total = int(y.sum()) if n_pos_total is None else int(n_pos_total)
    if total == 0:
        return float("nan")
    k = int(math.ceil(fraction * len(y)))
    return expected_hits_at_k(y, scores, k) / total


def reliability(y_true: Sequence[int], probs: Sequence[float],
                bins: int = 10) -> tuple[float, list[tuple[float, float, float, int]]]:
    """Expected calibration error of scores read as probabilities, and the reliability
    diagram's rows ``(bin low, mean predicted, observed error rate, count)`` over ``bins``
    equal-width bins. Unscored (NaN) items are left out."""
    y = np.asarray(y_true, dtype=float)
    p = np.asarray(probs, dtype=float)
    ok = np.isfinite(p)
    y, p = y[ok], np.clip(p[ok], 0.0, 1.0)
    if not len(p):
        return float("nan"), []
    idx = np.minimum((p * bins).astype(int), bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            rows.append((b / bins, float(p[m].mean()), float(y[m].mean()), int(m.sum())))
            ece += m.sum() / len(p) * abs(p[m].mean() - y[m].mean())
    return float(ece), rows


def metric_row(y_true: Sequence[int], scores: Sequence[float], k: int = 20, fraction: float = 0.1,
               n_pos_total: int | None = None) -> dict[str, float]:
    """AUROC, AP, precision@k and recall@top-``fraction`` of one score for one error type."""
    y = np.asarray(y_true, dtype=bool)
    return {
        "auroc": auroc(y, scores),
        "ap": average_precision(y, scores),
        f"p@{k}": precision_at_k(y, scores, k),
        f"recall@{int(round(fraction * 100))}%": recall_at_fraction(y, scores, fraction, n_pos_total),
        "n_pos": int(y.sum()) if n_pos_total is None else int(n_pos_total),
        "n": int(len(y)),
    }


# --------------------------------------------------------------------------- reading scores

def present_score_specs(collection, field_name: str, on_candidates: bool = False,
                        exclude_judges: Iterable[str] = ()) -> list[ScoreSpec]:
    """Registered scores that exist as attributes on ``field_name``'s detections."""
    path = detections_path(collection, field_name)
    paths = set(collection.get_field_schema(flat=True))
    # Attributes written without declaring them (e.g. through Detections objects) are
    # "dynamic": present in the data but not in the schema.
    paths |= set(collection.get_dynamic_field_schema(fields=field_name) or {})
    ex = set(exclude_judges)
    return [s for s in SCORES if s.on_candidates == on_candidates and s.judge not in ex
            and f"{path}.{s.attr}" in paths]


def suspicion_column(spec: ScoreSpec, raw: Sequence[Any]) -> np.ndarray:
    """Raw attribute values -> 'higher = more suspect' floats, NaN where unscored.

    Yes/no flags (Brain's ``possible_spurious``) are only set when raised, so an unset flag is
    a 'no' (0), not a missing score.
    """
    vals = list(raw)
    is_flag = any(isinstance(v, (bool, np.bool_)) for v in vals)
    out = np.full(len(vals), np.nan)
    for i, v in enumerate(vals):
        if v is None:
            if is_flag:
                out[i] = 0.0
            continue
        if is_flag:
            out[i] = float(bool(v))
        else:
            f = float(v)
            if math.isfinite(f):
                out[i] = spec.suspicion(f)
    return out


def _fill_unscored(col: np.ndarray) -> np.ndarray:
    """Unscored labels rank below every scored one."""
    finite = col[np.isfinite(col)]
    floor = (finite.min() - 1.0) if len(finite) else 0.0
    return np.where(np.isfinite(col), col, floor)


@dataclass
class LabelScores:
    """Per-GT-label suspicion of every present score, with the recorded truth."""

    sample_ids: list[str]
    label_ids: list[str]
    truth: list[str | None]
    trusted: np.ndarray
    columns: dict[str, np.ndarray] = field(default_factory=dict)   # spec name -> suspicion
    specs: dict[str, ScoreSpec] = field(default_factory=dict)


def score_name(spec: ScoreSpec) -> str:
    return f"{spec.judge}:{spec.attr}"


def read_label_scores(collection, gt_field: str, truth_attr: str | None = TRUTH_ATTR,
                      specs: Sequence[ScoreSpec] | None = None,
                      trusted_tag: str = TRUSTED_TAG) -> LabelScores:
    """One read of every GT label's scores, its truth attribute and its sample's trusted flag."""
    specs = list(specs) if specs is not None else present_score_specs(collection, gt_field)
    attrs = [s.attr for s in specs] + ([truth_attr] if truth_attr else [])
    tab = read_detections(collection, gt_field, attrs=attrs)
    sample_tags = collection.values("tags")
    sids, lids, trusted, truth = [], [], [], []
    for i, ids in enumerate(tab.ids):
        is_trusted = trusted_tag in (sample_tags[i] or [])
        for j, lid in enumerate(ids):
            sids.append(tab.sample_ids[i])
            lids.append(lid)
            trusted.append(is_trusted)
            truth.append(tab.attrs[truth_attr][i][j] if truth_attr else None)
    out = LabelScores(sids, lids, truth, np.asarray(trusted, dtype=bool))
    for s in specs:
        raw = [v for row in tab.attrs[s.attr] for v in row]
        out.columns[score_name(s)] = suspicion_column(s, raw)
        out.specs[score_name(s)] = s
    return out


# --------------------------------------------------------------------------- Brain baseline

def run_brain_mistakenness(collection, gt_field: str = "ground_truth",
                           pred_field: str = "predictions", overwrite: bool = True) -> RunReport:
    """FiftyOne Brain's ``compute_mistakenness`` on ``gt_field`` vs ``pred_field``.

    Brain writes on GT detections ``mistakenness`` (class), ``mistakenness_loc`` (box) for
    labels matched to a prediction (IoU >= 0.5, class-agnostic) and ``possible_spurious=True``
    on unmatched ones; ``possible_missing=True`` on unmatched predictions with confidence > 0.95.
    Every prediction must have a ``confidence``. A previous run under the brain key
    ``mistakenness`` is deleted first (its fields too) when ``overwrite``.
    """
    import fiftyone.brain as fob

    detections_path(collection, gt_field)
    path = detections_path(collection, pred_field)
    n_noconf = collection.count(f"{path}") - collection.count(f"{path}.confidence")
    if n_noconf:
        raise ValueError(f"{n_noconf} predictions in '{pred_field}' have no confidence; "
                         "Brain's mistakenness needs one on every prediction")
    ds = collection._dataset
    if BRAIN_KEY in ds.list_brain_runs():
        if not overwrite:
            raise ValueError(f"brain run '{BRAIN_KEY}' exists; pass overwrite=True")
        ds.delete_brain_run(BRAIN_KEY)
    fob.compute_mistakenness(collection, pred_field, label_field=gt_field, progress=False)
    # Brain writes its label attributes with per-sample saves, which leaves them undeclared;
    # declare them so the App (and present_score_specs) can see and sort on them.
    ds.add_dynamic_sample_fields(fields=[gt_field, pred_field], add_mixed=True)
    report = RunReport(judge="brain")
    report.samples_seen = report.samples_scored = len(collection)
    report.labels_scored = collection.count(f"{gt_field}.detections")
    report.fields = ["mistakenness", "mistakenness_loc", "possible_spurious", "possible_missing"]
    return report


# --------------------------------------------------------------------------- evaluation

def _overlooked_candidates(collection, gt_field: str, pred_field: str | None,
                           deleted: list[list[list[float]]], sample_index: dict[str, int],
                           iou_thr: float, exclude: set[str]) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
    """Per candidate score: (hits, suspicion) over candidate boxes, and #deleted boxes covered."""
    sources: list[tuple[str, ScoreSpec]] = []
    ov_field = f"{gt_field}_overlooked"
    schema = collection.get_field_schema(flat=True)
    if ov_field in collection.get_field_schema():
        sources += [(ov_field, s) for s in present_score_specs(collection, ov_field, on_candidates=True)]
    brain_spec = ScoreSpec("possible_missing", "brain", "overlooked", True, on_candidates=True)
    brain_ran = BRAIN_KEY in collection._dataset.list_brain_runs() and (
        collection._dataset.get_brain_info(BRAIN_KEY).config.pred_field == pred_field)
    if pred_field and (brain_ran or f"{pred_field}.detections.possible_missing" in schema):
        # Brain sets the flag only when raised: a run that raised none still ranks candidates.
        sources.append((pred_field, brain_spec))
    out = {}
    for fld, spec in sources:
        tab = read_detections(collection, fld, attrs=[spec.attr])
        hits, sus, covered = [], [], set()
        for i, sid in enumerate(tab.sample_ids):
            if sid in exclude or not tab.ids[i]:
                continue
            k = sample_index[sid]
            col = suspicion_column(spec, tab.attrs[spec.attr][i])
            dl = deleted[k]
            if dl:
                ious = iou_matrix(_xyxy(tab.boxes[i]), _xyxy(dl))
                match = ious >= iou_thr
            else:
                match = np.zeros((len(tab.ids[i]), 0), dtype=bool)
            for j in range(len(tab.ids[i])):
                hits.append(bool(match[j].any()))
                sus.append(col[j])
                covered.update((k, int(m)) for m in np.nonzero(match[j])[0])
        out[score_name(spec)] = (np.asarray(hits, dtype=bool), np.asarray(sus, dtype=float),
                                 len(covered))
    return out


def _xyxy(boxes) -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.stack([b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]], axis=1)


def evaluate_judges(collection, gt_field: str = "noisy_ground_truth",
                    pred_field: str | None = "predictions", truth_attr: str = TRUTH_ATTR,
                    exclude_tag: str | None = TRUSTED_TAG, k: int = 20, fraction: float = 0.1,
                    iou_thr: float = 0.5, only_scored_by: Sequence[str] = ()) -> dict[str, Any]:
    """Score every present judge score against the injected errors on ``gt_field``.

    Returns ``{"gt": {error_type: {score_name: metrics}}, "overlooked": {score_name: metrics},
    "counts": {...}, "excluded_samples": n}``. Samples tagged ``exclude_tag`` (the ensemble's
    trusted subset) are left out so the ensemble is not scored on the labels it learned from.
    ``only_scored_by`` (score names, e.g. ``["brain:mistakenness"]``) restricts the GT tables to
    the labels those scores cover, where every judge has an opinion.
    """
    ls = read_label_scores(collection, gt_field, truth_attr=truth_attr, trusted_tag=exclude_tag or "")
    keep = ~ls.trusted if exclude_tag else np.ones(len(ls.label_ids), dtype=bool)
    for name in only_scored_by:
        if name not in ls.columns:
            raise ValueError(f"score '{name}' not present on '{gt_field}'; present: {sorted(ls.columns)}")
        keep = keep & np.isfinite(ls.columns[name])
    truth = np.array([t if t is not None else "unknown" for t in ls.truth], dtype=object)
    result: dict[str, Any] = {"gt": {}, "overlooked": {}, "counts": {}}
    result["excluded_samples"] = (len({s for s, t in zip(ls.sample_ids, ls.trusted) if t})
                                  if exclude_tag else 0)
    for err in GT_ERROR_TYPES + ("any",):
        pos = (truth != CLEAN) & (truth != "unknown") if err == "any" else (truth == err)
        sel = keep & (pos | (truth == CLEAN))
        result["counts"][err] = int((keep & pos).sum())
        if not (keep & pos).any():
            continue
        rows = {}
        for name, col in ls.columns.items():
            filled = _fill_unscored(col[sel])
            row = metric_row(pos[sel], filled, k=k, fraction=fraction)
            row["coverage"] = float(np.isfinite(col[sel]).mean()) if sel.any() else float("nan")
            if ls.specs[name].judge == "ensemble":
                # The ensemble's scores are meant as probabilities of the issue.
                row["ece"] = reliability(pos[sel], col[sel])[0]
            rows[name] = row
        result["gt"][err] = rows
    result["counts"]["clean"] = int((keep & (truth == CLEAN)).sum())

    del_field = deleted_field_name(gt_field)
    if del_field in collection.get_field_schema():
        sids, dboxes = collection.values(["id", f"{del_field}.detections.bounding_box"])
        tags = collection.values("tags")
        exclude = {s for s, t in zip(sids, tags) if exclude_tag and exclude_tag in (t or [])}
        deleted = [(b or []) if s not in exclude else [] for s, b in zip(sids, dboxes)]
        n_deleted = sum(len(b) for b in deleted)
        result["counts"]["overlooked"] = n_deleted
        if n_deleted and pred_field and pred_field in collection.get_field_schema():
            # The ceiling: deleted boxes that any prediction covers (IoU >= iou_thr), the most
            # that any judge proposing predicted boxes can find.
            pboxes = collection.values(f"{pred_field}.detections.bounding_box")
            hit = 0
            for dl, pl in zip(deleted, pboxes):
                if dl and pl:
                    hit += int((iou_matrix(_xyxy(dl), _xyxy(pl)) >= iou_thr).any(axis=1).sum())
            result["overlooked_ceiling"] = hit / n_deleted
        if n_deleted:
            index = {s: i for i, s in enumerate(sids)}
            cands = _overlooked_candidates(collection, gt_field, pred_field, deleted, index,
                                           iou_thr, exclude)
            for name, (hits, sus, covered) in cands.items():
                if not len(hits):
                    continue
                filled = _fill_unscored(sus)
                row = metric_row(hits, filled, k=k, fraction=fraction)
                row[f"recall@{int(round(fraction * 100))}%"] = (
                    expected_hits_at_k_deleted(hits, filled, fraction, n_deleted, covered))
                # A reviewer checking N = 1x / 2x as many candidates as there are missing boxes.
                for mult in (1, 2):
                    k_n = mult * n_deleted
                    row[f"recall@{mult}xN"] = min(expected_hits_at_k(hits, filled, k_n),
                                                   covered) / n_deleted
                row["n_pos"] = n_deleted
                row["coverage"] = covered / n_deleted
                result["overlooked"][name] = row
    return result


def expected_hits_at_k_deleted(hits: np.ndarray, scores: np.ndarray, fraction: float,
                               n_deleted: int, covered: int) -> float:
    """Recall over deleted boxes when reviewing the top ``fraction`` of candidates.

    Several candidates may cover one deleted box; the hit count among reviewed candidates is
    capped by the number of distinct deleted boxes the candidates cover.
    """
    k = int(math.ceil(fraction * len(hits)))
    return min(expected_hits_at_k(hits, scores, k), covered) / n_deleted


def format_table(result: dict[str, Any], title: str = "") -> str:
    """The per-error-type tables of :func:`evaluate_judges` as fixed-width text."""
    lines = [title] if title else []
    c = result.get("counts", {})
    lines.append("errors (evaluated): " + ", ".join(f"{k}={v}" for k, v in c.items())
                 + f"; trusted samples excluded: {result.get('excluded_samples', 0)}")
    blocks = list(result["gt"].items())
    if result.get("overlooked"):
        blocks.append(("overlooked", result["overlooked"]))
    for err, rows in blocks:
        if not rows:
            continue
        metric_keys = [m for m in next(iter(rows.values())) if m not in ("n_pos", "n", "coverage")]
        lines.append("")
        lines.append(f"== {err} (positives {next(iter(rows.values()))['n_pos']}) ==")
        lines.append(f"{'score':36s}" + "".join(f"{m:>11s}" for m in metric_keys) + f"{'coverage':>10s}")
        for name, row in sorted(rows.items(), key=lambda kv: -_nz(kv[1]["ap"])):
            lines.append(f"{name:36s}" + "".join(f"{row.get(m, float('nan')):11.3f}" for m in metric_keys)
                         + f"{row['coverage']:10.2f}")
    return "\n".join(lines)


def _nz(x: float) -> float:
    return -1.0 if x is None or (isinstance(x, float) and math.isnan(x)) else x
