"""Fixes to single labels (accept, relabel, delete, replace box, adopt) and their exact undo.

Every edit is ONE MongoDB update of one sample document, addressed by label id (array filters /
``$pull`` by ``_id``), with a compare-and-set on the label as read: the update's filter holds
the label's full previous document, so if anyone changed it in between the update matches
nothing and is never applied to another label. A lost race is retried once on a fresh read
(or reported as ``FixConflictError`` when the caller pinned the state with ``expected_state``).

The fix log record is written first (state ``pending``) with the exact BSON before/after, the
edit is applied, then the record is marked ``done``; a process killed in between leaves a
pending record that :func:`recover_fixes` settles by looking at the label. Undo restores the
stored BSON byte for byte and compares states normalised (:func:`label_state`: ``bytes`` vs
``Binary`` masks, NaN attributes), so masked labels never report false conflicts.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import signal
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Sequence

import fiftyone as fo
import fiftyone.core.sample as fos
from bson import Binary, ObjectId
from pymongo import UpdateOne

from grader.fields import detections_path
from grader.redact import redact
from grader.score_stats import finite_or
from grader.scores import GT_ISSUES, REVIEWED_FIXED_TAG, REVIEWED_OK_TAG, REVIEWED_TAGS

from . import log as _log
from .log import FixRecord

FIX_KINDS = ("accept", "relabel", "delete", "replace_box", "adopt")
BULK_CHUNK = 50_000  # labels per update_many of a bulk accept (bounds a server op that outlives its client)


FAULT_ENV = "LABEL_GRADER_FAULT_POINT"  # tests/test_fault_injection.py: SIGKILL at a named write phase


def _fault_point(name: str) -> None:
    """Die here, like a killed process, when the fault-injection test names this phase."""
    if os.environ.get(FAULT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


class FixConflictError(RuntimeError):
    """The label changed since it was read (by another curator or process): nothing was written."""


class _Pending:
    """Holds the pending log record of one edit; drops it if the edit fails before it is applied
    (a lost race, a label deleted meanwhile), so the log never keeps a fix that did not happen."""

    def __init__(self, dataset):
        self.dataset, self.rec, self.applied = dataset, None, False

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None and not self.applied and self.rec is not None:
            _log.drop_pending(self.dataset, self.rec)
        return False


# ---------------------------------------------------------------- label state (normalised BSON)

def _norm(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _norm(v) for k, v in sorted(x.items())}
    if isinstance(x, (list, tuple)):
        return [_norm(v) for v in x]
    if isinstance(x, ObjectId):
        return {"$oid": str(x)}
    if isinstance(x, (bytes, bytearray, Binary)):  # bytes and Binary(subtype 0) are the same BSON
        return {"$bin": bytes(x).hex()}
    if isinstance(x, float):
        if math.isnan(x):
            return {"$nan": 1}
        if math.isinf(x):
            return {"$inf": 1 if x > 0 else -1}
        return x
    if isinstance(x, datetime):
        return {"$date": x.replace(tzinfo=None).isoformat()}
    if hasattr(x, "item") and callable(x.item):  # numpy scalars
        return _norm(x.item())
    return x


def label_state(label) -> str:
    """A stable token of a label's full content: a hash of its normalised BSON document.

    Accepts a raw label document (as stored in MongoDB) or a ``fo.Detection``; both give the
    same token for the same label. Pass it back as ``expected_state`` to any fix so it raises
    ``FixConflictError`` instead of editing a label that changed since it was shown.
    """
    if label is None:
        return "absent"
    doc = dict(label.to_mongo()) if isinstance(label, fo.Label) else label
    blob = json.dumps(_norm(doc), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha1(blob.encode()).hexdigest()


def same_state(a: dict | None, b: dict | None) -> bool:
    """Whether two label documents are equal as BSON (normalised: no false NaN/Binary conflicts)."""
    return label_state(a) == label_state(b)


# ---------------------------------------------------------------- helpers

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


def _oid(x: str, what: str) -> ObjectId:
    try:
        return ObjectId(str(x))
    except Exception:
        raise ValueError(f"{what} must be a 24-hex-digit id, got {redact(repr(x))}") from None


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _coll(dataset):
    return dataset._sample_collection


def _refresh(dataset, sample_ids: Iterable[str]) -> None:
    """Make in-memory sample singletons see what raw updates wrote."""
    fos.Sample._reload_docs(dataset._sample_collection_name, sample_ids=[str(s) for s in sample_ids])


def _read(dataset, sample_id: str, fields: Sequence[str]) -> dict:
    """The raw sample document (only ``fields``), or a clear ``KeyError``."""
    doc = _coll(dataset).find_one({"_id": _oid(sample_id, "sample_id")}, {f: 1 for f in fields})
    if doc is None:
        raise KeyError(f"sample '{sample_id}' is not in dataset '{dataset.name}'")
    return doc


def _labels(doc: dict, field: str) -> list[dict] | None:
    """The raw label list of ``field`` (None when the field is None/absent on the sample)."""
    value = doc.get(field)
    if value is None:
        return None
    return value.get("detections") or []


def _find(labels: list[dict] | None, label_id: str, field: str, sample_id: str) -> tuple[int, dict]:
    oid = _oid(label_id, "label_id")
    for i, d in enumerate(labels or []):
        if d.get("_id") == oid:
            return i, d
    raise KeyError(f"label '{label_id}' is not in field '{field}' of sample '{sample_id}'")


def _check_expected(expected_state: str | None, current: dict | None, label_id: str) -> None:
    if expected_state is not None and label_state(current) != expected_state:
        raise FixConflictError(f"label '{label_id}' changed since it was read (by another curator "
                               "or process); reload it and try again")


def _with_tag(doc: dict, tag: str) -> dict:
    tags = list(doc.get("tags") or [])
    if tag not in tags:
        tags.append(tag)
    doc["tags"] = tags
    return doc


def _class_list(dataset, field: str) -> list[str] | None:
    classes = dataset.classes.get(field) or dataset.default_classes
    return list(classes) if classes else None


def _check_class(dataset, field: str, label: str, allow_new_class: bool) -> None:
    if not isinstance(label, str) or not label.strip():
        raise ValueError(f"new_label must be a non-empty string, got {redact(repr(label))}")
    if allow_new_class:
        return
    known = _class_list(dataset, field)
    if known is None:  # no declared class list: the classes already in the field
        known = dataset.distinct(f"{field}.detections.label")
    if label not in known:
        shown = ", ".join(map(str, known[:20])) + (" ..." if len(known) > 20 else "")
        raise ValueError(f"class '{label}' is not in the class list of '{field}' ({shown}); "
                         "pass allow_new_class=True to add a new class")


def validate_box(box, what: str = "box") -> list[float]:
    """A relative ``[x, y, w, h]`` box as 4 finite floats with w, h > 0 inside [0, 1], or ValueError."""
    try:
        vals = [float(v) for v in box]
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be 4 numbers [x, y, w, h], got {redact(repr(box))}") from None
    if len(vals) != 4:
        raise ValueError(f"{what} must have 4 numbers [x, y, w, h], got {len(vals)}: {vals}")
    if not all(math.isfinite(v) for v in vals):
        raise ValueError(f"{what} has a non-finite value: {vals}")
    x, y, w, h = vals
    eps = 1e-6
    if w <= 0 or h <= 0 or x < -eps or y < -eps or x + w > 1 + eps or y + h > 1 + eps:
        raise ValueError(f"{what} {vals} is not a relative box inside the image "
                         "(x, y >= 0, w, h > 0, x + w <= 1, y + h <= 1)")
    return vals


# ---------------------------------------------------------------- the edit engine

def _log_pending(dataset, kind, field, sample_id, label_id, before, after, index, extra, user):
    rec = _log.new_record(dataset, kind, field, sample_id, label_id, before, after,
                          index=index, extra=extra, user=user)
    rec.state = "pending"
    return _log.append_fix(dataset, rec)


def _cas_label_filter(sample_oid: ObjectId, field: str, current: dict) -> dict:
    # Matches only while the label is exactly as read (BSON equality of the whole subdocument;
    # MongoDB equates NaN with NaN, so NaN attributes still match).
    return {"_id": sample_oid, f"{field}.detections": current}


def _run_edit(dataset, sample_id: str, field: str, label_id: str, kind: str,
              change: Callable[[dict], dict], user, extra, expected_state) -> FixRecord:
    """Replace one label by ``change(label)``, atomically and only if it is still as read."""
    detections_path(dataset, field)
    soid, loid = _oid(sample_id, "sample_id"), _oid(label_id, "label_id")
    with _Pending(dataset) as p:
        for attempt in range(2):
            doc = _read(dataset, sample_id, [field])
            idx, current = _find(_labels(doc, field), label_id, field, sample_id)
            _check_expected(expected_state, current, label_id)
            new = change(copy.deepcopy(current))
            if p.rec is None:
                p.rec = _log_pending(dataset, kind, field, sample_id, label_id, current, new, idx,
                                     extra, user)
            else:  # retry after a lost race: the record must hold what we really replace
                _log.update_pending(dataset, p.rec, before=current, after=new, index=idx)
            _fault_point("fix:logged")
            res = _coll(dataset).update_one(
                _cas_label_filter(soid, field, current),
                {"$set": {f"{field}.detections.$[d]": new, "last_modified_at": _now()}},
                array_filters=[{"d._id": loid}])
            if res.matched_count:
                p.applied = True
                _fault_point("fix:applied")
                _refresh(dataset, [sample_id])
                return _log.mark_done(dataset, p.rec)
            if expected_state is not None:
                # The curator decided on the state shown: never re-apply onto a newer one.
                raise FixConflictError(f"label '{label_id}' changed since it was shown; "
                                       f"{kind} was refused and nothing was written")
            # Lost a race without a shown state: re-read once and try again.
        raise FixConflictError(f"label '{label_id}' kept changing while {kind} was applied "
                               "(another curator or process); nothing was written")


def accept_label(collection, sample_id: str, label_id: str, field: str = "ground_truth",
                 user: str | None = None, expected_state: str | None = None) -> FixRecord:
    """Mark a label as reviewed and correct (tag ``reviewed:ok``; it leaves the review queue)."""
    return _run_edit(root_dataset(collection), sample_id, field, label_id, "accept",
                     lambda d: _with_tag(d, REVIEWED_OK_TAG), user, None, expected_state)


def relabel(collection, sample_id: str, label_id: str, new_label: str | None = None,
            field: str = "ground_truth", user: str | None = None, allow_new_class: bool = False,
            expected_state: str | None = None) -> FixRecord:
    """Change a label's class; ``new_label=None`` takes cleanlab's suggested swap class.

    A class outside the field's class list (``dataset.classes[field]``, else
    ``default_classes``, else the classes present) needs ``allow_new_class=True``.
    """
    dataset = root_dataset(collection)
    detections_path(dataset, field)
    if new_label is None:
        doc = _read(dataset, sample_id, [field])
        _, cur = _find(_labels(doc, field), label_id, field, sample_id)
        new_label = cur.get("cleanlab_swap_label")
        if not new_label:
            raise ValueError(f"label '{label_id}' has no suggested class (cleanlab_swap_label); "
                             "pass new_label")
    _check_class(dataset, field, new_label, allow_new_class)

    def change(d):
        d["label"] = new_label
        return _with_tag(d, REVIEWED_FIXED_TAG)

    return _run_edit(dataset, sample_id, field, label_id, "relabel", change, user,
                     {"new_label": new_label}, expected_state)


def replace_box(collection, sample_id: str, label_id: str, field: str = "ground_truth",
                pred_field: str = "predictions", pred_id: str | None = None,
                user: str | None = None, box: Sequence[float] | None = None,
                expected_state: str | None = None) -> FixRecord:
    """Replace a label's box: with ``box`` (relative ``[x, y, w, h]``) if given, else with its
    matched predicted box (``pred_id``, default ``cleanlab_badloc_pred_id``)."""
    dataset = root_dataset(collection)
    detections_path(dataset, field)
    if box is not None:
        new_box = validate_box(box)
        extra = {"box": new_box}
    else:
        doc = _read(dataset, sample_id, [field])
        _, cur = _find(_labels(doc, field), label_id, field, sample_id)
        if pred_id is None:
            pred_id = cur.get("cleanlab_badloc_pred_id")
            if not pred_id:
                raise ValueError(f"label '{label_id}' has no matched prediction "
                                 "(cleanlab_badloc_pred_id); pass pred_id or box")
        detections_path(dataset, pred_field)
        pdoc = _read(dataset, sample_id, [pred_field])
        _, pred = _find(_labels(pdoc, pred_field), pred_id, pred_field, sample_id)
        new_box = validate_box(pred.get("bounding_box") or [], f"prediction {pred_id}'s box")
        extra = {"pred_field": pred_field, "pred_id": pred_id}

    def change(d):
        d["bounding_box"] = list(new_box)
        return _with_tag(d, REVIEWED_FIXED_TAG)

    return _run_edit(dataset, sample_id, field, label_id, "replace_box", change, user, extra,
                     expected_state)


#: The issues a deletion can establish: a box with no object in it, or a second box on one.
DELETE_ISSUES = ("spurious", "duplicate")


def deletion_issue(label: dict, issue: str | None = None) -> tuple[str, str]:
    """Why ``label`` is deleted, and who said so: ``issue`` where the reviewer gave one
    (``"reviewer"``), else the likelier of :data:`DELETE_ISSUES` by the label's own ensemble
    scores (``"scores"``; ``"spurious"`` where neither was computed). The fix log keeps it, so
    the ensemble learns each deletion as the error it was (:mod:`grader.ensemble_reviews`)."""
    if issue is not None:
        if issue not in GT_ISSUES:
            raise ValueError(f"unknown issue {issue!r}; a deletion is one of {list(GT_ISSUES)}")
        return issue, "reviewer"
    return max(DELETE_ISSUES, key=lambda i: finite_or(label.get(f"ensemble_{i}"), -1.0)), "scores"


def delete_label(collection, sample_id: str, label_id: str, field: str = "ground_truth",
                 user: str | None = None, expected_state: str | None = None,
                 issue: str | None = None) -> FixRecord:
    """Delete a label (``$pull`` by id; its full document is kept in the fix log for undo).
    ``issue``: why (``"spurious"``, ``"duplicate"``, ...); by default the likelier of the two by
    the label's ensemble scores (:func:`deletion_issue`), kept in the log's ``extra``."""
    dataset = root_dataset(collection)
    detections_path(dataset, field)
    if issue is not None:
        deletion_issue({}, issue)   # an unknown issue fails before anything is written
    soid, loid = _oid(sample_id, "sample_id"), _oid(label_id, "label_id")
    with _Pending(dataset) as p:
        for attempt in range(2):
            doc = _read(dataset, sample_id, [field])
            labels = _labels(doc, field)
            idx, current = _find(labels, label_id, field, sample_id)
            _check_expected(expected_state, current, label_id)
            prev_id = str(labels[idx - 1]["_id"]) if idx > 0 else None
            why, source = deletion_issue(current, issue)
            extra = {"prev_id": prev_id, "issue": why, "issue_source": source}
            if p.rec is None:
                p.rec = _log_pending(dataset, "delete", field, sample_id, label_id, current, None,
                                     idx, extra, user)
            else:
                _log.update_pending(dataset, p.rec, before=current, index=idx, extra=extra)
            _fault_point("delete:logged")
            res = _coll(dataset).update_one(
                _cas_label_filter(soid, field, current),
                {"$pull": {f"{field}.detections": {"_id": loid}},
                 "$set": {"last_modified_at": _now()}})
            if res.matched_count:
                p.applied = True
                _fault_point("delete:applied")
                _refresh(dataset, [sample_id])
                return _log.mark_done(dataset, p.rec)
            if expected_state is not None:
                raise FixConflictError(f"label '{label_id}' changed since it was shown; "
                                       "delete was refused and nothing was written")
        raise FixConflictError(f"label '{label_id}' kept changing while it was deleted; "
                               "nothing was written")


def _push_update(doc_field_value, field: str, label: dict, position: int | None) -> dict:
    """``$push`` (or ``$set`` of a new Detections when the field is None) of one label."""
    if doc_field_value is None:
        return {"$set": {field: {"_cls": "Detections", "detections": [label]}}}
    each: dict[str, Any] = {"$each": [label]}
    if position is not None:
        each["$position"] = int(position)
    return {"$push": {f"{field}.detections": each}}


def adopt_candidate(collection, sample_id: str, candidate_id: str, gt_field: str = "ground_truth",
                    candidate_field: str | None = None, label: str | None = None,
                    user: str | None = None, allow_new_class: bool = False,
                    expected_state: str | None = None) -> FixRecord:
    """Add an overlooked candidate (from ``<gt>_overlooked``) to the ground truth as a new label.

    The new label gets the candidate's class (or ``label``) and box, the tag
    ``reviewed:fixed`` and ``review_adopted_from=<candidate id>``; the candidate leaves its
    field in the same update (so it leaves the queue). Undo removes the new label and puts the
    candidate back. ``expected_state`` refers to the candidate.
    """
    dataset = root_dataset(collection)
    candidate_field = candidate_field or candidates_field(gt_field)
    detections_path(dataset, gt_field)
    detections_path(dataset, candidate_field)
    soid, coid = _oid(sample_id, "sample_id"), _oid(candidate_id, "candidate_id")
    if label is not None:
        _check_class(dataset, gt_field, label, allow_new_class)
    new_oid = ObjectId()
    with _Pending(dataset) as p:
        for attempt in range(2):
            doc = _read(dataset, sample_id, [gt_field, candidate_field])
            cidx, cand = _find(_labels(doc, candidate_field), candidate_id, candidate_field, sample_id)
            _check_expected(expected_state, cand, candidate_id)
            box = validate_box(cand.get("bounding_box") or [], f"candidate {candidate_id}'s box")
            new = fo.Detection(label=label or cand.get("label"), bounding_box=box,
                               tags=[REVIEWED_FIXED_TAG], review_adopted_from=str(coid))
            new_doc = dict(new.to_mongo())
            new_doc["_id"] = new_oid
            gts = _labels(doc, gt_field)
            extra = {"candidate_field": candidate_field, "candidate": cand, "candidate_index": cidx,
                     "candidate_id": str(coid)}
            if p.rec is None:
                p.rec = _log_pending(dataset, "adopt", gt_field, sample_id, str(new_oid), None, new_doc,
                                   len(gts or []), extra, user)
            else:
                _log.update_pending(dataset, p.rec, after=new_doc, index=len(gts or []), extra=extra)
            upd = _push_update(doc.get(gt_field), gt_field, new_doc, None)
            upd.setdefault("$set", {})["last_modified_at"] = _now()
            upd["$pull"] = {f"{candidate_field}.detections": {"_id": coid}}
            flt = {"_id": soid, f"{candidate_field}.detections": cand}
            flt[gt_field] = None if doc.get(gt_field) is None else {"$ne": None}
            res = _coll(dataset).update_one(flt, upd)
            if res.matched_count:
                p.applied = True
                _refresh(dataset, [sample_id])
                return _log.mark_done(dataset, p.rec)
            if expected_state is not None:
                raise FixConflictError(f"candidate '{candidate_id}' changed since it was shown; "
                                       "adopt was refused and nothing was written")
        raise FixConflictError(f"candidate '{candidate_id}' kept changing while it was adopted; "
                               "nothing was written")


# ---------------------------------------------------------------- bulk accept

def _chunks(seq: list, n: int):
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def _apply_bulk_tag(dataset, field: str, pairs: list[tuple[ObjectId, ObjectId]], tag: str,
                    add: bool, rec: FixRecord | None = None, start_chunk: int = 0) -> None:
    size = int((rec.extra.get("chunk_size") if rec is not None else None) or BULK_CHUNK)
    """``$addToSet``/``$pull`` ``tag`` on labels ``(sample_oid, label_oid)``: one bulk write per
    chunk, addressed by label id through array filters; progress is noted on ``rec``."""
    coll = _coll(dataset)
    op = "$addToSet" if add else "$pull"
    now = _now()
    for k, chunk in enumerate(_chunks(pairs, size)):
        if k < start_chunk:
            continue
        # one UpdateOne per sample naming only its own label ids: a single update_many with a
        # chunk-wide $in array filter costs MongoDB ~10 ms per document (bench/bulk_accept.py)
        per_sample: dict[ObjectId, list[ObjectId]] = {}
        for s, l in chunk:
            per_sample.setdefault(s, []).append(l)
        ops = [UpdateOne({"_id": s}, {op: {f"{field}.detections.$[d].tags": tag},
                                      "$set": {"last_modified_at": now}},
                         array_filters=[{"d._id": {"$in": ls}}])
               for s, ls in per_sample.items()]
        coll.bulk_write(ops, ordered=False)
        if rec is not None:
            _log.set_progress(dataset, rec, k + 1)
            _fault_point("bulk:chunk")
    _refresh(dataset, {str(s) for s, _ in pairs})


def accept_labels(collection, field: str = "ground_truth", label_ids: Iterable[str] | None = None,
                  user: str | None = None, chunk_size: int = BULK_CHUNK) -> FixRecord | None:
    """Accept many labels at once (all of ``field`` in ``collection`` by default), in bulk.

    The fix-log record (state ``pending``, listing the labels that did not carry
    ``reviewed:ok`` yet) is written first, then one ``update_many`` per chunk of
    ``BULK_CHUNK`` labels tags them, then the record is marked ``done``. A run killed in
    between shows in :func:`pending_fixes` and can be resumed or undone
    (:func:`recover_fixes`). Undo removes ``reviewed:ok`` only from the listed labels.
    Returns None when there was nothing to accept.
    """
    dataset = root_dataset(collection)
    path = detections_path(collection, field)
    sids, ids, tags = collection.values(["_id", f"{path}._id", f"{path}.tags"], _raw=True)
    wanted = {_oid(i, "label id") for i in label_ids} if label_ids is not None else None
    pairs = [(s, i) for s, ls, ts in zip(sids, ids, tags)
             for i, t in zip(ls or [], ts or [])
             if (wanted is None or i in wanted) and REVIEWED_OK_TAG not in (t or [])]
    if not pairs:
        return None
    if int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    rec = _log.new_record(dataset, "accept_bulk", field, None, None, None, None, user=user,
                          extra={"label_ids": [str(l) for _, l in pairs],
                                 "sample_ids": [str(s) for s in dict.fromkeys(s for s, _ in pairs)],
                                 "chunks_done": 0})
    rec.extra["chunk_size"] = int(chunk_size)
    rec.state = "pending"
    rec = _log.append_fix(dataset, rec)
    _fault_point("bulk:logged")
    _apply_bulk_tag(dataset, field, pairs, REVIEWED_OK_TAG, True, rec)
    _fault_point("bulk:applied")
    return _log.mark_done(dataset, rec)


def _bulk_pairs(dataset, rec: FixRecord) -> list[tuple[ObjectId, ObjectId]]:
    """The (sample, label) pairs of a bulk record, located by label id in one aggregation."""
    lids = [ObjectId(l) for l in rec.extra.get("label_ids", [])]
    sids = [ObjectId(s) for s in rec.extra.get("sample_ids", [])]
    path = f"{rec.field}.detections"
    want = set(lids)
    pairs = []
    q = {"_id": {"$in": sids}} if sids else {f"{path}._id": {"$in": lids}}
    for doc in _coll(dataset).find(q, {f"{path}._id": 1}):
        for d in ((doc.get(rec.field) or {}).get("detections") or []):
            if d.get("_id") in want:
                pairs.append((doc["_id"], d["_id"]))
    return pairs


# ---------------------------------------------------------------- dispatch

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
    Every fix accepts ``expected_state`` (a :func:`label_state` token) and ``user``.
    """
    if kind not in _FIXERS:
        raise ValueError(f"unknown fix '{kind}'; choose one of {list(_FIXERS)}")
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    return _FIXERS[kind](collection, sample_id, label_id, field, kwargs)


# ---------------------------------------------------------------- undo

def _sample_exists(dataset, sample_id: str | None) -> bool:
    if sample_id is None:
        return True
    return _coll(dataset).count_documents({"_id": ObjectId(sample_id)}, limit=1) > 0


def undo_fix(collection, fix_id: str | None = None, force: bool = False,
             user: str | None = None) -> FixRecord:
    """Undo one fix exactly (the newest undoable fix when ``fix_id`` is None).

    With ``fix_id=None``, fixes whose sample was deleted since are skipped (they cannot be
    undone). Raises ``FixConflictError`` if the label changed since the fix (``force=True``
    restores the original anyway), ``ValueError`` if the fix was already undone or is still
    pending (see :func:`recover_fixes`), ``LookupError`` if there is nothing to undo or the
    fix's sample no longer exists.
    """
    dataset = root_dataset(collection)
    if fix_id is None:
        rec = None
        for cand in _log.iter_fixes(dataset, undone=False, state="done"):
            if _sample_exists(dataset, cand.sample_id):
                rec = cand
                break
        if rec is None:
            raise LookupError(f"dataset '{dataset.name}' has no fix to undo")
    else:
        rec = _log.get_fix(dataset, fix_id)
    if rec.undone:
        raise ValueError(f"fix {rec.fix_id} ({rec.summary()}) was already undone")
    if rec.state == "pending":
        raise ValueError(f"fix {rec.fix_id} ({rec.summary()}) was interrupted; settle it with "
                         "review.recover_fixes(dataset) first")
    if not _sample_exists(dataset, rec.sample_id):
        raise LookupError(f"sample '{rec.sample_id}' of fix {rec.summary()} was deleted; "
                          "this fix cannot be undone")
    _log.set_undo_pending(dataset, rec, True)
    _fault_point("undo:marked")
    if rec.kind == "accept_bulk":
        _apply_bulk_tag(dataset, rec.field, _bulk_pairs(dataset, rec), REVIEWED_OK_TAG, False)
        return _log.mark_undone(dataset, rec, user)
    if rec.kind in ("accept", "relabel", "replace_box"):
        _undo_replace(dataset, rec, force)
    elif rec.kind == "delete":
        _undo_delete(dataset, rec, force)
    elif rec.kind == "adopt":
        _undo_adopt(dataset, rec, force)
    else:
        _log.set_undo_pending(dataset, rec, False)
        raise ValueError(f"cannot undo a fix of kind '{rec.kind}'")
    _fault_point("undo:applied")
    _refresh(dataset, [rec.sample_id])
    return _log.mark_undone(dataset, rec, user)


def _conflict(dataset, rec, msg):
    _log.set_undo_pending(dataset, rec, False)
    raise FixConflictError(msg)


def _undo_replace(dataset, rec: FixRecord, force: bool) -> None:
    soid, loid, field = ObjectId(rec.sample_id), ObjectId(rec.label_id), rec.field
    for attempt in range(2):
        doc = _read(dataset, rec.sample_id, [field])
        try:
            _, current = _find(_labels(doc, field), rec.label_id, field, rec.sample_id)
        except KeyError:
            _conflict(dataset, rec, f"label '{rec.label_id}' no longer exists; cannot undo {rec.summary()}")
        if not force and not same_state(current, rec.after):
            _conflict(dataset, rec, f"label '{rec.label_id}' changed after {rec.summary()}; "
                      "pass force=True to restore the original anyway")
        res = _coll(dataset).update_one(
            _cas_label_filter(soid, field, current),
            {"$set": {f"{field}.detections.$[d]": rec.before, "last_modified_at": _now()}},
            array_filters=[{"d._id": loid}])
        if res.matched_count:
            return
    _conflict(dataset, rec, f"label '{rec.label_id}' kept changing during undo; nothing was written")


def _insert_position(labels: list[dict] | None, prev_id: str | None, index: int | None) -> int:
    """Where to put a label back: after its former predecessor if it is still there, else at
    its former index (clipped to the list)."""
    labels = labels or []
    if prev_id is not None:
        for i, d in enumerate(labels):
            if str(d.get("_id")) == prev_id:
                return i + 1
    return min(int(index or 0), len(labels))


def _undo_delete(dataset, rec: FixRecord, force: bool) -> None:
    soid, loid, field = ObjectId(rec.sample_id), ObjectId(rec.label_id), rec.field
    for attempt in range(2):
        doc = _read(dataset, rec.sample_id, [field])
        labels = _labels(doc, field)
        if any(d.get("_id") == loid for d in labels or []):
            if not force:
                _conflict(dataset, rec, f"label '{rec.label_id}' exists again; cannot undo {rec.summary()}")
            _coll(dataset).update_one({"_id": soid}, {"$pull": {f"{field}.detections": {"_id": loid}}})
            continue
        pos = _insert_position(labels, rec.extra.get("prev_id"), rec.index)
        # CAS: the label is still absent and the list has the length we computed the position on
        flt: dict[str, Any] = {"_id": soid, f"{field}.detections._id": {"$ne": loid}}
        if labels is None:
            flt[field] = None
        else:
            flt[f"{field}.detections"] = {"$size": len(labels)}
        upd = _push_update(doc.get(field), field, rec.before, pos)
        upd.setdefault("$set", {})["last_modified_at"] = _now()
        if _coll(dataset).update_one(flt, upd).matched_count:
            return
    _conflict(dataset, rec, f"field '{field}' of sample '{rec.sample_id}' kept changing during undo; "
              "nothing was written")


def _undo_adopt(dataset, rec: FixRecord, force: bool) -> None:
    soid, loid, field = ObjectId(rec.sample_id), ObjectId(rec.label_id), rec.field
    cfield = rec.extra["candidate_field"]
    cand = rec.extra["candidate"]
    coid = cand["_id"] if isinstance(cand["_id"], ObjectId) else ObjectId(str(cand["_id"]))
    for attempt in range(2):
        doc = _read(dataset, rec.sample_id, [field, cfield])
        labels, cands = _labels(doc, field), _labels(doc, cfield)
        current = next((d for d in labels or [] if d.get("_id") == loid), None)
        if current is None and not force:
            _conflict(dataset, rec, f"adopted label '{rec.label_id}' no longer exists")
        if current is not None and not force and not same_state(current, rec.after):
            _conflict(dataset, rec, f"adopted label '{rec.label_id}' changed after the fix; "
                      "pass force=True to remove it anyway")
        flt: dict[str, Any] = {"_id": soid}
        upd: dict[str, Any] = {"$set": {"last_modified_at": _now()}}
        if current is not None:
            flt[f"{field}.detections"] = current
            upd["$pull"] = {f"{field}.detections": {"_id": loid}}
        if not any(c.get("_id") == coid for c in cands or []):
            pos = min(int(rec.extra.get("candidate_index", 0) or 0), len(cands or []))
            push = _push_update(doc.get(cfield), cfield, cand, pos)
            for k, v in push.items():
                upd.setdefault(k, {}).update(v)
            if cands is None:
                flt[cfield] = None
            else:
                flt[f"{cfield}.detections"] = {"$size": len(cands)}
        if _coll(dataset).update_one(flt, upd).matched_count:
            return
    _conflict(dataset, rec, f"sample '{rec.sample_id}' kept changing during undo; nothing was written")


# ---------------------------------------------------------------- interrupted fixes

def pending_fixes(collection) -> list[FixRecord]:
    """Fixes (and undos) a killed process left half-way: state ``pending`` or undo pending."""
    return _log.pending(root_dataset(collection))


def recover_fixes(collection, resume_bulk: bool = True) -> list[tuple[FixRecord, str]]:
    """Settle every pending fix by looking at the data; returns ``(record, outcome)`` pairs.

    A single-label fix is marked ``done`` when the label holds its ``after`` state and dropped
    when it still holds its ``before`` (the write never happened). An interrupted bulk accept is
    resumed (``resume_bulk=True``; ``$addToSet`` is idempotent) or rolled back. An interrupted
    undo is marked undone when the label is back to ``before``, else left as not undone.
    """
    dataset = root_dataset(collection)
    out = []
    for rec in _log.pending(dataset):
        if rec.state == "pending":
            out.append((rec, _recover_fix(dataset, rec, resume_bulk)))
        elif rec.undo_pending:
            out.append((rec, _recover_undo(dataset, rec)))
    return out


def _current_label(dataset, rec: FixRecord) -> tuple[bool, dict | None]:
    try:
        doc = _read(dataset, rec.sample_id, [rec.field])
    except KeyError:
        return False, None
    oid = ObjectId(rec.label_id)
    return True, next((d for d in _labels(doc, rec.field) or [] if d.get("_id") == oid), None)


def _recover_fix(dataset, rec: FixRecord, resume_bulk: bool) -> str:
    if rec.kind == "accept_bulk":
        pairs = _bulk_pairs(dataset, rec)
        if resume_bulk:
            # from the first chunk again: $addToSet is idempotent and the pairs' order may differ
            _apply_bulk_tag(dataset, rec.field, pairs, REVIEWED_OK_TAG, True, rec)
            _log.mark_done(dataset, rec)
            return "resumed"
        _apply_bulk_tag(dataset, rec.field, pairs, REVIEWED_OK_TAG, False)
        _log.drop_pending(dataset, rec)
        return "rolled back"
    exists, current = _current_label(dataset, rec)
    if not exists:
        _log.drop_pending(dataset, rec)
        return "sample deleted: dropped"
    if rec.kind == "adopt":
        applied = current is not None and same_state(current, rec.after)
    elif rec.kind == "delete":
        applied = current is None
    else:
        applied = current is not None and same_state(current, rec.after)
    if applied:
        _log.mark_done(dataset, rec)
        return "done"
    _log.drop_pending(dataset, rec)
    return "not applied: dropped"


def _recover_undo(dataset, rec: FixRecord) -> str:
    if rec.kind == "accept_bulk":  # $pull is idempotent: finish it
        _apply_bulk_tag(dataset, rec.field, _bulk_pairs(dataset, rec), REVIEWED_OK_TAG, False)
        _log.mark_undone(dataset, rec, None)
        return "undo finished"
    exists, current = _current_label(dataset, rec)
    restored = exists and (current is None if rec.before is None else
                           current is not None and same_state(current, rec.before))
    if restored:
        _log.mark_undone(dataset, rec, None)
        return "undone"
    _log.set_undo_pending(dataset, rec, False)
    return "undo not applied"
