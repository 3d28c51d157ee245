"""Review: fixes and exact undo, fix log, queue/filter/sort, histogram, saved views, operators."""
from __future__ import annotations

import fiftyone as fo
import fiftyone.operators as foo
import pytest
from bson import ObjectId
from fiftyone import ViewField as F

from grader import review, scores
from grader.scores import REVIEWED_OK_TAG, ScoreSpec

from review_helpers import add_fake_cleanlab, raw_docs

OP = "@label-grader/label-grader"


def flat(collection, path):
    """One value per label (``values(unwind=True)`` would also flatten each label's tags)."""
    return [x for per in collection.values(path) for x in (per or [])]


@pytest.fixture()
def ds(synthetic_dataset):
    add_fake_cleanlab(synthetic_dataset)
    yield synthetic_dataset
    review.clear_fix_log(synthetic_dataset)


def _gt(ds, sid):
    return {d.id: d for d in ds[sid].ground_truth.detections}


def _first_label(ds, field="ground_truth", k=0):
    sids, ids = ds.values(["id", f"{field}.detections.id"])
    pairs = [(s, l) for s, ls in zip(sids, ids) for l in (ls or [])]
    return pairs[k]


def _only_changed(before: dict, after: dict) -> set:
    assert before.keys() == after.keys()
    return {k for k in before if before[k] != after[k]}


# ---------------------------------------------------------------- fixes + undo, one per kind

def test_accept_then_undo_restores_exactly(ds):
    sid, lid = _first_label(ds)
    snap = raw_docs(ds)
    rec = review.accept_label(ds, sid, lid)
    assert REVIEWED_OK_TAG in _gt(ds, sid)[lid].tags
    after = raw_docs(ds)
    assert _only_changed(snap, after) == {sid}
    # only that label of that sample changed
    b = {d["_id"]: d for d in snap[sid]["ground_truth"]["detections"]}
    a = {d["_id"]: d for d in after[sid]["ground_truth"]["detections"]}
    assert {k for k in b if b[k] != a[k]} == {ObjectId(lid)}
    assert rec.kind == "accept" and rec.before["tags"] == b[ObjectId(lid)]["tags"]
    review.undo_fix(ds, rec.fix_id)
    assert raw_docs(ds) == snap


def test_relabel_uses_suggested_class_and_undoes(ds):
    sid, lid = _first_label(ds, k=1)
    det = _gt(ds, sid)[lid]
    suggested = det.cleanlab_swap_label
    assert suggested and suggested != det.label
    snap = raw_docs(ds)
    rec = review.relabel(ds, sid, lid)
    new = _gt(ds, sid)[lid]
    assert new.label == suggested and review.REVIEWED_FIXED_TAG in new.tags
    assert new.bounding_box == det.bounding_box and new.cleanlab_badloc == det.cleanlab_badloc
    assert _only_changed(snap, raw_docs(ds)) == {sid}
    review.undo_fix(ds)  # newest fix by default
    assert raw_docs(ds) == snap
    with pytest.raises(ValueError, match="non-empty"):
        review.relabel(ds, sid, lid, new_label="  ")


def test_delete_and_undo_reinserts_at_same_position(ds):
    sid, lid = _first_label(ds, k=1)  # the middle label of the first sample
    snap = raw_docs(ds)
    rec = review.delete_label(ds, sid, lid)
    assert lid not in _gt(ds, sid) and len(_gt(ds, sid)) == 2
    assert rec.index == 1 and rec.after is None
    review.undo_fix(ds, rec.fix_id)
    assert raw_docs(ds) == snap
    assert [d.id for d in ds[sid].ground_truth.detections][1] == lid


def test_delete_records_why_the_label_went(ds):
    """The fix log keeps the issue a deletion establishes, so the ensemble learns it as that
    error: the reviewer's word, else the likelier of spurious / duplicate by the label's
    scores; an unknown issue is refused before anything is written."""
    sid, lid = _first_label(ds, k=0)
    snap = raw_docs(ds)
    with pytest.raises(ValueError, match="unknown issue"):
        review.delete_label(ds, sid, lid, issue="blurry")
    assert raw_docs(ds) == snap and not review.pending_fixes(ds)
    rec = review.delete_label(ds, sid, lid, issue="duplicate")
    assert rec.extra["issue"] == "duplicate" and rec.extra["issue_source"] == "reviewer"
    review.undo_fix(ds, rec.fix_id)
    # scores decide where the reviewer said nothing
    ds.set_values("ground_truth.detections.ensemble_duplicate",
                  [[0.9 if d.id == lid else 0.1 for d in s.ground_truth.detections] for s in ds])
    ds.set_values("ground_truth.detections.ensemble_spurious",
                  [[0.2 for _ in s.ground_truth.detections] for s in ds])
    rec = review.delete_label(ds, sid, lid)
    assert (rec.extra["issue"], rec.extra["issue_source"]) == ("duplicate", "scores")
    review.undo_fix(ds, rec.fix_id)
    sid2, lid2 = _first_label(ds, k=1)
    rec = review.delete_label(ds, sid2, lid2)
    assert (rec.extra["issue"], rec.extra["issue_source"]) == ("spurious", "scores")


def test_replace_box_takes_matched_prediction(ds):
    sid, lid = _first_label(ds, k=2)
    det = _gt(ds, sid)[lid]
    pred = {p.id: p for p in ds[sid].predictions.detections}[det.cleanlab_badloc_pred_id]
    assert pred.bounding_box != det.bounding_box
    snap = raw_docs(ds)
    rec = review.replace_box(ds, sid, lid)
    assert _gt(ds, sid)[lid].bounding_box == pytest.approx(pred.bounding_box)
    assert _gt(ds, sid)[lid].label == det.label
    assert rec.extra["pred_id"] == pred.id
    # predictions untouched
    assert raw_docs(ds)[sid]["predictions"] == snap[sid]["predictions"]
    review.undo_fix(ds, rec.fix_id)
    assert raw_docs(ds) == snap


def test_adopt_candidate_moves_it_into_gt_and_undo_moves_it_back(ds):
    sid = ds.first().id
    cand = ds[sid].ground_truth_overlooked.detections[0]
    snap = raw_docs(ds)
    rec = review.adopt_candidate(ds, sid, cand.id)
    s = ds[sid]
    assert len(s.ground_truth_overlooked.detections) == 0
    new = s.ground_truth.detections[-1]
    assert new.id == rec.label_id and new.label == cand.label
    assert new.bounding_box == pytest.approx(cand.bounding_box)
    assert new.review_adopted_from == cand.id and review.REVIEWED_FIXED_TAG in new.tags
    assert _only_changed(snap, raw_docs(ds)) == {sid}
    review.undo_fix(ds, rec.fix_id)
    assert raw_docs(ds) == snap


def test_apply_fix_dispatch_and_errors(ds):
    sid, lid = _first_label(ds)
    with pytest.raises(ValueError, match="allow_new_class"):
        review.apply_fix(ds, "relabel", sid, lid, new_label="zebra")
    rec = review.apply_fix(ds, "relabel", sid, lid, new_label="zebra", allow_new_class=True)
    assert _gt(ds, sid)[lid].label == "zebra"
    with pytest.raises(ValueError, match="unknown fix"):
        review.apply_fix(ds, "explode", sid, lid)
    with pytest.raises(KeyError, match="not in field"):
        review.accept_label(ds, sid, "0" * 24)
    with pytest.raises(ValueError, match="does not exist"):
        review.accept_label(ds, sid, lid, field="nope")
    review.undo_fix(ds, rec.fix_id)
    with pytest.raises(ValueError, match="already undone"):
        review.undo_fix(ds, rec.fix_id)


def test_fix_through_a_filtered_view_keeps_hidden_labels(ds):
    sid, lid = _first_label(ds)
    view = ds.filter_labels("ground_truth", F("_id") == ObjectId(lid))
    assert len(view.first().ground_truth.detections) == 1
    n_before = len(ds[sid].ground_truth.detections)
    rec = review.relabel(view, sid, lid, new_label="bird", allow_new_class=True)
    assert len(ds[sid].ground_truth.detections) == n_before
    review.undo_fix(view, rec.fix_id)


def test_undo_refuses_to_clobber_a_later_edit(ds):
    sid, lid = _first_label(ds)
    rec = review.accept_label(ds, sid, lid)
    ds.set_label_values("ground_truth.detections.label",
                        [{"sample_id": sid, "label_id": lid, "value": "edited"}])
    with pytest.raises(review.FixConflictError, match="changed after"):
        review.undo_fix(ds, rec.fix_id)
    review.undo_fix(ds, rec.fix_id, force=True)
    det = _gt(ds, sid)[lid]
    assert det.label != "edited" and REVIEWED_OK_TAG not in det.tags


def test_undo_with_nothing_to_undo(ds):
    with pytest.raises(LookupError, match="no fix to undo"):
        review.undo_fix(ds)


def test_bulk_accept_and_undo_only_untags_what_it_tagged(ds):
    sid, lid = _first_label(ds)
    review.accept_label(ds, sid, lid)  # already accepted before the bulk accept
    view = ds.filter_labels("ground_truth", F("tags").contains("suspect:badloc"))
    ids = flat(view, "ground_truth.detections.id")
    rec = review.accept_labels(view, "ground_truth")
    assert set(rec.extra["label_ids"]) == set(ids) - {lid}
    tags = dict(zip(flat(ds, "ground_truth.detections.id"), flat(ds, "ground_truth.detections.tags")))
    assert all(REVIEWED_OK_TAG in tags[i] for i in ids)
    review.undo_fix(ds, rec.fix_id)
    tags = dict(zip(flat(ds, "ground_truth.detections.id"), flat(ds, "ground_truth.detections.tags")))
    assert REVIEWED_OK_TAG in tags[lid]
    assert not any(REVIEWED_OK_TAG in tags[i] for i in set(ids) - {lid})
    assert review.accept_labels(ds.filter_labels("ground_truth", F("_id") == ObjectId(lid))) is None


def test_fix_log_records_who_when_what(ds):
    sid, lid = _first_label(ds)
    r1 = review.accept_label(ds, sid, lid, user="alice")
    r2 = review.relabel(ds, sid, lid, new_label="bird", user="bob", allow_new_class=True)
    review.undo_fix(ds, r2.fix_id, user="carol")
    log = review.fix_log(ds)
    assert [r.fix_id for r in log] == [r2.fix_id, r1.fix_id]  # newest first
    assert log[0].user == "bob" and log[0].undone and log[0].undone_by == "carol"
    assert log[1].user == "alice" and not log[1].undone and log[1].time is not None
    assert log[0].before["label"] != "bird" and log[0].after["label"] == "bird"
    assert "relabel" in log[0].summary() and "(undone)" in log[0].summary()
    assert review.count_fixes(ds) == 1 and review.count_fixes(ds, include_undone=True) == 2
    assert review.fix_log(ds, include_undone=False)[0].fix_id == r1.fix_id
    js = review.record_to_json(log[0])
    assert isinstance(js["before"]["_id"], str) and isinstance(js["time"], str)
    # other datasets' logs are separate
    other = ds.clone()
    try:
        assert review.fix_log(other) == []
    finally:
        other.delete()
    assert review.clear_fix_log(ds) == 2 and review.fix_log(ds) == []


# ---------------------------------------------------------------- queue, counts, histogram

def test_available_scores_follow_registry_and_dataset(ds, monkeypatch):
    attrs = [s.attr for s in review.available_scores(ds)]
    assert attrs == ["cleanlab_badloc", "cleanlab_swap", "cleanlab_overlooked"]
    # a judge adding a ScoreSpec line appears once its attribute is on the dataset
    spec = ScoreSpec("fakejudge_bad", "fakejudge", "any", True, tag="suspect:fake")
    monkeypatch.setattr(scores, "SCORES", scores.SCORES + [spec])
    monkeypatch.setattr(review.queue, "SCORES", scores.SCORES)
    monkeypatch.setattr(review.views, "SCORES", scores.SCORES)
    assert "fakejudge_bad" not in [s.attr for s in review.available_scores(ds)]
    ids = flat(ds, "ground_truth.detections.id")
    sids = ds.values("id")
    vals = ds.values("ground_truth.detections.id")
    rows = [{"sample_id": s, "label_id": l, "value": 0.9 if k == 0 else 0.1}
            for s, ls in zip(sids, vals) for k, l in enumerate(ls)]
    ds.set_label_values("ground_truth.detections.fakejudge_bad", rows)
    assert "fakejudge_bad" in [s.attr for s in review.available_scores(ds)]
    q = review.review_queue(ds, score="fakejudge_bad", threshold=0.5)
    assert len(q) == len(sids) and all(it.value == 0.9 for it in q)
    assert "suspect:fake" in review.issue_counts(ds)
    assert len(ids) == len(rows)


def test_queue_sorted_by_suspicion_and_filtered(ds):
    q = review.review_queue(ds, score="cleanlab_badloc")
    # default: labels with any suspect tag, lowest badloc (most suspect) first
    vals = [it.value for it in q]
    assert vals == sorted(vals)
    tagged = set(ds.filter_labels("ground_truth", F("tags").contains(["suspect:badloc", "suspect:swap"]))
                 .values("ground_truth.detections.id", unwind=True))
    assert {it.label_id for it in q} == tagged
    # issue filter by type or by tag
    qb = review.review_queue(ds, score="cleanlab_badloc", issues=["badloc"])
    assert qb and all("suspect:badloc" in it.issues for it in qb)
    assert [it.label_id for it in qb] == [it.label_id for it in
                                         review.review_queue(ds, score="cleanlab_badloc",
                                                             issues=["suspect:badloc"])]
    # class filter
    qc = review.review_queue(ds, score="cleanlab_swap", classes=["cat"])
    assert qc and all(it.label == "cat" for it in qc)
    # threshold on the raw value, low = suspect for cleanlab
    qt = review.review_queue(ds, score="cleanlab_swap", threshold=0.5)
    all_vals = flat(ds, "ground_truth.detections.cleanlab_swap")
    assert len(qt) == sum(v <= 0.5 for v in all_vals)
    assert all(it.value <= 0.5 for it in qt)
    # suggestions travel with the item
    assert all(it.suggested_label and it.pred_id for it in qt)
    # limit
    assert len(review.review_queue(ds, score="cleanlab_swap", threshold=0.5, limit=2)) == min(2, len(qt))


def test_accepted_and_fixed_labels_leave_the_queue(ds):
    q = review.review_queue(ds, score="cleanlab_badloc", issues=["badloc"])
    first, second = q[0], q[1]
    rec = review.accept_label(ds, first.sample_id, first.label_id)
    review.replace_box(ds, second.sample_id, second.label_id)
    q2 = review.review_queue(ds, score="cleanlab_badloc", issues=["badloc"])
    assert {it.label_id for it in q2} == {it.label_id for it in q} - {first.label_id, second.label_id}
    assert len(review.review_queue(ds, score="cleanlab_badloc", issues=["badloc"],
                                   include_reviewed=True)) == len(q)
    counts = review.issue_counts(ds)
    assert counts["suspect:badloc"] == len(q) - 2
    review.undo_fix(ds, rec.fix_id)
    assert review.issue_counts(ds)["suspect:badloc"] == len(q) - 1


def test_overlooked_queue_lists_candidates_and_counts(ds):
    q = review.review_queue(ds, score="cleanlab_overlooked")
    n_tagged = sum("suspect:overlooked" in (t or []) for t in
                   flat(ds, "ground_truth_overlooked.detections.tags"))
    assert len(q) == n_tagged > 0
    assert all(it.is_candidate and it.field == "ground_truth_overlooked" for it in q)
    assert review.issue_counts(ds)["suspect:overlooked"] == n_tagged
    review.adopt_candidate(ds, q[0].sample_id, q[0].label_id)
    assert len(review.review_queue(ds, score="cleanlab_overlooked")) == n_tagged - 1


def test_counts_follow_the_current_view(ds):
    full = review.issue_counts(ds)
    view = ds.limit(2)
    part = review.issue_counts(view)
    tags = flat(view, "ground_truth.detections.tags")
    assert part["suspect:swap"] == sum("suspect:swap" in (t or []) for t in tags)
    assert part["suspect:swap"] <= full["suspect:swap"]


def test_histogram(ds):
    h = review.score_histogram(ds, "cleanlab_badloc", bins=10)
    assert h["n"] == len(flat(ds, "ground_truth.detections.id"))
    assert sum(h["counts"]) == h["n"] and len(h["edges"]) == 11
    assert h["edges"][0] == 0.0 and h["edges"][-1] == 1.0 and not h["higher_is_suspect"]
    empty = review.score_histogram(ds.limit(0), "cleanlab_badloc")
    assert empty["counts"] == [] and empty["n"] == 0


def test_counts_histogram_and_page_match_a_python_pass(ds):
    """The aggregations filter labels inside each sample before unwinding and run side by side
    in review_snapshot: same counts, bins and order as one Python pass over the labels, with
    reviewed labels, labels without the score and a score outside 0-1 present."""
    import numpy as np

    rows = [(sid, d) for sid, dets in zip(*ds.values(["id", "ground_truth.detections"]))
            for d in (dets or [])]
    # one reviewed suspect, one label without its swap score, badloc on a 0-40 scale
    reviewed = next(d for _, d in rows if any(t.startswith("suspect:") for t in d.tags))
    ds.select_labels(ids=[reviewed.id]).tag_labels(REVIEWED_OK_TAG, label_fields="ground_truth")
    no_swap = rows[-1][1].id
    ids, swap, badloc = ds.values(["ground_truth.detections.id",
                                   "ground_truth.detections.cleanlab_swap",
                                   "ground_truth.detections.cleanlab_badloc"])
    ds.set_values("ground_truth.detections.cleanlab_swap",
                  [[None if i == no_swap else v for i, v in zip(li, lv)] for li, lv in zip(ids, swap)])
    ds.set_values("ground_truth.detections.cleanlab_badloc",
                  [[40.0 * v for v in lv] for lv in badloc])
    rows = [(sid, d) for sid, dets in zip(*ds.values(["id", "ground_truth.detections"]))
            for d in (dets or [])]
    live = [(sid, d) for sid, d in rows if REVIEWED_OK_TAG not in d.tags]
    cands = [d for dets in ds.values("ground_truth_overlooked.detections") for d in (dets or [])]
    assert cands    # the counts cover the candidates field too
    counts = {}
    for d in [d for _, d in live] + cands:
        for t in d.tags:
            if t.startswith("suspect:"):
                counts[t] = counts.get(t, 0) + 1

    snap = review.review_snapshot(ds, score="cleanlab_badloc", limit=50, bins=8)
    assert {k: v for k, v in snap["counts"].items() if v} == counts
    b = np.array([d["cleanlab_badloc"] for _, d in live])
    assert snap["hist"]["edges"][0] == pytest.approx(b.min())
    assert snap["hist"]["edges"][-1] == pytest.approx(b.max())
    assert snap["hist"]["counts"] == np.histogram(b, bins=8, range=(b.min(), b.max()))[0].tolist()
    queued = sorted((d for _, d in live if any(t.startswith("suspect:") for t in d.tags)),
                    key=lambda d: (d["cleanlab_badloc"], d.id))
    assert snap["page"].total == len(queued)
    assert [it.label_id for it in snap["page"].items] == [d.id for d in queued][:50]

    h = review.score_histogram(ds, "cleanlab_swap", bins=4)
    sw = [d["cleanlab_swap"] for _, d in live if d["cleanlab_swap"] is not None]
    assert h["n"] == len(sw) == len(live) - 1 and h["edges"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert h["counts"] == np.histogram(sw, bins=4, range=(0, 1))[0].tolist()


def test_queue_without_scores_is_empty(synthetic_dataset):
    assert review.available_scores(synthetic_dataset) == []
    assert review.review_queue(synthetic_dataset) == []
    assert all(v == 0 for v in review.issue_counts(synthetic_dataset).values())


def test_queue_view_shows_only_queued_labels(ds):
    q = review.review_queue(ds, score="cleanlab_swap", issues=["swap"])
    v = review.queue_view(ds, q)
    assert set(flat(v, "ground_truth.detections.id")) == {it.label_id for it in q}


# ---------------------------------------------------------------- saved views

def test_save_review_views(ds):
    sid, lid = _first_label(ds)
    review.accept_label(ds, sid, lid)
    names = review.save_review_views(ds)
    assert {"ground_truth suspect badloc", "ground_truth suspect swap", "ground_truth overlooked candidates", "ground_truth reviewed"} <= set(names)
    assert set(names) <= set(ds.list_saved_views())
    badloc = ds.load_saved_view("ground_truth suspect badloc")
    ids = flat(badloc, "ground_truth.detections.id")
    tags = flat(badloc, "ground_truth.detections.tags")
    assert ids and all("suspect:badloc" in t and REVIEWED_OK_TAG not in t for t in tags)
    assert flat(ds.load_saved_view("ground_truth reviewed"), "ground_truth.detections.id") == [lid]
    assert ds.load_saved_view("ground_truth overlooked candidates").count("ground_truth_overlooked.detections") > 0
    # saved views are live: a later accept changes what they show
    review.accept_label(ds, badloc.first().id, badloc.first().ground_truth.detections[0].id)
    assert ds.load_saved_view("ground_truth suspect badloc").count("ground_truth.detections") == len(ids) - 1
    assert review.save_review_views(ds) == names  # idempotent (overwrite)


# ---------------------------------------------------------------- operators (SDK execution)

def test_operators_apply_undo_and_save_views(ds):
    sid, lid = _first_label(ds)
    bad = [({"kind": "relabel", "new_label": "horse"}, "allow_new_class"),
           ({"kind": "bogus"}, "kind"),
           ({"kind": "accept", "sample_id": "nope"}, "24-hex-digit")]
    for params, msg in bad:
        with pytest.raises(Exception, match=msg):
            foo.execute_operator(f"{OP}/apply_fix", ctx={"dataset": ds, "params": {
                "sample_id": sid, "label_id": lid, "field": "ground_truth", **params}})
    assert _gt(ds, sid)[lid].label != "horse"
    res = foo.execute_operator(f"{OP}/apply_fix", ctx={"dataset": ds, "params": {
        "kind": "relabel", "sample_id": sid, "label_id": lid, "field": "ground_truth",
        "new_label": "horse", "allow_new_class": True}})
    assert res.error is None, res.error
    assert _gt(ds, sid)[lid].label == "horse"
    fix_id = res.result["fix"]["fix_id"]
    res = foo.execute_operator(f"{OP}/undo_fix", ctx={"dataset": ds, "params": {"fix_id": fix_id}})
    assert res.error is None, res.error
    assert _gt(ds, sid)[lid].label != "horse"
    res = foo.execute_operator(f"{OP}/apply_fix", ctx={"dataset": ds, "params": {
        "kind": "delete", "sample_id": sid, "label_id": lid, "field": "ground_truth",
        "issue": "duplicate"}})
    assert res.error is None, res.error
    assert res.result["fix"]["extra"]["issue"] == "duplicate" and lid not in _gt(ds, sid)
    foo.execute_operator(f"{OP}/undo_fix", ctx={"dataset": ds, "params": {
        "fix_id": res.result["fix"]["fix_id"]}})
    assert lid in _gt(ds, sid)
    res = foo.execute_operator(f"{OP}/save_review_views", ctx={"dataset": ds, "params": {
        "gt_field": "ground_truth"}})
    assert res.error is None, res.error
    assert "ground_truth suspect swap" in ds.list_saved_views()
    res = foo.execute_operator(f"{OP}/apply_fix", ctx={"dataset": ds, "params": {
        "kind": "accept_all", "field": "ground_truth", "target": "DATASET"}})
    assert res.error is None, res.error
    assert all(REVIEWED_OK_TAG in t for t in flat(ds, "ground_truth.detections.tags"))


# ---------------------------------------------------------------- with a real cleanlab run

def test_queue_after_real_cleanlab_run(synthetic_dataset):
    from grader.judges.cleanlab import run_cleanlab

    ds = synthetic_dataset
    # make one GT label wrong so cleanlab has something to say
    sid = ds.first().id
    lid = ds.first().ground_truth.detections[0].id
    old = ds.first().ground_truth.detections[0].label
    wrong = "dog" if old == "cat" else "cat"
    ds.set_label_values("ground_truth.detections.label",
                        [{"sample_id": sid, "label_id": lid, "value": wrong}])
    report = run_cleanlab(ds, high_probability_threshold=0.5)  # the predictions are 0.6-0.99 confident
    try:
        avail = [s.attr for s in review.available_scores(ds)]
        assert {"cleanlab_badloc", "cleanlab_swap"} <= set(avail)
        counts = review.issue_counts(ds)
        for tag in ("suspect:badloc", "suspect:swap", "suspect:overlooked"):
            assert counts[tag] == report.tagged.get(tag, 0)
        q = review.review_queue(ds, score="cleanlab_swap", suspects_only=False)
        assert len(q) == len(flat(ds, "ground_truth.detections.id"))
        scored = [it.value for it in q if it.value is not None]
        assert scored == sorted(scored)
        # the planted swap is the most suspect label
        top = q[0]
        assert top.label_id == lid
        rec = review.relabel(ds, top.sample_id, top.label_id, new_label=top.suggested_label or old)
        assert _gt(ds, sid)[lid].label == old
        assert lid not in {it.label_id for it in review.review_queue(ds, score="cleanlab_swap",
                                                                     suspects_only=False)}
        review.undo_fix(ds, rec.fix_id)
        assert _gt(ds, sid)[lid].label == wrong
    finally:
        review.clear_fix_log(ds)


def test_grade_labels_streams_step_progress_to_the_app(synthetic_dataset):
    """Issue 23.7: "Grade labels" started from the App (its requests carry the current sample)
    streams each step's progress, then its output (plain-text summary) and a reload; from a
    script it still returns the result."""
    import asyncio
    import json

    from fiftyone.operators.executor import execute_or_delegate_operator

    ds = synthetic_dataset
    params = {"target": "DATASET", "gt_field": "ground_truth", "pred_field": "predictions",
              "detector": "none"}
    request = {"dataset_name": ds.name, "view": ds.view()._serialize(), "params": params,
               "current_sample": None}  # what the App's request carries
    res = asyncio.run(execute_or_delegate_operator(
        "@label-grader/label-grader/grade_labels", request))
    assert res.is_generator  # the App reads it as a stream
    msgs = [m.body for m in res.result]
    names = [getattr(b, "operator_uri", "") for b in msgs]
    labels = [b.params.get("label") for b, n in zip(msgs, names) if n.endswith("set_progress")]
    assert any(l.startswith("cleanlab ") for l in labels), labels
    assert any(l.startswith("ensemble ") for l in labels), labels
    assert labels[-1] == "Grade labels: done"
    shown = next(b for b, n in zip(msgs, names) if n.endswith("show_output"))
    assert "[ensemble]" in shown.params["results"]["summary"]
    assert "CodeView" not in json.dumps(shown.params["outputs"])
    assert any(n.endswith("reload_dataset") for n in names)
    assert ds.count("ground_truth.detections.cleanlab_badloc") > 0
