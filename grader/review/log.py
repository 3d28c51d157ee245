"""The per-dataset fix log: who changed which label, when, how, and what it was before.

Records live in one MongoDB collection of FiftyOne's own database (``label_grader_fix_log``),
indexed by ``(dataset_id, seq)`` with per-dataset sequence numbers from ``label_grader_fix_seq``, so the log scales to millions of fixes without bloating
``dataset.info`` and survives App restarts. FiftyOne's orphan-collection cleanup only drops
``samples.*``/``frames.*``/``patches.*``/``clips.*`` collections, so it leaves this one alone.
Deleting a dataset does not delete its log; :func:`clear_fix_log` does.
"""
from __future__ import annotations

import getpass
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from bson import ObjectId
from pymongo import ReturnDocument
from fiftyone.core.odm.database import get_db_conn

from grader.redact import redact

LOG_COLLECTION = "label_grader_fix_log"
SEQ_COLLECTION = "label_grader_fix_seq"  # one counter per dataset: atomic sequence numbers

_indexed = False


def _coll():
    global _indexed
    coll = get_db_conn()[LOG_COLLECTION]
    if not _indexed:
        coll.create_index([("dataset_id", 1), ("seq", -1)])
        coll.create_index([("dataset_id", 1), ("fix_id", 1)], unique=True)
        _indexed = True
    return coll


def _did(collection) -> str:
    """Id of the dataset behind a dataset or view (the log is per dataset)."""
    return str(collection._root_dataset._doc.id)


def current_user(user: str | None = None) -> str:
    """The name recorded as a fix's author: the given one, else the OS user."""
    if user:
        return str(user)
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return "unknown"


@dataclass
class FixRecord:
    """One fix as stored in the log. ``before``/``after`` are full label documents (None when absent)."""

    fix_id: str
    dataset_id: str
    kind: str                 # accept | relabel | delete | replace_box | adopt | accept_bulk
    field: str                # the label field the fix changed
    sample_id: str | None
    label_id: str | None
    before: dict | None
    after: dict | None
    index: int | None = None  # position of the label in its Detections list before the fix
    extra: dict = field(default_factory=dict)
    user: str = ""
    time: datetime | None = None
    seq: int = 0
    undone: bool = False
    undone_at: datetime | None = None
    undone_by: str | None = None
    state: str = "done"        # pending (written before the edit) | done
    undo_pending: bool = False  # an undo was started and not yet confirmed

    def to_doc(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_doc(cls, doc: dict) -> "FixRecord":
        rec = cls(**{k: doc.get(k) for k in cls.__dataclass_fields__ if k in doc})
        rec.state = rec.state or "done"  # records written before states existed
        rec.undo_pending = bool(rec.undo_pending)
        rec.extra = rec.extra or {}
        return rec

    def summary(self) -> str:
        """One line for humans: ``#seq kind label (field) by user``."""
        what = self.kind
        b, a = self.before or {}, self.after or {}
        if self.kind == "relabel":
            what = f"relabel {b.get('label')} -> {a.get('label')}"
        elif self.kind in ("accept", "delete", "replace_box"):
            what = f"{self.kind} {b.get('label')}"
        elif self.kind == "adopt":
            what = f"adopt {a.get('label')}"
        elif self.kind == "accept_bulk":
            what = f"accept {len(self.extra.get('label_ids', []))} labels"
        state = " (undone)" if self.undone else (" (pending)" if self.state == "pending" else "")
        return f"#{self.seq} {what} [{self.field}] by {self.user}{state}"


def _jsonable(x: Any) -> Any:
    if isinstance(x, (bytes, bytearray)):  # instance masks: too big and not JSON; say what it is
        return f"<{len(x)} bytes>"
    if isinstance(x, float) and x != x:
        return None
    if isinstance(x, ObjectId):
        return str(x)
    if isinstance(x, datetime):
        return x.isoformat()
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def record_to_json(rec: FixRecord) -> dict:
    """A JSON-safe dict of a record (ObjectIds and datetimes as strings)."""
    return _jsonable(rec.to_doc())


def append_fix(dataset, rec: FixRecord) -> FixRecord:
    """Store ``rec`` with the next sequence number of ``dataset``'s log; returns it."""
    coll = _coll()
    # $inc on a counter is atomic, so two curators fixing at once never share a number
    counter = get_db_conn()[SEQ_COLLECTION].find_one_and_update(
        {"_id": rec.dataset_id}, {"$inc": {"seq": 1}}, upsert=True, return_document=ReturnDocument.AFTER)
    rec.seq = int(counter["seq"])
    rec.fix_id = rec.fix_id or uuid.uuid4().hex
    rec.time = rec.time or datetime.now(timezone.utc)
    coll.insert_one(rec.to_doc())
    return rec


def new_record(dataset, kind: str, field_name: str, sample_id: str | None, label_id: str | None,
               before: dict | None, after: dict | None, index: int | None = None,
               extra: dict | None = None, user: str | None = None) -> FixRecord:
    return FixRecord(fix_id=uuid.uuid4().hex, dataset_id=_did(dataset), kind=kind,
                     field=field_name, sample_id=sample_id, label_id=label_id, before=before,
                     after=after, index=index, extra=dict(extra or {}),
                     user=redact(current_user(user)))


def _key(rec: FixRecord) -> dict:
    return {"dataset_id": rec.dataset_id, "fix_id": rec.fix_id}


def update_pending(dataset, rec: FixRecord, **changes) -> FixRecord:
    """Rewrite fields of a pending record (a retried fix replaces another ``before``)."""
    sets = {}
    for k, v in changes.items():
        if k == "extra":
            rec.extra.update(v)
            sets["extra"] = rec.extra
        else:
            setattr(rec, k, v)
            sets[k] = v
    _coll().update_one(_key(rec), {"$set": sets})
    return rec


def mark_done(dataset, rec: FixRecord) -> FixRecord:
    """The edit of a pending record was applied."""
    rec.state = "done"
    _coll().update_one(_key(rec), {"$set": {"state": "done"}})
    return rec


def drop_pending(dataset, rec: FixRecord | None) -> None:
    """Remove a pending record whose edit was never applied."""
    if rec is not None:
        _coll().delete_one({**_key(rec), "state": "pending"})


def set_progress(dataset, rec: FixRecord, chunks_done: int) -> None:
    """How many chunks of a bulk fix are applied (a resumed run starts after them)."""
    rec.extra["chunks_done"] = int(chunks_done)
    _coll().update_one(_key(rec), {"$set": {"extra.chunks_done": int(chunks_done)}})


def set_undo_pending(dataset, rec: FixRecord, flag: bool) -> None:
    rec.undo_pending = bool(flag)
    _coll().update_one(_key(rec), {"$set": {"undo_pending": bool(flag)}})


def pending(dataset) -> list[FixRecord]:
    """Records left half-way (fix or undo started, not confirmed), oldest first."""
    q = {"dataset_id": _did(dataset), "$or": [{"state": "pending"}, {"undo_pending": True}]}
    return [FixRecord.from_doc(d) for d in _coll().find(q, sort=[("seq", 1)])]


def _query(dataset, undone: bool | None, state: str | None) -> dict[str, Any]:
    q: dict[str, Any] = {"dataset_id": _did(dataset)}
    if undone is not None:
        q["undone"] = undone
    if state == "done":
        q["state"] = {"$ne": "pending"}
    elif state is not None:
        q["state"] = state
    return q


def iter_fixes(dataset, undone: bool | None = None, state: str | None = None):
    """Records newest first, optionally filtered by ``undone`` and ``state``."""
    for d in _coll().find(_query(dataset, undone, state), sort=[("seq", -1)]):
        yield FixRecord.from_doc(d)


def get_fix(dataset, fix_id: str) -> FixRecord:
    """The record of ``fix_id`` in ``dataset``'s log, or ``KeyError``."""
    doc = _coll().find_one({"dataset_id": _did(dataset), "fix_id": fix_id})
    if doc is None:
        raise KeyError(f"no fix '{fix_id}' in the fix log of dataset '{dataset.name}'")
    return FixRecord.from_doc(doc)


def last_fix(dataset, undone: bool = False) -> FixRecord | None:
    """The newest record whose ``undone`` flag equals ``undone`` (None if there is none)."""
    doc = _coll().find_one({"dataset_id": _did(dataset), "undone": undone,
                            "state": {"$ne": "pending"}}, sort=[("seq", -1)])
    return FixRecord.from_doc(doc) if doc else None


def mark_undone(dataset, rec: FixRecord, user: str | None = None) -> FixRecord:
    rec.undone = True
    rec.undo_pending = False
    rec.undone_at = datetime.now(timezone.utc)
    rec.undone_by = redact(current_user(user))
    _coll().update_one({"dataset_id": rec.dataset_id, "fix_id": rec.fix_id},
                       {"$set": {"undone": True, "undone_at": rec.undone_at,
                                 "undone_by": rec.undone_by, "undo_pending": False}})
    return rec


def fix_log(dataset, limit: int | None = None, include_undone: bool = True,
            sample_id: str | None = None, label_id: str | None = None) -> list[FixRecord]:
    """``dataset``'s fixes, newest first (optionally only those of one sample or label)."""
    q: dict[str, Any] = {"dataset_id": _did(dataset)}
    if not include_undone:
        q["undone"] = False
    if sample_id:
        q["sample_id"] = sample_id
    if label_id:
        q["label_id"] = label_id
    cur = _coll().find(q, sort=[("seq", -1)])
    if limit:
        cur = cur.limit(int(limit))
    return [FixRecord.from_doc(d) for d in cur]


def count_fixes(dataset, include_undone: bool = False, *, after_seq: int = 0,
                field: str | None = None) -> int:
    """Number of applied fixes (pending ones are not counted); only those newer than sequence
    number ``after_seq`` and, with ``field``, on that label field. Counted by the database."""
    q = _query(dataset, None if include_undone else False, "done")
    if after_seq:
        q["seq"] = {"$gt": int(after_seq)}
    if field is not None:
        q["field"] = field
    return int(_coll().count_documents(q))


def clear_fix_log(dataset) -> int:
    """Delete ``dataset``'s whole fix log (fixes can no longer be undone); returns the count."""
    did = _did(dataset)
    get_db_conn()[SEQ_COLLECTION].delete_one({"_id": did})
    return _coll().delete_many({"dataset_id": did}).deleted_count
