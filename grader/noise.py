"""Error injection: a noisy copy of a ground-truth field with the truth of every change recorded.

The user's field is never modified: errors are injected into a new field (``dst_field``) that
starts as a copy of ``src_field``. Four error types, chosen disjointly among the source boxes
(each box gets at most one error) and in exact counts (``round(rate * n_eligible)``):

- ``badloc``: the box is shifted/scaled so that its IoU with the original lies in ``badloc_iou``;
- ``swap``: the class is changed, uniformly to another class or to a confusable one;
- ``overlooked``: the box is deleted (kept in ``<dst_field>_deleted`` so recall can be scored);
- ``spurious``: a new box is added on background (IoU with every source box below
  ``spurious_max_iou``), with a random class; its count is ``round(rate * n_eligible)`` too;
- ``duplicate``: a second box of the same class is added on a source box, shifted/scaled so its
  IoU with the source lies in ``duplicate_iou`` (the same object boxed twice). It is inserted at
  a random position of the image's list, so list order tells nothing; the source stays clean.

Every detection of ``dst_field`` carries ``injected_error`` in {"none", "badloc", "swap",
"spurious", "duplicate"}; changed ones also carry ``injected_iou`` (badloc, duplicate: IoU with
the source), ``injected_from`` (swap: the original class) or ``injected_source`` (duplicate: the
source label's id). Unchanged and modified boxes keep their source label id, so the noisy copy
can be joined with the original label by id.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import fiftyone as fo
import numpy as np

from .boxes import as_box_array, sanitize_rel_boxes, BOX_DEGENERATE
from .classes import resolve_classes
from .fields import SUSPECT_PREFIX, detections_path, record_run
from .report import RunReport
from .scores import ISSUE_TYPES, SCORES

_JUDGE_ATTRS = [s.attr for s in SCORES] + ["possible_spurious", "possible_missing"]

TRUTH_ATTR = "injected_error"
#: the finer type of a real-looking error (``REAL_ERROR_TYPES``); today's types do not carry it
KIND_ATTR = "injected_kind"
ERROR_TYPES = ISSUE_TYPES
#: Real-looking error types (opt-in by their rate keys; not in :data:`DEFAULT_RATES`), as seen
#: when checking coco128 / coco128-val by eye, and the issue each one is recorded under
#: (``injected_error``; the type itself goes to ``injected_kind``):
#:
#: - ``cross_duplicate``: a jittered copy of a box under a confusable class (a van as car and
#:   truck) -> "duplicate";
#: - ``split``: one object as two boxes, cut across its longer side (a head and a body) ->
#:   "badloc" on both;
#: - ``merge``: one box over two same-class neighbours (two laptops, a calf with its mother):
#:   the first becomes their union -> "badloc", the second is deleted -> "overlooked";
#: - ``part``: a box that stops at a part (a toilet without its tank, a rider cut at the waist)
#:   -> "badloc";
#: - ``missed_edge`` / ``missed_group``: deleted boxes touching the image border / with two or
#:   more same-class neighbours -> "overlooked".
REAL_ERROR_TYPES: dict[str, str] = {
    "cross_duplicate": "duplicate", "split": "badloc", "merge": "badloc", "part": "badloc",
    "missed_edge": "overlooked", "missed_group": "overlooked",
}
CLEAN = "none"
RUN_KEY = "label_grader_inject_errors"
DEFAULT_RATES = {t: 0.05 for t in ERROR_TYPES}
#: Today's mix plus the real-looking types at about the proportions seen by eye on coco128 /
#: coco128-val (cross-class duplicates the most common real error): for fitting and benching
#: against errors that look real. Opt-in: nothing uses it by default.
REAL_MIX_RATES = {**DEFAULT_RATES, "cross_duplicate": 0.03, "split": 0.01, "merge": 0.01,
                  "part": 0.02, "missed_edge": 0.01, "missed_group": 0.01}
#: error types that change (or copy) an existing source box; each source box gets at most one
_BOX_ERRORS = ("badloc", "swap", "overlooked", "duplicate")
#: a box "touches" the image border within this relative distance (missed_edge)
_EDGE = 0.01


def deleted_field_name(dst_field: str) -> str:
    """Name of the field holding the boxes deleted as ``overlooked`` errors."""
    return f"{dst_field}_deleted"


def _iou_rel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of one relative xywh box ``a`` against boxes ``b`` (N, 4); axis scaling keeps IoU."""
    b = as_box_array(b)
    if len(b) == 0:
        return np.zeros(0)
    ix1 = np.maximum(a[0], b[:, 0])
    iy1 = np.maximum(a[1], b[:, 1])
    ix2 = np.minimum(a[0] + a[2], b[:, 0] + b[:, 2])
    iy2 = np.minimum(a[1] + a[3], b[:, 1] + b[:, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    union = a[2] * a[3] + b[:, 2] * b[:, 3] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def _clip_unit(box: np.ndarray) -> np.ndarray:
    x1, y1 = np.clip(box[0], 0, 1), np.clip(box[1], 0, 1)
    x2, y2 = np.clip(box[0] + box[2], 0, 1), np.clip(box[1] + box[3], 0, 1)
    return np.array([x1, y1, x2 - x1, y2 - y1])


def _transform(box: np.ndarray, m: float, ux: float, uy: float, us: float) -> np.ndarray:
    """Shift by ``m*(ux, uy)`` box sizes and scale each side by ``exp(m*us)`` about the centre."""
    x, y, w, h = box
    cx, cy = x + w / 2 + m * ux * w, y + h / 2 + m * uy * h
    s = math.exp(m * us)
    return np.array([cx - w * s / 2, cy - h * s / 2, w * s, h * s])


def perturb_box(box: Sequence[float], iou_range: tuple[float, float], rng: np.random.Generator,
                tries: int = 50) -> tuple[np.ndarray, float] | None:
    """A shifted/scaled copy of relative xywh ``box`` inside the image with IoU in ``iou_range``.

    Draws a target IoU and a random direction of change, then bisects the magnitude of the
    change (IoU falls monotonically along it) to hit the target. Returns ``(box, iou)`` or
    None when no direction works (e.g. a box filling the whole image).
    """
    lo, hi = iou_range
    b = np.asarray(box, dtype=np.float64)
    for _ in range(tries):
        target = rng.uniform(lo, hi)
        theta = rng.uniform(0, 2 * math.pi)
        # Mostly a shift, sometimes with growth or shrinkage: how annotators misplace boxes.
        ux, uy, us = math.cos(theta), math.sin(theta), rng.uniform(-0.7, 0.7)
        a, z = 0.0, 4.0
        if _iou_rel(_transform(b, z, ux, uy, us), b[None])[0] > target:
            continue
        for _ in range(40):
            mid = (a + z) / 2
            if _iou_rel(_transform(b, mid, ux, uy, us), b[None])[0] > target:
                a = mid
            else:
                z = mid
        cand = _clip_unit(_transform(b, z, ux, uy, us))
        if cand[2] <= 1e-4 or cand[3] <= 1e-4:
            continue
        iou = float(_iou_rel(cand, b[None])[0])
        if lo <= iou <= hi:
            return cand, iou
    return None


def _confusable_map(collection, classes: list[str]) -> dict[str, list[str]]:
    """Classes sharing a COCO ``supercategory`` (from ``dataset.info['categories']``)."""
    cats = collection._dataset.info.get("categories") or []
    sup = {c.get("name"): c.get("supercategory") for c in cats if isinstance(c, dict)}
    out: dict[str, list[str]] = {}
    for c in classes:
        s = sup.get(c)
        out[c] = [d for d in classes if d != c and s is not None and sup.get(d) == s]
    return out


def _clean_copy(det: fo.Detection) -> fo.Detection:
    """Copy of a source detection without judge scores or suspect tags: the noisy copy must
    not inherit verdicts computed on the clean labels."""
    d = fo.Detection.from_dict(det.to_dict())
    for attr in _JUDGE_ATTRS:
        if d.has_field(attr):
            d.clear_field(attr)
    d.tags = [t for t in (d.tags or []) if not t.startswith(SUSPECT_PREFIX)]
    return d


def _is_crowd(det) -> bool:
    return bool(det.get_field("iscrowd")) if det.has_field("iscrowd") else False


def inject_errors(collection, src_field: str = "ground_truth", dst_field: str = "noisy_ground_truth",
                  rates: Mapping[str, float] | None = None, seed: int = 0,
                  badloc_iou: tuple[float, float] = (0.3, 0.6), swap_to: str = "uniform",
                  confusions: Mapping[str, Sequence[str]] | None = None,
                  spurious_max_iou: float = 0.05, classes: Sequence[str] | None = None,
                  duplicate_iou: tuple[float, float] = (0.75, 0.95),
                  cross_duplicate_iou: tuple[float, float] = (0.6, 0.95),
                  overwrite: bool = False) -> RunReport:
    """Write a noisy copy of ``src_field`` to ``dst_field`` with known, recorded errors.

    ``rates`` maps error type -> fraction of eligible source boxes (non-crowd, non-degenerate);
    missing types get rate 0 (``None`` uses :data:`DEFAULT_RATES`). Same ``seed`` and inputs
    give the same noisy field. Returns a report whose ``info['injected']`` holds exact counts
    (of labels, per issue). The real-looking types of :data:`REAL_ERROR_TYPES` are opt-in by
    their keys in ``rates`` (counted in ``info['injected_kinds']``); they draw after today's
    types, so adding them leaves today's errors as they were for the same seed.
    """
    rates = dict(DEFAULT_RATES if rates is None else rates)
    unknown = set(rates) - set(ERROR_TYPES) - set(REAL_ERROR_TYPES)
    if unknown:
        raise ValueError(f"unknown error types {sorted(unknown)}; use "
                         f"{list(ERROR_TYPES) + list(REAL_ERROR_TYPES)}")
    if any(not isinstance(r, (int, float)) or not math.isfinite(r) or not 0 <= r <= 1
           for r in rates.values()):
        raise ValueError(f"error rates must be numbers in [0, 1]; got {rates}")
    if swap_to not in ("uniform", "confusable"):
        raise ValueError("swap_to must be 'uniform' or 'confusable'")
    if not 0 <= badloc_iou[0] <= badloc_iou[1] < 1:
        raise ValueError("badloc_iou must be a range (lo, hi) with 0 <= lo <= hi < 1")
    if not 0 < duplicate_iou[0] <= duplicate_iou[1] < 1:
        raise ValueError("duplicate_iou must be a range (lo, hi) with 0 < lo <= hi < 1")
    if not 0 < cross_duplicate_iou[0] <= cross_duplicate_iou[1] < 1:
        raise ValueError("cross_duplicate_iou must be a range (lo, hi) with 0 < lo <= hi < 1")
    if dst_field == src_field:
        raise ValueError("dst_field must differ from src_field: the source labels are never modified")
    detections_path(collection, src_field)
    del_field = deleted_field_name(dst_field)
    schema = collection._dataset.get_field_schema()
    for f in (dst_field, del_field):
        if f in schema and not overwrite:
            raise ValueError(f"field '{f}' already exists; pass overwrite=True to replace it")

    rng = np.random.default_rng(seed)
    report = RunReport(judge="inject_errors")
    sample_ids, src = collection.values(["id", src_field])
    report.samples_seen = len(sample_ids)
    classes = list(classes or resolve_classes(collection, [src_field], store=False))
    if len(classes) < 2 and rates.get("swap", 0) > 0:
        raise ValueError("swap errors need at least two classes")

    # Copies of the source detections (same ids), per sample.
    dets: list[list[fo.Detection]] = [
        [_clean_copy(d) for d in (s.detections if s is not None else [])] for s in src
    ]
    eligible = []
    for i, ds in enumerate(dets):
        if not ds:
            continue
        _, status = sanitize_rel_boxes([d.bounding_box for d in ds])
        for j, d in enumerate(ds):
            if _is_crowd(d):
                report.skip("crowd_not_eligible")
            elif status[j] == BOX_DEGENERATE or d.label is None:
                report.skip("degenerate_not_eligible")
            else:
                eligible.append((i, j))
    n_el = len(eligible)
    counts = {t: int(round(rates.get(t, 0.0) * n_el)) for t in ERROR_TYPES}
    real_counts = {t: int(round(rates.get(t, 0.0) * n_el)) for t in REAL_ERROR_TYPES}
    n_box_errors = sum(counts[t] for t in _BOX_ERRORS) + sum(real_counts.values())
    if n_box_errors > n_el:
        raise ValueError(f"rates ask for {n_box_errors} box errors but only {n_el} boxes are eligible")

    order = rng.permutation(n_el)
    chosen: dict[str, list[tuple[int, int]]] = {}
    k = 0
    for t in _BOX_ERRORS:
        chosen[t] = [eligible[o] for o in order[k:k + counts[t]]]
        k += counts[t]
    spare = [eligible[o] for o in order[k:]]  # replacements when a box cannot be perturbed

    for ds in dets:
        for d in ds:
            d[TRUTH_ATTR] = CLEAN
    done = {t: 0 for t in ERROR_TYPES}
    # Sources of duplicates, as objects: the overlooked deletions below shift list positions.
    dup_queue = [dets[i][j] for i, j in chosen["duplicate"]]
    owner = {id(d): i for i, ds in enumerate(dets) for d in ds}
    dets_orig = [list(ds) for ds in dets]

    queue = list(chosen["badloc"])
    while queue:
        i, j = queue.pop(0)
        d = dets[i][j]
        res = perturb_box(d.bounding_box, badloc_iou, rng)
        if res is None:
            report.skip("badloc_unperturbable")
            if spare:
                queue.append(spare.pop(0))
            continue
        d.bounding_box = [float(v) for v in res[0]]
        d[TRUTH_ATTR] = "badloc"
        d["injected_iou"] = res[1]
        done["badloc"] += 1

    conf_map = dict(confusions) if confusions else (
        _confusable_map(collection, classes) if swap_to == "confusable" else {})
    for i, j in chosen["swap"]:
        d = dets[i][j]
        options = [c for c in conf_map.get(d.label, []) if c != d.label] if swap_to == "confusable" else []
        if swap_to == "confusable" and not options:
            report.skip("swap_confusable_fallback_uniform")
        if not options:
            options = [c for c in classes if c != d.label]
        d["injected_from"] = d.label
        d.label = str(options[rng.integers(len(options))])
        d[TRUTH_ATTR] = "swap"
        done["swap"] += 1

    deleted: list[list[fo.Detection]] = [[] for _ in dets]
    drop = {(i, j) for i, j in chosen["overlooked"]}
    for i, j in sorted(drop):
        d = fo.Detection.from_dict(dets[i][j].to_dict())
        d[TRUTH_ATTR] = "overlooked"
        deleted[i].append(d)
        done["overlooked"] += 1
    for i in range(len(dets)):
        if any((i, j) in drop for j in range(len(dets[i]))):
            dets[i] = [d for j, d in enumerate(dets[i]) if (i, j) not in drop]

    # Duplicates: a near copy of a clean source box, inserted at a random place in the list.
    while dup_queue:
        srcd = dup_queue.pop(0)
        res = perturb_box(srcd.bounding_box, duplicate_iou, rng)
        if res is None:
            report.skip("duplicate_unperturbable")
            while spare:
                i, j = spare.pop(0)
                if dets_orig[i][j][TRUTH_ATTR] == CLEAN:
                    dup_queue.append(dets_orig[i][j])
                    break
            continue
        d = fo.Detection(label=srcd.label, bounding_box=[float(v) for v in res[0]])
        d[TRUTH_ATTR] = "duplicate"
        d["injected_iou"] = res[1]
        d["injected_source"] = srcd.id
        i = owner[id(srcd)]
        dets[i].insert(int(rng.integers(len(dets[i]) + 1)), d)
        done["duplicate"] += 1

    # Spurious boxes: sizes drawn from the real boxes, placed where no source box is.
    src_boxes = [as_box_array([d.bounding_box for d in (s.detections if s is not None else [])])
                 for s in src]
    sizes = np.concatenate([b[:, 2:] for b in src_boxes] + [np.zeros((0, 2))])
    candidates = [i for i, s in enumerate(src) if s is not None]
    for _ in range(counts["spurious"]):
        placed = False
        for _attempt in range(200):
            if not candidates or len(sizes) == 0:
                break
            i = candidates[rng.integers(len(candidates))]
            w, h = sizes[rng.integers(len(sizes))]
            w, h = min(w, 0.9), min(h, 0.9)
            box = np.array([rng.uniform(0, 1 - w), rng.uniform(0, 1 - h), w, h])
            if len(src_boxes[i]) and _iou_rel(box, src_boxes[i]).max() >= spurious_max_iou:
                continue
            d = fo.Detection(label=str(classes[rng.integers(len(classes))]),
                             bounding_box=[float(v) for v in box])
            d[TRUTH_ATTR] = "spurious"
            dets[i].append(d)
            placed = True
            done["spurious"] += 1
            break
        if not placed:
            report.skip("spurious_no_background")

    real_done: dict[str, int] = {}
    if any(real_counts.values()):
        # After every draw of today's types, so their output is unchanged for a given seed.
        xconf = dict(confusions) if confusions else _confusable_map(collection, classes)
        real_done, by_issue = _inject_real(dets, dets_orig, deleted, spare, real_counts, classes,
                                           xconf, rng, report, cross_duplicate_iou)
        for t, n in by_issue.items():
            done[t] += n

    values = {sid: (fo.Detections(detections=ds) if src[i] is not None else None)
              for i, (sid, ds) in enumerate(zip(sample_ids, dets))}
    deleted_values = {sid: fo.Detections(detections=dl) for sid, dl in zip(sample_ids, deleted)}
    if overwrite:
        for f in (dst_field, del_field):
            if f in schema:
                collection._dataset.delete_sample_field(f)
    collection.set_values(dst_field, values, key_field="id")
    collection.set_values(del_field, deleted_values, key_field="id")

    report.samples_scored = len(sample_ids)
    report.labels_scored = sum(len(ds) for ds in dets)
    report.fields = [dst_field, del_field]
    report.info["eligible_boxes"] = n_el
    report.info["injected"] = done
    report.info["requested"] = counts
    if any(real_counts.values()):
        report.info["requested_kinds"] = {t: n for t, n in real_counts.items() if n}
        report.info["injected_kinds"] = {t: n for t, n in real_done.items() if real_counts[t]}
    params = dict(src_field=src_field, dst_field=dst_field, rates=rates, seed=seed,
                  badloc_iou=list(badloc_iou), swap_to=swap_to, spurious_max_iou=spurious_max_iou,
                  duplicate_iou=list(duplicate_iou))
    if any(real_counts.values()):
        params["cross_duplicate_iou"] = list(cross_duplicate_iou)
    record_run(collection, RUN_KEY, params, report.to_dict())
    return report


def _touches_edge(b: np.ndarray) -> bool:
    return bool(b[0] <= _EDGE or b[1] <= _EDGE or b[0] + b[2] >= 1 - _EDGE or b[1] + b[3] >= 1 - _EDGE)


def _gap(a: np.ndarray, b: np.ndarray) -> float:
    """Empty space between two relative xywh boxes, in units of the larger box side (0 = touch)."""
    dx = max(0.0, max(a[0], b[0]) - min(a[0] + a[2], b[0] + b[2]))
    dy = max(0.0, max(a[1], b[1]) - min(a[1] + a[3], b[1] + b[3]))
    return math.hypot(dx, dy) / max(a[2], a[3], b[2], b[3], 1e-9)


def _inject_real(dets, dets_orig, deleted, spare, real_counts: dict[str, int], classes,
                 conf_map, rng: np.random.Generator, report: RunReport,
                 cross_iou: tuple[float, float]) -> tuple[dict[str, int], dict[str, int]]:
    """The real-looking error types (:data:`REAL_ERROR_TYPES`) on clean, unused source boxes taken
    from ``spare`` in its (random) order. Returns (done per type, labels added per issue)."""
    clean = lambda d: d[TRUTH_ATTR] == CLEAN
    owner = {id(d): i for i, ds in enumerate(dets_orig) for d in ds}
    used = {d["injected_source"] for ds in dets for d in ds if d.has_field("injected_source")}
    pool = [dets_orig[i][j] for i, j in spare]
    pool = [d for d in pool if clean(d) and d.id not in used]
    taken: set[int] = set()
    done = {t: 0 for t in real_counts}
    by_issue = {t: 0 for t in ERROR_TYPES}

    def box(d) -> np.ndarray:
        return np.asarray(d.bounding_box, dtype=float)

    def same_class_others(d) -> list:
        return [o for o in dets[owner[id(d)]] if o is not d and o.label == d.label]

    def neighbour(d):
        """Nearest clean, unused same-class box of the image within half a box side."""
        cands = [(o, _gap(box(d), box(o))) for o in same_class_others(d)
                 if clean(o) and id(o) not in taken and o.id not in used and not _is_crowd(o)]
        cands = [c for c in cands if c[1] <= 0.5]
        return min(cands, key=lambda c: c[1])[0] if cands else None

    def in_group(d) -> bool:
        b = box(d)
        near = [o for o in same_class_others(d) if _gap(b, box(o)) <= 1.0]
        return len(near) >= 2

    wants = {"cross_duplicate": lambda d: True, "split": lambda d: True, "part": lambda d: True,
             "merge": lambda d: neighbour(d) is not None,
             "missed_edge": lambda d: _touches_edge(box(d)), "missed_group": in_group}

    def insert(i: int, d) -> None:
        dets[i].insert(int(rng.integers(len(dets[i]) + 1)), d)

    def remove(d, kind: str) -> None:
        i = owner[id(d)]
        dets[i] = [o for o in dets[i] if o is not d]
        g = fo.Detection.from_dict(d.to_dict())
        g[TRUTH_ATTR] = "overlooked"
        g[KIND_ATTR] = kind
        deleted[i].append(g)
        by_issue["overlooked"] += 1

    for t in REAL_ERROR_TYPES:
        need = real_counts.get(t, 0)
        for d in pool:
            if done[t] >= need:
                break
            if id(d) in taken or not clean(d) or not wants[t](d):
                continue
            i, b = owner[id(d)], box(d)
            if t == "cross_duplicate":
                res = perturb_box(b, cross_iou, rng)
                options = [c for c in conf_map.get(d.label, []) if c != d.label] or \
                          [c for c in classes if c != d.label]
                if res is None or not options:
                    report.skip("cross_duplicate_unperturbable")
                    continue
                c = fo.Detection(label=str(options[rng.integers(len(options))]),
                                 bounding_box=[float(v) for v in res[0]])
                c[TRUTH_ATTR], c[KIND_ATTR] = "duplicate", t
                c["injected_iou"], c["injected_source"], c["injected_from"] = res[1], d.id, d.label
                insert(i, c)
                used.add(d.id)
                by_issue["duplicate"] += 1
            elif t == "split":
                # Across the longer side, at 35-65% of it: two boxes that each hold part of it.
                u = float(rng.uniform(0.35, 0.65))
                ax = 2 if b[2] >= b[3] else 3
                first, second = b.copy(), b.copy()
                first[ax] = b[ax] * u
                second[ax - 2] = b[ax - 2] + b[ax] * u
                second[ax] = b[ax] * (1 - u)
                d.bounding_box = [float(v) for v in first]
                d[TRUTH_ATTR], d[KIND_ATTR], d["injected_iou"] = "badloc", t, u
                c = fo.Detection(label=d.label, bounding_box=[float(v) for v in second])
                c[TRUTH_ATTR], c[KIND_ATTR] = "badloc", t
                c["injected_iou"], c["injected_source"] = 1 - u, d.id
                insert(i, c)
                by_issue["badloc"] += 2
            elif t == "part":
                # The box keeps 40-70% of the object from one side (cut at the waist, say).
                f = float(rng.uniform(0.4, 0.7))
                side = int(rng.integers(4))
                ax = 2 if side in (0, 2) else 3
                nb = b.copy()
                nb[ax] = b[ax] * f
                if side >= 2:   # keep the far part: right or bottom
                    nb[ax - 2] = b[ax - 2] + b[ax] * (1 - f)
                d.bounding_box = [float(v) for v in nb]
                d[TRUTH_ATTR], d[KIND_ATTR], d["injected_iou"] = "badloc", t, f
                by_issue["badloc"] += 1
            elif t == "merge":
                o = neighbour(d)
                ob = box(o)
                x1, y1 = min(b[0], ob[0]), min(b[1], ob[1])
                x2, y2 = max(b[0] + b[2], ob[0] + ob[2]), max(b[1] + b[3], ob[1] + ob[3])
                u = np.array([x1, y1, x2 - x1, y2 - y1])
                d.bounding_box = [float(v) for v in u]
                d[TRUTH_ATTR], d[KIND_ATTR] = "badloc", t
                d["injected_iou"] = float(_iou_rel(u, b[None])[0])
                taken.add(id(o))
                remove(o, t)
                by_issue["badloc"] += 1
            else:  # missed_edge, missed_group
                remove(d, t)
            taken.add(id(d))
            done[t] += 1
        if done[t] < need:
            report.skip(f"{t}_no_candidate", need - done[t])
    return done, by_issue


def injected_truth(collection, dst_field: str = "noisy_ground_truth") -> dict[str, int]:
    """Counts of each recorded error type on ``dst_field`` (plus deleted boxes)."""
    counts = {t: 0 for t in (CLEAN,) + ERROR_TYPES}
    for v in collection.values(f"{dst_field}.detections.{TRUTH_ATTR}", unwind=True):
        if v in counts:
            counts[v] += 1
    counts["overlooked"] = collection.count(f"{deleted_field_name(dst_field)}.detections")
    return counts
