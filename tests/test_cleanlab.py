"""cleanlab ObjectLab judge on the real embedded database, real cleanlab, real images."""
from __future__ import annotations

import numpy as np
import pytest
import fiftyone as fo
import fiftyone.operators as foo
from cleanlab.object_detection import filter as cl_filter
from cleanlab.object_detection import rank as cl_rank

from grader import detectors
from grader.judges import cleanlab as cleanlab_judge
from grader.judges.cleanlab import CleanlabParams, build_inputs, run_cleanlab
from grader.report import RunReport

from conftest import shared_path, write_random_images

OURS = ("cleanlab_badloc", "cleanlab_swap", "cleanlab_swap_label", "cleanlab_swap_pred_id",
        "cleanlab_badloc_pred_id")


@pytest.fixture(scope="session")
def coco128_preds_base(coco128_base):
    """coco128 with real YOLOv3-tiny predictions (per-class probs), computed once."""
    det_dir = shared_path("detectors")
    if det_dir is None:
        pytest.skip("../shared/data/detectors is not present")
    ds = coco128_base.clone("lg-test-coco128-preds")
    detectors.run_detector(ds, detectors_dir=str(det_dir))
    return ds


@pytest.fixture()
def coco_preds(coco128_preds_base):
    ds = coco128_preds_base.clone()
    yield ds
    ds.delete()


def _gt_snapshot(ds, field="ground_truth"):
    """Every user-visible part of the GT labels except our own attributes and tags."""
    snap = {}
    for s in ds.select_fields(field):
        for d in (s[field].detections if s[field] else []):
            dd = d.to_dict()
            for k in list(dd):
                if k.startswith("cleanlab_") or k == "tags":
                    dd.pop(k)
            snap[d.id] = dd
    return snap


def _written(ds, attr, field="ground_truth"):
    ids = ds.values(f"{field}.detections.id", unwind=True)
    vals = ds.values(f"{field}.detections.{attr}", unwind=True)
    return dict(zip(ids, vals))


def test_scores_match_cleanlab_exactly(coco_preds):
    report = run_cleanlab(coco_preds)
    assert report.samples_scored == 128
    assert report.labels_scored == 939
    assert report.info["prob_source"] == cleanlab_judge.PROB_SOURCE_ATTR

    inputs = build_inputs(coco_preds, CleanlabParams(), RunReport("check"))
    labels, preds = inputs.labels, inputs.predictions
    # cleanlab's public API, called directly on the same arrays, without shared aux inputs.
    badloc = cl_rank.compute_badloc_box_scores(labels=labels, predictions=preds)
    swap = cl_rank.compute_swap_box_scores(labels=labels, predictions=preds)
    overlooked = cl_rank.compute_overlooked_box_scores(labels=labels, predictions=preds)
    quality = cl_rank.get_label_quality_scores(labels, preds, verbose=False)

    got_b, got_s = _written(coco_preds, "cleanlab_badloc"), _written(coco_preds, "cleanlab_swap")
    n = 0
    for i, ids in enumerate(inputs.gt_ids):
        for r, lid in enumerate(ids):
            assert got_b[lid] == pytest.approx(float(badloc[i][r]), abs=0, rel=0)
            assert got_s[lid] == pytest.approx(float(swap[i][r]), abs=0, rel=0)
            n += 1
    assert n == 939

    q = dict(zip(*coco_preds.values(["id", "cleanlab_label_quality"])))
    for sid, expected in zip(inputs.sample_ids, quality):
        assert q[sid] == float(expected)

    # Overlooked candidates are exactly cleanlab's non-NaN overlooked scores.
    cand = coco_preds.values("ground_truth_overlooked.detections.cleanlab_overlooked", unwind=True)
    expected = [float(x) for sc in overlooked for x in sc if np.isfinite(x)]
    assert sorted(cand) == sorted(expected)
    schema = coco_preds.get_field_schema(flat=True)
    assert isinstance(schema["ground_truth_overlooked.detections.cleanlab_overlooked"], fo.FloatField)
    assert isinstance(schema["ground_truth.detections.cleanlab_badloc"], fo.FloatField)

    # The sample issue flag follows cleanlab's own find_label_issues at default parameters.
    is_issue = cl_filter.find_label_issues(labels, preds, return_indices_ranked_by_score=False)
    flags = dict(zip(*coco_preds.values(["id", "cleanlab_issue"])))
    assert [flags[s] for s in inputs.sample_ids] == [bool(x) for x in is_issue]
    assert is_issue.sum() > 0


def test_labels_untouched_and_rerun_overwrites_only_own(coco_preds):
    before = _gt_snapshot(coco_preds)
    coco_preds.untag_labels("suspect:badloc")
    # A user tag that must survive.
    first = coco_preds.first()
    first.ground_truth.detections[0].tags.append("user:keep")
    first.save()

    run_cleanlab(coco_preds, badloc_threshold=0.5, swap_threshold=0.0, overlooked_threshold=0.0)
    tagged_05 = set(coco_preds.filter_labels("ground_truth", fo.ViewField("tags").contains("suspect:badloc"))
                    .values("ground_truth.detections.id", unwind=True))
    scores = _written(coco_preds, "cleanlab_badloc")
    assert tagged_05 == {k for k, v in scores.items() if v is not None and v <= 0.5}
    assert len(tagged_05) > 0

    run_cleanlab(coco_preds, badloc_threshold=0.05, swap_threshold=0.0, overlooked_threshold=0.0)
    tagged_005 = set(coco_preds.filter_labels("ground_truth", fo.ViewField("tags").contains("suspect:badloc"))
                     .values("ground_truth.detections.id", unwind=True))
    assert tagged_005 == {k for k, v in scores.items() if v is not None and v <= 0.05}
    assert tagged_005 < tagged_05

    assert _gt_snapshot(coco_preds) == before
    assert "user:keep" in coco_preds.first().ground_truth.detections[0].tags
    # Sample tags follow label tags.
    assert set(coco_preds.match_tags("suspect:badloc").values("id")) == set(
        coco_preds.filter_labels("ground_truth", fo.ViewField("tags").contains("suspect:badloc")).values("id"))
    # The run is recorded on the dataset, with its parameters.
    info = coco_preds.get_run_info(cleanlab_judge.RUN_KEY)
    assert info.config.badloc_threshold == 0.05


def test_swap_suggestion_points_at_a_confident_other_class(coco_preds):
    run_cleanlab(coco_preds, high_probability_threshold=0.3)
    pred_labels = dict(zip(coco_preds.values("predictions.detections.id", unwind=True),
                           coco_preds.values("predictions.detections.label", unwind=True)))
    rows = zip(coco_preds.values("ground_truth.detections.label", unwind=True),
               coco_preds.values("ground_truth.detections.cleanlab_swap_label", unwind=True),
               coco_preds.values("ground_truth.detections.cleanlab_swap_pred_id", unwind=True))
    n = 0
    for label, sugg, pid in rows:
        if sugg is None:
            continue
        n += 1
        assert sugg != label
        assert pid in pred_labels
    assert n > 0


def _bad_input_dataset(tmp_path):
    paths = write_random_images(tmp_path / "imgs", 5)
    D = fo.Detection
    samples = [
        # 0: fine
        fo.Sample(filepath=paths[0],
                  ground_truth=fo.Detections(detections=[D(label="cat", bounding_box=[.1, .1, .3, .3])]),
                  predictions=fo.Detections(detections=[D(label="cat", bounding_box=[.12, .1, .3, .3], confidence=.9)])),
        # 1: degenerate GT box, partly-outside GT box, unknown GT class, pred without confidence
        fo.Sample(filepath=paths[1],
                  ground_truth=fo.Detections(detections=[
                      D(label="cat", bounding_box=[.2, .2, 0.0, .3]),
                      D(label="dog", bounding_box=[.8, .8, .4, .4]),
                      D(label="zebra", bounding_box=[.1, .1, .2, .2])]),
                  predictions=fo.Detections(detections=[
                      D(label="dog", bounding_box=[.8, .8, .2, .2], confidence=.8),
                      D(label="dog", bounding_box=[.1, .1, .2, .2])])),
        # 2: predictions missing entirely
        fo.Sample(filepath=paths[2],
                  ground_truth=fo.Detections(detections=[D(label="cat", bounding_box=[.1, .1, .3, .3])])),
        # 3: no ground truth at all (cleanlab issue 1234): confident prediction = overlooked candidate
        fo.Sample(filepath=paths[3], ground_truth=fo.Detections(detections=[]),
                  predictions=fo.Detections(detections=[D(label="cat", bounding_box=[.3, .3, .3, .3], confidence=.99)])),
        # 4: image file missing -> no metadata
        fo.Sample(filepath=str(tmp_path / "missing.jpg"),
                  ground_truth=fo.Detections(detections=[D(label="cat", bounding_box=[.1, .1, .3, .3])]),
                  predictions=fo.Detections(detections=[D(label="cat", bounding_box=[.1, .1, .3, .3], confidence=.9)])),
    ]
    ds = fo.Dataset()
    ds.add_samples(samples)
    ds.default_classes = ["cat", "dog"]
    ds.save()
    return ds


def test_bad_input_is_counted_and_never_alters_labels(tmp_path):
    ds = _bad_input_dataset(tmp_path)
    before = _gt_snapshot(ds)
    report = run_cleanlab(ds, high_probability_threshold=0.95)
    sk = report.skipped
    assert sk["sample_missing_metadata"] == 1
    assert sk["sample_missing_predictions"] == 1
    assert sk["gt_degenerate_box"] == 1
    assert sk["gt_unknown_class"] == 1
    assert sk["gt_box_clipped_for_scoring"] == 1
    assert sk["pred_without_probability"] == 1
    assert report.samples_seen == 5 and report.samples_scored == 3
    assert report.info["prob_source"] == cleanlab_judge.PROB_SOURCE_SPREAD
    assert _gt_snapshot(ds) == before

    s = ds.skip(1).first()
    vals = {d.label: d.get_field("cleanlab_badloc") if d.has_field("cleanlab_badloc") else None
            for d in s.ground_truth.detections}
    assert vals["cat"] is None and vals["zebra"] is None and vals["dog"] is not None
    # Skipped samples get None, not a stale score.
    assert ds.skip(2).first().cleanlab_label_quality is None
    # The image without GT gets its confident prediction as an overlooked candidate.
    cands = ds.skip(3).first().ground_truth_overlooked.detections
    assert len(cands) == 1 and cands[0].label == "cat"
    assert 0 <= cands[0].cleanlab_overlooked <= 1
    ds.delete()


def test_predictions_without_any_probability_raise(tmp_path):
    paths = write_random_images(tmp_path / "i", 1)
    ds = fo.Dataset()
    ds.add_sample(fo.Sample(
        filepath=paths[0],
        ground_truth=fo.Detections(detections=[fo.Detection(label="a", bounding_box=[.1, .1, .2, .2])]),
        predictions=fo.Detections(detections=[fo.Detection(label="a", bounding_box=[.1, .1, .2, .2])])))
    with pytest.raises(ValueError, match="confidence"):
        run_cleanlab(ds)
    with pytest.raises(ValueError, match="must be in"):
        run_cleanlab(ds, alpha=2.0)
    with pytest.raises(ValueError, match="does not exist"):
        run_cleanlab(ds, pred_field="nope")
    ds.delete()


def test_logits_attribute_is_softmaxed(synthetic_dataset):
    ds = synthetic_dataset
    ids = ds.values("predictions.detections.id", unwind=True)
    labels = ds.values("predictions.detections.label", unwind=True)
    vals = {i: ([4.0, 0.0] if l == "cat" else [0.0, 4.0]) for i, l in zip(ids, labels)}
    ds.set_label_values("predictions.detections.logits", vals)
    report = run_cleanlab(ds, probs_attr="logits")
    assert report.info["prob_source"] == cleanlab_judge.PROB_SOURCE_LOGITS
    # default: only entries that can change a score (own class, >= min(low, high) threshold)
    inputs = build_inputs(ds, CleanlabParams(probs_attr="logits"), RunReport("x"))
    p = np.concatenate([a[:, 4] for img in inputs.predictions for a in img])
    assert np.allclose(p, 1 / (1 + np.exp(-4)))
    # min_class_prob=0.0: cleanlab's plain input, every class of every box
    inputs = build_inputs(ds, CleanlabParams(probs_attr="logits", min_class_prob=0.0),
                          RunReport("x"))
    p = np.concatenate([a[:, 4] for img in inputs.predictions for a in img])
    assert np.allclose(sorted(set(np.round(p, 6))), sorted({round(float(1 / (1 + np.exp(-4))), 6),
                                                            round(float(1 / (1 + np.exp(4))), 6)}))


def test_probs_in_the_models_class_order_are_mapped_by_name(synthetic_dataset):
    """A detector's probs follow its own class order (recorded in the field's info by
    run_detector); cleanlab maps them onto its class list by name instead of ignoring them
    (wrong length) or, worse, reading them in the wrong order (same length)."""
    from grader import fields as lgf

    ds = synthetic_dataset
    classes = build_inputs(ds, CleanlabParams(), RunReport("x")).classes
    assert sorted(classes) == ["cat", "dog"]
    model_order = ["dog", "zebra", "cat"]  # another order, and a class the dataset lacks
    ids = ds.values("predictions.detections.id", unwind=True)
    labels = ds.values("predictions.detections.label", unwind=True)
    own = {"cat": [0.05, 0.0, 0.9], "dog": [0.8, 0.0, 0.1]}
    ds.set_label_values("predictions.detections.probs", {i: own[l] for i, l in zip(ids, labels)})
    lgf.set_probs_classes(ds, "predictions", model_order)
    rep = RunReport("x")
    inputs = build_inputs(ds, CleanlabParams(min_class_prob=0.0), rep)
    assert inputs.prob_source == cleanlab_judge.PROB_SOURCE_ATTR
    assert "pred_probs_wrong_length_used_confidence" not in rep.skipped
    ci = {c: i for i, c in enumerate(inputs.classes)}
    for img, cls_ids, pcls in zip(inputs.predictions, inputs.pred_ids, inputs.pred_classes):
        for arr_k, arr in enumerate(img):
            for row in arr:
                # each entry of class arr_k carries that class's probability from the model order
                assert row[4] in (own["cat"][2], own["dog"][2]) if arr_k == ci["cat"] else \
                    row[4] in (own["cat"][0], own["dog"][0])
    cat_entries = np.concatenate([img[ci["cat"]][:, 4] for img in inputs.predictions])
    assert 0.9 in cat_entries and 0.8 not in cat_entries
    # without the recorded order, a 3-long vector cannot be read against 2 classes: counted
    fld = ds.get_field("predictions")
    fld.info = {}
    fld.save()
    rep = RunReport("x")
    build_inputs(ds, CleanlabParams(), rep)
    assert rep.skipped["pred_probs_wrong_length_used_confidence"] == len(ids)


def test_operator_runs_from_sdk(synthetic_dataset):
    ds = synthetic_dataset
    result = foo.execute_operator(
        "@label-grader/label-grader/run_cleanlab",
        ctx={"view": ds.view(), "params": {"target": "DATASET", "gt_field": "ground_truth",
                                           "pred_field": "predictions",
                                           "high_probability_threshold": 0.5}},
    )
    out = result.result
    assert out["samples_scored"] == 6 and out["labels_scored"] == 18
    assert ds.count("ground_truth.detections.cleanlab_badloc") == 18
    assert ds.has_sample_field("ground_truth_overlooked")


def test_operator_delegated_execution(synthetic_dataset):
    """Queued as a delegated operation, then run by FiftyOne's own delegated executor."""
    from fiftyone.operators.delegated import DelegatedOperationService

    ds = synthetic_dataset
    ds.persistent = True  # delegated runs reload the dataset by name
    uri = "@label-grader/label-grader/run_cleanlab"
    foo.execute_operator(uri, ctx={"view": ds.view(), "params": {
        "target": "DATASET", "gt_field": "ground_truth", "pred_field": "predictions"}},
        request_delegation=True)
    assert ds.count("ground_truth.detections.cleanlab_badloc") == 0  # only queued so far
    svc = DelegatedOperationService()
    svc.execute_queued_operations(operator=uri, dataset_name=ds.name)
    ops = svc.list_operations(operator=uri, dataset_name=ds.name)
    assert ops and all(str(o.run_state).lower().endswith("completed") for o in ops), \
        [(o.run_state, getattr(o, "run_error", None)) for o in ops]
    assert ds.count("ground_truth.detections.cleanlab_badloc") == 18


def test_support_is_max_iou_with_confident_predictions(coco_preds):
    """cleanlab_support = max IoU (pycocotools) of a GT box with any prediction above the low threshold."""
    from grader.boxes import iou_matrix, rel_xywh_to_abs_xyxy

    run_cleanlab(coco_preds, low_probability_threshold=0.3)
    n_zero = n = 0
    for s in coco_preds.select_fields(["ground_truth", "predictions", "metadata"]):
        w, h = s.metadata.width, s.metadata.height
        preds = [p for p in s.predictions.detections if max(p.probs) > 0.3]
        pb = rel_xywh_to_abs_xyxy([p.bounding_box for p in preds], w, h)
        for d in (s.ground_truth.detections if s.ground_truth else []):
            if d.get_field("cleanlab_support") is None:
                continue
            gb = rel_xywh_to_abs_xyxy([d.bounding_box], w, h)
            expected = float(iou_matrix(gb, pb).max()) if len(preds) else 0.0
            assert d.cleanlab_support == pytest.approx(expected, abs=1e-4)
            n += 1
            n_zero += d.cleanlab_support == 0
    assert n == 939 and 0 < n_zero < n


def _scores_by_label(ds):
    out = {}
    for a in ("cleanlab_badloc", "cleanlab_swap", "cleanlab_support", "cleanlab_swap_pred_id",
              "cleanlab_badloc_pred_id"):
        out[a] = _written(ds, a)
    out["quality"] = dict(zip(*ds.values(["id", "cleanlab_label_quality"])))
    out["issue"] = dict(zip(*ds.values(["id", "cleanlab_issue"])))
    out["tags"] = dict(zip(ds.values("ground_truth.detections.id", unwind=True),
                           map(sorted, ds.values("ground_truth.detections.tags", unwind=True))))
    out["overlooked"] = sorted(ds.values(
        "ground_truth_overlooked.detections.cleanlab_overlooked", unwind=True))
    return out


def test_streamed_chunks_equal_one_pass(coco_preds, monkeypatch):
    """Scores in chunks of 7 samples (dataset-wide stats shared) equal one in-memory pass."""
    from grader.judges.cleanlab import run as cleanlab_run

    run_cleanlab(coco_preds)
    one = _scores_by_label(coco_preds)
    # where prepare() reads it: no inputs kept between the passes, the second pass re-reads
    monkeypatch.setattr(cleanlab_run, "MAX_CACHED_SAMPLES", 0)
    report = run_cleanlab(coco_preds, chunk_size=7)
    assert report.samples_scored == 128 and report.labels_scored == 939
    assert _scores_by_label(coco_preds) == one


def test_confidence_only_boxes_are_not_spread_and_scores_stay_exact(tmp_path):
    """A confidence-only box enters only its class; cleanlab's box scores on the fully spread
    K-class input (min_class_prob=0.0) are identical, and no Pool is ever forked."""
    import multiprocessing

    paths = write_random_images(tmp_path / "imgs", 12, size=(120, 160))
    rng = np.random.default_rng(3)
    classes = [f"c{i}" for i in range(6)]
    ds = fo.Dataset()
    samples = []
    for p in paths:
        gt, pr = [], []
        for _ in range(4):
            x, y = rng.uniform(0.05, 0.5, size=2)
            w, h = rng.uniform(0.1, 0.4, size=2)
            c = str(rng.choice(classes))
            gt.append(fo.Detection(label=c, bounding_box=[x, y, w, h]))
            c2 = c if rng.uniform() < 0.7 else str(rng.choice(classes))
            pr.append(fo.Detection(label=c2, bounding_box=[x + rng.normal(0, 0.02), y, w, h],
                                   confidence=float(rng.choice([0.05, 0.6, 0.97, 0.99]))))
        samples.append(fo.Sample(filepath=p, ground_truth=fo.Detections(detections=gt),
                                 predictions=fo.Detections(detections=pr)))
    ds.add_samples(samples)
    ds.compute_metadata()
    params = dict(classes=classes, badloc_threshold=0.5, swap_threshold=0.5,
                  overlooked_threshold=0.5)
    lean = build_inputs(ds, CleanlabParams(**params), RunReport("x"))
    full = build_inputs(ds, CleanlabParams(min_class_prob=0.0, **params), RunReport("x"))
    assert sum(len(a) for img in lean.predictions for a in img) == 48       # one entry per box
    assert sum(len(a) for img in full.predictions for a in img) == 48 * 6   # spread to all K
    kw = dict(labels=full.labels, predictions=full.predictions)
    for fn in (cl_rank.compute_badloc_box_scores, cl_rank.compute_swap_box_scores):
        a, b = fn(**kw), fn(labels=lean.labels, predictions=lean.predictions)
        assert all(np.array_equal(x, y, equal_nan=True) for x, y in zip(a, b))
    assert np.array_equal(cl_rank.get_label_quality_scores(lean.labels, lean.predictions),
                          cl_rank.get_label_quality_scores(full.labels, full.predictions))

    def no_pool(*a, **k):
        raise AssertionError("the judge must not fork a Pool (it runs inside the App server)")

    orig, orig_cl = multiprocessing.Pool, cl_filter.Pool
    multiprocessing.Pool = cl_filter.Pool = no_pool
    try:
        report = run_cleanlab(ds, **{k: v for k, v in params.items() if k != "classes"},
                              classes=classes)
        run_cleanlab(ds, classes=classes, overwrite=True)   # default rule: per-class AP
    finally:
        multiprocessing.Pool, cl_filter.Pool = orig, orig_cl
    assert report.samples_scored == 12
    got = _written(ds, "cleanlab_badloc")
    exp = cl_rank.compute_badloc_box_scores(**kw)
    for i, ids in enumerate(full.gt_ids):
        for r, lid in enumerate(ids):
            assert got[lid] == float(exp[i][r])
    ds.delete()


def test_output_field_guards_and_no_side_effects(synthetic_dataset):
    ds = synthetic_dataset
    ds.default_classes = []
    ds.save()
    before = _gt_snapshot(ds)
    ds.clone_sample_field("predictions", "other_dets")
    with pytest.raises(ValueError, match="not written by the cleanlab judge"):
        run_cleanlab(ds, overlooked_field="other_dets")
    ds.add_sample_field("a_string", fo.StringField)
    with pytest.raises(ValueError, match="not a Detections field"):
        run_cleanlab(ds, overlooked_field="a_string")
    assert ds.count("other_dets.detections") == 18          # untouched
    assert ds.count("ground_truth.detections.cleanlab_badloc") == 0   # nothing written
    run_cleanlab(ds)
    assert ds.classes == {}                                  # no dataset.classes side effect
    assert ds.get_run_info(cleanlab_judge.RUN_KEY).config.report["info"]["class_list"] == ["cat", "dog"]
    assert _gt_snapshot(ds) == before


def test_nothing_scorable_raises_before_any_write(synthetic_dataset):
    ds = synthetic_dataset
    run_cleanlab(ds)
    n = ds.count("ground_truth.detections.cleanlab_badloc")
    q = ds.values("cleanlab_label_quality")
    ds.set_values("predictions", [None] * len(ds))
    with pytest.raises(ValueError, match="Nothing to score"):
        run_cleanlab(ds)
    assert ds.count("ground_truth.detections.cleanlab_badloc") == n   # earlier scores kept
    assert ds.values("cleanlab_label_quality") == q
