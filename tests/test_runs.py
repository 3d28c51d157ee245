"""Run records and leases (grader.runs): a second concurrent run fails or waits, a dead holder's
lease is taken over, the run record goes running -> complete / failed."""
from __future__ import annotations

import threading
import time

import pytest

from grader import runs
from grader.judges.cleanlab import RUN_KEY, run_cleanlab


def test_second_run_fails_while_lease_is_live_and_succeeds_after(synthetic_dataset):
    ds = synthetic_dataset
    with runs.run_lease(ds, "lg_test_judge", {"gt_field": "ground_truth", "x": 1}) as lease:
        assert runs.run_state(ds, "lg_test_judge") == runs.STATE_RUNNING
        with pytest.raises(runs.LeaseHeld, match="is being run by"):
            with runs.run_lease(ds, "lg_test_judge", {"gt_field": "ground_truth", "x": 2}):
                pass
        # another field is another resource: allowed concurrently
        with runs.run_lease(ds, "lg_test_judge", {"gt_field": "other"}, record=False):
            pass
        lease.report = {"ok": True}
    assert runs.run_state(ds, "lg_test_judge") == runs.STATE_COMPLETE
    cfg = ds.get_run_info("lg_test_judge").config
    assert cfg.x == 1 and cfg.report == {"ok": True}   # the record names the run that ran
    with runs.run_lease(ds, "lg_test_judge", {"gt_field": "ground_truth", "x": 3}):
        pass
    assert ds.get_run_info("lg_test_judge").config.x == 3


def test_failure_is_recorded_and_lease_released(synthetic_dataset):
    ds = synthetic_dataset
    with pytest.raises(ZeroDivisionError):
        with runs.run_lease(ds, "lg_test_fail", {"gt_field": "ground_truth"}):
            1 / 0
    assert runs.run_state(ds, "lg_test_fail") == runs.STATE_FAILED
    assert "ZeroDivisionError" in ds.get_run_info("lg_test_fail").config.error
    assert runs.lease_holder(runs.lease_id(ds, "lg_test_fail", "ground_truth")) is None


def test_dead_holder_lease_expires_and_is_taken_over(synthetic_dataset):
    ds = synthetic_dataset
    lid = runs.lease_id(ds, "lg_test_dead", "ground_truth")
    dead = runs.Lease.try_acquire(lid, ttl_s=1.0)    # no heartbeat: a holder that died
    assert dead is not None
    assert runs.Lease.try_acquire(lid, ttl_s=1.0) is None
    time.sleep(1.2)
    with runs.run_lease(ds, "lg_test_dead", {"gt_field": "ground_truth"}, ttl_s=30) as lease:
        assert runs.lease_holder(lid)["holder"] == lease.holder
        assert not dead.renew()                        # the old holder learns it lost it


def test_heartbeat_keeps_a_live_lease(synthetic_dataset):
    ds = synthetic_dataset
    with runs.run_lease(ds, "lg_test_hb", {"gt_field": "ground_truth"}, ttl_s=0.6):
        time.sleep(1.5)                                # > ttl: only the heartbeat keeps it
        with pytest.raises(runs.LeaseHeld):
            with runs.run_lease(ds, "lg_test_hb", {"gt_field": "ground_truth"}, ttl_s=0.6):
                pass


def test_wait_true_runs_after_the_holder_finishes(synthetic_dataset):
    ds = synthetic_dataset
    order = []
    first = runs.acquire(runs.lease_id(ds, "lg_test_wait", "ground_truth"), ttl_s=30)

    def finish():
        time.sleep(0.8)
        order.append("first done")
        first.release()

    t = threading.Thread(target=finish)
    t.start()
    with runs.run_lease(ds, "lg_test_wait", {"gt_field": "ground_truth"}, wait=True):
        order.append("second runs")
    t.join()
    assert order == ["first done", "second runs"]


def test_cleanlab_run_holds_lease_and_records_state(synthetic_dataset):
    ds = synthetic_dataset
    lid = runs.lease_id(ds, RUN_KEY, "ground_truth")
    seen = []
    report = run_cleanlab(ds, progress=lambda d, t: seen.append(runs.lease_holder(lid)))
    assert report.samples_scored == 6
    assert all(h is not None for h in seen[:-1])       # held while working
    assert runs.lease_holder(lid) is None               # released after
    assert runs.run_state(ds, RUN_KEY) == runs.STATE_COMPLETE
    assert ds.get_run_info(RUN_KEY).config.report["samples_scored"] == 6
    other = runs.acquire(lid, ttl_s=30)
    try:
        with pytest.raises(runs.LeaseHeld):
            run_cleanlab(ds)
    finally:
        other.release()
    assert runs.run_state(ds, RUN_KEY) == runs.STATE_COMPLETE  # the refused run wrote nothing
