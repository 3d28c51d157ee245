"""bench/_harness.py's grade() step timing: the account adds up to the whole wall time."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import _harness as H  # noqa: E402


def test_step_account_covers_the_wall_on_a_fake_timeline():
    # steps at [1, 3] and [4, 8] inside a run from 0 to 10: the gaps are 1, 1 and 2
    times = {"b": [4.0, 8.0, 0.0, 0.0], "a": [1.0, 3.0, 0.0, 0.0]}
    rows = H.step_account(times, 0.0, 10.0)
    assert rows == [("before a", 1.0), ("a", 2.0), ("before b", 1.0), ("b", 4.0),
                    ("after b", 2.0)]
    assert sum(s for _, s in rows) == pytest.approx(10.0)


def test_step_account_counts_overlap_once_and_stays_in_the_wall():
    times = {"a": [1.0, 5.0], "b": [3.0, 6.0], "c": [7.0, 12.0]}   # b overlaps a, c runs past
    rows = dict(H.step_account(times, 0.0, 10.0))
    assert rows["b"] == pytest.approx(1.0) and rows["before b"] == 0.0
    assert rows["c"] == pytest.approx(3.0) and rows["after c"] == 0.0
    assert sum(rows.values()) == pytest.approx(10.0)
    assert H.step_account({}, 2.0, 5.0) == [("no progress calls", 3.0)]


def test_timed_progress_keeps_first_and_last_call():
    times: dict = {}
    cb = H.timed_progress(times)
    cb("zoom", 1, 3)
    first = list(times["zoom"])
    cb("zoom", 3, 3)
    assert times["zoom"][0] == first[0] and times["zoom"][1] >= first[1]
    assert times["zoom"][3] >= times["zoom"][2]
