"""Grading labels with a trained box grader (``boxgrader_*`` attributes and tags), and its
evaluation on held-out images by the ClipGrader protocol."""
from __future__ import annotations

import os
import time
from collections import Counter
from typing import Any, Callable

import numpy as np

from ...boxes import BOX_DEGENERATE, rel_xywh_to_abs_xyxy, sanitize_rel_boxes
from ...fields import read_detections, record_run
from ...images import ensure_metadata
from ...report import RunReport
from ..clipgrader.evaluate import EvalResult
from ..clipgrader.outputs import quality_attrs, quality_tags, write_quality
from ..clipgrader.prompts import QUALITIES
from ..clipgrader.synth import synthesize
from ..consistency import legit_partners
from ..zoom import SharedZoom
from ...parallel import one_thread
from .features import (BOX_FEATURES_FILE, _box_keys, extract_features, item_features,
                       load_box_features)
from .model import BoxGrader, _load_folds, feature_mismatch, load_boxgrader

TAG_BAD, TAG_BACKGROUND = quality_tags("boxgrader")
ATTRS = quality_attrs("boxgrader")


def evaluate_boxgrader(collection, gt_field: str = "ground_truth", *, checkpoint: str | None = None,
                       grader: BoxGrader | None = None, min_size: float = 20.0, seed: int = 12345,
                       num_workers: int = 1,
                       progress: Callable[[int, int], None] | None = None) -> EvalResult:
    """One good, bad and background example per GT object of ``collection`` (held-out images),
    graded; same figures as :func:`evaluate_clipgrader` (accuracy, FPR, confusion, per class)."""
    if grader is None:
        if checkpoint is None:
            raise ValueError("pass checkpoint= or grader=")
        grader = load_boxgrader(checkpoint)
    report = RunReport(judge="boxgrader_eval")
    items = synthesize(collection, gt_field, min_size=min_size, seed=seed, report=report)
    if not items:
        raise ValueError(f"no evaluation examples could be made from '{gt_field}' "
                         f"(skips: {dict(report.skipped)})")
    X, kept = item_features(grader.backbone, items, report=report, num_workers=num_workers,
                            progress=progress)
    p = grader.predict(X, [it.label for it in kept])
    truth = np.array([QUALITIES.index(it.quality) for it in kept])
    conf = np.zeros((3, 3), dtype=np.int64)
    np.add.at(conf, (truth, p["quality"]), 1)
    per_n: Counter = Counter(it.label for it in kept)
    per_ok: Counter = Counter(it.label for it, t, q in zip(kept, truth, p["quality"]) if t == q)
    n, negatives = int(conf.sum()), int(conf[1:].sum())
    return EvalResult(
        accuracy=float(np.trace(conf) / max(n, 1)),
        false_positive_rate=float(conf[1:, 0].sum() / max(negatives, 1)),
        confusion=conf.tolist(),
        per_class={c: {"n": per_n[c], "accuracy": per_ok[c] / per_n[c]} for c in per_n},
        num_examples=n, model=grader.meta.get("checkpoint") or "boxgrader",
        report=report.to_dict())


def other_class_prob(p_class: np.ndarray, label: int, explained: list[int]) -> float:
    """``1 - p(label)`` among the classes the crop is not explained by: a box with another
    labelled object on or in it (``explained``: its classes, a pair the dataset holds
    legitimately, :func:`grader.judges.consistency.legit_partners`) shows that object too, so
    the class head's belief in it says nothing against this box's class (a close-up pizza
    filling its table, a person on a bench). Renormalised without those classes, as the zoom
    judge leaves their predictions unmatched (:func:`grader.judges.zoom.explained_elsewhere`)."""
    p_lab = float(p_class[label])
    rest = 1.0 - float(np.sum(p_class[[c for c in set(explained) if c != label]]))
    if rest <= 1e-9:
        return 0.0
    return float(np.clip(1.0 - p_lab / rest, 0.0, 1.0))


def grade_boxgrader(collection, field: str = "ground_truth", *, checkpoint: str | None = None,
                    grader: BoxGrader | None = None, model_path: str | None = None,
                    bad_threshold: float = 0.5, background_threshold: float = 0.5,
                    num_workers: int = 1, progress: Callable[[int, int], None] | None = None,
                    run_key: str = "boxgrader", feature_cache: str | bool = True,
                    crossfit: bool = True, zoom: SharedZoom | None = None,
                    known_grader: BoxGrader | None = None) -> RunReport:
    """Grade every detection of ``field`` with a trained box grader; write ``boxgrader_*``.

    Per detection: ``boxgrader_p_good``, ``_p_bad``, ``_p_background`` (sum to 1),
    ``_p_not_good`` (1 - p_good), ``_quality`` (decided with the checkpoint's
    ``good_threshold``), ``_class`` (the class head's pick) and ``_p_other_class`` (1 - the class
    head's probability of the labelled class, without the classes of other labelled objects
    on or in the box: :func:`other_class_prob`; None for a class the grader was not trained
    on, counted ``unknown_class``). Tags ``suspect:boxgrader_bad`` / ``suspect:boxgrader_background``
    past the thresholds. Labels that cannot be scored (unreadable image, degenerate box,
    missing metadata) get None and are counted; labels and boxes are never changed.

    ``feature_cache``: a :data:`BOX_FEATURES_FILE` to read boxes' features from (same image
    path and box, same backbone settings) instead of running the detector; ``True`` (default)
    uses the one beside the checkpoint, which holds the features of the labels the grader was
    trained on, so grading those labels right after training costs no detector pass for them.
    Only the images with a box not in it are read. ``False``: always run the detector.

    ``crossfit``: where the checkpoint was trained with ``crossfit`` folds, grade each image
    the training saw with the fold grader that held it out (other images: the full grader).

    ``zoom``: a :class:`grader.judges.zoom.SharedZoom` to score the zoom judge from the same
    crop passes (grade() does, with the shipped YOLOX-Nano); its legit partners are set from
    this function's read of the labels; the caller writes it.

    ``known_grader``: a grader on the same features (grade() passes the shipped one beside a
    grader trained on these labels) that grades the labels of the classes it was trained on;
    ``grader`` grades the rest. Each label is judged by the grader that learned its class: on
    coco128 with 42 % of the boxes renamed to own classes, the shipped grader ranked the COCO-
    named boxes' errors better than the trained one, which alone can tell the own classes
    apart (``bench/custom_classes.py --data coco128-mixed``). Refused (ValueError) when its
    features differ.
    """
    if grader is None:
        if checkpoint is None:
            raise ValueError("grade_boxgrader needs checkpoint= (train one with train_boxgrader)")
        grader = load_boxgrader(checkpoint, model_path)
    if feature_cache is True:
        ck = grader.meta.get("checkpoint")
        feature_cache = os.path.join(os.path.dirname(ck), BOX_FEATURES_FILE) if ck else False
    cached = load_box_features(feature_cache, grader.backbone) if feature_cache else {}
    fold_of, fold_graders = _load_folds(grader) if crossfit else ({}, [])
    if known_grader is not None:
        differ = feature_mismatch(known_grader.config, grader.config)
        if differ:
            raise ValueError(f"known_grader reads other features than grader: {differ}")
        known_folds = _load_folds(known_grader) if crossfit else ({}, [])
    report = RunReport(judge="boxgrader")
    ensure_metadata(collection, report)
    table = read_detections(collection, field)
    report.samples_seen = len(table)
    partners = legit_partners(table)   # the dataset's own on/in class pairs
    if zoom is not None:   # the zoom judge scored from these crops reads the same labels
        zoom.partners = partners
    groups, keys, degenerate = [], [], []
    for i in range(len(table)):
        W, H = table.widths[i], table.heights[i]
        if not table.ids[i]:
            continue
        if not W or not H:
            report.skip("missing_metadata_labels", len(table.ids[i]))
            continue
        clipped, status = sanitize_rel_boxes(table.boxes[i])
        ok = [j for j, st in enumerate(status) if st != BOX_DEGENERATE]
        report.skip("degenerate_box", len(status) - len(ok))
        if ok:
            degenerate.append(len(status) - len(ok))
            groups.append((table.filepaths[i], rel_xywh_to_abs_xyxy(clipped[ok], W, H)))
            keys.append([(table.sample_ids[i], table.ids[i][j], table.labels[i][j]) for j in ok])
    t0 = time.perf_counter()
    feats: list[np.ndarray | None] = [None] * len(groups)
    todo = []
    for g, (path, boxes) in enumerate(groups):
        rows = [cached.get(k) for k in _box_keys([path] * len(boxes), boxes)] if cached else [None]
        if all(r is not None for r in rows):
            feats[g] = np.stack(rows).astype(np.float32)
        else:
            todo.append(g)
    def on_crops(k: int, crops) -> None:
        g = todo[k]
        zoom.add(keys[g][0][0], [x[1] for x in keys[g]], [x[2] for x in keys[g]], groups[g][1],
                 crops, grader.backbone.zoom_size, degenerate[g])

    for g, f in zip(todo, extract_features(grader.backbone, [groups[g] for g in todo],
                                           report=report, num_workers=num_workers,
                                           progress=progress,
                                           zoom_judge=zoom.judge if zoom is not None else None,
                                           on_crops=on_crops if zoom is not None else None)):
        feats[g] = f
    report.info["images_from_feature_cache"] = len(groups) - len(todo)
    report.info["images_by_fold_grader"] = 0
    if "prior" in grader.meta:   # which grader's quality probabilities were averaged in
        report.info["quality_prior"] = grader.meta["prior"]
    routes = [(grader, fold_of, fold_graders)]
    if known_grader is not None:
        routes.insert(0, (known_grader, *known_folds))
    route_index = [{c: j for j, c in enumerate(g.classes)} for g, _, _ in routes]
    scores: dict[tuple[str, str], dict[str, Any]] = {}
    n_fold, by_route = 0, Counter()
    with one_thread():   # once for every image's head and tree model (see one_thread)
        for (path, _), ks, X in zip(groups, keys, feats):
            if X is None:
                continue
            labels = [k[2] for k in ks]
            # each label to the first grader that knows its class (else the last: ``grader``)
            route = np.array([next((i for i, ci in enumerate(route_index) if lab in ci),
                                   len(routes) - 1) for lab in labels])
            by_fold = False
            for i, (g, f_of, f_graders) in enumerate(routes):
                rows = np.nonzero(route == i)[0]
                if not len(rows):
                    continue
                fk = f_of.get(path)
                by_fold |= fk is not None
                by_route[g.meta.get("checkpoint") or "boxgrader"] += len(rows)
                p = (g if fk is None else f_graders[fk]).predict(X[rows], [labels[r] for r in rows])
                cindex = route_index[i]
                for q, r in enumerate(rows):
                    sid, lid, lab = ks[r]
                    pq, pc = p["p_quality"][q], p["p_class"][q]
                    known = lab in cindex
                    if not known:
                        report.skip("unknown_class")
                    scores[(sid, lid)] = {
                        "boxgrader_p_good": float(pq[0]), "boxgrader_p_bad": float(pq[1]),
                        "boxgrader_p_background": float(pq[2]),
                        "boxgrader_p_not_good": float(1 - pq[0]),
                        "boxgrader_quality": QUALITIES[int(p["quality"][q])],
                        "boxgrader_class": g.classes[int(pc.argmax())],
                        "boxgrader_p_other_class": (other_class_prob(pc, cindex[lab], [
                            cindex[c] for c in partners.get(lid, ()) if c in cindex])
                            if known else None)}
            n_fold += by_fold
    report.info["images_by_fold_grader"] = n_fold
    if known_grader is not None:   # labels graded per checkpoint
        report.info["labels_by_grader"] = dict(by_route)
    t1 = time.perf_counter()
    all_keys = [(sid, lid) for sid, ids in zip(table.sample_ids, table.ids) for lid in ids]
    write_quality(collection, field, "boxgrader", scores, all_keys, ATTRS, bad_threshold,
                  background_threshold, report)
    report.info.update({"checkpoint": grader.meta.get("checkpoint"),
                        "seconds": {"features_and_score": round(t1 - t0, 3),
                                    "write": round(time.perf_counter() - t1, 3)},
                        "quality_counts": dict(Counter(r["boxgrader_quality"]
                                                       for r in scores.values()))})
    record_run(collection, run_key, {
        "method": "boxgrader", "field": field, "checkpoint": grader.meta.get("checkpoint"),
        "backbone": grader.config["backbone"], "bad_threshold": bad_threshold,
        "background_threshold": background_threshold,
        "good_threshold": grader.good_threshold}, report.to_dict())
    return report
