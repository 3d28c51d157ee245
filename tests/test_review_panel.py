"""The Label review panel's Python side, driven through real ExecutionContexts (no browser).

Each handler runs with a context like the App sends (dataset, panel id, panel state, params);
the App operations it asks for (open_sample, set_view, notify...) are recorded by an Executor.
"""
from __future__ import annotations

import json

import fiftyone.operators as foo
import pytest
from fiftyone.operators.executor import ExecutionContext, Executor

from grader import review
from grader.scores import REVIEWED_OK_TAG

from review_helpers import add_fake_cleanlab

PANEL = "@label-grader/label-grader/label_review"


@pytest.fixture()
def ds(synthetic_dataset):
    add_fake_cleanlab(synthetic_dataset)
    yield synthetic_dataset
    review.clear_fix_log(synthetic_dataset)


@pytest.fixture()
def panel():
    return foo.get_operator(PANEL)


class Harness:
    """Calls panel methods with one shared panel state, like successive App events."""

    def __init__(self, panel, ds):
        self.panel, self.ds, self.state = panel, ds, {}
        self.requests: list = []

    def call(self, method: str, **params):
        ex = Executor()
        ctx = ExecutionContext(request_params={
            "dataset_name": self.ds.name,
            "params": {"panel_id": "panel-1", "panel_state": self.state, **params}}, executor=ex)
        getattr(self.panel, method)(ctx)
        self.requests = [(r.operator_uri, r.params) for r in ex._requests]
        return ctx

    def ops(self, name: str) -> list:
        return [p for uri, p in self.requests if uri == name]

    def render_json(self) -> str:
        ex = Executor()
        ctx = ExecutionContext(request_params={
            "dataset_name": self.ds.name,
            "params": {"panel_id": "panel-1", "panel_state": self.state}}, executor=ex)
        return json.dumps(self.panel.render(ctx).to_json())


def _tags(ds, lid):
    for ids, tags in zip(*ds.values(["ground_truth.detections.id", "ground_truth.detections.tags"])):
        for i, t in zip(ids or [], tags or []):
            if i == lid:
                return t
    raise KeyError(lid)


def test_load_filters_and_render(panel, ds):
    h = Harness(panel, ds)
    h.call("on_load")
    st = h.state
    assert st["controls"]["gt_field"] == "ground_truth"
    assert st["controls"]["score"] == "cleanlab_badloc"
    assert st["available"] == ["cleanlab_badloc", "cleanlab_swap", "cleanlab_overlooked"]
    assert st["counts"] == review.issue_counts(ds)
    expected = review.review_queue(ds, score="cleanlab_badloc", limit=15)
    assert [q["label_id"] for q in st["queue"]] == [it.label_id for it in expected]
    assert sum(st["hist"]["counts"]) == st["hist"]["n"] > 0

    # the App sends the changed control's path and value
    h.call("on_filter_change", path="controls.issue", value="suspect:swap")
    assert st["queue"] and all("suspect:swap" in q["issues"] for q in st["queue"])
    h.call("on_filter_change", path="controls.score", value="cleanlab_swap")
    h.call("on_filter_change", path="controls.threshold", value=0.2)
    want = review.review_queue(ds, score="cleanlab_swap", issues=["suspect:swap"], threshold=0.2)
    assert [q["label_id"] for q in st["queue"]] == [it.label_id for it in want]
    assert all(q["value"] <= 0.2 for q in st["queue"])
    h.call("on_filter_change", path="controls.cls", value="cat")
    assert all(q["label"] == "cat" for q in st["queue"])
    h.call("on_filter_change", path="controls.cls", value="__all__")
    h.call("on_filter_change", path="controls.threshold", value=None)

    js = h.render_json()
    for key in ('"row_0_accept"', '"row_0_open"', '"row_0_delete"', '"histogram"', '"undo_last"',
                '"save_views"', '"cleanlab_swap"'):
        assert key in js, key
    # rows offer the suggested class and the predicted box
    assert f"Relabel {st['queue'][0]['suggested']}" in js and '"row_0_box"' in js


def test_fixes_undo_and_navigation_from_the_panel(panel, ds):
    h = Harness(panel, ds)
    h.call("on_load")
    q0 = h.state["queue"][0]
    ids = {k: q0[k] for k in ("sample_id", "label_id", "field")}

    h.call("open_item", **ids)
    assert h.ops("open_sample") == [{"id": q0["sample_id"], "group_id": None}]
    assert h.ops("set_selected_labels")[0]["labels"][0]["label_id"] == q0["label_id"]

    h.call("fix_item", kind="accept", **ids)
    assert REVIEWED_OK_TAG in _tags(ds, q0["label_id"])
    assert h.ops("reload_dataset") and q0["label_id"] not in [q["label_id"] for q in h.state["queue"]]
    assert "accept" in h.state["log"][0]["summary"]

    h.call("undo")
    assert REVIEWED_OK_TAG not in _tags(ds, q0["label_id"])
    assert h.state["queue"][0]["label_id"] == q0["label_id"]

    h.call("fix_item", kind="relabel", new_label=q0["suggested"], **ids)
    assert ds[q0["sample_id"]].ground_truth.detections  # still there
    det = {d.id: d for d in ds[q0["sample_id"]].ground_truth.detections}[q0["label_id"]]
    assert det.label == q0["suggested"]
    h.call("fix_item", kind="replace_box", **ids)
    pred = {p.id: p for p in ds[q0["sample_id"]].predictions.detections}[q0["pred_id"]]
    det = {d.id: d for d in ds[q0["sample_id"]].ground_truth.detections}[q0["label_id"]]
    assert det.bounding_box == pytest.approx(pred.bounding_box)
    h.call("undo")
    h.call("undo")
    det = {d.id: d for d in ds[q0["sample_id"]].ground_truth.detections}[q0["label_id"]]
    assert det.label == q0["label"]

    h.call("fix_item", kind="delete", sample_id=q0["sample_id"], label_id="0" * 24, field="ground_truth")
    notes = h.ops("notify")
    assert notes and notes[0]["variant"] == "error" and "not in field" in notes[0]["message"]


def test_overlooked_adopt_accept_all_views_and_grid(panel, ds):
    h = Harness(panel, ds)
    h.call("on_load")
    h.call("on_filter_change", path="controls.score", value="cleanlab_overlooked")
    cands = h.state["queue"]
    assert cands and all(q["is_candidate"] for q in cands)
    assert '"row_0_adopt"' in h.render_json()
    c = cands[0]
    h.call("fix_item", kind="adopt", sample_id=c["sample_id"], label_id=c["label_id"],
           field=c["field"])
    labels = ds[c["sample_id"]].ground_truth.detections
    assert labels[-1].review_adopted_from == c["label_id"]
    assert len(h.state["queue"]) == len(cands) - 1

    h.call("on_filter_change", path="controls.score", value="cleanlab_badloc")
    shown = [q["label_id"] for q in h.state["queue"]]
    h.call("show_queue")
    view = h.ops("set_view")
    assert view, "show_queue should set the App's view"
    h.call("accept_all")
    assert all(REVIEWED_OK_TAG in _tags(ds, lid) for lid in shown)
    assert h.state["queue"] == [] or not set(shown) & {q["label_id"] for q in h.state["queue"]}

    h.call("save_views")
    ds.reload()
    assert {"suspect badloc", "suspect swap", "reviewed", "overlooked candidates"} <= set(
        ds.list_saved_views())


def test_dataset_without_scores_says_so(panel, synthetic_dataset):
    h = Harness(panel, synthetic_dataset)
    h.call("on_load")
    assert h.state["queue"] == [] and h.state["available"] == []
    assert "No judge scores" in h.render_json()


def test_dataset_without_detections_renders_a_notice(panel, tmp_path):
    import fiftyone as fo

    ds = fo.Dataset()
    ds.add_sample(fo.Sample(filepath=str(tmp_path / "x.jpg")))
    try:
        h = Harness(panel, ds)
        h.call("on_load")
        assert "No Detections field" in h.render_json()
    finally:
        ds.delete()
