"""Overlooked objects: sliced + full-image candidates minus GT boxes, ranked; cleanlab's kept."""
from __future__ import annotations

import os

import numpy as np
import pytest

import fiftyone as fo

from grader.boxes import iou_matrix
from grader.detectors import ArrayDetector, Boxes
from grader.judges.overlooked import (Candidates, _at_input_size, _predict_image, find_overlooked,
                                       greedy_nmm, learn_class_map, rank_candidates, score_image,
                                       slice_windows, suppress_other_class, unmatched_candidates)
from grader.noise import deleted_field_name, inject_errors

from conftest import shared_path


def test_slice_windows_cover_the_image_like_sahi():
    wins = slice_windows(480, 640, 320, 0.2)
    cover = np.zeros((480, 640), bool)
    for x0, y0, x1, y1 in wins:
        assert x1 - x0 == 320 and y1 - y0 == 320 and 0 <= x0 and x1 <= 640 and y1 <= 480
        cover[y0:y1, x0:x1] = True
    assert cover.all()
    assert len(wins) == 3 * 2  # steps of 256: x at 0, 256, 320; y at 0, 160
    assert slice_windows(300, 300, 320) == []  # small image: full pass only


def test_greedy_nmm_merges_same_class_by_intersection_over_smaller():
    b = Boxes(np.array([[0, 0, 100, 100], [0, 0, 50, 100], [0, 0, 100, 100], [300, 300, 320, 320.]]),
              np.array([0.6, 0.5, 0.4, 0.3]), np.array([1, 1, 2, 1]), np.zeros((4, 3)))
    c = greedy_nmm(b, np.array([True, False, True, False]))
    assert len(c.xyxy) == 3  # the half box merges into the class-1 box, class 2 stays apart
    i = int(np.argmax(c.conf))
    assert c.full[i] and c.sliced[i]
    assert c.score[i] == pytest.approx(1 - 0.4 * 0.5)  # noisy-OR of full and sliced passes


@pytest.fixture()
def noisy16(coco128_base):
    if shared_path("detectors") is None:
        pytest.skip("../shared/data/detectors is not present")
    ds = coco128_base.select(coco128_base.values("id")[:16]).clone()
    inject_errors(ds, "ground_truth", "noisy", rates={"overlooked": 0.25}, seed=2)
    yield ds
    ds.delete()


def _xyxy(b):
    b = np.asarray(b, float).reshape(-1, 4)
    return np.c_[b[:, :2], b[:, :2] + b[:, 2:]]


def test_finds_deleted_boxes_and_keeps_cleanlab_candidates(noisy16):
    ds = noisy16
    # a candidate cleanlab wrote earlier (far from everything) must survive our run
    sid = ds.first().id
    ds.set_values("noisy_overlooked", {sid: fo.Detections(detections=[fo.Detection(
        label="kite", bounding_box=[0.9, 0.9, 0.05, 0.05], cleanlab_overlooked=0.01,
        source_pred_id="abc")])}, key_field="id")
    ds.add_dynamic_sample_fields()  # as cleanlab's writer declares cleanlab_overlooked
    rep = find_overlooked(ds, "noisy", "yolox-nano", slice_size=320)
    assert rep.info["candidates"] > 0
    kept = [d for d in ds[sid].noisy_overlooked.detections if d.has_field("source_pred_id") and d.source_pred_id == "abc"]
    assert len(kept) == 1 and kept[0].source == "cleanlab"
    # candidates never duplicate a GT box; the top 2N find deleted boxes
    deleted = ds.values(f"{deleted_field_name('noisy')}.detections.bounding_box")
    gts = ds.values("noisy.detections.bounding_box")
    cands = ds.values("noisy_overlooked.detections")
    scored = []
    for dl, gt, cs in zip(deleted, gts, cands):
        ours = [c for c in (cs or []) if not (c.has_field("source") and c.source == "cleanlab")]
        if not ours:
            continue
        cb = _xyxy([c.bounding_box for c in ours])
        if gt:
            assert (iou_matrix(cb, _xyxy(gt)) < 0.7).all()  # dup_iou: such a box is the GT box
        hit = (iou_matrix(cb, _xyxy(dl)) >= 0.5).any(1) if dl else np.zeros(len(ours), bool)
        scored += [(c.overlooked_score, h) for c, h in zip(ours, hit)]
    n_del = sum(len(d or []) for d in deleted)
    top = sorted(scored, key=lambda t: -t[0])[:2 * n_del]
    assert n_del >= 8
    hits_all = sum(h for _, h in scored)
    random_top = 2 * n_del * hits_all / len(scored)  # expected hits of a random order
    # measured on these 16 images: 18 deleted boxes; 160 candidates, 13 hit one and 10 of those
    # rank in the top 2N = 36 (a random order would put 2.9 there). The earlier judge (no
    # one-to-one GT matching, merging within a pass, no mirrored pass): 6 hits, 5 in the top 2N.
    top_hits = sum(h for _, h in top)
    assert hits_all >= 10 and top_hits >= max(8, 2.5 * random_top), (top_hits, random_top, hits_all)
    # re-running replaces our candidates, never piles them up, and keeps cleanlab's
    few = ds.select(ds.values("id")[:3])
    n1 = few.count("noisy_overlooked.detections")
    find_overlooked(few, "noisy", "yolox-nano", slice_size=320)
    assert few.count("noisy_overlooked.detections") == n1
    assert len([d for d in ds[sid].noisy_overlooked.detections if d.has_field("source_pred_id")]) == 1
    # a cleanlab candidate on the same object as ours is merged into, not duplicated
    s2 = next(s for s in few.select_fields("noisy_overlooked") if s.noisy_overlooked.detections)
    ours = s2.noisy_overlooked.detections[-1]
    ds.set_values("noisy_overlooked", {s2.id: fo.Detections(detections=[fo.Detection(
        label=ours.label, bounding_box=ours.bounding_box, cleanlab_overlooked=0.2,
        source_pred_id="p1")])}, key_field="id")
    find_overlooked(few, "noisy", "yolox-nano", slice_size=320)
    after = ds[s2.id].noisy_overlooked.detections
    same = [d for d in after if d.label == ours.label
            and iou_matrix(_xyxy([d.bounding_box]), _xyxy([ours.bounding_box]))[0, 0] > 0.9]
    assert len(same) == 1 and same[0].source == "cleanlab" and same[0].overlooked_score > 0


def test_refuses_a_user_field(synthetic_dataset):
    ds = synthetic_dataset
    ds.clone_sample_field("predictions", "ground_truth_overlooked")
    with pytest.raises(ValueError, match="overwrite=True"):
        find_overlooked(ds, "ground_truth")
    with pytest.raises(ValueError, match="gt_iou"):
        find_overlooked(ds, "ground_truth", gt_iou=1.5)


class _CountingDetector(ArrayDetector):
    """Counts the images it sees; predicts nothing."""

    classes = ["a"]
    size = 416

    def __init__(self):
        self.seen = []

    def predict(self, images):
        self.seen += [im.shape[:2] for im in images]
        return [np.zeros((0, 5)) for _ in images]


def test_auto_slicing_only_for_large_images():
    det = _CountingDetector()
    _predict_image(det, np.zeros((480, 640, 3), np.uint8), "auto", 0.2, 0.1, 0.45)
    assert det.seen == [(480, 640)]  # COCO-sized: full image only
    det.seen.clear()
    _predict_image(det, np.zeros((1200, 1800, 3), np.uint8), "auto", 0.2, 0.1, 0.45)
    assert det.seen[0] == (1200, 1800) and len(det.seen) > 4
    assert all(s == (416, 416) for s in det.seen[1:])


def test_unmatched_candidates_match_gt_one_to_one():
    gt = np.array([[0, 0, 100, 100.]])
    # the first candidate is the GT box's detection; the second overlaps it by 0.43 (another
    # object in front of it); the third is a near copy of the GT box (IoU 0.8)
    c = np.array([[0, 0, 100, 100], [40, 0, 140, 100], [0, 0, 100, 80.]])
    s = np.array([0.9, 0.5, 0.4])
    assert unmatched_candidates(c, s, gt).tolist() == [False, True, False]
    assert unmatched_candidates(c, s, gt, one_to_one=False).tolist() == [False, False, False]
    assert unmatched_candidates(c, s, np.zeros((0, 4))).all()


def test_rank_candidates_discounts_overlap_with_a_same_class_gt_box():
    gt = np.array([[0, 0, 100, 100.]])
    c = np.array([[50, 0, 150, 100], [50, 0, 150, 100], [300, 300, 400, 400.]])
    r = rank_candidates(c, ["person", "dog", "person"], np.array([0.6, 0.6, 0.6]), gt, ["person"])
    assert r[0] == pytest.approx(0.6 * (1 - 1 / 3)) and r[1] == r[2] == pytest.approx(0.6)


def test_greedy_nmm_keeps_boxes_of_one_crop_apart():
    # two persons of one pass overlapping by IoS 0.6: the pass's NMS kept both, so must the merge
    b = Boxes(np.array([[0, 0, 100, 100], [40, 0, 140, 100], [0, 0, 100, 100.]]),
              np.array([0.8, 0.5, 0.4]), np.array([0, 0, 0]), np.zeros((3, 1)))
    crop = np.array([0, 0, 1])
    c = greedy_nmm(b, crop == 0, crop=crop)
    assert len(c.xyxy) == 2 and c.sliced[np.argmax(c.conf)]  # the slice's copy merged in
    assert len(greedy_nmm(b, crop == 0).xyxy) == 1  # without crop ids: all three merged


def test_a_deleted_person_in_a_crowd_outranks_a_duplicate_detection(coco128_base):
    """Real image 000000000395.jpg (13 GT boxes): delete one person standing among others."""
    if shared_path("detectors") is None:
        pytest.skip("../shared/data/detectors is not present")
    ds = coco128_base.match(fo.ViewField("filepath").ends_with("000000000395.jpg")).clone()
    try:
        sample = ds.first()
        dets = sample.ground_truth.detections
        want = np.array([428.93 / 640, 206.74 / 580, 43.9 / 640, 113.15 / 580])  # COCO ann 1750589
        j = int(np.argmin([np.abs(np.asarray(d.bounding_box) - want).sum() for d in dets]))
        gone = dets.pop(j)
        assert gone.label == "person" and np.allclose(gone.bounding_box, want, atol=1e-3)
        sample.save()
        gt = _xyxy([d.bounding_box for d in dets])
        is_person = np.array([d.label == "person" for d in dets])

        def candidates(**opts):
            find_overlooked(ds, "ground_truth", "yolox-nano", **opts)
            cs = ds.first().ground_truth_overlooked.detections
            cb = _xyxy([c.bounding_box for c in cs]) if cs else np.zeros((0, 4))
            hit = iou_matrix(cb, _xyxy([gone.bounding_box]))[:, 0] >= 0.5
            dup = np.array([c.label == "person" for c in cs], bool) & (
                iou_matrix(cb, gt[is_person]).max(1) >= 0.3) & ~hit
            return cs, hit, dup

        # at the detector's own 416 input (and its mirror, as the judge ran before 640) ...
        cs, hit, dup = candidates(input_size=None, flip=True)
        assert hit.sum() == 1 and dup.any()
        found = cs[int(np.argmax(hit))]
        dups = [c for c, d in zip(cs, dup) if d]
        # ... by confidence alone a duplicate of a labeled person would come first ...
        assert max(c.confidence for c in dups) > found.confidence
        # ... the same-class overlap discount puts the missing person above every duplicate
        assert found.overlooked_score > max(c.overlooked_score for c in dups)
        # the defaults (640 input) find it too, above every duplicate
        cs, hit, dup = candidates()
        assert hit.sum() == 1
        found = cs[int(np.argmax(hit))]
        assert all(found.overlooked_score > c.overlooked_score for c, d in zip(cs, dup) if d)
        # the earlier judge (any-overlap filter, merging within a pass) lost this person
        _, hit_before, _ = candidates(one_to_one=False, merge_within_crop=True, rank="confidence",
                                       flip=False)
        assert not hit_before.any()
    finally:
        ds.delete()


class _LeftBoxDetector(ArrayDetector):
    """Sees one object in the left quarter of every image it is given."""

    classes = ["a", "b"]
    size = 416

    def predict(self, images):
        return [np.array([[0, 10, im.shape[1] / 4, 50, 0.6, 0.0]]) for im in images]


def test_mirrored_pass_is_mapped_back_and_raises_agreeing_boxes():
    img = np.zeros((100, 200, 3), np.uint8)
    boxes, full, crop, flipped = _predict_image(_LeftBoxDetector(), img, None, 0.2, 0.1, 0.45, flip=True)
    assert flipped.tolist() == [False, True] and full.all() and crop.tolist() == [0, 1]
    assert boxes.xyxy[1].tolist() == [150, 10, 200, 50]  # the mirrored pass's box, back in place
    # two passes agreeing on one box: noisy-OR, one candidate
    b = Boxes(np.array([[0, 0, 50, 50], [1, 0, 50, 50.]]), np.array([0.6, 0.5]), np.array([0, 0]),
              np.zeros((2, 2)))
    c = greedy_nmm(b, np.array([True, True]), crop=np.array([0, 1]), flipped=np.array([False, True]))
    assert len(c.score) == 1 and c.score[0] == pytest.approx(1 - 0.4 * 0.5)


def _cands(xyxy, probs, score) -> Candidates:
    xyxy = np.asarray(xyxy, float).reshape(-1, 4)
    probs = np.asarray(probs, float).reshape(len(xyxy), -1)
    score = np.asarray(score, float)
    ones = np.ones(len(xyxy), bool)
    return Candidates(xyxy, probs.argmax(1), score, score, ones, ~ones, probs)


def test_a_candidate_on_a_labelled_box_of_another_class_is_suppressed():
    gt, gl = np.array([[0, 0, 100, 100.]]), ["truck"]
    # two "car"s on the labelled truck (IoU 0.8 and 0.54), a "car" beside it (IoU 0.11), a
    # "truck" a third on it (its own class: ranked down by rank_candidates, not suppressed)
    c = np.array([[0, 0, 100, 80], [30, 0, 130, 100], [80, 0, 180, 100], [50, 0, 150, 100.]])
    keep = suppress_other_class(c, ["car", "car", "car", "truck"], gt, gl, 0.5)
    assert keep.tolist() == [False, False, True, True]
    # through the judge's per-image scoring: one-to-one matching leaves the second car, the
    # other-class rule drops it; off (other_iou=None) it stays
    cands = _cands(c, np.eye(2)[[0, 0, 0, 1]], [0.9, 0.8, 0.7, 0.6])
    idx, labels, _ = score_image(cands, ["car", "truck"], gt, gl)
    assert idx.tolist() == [2, 3] and labels == ["car", "truck"]
    idx, _, _ = score_image(cands, ["car", "truck"], gt, gl, other_iou=None)
    assert idx.tolist() == [1, 2, 3]


def test_class_map_names_candidates_by_the_dataset_classes():
    """Two classes no detector knows: raccoons read as dog/cat, road signs as stop sign; the
    people in these images are never labelled."""
    det = ["dog", "cat", "stop sign", "person"]
    racc, sign, person = [0.5, 0.4, 0, 0.05], [0.02, 0, 0.8, 0], [0, 0, 0, 0.9]
    gt = np.array([[0, 0, 50, 50], [100, 100, 140, 140.]])
    cx = np.r_[gt, [[300, 300, 360, 360.]]]
    items = [(cx, np.array([racc, sign, person]), gt, ["raccoon", "road sign"])] * 20
    cmap = learn_class_map(items, ["raccoon", "road sign", "tree"], len(det))
    assert cmap.matched.tolist() == [20, 20, 0]
    assert cmap.share[:3].argmax(1).tolist() == [0, 0, 1]  # dog, cat -> raccoon; stop sign -> sign
    rel = cmap.relevance / cmap.relevance.max()
    assert rel[3] < 0.25 and rel[:3].min() > 0.9  # a person is next to never a labelled object
    # a cat-like box away from the labels is a raccoon; a person ranks far below it though the
    # detector is surer of it
    cands = _cands([[200, 0, 260, 60], [300, 0, 360, 60], [0, 200, 40, 240.]],
                   [[0.2, 0.6, 0, 0], person, [0, 0, 0.7, 0.1]], [0.6, 0.9, 0.7])
    idx, labels, score = score_image(cands, det, gt, ["raccoon", "road sign"], class_map=cmap)
    assert labels[0] == "raccoon" and labels[2] == "road sign"
    assert score[0] > 0.5 and score[1] < 0.5 * score[0] and score[2] > 0.55
    # one raccoon seen as a dog and as a cat (class-wise NMS keeps both): proposed once
    dup = _cands([[200, 0, 260, 60], [202, 0, 260, 62.]], [[0.6, 0.1, 0, 0], [0.1, 0.5, 0, 0]], [0.6, 0.5])
    idx, labels, _ = score_image(dup, det, np.zeros((0, 4)), [], class_map=cmap)
    assert idx.tolist() == [0] and labels == ["raccoon"]
    # a class head's probabilities (e.g. the box grader's) name the candidate instead
    idx, labels, _ = score_image(_cands([[200, 0, 260, 60]], [[0.6, 0.1, 0, 0]], [0.6]),
                                 det, np.zeros((0, 4)), [], class_map=cmap,
                                 class_probs=np.array([[0.1, 0.2, 0.7]]))
    assert labels == ["tree"]


def test_input_size_copy_leaves_the_callers_detector_alone():
    from grader.detectors import load_detector

    if shared_path("detectors") is None:
        pytest.skip("../shared/data/detectors is not present")
    det = load_detector("yolox-nano")
    sized = _at_input_size(det, 640)
    assert sized is not det and sized.size == 640 and det.size == 416
    assert _at_input_size(det, None) is det and _at_input_size(_CountingDetector(), 640).size == 416
    rows = sized.predict([np.full((480, 640, 3), 114, np.uint8)])[0]
    assert rows.shape == (80 ** 2 + 40 ** 2 + 20 ** 2, 4 + 80)  # the 640 grid, not 416's


@pytest.fixture()
def raccoon40():
    root = shared_path("raccoon")
    if root is None or shared_path("detectors") is None:
        pytest.skip("../shared/data/raccoon or detectors is not present")
    ds = fo.Dataset.from_dir(dataset_type=fo.types.VOCDetectionDataset,
                             data_path=str(root / "images"), labels_path=str(root / "annotations"),
                             name="lg-test-raccoon", overwrite=True)
    few = ds.select(ds.values("id")[:40]).clone()
    ds.delete()
    inject_errors(few, "ground_truth", "noisy", rates={"overlooked": 0.2}, seed=0)
    yield few
    few.delete()


def _top_hits(ds) -> tuple[int, int, int]:
    """(deleted boxes, candidates on one among the top N, among the top 2N)."""
    deleted = ds.values(f"{deleted_field_name('noisy')}.detections.bounding_box")
    scored = []
    for dl, cs in zip(deleted, ds.values("noisy_overlooked.detections")):
        if not cs:
            continue
        cb = _xyxy([c.bounding_box for c in cs])
        hit = (iou_matrix(cb, _xyxy(dl)) >= 0.5).any(1) if dl else np.zeros(len(cs), bool)
        scored += [(c.overlooked_score, h) for c, h in zip(cs, hit)]
    n = sum(len(d or []) for d in deleted)
    top = [h for _, h in sorted(scored, key=lambda t: -t[0])]
    return n, sum(top[:n]), sum(top[:2 * n])


def test_raccoon_deleted_boxes_come_back_as_raccoons(raccoon40):
    """No detector knows raccoons: candidates get the dataset's class and deleted raccoons rank
    at the top (the detector's own class names and scores put them below people and cars)."""
    ds = raccoon40
    rep = find_overlooked(ds, "noisy")
    assert rep.info["label_mode"] == "dataset"
    cands = ds.values("noisy_overlooked.detections")
    assert {c.label for cs in cands for c in (cs or [])} == {"raccoon"}
    n_del, found1, found2 = _top_hits(ds)
    # measured: 9 deleted, 7 of them in the top N and 8 in the top 2N (82 candidates)
    assert n_del >= 6 and found1 >= 0.5 * n_del and found2 >= 0.7 * n_del, (n_del, found1, found2)
    # named by the detector's classes and ranked by its scores (the judge before dataset
    # classes), other objects outrank them: 3 in the top N
    find_overlooked(ds, "noisy", label_mode="detector")
    cands = ds.values("noisy_overlooked.detections")
    assert "raccoon" not in {c.label for cs in cands for c in (cs or [])}
    assert _top_hits(ds)[1] < found1
    with pytest.raises(ValueError, match="label_mode"):
        find_overlooked(ds, "noisy", label_mode="coco")
    # a box grader that does not know raccoons (the shipped one: COCO classes) cannot name them:
    # the profiles do
    from grader.pipeline import SHIPPED_BOXGRADER

    if os.path.isfile(SHIPPED_BOXGRADER):
        rep = find_overlooked(ds, "noisy", boxgrader_checkpoint=SHIPPED_BOXGRADER)
        assert rep.info["class_head"] is False and _top_hits(ds)[1] == found1


def test_box_grader_class_head_names_the_candidates(noisy16):
    """Forced dataset classes on COCO labels with the shipped grader (trained on them)."""
    from grader.pipeline import SHIPPED_BOXGRADER

    if not os.path.isfile(SHIPPED_BOXGRADER):
        pytest.skip("no shipped box grader checkpoint")
    # the 4 images with the most deleted boxes (the grader's backbone is slow on CPU)
    ids, dl = noisy16.values(["id", f"{deleted_field_name('noisy')}.detections"])
    few = noisy16.select([i for _, i in sorted(zip([-len(d or []) for d in dl], ids))[:4]])
    def named_right(**opts) -> tuple[int, int]:
        rep = find_overlooked(few, "noisy", label_mode="dataset", **opts)
        assert rep.info["label_mode"] == "dataset"
        assert rep.info.get("class_head") is True
        deleted = few.values(f"{deleted_field_name('noisy')}.detections")
        right = n = 0
        for dl, cs in zip(deleted, few.values("noisy_overlooked.detections")):
            if dl and cs:
                iou = iou_matrix(_xyxy([c.bounding_box for c in cs]), _xyxy([d.bounding_box for d in dl]))
                for c, row in zip(cs, iou):
                    if row.max() >= 0.5:
                        n += 1
                        right += c.label == dl[int(row.argmax())].label
        return right, n

    # on 24 coco128 images the class head named 29 of 34 found deleted boxes right, the class
    # map 24 of 33 (the detector's own names: 32 of 35); on these 4 the head named 3 of 6. A
    # wrong mapping of the head's columns to the dataset classes names next to none right.
    right, n = named_right(boxgrader_checkpoint=SHIPPED_BOXGRADER)
    assert n >= 3 and right >= n / 2, (right, n)


def test_candidates_from_a_predictions_field_of_the_labels_own_classes():
    """pred_field=: the candidates are that field's detections (a detector of the labels' own
    classes, e.g. grade()'s fine-tuned one), with its class names; no image is read (the
    files here do not exist). A prediction the labels account for is no candidate, one below
    conf_threshold neither, one without a confidence is skipped and counted."""
    ds = fo.Dataset()
    gt_box = [0.1, 0.1, 0.2, 0.2]
    preds = [fo.Detection(label="widget", bounding_box=[0.11, 0.1, 0.2, 0.2], confidence=0.9),
             fo.Detection(label="widget", bounding_box=[0.6, 0.6, 0.2, 0.2], confidence=0.8),
             fo.Detection(label="gizmo", bounding_box=[0.6, 0.1, 0.1, 0.1], confidence=0.05),
             fo.Detection(label="gizmo", bounding_box=[0.1, 0.6, 0.1, 0.1])]
    ds.add_sample(fo.Sample(filepath="/nonexistent/a.jpg",
                            metadata=fo.ImageMetadata(width=400, height=300),
                            gt=fo.Detections(detections=[fo.Detection(label="widget", bounding_box=gt_box)]),
                            preds=fo.Detections(detections=preds)))
    ds.add_sample(fo.Sample(filepath="/nonexistent/b.jpg", gt=fo.Detections(detections=[]),
                            preds=fo.Detections(detections=[preds[1].copy()])))   # no metadata
    try:
        with pytest.raises(ValueError, match="differ"):
            find_overlooked(ds, "gt", pred_field="gt")
        rep = find_overlooked(ds, "gt", pred_field="preds")
        assert rep.judge == "overlooked:preds"
        assert rep.skipped == {"prediction_without_confidence": 1, "no_image_size": 1}
        (cands,) = [d for d in ds.first().gt_overlooked.detections]
        assert cands.label == "widget" and cands.bounding_box == pytest.approx([0.6, 0.6, 0.2, 0.2])
        assert cands.overlooked_score == pytest.approx(0.8) and cands.source == "full"
        assert ds.first().gt.detections[0].bounding_box == gt_box          # labels untouched
    finally:
        ds.delete()


def test_pick_source_uses_the_candidates_that_find_more_of_the_labelled_boxes(tmp_path):
    """pick_source=True: the detector runs too, and the source whose candidates find more of
    the labelled boxes again (label_recall) gives the candidates; both figures are reported."""
    import cv2

    from grader.judges.overlooked import label_recall

    class Fixed(ArrayDetector):
        name, classes = "fixed", ["widget"]

        def predict(self, images):   # finds the labelled widget and one more object
            return [np.array([[40, 30, 120, 90, 0.9], [240, 180, 320, 240, 0.7]], dtype=np.float32)
                    for _ in images]

    w, h = 400, 300
    img = str(tmp_path / "a.png")
    cv2.imwrite(img, np.full((h, w, 3), 127, np.uint8))
    ds = fo.Dataset()
    box = [40 / w, 30 / h, 80 / w, 60 / h]
    ds.add_sample(fo.Sample(filepath=img, metadata=fo.ImageMetadata(width=w, height=h),
                            gt=fo.Detections(detections=[fo.Detection(label="widget", bounding_box=box)]),
                            # misses the labelled widget: finds less of what is labelled
                            preds=fo.Detections(detections=[fo.Detection(
                                label="widget", bounding_box=[0.5, 0.05, 0.1, 0.1], confidence=0.9)])))
    try:
        rep = find_overlooked(ds, "gt", detector=Fixed(), pred_field="preds", pick_source=True,
                              input_size=None, slice_size=None)
        assert rep.info["label_recall"] == {"preds": 0.0, "fixed": 1.0}
        assert rep.info["candidates_from"] == "fixed" and rep.judge == "overlooked:fixed"
        (c,) = ds.first().gt_overlooked.detections
        assert c.bounding_box == pytest.approx([240 / w, 180 / h, 80 / w, 60 / h], rel=1e-3)
        # without the pick the field's candidates are used as given
        rep = find_overlooked(ds, "gt", pred_field="preds", overwrite=True)
        assert rep.info["candidates_from"] == "preds" and "label_recall" not in rep.info
        (c,) = ds.first().gt_overlooked.detections
        assert c.bounding_box == pytest.approx([0.5, 0.05, 0.1, 0.1])
        assert label_recall([], lambda c, s: [], {}) == 0.0
    finally:
        ds.delete()
