"""Consistency judge on real coco128 labels: duplicates and geometry outliers rank first."""
from __future__ import annotations

import numpy as np
import pytest

from fiftyone import ViewField as F

from grader import evaluate as ev
from grader.fields import write_label_attr
from grader.judges.consistency import (TAG_DUPLICATE, duplicate_scores, outlier_scores,
                                       run_consistency)
from grader.noise import TRUTH_ATTR, inject_errors


def _column(ds, field, attr):
    lids, truth, vals = ds.values([f"{field}.detections.id", f"{field}.detections.{TRUTH_ATTR}",
                                   f"{field}.detections.{attr}"], unwind=True)
    return lids, np.array(truth, dtype=object), np.array([np.nan if v is None else v for v in vals])


def test_duplicates_rank_first_on_coco128(coco128):
    ds = coco128
    inject_errors(ds, "ground_truth", "noisy", rates={"duplicate": 0.05}, seed=0)
    noisy_before = [[(d.id, d.label, d.bounding_box) for d in (s.detections if s else [])]
                    for s in ds.values("noisy")]
    rep = run_consistency(ds, "noisy")
    # Judges never modify labels or boxes.
    assert [[(d.id, d.label, d.bounding_box) for d in (s.detections if s else [])]
            for s in ds.values("noisy")] == noisy_before
    _, truth, dup = _column(ds, "noisy", "consistency_duplicate")
    y = truth == "duplicate"
    assert y.sum() == 46 and rep.labels_scored == len(y)
    assert ev.auroc(y, dup) >= 0.95
    # Most of the top 46 are the injected duplicates (sources and natural overlaps share the rest).
    assert ev.precision_at_k(y, dup, int(y.sum())) >= 0.45
    _, _, same = _column(ds, "noisy", "consistency_dup_iou")
    _, _, anyc = _column(ds, "noisy", "consistency_dup_iou_any")
    assert np.all(anyc >= same - 1e-12) and np.all((same >= 0) & (same <= 1))
    assert np.all(same[y] >= 0.75 - 1e-6)
    assert ds.count_label_tags("noisy").get(TAG_DUPLICATE, 0) >= 40


def test_weaker_evidence_ranks_first_in_a_pair(coco128):
    """With another judge's support score, the duplicate (not its source) takes the pair's IoU."""
    ds = coco128
    inject_errors(ds, "ground_truth", "noisy", rates={"duplicate": 0.05}, seed=1)
    sids, lids, truth, src = ds.values(["id", "noisy.detections.id",
                                        f"noisy.detections.{TRUTH_ATTR}",
                                        "noisy.detections.injected_source"])
    # As cleanlab_support would: the detector covers the real object better than the copy.
    sources = {s for row in src for s in (row or []) if s}
    support = {(sid, l): (0.2 if t == "duplicate" else 0.9 if l in sources else 0.6)
               for sid, ls_, ts in zip(sids, lids, truth) for l, t in zip(ls_ or [], ts or [])}
    write_label_attr(ds, "noisy", "cleanlab_support", support)
    rep = run_consistency(ds, "noisy")
    assert rep.info["evidence_for_pairs"] is True
    ids, t, dup = _column(ds, "noisy", "consistency_duplicate")
    by_id = dict(zip(ids, dup))
    for row_l, row_t, row_s in zip(lids, truth, src):
        for l, tt, s in zip(row_l or [], row_t or [], row_s or []):
            if tt == "duplicate":
                assert by_id[l] > by_id[s]        # the copy outranks its (better-supported) source
    y = t == "duplicate"
    assert ev.auroc(y, dup) >= 0.97
    assert ev.precision_at_k(y, dup, int(y.sum())) >= 0.8


def test_geometry_outliers_rank_first_on_coco128(coco128):
    """Real person boxes made absurdly thin/flat stand out within their class."""
    import fiftyone as fo

    ds = coco128
    rng = np.random.default_rng(0)
    vals, changed = {}, set()
    for sid, dets in zip(ds.values("id"), ds.values("ground_truth")):
        out = []
        for d in (dets.detections if dets else []):
            d = fo.Detection(label=d.label, bounding_box=list(d.bounding_box))
            if d.label == "person" and rng.random() < 0.04:
                x, y, w, h = d.bounding_box
                d.bounding_box = ([x, y, 0.004, min(h, 0.5)] if rng.random() < 0.5
                                  else [x, y, min(w, 0.6), 0.003])
                changed.add(d.id)
            out.append(d)
        vals[sid] = fo.Detections(detections=out)
    ds.set_values("geo", vals, key_field="id")
    assert len(changed) >= 5
    run_consistency(ds, "geo", min_class_size=10)
    lids, scores = ds.values(["geo.detections.id", "geo.detections.consistency_outlier"], unwind=True)
    y = np.array([l in changed for l in lids])
    s = np.array([np.nan if v is None else v for v in scores])
    person = np.array(ds.values("geo.detections.label", unwind=True)) == "person"
    assert np.isfinite(s[person]).all()
    assert ev.auroc(y[person], s[person]) >= 0.95
    # Within the class the altered boxes come first.
    sp, yp = s[person], y[person]
    top = np.argsort(-sp)[:len(changed)]
    assert yp[top].mean() >= 0.8
    # Classes below min_class_size are unscored, not scored on noise.
    small = [c for c in set(ds.values("geo.detections.label", unwind=True))
             if ds.count_values("geo.detections.label")[c] < 10]
    labels = np.array(ds.values("geo.detections.label", unwind=True))
    assert small and np.isnan(s[np.isin(labels, small)]).all()


def test_core_functions_and_bad_params(coco128):
    b = np.array([[0.1, 0.1, 0.2, 0.2], [0.11, 0.1, 0.2, 0.2], [0.6, 0.6, 0.1, 0.1]])
    same, anyc, dup = duplicate_scores(b, ["a", "a", "b"])
    assert same[2] == 0 and same[0] == same[1] > 0.8 and anyc[2] == 0
    assert dup[1] > dup[0]            # no evidence: the later box of the pair first
    # The batched numpy IoU agrees with pycocotools (grader.boxes.iou_matrix).
    from grader.boxes import iou_matrix

    rng = np.random.default_rng(3)
    rb = np.c_[rng.uniform(0, 0.5, (12, 2)), rng.uniform(0.05, 0.5, (12, 2))]
    xyxy = np.c_[rb[:, :2], rb[:, :2] + rb[:, 2:]]
    ref = iou_matrix(xyxy, xyxy)
    np.fill_diagonal(ref, 0)
    _, anyc, _ = duplicate_scores(rb, ["a"] * 12)
    assert np.allclose(anyc, ref.max(axis=1))
    same, _, dup = duplicate_scores(b, ["a", "a", "b"], weakness=np.array([0.9, 0.1, np.nan]))
    assert dup[0] == pytest.approx(same[0]) and dup[1] == pytest.approx(same[1] / 2)
    # A small evidence gap splits the pair softly (both near 3/4 of the IoU, weaker first) ...
    close = np.array([0.51, 0.50, np.nan])
    _, _, soft = duplicate_scores(b, ["a", "a", "b"], weakness=close)
    assert 0.5 * same[0] < soft[1] < 0.75 * same[0] < soft[0] < same[0]
    # ... and margin=0 is the hard split: the weaker box keeps the IoU, its partner half.
    _, _, hard = duplicate_scores(b, ["a", "a", "b"], weakness=close, margin=0)
    assert hard[0] == pytest.approx(same[0]) and hard[1] == pytest.approx(same[1] / 2)
    feats = np.r_[np.random.default_rng(0).normal(0, 1, (30, 2)), [[8.0, 0.0]]]
    o = outlier_scores(feats, np.array(["x"] * 31), min_class_size=10)
    assert np.argmax(o) == 30
    for kw in ({"min_class_size": 1}, {"duplicate_tag_iou": 0}, {"tag_fraction": float("nan")}):
        with pytest.raises(ValueError):
            run_consistency(coco128, "ground_truth", **kw)
    assert "ground_truth.detections.consistency_duplicate" not in coco128.get_field_schema(flat=True)
    with pytest.raises(ValueError, match="does not exist"):
        run_consistency(coco128, "nope")


def test_grade_runs_consistency_without_a_detector(coco128):
    from grader.pipeline import grade

    inject_errors(coco128, "ground_truth", "noisy", rates={"duplicate": 0.05}, seed=2)
    out = grade(coco128, gt_field="noisy", detector=None)
    assert "consistency" in out.reports and "ensemble" in out.reports
    _, truth, ens = _column(coco128, "noisy", "ensemble_duplicate")
    assert ev.auroc(truth == "duplicate", ens) >= 0.9


def test_self_supervised_stacker_on_coco128(coco128):
    """learner="self": fitted on errors injected into a temporary copy; the user's dataset
    only gets the ensemble fields, and the copy is gone afterwards."""
    import fiftyone as fo

    from grader.ensemble import compute_ensemble

    ds = coco128.limit(64)   # half of coco128 keeps the test fast
    inject_errors(ds, "ground_truth", "noisy", rates={"duplicate": 0.06, "swap": 0.06}, seed=4)
    run_consistency(ds, "noisy")
    n_datasets = len(fo.list_datasets())
    before = ds.values("noisy.detections.label", unwind=True)
    rep = compute_ensemble(ds, "noisy", learner="self", seed=1)
    chosen = rep.info["learner"]["duplicate"]
    # The best candidate on the copy's injected errors (a fitted model or the best score).
    assert chosen["chosen"] in ("self:logistic", "self:hgb", "single", "default_model")
    assert chosen["cv_auroc"][chosen["chosen"]] > 0.9
    # its probabilities are scaled on the copy: not re-read at a share the shipped model's
    # scales assume (compute_ensemble's adapt_prevalence is for the shipped model only)
    assert rep.info["selection"]
    assert not any("prevalence" in rep.info["learner"][i] for i in rep.info["selection"])
    assert len(fo.list_datasets()) == n_datasets
    assert ds.values("noisy.detections.label", unwind=True) == before
    assert "lg_selfsup" not in ds.get_field_schema()
    _, truth, ens = _column(ds, "noisy", "ensemble_duplicate")
    assert ev.auroc(truth == "duplicate", ens) >= 0.9


def test_box_fit_evidence_decides_a_pair_over_unrelated_judges():
    """Two near-identical boxes where only the box-fit scores (the registry's badloc scores) say
    which fits worse, and class scores point the other way: with box-fit evidence the
    worse-fitting box takes the pair's IoU; with every judge's mean the class scores win."""
    import fiftyone as fo

    from grader.judges.consistency import evidence_specs

    ds = fo.Dataset()
    rng = np.random.default_rng(0)
    samples, worse = [], []
    for i in range(8):
        x, y = rng.uniform(0.1, 0.5, 2)
        good = fo.Detection(label="cat", bounding_box=[x, y, 0.3, 0.3], zoom_iou=0.95,
                            boxgrader_p_bad=0.05, cleanlab_swap=0.1, zoom_other_prob=0.9,
                            boxgrader_p_other_class=0.9)
        bad = fo.Detection(label="cat", bounding_box=[x + 0.01, y + 0.01, 0.3, 0.3],
                           zoom_iou=0.6, boxgrader_p_bad=0.7, cleanlab_swap=0.99,
                           zoom_other_prob=0.02, boxgrader_p_other_class=0.02)
        other = fo.Detection(label="dog", bounding_box=[0.8, 0.8, 0.1, 0.1], zoom_iou=0.8,
                             boxgrader_p_bad=0.3, cleanlab_swap=0.5, zoom_other_prob=0.4,
                             boxgrader_p_other_class=0.4)
        dets = [good, bad, other] if i % 2 else [bad, good, other]   # list order says nothing
        worse.append(bad.id)
        samples.append(fo.Sample(filepath=f"/nonexistent/{i}.jpg",
                                 gt=fo.Detections(detections=dets)))
    ds.add_samples(samples)
    try:
        fit = {s.attr for s in evidence_specs(ds, "gt", "badloc")}
        assert fit == {"zoom_iou", "boxgrader_p_bad"}
        for rule, worse_first in (("badloc", True), ("all", False)):
            rep = run_consistency(ds, "gt", evidence=rule)
            assert rep.info["evidence_for_pairs"] is True
            ids, dup = ds.values(["gt.detections.id", "gt.detections.consistency_duplicate"],
                                 unwind=True)
            by_id = dict(zip(ids, dup))
            for row in ds.values("gt.detections.id"):
                a, b = row[:2]
                w, g = (a, b) if a in worse else (b, a)
                assert (by_id[w] > by_id[g]) is worse_first, rule
                assert max(by_id[w], by_id[g]) > 0.8
        # evidence_margin reaches the pair split: a wide margin leaves both near 3/4 of the IoU.
        run_consistency(ds, "gt", evidence="badloc", evidence_margin=10.0)
        by_id = dict(zip(*ds.values(["gt.detections.id", "gt.detections.consistency_duplicate"],
                                    unwind=True)))
        iou = dict(zip(*ds.values(["gt.detections.id", "gt.detections.consistency_dup_iou"],
                                  unwind=True)))
        for row in ds.values("gt.detections.id"):
            w, g = (row[0], row[1]) if row[0] in worse else (row[1], row[0])
            assert 0.75 * iou[w] < by_id[w] < 0.8 * iou[w] and 0.7 * iou[g] < by_id[g] < 0.75 * iou[g]
        with pytest.raises(ValueError, match="evidence"):
            run_consistency(ds, "gt", evidence="nope")
        with pytest.raises(ValueError, match="evidence_margin"):
            run_consistency(ds, "gt", evidence_margin=-1)
    finally:
        ds.delete()


def test_operator_passes_the_pair_evidence_options(coco128):
    import fiftyone.operators as foo

    op = "@label-grader/label-grader/run_consistency"
    inject_errors(coco128, "ground_truth", "noisy", rates={"duplicate": 0.05}, seed=2)
    ids, lids = coco128.values(["id", "noisy.detections.id"])
    from grader.fields import write_label_attr

    write_label_attr(coco128, "noisy", "cleanlab_badloc",
                     {(s, l): 0.5 for s, ls in zip(ids, lids) for l in ls or []})
    res = foo.execute_operator(op, ctx={"view": coco128.view(), "params": {
        "target": "DATASET", "gt_field": "noisy", "evidence": "badloc",
        "evidence_margin": 0.0}}).result
    assert res["labels_scored"] == coco128.count("noisy.detections")
    assert res["info"]["evidence_scores"] == ["cleanlab_badloc"]
    with pytest.raises(Exception, match="evidence_margin"):
        foo.execute_operator(op, ctx={"view": coco128.view(), "params": {
            "target": "DATASET", "gt_field": "noisy", "evidence_margin": -1.0}})


def test_cross_class_duplicates_discounted_by_the_datasets_own_overlaps():
    """consistency_xdup: a near-identical pair of two classes scores its IoU, unless the two
    classes overlap in other images of the dataset (a person on a chair); the pair's own image
    never vouches for itself."""
    from grader.judges.consistency import consistency_arrays

    twin = np.array([[0.1, 0.1, 0.2, 0.2], [0.11, 0.1, 0.2, 0.2]])       # IoU 0.905
    on = np.array([[0.1, 0.1, 0.3, 0.5], [0.1, 0.3, 0.3, 0.3]])          # chair inside person
    apart = np.array([[0.1, 0.1, 0.2, 0.2], [0.6, 0.6, 0.2, 0.2]])
    boxes = [twin, twin, on, on, on, apart]
    labels = [["car", "truck"], ["person", "chair"], ["person", "chair"], ["person", "chair"],
              ["person", "chair"], ["car", "truck"]]
    x = consistency_arrays(boxes, labels, [100] * 6, [100] * 6)["consistency_xdup"]
    iou = 0.19 * 0.2 / (2 * 0.04 - 0.19 * 0.2)
    # car/truck never overlap elsewhere (image 5: apart) -> the full IoU, both boxes (no evidence)
    assert x[0] == pytest.approx([iou, iou])
    # person/chair overlap in 3 other images: legit = 3 / (4 - 1 + 1) -> IoU / 4
    assert x[1] == pytest.approx([iou / 4, iou / 4])
    assert np.all(x[5] == 0)
    # Only one image with the pair: its own overlap does not count (not legitimate).
    one = consistency_arrays([twin], [["bench", "chair"]], [100], [100])["consistency_xdup"]
    assert one[0] == pytest.approx([iou, iou])
    # Same-class scores are untouched by the new score.
    same = consistency_arrays(boxes, labels, [100] * 6, [100] * 6)
    assert np.all(same["consistency_dup_iou"][0] == 0) and np.all(same["consistency_duplicate"][0] == 0)
    # Class evidence: the box whose class fits worse keeps the score, its partner drops to half.
    w = [np.array([0.9, 0.1])] + [np.full(2, np.nan)] * 5
    ev_ = consistency_arrays(boxes, labels, [100] * 6, [100] * 6, xdup_weakness=w)["consistency_xdup"]
    assert ev_[0] == pytest.approx([iou, iou / 2], rel=1e-3)
    close = [np.array([0.50, 0.51])] + [np.full(2, np.nan)] * 5
    ev_ = consistency_arrays(boxes, labels, [100] * 6, [100] * 6, xdup_weakness=close)["consistency_xdup"]
    assert iou / 2 < ev_[0][0] < iou and ev_[0][1] == pytest.approx(iou)


def test_a_box_lying_whole_inside_another_is_no_cross_class_duplicate():
    """Two boxes drawn around one object disagree on every side, so neither holds the other
    unless they are nearly the same box; a clearly smaller box lying whole inside a box of
    another class (a cat in a person's lap, a banana on a sandwich) keeps XDUP_NESTED_FACTOR
    of its pair's score, an overlap at the same IoU that crosses the larger box's edges and a
    near-identical copy clipped inside its source keep it all."""
    from grader.judges.consistency import (XDUP_NESTED_FACTOR, XDUP_NESTED_IOA,
                                           XDUP_NESTED_MAX_IOU, XDUP_TAG_SCORE,
                                           consistency_arrays, legit_partner_classes)

    assert 0 < XDUP_NESTED_FACTOR < 1 and XDUP_NESTED_IOA > 0.9
    nested = np.array([[0.1, 0.1, 0.4, 0.4], [0.15, 0.15, 0.3, 0.3]])     # IoU 0.5625, IoA 1
    crossing = np.array([[0.1, 0.1, 0.4, 0.4], [0.05, 0.1, 0.3, 0.4]])    # IoU 0.556, IoA 0.83
    clipped = np.array([[0.0, 0.1, 0.4, 0.4], [0.0, 0.1, 0.38, 0.4]])     # IoU 0.95, IoA 1
    x = consistency_arrays([nested, crossing, clipped],
                           [["person", "cat"], ["bus", "truck"], ["car", "truck"]],
                           [100] * 3, [100] * 3)["consistency_xdup"]
    assert x[0] == pytest.approx([0.5625 * XDUP_NESTED_FACTOR] * 2)
    assert x[1] == pytest.approx([0.1 / 0.18] * 2) and x[1][0] >= XDUP_TAG_SCORE
    assert 0.95 > XDUP_NESTED_MAX_IOU and x[2] == pytest.approx([0.95, 0.95])
    # The same for two boxes of one class (a netbook on a stack of laptops): the duplicate
    # score takes the discount, the raw IoU column does not.
    same = consistency_arrays([nested, crossing, clipped], [["laptop"] * 2] * 3,
                              [100] * 3, [100] * 3)
    assert same["consistency_dup_iou"][0] == pytest.approx([0.5625] * 2)
    d = same["consistency_duplicate"]
    assert max(d[0]) == pytest.approx(0.5625 * XDUP_NESTED_FACTOR, abs=2e-3)
    assert max(d[1]) == pytest.approx(0.1 / 0.18, abs=2e-3)
    assert max(d[2]) == pytest.approx(0.95, abs=2e-3)
    # Nesting is no legitimacy: a pair no other image holds still explains nothing.
    assert legit_partner_classes([nested], [["person", "cat"]]) == [set(), set()]


def test_legit_partner_classes_name_the_datasets_own_on_in_pairs():
    """A box lists the classes of the other-class boxes on or in it where the dataset holds
    that pair legitimately (person/chair overlapping in other images); a never-seen pair
    (car/truck twins) is a likely duplicate: not listed, and its boxes list nothing at all."""
    from grader.judges.consistency import legit_partner_classes

    twin = np.array([[0.1, 0.1, 0.2, 0.2], [0.11, 0.1, 0.2, 0.2]])       # IoU 0.905
    on = np.array([[0.1, 0.1, 0.3, 0.5], [0.1, 0.3, 0.3, 0.3]])          # chair inside person
    apart = np.array([[0.1, 0.1, 0.2, 0.2], [0.6, 0.6, 0.2, 0.2]])
    # image 0: a car/truck twin with a person box lying in the car box as well
    first = np.vstack([twin, [[0.12, 0.12, 0.1, 0.1]]])
    boxes = [first, on, on, on, on, apart]
    labels = [["car", "truck", "person"]] + [["person", "chair"]] * 4 + [["car", "truck"]]
    got = legit_partner_classes(boxes, labels)
    assert len(got) == 3 + 2 * 5
    assert got[0] == set() and got[1] == set()     # the twins: a likely duplicate pair
    assert got[3] == {"chair"} and got[4] == {"person"}    # person on chair, both ways
    assert all(g == set() for g in got[-2:])       # apart: no overlap
    # person in car / truck: no other image holds either pair on/in, so though their IoU
    # (0.25) is far from a duplicate's, nothing says they are legitimate (a sink box on the
    # rim of a bowl-shaped basin is one object boxed twice)
    assert got[2] == set()
    got = legit_partner_classes(boxes + [first], labels + [["car", "truck", "person"]])
    assert got[2] == {"car", "truck"} == got[-1]     # ... until another image holds them
    # Only one image with person/chair (IoU 0.6): its own overlap is no evidence of legitimacy.
    assert legit_partner_classes([on], [["person", "chair"]]) == [set(), set()]
    assert legit_partner_classes([], []) == []


def test_cross_class_duplicates_on_coco128(coco128):
    """coco128's real cross-class duplicates (bench/chair, truck/car twice, backpack/handbag,
    checked by eye: bench/data/real_errors_coco128.json) reach the tag threshold; the
    legitimate pairs at IoU >= 0.6 (pizza on a table, a woman in an armchair, a cat on a couch)
    do not. Evidence-free: the pair's top score does not depend on it."""
    from grader.judges.consistency import XDUP_TAG_SCORE

    rep = run_consistency(coco128, "ground_truth")
    assert rep.info["xdup_evidence_scores"] == []
    fp, labels, boxes, x, tags = coco128.values(
        ["filepath", "ground_truth.detections.label", "ground_truth.detections.bounding_box",
         "ground_truth.detections.consistency_xdup", "ground_truth.detections.tags"])
    got = {}
    for f, ls, bs, xs, ts in zip(fp, labels, boxes, x, tags):
        for a in range(len(ls or [])):
            for b in range(len(ls)):
                if ls[a] != ls[b] and _iou_rel(bs[a], bs[b]) >= 0.6:
                    got[(f.rsplit("/", 1)[-1][6:12], ls[a], ls[b])] = (
                        max(xs[a], xs[b]), TAG_DUPLICATE in (ts[a] or []) + (ts[b] or []))
    for key in (("000623", "bench", "chair"), ("000071", "truck", "car"),
                ("000540", "car", "truck"), ("000257", "backpack", "handbag")):
        assert got[key][0] >= XDUP_TAG_SCORE and got[key][1], key
    # 443: a man holding a cat on a couch; the cat box lies whole inside his (IoU 0.58) and
    # raised him to 0.58 before nested pairs were discounted
    for key in (("000450", "pizza", "dining table"), ("000536", "chair", "person"),
                ("000599", "cat", "couch"), ("000443", "person", "couch")):
        assert got[key][0] < XDUP_TAG_SCORE, key
    with pytest.raises(ValueError, match="xdup_tag_score"):
        run_consistency(coco128, "ground_truth", xdup_tag_score=0)


def test_cross_class_pair_split_by_class_evidence():
    """With a registered swap score present, the box whose class the evidence doubts takes the
    cross-class pair's score, whatever the list order; box-fit scores are not class evidence."""
    import fiftyone as fo

    ds = fo.Dataset()
    wrong = []
    # A different class pair per image: a pair boxed together in every image would be taken
    # for a legitimate overlap of the dataset.
    pairs = [("car", "truck"), ("bus", "truck"), ("cup", "bowl"), ("bench", "chair"),
             ("backpack", "handbag"), ("sandwich", "hot dog")]
    for i, (ca, cb) in enumerate(pairs):
        x = 0.1 + 0.05 * i
        good = fo.Detection(label=ca, bounding_box=[x, 0.2, 0.3, 0.2], cleanlab_swap=0.95,
                            zoom_iou=0.2)
        bad = fo.Detection(label=cb, bounding_box=[x + 0.01, 0.2, 0.3, 0.2],
                           cleanlab_swap=0.05, zoom_iou=0.9)
        wrong.append(bad.id)
        dets = [good, bad] if i % 2 else [bad, good]
        ds.add_sample(fo.Sample(filepath=f"/nonexistent/{i}.jpg", gt=fo.Detections(detections=dets)))
    try:
        rep = run_consistency(ds, "gt")
        assert rep.info["xdup_evidence_scores"] == ["cleanlab_swap"]
        for row_ids, row_x in zip(*ds.values(["gt.detections.id", "gt.detections.consistency_xdup"])):
            by = dict(zip(row_ids, row_x))
            w = next(i for i in row_ids if i in wrong)
            g = next(i for i in row_ids if i not in wrong)
            assert by[w] > 0.85 and by[g] == pytest.approx(by[w] / 2, rel=0.02)
    finally:
        ds.delete()


def _iou_rel(a, b):
    iw = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def test_size_reliability_pulls_tiny_boxes_to_the_median():
    """grader.visibility: tiny boxes (<= 8^2 px) get no weight, >= 32^2 px full weight, unknown
    size full weight; shrinking keeps large boxes' scores and moves tiny ones to the median."""
    from grader.visibility import pixel_areas, shrink_unreliable, size_reliability

    area = pixel_areas(np.array([[0, 0, 0.01, 0.01], [0, 0, 0.5, 0.5], [0, 0, 0.05, 0.05],
                                 [0, 0, 0.1, 0.1]]), [640, 640, 640, None], [480, 480, 480, 480])
    assert area[0] == pytest.approx(6.4 * 4.8) and np.isnan(area[3])
    r = size_reliability(area)
    assert r[0] == 0 and r[1] == 1 and 0 < r[2] < 1 and r[3] == 1
    s = shrink_unreliable(np.array([0.99, 0.2, 0.8, 0.5]), r)
    assert s[0] == pytest.approx(np.median([0.99, 0.2, 0.8, 0.5])) and s[1] == 0.2 and s[3] == 0.5
    with pytest.raises(ValueError):
        size_reliability(area, full=10, floor=20)
    with pytest.raises(ValueError):
        shrink_unreliable(np.zeros(3), np.zeros(4))


def test_cross_class_cooccurrence_without_a_dense_matrix(monkeypatch):
    """A large vocabulary counts only the class pairs it needs; the scores are the same."""
    from grader.judges import consistency as c

    rng = np.random.default_rng(5)
    boxes = [np.c_[rng.uniform(0, 0.6, (k, 2)), rng.uniform(0.1, 0.4, (k, 2))]
             for k in rng.integers(0, 9, 300)]
    labels = [[f"c{v}" for v in rng.integers(0, 25, len(b))] for b in boxes]
    dense = c.consistency_arrays(boxes, labels, [640] * 300, [480] * 300)["consistency_xdup"]
    monkeypatch.setattr(c, "_DENSE_COOC_CLASSES", 0)
    sparse = c.consistency_arrays(boxes, labels, [640] * 300, [480] * 300)["consistency_xdup"]
    assert np.concatenate(dense).max() > 0.3
    assert np.allclose(np.concatenate(dense), np.concatenate(sparse))


def test_queue_refit_after_reviews_rescores_duplicate_partners(coco128):
    """After the curator deletes duplicates, the queue's re-ranking (refit_if_due, as the review
    panel calls it) re-runs the labels-only judge with its last parameters: the boxes the
    deleted copies were made from lose their pair score and tag (before, they kept both until
    the next grade() and sat high in the queue as duplicates of nothing)."""
    from grader.ensemble import compute_ensemble, refit_if_due
    from grader.review import fixes

    ds = coco128
    inject_errors(ds, "ground_truth", "noisy", rates={"duplicate": 0.05}, seed=0)
    run_consistency(ds, "noisy", evidence_margin=0.0)
    compute_ensemble(ds, "noisy")
    sids, lids, truth, src = ds.values(["id", "noisy.detections.id",
                                        f"noisy.detections.{TRUTH_ATTR}",
                                        "noisy.detections.injected_source"])
    copies = [(s, l, so) for s, ls_, ts, ss in zip(sids, lids, truth, src)
              for l, t, so in zip(ls_ or [], ts or [], ss or []) if t == "duplicate"]
    deleted, kept = copies[:12], copies[12:]
    ids, _, dup = _column(ds, "noisy", "consistency_duplicate")
    before = dict(zip(ids, dup))
    gone = [so for _, _, so in deleted]
    assert np.mean([before[so] > 0.3 for so in gone]) >= 0.5
    for s, l, _ in deleted:
        fixes.delete_label(ds, s, l, field="noisy", issue="duplicate")
    assert refit_if_due(ds, "noisy", every=13) is None          # not due yet: nothing re-run
    assert dict(zip(*_column(ds, "noisy", "consistency_duplicate")[::2])) == pytest.approx(
        {k: v for k, v in before.items() if k not in {l for _, l, _ in deleted}}, nan_ok=True)
    rep = refit_if_due(ds, "noisy", every=12)
    assert rep is not None
    ids, _, dup = _column(ds, "noisy", "consistency_duplicate")
    after = dict(zip(ids, dup))
    alone = [so for so in gone if so not in {k for _, _, k in kept}]   # no copy left
    assert all(after[so] < before[so] for so in alone if before[so] > 0.05)
    assert np.mean([after[so] < 0.05 for so in alone]) >= 0.7   # the rest overlap other boxes
    tagged = set(ds.filter_labels("noisy", F("tags").contains(TAG_DUPLICATE)).values(
        "noisy.detections.id", unwind=True))
    xdup = dict(zip(*_column(ds, "noisy", "consistency_xdup")[::2]))
    freed = {so for so in alone if after[so] < 0.05 and xdup[so] < 0.5}  # not in a cross pair
    assert freed and not tagged & freed
    # the pairs nobody reviewed keep their scores (the same parameters: hard split)
    assert np.mean([after[l] == pytest.approx(before[l]) for _, l, _ in kept]) >= 0.9


def test_an_accepted_box_hands_its_pair_score_to_its_partner():
    """A box the curator accepted is the least suspect of its pair: re-run after the decision,
    the pair's score goes to the partner the judges doubted less (a duplicate copy whose source
    the split had put first), same-class and cross-class pairs alike; pairs nobody reviewed
    keep their split."""
    import fiftyone as fo

    from grader.review import fixes
    from grader.scores import REVIEWED_OK_TAG

    ds = fo.Dataset()
    doubted, spared = [], []
    kinds = [("cat", "cat"), ("dog", "dog"), ("car", "truck"), ("cup", "bowl")] * 2
    for i, (ca, cb) in enumerate(kinds):
        x = 0.1 + 0.04 * i
        # the judges doubt `a` (box fit and class), though `b` is the slip
        a = fo.Detection(label=ca, bounding_box=[x, 0.2, 0.3, 0.3], boxgrader_p_bad=0.9,
                         cleanlab_swap=0.05)
        b = fo.Detection(label=cb, bounding_box=[x + 0.01, 0.21, 0.3, 0.3], boxgrader_p_bad=0.1,
                         cleanlab_swap=0.95)
        doubted.append(a.id)
        spared.append(b.id)
        ds.add_sample(fo.Sample(filepath=f"/nonexistent/{i}.jpg",
                                gt=fo.Detections(detections=[b, a] if i % 2 else [a, b])))
    try:
        def scores():
            ids, d, x = ds.values(["gt.detections.id", "gt.detections.consistency_duplicate",
                                   "gt.detections.consistency_xdup"], unwind=True)
            return {i: max(u or 0, v or 0) for i, u, v in zip(ids, d, x)}

        run_consistency(ds, "gt", evidence_margin=0.0)
        before = scores()
        assert all(before[a] > before[b] for a, b in zip(doubted, spared))
        sids = ds.values("id")
        reviewed = range(0, len(kinds), 2)            # one pair of each kind accepted per two
        for k in reviewed:
            fixes.accept_label(ds, sids[k], doubted[k], field="gt")
        assert ds.count_label_tags("gt")[REVIEWED_OK_TAG] == len(reviewed)
        run_consistency(ds, "gt", evidence_margin=0.0)
        after = scores()
        for k, (a, b) in enumerate(zip(doubted, spared)):
            if k in reviewed:
                assert after[b] == pytest.approx(before[a]) and after[a] < after[b], kinds[k]
            else:
                assert (after[a], after[b]) == pytest.approx((before[a], before[b])), kinds[k]
    finally:
        ds.delete()
