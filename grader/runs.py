"""Judge run records ("running" -> "complete" / "failed") and leases so runs never mix.

A judge run holds a *lease* on ``(dataset, run_key, resource)`` for as long as it writes: one
MongoDB document in the ``label_grader_leases`` collection, taken atomically with a
conditional upsert (``find_one_and_update`` whose filter only matches a free or expired
lease; a live lease makes the upsert collide on ``_id``). The holder renews it from a
heartbeat thread; a holder that died stops renewing and the lease can be taken over after
``ttl_s``. While the lease is held the run record (FiftyOne's run registry, through
:func:`grader.fields.record_run`) says ``state="running"`` with the run's parameters, and
``"complete"`` (with its report) or ``"failed"`` (with the error) afterwards, so an interrupted
run is visible as "running" with a stale lease.

Usage::

    with run_lease(collection, "label_grader_cleanlab", params) as lease:
        report = do_the_work()
        lease.report = report.to_dict()
"""
from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator, Mapping

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from . import fields as lgf

LEASES_COLLECTION = "label_grader_leases"
STATE_RUNNING = "running"
STATE_COMPLETE = "complete"
STATE_FAILED = "failed"
DEFAULT_TTL_S = 120.0


class LeaseHeld(RuntimeError):
    """Another live process holds the lease this run needs."""


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _leases():
    import fiftyone.core.odm as foo_odm

    return foo_odm.get_db_conn()[LEASES_COLLECTION]


def lease_id(collection, run_key: str, resource: str | None = None) -> str:
    """The lease document id: one lease per dataset, run key and resource (e.g. GT field)."""
    ds_id = str(collection._dataset._doc.id)
    return f"{ds_id}/{run_key}" + (f"/{resource}" if resource else "")


def holder_name() -> str:
    """Who holds a lease: host, pid and a random suffix (unique per acquisition)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Lease:
    """A held lease; renewed by a heartbeat thread until :meth:`release`."""

    def __init__(self, lid: str, holder: str, ttl_s: float, info: Mapping[str, Any] | None = None):
        self.id, self.holder, self.ttl_s = lid, holder, float(ttl_s)
        self.info = dict(info or {})
        self.report: dict[str, Any] | None = None
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- acquisition -----------------------------------------------------------------
    @classmethod
    def try_acquire(cls, lid: str, ttl_s: float = DEFAULT_TTL_S,
                    info: Mapping[str, Any] | None = None) -> "Lease | None":
        """Take the lease if it is free or expired; ``None`` if a live holder has it."""
        lease = cls(lid, holder_name(), ttl_s, info)
        now = _now()
        try:
            doc = _leases().find_one_and_update(
                {"_id": lid, "$or": [{"expires_at": {"$lt": now}}, {"holder": None}]},
                {"$set": {"holder": lease.holder, "acquired_at": now, "heartbeat_at": now,
                          "expires_at": now + timedelta(seconds=ttl_s), "info": lease.info}},
                upsert=True, return_document=ReturnDocument.AFTER)
        except DuplicateKeyError:
            return None  # the document exists and its lease is live
        return lease if doc and doc.get("holder") == lease.holder else None

    def renew(self) -> bool:
        """Push the expiry forward; ``False`` if the lease was taken over (we lost it)."""
        now = _now()
        res = _leases().update_one(
            {"_id": self.id, "holder": self.holder},
            {"$set": {"heartbeat_at": now, "expires_at": now + timedelta(seconds=self.ttl_s)}})
        if res.matched_count == 0:
            self.lost = True
        return not self.lost

    def start_heartbeat(self) -> None:
        def beat():
            while not self._stop.wait(self.ttl_s / 3.0):
                try:
                    if not self.renew():
                        return
                except Exception:  # a transient DB error: try again next beat
                    pass

        self._thread = threading.Thread(target=beat, name=f"lease-{self.id}", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Stop renewing and free the lease (only if we still hold it)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        _leases().delete_one({"_id": self.id, "holder": self.holder})


def acquire(lid: str, *, ttl_s: float = DEFAULT_TTL_S, wait: bool = False,
            wait_timeout_s: float | None = None, poll_s: float = 0.5,
            info: Mapping[str, Any] | None = None) -> Lease:
    """Acquire lease ``lid`` (raise :class:`LeaseHeld`, or poll until free with ``wait=True``)."""
    deadline = None if wait_timeout_s is None else time.monotonic() + wait_timeout_s
    while True:
        lease = Lease.try_acquire(lid, ttl_s, info)
        if lease is not None:
            lease.start_heartbeat()
            return lease
        cur = _leases().find_one({"_id": lid}) or {}
        if not wait or (deadline is not None and time.monotonic() > deadline):
            raise LeaseHeld(
                f"'{lid}' is being run by {cur.get('holder')} (lease expires "
                f"{cur.get('expires_at')} UTC unless renewed); wait for it to finish, pass "
                "wait=True, or retry after the lease expires if that process died")
        time.sleep(poll_s)


def lease_holder(lid: str) -> dict[str, Any] | None:
    """The current lease document (holder, expires_at...) or ``None``; for status displays."""
    return _leases().find_one({"_id": lid})


def record_state(collection, run_key: str, params: Mapping[str, Any], state: str,
                 report: Mapping[str, Any] | None = None, **extra: Any) -> None:
    """Write the run record with ``state`` (and timestamps / error / lease holder in ``extra``)."""
    lgf.record_run(collection, run_key, {**params, "state": state, **extra}, report)


def run_state(collection, run_key: str) -> str | None:
    """``"running"`` / ``"complete"`` / ``"failed"`` from the run record, ``None`` if no record."""
    if run_key not in collection._dataset.list_runs():
        return None
    info = collection._dataset.get_run_info(run_key)
    return getattr(info.config, "state", None)


@contextmanager
def run_lease(collection, run_key: str, params: Mapping[str, Any], *,
              resource: str | None = None, ttl_s: float = DEFAULT_TTL_S, wait: bool = False,
              wait_timeout_s: float | None = None, record: bool = True) -> Iterator[Lease]:
    """Hold the lease of ``run_key`` (on ``resource``, default the ``gt_field`` param) while
    the body runs, and keep the run record's state in step.

    A second run of the same judge on the same field of the same dataset raises
    :class:`LeaseHeld` while the first is alive (or waits with ``wait=True``); a lease whose
    holder died without releasing expires after ``ttl_s`` and is then taken over. Set
    ``lease.report`` in the body to store the report with the "complete" record. With
    ``record=False`` only the lease is taken (shards of one run share the run record).
    """
    if resource is None:
        resource = params.get("gt_field")
    lid = lease_id(collection, run_key, resource)
    lease = acquire(lid, ttl_s=ttl_s, wait=wait, wait_timeout_s=wait_timeout_s,
                    info={"run_key": run_key, "resource": resource})
    started = _now().isoformat()
    try:
        if record:
            record_state(collection, run_key, params, STATE_RUNNING, None,
                         started_at=started, holder=lease.holder)
        try:
            yield lease
        except BaseException as e:
            if record:
                try:
                    record_state(collection, run_key, params, STATE_FAILED, lease.report,
                                 started_at=started, finished_at=_now().isoformat(),
                                 error=f"{type(e).__name__}: {e}"[:2000])
                except Exception:
                    pass  # never hide the original error
            raise
        if lease.lost:
            raise LeaseHeld(f"lease '{lid}' expired and was taken over during the run; "
                            "its results may be mixed with the other run's, re-run it")
        if record:
            record_state(collection, run_key, params, STATE_COMPLETE, lease.report,
                         started_at=started, finished_at=_now().isoformat())
    finally:
        lease.release()


# --- sharded runs -------------------------------------------------------------------------
# A sharded run splits the collection into contiguous ranges of sorted sample ids (a
# deterministic split), records a *plan* document (parameters, shared dataset-wide statistics,
# range bounds) and lets any worker run any shard; each shard takes its own lease, skips
# samples this configuration already scored, and marks itself done. The worker that completes
# the last shard (an atomic conditional update) finalises the run.

SHARDS_COLLECTION = "label_grader_shards"


def _plans():
    import fiftyone.core.odm as foo_odm

    return foo_odm.get_db_conn()[SHARDS_COLLECTION]


def split_bounds(sample_ids: list[str], num_shards: int) -> list[str | None]:
    """``num_shards + 1`` id bounds cutting the sorted ids into near-equal contiguous ranges
    (shard i holds ``bounds[i] <= id < bounds[i+1]``; ``None`` = unbounded)."""
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    ids = sorted(sample_ids)
    n = len(ids)
    cuts = [ids[(n * i) // num_shards] if (n * i) // num_shards < n else None
            for i in range(1, num_shards)]
    return [None] + cuts + [None]


def shard_range_view(collection, bounds: list[str | None], index: int):
    """Shard ``index`` of ``collection``: its range of sample ids (same split on every worker)."""
    from bson import ObjectId
    from fiftyone import ViewField as F

    lo, hi = bounds[index], bounds[index + 1]
    if index > 0 and lo is None:
        return collection.limit(0)   # fewer samples than shards: this one is empty
    view = collection
    if lo is not None:
        view = view.match(F("_id") >= ObjectId(lo))
    if hi is not None:
        view = view.match(F("_id") < ObjectId(hi))
    return view


def create_plan(collection, run_key: str, resource: str | None, num_shards: int, config: str,
                payload: Mapping[str, Any]) -> dict[str, Any]:
    """Record (or reset, for a re-queue of the same configuration) the plan of a sharded run."""
    pid = f"{lease_id(collection, run_key, resource)}/{config}"
    doc = {"dataset_id": str(collection._dataset._doc.id), "run_key": run_key,
           "resource": resource, "num_shards": int(num_shards), "config": config,
           "payload": dict(payload),
           "bounds": split_bounds(collection.values("id"), num_shards),
           "done": [], "scored": {}, "holders": {}, "finalized": False, "completed": False,
           "created_at": _now()}
    _plans().replace_one({"_id": pid}, doc, upsert=True)
    return {"_id": pid, **doc}


def get_plan(plan_id: str) -> dict[str, Any]:
    doc = _plans().find_one({"_id": plan_id})
    if doc is None:
        raise ValueError(f"No sharded run plan '{plan_id}'")
    return doc


def add_scored(plan_id: str, index: int, n: int, holder: str | None = None) -> None:
    """Count ``n`` samples scored by shard ``index`` (per chunk, so partial work is visible)
    and note which lease holder (host:pid:...) did it."""
    update: dict[str, Any] = {"$inc": {f"scored.{index}": int(n)}}
    if holder:
        update["$addToSet"] = {f"holders.{index}": holder}
    _plans().update_one({"_id": plan_id}, update)


def mark_shard_done(plan_id: str, index: int) -> bool:
    """Mark shard ``index`` done; ``True`` for exactly one caller: the one that must finalise."""
    doc = _plans().find_one_and_update({"_id": plan_id}, {"$addToSet": {"done": int(index)}},
                                       return_document=ReturnDocument.AFTER)
    if doc is None or len(doc["done"]) < doc["num_shards"]:
        return False
    res = _plans().update_one({"_id": plan_id, "finalized": False},
                              {"$set": {"finalized": True, "finalized_at": _now()}})
    return res.modified_count == 1


def shard_lease_id(plan_id: str, index: int) -> str:
    return f"{plan_id}/shard{index}"


def mark_plan_complete(plan_id: str) -> None:
    """Set once the final step (run record etc.) has been written."""
    _plans().update_one({"_id": plan_id}, {"$set": {"completed": True, "completed_at": _now()}})
