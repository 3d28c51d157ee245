"""Overlooked objects: detector boxes that no ground-truth box accounts for, ranked for review.

Candidates come from the detector on the full image at a 640 input (``input_size``: small
objects are what its default 416 misses), plus sliced (tiled) inference on large images and,
when asked, a mirrored pass. The tiling and merge follow SAHI's algorithm (``sahi.slicing.
get_slice_bboxes``: fixed-size overlapping slices, the last ones aligned to the image edge;
``GREEDYNMM`` post-processing with the intersection-over-smaller metric). SAHI itself is not a
dependency: it requires ``opencv-python``, which would replace this stack's
``opencv-python-headless`` build of ``cv2``.

Merged candidates that a GT box accounts for are dropped (one-to-one matching at IoU >=
``gt_iou``, any class, and any candidate at IoU >= ``dup_iou``: :func:`unmatched_candidates`),
so are candidates on a labelled box of another class (:func:`suppress_other_class`); the rest
are scored (``overlooked_score``: noisy-OR of the passes' confidences, discounted by the
overlap with a GT box of the same class: :func:`rank_candidates`) and written to
``<gt>_overlooked`` with ``source`` ("full", "sliced" or "full+sliced").

Classes no detector knows (``label_mode``, :func:`dataset_label_mode`): the labelled boxes
say what each detector class means in the dataset (:class:`ClassMap`: a raccoon dataset's
"dog", "cat" and "bear" are raccoons; its "person" is never labelled); a candidate takes the
dataset class its detector classes point at (or a trained box grader's class head's) and its
score is multiplied by their relevance, so a person in a raccoon dataset ranks low.

A detector of the labels' own classes whose predictions are already in a field (``grade()``'s
fine-tuned YOLOX-Nano) can give the candidates instead (``pred_field``; with ``pick_source``
the source that finds more of the labelled boxes: :func:`label_recall`).

Candidates cleanlab wrote to the same field are kept: one that matches a cleanlab candidate
(same class, IoU >= 0.5) is merged into it (the cleanlab detection gets ``overlooked_score``),
never duplicated or removed. Figures: docs/overlooked.md (``bench/overlooked_bench.py``).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import fiftyone as fo
import numpy as np

from .. import fields as lgf
from ..boxes import abs_xyxy_to_rel_xywh, iou_matrix, rel_xywh_to_abs_xyxy
from ..detectors import ArrayDetector, Boxes, load_detector, postprocess
from ..images import ImageReadError, load_rgb
from ..parallel import prefetch_map
from ..render import default_workers
from ..report import RunReport

OWNER = "overlooked"
TAG = "suspect:overlooked"


def slice_windows(height: int, width: int, slice_size: int, overlap: float = 0.2) -> list[tuple[int, int, int, int]]:
    """Overlapping ``slice_size`` squares covering the image (xyxy), as SAHI's get_slice_bboxes:
    step ``slice_size * (1 - overlap)``, slices past an edge are moved back inside it."""
    if slice_size >= max(height, width):
        return []
    step = max(1, int(slice_size * (1 - overlap)))
    out = []
    y = 0
    while True:
        y0 = min(y, max(0, height - slice_size))
        x = 0
        while True:
            x0 = min(x, max(0, width - slice_size))
            out.append((x0, y0, min(x0 + slice_size, width), min(y0 + slice_size, height)))
            if x0 + slice_size >= width:
                break
            x += step
        if y0 + slice_size >= height:
            break
        y += step
    return out


def _ios(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over the smaller box, (len(a), len(b))."""
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda z: (z[:, 2] - z[:, 0]) * (z[:, 3] - z[:, 1])
    return inter / np.maximum(np.minimum(area(a)[:, None], area(b)[None, :]), 1e-9)


@dataclass
class Candidates:
    xyxy: np.ndarray
    cls: np.ndarray
    conf: np.ndarray      # best single-pass confidence
    score: np.ndarray     # noisy-OR over passes
    full: np.ndarray      # seen by the full-image pass
    sliced: np.ndarray    # seen by a slice
    probs: np.ndarray     # (n, K) the detector's class scores of the most confident box

    def take(self, idx) -> "Candidates":
        return Candidates(self.xyxy[idx], self.cls[idx], self.conf[idx], self.score[idx],
                          self.full[idx], self.sliced[idx], self.probs[idx])


def greedy_nmm(boxes: Boxes, from_full: np.ndarray, match_ios: float = 0.5,
               slice_weight: float = 1.0, crop: np.ndarray | None = None,
               flipped: np.ndarray | None = None) -> Candidates:
    """SAHI-style greedy non-maximum merging, class-wise: highest score first, every box of the
    same class with IoS >= ``match_ios`` is merged in (union box). Score: noisy-OR of the best
    full-image confidence, ``slice_weight`` x the best slice confidence and the best confidence
    of the mirrored full-image pass (``flipped``: which boxes came from it; they count as
    full-image boxes for ``from_full``), so agreeing passes raise a candidate.

    ``crop`` (optional, one id per box: which pass/slice it came from): boxes of one crop are
    never merged together — that pass's NMS already separated them, and merging them by IoS
    swallowed an object standing in front of another of its class (on coco128, 11 of 49 deleted
    boxes the detector found were lost this way)."""
    order = np.argsort(-boxes.conf, kind="stable")
    xyxy, cls, conf = boxes.xyxy[order], boxes.cls[order], boxes.conf[order]
    probs = np.asarray(boxes.probs, dtype=np.float64)[order]
    full = from_full[order]
    flip = np.zeros(len(order), dtype=bool) if flipped is None else np.asarray(flipped, bool)[order]
    crop_o = None if crop is None else np.asarray(crop)[order]
    ios = _ios(xyxy, xyxy) if len(xyxy) else np.zeros((0, 0))
    used = np.zeros(len(xyxy), dtype=bool)
    rows, lead = [], []
    for i in range(len(xyxy)):
        if used[i]:
            continue
        grp = np.flatnonzero(~used & (cls == cls[i]) & (ios[i] >= match_ios))
        grp = grp[grp >= i]
        if crop_o is not None:
            # at most one box per crop: the first (most confident) of each other crop; i's own
            # crop contributes only i
            grp = grp[(crop_o[grp] != crop_o[i]) | (grp == i)]
            _, first = np.unique(crop_o[grp], return_index=True)
            grp = np.sort(grp[first])
        used[grp] = True
        b = xyxy[grp]
        # several boxes of one pass (e.g. overlapping slices) count once per pass kind
        f, fl = full[grp], flip[grp]
        passes = np.array([conf[grp][f & ~fl].max(initial=0.0),
                           slice_weight * conf[grp][~f].max(initial=0.0),
                           conf[grp][fl].max(initial=0.0)])
        rows.append((b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max(), cls[i], conf[i],
                     1 - np.prod(1 - passes), bool(full[grp].any()),
                     bool((~full[grp]).any())))
        lead.append(i)
    if not rows:
        z = np.zeros(0)
        return Candidates(np.zeros((0, 4)), z.astype(int), z, z, z.astype(bool), z.astype(bool),
                          np.zeros((0, probs.shape[1])))
    a = np.asarray(rows, dtype=np.float64)
    return Candidates(a[:, :4], a[:, 4].astype(int), a[:, 5], a[:, 6], a[:, 7] > 0, a[:, 8] > 0,
                      probs[lead])


def _attr(d, name: str):
    return d.get_field(name) if d.has_field(name) else None


def _decode(job):
    sid, path = job
    try:
        return sid, load_rgb(path)
    except ImageReadError:
        return sid, None


def _predict_image(det: ArrayDetector, image: np.ndarray, slice_size: int | str | None, overlap: float,
                   conf_threshold: float, nms_iou: float, flip: bool = False,
                   ) -> tuple[Boxes, np.ndarray, np.ndarray, np.ndarray]:
    """Full-image pass (+ its mirror image when ``flip``) + one pass per slice, in one batch.

    Returns the boxes in image pixels, which came from a full-image pass, the crop each came
    from (0: the full image, 1..: the slices, last: the mirrored image) and which came from the
    mirrored pass."""
    h, w = image.shape[:2]
    k = len(det.classes)
    if slice_size == "auto":
        size = int(getattr(det, "size", 0) or 416)
        slice_size = size if max(h, w) > 2 * size else None
    wins = slice_windows(h, w, int(slice_size), overlap) if slice_size else []
    crops = [image] + [np.ascontiguousarray(image[y0:y1, x0:x1]) for x0, y0, x1, y1 in wins]
    offsets = [(0, 0)] + [(x0, y0) for x0, y0, *_ in wins]
    if flip:
        crops.append(np.ascontiguousarray(image[:, ::-1]))
    rows = det.predict(crops)
    parts = []
    for i, r in enumerate(rows):
        r = r.copy()
        if i == len(offsets):  # the mirrored image: x -> w - x
            r[:, [0, 2]] = w - r[:, [2, 0]]
        else:
            r[:, [0, 2]] += offsets[i][0]
            r[:, [1, 3]] += offsets[i][1]
        parts.append(postprocess(r, k, conf_threshold, nms_iou, (h, w)))
    crop = np.concatenate([np.full(len(p), i) for i, p in enumerate(parts)]).astype(int)
    flipped = crop == len(offsets)
    from_full = (crop == 0) | flipped
    cat = Boxes(np.concatenate([p.xyxy for p in parts]), np.concatenate([p.conf for p in parts]),
                np.concatenate([p.cls for p in parts]).astype(int),
                np.concatenate([p.probs for p in parts]))
    return cat, from_full, crop, flipped


def image_candidates(det: ArrayDetector, image: np.ndarray, *,
                     slice_size: int | str | None = "auto", overlap: float = 0.2,
                     conf_threshold: float = 0.1, nms_iou: float = 0.45,
                     match_ios: float = 0.5, slice_weight: float = 1.0,
                     merge_within_crop: bool = False, flip: bool = False) -> Candidates:
    """One image's merged candidates before any GT box is looked at (the detector's part)."""
    boxes, from_full, crop, flipped = _predict_image(det, image, slice_size, overlap,
                                                     conf_threshold, nms_iou, flip)
    return greedy_nmm(boxes, from_full, match_ios, slice_weight,
                      crop=None if merge_within_crop else crop, flipped=flipped)


def unmatched_candidates(cand_xyxy: np.ndarray, cand_score: np.ndarray, gt_xyxy: np.ndarray,
                         gt_iou: float = 0.3, dup_iou: float = 0.7,
                         one_to_one: bool = True) -> np.ndarray:
    """Which candidates no GT box accounts for (bool mask).

    ``one_to_one`` (default): each GT box accounts for at most one candidate, matched greedily
    from the most confident candidate to the GT box it overlaps most (IoU >= ``gt_iou``), as a
    detection benchmark matches predictions; a candidate overlapping a GT box by ``dup_iou`` or
    more is that box whatever the matching. In a crowd, the detection of an unlabeled person
    standing in front of a labeled one overlaps that GT box by 0.3-0.5: the old rule (drop every
    candidate overlapping *any* GT box by ``gt_iou``, ``one_to_one=False``) lost it. The extra
    candidates this keeps are mostly second detections of labeled objects; the ranking
    (:func:`rank_candidates`) puts them down.
    """
    n = len(cand_xyxy)
    if not n or not len(gt_xyxy):
        return np.ones(n, dtype=bool)
    iou = iou_matrix(cand_xyxy, gt_xyxy)
    if not one_to_one:
        return iou.max(1) < gt_iou
    keep = iou.max(1) < dup_iou
    free = np.ones(len(gt_xyxy), dtype=bool)
    for j in np.argsort(-cand_score, kind="stable"):
        if not free.any():
            break
        k = int(np.argmax(np.where(free, iou[j], -1.0)))
        if free[k] and iou[j, k] >= gt_iou:
            free[k] = False
            keep[j] = False
    return keep


def rank_candidates(cand_xyxy: np.ndarray, cand_labels, score: np.ndarray, gt_xyxy: np.ndarray,
                    gt_labels) -> np.ndarray:
    """``overlooked_score``: the passes' noisy-OR confidence x (1 - IoU with the closest GT box
    of the candidate's class). A candidate half on a labeled object of its own class is most
    likely a second, partial detection of it, not a missing object; one of another class
    beside a GT box (a cup on a labeled table) is not discounted. Chosen on coco128 (dev, 20
    seeds of 5% injected errors): with one-to-one matching it put more deleted boxes in the top
    2N than the bare confidence (by about one per seed); size/aspect priors per class, class
    frequency, the class-probability entropy, a logistic regression over them and the box
    grader's p_good on the candidate did not beat it.
    """
    score = np.asarray(score, dtype=np.float64)
    if not len(score) or not len(gt_xyxy):
        return score.copy()
    iou = iou_matrix(cand_xyxy, gt_xyxy)
    same = np.asarray(cand_labels, dtype=object)[:, None] == np.asarray(gt_labels, dtype=object)[None, :]
    return score * (1.0 - np.where(same, iou, 0.0).max(1))


@dataclass
class ClassMap:
    """What the detector's classes mean in this dataset, learned from its labelled boxes.

    Every candidate counts for its detector classes in proportion to its (L1-normalised) class
    scores. ``share[d, c]``: of the candidates of detector class d that a labelled box accounts
    for (IoU >= 0.5), the share on dataset class c — a raccoon dataset's "dog", "cat" and "bear"
    all map to raccoon; several detector classes may map to one merged class ("animals").
    ``relevance[d]``: the share of class d's candidates that a labelled box accounts for,
    smoothed towards the overall share — near 0 for a class the dataset never labels (people in
    a raccoon dataset), high for the look-alikes of its classes."""

    classes: list[str]
    share: np.ndarray       # (K, C)
    relevance: np.ndarray   # (K,)
    matched: np.ndarray     # (C,) labelled boxes some candidate matched

    def class_scores(self, probs: np.ndarray) -> np.ndarray:
        """(N, C): how much each candidate's detector classes point at each dataset class."""
        return _norm1(probs, self.share.shape[0]) @ self.share

    def relevance_of(self, probs: np.ndarray) -> np.ndarray:
        """(N,) in [0, 1]: the candidates' relevance relative to the most relevant class."""
        r = _norm1(probs, self.share.shape[0]) @ self.relevance
        return r / max(float(self.relevance.max(initial=0.0)), 1e-12)


def _norm1(probs: np.ndarray, k: int) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64).reshape(-1, k)
    return p / np.maximum(p.sum(1, keepdims=True), 1e-12)


def learn_class_map(items, classes: Sequence[str], k: int, match_iou: float = 0.5,
                    prior: float = 5.0) -> ClassMap:
    """:class:`ClassMap` of ``classes`` from ``items``, per image ``(cand_xyxy, cand_probs,
    gt_xyxy, gt_labels)`` (every candidate, before any is matched away). A candidate is
    accounted for by the GT box it overlaps most, at IoU >= ``match_iou``; ``prior``
    pseudo-candidates at the overall share smooth the relevance of rare detector classes.
    A few wrong labels barely move either table."""
    index = {c: i for i, c in enumerate(classes)}
    hits, seen = np.zeros((k, len(classes))), np.zeros(k)
    matched = np.zeros(len(classes))
    for cx, cp, gx, gl in items:
        if not len(cx):
            continue
        p = _norm1(cp, k)
        seen += p.sum(0)
        if not len(gx):
            continue
        gi = np.array([index.get(l, -1) for l in gl])
        iou = iou_matrix(cx, gx)
        best = iou.argmax(1)
        ok = (iou.max(1) >= match_iou) & (gi[best] >= 0)
        onehot = np.zeros((int(ok.sum()), len(classes)))
        onehot[np.arange(len(onehot)), gi[best[ok]]] = 1.0
        hits += p[ok].T @ onehot
        found = (iou.max(0) >= match_iou) & (gi >= 0)
        np.add.at(matched, gi[found], 1)
    overall = hits.sum() / max(seen.sum(), 1e-12)
    # nothing matched (no labelled box found at all): no class is told apart from another
    relevance = (hits.sum(1) + prior * overall) / (seen + prior) if hits.any() else np.ones(k)
    eps = 1e-3  # a detector class never matched points nowhere in particular
    share = (hits + eps) / (hits.sum(1, keepdims=True) + eps * len(classes))
    return ClassMap(list(classes), share, relevance, matched)


def suppress_other_class(cand_xyxy: np.ndarray, cand_labels, gt_xyxy: np.ndarray, gt_labels,
                         other_iou: float) -> np.ndarray:
    """Which candidates to keep: False where a candidate overlaps a labelled box of *another*
    class by IoU >= ``other_iou`` — the detector naming a labelled object differently (a
    labelled truck seen as a car), a swap at most, not a missing object."""
    n = len(cand_xyxy)
    if not n or not len(gt_xyxy):
        return np.ones(n, dtype=bool)
    other = (np.asarray(cand_labels, dtype=object)[:, None]
             != np.asarray(gt_labels, dtype=object)[None, :])
    return np.where(other, iou_matrix(cand_xyxy, gt_xyxy), 0.0).max(1) < other_iou


def candidate_labels(cands: Candidates, det_classes: Sequence[str],
                     class_map: ClassMap | None = None,
                     class_probs: np.ndarray | None = None) -> list[str]:
    """Each candidate's class name: the detector's, or with ``class_map`` the dataset class
    its detector classes point at (``class_probs``, ``(n, C)`` over ``class_map.classes``,
    picks it instead where given)."""
    if class_map is None:
        return [det_classes[c] for c in cands.cls]
    pick = class_map.class_scores(cands.probs) if class_probs is None else class_probs
    best = np.asarray(pick).argmax(1) if len(cands.cls) else np.zeros(0, int)
    return [class_map.classes[c] for c in best]


def score_image(cands: Candidates, det_classes: Sequence[str], gt_xyxy: np.ndarray, gt_labels,
                *, class_map: ClassMap | None = None, class_probs: np.ndarray | None = None,
                gt_iou: float = 0.3, dup_iou: float = 0.7, one_to_one: bool = True,
                rank: str = "duplicate-aware", other_iou: float | None = 0.5,
                ) -> tuple[np.ndarray, list[str], np.ndarray]:
    """One image's proposals: (indices into ``cands``, their labels, ``overlooked_score``).

    Without ``class_map`` the labels are the detector's classes. With one (datasets of classes
    the detector does not know) each candidate takes the dataset class its detector classes
    point at and its score is multiplied by their relevance (:class:`ClassMap`), so a person in
    a raccoon dataset ranks below a raccoon-sized "dog"; candidates that then share a label and
    overlap by ``dup_iou`` (one raccoon seen as a dog and as a cat) count once.
    ``class_probs`` (with ``class_map``; ``(n, C)`` over ``class_map.classes``, e.g. a box
    grader's class head) picks the class instead; the relevance still ranks.
    """
    keep = unmatched_candidates(cands.xyxy, cands.score, gt_xyxy, gt_iou, dup_iou, one_to_one)
    score = cands.score.copy()
    labels = candidate_labels(cands, det_classes, class_map, class_probs)
    if class_map is not None:
        score = score * class_map.relevance_of(cands.probs)
    gl = list(gt_labels or [])
    if rank == "duplicate-aware":
        score = rank_candidates(cands.xyxy, labels, score, gt_xyxy, gl)
    if other_iou is not None:
        keep &= suppress_other_class(cands.xyxy, labels, gt_xyxy, gl, other_iou)
    idx = np.flatnonzero(keep)
    if class_map is not None and len(idx) > 1:
        idx = idx[np.argsort(-score[idx], kind="stable")]
        iou = iou_matrix(cands.xyxy[idx], cands.xyxy[idx])
        lab = np.asarray(labels, dtype=object)[idx]
        dup = np.triu((iou >= dup_iou) & (lab[:, None] == lab[None, :]), 1).any(0)
        idx = np.sort(idx[~dup])
    return idx, [labels[i] for i in idx], score[idx]


def _at_input_size(det: ArrayDetector, input_size: int | None) -> ArrayDetector:
    """``det`` at another input size (a copy sharing its network; the caller's is untouched)
    when it can change size (YOLOX), else ``det`` itself."""
    if (not input_size or not hasattr(det, "set_input_size")
            or getattr(det, "size", None) == input_size):
        return det
    sized = copy.copy(det)
    sized.set_input_size(int(input_size))
    return sized


def dataset_label_mode(collection, gt_field: str, det_classes: Sequence[str],
                       min_known: float = 0.5) -> tuple[str, list[str]]:
    """("detector" or "dataset", the GT's classes): "detector" when at least ``min_known`` of
    the GT labels are of the detector's classes (their names are the dataset's), else
    "dataset" (candidates get dataset classes through :class:`ClassMap`)."""
    from ..classes import known_class_share

    share, counts = known_class_share(collection, gt_field, det_classes)
    mode = "detector" if not counts or share >= min_known else "dataset"
    return mode, sorted(counts)


def _check_field(collection, gt_field: str, ov_field: str, overwrite: bool) -> None:
    schema = collection._root_dataset.get_field_schema(flat=True)
    shared = (f"{ov_field}.detections.cleanlab_overlooked" in schema
              or f"{ov_field}.detections.overlooked_score" in schema)
    if ov_field == gt_field:
        raise ValueError("the overlooked field must differ from the GT field")
    if not shared or getattr(schema.get(ov_field), "document_type", None) is not fo.Detections:
        lgf.guard_output_field(collection, ov_field, overwrite=overwrite, inputs=(gt_field,),
                               owner=OWNER)


def _class_head(checkpoint: str, classes: Sequence[str]):
    """(the box grader, the columns of ``classes`` in its class head), or (None, None) when it
    does not know every one of ``classes`` (the class map names the candidates then)."""
    from .boxgrader import load_boxgrader

    grader = load_boxgrader(checkpoint)
    index = {c: i for i, c in enumerate(grader.classes)}
    if any(c not in index for c in classes):
        return None, None
    return grader, [index[c] for c in classes]


def label_recall(seen, names: Callable, gt_labels: dict, iou: float = 0.5,
                 conf: float = 0.25) -> float:
    """The share of the labelled boxes that some candidate of their class (``names(cands,
    sample_id)``: the candidates' class names) covers at IoU >= ``iou`` with confidence >=
    ``conf``: how much of what is labelled a candidate source finds again."""
    hit = n = 0
    for sid, _, _, c, g in seen:
        n += len(g)
        if not len(g) or not len(c.xyxy):
            continue
        same = (np.asarray(gt_labels[sid] or [], dtype=object)[:, None]
                == np.asarray(names(c, sid), dtype=object)[None, :])
        hit += int(((iou_matrix(g, c.xyxy) >= iou) & same & (c.conf >= conf)[None, :]).any(1).sum())
    return hit / n if n else 0.0


def field_candidates(preds, gt, classes: Sequence[str], conf_threshold: float,
                     report: RunReport) -> list[tuple[str, int, int, Candidates, np.ndarray]]:
    """Per sample of ``gt`` (a :func:`grader.fields.read_detections` table), the detections of
    ``preds`` (the same samples) at ``conf_threshold`` or above as :class:`Candidates` over
    ``classes``, with the image size and the GT boxes in pixels. Samples without a known image
    size (``compute_metadata()``) and boxes without a confidence are skipped and counted."""
    by_sid = {s: i for i, s in enumerate(preds.sample_ids)}
    index = {c: k for k, c in enumerate(classes)}
    out = []
    for sid, w, h, g in zip(gt.sample_ids, gt.widths, gt.heights, gt.boxes):
        report.samples_seen += 1
        if not w or not h:
            report.skip("no_image_size")
            continue
        i = by_sid[sid]
        conf = np.array([np.nan if c is None else float(c) for c in preds.attrs["confidence"][i]],
                        dtype=np.float64)
        ok = np.isfinite(conf) & np.array([b is not None and l in index for b, l in
                                           zip(preds.boxes[i], preds.labels[i])], dtype=bool)
        if (~np.isfinite(conf)).any():
            report.skip("prediction_without_confidence", int((~np.isfinite(conf)).sum()))
        ok &= np.nan_to_num(conf, nan=-1.0) >= conf_threshold
        rel = np.asarray([b for b, k in zip(preds.boxes[i], ok) if k], dtype=np.float64).reshape(-1, 4)
        cls = np.array([index[l] for l, k in zip(preds.labels[i], ok) if k], dtype=int)
        n = len(cls)
        probs = np.zeros((n, len(classes)))
        probs[np.arange(n), cls] = conf[ok]
        cands = Candidates(rel_xywh_to_abs_xyxy(rel, w, h), cls, conf[ok], conf[ok],
                           np.ones(n, bool), np.zeros(n, bool), probs)
        out.append((sid, w, h, cands, rel_xywh_to_abs_xyxy(g or [], w, h)))
    return out


def find_overlooked(collection, gt_field: str = "ground_truth", model: Any = "yolox-nano", *,
                    detectors_dir: str | None = None, overlooked_field: str | None = None,
                    input_size: int | None = 640,
                    slice_size: int | str | None = "auto", overlap: float = 0.2,
                    conf_threshold: float = 0.1, nms_iou: float = 0.45, match_ios: float = 0.5,
                    gt_iou: float = 0.3, dup_iou: float = 0.7, one_to_one: bool = True,
                    rank: str = "duplicate-aware", merge_within_crop: bool = False,
                    flip: bool = False, other_iou: float | None = 0.5,
                    label_mode: str = "auto", boxgrader_checkpoint: str | None = None,
                    slice_weight: float = 1.0, tag_threshold: float = 0.5,
                    detector: ArrayDetector | None = None, num_workers: int | None = None,
                    pred_field: str | None = None, pick_source: bool = False,
                    overwrite: bool = False,
                    progress: Callable[[int, int], None] | None = None) -> RunReport:
    """Propose possibly overlooked objects into ``<gt_field>_overlooked`` (see the module doc).

    ``input_size`` (default 640): the detector's input for these passes when it can change it
    (YOLOX; others keep theirs, ``None`` keeps it too). Small objects are what the default 416
    misses: on coco128 (dev, 10 seeds of 5 % of every error type) 640 raised the deleted boxes
    the candidates cover from 0.51 to 0.57 and recall@2xN from 0.36 to 0.39 for 1.2x the CPU
    time of the 416 + mirrored passes it replaces; on coco128-val (held out) the cover rose
    (0.59 to 0.67) but recall@2xN did not (0.43 to 0.42; docs/overlooked.md).

    ``slice_size``: slice side in source pixels (None: full image only; images no larger than
    a slice get the full pass only). ``"auto"`` (default) slices only images larger than twice
    the detector's input, with slices of the input size: on coco128 (640 px images, 5% of boxes
    deleted, ``bench/zoom_dev.py overlooked``, with the earlier judge) 320 px slices added
    candidates but no recall in the top 2N (0.370 vs 0.391 full-image only) at 12x the time, so
    COCO-sized images are not sliced; high-resolution images, where small objects vanish at the
    detector's input, are.

    Which candidates a GT box accounts for: :func:`unmatched_candidates` (``gt_iou``,
    ``dup_iou``, ``one_to_one``; any class); ``other_iou`` (None: off) drops candidates on a
    labelled box of another class (:func:`suppress_other_class`). ``rank``:
    ``"duplicate-aware"`` (default, :func:`rank_candidates`) or ``"confidence"`` (the passes'
    noisy-OR alone). ``merge_within_crop=True`` lets the greedy merge join boxes of one pass
    (see :func:`greedy_nmm`). ``flip=True`` adds a pass on the mirrored image (test-time
    augmentation): at 640 it added 0.004 recall@2xN for twice the time, so it is off.

    ``label_mode``: ``"detector"`` (candidates carry the detector's class names),
    ``"dataset"`` (each candidate gets the dataset class its detector classes stand for in
    these labels, and is ranked by how often they stand for a labelled object at all:
    :class:`ClassMap`; classes no detector knows) or ``"auto"`` (default: ``"detector"`` when
    at least half of the GT labels are detector classes, :func:`dataset_label_mode`).
    ``boxgrader_checkpoint`` (a box grader trained on these labels, ``train_boxgrader``): in
    ``"dataset"`` mode, when it knows every GT class, its class head names each candidate (one
    more backbone pass per image).

    ``pred_field``: the candidates are that field's detections instead of a detector pass: a
    detector of the labels' own classes whose predictions are already there, e.g. the YOLOX-Nano
    ``grade()`` fine-tunes on classes no shipped detector knows (``finetune``; each image
    predicted by the fold model that never saw its labels). No image is decoded, the
    candidates keep the field's class names (``label_mode`` does not apply) and are ranked as
    the detector's are. Boxes without a ``confidence`` are skipped and counted.
    ``pick_source=True`` (with ``pred_field``): the detector runs too, and the candidates come
    from whichever source finds more of the labelled boxes themselves (:func:`label_recall`:
    a prediction of the box's class, mapped in ``"dataset"`` mode, at IoU >= 0.5 and confidence
    >= 0.25), an estimate of how many missing objects each would find; ``report.info``
    gives both (``label_recall``) and the choice (``candidates_from``). Fine-tuned on 100
    raccoon photos per fold, YOLOX-Nano's own candidates recovered 0.91 of deleted raccoons in
    the top 2N against 0.55 for the COCO detector's mapped ones; on coco128 merged into 8 new
    classes (64 images per fold) 0.09 against 0.41 (``bench/custom_classes.py --grade-kw
    '{"finetune": true}'``, seed 0).

    ``input_size=None, flip=True, other_iou=None, label_mode="detector"`` reproduce the judge
    before the 640 input; with ``one_to_one=False, rank="confidence", merge_within_crop=True,
    flip=False`` the one before that (``bench/overlooked_bench.py`` measures them). Candidates
    scoring >= ``tag_threshold`` are tagged ``suspect:overlooked``. GT labels are never
    modified.
    """
    if rank not in ("duplicate-aware", "confidence"):
        raise ValueError(f"rank must be 'duplicate-aware' or 'confidence', got {rank!r}")
    if label_mode not in ("auto", "detector", "dataset"):
        raise ValueError(f"label_mode must be 'auto', 'detector' or 'dataset', got {label_mode!r}")
    for name, v in (("conf_threshold", conf_threshold), ("gt_iou", gt_iou), ("dup_iou", dup_iou),
                    ("overlap", overlap), ("match_ios", match_ios), ("nms_iou", nms_iou),
                    ("other_iou", 0.0 if other_iou is None else other_iou)):
        if not 0.0 <= float(v) <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {v}")
    if overlap >= 1:
        raise ValueError("overlap must be < 1")
    ov_field = overlooked_field or f"{gt_field}_overlooked"
    gt = lgf.read_detections(collection, gt_field)  # clear error on a missing/wrong field
    field_classes: list[str] = []
    if pred_field is not None:
        if pred_field == gt_field:
            raise ValueError("pred_field must differ from gt_field")
        preds = lgf.read_detections(collection, pred_field, attrs=["confidence"])
        field_classes = sorted({c for row in preds.labels for c in row if c is not None})
    if pred_field is not None and not pick_source:
        det, sized = None, None
        det_classes = field_classes
        mode, gt_classes = "detector", []
    else:
        det = detector or load_detector(model, detectors_dir)
        sized = _at_input_size(det, input_size)
        det_classes = list(det.classes)
        mode, gt_classes = dataset_label_mode(collection, gt_field, det_classes)
        mode = mode if label_mode == "auto" else label_mode
    if mode == "dataset" and not gt_classes:
        raise ValueError(f"label_mode='dataset' needs labelled boxes in '{gt_field}' to learn "
                         "what the detector makes of each class")
    grader, cols = (_class_head(boxgrader_checkpoint, gt_classes)
                    if mode == "dataset" and boxgrader_checkpoint else (None, None))
    _check_field(collection, gt_field, ov_field, overwrite)
    existing: dict[str, list] = {}
    if ov_field in collection._root_dataset.get_field_schema():
        sids, dets = collection.values(["id", f"{ov_field}.detections"])
        # keep candidates other judges wrote (cleanlab); ours are recomputed
        existing = {s: [d for d in (ds or []) if _attr(d, "source") not in ("full", "sliced", "full+sliced")]
                    for s, ds in zip(sids, dets)}
    else:
        lgf.claim_output_field(collection, ov_field, OWNER)
    report = RunReport(judge=f"overlooked:{pred_field if det is None else getattr(det, 'name', 'detector')}")
    workers = default_workers() if num_workers is None else num_workers
    jobs = list(zip(gt.sample_ids, gt.filepaths))
    gt_labels = dict(zip(gt.sample_ids, gt.labels))
    # 1. the detector's candidates per image (independent of the labels)
    seen: list[tuple[str, int, int, Candidates, np.ndarray]] = []
    head_probs: dict[str, np.ndarray] = {}
    rel_gt = dict(zip(gt.sample_ids, gt.boxes))
    if det is None:
        jobs = []
    for n, (sid, image) in enumerate(prefetch_map(_decode, jobs, workers=workers)):
        report.samples_seen += 1
        if image is None:
            report.skip("unreadable_image")
            continue
        h, w = image.shape[:2]
        cands = image_candidates(sized, image, slice_size=slice_size, overlap=overlap,
                                 conf_threshold=conf_threshold, nms_iou=nms_iou,
                                 match_ios=match_ios, slice_weight=slice_weight,
                                 merge_within_crop=merge_within_crop, flip=flip)
        seen.append((sid, w, h, cands, rel_xywh_to_abs_xyxy(rel_gt[sid] or [], w, h)))
        if grader is not None and len(cands.xyxy):
            X = grader.backbone.box_features(grader.backbone.image_features(image), cands.xyxy)
            head_probs[sid] = grader.predict(X, [grader.classes[0]] * len(X))["p_class"][:, cols]
        if progress:
            progress(n + 1, len(jobs))
    # 2. which classes the candidates get: the detector's, or the dataset's through a class map
    class_map = None
    if mode == "dataset":
        class_map = learn_class_map([(c.xyxy, c.probs, g, gt_labels[sid] or [])
                                     for sid, _, _, c, g in seen], gt_classes, len(det_classes))
        report.info["classes_unmatched"] = [c for c, m in zip(gt_classes, class_map.matched)
                                            if not m]
    if pred_field is not None:
        freport = RunReport(judge=report.judge)
        from_field = field_candidates(preds, gt, field_classes, conf_threshold, freport)
        use_field = det is None
        if not use_field:
            r_field = label_recall(from_field, lambda c, sid: candidate_labels(c, field_classes),
                                   gt_labels)
            r_det = label_recall(seen, lambda c, sid: candidate_labels(
                c, det_classes, class_map, head_probs.get(sid)), gt_labels)
            report.info["label_recall"] = {pred_field: round(r_field, 4),
                                           getattr(det, "name", "detector"): round(r_det, 4)}
            use_field = r_field >= r_det
        if use_field:
            seen, det_classes, mode, class_map, head_probs = from_field, field_classes, "detector", None, {}
            report.samples_seen = freport.samples_seen
            report.skipped = freport.skipped
            report.judge = f"overlooked:{pred_field}"
    report.info["candidates_from"] = report.judge.split(":", 1)[1]
    report.info["label_mode"] = mode
    if boxgrader_checkpoint and mode == "dataset":
        report.info["class_head"] = grader is not None
    # 3. per image: drop what the labels account for, score, merge into cleanlab's candidates
    out: dict[str, fo.Detections] = {}
    n_new = n_merged = 0
    for sid, w, h, cands, g in seen:
        idx, labels, scores = score_image(
            cands, det_classes, g, gt_labels[sid], class_map=class_map,
            class_probs=head_probs.get(sid), gt_iou=gt_iou, dup_iou=dup_iou,
            one_to_one=one_to_one, rank=rank, other_iou=other_iou)
        old = list(existing.get(sid, []))
        old_rel = np.asarray([d.bounding_box for d in old], dtype=np.float64).reshape(-1, 4)
        old_xyxy = rel_xywh_to_abs_xyxy(old_rel, w, h)
        new_dets = []
        rel = abs_xyxy_to_rel_xywh(cands.xyxy, w, h)
        for j, label, score in zip(idx, labels, scores):
            src = "full+sliced" if cands.full[j] and cands.sliced[j] else (
                "full" if cands.full[j] else "sliced")
            score = float(score)
            if len(old):
                ious = iou_matrix(cands.xyxy[j:j + 1], old_xyxy)[0]
                same = np.asarray([d.label == label for d in old]) & (ious >= 0.5)
                if same.any():
                    d = old[int(np.argmax(np.where(same, ious, -1)))]
                    d["overlooked_score"] = max(score, _attr(d, "overlooked_score") or 0.0)
                    n_merged += 1
                    continue
            x, y, bw, bh = (float(v) for v in rel[j])
            new_dets.append(fo.Detection(label=label, bounding_box=[x, y, bw, bh],
                                         confidence=float(cands.conf[j]), overlooked_score=score,
                                         source=src, tags=[TAG] if score >= tag_threshold else []))
        for d in old:
            if _attr(d, "source") is None:
                d["source"] = "cleanlab"
        out[sid] = fo.Detections(detections=old + new_dets)
        n_new += len(new_dets)
        report.samples_scored += 1
        report.labels_scored += len(new_dets)
    lgf.write_sample_field(collection, ov_field, out)
    lgf.declare_attrs(collection._dataset, f"{ov_field}.detections",
                      {"overlooked_score": fo.FloatField, "source": fo.StringField})
    report.fields = [ov_field]
    report.info.update(candidates=n_new, merged_into_cleanlab=n_merged)
    return report
