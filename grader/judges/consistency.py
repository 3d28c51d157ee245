"""Consistency judge: duplicate boxes and per-class geometry outliers, from the labels alone.

Model-free and prediction-free: it reads the ground-truth field once, computes everything in
numpy (pairwise IoU for all images with the same box count in one batch, one median/MAD per
class) and writes in one bulk pass.

Scores written on every GT detection (all HIGH = suspect):

- ``consistency_dup_iou``: max IoU with another box of the *same* class in the image (0 = none);
- ``consistency_dup_iou_any``: the same over boxes of *any* class;
- ``consistency_duplicate``: the duplicate score (a clearly smaller box lying whole inside its
  partner counts a quarter of the pair's IoU, as for ``consistency_xdup`` below). Of a pair of
  near-identical boxes only one is the slip, so the pair's IoU is split by the evidence
  against each box: ``w`` = the mean percentile suspicion of the other judges' registered
  scores present on the field (e.g. a box that no prediction supports, ``cleanlab_support``
  low, is weaker; ``evidence=`` picks a subset by the registry's issue mapping,
  :data:`EVIDENCE_RULES`; a box a reviewer accepted or set, tagged ``reviewed:*``, is the
  least suspect of all). A box gets
  ``IoU (1/2 + 1/2 sigmoid((w - w_partner) / evidence_margin))``: a clear gap gives the weaker
  box the IoU and its partner half of it, a small gap leaves both near 3/4 of it (a wrong call
  on a close pair no longer buries the copy below unrelated overlaps). ``evidence_margin=0``:
  the hard split. Without evidence on both boxes, the later box in the image's list goes first
  by 0.001. ``bench/duplicate_bench.py`` (coco128, 5 seeds, every error type at 5%): AP of the
  injected duplicates 0.627 with the hard split, 0.719 with the default margin 0.03 (AUROC
  0.980 -> 0.985); box-fit subsets of the evidence (``"badloc"``, ``"covers_badloc"``) tell the
  copy from its source no better than every judge's mean (pair accuracy ~0.68-0.70 either way);
- ``consistency_xdup``: one object boxed twice under two *different* classes (a van as ``car``
  and ``truck``, a bench as ``bench`` and ``chair``), which the same-class score cannot see. A
  pair scores its IoU x (1 - how legitimately the two classes overlap in *this* dataset): of
  the other images holding both classes, the share where a box of one lies mostly inside a box
  of the other (a person on a chair, a pizza on a table, a cat on a couch), learned from the
  labels themselves with the pair's own image left out (:func:`cross_class_scores`); a clearly
  smaller box lying whole inside the other keeps a quarter of it (an object on or in another:
  two boxes drawn around one object differ on every side, :data:`XDUP_NESTED_FACTOR`). Class
  evidence (:data:`XDUP_EVIDENCE`: the registered swap scores, e.g. ``cleanlab_swap``,
  ``zoom_label_prob``, ``boxgrader_p_other_class``) says which box's class fits worse: that
  box keeps the pair's score, its partner drops towards half. Boxes reaching
  ``xdup_tag_score`` are tagged ``suspect:duplicate``. ``bench/real_errors.py`` (coco128,
  unchanged labels, checked by eye): precision@10 0.6 where ``ensemble_any`` has 0.2;
- ``consistency_outlier``: max over log width, log height, log aspect ratio (in pixels when the
  image size is known) and log relative area of the robust z-score ``0.6745 (x - median) / MAD``
  within the box's class; ``None`` for classes with fewer than ``min_class_size`` boxes.

Boxes are never modified; degenerate boxes (NaN, zero area) are counted as skipped and unscored.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from .. import fields as lgf
from ..boxes import BOX_DEGENERATE, sanitize_rel_boxes
from ..report import RunReport

JUDGE = "consistency"
RUN_KEY = "label_grader_consistency"
TAG_DUPLICATE = "suspect:duplicate"
ATTRS = ("consistency_dup_iou", "consistency_dup_iou_any", "consistency_duplicate",
         "consistency_outlier", "consistency_xdup")
# Judges whose scores are not evidence about a box's own support (they are derived from it).
_NOT_EVIDENCE = ("consistency", "ensemble")
#: Which registered scores (grader.scores) count as evidence against a box of a duplicate pair,
#: by their issue mapping. The two boxes of a pair share their class and (nearly) their pixels,
#: so class scores say the same for both and only add noise; how well each box fits the object
#: tells the copy from its source.
EVIDENCE_RULES: dict[str, Callable] = {
    "all": lambda s: True,
    "badloc": lambda s: s.issue == "badloc",
    "badloc_also": lambda s: s.issue == "badloc" or "badloc" in s.also,
    "covers_badloc": lambda s: s.covers("badloc"),
    # Cross-class pairs: the two boxes share their pixels but not their class, so what tells
    # the wrong box is how well each class fits (class / swap evidence).
    "swap": lambda s: s.issue == "swap" or "swap" in s.also,
}
DEFAULT_EVIDENCE = "all"
# Chosen on coco128 (bench/duplicate_bench.py, AP): 0 (hard) 0.627, 0.01 0.691, 0.03 0.719,
# 0.05 0.720, 0.1 0.690 (0.03 kept: the default ensemble's AP is higher with it).
DEFAULT_MARGIN = 0.03
_MAD_TO_SIGMA = 0.6745
#: consistency_xdup at which a box is tagged suspect:duplicate (coco128, bench/real_errors.py:
#: every real cross-class duplicate pair at IoU >= 0.6 reaches it, 1 of 4 legitimate pairs).
XDUP_TAG_SCORE = 0.5
#: Evidence that says which box of a cross-class pair has the wrong class.
XDUP_EVIDENCE = "swap"
#: A box of one class "on/in" a box of another: the smaller box's share inside the larger one.
XDUP_OVERLAP_IOA = 0.5
#: Pseudo-images of "no overlap" added to each class pair's co-occurrence count: a pair seen
#: overlapping in 1 of 1 other image is half-legitimate, in 4 of 6 ~0.57.
XDUP_PRIOR_IMAGES = 1.0
#: A pair whose smaller box lies whole inside the larger one (intersection over the smaller box
#: at least XDUP_NESTED_IOA) while clearly smaller (IoU at most XDUP_NESTED_MAX_IOU) is one
#: object on or in another far more often than one object boxed twice: two boxes drawn around
#: one object differ on every side, so one holds the other by chance only when they are nearly
#: the same box. Such a pair keeps XDUP_NESTED_FACTOR of its cross-class duplicate score.
XDUP_NESTED_IOA = 0.98
XDUP_NESTED_MAX_IOU = 0.8
XDUP_NESTED_FACTOR = 0.25


def nested_discount(ioa: np.ndarray, iou: np.ndarray) -> np.ndarray:
    """Per pair, what its duplicate score keeps: :data:`XDUP_NESTED_FACTOR` where the smaller
    box lies whole inside the larger (``ioa`` >= :data:`XDUP_NESTED_IOA`) and is clearly
    smaller (``iou`` <= :data:`XDUP_NESTED_MAX_IOU`), else 1."""
    nested = (ioa >= XDUP_NESTED_IOA) & (iou <= XDUP_NESTED_MAX_IOU)
    return np.where(nested, XDUP_NESTED_FACTOR, 1.0)


def _pairwise_batch(b: np.ndarray, codes: np.ndarray, w: np.ndarray, n: np.ndarray,
                    margin: float = 0.0, cross: dict | None = None):
    """Duplicate scores for G images padded to M boxes: ``b`` (G, M, 4) xywh, ``codes`` (G, M)
    class codes, ``w`` (G, M) weakness (NaN = unknown), ``n`` (G,) real box counts; ``margin``
    > 0: soft split of the pair (see :func:`duplicate_scores`). ``cross``: a dict to which the
    overlapping different-class pairs are appended as arrays ``g``, ``i``, ``j``, ``iou``,
    ``ioa`` (for :func:`cross_class_scores`)."""
    G, M, _ = b.shape
    x1, y1 = b[..., 0], b[..., 1]
    x2, y2 = x1 + b[..., 2], y1 + b[..., 3]
    iw = np.clip(np.minimum(x2[:, :, None], x2[:, None, :]) - np.maximum(x1[:, :, None], x1[:, None, :]), 0, None)
    ih = np.clip(np.minimum(y2[:, :, None], y2[:, None, :]) - np.maximum(y1[:, :, None], y1[:, None, :]), 0, None)
    inter = iw * ih
    area = b[..., 2] * b[..., 3]
    union = area[:, :, None] + area[:, None, :] - inter
    iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    idx = np.arange(M)
    valid = idx[None, :] < n[:, None]
    iou = iou * (valid[:, :, None] & valid[:, None, :])
    iou[:, idx, idx] = 0.0
    iou_same = np.where(codes[:, :, None] == codes[:, None, :], iou, 0.0)
    # intersection over the smaller box of every pair
    ioa = inter / np.maximum(np.minimum(area[:, :, None], area[:, None, :]), 1e-12)
    if cross is not None:
        g, i, j = np.nonzero((iou > 0) & (codes[:, :, None] != codes[:, None, :]))
        for k, v in (("g", g), ("i", i), ("j", j), ("iou", iou[g, i, j]), ("ioa", ioa[g, i, j])):
            cross.setdefault(k, []).append(v)
    best_same = iou_same.max(axis=2)
    best_any = iou.max(axis=2)
    # A clearly smaller box lying whole inside its partner is an object on another (a netbook
    # on a stack of laptops, a foal under its mare), not one object boxed twice: the same
    # discount as a cross-class pair's. consistency_dup_iou stays raw.
    iou_same = iou_same * nested_discount(ioa, iou_same)
    partner = iou_same.argmax(axis=2)
    scored = iou_same.max(axis=2)
    wj = np.take_along_axis(w, partner, axis=1)
    both = np.isfinite(w) & np.isfinite(wj) & (w != wj)
    # Without evidence on both boxes: the later box in the list (the one drawn second).
    later = idx[None, :] > partner
    weaker = np.where(both, w > wj, later)
    # Evidence decides: the better-supported box of the pair drops to half its IoU. Without
    # it the pair stays tied, but for a hair (1e-3) that puts the later box first.
    drop = np.where(both, 0.5 * scored, 1e-3)
    dup = np.where(weaker, scored, np.maximum(scored - drop, 0.0))
    if margin > 0:
        # Soft: a small evidence gap splits the pair little (both near 3/4 of the IoU), a
        # large one as the hard rule does.
        gap = np.clip((w - wj) / margin, -50, 50)
        soft = scored * (0.5 + 0.5 / (1.0 + np.exp(-gap)))
        dup = np.where(np.isfinite(w) & np.isfinite(wj), soft, dup)
    return best_same, best_any, dup


#: Up to this many classes, co-occurrence is one dense classes x classes count (8 MB); above,
#: only the requested pairs are counted.
_DENSE_COOC_CLASSES = 1024


def pair_cooccurrence(codes: np.ndarray, image_of: np.ndarray, ci: np.ndarray,
                      cj: np.ndarray) -> np.ndarray:
    """Per requested class pair ``(ci[k], cj[k])``: the number of images holding at least one box
    of both classes. A vocabulary of thousands of classes never builds a classes x classes
    matrix: only the requested pairs are counted then."""
    if not len(ci):
        return np.zeros(0, dtype=np.int64)
    n_img = int(image_of.max()) + 1
    k = int(codes.max()) + 1
    ci_img = np.unique(codes.astype(np.int64) * n_img + image_of)   # (class, image), sorted
    cls, img = ci_img // n_img, ci_img % n_img
    if k <= _DENSE_COOC_CLASSES:
        C = np.zeros((k, k), dtype=np.int64)
        for a in range(0, n_img, 65536):
            sel = (img >= a) & (img < a + 65536)
            H = np.zeros((min(65536, n_img - a), k))     # float: BLAS; counts stay exact
            H[img[sel] - a, cls[sel]] = 1.0
            C += np.rint(H.T @ H).astype(np.int64)
        return C[ci, cj]
    # Every class pair within each image, images batched by their number of classes.
    order = np.lexsort((cls, img))
    cls, img = cls[order], img[order]
    per = np.bincount(img, minlength=n_img)
    start = np.r_[0, np.cumsum(per)[:-1]]
    keys = []
    for u in np.unique(per[per > 1]):
        rows = start[per == u][:, None] + np.arange(u)[None, :]
        m = cls[rows]
        a, b = np.triu_indices(u, 1)
        keys.append((m[:, a] * k + m[:, b]).ravel())      # classes sorted within an image: a < b
    want = np.minimum(ci, cj).astype(np.int64) * k + np.maximum(ci, cj)
    if not keys:
        return np.zeros(len(want), dtype=np.int64)
    keys, n = np.unique(np.concatenate(keys), return_counts=True)
    pos = np.clip(np.searchsorted(keys, want), 0, len(keys) - 1)
    return np.where(keys[pos] == want, n[pos], 0)


def pair_legitimacy(pairs: dict[str, np.ndarray], cooc: np.ndarray,
                    overlap_ioa: float = XDUP_OVERLAP_IOA,
                    prior_images: float = XDUP_PRIOR_IMAGES) -> np.ndarray:
    """Per overlapping different-class pair (see :func:`cross_class_scores`): how legitimately
    its two classes overlap in this dataset, the share of the *other* images holding both
    where a box of one lies mostly inside a box of the other (IoA >= ``overlap_ioa``), with
    ``prior_images`` pseudo-images of no overlap."""
    img, ci, cj = pairs["img"], pairs["ci"], pairs["cj"]
    if not len(ci):
        return np.zeros(0)
    ov = pairs["ioa"] >= overlap_ioa
    k = int(max(ci.max(), cj.max())) + 1
    pair_key = np.minimum(ci, cj).astype(np.int64) * k + np.maximum(ci, cj)
    # Images where the class pair overlaps: (image, class pair) once each, however many of
    # the image's boxes overlap.
    seen = np.unique(img[ov].astype(np.int64) * (k * k) + pair_key[ov]) % (k * k)
    keys, n_ov = np.unique(seen, return_counts=True)
    O = np.zeros(len(pair_key), dtype=np.int64)   # images where the class pair overlaps
    if len(keys):
        pos = np.clip(np.searchsorted(keys, pair_key), 0, len(keys) - 1)
        O = np.where(keys[pos] == pair_key, n_ov[pos], 0)
    # Leave the pair's own image out (exact for an overlapping pair: its image counts once).
    return np.clip((O - ov) / np.maximum(cooc - 1 + prior_images, 1e-9), 0.0, 1.0)


def pair_duplicate_scores(pairs: dict[str, np.ndarray], cooc: np.ndarray,
                          overlap_ioa: float = XDUP_OVERLAP_IOA,
                          prior_images: float = XDUP_PRIOR_IMAGES) -> tuple[np.ndarray, np.ndarray]:
    """Per overlapping different-class pair: (its cross-class duplicate score
    ``IoU (1 - legit) n``, ``legit`` of :func:`pair_legitimacy`), ``n`` of
    :func:`nested_discount`."""
    legit = pair_legitimacy(pairs, cooc, overlap_ioa, prior_images)
    return pairs["iou"] * (1.0 - legit) * nested_discount(pairs["ioa"], pairs["iou"]), legit


def cross_class_scores(pairs: dict[str, np.ndarray], cooc: np.ndarray, n_boxes: int,
                       weakness: np.ndarray | None = None, margin: float = DEFAULT_MARGIN,
                       overlap_ioa: float = XDUP_OVERLAP_IOA,
                       prior_images: float = XDUP_PRIOR_IMAGES) -> tuple[np.ndarray, np.ndarray]:
    """``consistency_xdup`` of every box (flat index) and each box's partner (-1 = none).

    ``pairs``: every ordered pair of overlapping boxes of *different* classes in one image:
    ``img``, ``i``/``j`` (flat box indices), ``ci``/``cj`` (class codes), ``iou``, ``ioa``
    (intersection over the smaller box). ``cooc``: per pair, the number of images holding both
    classes (:func:`pair_cooccurrence`).

    How legitimate the class pair's overlap is, from the dataset itself: of the *other* images
    holding both classes, the share where a box of one lies mostly inside a box of the other
    (IoA >= ``overlap_ioa``: a person on a chair, a pizza on a table), with ``prior_images``
    pseudo-images of no overlap (a pair seen in no other image is not legitimate). The pair's
    own image is left out, so a duplicate never vouches for itself. A pair scores
    ``IoU (1 - legit)``, a quarter of it where the smaller box lies whole inside the larger
    and is clearly smaller (:func:`pair_duplicate_scores`), and each box keeps its best
    partner's; ``weakness`` (evidence that the box's class is wrong) lowers the better-fitting
    box of the pair towards half of it:
    ``min(1, 3/2 - sigmoid((w_partner - w) / margin))`` (``margin`` = 0: exactly half).
    """
    out = np.zeros(n_boxes)
    partner = np.full(n_boxes, -1, dtype=np.int64)
    if not len(pairs["i"]):
        return out, partner
    i, j = pairs["i"], pairs["j"]
    raw, _ = pair_duplicate_scores(pairs, cooc, overlap_ioa, prior_images)
    order = np.lexsort((-raw, i))
    first = order[np.r_[True, i[order][1:] != i[order][:-1]]]
    bi, bj, braw = i[first], j[first], raw[first]
    # Unlike a same-class copy, the pair itself is the finding: the box whose class fits
    # worse keeps the pair's score and only its partner is lowered, towards half with a
    # clear evidence gap (no evidence or a tie: both keep it).
    split = np.ones(len(first))
    if weakness is not None:
        wi, wj = weakness[bi], weakness[bj]
        both = np.isfinite(wi) & np.isfinite(wj)
        if margin > 0:
            gap = np.clip((wi - wj) / margin, -50, 50)
            soft = np.minimum(1.0, 1.5 - 1.0 / (1.0 + np.exp(gap)))
        else:
            soft = np.where(wi < wj, 0.5, 1.0)
        split = np.where(both, soft, split)
    out[bi] = braw * split
    partner[bi] = bj
    return out, partner


def legit_partner_classes(boxes: list[np.ndarray], labels: list[list[str]],
                          overlap_ioa: float = XDUP_OVERLAP_IOA,
                          prior_images: float = XDUP_PRIOR_IMAGES,
                          max_xdup: float = XDUP_TAG_SCORE) -> list[set[str]]:
    """Per box (flat, image order): the classes of the other-class boxes of its image that lie
    mostly on or in it (IoA >= ``overlap_ioa``) as a pair this dataset holds legitimately:
    seen on/in in another image (``legit`` > 0, :func:`pair_legitimacy`) and its cross-class
    duplicate score ``IoU (1 - legit)`` below ``max_xdup`` (:func:`cross_class_scores`): the
    person on a couch, the pizza on a table. A pair at or above it is a likely duplicate: not
    listed, and its boxes list nothing."""
    sizes = np.array([len(b) for b in boxes], dtype=int)
    out: list[set[str]] = [set() for _ in range(int(sizes.sum()))]
    if not sizes.sum():
        return out
    flat_labels = np.asarray([l for ls in labels for l in ls], dtype=object).astype(str)
    names, flat_codes = np.unique(flat_labels, return_inverse=True)
    cross: dict[str, list] = {}
    for _ in _scan_pairs(boxes, sizes, flat_codes, cross):
        pass
    pairs, cooc = _cross_pairs(cross, flat_codes, sizes)
    if not len(pairs["i"]):
        return out
    raw, legit = pair_duplicate_scores(pairs, cooc, overlap_ioa, prior_images)
    # A box in a likely duplicate pair has its class in question: nothing explains its evidence.
    in_dup = np.zeros(len(out), dtype=bool)
    in_dup[pairs["i"][raw >= max_xdup]] = True
    # ... and a pair no other image holds on/in is not known to be legitimate: a box over a
    # part of another (a sink box on the rim of a bowl-shaped basin) is no evidence either.
    keep = (pairs["ioa"] >= overlap_ioa) & (raw < max_xdup) & ~in_dup[pairs["i"]] & (legit > 0)
    for i, cj in zip(pairs["i"][keep], pairs["cj"][keep]):
        out[int(i)].add(str(names[cj]))
    return out


def duplicate_scores(boxes: np.ndarray, labels: Sequence[str],
                     weakness: np.ndarray | None = None,
                     margin: float = DEFAULT_MARGIN) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For one image: (max same-class IoU, max any-class IoU, duplicate score) per box.

    ``boxes``: (N, 4) relative xywh (IoU does not depend on the image scale); ``weakness``:
    per-box evidence against the box (higher = weaker, NaN = unknown). ``margin`` = 0: the
    weaker box keeps the IoU, its partner gets half; > 0: the box gets
    ``IoU (1/2 + 1/2 sigmoid((w - w_partner) / margin))``.
    """
    n = len(boxes)
    _, codes = np.unique(np.asarray(labels, dtype=object).astype(str), return_inverse=True)
    w = np.full(n, np.nan) if weakness is None else np.asarray(weakness, dtype=float)
    out = _pairwise_batch(np.asarray(boxes, dtype=float).reshape(1, n, 4), codes.reshape(1, n),
                          w.reshape(1, n), np.array([n]), margin)
    return tuple(o[0] for o in out)


def robust_z(x: np.ndarray) -> np.ndarray:
    """|0.6745 (x - median) / MAD| (MAD = 0 falls back to the mean absolute deviation)."""
    med = np.median(x)
    dev = np.abs(x - med)
    mad = np.median(dev)
    if mad <= 0:
        mad = dev.mean() / 0.7979 * _MAD_TO_SIGMA if dev.mean() > 0 else 1.0
    return _MAD_TO_SIGMA * dev / mad


def outlier_scores(feats: np.ndarray, classes: np.ndarray, min_class_size: int = 10) -> np.ndarray:
    """Max robust |z| over the feature columns within each class; NaN for small classes."""
    out = np.full(len(classes), np.nan)
    _, codes = np.unique(np.asarray(classes, dtype=object).astype(str), return_inverse=True)
    order = np.argsort(codes, kind="stable")
    bounds = np.r_[0, np.nonzero(np.diff(codes[order]))[0] + 1, len(codes)]
    for a, b in zip(bounds[:-1], bounds[1:]):
        if b - a < min_class_size:
            continue
        rows = order[a:b]
        f = feats[rows]
        out[rows] = np.max(np.stack([robust_z(f[:, k]) for k in range(f.shape[1])], axis=1), axis=1)
    return out


def geometry_features(boxes: np.ndarray, widths: np.ndarray, heights: np.ndarray) -> np.ndarray:
    """(N, 4): log width, log height, log aspect (pixels where the image size is known), log area."""
    wpx = np.where(np.isfinite(widths), widths, 1.0)
    hpx = np.where(np.isfinite(heights), heights, 1.0)
    bw, bh = np.maximum(boxes[:, 2], 1e-6), np.maximum(boxes[:, 3], 1e-6)
    return np.stack([np.log(bw), np.log(bh), np.log(bw * wpx) - np.log(bh * hpx),
                     np.log(bw * bh)], axis=1)


def _image_batches(boxes: list[np.ndarray], sizes: np.ndarray, flat_codes: np.ndarray,
                   weakness: list[np.ndarray] | None = None):
    """Images with 2+ boxes batched by box count: yields ``(chunk, b, codes, w)`` with the
    image indices and their boxes (G, m, 4), class codes and weakness padded to m boxes.
    A batch is capped at ~4M pair entries to bound memory on images with hundreds of boxes."""
    starts = np.r_[0, np.cumsum(sizes)[:-1]]
    bucket = np.where(sizes > 1, sizes, 0)
    for m in np.unique(bucket[bucket > 0]):
        imgs = np.nonzero(bucket == m)[0]
        step = max(1, int(4_000_000 // (m * m)))
        for c0 in range(0, len(imgs), step):
            chunk = imgs[c0:c0 + step]
            G = len(chunk)
            b = np.zeros((G, m, 4))
            codes = np.full((G, m), -1, dtype=np.int64)
            w = np.full((G, m), np.nan)
            for g, i in enumerate(chunk):
                k = sizes[i]
                b[g, :k] = boxes[i]
                codes[g, :k] = flat_codes[starts[i]:starts[i] + k]
                if weakness is not None:
                    w[g, :k] = weakness[i]
            yield chunk, b, codes, w


def _add_cross(cross: dict, part: dict, chunk: np.ndarray, codes: np.ndarray,
               sizes: np.ndarray) -> None:
    """Append one batch's different-class pairs (``part``, from :func:`_pairwise_batch`, in
    batch-local indices) to ``cross`` as image and flat box indices with class codes."""
    if not part:
        return
    starts = np.r_[0, np.cumsum(sizes)[:-1]]
    g, i, j = (np.concatenate(part[k]) for k in ("g", "i", "j"))
    img = chunk[g]
    for k, v in (("img", img), ("i", starts[img] + i), ("j", starts[img] + j),
                 ("ci", codes[g, i]), ("cj", codes[g, j]), ("iou", np.concatenate(part["iou"])),
                 ("ioa", np.concatenate(part["ioa"]))):
        cross.setdefault(k, []).append(v)


def _scan_pairs(boxes: list[np.ndarray], sizes: np.ndarray, flat_codes: np.ndarray,
                cross: dict, weakness: list[np.ndarray] | None = None, margin: float = 0.0):
    """Every image batch's pairwise scores (:func:`_pairwise_batch`): yields ``(chunk, (same,
    any, dup))`` and collects the different-class pairs into ``cross``."""
    for chunk, b, codes, w in _image_batches(boxes, sizes, flat_codes, weakness):
        part: dict[str, list] = {}
        got = _pairwise_batch(b, codes, w, sizes[chunk], margin, cross=part)
        _add_cross(cross, part, chunk, codes, sizes)
        yield chunk, got


def _cross_pairs(cross: dict, flat_codes: np.ndarray, sizes: np.ndarray):
    """The collected different-class pairs as arrays, and each pair's class co-occurrence."""
    pairs = {k: (np.concatenate(cross[k]) if k in cross else np.zeros(0, dtype=np.int64))
             for k in ("img", "i", "j", "ci", "cj", "iou", "ioa")}
    cooc = pair_cooccurrence(flat_codes, np.repeat(np.arange(len(sizes)), sizes), pairs["ci"],
                             pairs["cj"])
    return pairs, cooc


def consistency_arrays(boxes: list[np.ndarray], labels: list[list[str]],
                       widths: Sequence[float | None], heights: Sequence[float | None],
                       weakness: list[np.ndarray] | None = None,
                       min_class_size: int = 10,
                       margin: float = DEFAULT_MARGIN,
                       xdup_weakness: list[np.ndarray] | None = None,
                       xdup_overlap_ioa: float = XDUP_OVERLAP_IOA,
                       xdup_prior_images: float = XDUP_PRIOR_IMAGES) -> dict[str, list[np.ndarray]]:
    """Every consistency score for every image's (valid) boxes: the pure-numpy core.

    Images are batched by box count, so the pairwise IoU of thousands of images is one numpy
    expression per batch instead of a Python loop. ``weakness`` splits same-class pairs,
    ``xdup_weakness`` (class evidence) cross-class ones (see :func:`cross_class_scores`).
    """
    sizes = np.array([len(b) for b in boxes], dtype=int)
    out = {a: [np.zeros(k) for k in sizes] for a in ATTRS}
    if not sizes.sum():
        return out
    flat_labels = np.asarray([l for ls in labels for l in ls], dtype=object).astype(str)
    _, flat_codes = np.unique(flat_labels, return_inverse=True)
    cross: dict[str, list] = {}
    for chunk, (same, anyc, dup) in _scan_pairs(boxes, sizes, flat_codes, cross, weakness, margin):
        for g, i in enumerate(chunk):
            k = sizes[i]
            out["consistency_dup_iou"][i] = same[g, :k]
            out["consistency_dup_iou_any"][i] = anyc[g, :k]
            out["consistency_duplicate"][i] = dup[g, :k]
    pairs, cooc = _cross_pairs(cross, flat_codes, sizes)
    xw = np.concatenate(xdup_weakness) if xdup_weakness is not None else None
    xdup, _ = cross_class_scores(pairs, cooc, int(sizes.sum()), xw, margin, xdup_overlap_ioa,
                                 xdup_prior_images)
    out["consistency_xdup"] = np.split(xdup, np.cumsum(sizes)[:-1])
    allb = np.concatenate([b for b in boxes if len(b)])
    wv = np.repeat([float(w) if w else np.nan for w in widths], sizes)
    hv = np.repeat([float(h) if h else np.nan for h in heights], sizes)
    o = outlier_scores(geometry_features(allb, wv, hv), flat_labels, min_class_size)
    out["consistency_outlier"] = np.split(o, np.cumsum(sizes)[:-1])
    return out


def scorable_boxes(tab, report: RunReport | None = None):
    """Per image of a :func:`grader.fields.read_detections` table: the boxes the consistency
    scores read (clipped to the image), their labels and ``(sample id, label id)`` keys;
    degenerate boxes and boxes without a label are left out (counted in ``report``) and listed
    as the fourth value."""
    unscorable = []
    boxes, labels, keys = [], [], []
    for i, ids in enumerate(tab.ids):
        b, status = sanitize_rel_boxes(tab.boxes[i])
        has_box = np.array([s != BOX_DEGENERATE for s in status], dtype=bool)
        has_label = np.array([v is not None for v in tab.labels[i]], dtype=bool)
        ok = has_box & has_label
        if report is not None:
            report.skip("degenerate_box", int((~has_box).sum()))
            report.skip("missing_label", int((has_box & ~has_label).sum()))
        unscorable += [(tab.sample_ids[i], ids[j]) for j in np.nonzero(~ok)[0]]
        boxes.append(b[ok] if len(b) else b)
        labels.append([tab.labels[i][j] for j in np.nonzero(ok)[0]])
        keys.append([(tab.sample_ids[i], ids[j]) for j in np.nonzero(ok)[0]])
    return boxes, labels, keys, unscorable


def legit_partners(tab) -> dict[str, set[str]]:
    """Per label id of a :func:`grader.fields.read_detections` table: the classes that lie on or
    in it as a pair the dataset holds legitimately (:func:`legit_partner_classes`, on the boxes
    :func:`run_consistency` scores); labels without any are left out."""
    boxes, labels, keys, _ = scorable_boxes(tab)
    got = legit_partner_classes(boxes, labels)
    return {k[1]: g for k, g in zip((k for ks in keys for k in ks), got) if g}


def _reviewed(tab) -> np.ndarray:
    """Per box (flat): whether a reviewer accepted or set it (a ``reviewed:*`` tag)."""
    from ..scores import REVIEWED_TAGS

    reviewed = set(REVIEWED_TAGS)
    return np.array([not reviewed.isdisjoint(t or ()) for row in tab.attrs["tags"] for t in row],
                    dtype=bool)


def _weakness(specs, tab, reviewed: np.ndarray) -> list[np.ndarray] | None:
    """Mean percentile suspicion of the other judges' present scores, per box (NaN if none).
    A box a reviewer accepted or set (``reviewed:*``) is the least suspect of all (0): of a
    pair whose other box the judges doubted less, the accepted one no longer takes the pair's
    score, so its partner rises in the queue re-ordered after the decision."""
    from ..score_stats import percentiles
    from ..evaluate import suspicion_column

    if not specs:
        return None
    sizes = [len(ids) for ids in tab.ids]
    n = sum(sizes)
    num, den = np.zeros(n), np.zeros(n)
    for s in specs:
        p = percentiles(suspicion_column(s, [v for row in tab.attrs[s.attr] for v in row]))
        ok = np.isfinite(p)
        num[ok] += p[ok]
        den[ok] += 1
    mean = np.where(den > 0, num / np.maximum(den, 1), np.nan)
    mean[reviewed] = 0.0
    return np.split(mean, np.cumsum(sizes)[:-1]) if sizes else []


def evidence_specs(collection, gt_field: str, evidence: str | Sequence[str] = DEFAULT_EVIDENCE):
    """Registered scores present on ``gt_field`` that count as evidence for duplicate pairs.

    ``evidence``: a name of :data:`EVIDENCE_RULES` (selects by the registry's issue mapping) or
    a list of score attributes.
    """
    from ..evaluate import present_score_specs

    present = present_score_specs(collection, gt_field, exclude_judges=_NOT_EVIDENCE)
    if isinstance(evidence, str):
        if evidence not in EVIDENCE_RULES:
            raise ValueError(f"evidence must be one of {sorted(EVIDENCE_RULES)} or a list of "
                             f"score attributes; got {evidence!r}")
        return [s for s in present if EVIDENCE_RULES[evidence](s)]
    wanted = set(evidence)
    return [s for s in present if s.attr in wanted]


def run_consistency(collection, gt_field: str = "ground_truth", *, min_class_size: int = 10,
                    use_evidence: bool = True, evidence: str | Sequence[str] = DEFAULT_EVIDENCE,
                    evidence_margin: float = DEFAULT_MARGIN, tag_fraction: float = 0.0,
                    duplicate_tag_iou: float = 0.7, xdup_tag_score: float = XDUP_TAG_SCORE,
                    progress: Callable[[int, int], None] | None = None) -> RunReport:
    """Write the ``consistency_*`` scores on ``gt_field``'s detections (see the module doc).

    ``duplicate_tag_iou``: boxes whose ``consistency_duplicate`` reaches it are tagged
    ``suspect:duplicate`` (with the default, essentially only the weaker box of a pair: both
    reach 0.7 only for a pair of IoU > 0.93 with near-equal evidence); ``use_evidence=False``
    ignores other judges' scores when choosing the weaker box of a pair; ``evidence``: which
    registered scores count (a name of :data:`EVIDENCE_RULES` or a list of attributes);
    ``evidence_margin``: the evidence gap (in mean percentile) that splits a pair (0 = hard).
    ``xdup_tag_score``: boxes whose ``consistency_xdup`` reaches it are tagged
    ``suspect:duplicate`` too; cross-class pairs are split by the class evidence
    (:data:`XDUP_EVIDENCE`), which ``use_evidence=False`` ignores as well.
    """
    if not isinstance(min_class_size, int) or min_class_size < 2:
        raise ValueError("min_class_size must be an integer >= 2")
    if not (isinstance(duplicate_tag_iou, (int, float)) and 0 < duplicate_tag_iou <= 1):
        raise ValueError("duplicate_tag_iou must be in (0, 1]")
    if not (isinstance(xdup_tag_score, (int, float)) and 0 < xdup_tag_score <= 1):
        raise ValueError("xdup_tag_score must be in (0, 1]")
    if not (isinstance(tag_fraction, (int, float)) and math.isfinite(tag_fraction)
            and 0 <= tag_fraction <= 1):
        raise ValueError("tag_fraction must be in [0, 1]")
    if not (isinstance(evidence_margin, (int, float)) and math.isfinite(evidence_margin)
            and evidence_margin >= 0):
        raise ValueError("evidence_margin must be a number >= 0")
    progress = progress or (lambda done, total: None)
    report = RunReport(judge=JUDGE)
    specs, xspecs = [], []
    if use_evidence:
        specs = evidence_specs(collection, gt_field, evidence)
        xspecs = evidence_specs(collection, gt_field, XDUP_EVIDENCE)
    # One read: boxes, labels and the other judges' scores (the evidence for pairs).
    tab = lgf.read_detections(collection, gt_field,
                              attrs=sorted({s.attr for s in specs + xspecs} | {"tags"}))
    report.samples_seen = len(tab)
    boxes, labels, keys, unscorable = scorable_boxes(tab, report)
    def kept(full):
        if full is None:
            return None
        out = []
        for i, ids in enumerate(tab.ids):
            keep = {k[1] for k in keys[i]}
            out.append(np.array([full[i][j] for j, lid in enumerate(ids) if lid in keep]))
        return out

    reviewed = _reviewed(tab)   # (boxes flat, as _weakness reads them)
    weak = kept(_weakness(specs, tab, reviewed))
    xweak = kept(_weakness(xspecs, tab, reviewed))
    scores = consistency_arrays(boxes, labels, tab.widths, tab.heights, weak, min_class_size,
                                evidence_margin, xdup_weakness=xweak)
    progress(len(tab), len(tab))
    values: dict[str, dict] = {a: {} for a in ATTRS}
    for a in ATTRS:
        for ks, col in zip(keys, scores[a]):
            for k, v in zip(ks, col):
                values[a][k] = float(v) if math.isfinite(v) else None
        # Unscorable boxes get None, so no value from an earlier run survives.
        values[a].update({k: None for k in unscorable})
    lgf.write_label_attrs(collection, gt_field, values)
    flat_dup = [(k, v) for ks, col in zip(keys, scores["consistency_duplicate"])
                for k, v in zip(ks, col)]
    to_tag = [k[1] for k, v in flat_dup if v >= duplicate_tag_iou]
    to_tag = sorted(set(to_tag) | {k[1] for ks, col in zip(keys, scores["consistency_xdup"])
                                   for k, v in zip(ks, col) if v >= xdup_tag_score})
    if tag_fraction > 0 and flat_dup:
        n = int(math.ceil(tag_fraction * len(flat_dup)))
        to_tag = sorted(set(to_tag) | {k[1] for k, _ in sorted(flat_dup, key=lambda kv: -kv[1])[:n]})
    report.tagged[TAG_DUPLICATE] = lgf.set_label_tag(collection, gt_field, TAG_DUPLICATE, to_tag)
    report.labels_scored = len(flat_dup)
    report.samples_scored = sum(1 for ks in keys if ks)
    report.skip("class_too_small_for_outliers", sum(int(np.isnan(c).sum()) for c in scores["consistency_outlier"]))
    report.fields = list(ATTRS)
    report.info["evidence_for_pairs"] = weak is not None
    report.info["evidence_scores"] = [s.attr for s in specs]
    report.info["xdup_evidence_scores"] = [s.attr for s in xspecs]
    lgf.record_run(collection, RUN_KEY, dict(gt_field=gt_field, min_class_size=min_class_size,
                                             use_evidence=use_evidence,
                                             evidence=evidence if isinstance(evidence, str)
                                             else list(evidence), evidence_margin=evidence_margin,
                                             tag_fraction=tag_fraction,
                                             duplicate_tag_iou=duplicate_tag_iou,
                                             xdup_tag_score=xdup_tag_score), report.to_dict())
    return report
