"""Scoring with cleanlab: the auxiliary inputs (vectorised, bit-equal to cleanlab's own), the
dataset-wide statistics (minimum similarity, per-class AP; computed once, shared by every chunk
and shard), the thresholds and the per-box scores with the prediction each refers to."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from cleanlab.internal import constants as cl_const
from cleanlab.object_detection import rank as cl_rank

from .inputs import CleanlabInputs, CleanlabParams

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
