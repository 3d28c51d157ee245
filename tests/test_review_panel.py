"""The Label review panel's Python side, driven through real ExecutionContexts (no browser),
plus the database-side queue it reads (paging, ties, previews, suggestion checks).

Each handler runs with a context like the App sends (dataset, panel id, panel state, params);
the App operations it asks for (open_sample, set_view, notify...) are recorded by an Executor.
"""
from __future__ import annotations

import json

import fiftyone as fo
import fiftyone.operators as foo
import pytest
from fiftyone.operators.executor import ExecutionContext, Executor

from grader import review
from grader.review import preview
from grader.scores import REVIEWED_OK_TAG

from review_helpers import add_fake_cleanlab, add_fake_ensemble

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
        self.panel, self.ds, self.state, self.data = panel, ds, {}, {}
        self.requests: list = []

    def call(self, method: str, **params):
        ex = Executor()
        ctx = ExecutionContext(request_params={
            "dataset_name": self.ds.name,
            "params": {"panel_id": "panel-1", "panel_state": self.state, **params}}, executor=ex)
        getattr(self.panel, method)(ctx)
        self.requests = [(r.operator_uri, r.params) for r in ex._requests]
        for p in self.ops("patch_panel_data"):
            self.data.update(p.get("data") or {})
        return ctx

    def ops(self, name: str) -> list:
        return [p for uri, p in self.requests if uri.endswith(name)]

    def render_json(self) -> str:
        ex = Executor()
        ctx = ExecutionContext(request_params={
            "dataset_name": self.ds.name,
            "params": {"panel_id": "panel-1", "panel_state": self.state}}, executor=ex)
        return json.dumps(self.panel.render(ctx).to_json())

    @property
    def items(self) -> list[dict]:
        return self.state["page"]["items"]


def _gt(ds, sid) -> dict:
    s = ds[sid]
    s.reload()
    return {d.id: d for d in (s.ground_truth.detections if s.ground_truth else [])}


# ---------------------------------------------------------------- the queue in the database

def test_page_total_paging_and_ties(ds):
    full = review.review_queue(ds, score="cleanlab_swap", suspects_only=False)
    page = review.review_page(ds, score="cleanlab_swap", suspects_only=False, skip=0, limit=5)
    assert page.total == len(full) == ds.count("ground_truth.detections")
    ids = []
    for skip in range(0, page.total, 5):
        p = review.review_page(ds, score="cleanlab_swap", suspects_only=False, skip=skip, limit=5)
        assert [it.rank for it in p.items] == list(range(skip, skip + len(p.items)))
        ids += [it.label_id for it in p.items]
    assert ids == [it.label_id for it in full] and len(set(ids)) == len(ids)
    # ties on the sort score are broken by the other judge's score (more suspect first)
    rows = [{"sample_id": it.sample_id, "label_id": it.label_id, "value": 0.5} for it in full]
    ds.set_label_values("ground_truth.detections.cleanlab_badloc", rows)
    tied = review.review_queue(ds, score="cleanlab_badloc", suspects_only=False)
    other = [it.swap_value for it in tied]
    assert tied[0].value == tied[-1].value == 0.5 and other == sorted(other)
    # every item carries the state token a fix can pin
    assert all(it.state for it in tied)


def test_histogram_follows_issue_and_class_filters(ds):
    h_all = review.score_histogram(ds, "cleanlab_swap")
    h_cat = review.score_histogram(ds, "cleanlab_swap", classes=["cat"])
    h_swap = review.score_histogram(ds, "cleanlab_swap", issues=["swap"])
    labels = [l for ls in ds.values("ground_truth.detections.label") for l in ls]
    assert h_all["n"] == len(labels) and h_cat["n"] == labels.count("cat")
    assert h_swap["n"] == review.issue_counts(ds)["suspect:swap"]
    assert sum(h_swap["counts"]) == h_swap["n"]


def test_snapshot_equals_the_separate_queries(ds):
    for kw in ({}, {"issues": ["swap"], "classes": ["cat"]}, {"threshold": 0.5},
               {"score": "cleanlab_overlooked"}):
        score = kw.pop("score", "cleanlab_swap")
        snap = review.review_snapshot(ds, score=score, skip=1, limit=4, **kw)
        page = review.review_page(ds, score=score, skip=1, limit=4, **kw)
        assert snap["page"].total == page.total
        assert [it.label_id for it in snap["page"].items] == [it.label_id for it in page.items]
        assert snap["counts"] == review.issue_counts(ds)
        h = review.score_histogram(ds, score, issues=kw.get("issues"), classes=kw.get("classes"))
        assert snap["hist"]["counts"] == h["counts"] and snap["hist"]["n"] == h["n"]


def test_suggestions_are_checked(ds):
    items = review.review_queue(ds, score="cleanlab_badloc", suspects_only=False)
    review.add_suggestions(ds, items)
    with_box = [it for it in items if it.suggested_box]
    assert with_box and all(it.suggested_iou is not None for it in with_box)
    # a suggested box that is another GT box: flagged as a duplicate
    it = with_box[0]
    gts = _gt(ds, it.sample_id)
    other = next(d for i, d in gts.items() if i != it.label_id)
    s = ds[it.sample_id]
    for p in s.predictions.detections:
        if p.id == it.pred_id:
            p.bounding_box = list(other.bounding_box)
    s.save()
    again = [x for x in review.review_queue(ds, score="cleanlab_badloc", suspects_only=False)
             if x.label_id == it.label_id]
    review.add_suggestions(ds, again)
    assert "duplicate" in again[0].box_warning
    # a confident swap score (1.0) drops the class suggestion
    ds.set_label_values("ground_truth.detections.cleanlab_swap",
                        [{"sample_id": it.sample_id, "label_id": it.label_id, "value": 1.0}])
    again = [x for x in review.review_queue(ds, score="cleanlab_badloc", suspects_only=False)
             if x.label_id == it.label_id]
    review.add_suggestions(ds, again)
    assert again[0].suggested_label is None


def test_class_suggested_only_where_a_judge_disagrees_delete_where_spurious():
    """Issue 23.5: no relabel hint where the judges say the class is right; the ensemble's
    swap verdict offers every judge's class; a likely spurious box gets a delete hint."""
    from grader.review.queue import class_suggestions, spurious_hint

    d = {"label": "person", "tags": [], "cleanlab_swap_label": "airplane", "cleanlab_swap": 0.93,
         "boxgrader_class": "dog", "boxgrader_p_other_class": 0.1}
    assert class_suggestions(d) == [] and spurious_hint(d) is None
    assert class_suggestions({**d, "boxgrader_p_other_class": 0.8}) == ["dog"]
    assert class_suggestions({**d, "cleanlab_swap": 0.2}) == ["airplane"]
    assert class_suggestions({**d, "tags": ["suspect:swap"]}) == ["airplane"]
    assert class_suggestions({**d, "ensemble_swap": 0.9}) == ["airplane", "dog"]
    assert class_suggestions({**d, "ensemble_swap": 0.9, "boxgrader_class": "person"}) == [
        "airplane"]
    assert "ensemble_spurious" in spurious_hint({**d, "tags": ["suspect:ensemble_spurious"]})
    assert "boxgrader_p_background" in spurious_hint({**d, "boxgrader_p_background": 0.9})


def test_queue_items_carry_the_hints(ds):
    items = review.review_queue(ds, score="cleanlab_swap", suspects_only=False)
    for it in items:
        assert bool(it.class_hints) == (it.swap_value <= 0.5 or "suspect:swap" in it.tags)
        assert it.suggested_label == (it.class_hints[0] if it.class_hints else None)
    it = next(it for it in items if not it.class_hints)
    ds.set_label_values("ground_truth.detections.boxgrader_p_background",
                        [{"sample_id": it.sample_id, "label_id": it.label_id, "value": 0.97}])
    again = [x for x in review.review_queue(ds, score="cleanlab_swap", suspects_only=False)
             if x.label_id == it.label_id][0]
    assert "likely no object" in again.delete_hint


def test_preview_draws_both_boxes_and_is_cached(ds):
    preview.clear_cache()
    items = review.review_queue(ds, score="cleanlab_badloc", suspects_only=False)
    review.add_suggestions(ds, items)
    it = next(x for x in items if x.suggested_box)
    img = preview.render_preview(it.filepath, it.box, suggested_box=it.suggested_box,
                                 label=it.label, suggested_label="dog", iou=it.suggested_iou,
                                 size=200)
    import numpy as np

    a = np.asarray(img)
    magenta = ((a[..., 0] > 240) & (a[..., 1] < 20) & (a[..., 2] > 240)).sum()
    green = ((a[..., 0] < 20) & (a[..., 1] > 220) & (a[..., 2] > 100) & (a[..., 2] < 140)).sum()
    assert magenta > 50 and green > 50 and max(img.size[0], img.size[1] - preview.CAPTION_H) == 200
    url = preview.item_preview(it)
    assert url.startswith("data:image/jpeg;base64,")
    assert preview.item_preview(it) is url  # cached
    assert preview.cache_info()["crops"] == 1


def test_saved_views_named_by_field_non_empty_field_only(ds):
    names = review.save_review_views(ds)
    assert names and all(n.startswith("ground_truth ") for n in names)
    for n in names:
        v = ds.load_saved_view(n)
        field = "ground_truth_overlooked" if n.endswith("candidates") else "ground_truth"
        assert v.count(f"{field}.detections") > 0
        assert "predictions" not in v.get_field_schema()
    assert "ground_truth reviewed" not in names  # nothing reviewed yet: no empty view


# ---------------------------------------------------------------- the panel

def test_load_filters_paging_and_render(panel, ds):
    h = Harness(panel, ds)
    h.call("on_load")
    st = h.state
    assert st["controls"]["gt_field"] == "ground_truth"
    assert st["controls"]["score"] == "cleanlab_badloc"
    assert st["available"] == ["cleanlab_badloc", "cleanlab_swap", "cleanlab_overlooked"]
    assert st["counts"] == review.issue_counts(ds)
    expected = review.review_page(ds, score="cleanlab_badloc", limit=12)
    assert [q["label_id"] for q in h.items] == [it.label_id for it in expected.items]
    assert st["page"]["total"] == expected.total
    assert all(h.data[f"row_{k}.thumb_{k}"].startswith("data:image/jpeg") for k in range(len(h.items)))
    assert sum(st["hist"]["counts"]) == st["hist"]["n"] > 0

    h.call("on_filter_change", path="controls.issue", value="suspect:swap")
    assert h.items and all("swap" in q["issues"] for q in h.items)
    assert st["hist"]["n"] == review.issue_counts(ds)["suspect:swap"]  # hist follows the filter
    h.call("on_filter_change", path="controls.score", value="cleanlab_swap")
    h.call("on_filter_change", path="controls.threshold", value=0.2)
    want = review.review_queue(ds, score="cleanlab_swap", issues=["suspect:swap"], threshold=0.2)
    assert [q["label_id"] for q in h.items] == [it.label_id for it in want][:12]
    h.call("on_filter_change", path="controls.threshold", value=None)
    h.call("on_filter_change", path="controls.issue", value="__all__")
    total = st["page"]["total"]
    assert total == ds.count("ground_truth.detections") > 12
    first = [q["label_id"] for q in h.items]
    h.call("next_page")
    assert st["page"]["skip"] == 12 and h.items[0]["rank"] == 12
    assert not set(first) & {q["label_id"] for q in h.items}
    h.call("prev_page")
    assert [q["label_id"] for q in h.items] == first

    js = h.render_json()
    for key in ('"row_0_accept"', '"row_0_open"', '"row_0_delete"', '"histogram"', '"undo_last"',
                '"save_views"', '"thumb_0"', '"review_mode"', "of " + str(total), '"log_y"'):
        assert key in js, key
    assert "score \\u2264 it" in js  # the threshold says which side is suspect


def test_default_sort_is_the_ensemble_and_the_choice_persists(panel, ds):
    """Issue 23.4: the panel opens sorted by ensemble_any when present; a sort the user picks
    is what a reopened panel shows; the overlooked issue lists the candidates."""
    add_fake_ensemble(ds)
    h = Harness(panel, ds)
    h.call("on_load")
    assert h.state["controls"]["score"] == "ensemble_any"
    want = review.review_page(ds, score="ensemble_any", limit=12)
    assert [q["label_id"] for q in h.items] == [it.label_id for it in want.items]
    h.call("on_filter_change", path="controls.score", value="cleanlab_swap")
    h2 = Harness(panel, ds)  # the panel closed and opened again: a fresh App state
    h2.call("on_load")
    assert h2.state["controls"]["score"] == "cleanlab_swap"
    # overlooked: the candidates, under the candidates' score, whatever the sort was
    n_cand = review.issue_counts(ds)["suspect:overlooked"]
    h2.call("on_filter_change", path="controls.issue", value="suspect:overlooked")
    assert h2.state["controls"]["score"] == "cleanlab_overlooked"
    assert h2.items and all(q["is_candidate"] for q in h2.items)
    assert h2.state["page"]["total"] == n_cand
    h3 = Harness(panel, ds)  # the automatic switch is not remembered as the user's choice
    h3.call("on_load")
    assert h3.state["controls"]["score"] == "cleanlab_swap"


def test_overlooked_issue_sorts_by_the_stronger_candidates_score(panel):
    import sys

    queue_score = sys.modules[type(panel).__module__].queue_score

    both = ["ensemble_any", "cleanlab_overlooked", "overlooked_score"]
    # grade() writes both: its own judge ranks the deleted boxes 3x better than cleanlab's
    assert queue_score("ensemble_any", "suspect:overlooked", both) == "overlooked_score"
    assert queue_score("ensemble_any", "suspect:overlooked", both[:2]) == "cleanlab_overlooked"
    assert queue_score("cleanlab_overlooked", "suspect:overlooked", both) == "cleanlab_overlooked"
    assert queue_score("ensemble_any", "suspect:badloc", both) == "ensemble_any"


def test_review_mode_by_keys_with_checked_state(panel, ds):
    h = Harness(panel, ds)
    h.call("on_load")
    h.call("on_filter_change", path="controls.issue", value="__all__")
    h.call("enter_review")
    assert h.state["mode"] == "review" and h.state["cursor"] == 0
    assert h.data["review_body.review_img"].startswith("data:image/jpeg")
    js = h.render_json()
    assert '"LabelGraderKeys"' in js and '#on_hotkey"' in js  # the keyboard component, wired
    assert '"r_accept"' in js and '"relabel_to"' in js

    def key(ch):  # what panels/js/review_keys.js sends for one key press
        h.call("on_hotkey", key=ch)

    q0 = h.items[0]
    key("a")  # accept
    assert not h.ops("reload_samples")  # in review mode the grid is re-read on leaving it
    # the session stays on the server: a key writes nothing into the App's panel state
    # (each App state write makes the App save its spaces and refetch its page)
    assert not h.ops("patch_panel_state") and not h.ops("set_panel_state")
    assert REVIEWED_OK_TAG in _gt(ds, q0["sample_id"])[q0["label_id"]].tags
    assert h.items[0]["decided"] == "accepted" and h.state["cursor"] == 1
    q1 = h.items[1]
    key("1")  # relabel to the first class offered (the judge's suggestion first)
    first = (q1["class_hints"] or [c for c in h.state["all_classes"] if c != q1["label"]])[0]
    assert _gt(ds, q1["sample_id"])[q1["label_id"]].label == first
    q2 = h.items[2]
    key("d")  # delete
    assert q2["label_id"] not in _gt(ds, q2["sample_id"])
    key("u")  # undo the delete: back on that item, label restored
    assert q2["label_id"] in _gt(ds, q2["sample_id"]) and h.state["cursor"] == 2
    assert h.items[2]["decided"] is None
    key("n"), key("p")
    assert h.state["cursor"] == 2
    q = h.items[2]
    if q.get("pred_id"):
        key("b")
        pred = {p.id: p for p in ds[q["sample_id"]].predictions.detections}[q["pred_id"]]
        assert _gt(ds, q["sample_id"])[q["label_id"]].bounding_box == pytest.approx(pred.bounding_box)

    # a label changed by someone else since it was shown: the action is refused
    k = h.state["cursor"]
    q = h.items[k]
    ds.set_label_values("ground_truth.detections.label",
                        [{"sample_id": q["sample_id"], "label_id": q["label_id"], "value": "dog"}])
    before = _gt(ds, q["sample_id"])[q["label_id"]].to_dict()
    h.call("act", kind="accept")
    notes = h.ops("notify")
    assert notes and notes[0]["variant"] == "error" and "changed" in notes[0]["message"]
    assert _gt(ds, q["sample_id"])[q["label_id"]].to_dict() == before
    # the session's fixes reach the App's grid when review mode ends; list-mode fixes at once
    h.call("leave_review")
    assert h.ops("reload_samples")
    h.call("act", kind="accept", index=h.state["cursor"] + 1)
    assert h.ops("reload_samples")


def test_overlapping_handlers_keep_each_others_changes(panel, ds, monkeypatch):
    """A filter change still refreshing when "Review mode" is clicked: review mode starts and
    ends while the refresh runs; the refresh ends last and must not roll review mode back."""
    h = Harness(panel, ds)
    h.call("on_load")
    snapshot = review.review_snapshot
    clicked = []

    def slow_snapshot(*a, **kw):  # the click lands while the refresh queries the database
        if not clicked:
            clicked.append(Harness(panel, ds))
            clicked[0].state = {**h.state, "controls": dict(h.state["controls"])}
            clicked[0].call("enter_review")
            assert clicked[0].state["mode"] == "review"
        return snapshot(*a, **kw)

    monkeypatch.setattr(review, "review_snapshot", slow_snapshot)
    h.call("on_filter_change", path="controls.score", value="cleanlab_overlooked")
    assert clicked
    assert h.state["mode"] == "review"  # not rolled back to the list
    assert h.items and all(q["is_candidate"] for q in h.items)
    assert h.data["review_body.review_img"].startswith("data:image/jpeg")
    js = h.render_json()
    assert '"r_adopt"' in js and f"Label 1 of {h.state['page']['total']}" in js
    # the next event continues that session on the new queue
    monkeypatch.setattr(review, "review_snapshot", snapshot)
    h.call("act", kind="next")
    assert h.state["mode"] == "review" and h.state["cursor"] == 1
    assert h.items[1]["is_candidate"]


def test_modal_panel_follows_the_current_sample(panel, ds):
    """In the sample modal the panel queues that sample's labels; when the modal moves to
    another sample, the queue follows, and later actions act on the new queue."""
    h = Harness(panel, ds)
    sids = [s for s, n in zip(*ds.values(["id", "ground_truth.detections"])) if n][:2]

    def in_modal(method, sid, **params):
        ctx = ExecutionContext(request_params={
            "dataset_name": ds.name, "current_sample": sid,
            "params": {"panel_id": "panel-1", "panel_state": h.state, **params}},
            executor=Executor())
        getattr(panel, method)(ctx)

    in_modal("on_load", sids[0])
    assert h.state["surface"] == "modal"
    assert {q["sample_id"] for q in h.items} == {sids[0]}
    in_modal("on_change_current_sample", sids[1])
    assert {q["sample_id"] for q in h.items} == {sids[1]}
    in_modal("act", sids[1], kind="next")   # a step acts on the session's queue as it is
    assert {q["sample_id"] for q in h.items} == {sids[1]}   # not the first sample's queue


def test_relabel_needs_confirmation_for_a_new_class(panel, ds):
    h = Harness(panel, ds)
    h.call("on_load")
    h.call("enter_review")
    q = h.items[0]
    # issue 23.2: a name outside the dataset's classes only with the picker's "new class" choice
    h.call("on_relabel_pick", value="persn", label_id=q["label_id"])
    assert "Fix failed" in h.ops("notify")[0]["message"]
    assert _gt(ds, q["sample_id"])[q["label_id"]].label == q["label"]
    h.call("on_relabel_pick", value="persn", label_id=q["label_id"], new_class=True)
    assert _gt(ds, q["sample_id"])[q["label_id"]].label == "persn"
    q1 = h.items[1]
    h.call("on_relabel_pick", value="cat", label_id=q1["label_id"])  # the next item, picked
    assert _gt(ds, q1["sample_id"])[q1["label_id"]].label == "cat"


def test_class_pick_for_another_label_is_refused(panel, ds):
    """Issue 23.1: a class choice names the label it was made for; one arriving after the
    panel moved on (or with no label id) changes nothing."""
    h = Harness(panel, ds)
    h.call("on_load")
    h.call("enter_review")
    q0, q1 = h.items[0], h.items[1]
    js = h.render_json()
    assert "LabelGraderClassPicker" in js and q0["label_id"] in js
    h.call("on_relabel_pick", value="cat", label_id=q0["label_id"])
    assert _gt(ds, q0["sample_id"])[q0["label_id"]].label == "cat"
    assert h.state["cursor"] == 1
    for stray in ({"label_id": q0["label_id"]}, {}):  # the old label's choice again; no id
        h.call("on_relabel_pick", value="dog", **stray)
        assert "label shown changed" in h.ops("notify")[0]["message"]
    assert _gt(ds, q1["sample_id"])[q1["label_id"]].label == q1["label"]
    assert _gt(ds, q0["sample_id"])[q0["label_id"]].label == "cat"


def test_overlooked_adopt_accept_page_views_and_grid(panel, ds):
    h = Harness(panel, ds)
    h.call("on_load")
    h.call("on_filter_change", path="controls.score", value="cleanlab_overlooked")
    cands = h.items
    assert cands and all(q["is_candidate"] for q in cands)
    assert '"row_0_adopt"' in h.render_json()
    c = cands[0]
    h.call("act", index=0, kind="adopt")
    labels = ds[c["sample_id"]].ground_truth.detections
    assert labels[-1].review_adopted_from == c["label_id"]
    assert h.items[0]["decided"] == "adopted"  # the snapshot stays until refresh
    h.call("refresh")
    assert c["label_id"] not in [q["label_id"] for q in h.items]

    h.call("on_filter_change", path="controls.score", value="cleanlab_badloc")
    shown = [q["label_id"] for q in h.items]
    h.call("show_queue")
    assert h.ops("set_view"), "show_queue should set the App's view"
    view = review.queue_filter_view(ds, score="cleanlab_badloc")
    assert set(view.values("ground_truth.detections.id", unwind=True)) == {
        it.label_id for it in review.review_queue(ds, score="cleanlab_badloc")}
    h.call("accept_all")
    tags = {i: t for ids, ts in zip(*ds.values(["ground_truth.detections.id",
                                                "ground_truth.detections.tags"]))
            for i, t in zip(ids, ts)}
    assert all(REVIEWED_OK_TAG in tags[lid] for lid in shown)
    h.call("undo")
    tags = {i: t for ids, ts in zip(*ds.values(["ground_truth.detections.id",
                                                "ground_truth.detections.tags"]))
            for i, t in zip(ids, ts)}
    assert not any(REVIEWED_OK_TAG in tags[lid] for lid in shown)

    h.call("save_views")
    ds.reload()
    assert {"ground_truth suspect badloc", "ground_truth suspect swap",
            "ground_truth overlooked candidates"} <= set(ds.list_saved_views())


def test_view_change_reads_the_view_and_never_sets_it(panel, ds):
    h = Harness(panel, ds)
    h.call("on_load")
    ex = Executor()
    view = ds.limit(2)
    ctx = ExecutionContext(request_params={
        "dataset_name": ds.name, "view": view._serialize(),
        "params": {"panel_id": "panel-1", "panel_state": h.state}}, executor=ex)
    panel.on_change_view(ctx)
    uris = [r.operator_uri for r in ex._requests]
    assert not any(u.endswith(("set_view", "reload_dataset", "clear_view")) for u in uris)
    assert h.state["counts"] == review.issue_counts(view)


def test_dataset_without_scores_says_so(panel, synthetic_dataset):
    h = Harness(panel, synthetic_dataset)
    h.call("on_load")
    assert h.items == [] and h.state["available"] == []
    assert "No judge scores" in h.render_json()


def test_dataset_without_detections_renders_a_notice(panel, tmp_path):
    ds = fo.Dataset()
    ds.add_sample(fo.Sample(filepath=str(tmp_path / "x.jpg")))
    try:
        h = Harness(panel, ds)
        h.call("on_load")
        assert "No Detections field" in h.render_json()
    finally:
        ds.delete()


def test_box_nudge_keys_save_and_undo(panel, ds):
    """Issue 23.6: arrows move the shown box (shift: its right/bottom edge) as a draft that
    nothing writes until 'e'; the saved box is one fix, undone by 'u'."""
    h = Harness(panel, ds)
    h.call("on_load")
    h.call("on_filter_change", path="controls.issue", value="__all__")
    h.call("enter_review")
    k = next(i for i, x in enumerate(h.items)
             if x["box"][0] > 0.05 and x["box"][0] + x["box"][2] < 0.9)
    q = h.items[k]
    h.call("enter_review", index=k)
    before = list(_gt(ds, q["sample_id"])[q["label_id"]].bounding_box)
    for key in ("left", "left", "shift+right", "shift+down"):
        h.call("on_hotkey", key=key)
    assert _gt(ds, q["sample_id"])[q["label_id"]].bounding_box == before  # a draft only
    x, y, w, hh = before
    want = [x - 0.02, y, w + 0.01, hh + 0.01]
    assert h.state["draft"]["box"] == pytest.approx(want)
    assert "Box edited, not saved" in h.data["review_body.review_side.review_txt"]
    h.call("on_hotkey", key="e")
    assert _gt(ds, q["sample_id"])[q["label_id"]].bounding_box == pytest.approx(want)
    assert h.items[k]["decided"] == "box edited"
    h.call("on_hotkey", key="u")
    assert _gt(ds, q["sample_id"])[q["label_id"]].bounding_box == pytest.approx(before)
    h.call("on_hotkey", key="right")
    h.call("on_hotkey", key="r")  # reset: the draft goes, nothing written
    assert not h.state.get("draft")
    assert _gt(ds, q["sample_id"])[q["label_id"]].bounding_box == pytest.approx(before)


def test_decisions_re_rank_the_queue(panel, ds, monkeypatch):
    """After every REFIT_EVERY decisions the ensemble learns from them and the queue (sorted by
    an ensemble score) is re-read in the new order, reviewed labels left out."""
    import grader.ensemble as ens
    from grader.ensemble import compute_ensemble

    compute_ensemble(ds, "ground_truth")     # the ensemble the panel sorts by
    monkeypatch.setattr(ens, "REFIT_EVERY", 3)
    monkeypatch.setattr(ens.refit_if_due, "__defaults__", (3,))
    h = Harness(panel, ds)
    h.call("on_load")
    assert h.state["controls"]["score"] == "ensemble_any"
    h.call("on_filter_change", path="controls.issue", value="__all__")
    h.call("enter_review")
    first = [q["label_id"] for q in h.items[:3]]
    for _ in range(2):
        h.call("on_hotkey", key="a")
    assert not [n for n in h.ops("notify") if "re-ranked" in n["message"]]
    assert h.state["cursor"] == 2
    h.call("on_hotkey", key="a")              # the third decision: re-ranked, page re-read
    assert [n for n in h.ops("notify") if "re-ranked" in n["message"]]
    assert h.state["cursor"] == 0
    assert not set(first) & {q["label_id"] for q in h.items}   # reviewed labels left the queue
    run = ds.get_run_info(ens.RUN_KEY).config.serialize()["report"]["info"]["reviews"]
    assert run["accepted"] == 3


def test_review_keys_do_not_reload_the_dataset(panel, ds, monkeypatch):
    """A review key writes through the dataset the panel holds: ``ctx.dataset`` reloads the
    dataset document and re-declares its fields on every App request (60-100 ms, most of a
    key's time before). Decisions still land in the database."""
    import fiftyone.core.dataset as fod

    h = Harness(panel, ds)
    h.call("on_load")
    h.call("on_filter_change", path="controls.issue", value="__all__")
    h.call("enter_review")
    reloads = []
    real = fod.Dataset.reload
    monkeypatch.setattr(fod.Dataset, "reload", lambda self, *a, **k: (reloads.append(1),
                                                                        real(self, *a, **k)))
    first = h.items[0]
    for key in ("a", "n", "p", "d", "u"):
        h.call("on_hotkey", key=key)
    assert reloads == []
    assert REVIEWED_OK_TAG in _gt(ds, first["sample_id"])[first["label_id"]].tags
    assert [x.kind for x in review.fix_log(ds, include_undone=True)] == ["delete", "accept"]


def test_delete_under_an_issue_filter_records_that_issue(panel, ds):
    """A deletion made while the queue is filtered to one issue is logged as that error (so
    the ensemble learns it as one); under "any suspect" the label's scores say which."""
    from grader.scores import SCORES

    h = Harness(panel, ds)
    h.call("on_load")
    tag = next(s.tag for s in SCORES if s.issue == "duplicate" and s.tag)
    # the synthetic labels carry no duplicate tag: give it to the first label of the queue
    h.call("on_filter_change", path="controls.issue", value="__all__")
    h.call("enter_review")
    first = h.items[0]
    ds.select(first["sample_id"]).set_label_values(
        "ground_truth.detections.tags", {first["label_id"]: [tag]})
    h.call("on_filter_change", path="controls.issue", value=tag)
    h.call("enter_review")
    assert h.items and h.items[0]["label_id"] == first["label_id"]
    h.call("on_hotkey", key="d")
    rec = review.fix_log(ds)[0]
    assert rec.kind == "delete" and rec.label_id == first["label_id"]
    assert (rec.extra["issue"], rec.extra["issue_source"]) == ("duplicate", "reviewer")


def test_grade_run_end_refreshes_open_panels(panel, ds):
    """Issue 23.7: a grade run's end reaches each Label review panel open on its dataset
    (``refresh_requests``: one trigger of ``on_grade_done`` per panel), which re-reads the
    scores and, with no sort chosen by the user, sorts by the new ensemble."""
    from fiftyone.operators.executor import ExecutionContext as Ctx

    from grader.ensemble import compute_ensemble

    h = Harness(panel, ds)
    h.call("on_load")
    assert h.state["controls"]["score"] == "cleanlab_badloc"
    mod = type(panel).__module__
    review_panel = __import__(mod, fromlist=["refresh_requests"])
    assert "panel-1" in review_panel.open_panels(ds.name)
    assert review_panel.open_panels(ds.name + "-other") == []
    ex = Executor()
    ctx = Ctx(request_params={"dataset_name": ds.name, "params": {}}, executor=ex)
    review_panel.refresh_requests(ctx)
    calls = [(r.operator_uri, r.params) for r in ex._requests]
    assert calls == [(PANEL, {"__method__": "on_grade_done", "panel_id": "panel-1"})]
    compute_ensemble(ds, "ground_truth")      # what the grade run wrote
    h.call("on_grade_done")
    assert h.state["controls"]["score"] == "ensemble_any"
    assert "ensemble_any" in h.state["available"]
    assert h.items[0]["value"] == max(q["value"] for q in h.items)
    assert [n for n in h.ops("notify") if "re-read" in n["message"]]
    # a sort the user chose stays
    h.call("on_filter_change", path="controls.score", value="cleanlab_swap")
    h.call("on_grade_done")
    assert h.state["controls"]["score"] == "cleanlab_swap"
    h.call("on_unload")                       # closed: no longer refreshed
    assert "panel-1" not in review_panel.open_panels(ds.name)


def test_grade_labels_from_the_app_ends_by_refreshing_the_panel(panel, ds):
    """Issue 23.7, the operator's side: "Grade labels" run from the App streams each step's
    progress, then reloads the App and triggers ``on_grade_done`` on the Label review panel
    open on its dataset, before its output."""
    import sys

    h = Harness(panel, ds)
    h.call("on_load")                          # a panel open on ds
    grade_op = foo.get_operator("@label-grader/label-grader/grade_labels")
    streamed = sys.modules[type(grade_op).__module__]._streamed

    def run(progress) -> dict:
        for i in range(3):
            progress("boxgrader", i + 1, 3)
        return {"summary": "ok", "not_run": {}, "reports": {}}

    ctx = ExecutionContext(request_params={"dataset_name": ds.name, "params": {}},
                           executor=Executor())
    sent = [m.body.to_json() for m in streamed(ctx, run, "Grade labels")]
    uris = [b.get("operator_uri") or b.get("operator_name") for b in sent]
    labels = [b["params"].get("label") for b, u in zip(sent, uris) if u.endswith("set_progress")]
    assert labels[0].startswith("boxgrader ") and labels[-1] == "Grade labels: done"
    i_reload, i_panel = uris.index("reload_dataset"), uris.index(PANEL)
    assert i_reload < i_panel < len(sent) - 1 and uris[-1].endswith("show_output")
    assert sent[i_panel]["params"] == {"__method__": "on_grade_done", "panel_id": "panel-1"}
