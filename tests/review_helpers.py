"""Helpers for the review tests: judge-like scores written straight onto a dataset.

They stand in for a cleanlab run (same attributes, tags and candidates field) so the review
code can be tested on known values.
"""
from __future__ import annotations

import numpy as np
import fiftyone as fo

from grader.fields import set_label_tag, write_label_attr


def add_fake_cleanlab(ds, gt: str = "ground_truth", pred: str = "predictions", seed: int = 0,
                      tag_below: float = 0.35) -> None:
    """Write cleanlab-like scores, suggestions, tags and a ``<gt>_overlooked`` field on ``ds``.

    Each GT label j of a sample is matched to prediction j (``cleanlab_badloc_pred_id``);
    swap suggestions name another class of the dataset; scores below ``tag_below`` get the
    ``suspect:*`` tag. Each sample gets one overlooked candidate copied from its last prediction.
    """
    rng = np.random.default_rng(seed)
    sids, gids, glabels, pids, pboxes, plabels = ds.values(
        ["id", f"{gt}.detections.id", f"{gt}.detections.label", f"{pred}.detections.id",
         f"{pred}.detections.bounding_box", f"{pred}.detections.label"])
    classes = sorted({l for ls in glabels for l in (ls or [])}) or ["a", "b"]
    vals = {a: {} for a in ("cleanlab_badloc", "cleanlab_swap", "cleanlab_swap_label",
                            "cleanlab_badloc_pred_id")}
    badloc_tagged, swap_tagged = [], []
    cands = {}
    for sid, g, gl, p, pb, pl in zip(sids, gids, glabels, pids, pboxes, plabels):
        g, gl, p = g or [], gl or [], p or []
        for j, (lid, lab) in enumerate(zip(g, gl)):
            b, s = float(rng.uniform()), float(rng.uniform())
            vals["cleanlab_badloc"][(sid, lid)] = b
            vals["cleanlab_swap"][(sid, lid)] = s
            others = [c for c in classes if c != lab] or classes
            vals["cleanlab_swap_label"][(sid, lid)] = others[j % len(others)]
            vals["cleanlab_badloc_pred_id"][(sid, lid)] = p[j] if j < len(p) else None
            if b < tag_below:
                badloc_tagged.append(lid)
            if s < tag_below:
                swap_tagged.append(lid)
        if p:
            sc = float(rng.uniform())
            cands[sid] = fo.Detections(detections=[fo.Detection(
                label=pl[-1], bounding_box=list(pb[-1]), cleanlab_overlooked=sc,
                source_pred_id=p[-1], tags=["suspect:overlooked"] if sc < 0.8 else [])])
        else:
            cands[sid] = fo.Detections()
    for a, v in vals.items():
        write_label_attr(ds, gt, a, v)
    set_label_tag(ds, gt, "suspect:badloc", badloc_tagged)
    set_label_tag(ds, gt, "suspect:swap", swap_tagged)
    ds.set_values(f"{gt}_overlooked", cands, key_field="id")


def raw_docs(ds) -> dict:
    """Every sample document of ``ds`` as stored, keyed by id, minus modification times."""
    out = {}
    for d in ds._sample_collection.find({}):
        d.pop("last_modified_at", None)
        out[str(d["_id"])] = d
    return out


def add_jittered_predictions(ds, gt: str = "ground_truth", pred: str = "predictions",
                             seed: int = 0) -> None:
    """Give ``ds`` a predictions field: each GT box shifted by a few percent, confidence 0.5-1."""
    rng = np.random.default_rng(seed)
    sids, boxes, labels = ds.values(["id", f"{gt}.detections.bounding_box", f"{gt}.detections.label"])
    out = {}
    for sid, bs, ls in zip(sids, boxes, labels):
        dets = []
        for b, l in zip(bs or [], ls or []):
            dx, dy = rng.uniform(-0.03, 0.03, size=2)
            # stay inside the image: fixes refuse boxes that leave it
            x = float(np.clip(b[0] + dx, 0.0, max(1.0 - b[2], 0.0)))
            y = float(np.clip(b[1] + dy, 0.0, max(1.0 - b[3], 0.0)))
            dets.append(fo.Detection(label=l, bounding_box=[x, y, b[2], b[3]],
                                     confidence=float(rng.uniform(0.5, 1.0))))
        out[sid] = fo.Detections(detections=dets)
    ds.set_values(pred, out, key_field="id")


def add_fake_ensemble(ds, gt: str = "ground_truth", tag_above: float = 0.7) -> None:
    """Write an ``ensemble_any`` score (1 - the lower cleanlab score) and its tag on ``ds``
    (after :func:`add_fake_cleanlab`), like a ``compute_ensemble`` run."""
    sids, lids, bad, swap = ds.values(["id", f"{gt}.detections.id",
                                       f"{gt}.detections.cleanlab_badloc",
                                       f"{gt}.detections.cleanlab_swap"])
    vals, tagged = {}, []
    for sid, ls, bs, ss in zip(sids, lids, bad, swap):
        for lid, b, s in zip(ls or [], bs or [], ss or []):
            v = 1.0 - min(b, s)
            vals[(sid, lid)] = v
            if v > tag_above:
                tagged.append(lid)
    write_label_attr(ds, gt, "ensemble_any", vals)
    set_label_tag(ds, gt, "suspect:ensemble_any", tagged)
