"""Fixes to single labels (accept, relabel, delete, replace box, adopt) and their exact undo.

Every fix edits one sample of the root dataset (never a filtered view, whose save would drop
the hidden labels), stores the full label document before and after in the fix log, and can
be undone from that record. Undo refuses (``FixConflictError``) when the label has changed
since the fix, unless ``force=True``, so it never silently discards a later edit.
"""
from __future__ import annotations

from typing import Any, Iterable

import fiftyone as fo

from grader.fields import detections_path
from grader.scores import REVIEWED_OK_TAG

from . import log as _log
from .log import FixRecord

REVIEWED_FIXED_TAG = "reviewed:fixed"  # put on labels a reviewer changed (relabel/box/adopt)
REVIEWED_TAGS = (REVIEWED_OK_TAG, REVIEWED_FIXED_TAG)
FIX_KINDS = ("accept", "relabel", "delete", "replace_box", "adopt")


class FixConflictError(RuntimeError):
    """The label changed after the fix, so undoing it would discard someone's later edit."""


def per_label_values(collection, paths: list[str]) -> list[list]:
    """``values()`` of label-list paths, one entry per label (``unwind=True`` would also
    flatten list-valued attributes such as ``tags``)."""
    cols = collection.values(paths)
    return [[x for per_sample in col for x in (per_sample or [])] for col in cols]


def root_dataset(collection) -> fo.Dataset:
    """The dataset behind a dataset or view."""
    return collection._root_dataset


def candidates_field(gt_field: str) -> str:
    """Name of the overlooked-candidates field that goes with ``gt_field``."""
    return f"{gt_field}_overlooked"


def _doc(det: fo.Detection) -> dict:
    return det.to_dict()


def _sample(dataset, sample_id: str):
    try:
        sample = dataset[sample_id]
    except KeyError:
        raise KeyError(f"sample '{sample_id}' is not in dataset '{dataset.name}'") from None
    sample.reload()  # the in-memory singleton may predate bulk writes made elsewhere
    return sample


def _dets(dataset, sample, field_name: str) -> list:
    detections_path(dataset, field_name)  # clear error for a missing / non-Detections field
    value = sample[field_name]
    if value is None:
        value = fo.Detections()
        sample[field_name] = value
    return value.detections


def _load(dataset, sample_id: str, field_name: str):
    detections_path(dataset, field_name)
    sample = _sample(dataset, sample_id)
    return sample, _dets(dataset, sample, field_name)


def _find(dets: list, label_id: str, field_name: str, sample_id: str) -> tuple[int, Any]:
    for i, d in enumerate(dets):
        if d.id == label_id:
            return i, d
    raise KeyError(f"label '{label_id}' is not in field '{field_name}' of sample '{sample_id}'")


def _add_tag(det, tag: str) -> None:
    tags = list(det.tags or [])
    if tag not in tags:
        tags.append(tag)
    det.tags = tags


def _edit(collection, sample_id: str, label_id: str, field_name: str, kind: str, change,
          user: str | None, extra: dict | None = None) -> FixRecord:
    dataset = root_dataset(collection)
    sample, dets = _load(dataset, sample_id, field_name)
    idx, det = _find(dets, label_id, field_name, sample_id)
    before = _doc(det)
    change(det)
    after = _doc(det)
    sample.save()
    rec = _log.new_record(dataset, kind, field_name, sample_id, label_id, before, after,
                          index=idx, extra=extra, user=user)
    return _log.append_fix(dataset, rec)


def accept_label(collection, sample_id: str, label_id: str, field: str = "ground_truth",
                 user: str | None = None) -> FixRecord:
    """Mark a label as reviewed and correct (tag ``reviewed:ok``; it leaves the review queue)."""
    return _edit(collection, sample_id, label_id, field, "accept",
                 lambda d: _add_tag(d, REVIEWED_OK_TAG), user)


def relabel(collection, sample_id: str, label_id: str, new_label: str | None = None,
            field: str = "ground_truth", user: str | None = None) -> FixRecord:
    """Change a label's class; ``new_label=None`` takes cleanlab's suggested swap class."""
    dataset = root_dataset(collection)
    if new_label is None:
        _, dets = _load(dataset, sample_id, field)
        _, det = _find(dets, label_id, field, sample_id)
        new_label = det.get_field("cleanlab_swap_label") if det.has_field("cleanlab_swap_label") else None
        if not new_label:
            raise ValueError(f"label '{label_id}' has no suggested class (cleanlab_swap_label); "
                             "pass new_label")
    if not isinstance(new_label, str) or not new_label.strip():
        raise ValueError(f"new_label must be a non-empty string, got {new_label!r}")

    def change(d):
        d.label = new_label
        _add_tag(d, REVIEWED_FIXED_TAG)

    return _edit(dataset, sample_id, label_id, field, "relabel", change, user,
                 extra={"new_label": new_label})


def replace_box(collection, sample_id: str, label_id: str, field: str = "ground_truth",
                pred_field: str = "predictions", pred_id: str | None = None,
                user: str | None = None) -> FixRecord:
    """Replace a label's box with its matched predicted box (``cleanlab_badloc_pred_id`` by default)."""
    dataset = root_dataset(collection)
    _, dets = _load(dataset, sample_id, field)
    _, det = _find(dets, label_id, field, sample_id)
    if pred_id is None:
        pred_id = det.get_field("cleanlab_badloc_pred_id") if det.has_field("cleanlab_badloc_pred_id") else None
        if not pred_id:
            raise ValueError(f"label '{label_id}' has no matched prediction "
                             "(cleanlab_badloc_pred_id); pass pred_id")
    _, preds = _load(dataset, sample_id, pred_field)
    _, pred = _find(preds, pred_id, pred_field, sample_id)
    box = [float(v) for v in pred.bounding_box]

    def change(d):
        d.bounding_box = list(box)
        _add_tag(d, REVIEWED_FIXED_TAG)

    return _edit(dataset, sample_id, label_id, field, "replace_box", change, user,
                 extra={"pred_field": pred_field, "pred_id": pred_id})


def delete_label(collection, sample_id: str, label_id: str, field: str = "ground_truth",
                 user: str | None = None) -> FixRecord:
    """Delete a label (its full document is kept in the fix log for undo)."""
    dataset = root_dataset(collection)
    sample, dets = _load(dataset, sample_id, field)
    idx, det = _find(dets, label_id, field, sample_id)
    before = _doc(det)
    del dets[idx]
    sample.save()
    rec = _log.new_record(dataset, "delete", field, sample_id, label_id, before, None,
                          index=idx, user=user)
    return _log.append_fix(dataset, rec)


def adopt_candidate(collection, sample_id: str, candidate_id: str, gt_field: str = "ground_truth",
                    candidate_field: str | None = None, label: str | None = None,
                    user: str | None = None) -> FixRecord:
    """Add an overlooked candidate (from ``<gt>_overlooked``) to the ground truth as a new label.

    The new label gets the candidate's class (or ``label``) and box, the tag
    ``reviewed:fixed`` and ``review_adopted_from=<candidate id>``; the candidate leaves its
    field so it leaves the queue. Undo removes the new label and puts the candidate back.
    """
    dataset = root_dataset(collection)
    candidate_field = candidate_field or candidates_field(gt_field)
    sample, cands = _load(dataset, sample_id, candidate_field)
    cidx, cand = _find(cands, candidate_id, candidate_field, sample_id)
    gts = _dets(dataset, sample, gt_field)
    new = fo.Detection(label=label or cand.label, bounding_box=[float(v) for v in cand.bounding_box],
                       tags=[REVIEWED_FIXED_TAG], review_adopted_from=cand.id)
    cand_doc = _doc(cand)
    del cands[cidx]
    gts.append(new)
    sample.save()
    rec = _log.new_record(dataset, "adopt", gt_field, sample_id, new.id, None, _doc(new),
                          index=len(gts) - 1, user=user,
                          extra={"candidate_field": candidate_field, "candidate": cand_doc,
                                 "candidate_index": cidx, "candidate_id": cand.id})
    return _log.append_fix(dataset, rec)


def accept_labels(collection, field: str = "ground_truth", label_ids: Iterable[str] | None = None,
                  user: str | None = None) -> FixRecord | None:
    """Accept many labels at once (all of ``field`` in ``collection`` by default), in bulk.

    One ``tag_labels`` call and one log record; undo removes ``reviewed:ok`` only from the
    labels that did not carry it before. Returns None when there was nothing to accept.
    """
    dataset = root_dataset(collection)
    path = detections_path(collection, field)
    ids, tags = per_label_values(collection, [f"{path}.id", f"{path}.tags"])
    wanted = set(label_ids) if label_ids is not None else None
    newly = [i for i, t in zip(ids, tags)
             if (wanted is None or i in wanted) and REVIEWED_OK_TAG not in (t or [])]
    if not newly:
        return None
    dataset.select_labels(ids=newly, fields=field).tag_labels(REVIEWED_OK_TAG, label_fields=[field])
    rec = _log.new_record(dataset, "accept_bulk", field, None, None, None, None, user=user,
                          extra={"label_ids": newly})
    return _log.append_fix(dataset, rec)


_FIXERS = {
    "accept": lambda ds, s, l, f, kw: accept_label(ds, s, l, field=f, **kw),
    "relabel": lambda ds, s, l, f, kw: relabel(ds, s, l, field=f, **kw),
    "delete": lambda ds, s, l, f, kw: delete_label(ds, s, l, field=f, **kw),
    "replace_box": lambda ds, s, l, f, kw: replace_box(ds, s, l, field=f, **kw),
    "adopt": lambda ds, s, l, f, kw: adopt_candidate(ds, s, l, gt_field=f, **kw),
}


def apply_fix(collection, kind: str, sample_id: str, label_id: str, field: str = "ground_truth",
              **kwargs) -> FixRecord:
    """Dispatch to one fix by name (``accept|relabel|delete|replace_box|adopt``).

    For ``adopt``, ``label_id`` is the candidate's id and ``field`` the ground-truth field.
    """
    if kind not in _FIXERS:
        raise ValueError(f"unknown fix '{kind}'; choose one of {list(_FIXERS)}")
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    return _FIXERS[kind](collection, sample_id, label_id, field, kwargs)


def _same(current: dict | None, expected: dict | None) -> bool:
    return current == expected


def undo_fix(collection, fix_id: str | None = None, force: bool = False,
             user: str | None = None) -> FixRecord:
    """Undo one fix exactly (the newest not-yet-undone fix when ``fix_id`` is None).

    Raises ``FixConflictError`` if the label changed since the fix (``force=True`` overrides),
    ``ValueError`` if the fix was already undone, ``LookupError`` if there is nothing to undo.
    """
    dataset = root_dataset(collection)
    if fix_id is None:
        rec = _log.last_fix(dataset, undone=False)
        if rec is None:
            raise LookupError(f"dataset '{dataset.name}' has no fix to undo")
    else:
        rec = _log.get_fix(dataset, fix_id)
    if rec.undone:
        raise ValueError(f"fix {rec.fix_id} ({rec.summary()}) was already undone")

    if rec.kind == "accept_bulk":
        ids = rec.extra.get("label_ids", [])
        if ids:
            dataset.select_labels(ids=ids, fields=rec.field).untag_labels(
                REVIEWED_OK_TAG, label_fields=[rec.field])
        return _log.mark_undone(dataset, rec, user)

    sample, dets = _load(dataset, rec.sample_id, rec.field)
    current = {d.id: (i, d) for i, d in enumerate(dets)}
    if rec.kind in ("accept", "relabel", "replace_box"):
        if rec.label_id not in current:
            raise FixConflictError(f"label '{rec.label_id}' no longer exists; cannot undo {rec.summary()}")
        i, d = current[rec.label_id]
        if not force and not _same(_doc(d), rec.after):
            raise FixConflictError(f"label '{rec.label_id}' changed after {rec.summary()}; "
                                   "pass force=True to restore the original anyway")
        dets[i] = fo.Detection.from_dict(rec.before)
    elif rec.kind == "delete":
        if rec.label_id in current:
            if not force:
                raise FixConflictError(f"label '{rec.label_id}' exists again; cannot undo {rec.summary()}")
            del dets[current[rec.label_id][0]]
        dets.insert(min(rec.index or 0, len(dets)), fo.Detection.from_dict(rec.before))
    elif rec.kind == "adopt":
        if rec.label_id in current:
            i, d = current[rec.label_id]
            if not force and not _same(_doc(d), rec.after):
                raise FixConflictError(f"adopted label '{rec.label_id}' changed after the fix; "
                                       "pass force=True to remove it anyway")
            del dets[i]
        elif not force:
            raise FixConflictError(f"adopted label '{rec.label_id}' no longer exists")
        cfield = rec.extra["candidate_field"]
        cand = rec.extra["candidate"]
        cdets = _dets(dataset, sample, cfield)
        if all(c.id != str(cand["_id"]) for c in cdets):
            cdets.insert(min(rec.extra.get("candidate_index", 0), len(cdets)),
                         fo.Detection.from_dict(cand))
    else:
        raise ValueError(f"cannot undo a fix of kind '{rec.kind}'")
    sample.save()
    return _log.mark_undone(dataset, rec, user)
