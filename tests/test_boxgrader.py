"""Box grader: ClipGrader's recipe on frozen YOLOX-Nano features, trained on real coco128 boxes."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from grader.judges.boxgrader.features import (CORE_GROUPS, DetectorFileError, YoloxFeatures,
                                              load_backbone)
from grader.judges.boxgrader.grade import (ATTRS, TAG_BACKGROUND, TAG_BAD, evaluate_boxgrader,
                                           grade_boxgrader)
from grader.judges.boxgrader import SHIPPED, SHIPPED_CHECKPOINT
from grader.judges.boxgrader.model import (BoxGrader, _build_head, attach_prior, decide,
                                           fit_quality_model, load_boxgrader, quality_proba)
from grader.judges.boxgrader.train import train_boxgrader

from conftest import raccoon_subset, shared_path

pytestmark = pytest.mark.skipif(shared_path("detectors", "yolox-nano", "model.onnx") is None,
                                reason="needs ../shared/data/detectors/yolox-nano")


def test_missing_detector_file_is_a_clear_error(tmp_path):
    missing = tmp_path / "nowhere" / "model.onnx"
    with pytest.raises(DetectorFileError, match="YOLOX-Nano ONNX file not found.*nowhere"):
        YoloxFeatures(str(missing))
    with pytest.raises(ValueError, match="unknown box grader backbone"):
        load_backbone("resnet")


def _first_image_and_gt(ds) -> tuple[np.ndarray, np.ndarray]:
    """The first sample's pixels and its GT boxes in absolute xyxy."""
    from grader.boxes import rel_xywh_to_abs_xyxy
    from grader.images import load_rgb

    s = ds.first()
    rgb = load_rgb(s.filepath)
    rel = np.array([d.bounding_box for d in s.ground_truth.detections], dtype=np.float64)
    return rgb, rel_xywh_to_abs_xyxy(rel, rgb.shape[1], rgb.shape[0])


def test_features_see_the_detector_on_real_boxes(coco128_base):
    """GT boxes sit on detections (high IoU with a confident prediction); shifted ones less so."""
    fx = YoloxFeatures()
    rgb, gt = _first_image_and_gt(coco128_base)
    f = fx.image_features(rgb)
    X = fx.box_features(f, gt)
    assert X.shape == (len(gt), fx.dim) and np.isfinite(X).all()
    far = gt.copy()
    far[:, [0, 2]] += (gt[:, 2] - gt[:, 0])[:, None] * 0.6   # slide each box 60% sideways
    ev = fx.slices()["evidence"]
    best_iou_at_score_05 = ev.start + 4  # "best IoU among predictions with score >= 0.05"
    assert X[:, best_iou_at_score_05].mean() > fx.box_features(f, far)[:, best_iou_at_score_05].mean()


def test_every_view_sees_the_object(coco128_base):
    """On the 832 px pass and on each box's zoom crop too, a GT box sits on the detector's own
    boxes better than the same box slid 30 % sideways (the error the views are there for)."""
    fx = YoloxFeatures()
    assert fx.groups == (*CORE_GROUPS, "hires", "zoom") and len(fx.det_class_slices()) == 3
    rgb, gt = _first_image_and_gt(coco128_base)
    gt = gt[(gt[:, 2] - gt[:, 0] >= 20) & (gt[:, 3] - gt[:, 1] >= 20)]
    shifted = gt.copy()
    shifted[:, [0, 2]] += (gt[:, 2] - gt[:, 0])[:, None] * 0.3
    f = fx.image_features(rgb)
    assert f.hires is not None and f.hires.maps[0].shape[-1] == 832 // 8
    Xg, Xs = fx.box_features(f, gt), fx.box_features(f, shifted)
    assert np.isfinite(Xg).all() and Xg.shape == (len(gt), fx.dim)
    sl = fx.slices()
    for view in ("hires", "zoom"):
        best_iou_at_score_05 = sl[view].start + 72 + 4   # after the 72 edge numbers
        assert Xg[:, best_iou_at_score_05].mean() > Xs[:, best_iou_at_score_05].mean() + 0.1, view
    with pytest.raises(ValueError, match="multiple of 32"):
        YoloxFeatures(zoom_size=250)


def test_quality_model_columns_and_an_mlp_only_checkpoint(tmp_path):
    """The tree model's probabilities come back as good/bad/background even when a quality
    was missing from its data; a checkpoint without it (an earlier grader, one view) loads and
    grades with the MLP's quality head."""
    rng = np.random.default_rng(0)
    X, lab = rng.normal(size=(200, 6)), rng.normal(size=(200, 3))
    q = np.where(X[:, 0] > 0, 0, 2)                  # no "bad" example at all
    p = quality_proba(fit_quality_model(X, lab, q, max_iter=20, min_samples_leaf=5), X, lab)
    assert p.shape == (200, 3) and np.allclose(p[:, 1], 0) and np.allclose(p.sum(1), 1)
    assert (p.argmax(1) == q).mean() > 0.9

    bb = YoloxFeatures(groups=CORE_GROUPS)
    cfg = dict(backbone="yolox-nano", pool=3, context=2.0, groups=list(CORE_GROUPS), hidden=32,
               dropout=0.0, input_dropout=0.0, detector_classes=list(bb.classes))
    BoxGrader(_build_head(cfg, bb, 2), bb, ["person", "dog"], cfg, 0.5).save(str(tmp_path / "old.pt"))
    g = load_boxgrader(str(tmp_path / "old.pt"))
    assert g.quality_model is None and g.backbone.groups == CORE_GROUPS
    out = g.predict(rng.normal(size=(4, bb.dim)).astype(np.float32), ["person"] * 4)
    assert out["p_quality"].shape == (4, 3) and np.allclose(out["p_quality"].sum(1), 1)


@pytest.fixture(scope="module")
def trained(coco128_base, tmp_path_factory):
    """A tiny head trained on 24 real coco128 images (fixed seed); 8 other images held back."""
    ds = coco128_base.clone("D-test-boxgrader")
    ids = sorted(ds.values("id"))
    rng = np.random.default_rng(0)
    rng.shuffle(ids)
    train, held = ds.select(ids[:24]), ds.select(ids[24:32])
    out = tmp_path_factory.mktemp("boxgrader_ckpt")
    res = train_boxgrader(train, "ground_truth", str(out), per_object=(1, 4, 4), epochs=12,
                          val_fraction=0.25, seed=0,
                          classes=ds.distinct("ground_truth.detections.label"))
    yield ds, train, held, res
    ds.delete()


def test_tiny_head_beats_chance_on_held_back_images(trained):
    ds, train, held, res = trained
    assert res.best_checkpoint and res.num_train > 0 and res.num_val > 0
    assert len(res.history) == 12 and 0.01 <= res.good_threshold <= 0.99
    assert load_boxgrader(res.best_checkpoint).quality_model is not None
    ev = evaluate_boxgrader(held, "ground_truth", checkpoint=res.best_checkpoint)
    assert ev.num_examples >= 30
    # chance is 1/3 for three balanced kinds
    assert ev.accuracy > 0.55, ev.table()
    assert np.array(ev.confusion).sum() == ev.num_examples


def test_checkpoint_round_trip_and_resume(trained, tmp_path):
    ds, train, held, res = trained
    g1 = load_boxgrader(res.best_checkpoint)
    g2 = load_boxgrader(res.best_checkpoint)
    assert g1.good_threshold == pytest.approx(res.good_threshold)
    X = np.random.default_rng(0).normal(size=(5, g1.backbone.dim)).astype(np.float32)
    labels = ["person", "dog", "car", "person", "not-a-coco-class"]
    p1, p2 = g1.predict(X, labels), g2.predict(X, labels)
    np.testing.assert_allclose(p1["p_quality"], p2["p_quality"])
    np.testing.assert_allclose(p1["p_quality"].sum(1), 1, atol=1e-6)
    for k, v in g1.head.state_dict().items():
        assert torch.equal(v, g2.head.state_dict()[k])
    with pytest.raises(ValueError, match="not a box grader checkpoint"):
        torch.save({"kind": "other"}, tmp_path / "x.pt")
        load_boxgrader(str(tmp_path / "x.pt"))
    # resume: continues after the last finished epoch, from the cached features
    res2 = train_boxgrader(train, "ground_truth", res.out_dir, epochs=14, resume=True)
    assert [h["epoch"] for h in res2.history] == list(range(14))
    assert res2.history[:12] == res.history


def test_quality_prior_averages_the_shipped_graders_probabilities(trained, tmp_path):
    """A grader trained with ``quality_prior="shipped"`` grades with the mean of its own and the
    shipped grader's quality probabilities; a prior on other features is refused, not used."""
    ds, train, held, res = trained
    own = load_boxgrader(res.best_checkpoint)
    assert own.prior is None and "prior" not in own.meta
    blended = attach_prior(load_boxgrader(res.best_checkpoint), SHIPPED)
    assert blended.meta["prior"] == {"used": True, "checkpoint": SHIPPED_CHECKPOINT}
    # only the prior's tree quality model is kept: it reads this grader's own feature vectors
    assert blended.prior.quality_model is not None and not hasattr(blended.prior, "backbone")
    shipped = load_boxgrader(SHIPPED_CHECKPOINT)
    X = np.random.default_rng(1).normal(size=(6, own.backbone.dim)).astype(np.float32)
    labels = ["person", "dog", "car", "person", "zebra", "not-a-coco-class"]
    want = 0.5 * (own.predict(X, labels)["p_quality"] + shipped.predict(X, labels)["p_quality"])
    got = blended.predict(X, labels)
    np.testing.assert_allclose(got["p_quality"], want, atol=1e-6)
    thr = 0.5 * (own.good_threshold + shipped.good_threshold)
    assert got["quality"].tolist() == decide(want, thr).tolist()
    # the class head is the grader's own, untouched by the prior
    np.testing.assert_allclose(got["p_class"], own.predict(X, labels)["p_class"])

    # the config key makes load_boxgrader attach it (what grade()'s trained graders carry)
    state = torch.load(res.best_checkpoint, map_location="cpu", weights_only=False)
    state["config"] = {**state["config"], "quality_prior": SHIPPED}
    torch.save(state, tmp_path / "with_prior.pt")
    np.testing.assert_allclose(
        load_boxgrader(str(tmp_path / "with_prior.pt")).predict(X, labels)["p_quality"], want,
        atol=1e-6)
    # a prior on other features (zoom crop size) or a missing file: recorded, not used
    other = torch.load(SHIPPED_CHECKPOINT, map_location="cpu", weights_only=False)
    other["config"] = {**other["config"], "zoom_size": 192}
    torch.save(other, tmp_path / "other.pt")
    g = attach_prior(load_boxgrader(res.best_checkpoint), str(tmp_path / "other.pt"))
    assert g.prior is None and g.meta["prior"]["used"] is False
    assert "zoom_size" in g.meta["prior"]["why"]
    np.testing.assert_allclose(g.predict(X, labels)["p_quality"],
                               own.predict(X, labels)["p_quality"])
    g = attach_prior(load_boxgrader(res.best_checkpoint), str(tmp_path / "missing.pt"))
    assert g.prior is None and "not found" in g.meta["prior"]["why"]


def test_decide_threshold():
    p = np.array([[0.6, 0.3, 0.1], [0.4, 0.2, 0.4], [0.9, 0.05, 0.05]])
    assert decide(p, 0.5).tolist() == [0, 2, 0]
    assert decide(p, 0.7).tolist() == [1, 2, 0]


def test_grade_writes_fields_and_keeps_labels(trained):
    ds, train, held, res = trained
    view = held
    before = view.values("ground_truth.detections")
    before = [[(d.id, d.label, list(d.bounding_box)) for d in dets] for dets in before]
    # one degenerate box: counted, scored None, left as it is
    s = view.first()
    s.ground_truth.detections.append(__import__("fiftyone").Detection(
        label="person", bounding_box=[0.5, 0.5, 0.0, 0.1]))
    s.save()
    rep = grade_boxgrader(view, "ground_truth", checkpoint=res.best_checkpoint)
    n = view.count("ground_truth.detections")
    assert rep.skipped["degenerate_box"] == 1 and rep.labels_scored == n - 1
    for a in ATTRS:
        vals = view.values(f"ground_truth.detections.{a}", unwind=True)
        assert len(vals) == n
    pg, pb, pbg = (np.array(view.values(f"ground_truth.detections.boxgrader_p_{k}", unwind=True),
                            dtype=float) for k in ("good", "bad", "background"))
    ok = np.isfinite(pg)
    assert ok.sum() == n - 1
    np.testing.assert_allclose((pg + pb + pbg)[ok], 1, atol=1e-5)
    po = np.array(view.values("ground_truth.detections.boxgrader_p_other_class", unwind=True),
                  dtype=float)
    assert np.isfinite(po).sum() == n - 1 and ((po[np.isfinite(po)] >= 0) & (po[np.isfinite(po)] <= 1)).all()
    tagged_bad = view.filter_labels("ground_truth", __import__("fiftyone").ViewField("tags")
                                    .contains(TAG_BAD)).count("ground_truth.detections")
    assert tagged_bad == int((pb[ok] >= 0.5).sum())
    assert TAG_BACKGROUND in rep.tagged
    after = view.values("ground_truth.detections")
    after = [[(d.id, d.label, list(d.bounding_box)) for d in dets] for dets in after]
    assert [a[:len(b)] for a, b in zip(after, before)] == before   # labels and boxes unchanged
    s.ground_truth.detections.pop()
    s.save()


def test_grade_runs_the_box_grader_step_with_a_checkpoint(trained):
    from grader.pipeline import grade

    ds, train, held, res = trained
    from grader.pipeline import SHIPPED_BOXGRADER

    # without a checkpoint: the one shipped with the package (coco128 labels are COCO classes)
    out = grade(held, detector=None, cleanlab=False, consistency=False, ensemble=False)
    assert out.reports["boxgrader"].info["checkpoint"] == SHIPPED_BOXGRADER
    out = grade(held, detector=None, cleanlab=False, consistency=False,
                boxgrader={"checkpoint": res.best_checkpoint})
    assert out.reports["boxgrader"].info["checkpoint"] == res.best_checkpoint
    assert out.reports["boxgrader"].labels_scored == held.count("ground_truth.detections")
    assert "ensemble" in out.reports
    vals = held.values("ground_truth.detections.ensemble_spurious", unwind=True)
    assert any(v is not None for v in vals)


def test_each_label_is_graded_by_the_grader_that_knows_its_class(trained):
    """``known_grader`` takes the labels of its classes, ``grader`` the rest, each label scored
    exactly as that grader alone scores it; a known grader on other features is refused."""
    import copy

    ds, train, held, res = trained
    own, shipped = load_boxgrader(res.best_checkpoint), load_boxgrader(SHIPPED_CHECKPOINT)
    path = "ground_truth.detections.label"
    labels = held.values(path)
    first = labels[0][0]
    held.set_values(path, [[("gizmo" if l == first else l) for l in ls] for ls in labels])
    try:
        def run(**kw):
            rep = grade_boxgrader(held, "ground_truth", crossfit=False, feature_cache=False, **kw)
            cols = {a: np.array(held.values(f"ground_truth.detections.boxgrader_{a}",
                                            unwind=True), dtype=float)
                    for a in ("p_good", "p_bad", "p_other_class")}
            return rep, cols

        _, alone_shipped = run(grader=shipped)
        _, alone_own = run(grader=own)
        rep, routed = run(grader=own, known_grader=shipped)
        gizmo = np.array(held.values(path, unwind=True)) == "gizmo"
        assert 0 < gizmo.sum() < len(gizmo)
        for a in ("p_good", "p_bad"):
            np.testing.assert_allclose(routed[a][~gizmo], alone_shipped[a][~gizmo], atol=1e-9)
            np.testing.assert_allclose(routed[a][gizmo], alone_own[a][gizmo], atol=1e-9)
        # a class neither knows: no class evidence, counted
        assert np.isnan(routed["p_other_class"][gizmo]).all()
        assert rep.skipped["unknown_class"] == int(gizmo.sum())
        assert rep.info["labels_by_grader"] == {SHIPPED_CHECKPOINT: int((~gizmo).sum()),
                                                res.best_checkpoint: int(gizmo.sum())}
        other = copy.copy(shipped)
        other.config = {**shipped.config, "zoom_size": 192}
        with pytest.raises(ValueError, match="other features"):
            grade_boxgrader(held, "ground_truth", grader=own, known_grader=other)
    finally:
        held.set_values(path, labels)


def test_operators_train_evaluate_grade(trained, tmp_path):
    """From the App: train on some images, evaluate on others, grade (own and shipped grader)."""
    import fiftyone.operators as foo

    from grader.pipeline import SHIPPED_BOXGRADER

    op = "@label-grader/label-grader"
    ds, train, held, _ = trained
    small = train.limit(8)
    res = foo.execute_operator(f"{op}/train_boxgrader", ctx={"view": small, "params": {
        "target": "CURRENT_VIEW", "gt_field": "ground_truth", "out_dir": str(tmp_path / "bg"),
        "epochs": 2, "val_fraction": 0.25}}).result
    ckpt = res["best_checkpoint"]
    assert ckpt and len(res["history"]) == 2 and 0 < res["good_threshold"] < 1
    ev = foo.execute_operator(f"{op}/evaluate_boxgrader", ctx={"view": held, "params": {
        "target": "CURRENT_VIEW", "gt_field": "ground_truth", "checkpoint": ckpt}}).result
    assert 0 <= ev["accuracy"] <= 1 and "confusion" in ev["table"].lower()
    before = held.values("ground_truth.detections.bounding_box", unwind=True)
    out = foo.execute_operator(f"{op}/grade_boxgrader", ctx={"view": held, "params": {
        "target": "CURRENT_VIEW", "field": "ground_truth", "checkpoint": ckpt}}).result
    assert out["labels_scored"] == held.count("ground_truth.detections")
    assert out["info"]["checkpoint"] == ckpt
    out = foo.execute_operator(f"{op}/grade_boxgrader", ctx={"view": held, "params": {
        "target": "CURRENT_VIEW", "field": "ground_truth"}}).result  # blank: the shipped one
    assert out["info"]["checkpoint"] == SHIPPED_BOXGRADER
    assert held.values("ground_truth.detections.bounding_box", unwind=True) == before


# --- grade() trains a box grader on classes no shipped model knows ----------------------------

@pytest.fixture(scope="module")
def raccoon24(tmp_path_factory):
    """24 real raccoon photos (a class no shipped model knows) with errors injected (fixed
    seed) into ``noisy``: the labels grade() trains on and grades."""
    from grader.noise import inject_errors

    ds = raccoon_subset(24, "lg-test-raccoon24")
    inject_errors(ds, "ground_truth", "noisy", rates={"badloc": 0.2, "spurious": 0.2}, seed=0)
    yield ds
    ds.delete()


def test_grade_trains_caches_and_ranks_errors_on_unknown_classes(raccoon24, tmp_path,
                                                                  monkeypatch):
    """Default grade() on raccoons: the shipped grader knows no label, so one is trained on the
    (noisy) labels into the cache, its scores rank injected spurious/badloc boxes above clean
    ones, and a second run on the same labels reuses it (no retraining)."""
    from sklearn.metrics import roc_auc_score

    from grader.pipeline import grade, will_train_boxgrader

    monkeypatch.setenv("LABEL_GRADER_CACHE", str(tmp_path / "cache"))
    ds = raccoon24
    assert will_train_boxgrader(ds, "noisy")   # the App delegates such a run
    seen: list[tuple[str, int, int]] = []
    rep = grade(ds, "noisy", detector=None, consistency=False, ensemble=False,
                progress=lambda step, d, t: seen.append((step, d, t)))
    info = rep.reports["boxgrader"].info["trained"]
    assert info["cached"] is False and info["classes"] == ["raccoon"]
    ckpt = info["checkpoint"]
    assert ckpt.startswith(str(tmp_path / "cache")) and "lg-test-raccoon24--noisy--" in ckpt
    assert rep.reports["boxgrader"].info["checkpoint"] == ckpt
    # the shipped grader's quality probabilities are averaged into the trained one's
    assert rep.reports["boxgrader"].info["quality_prior"]["used"] is True
    train_steps = [s for s in seen if s[0] == "boxgrader_train"]
    assert train_steps and train_steps[-1][1] == train_steps[-1][2]   # progress reached the end
    truth = np.array(ds.values("noisy.detections.injected_error", unwind=True))
    p = np.array(ds.values("noisy.detections.boxgrader_p_not_good", unwind=True), dtype=float)
    assert np.isfinite(p).all()
    for err in ("spurious", "badloc"):
        sel = (truth == err) | (truth == "none")
        assert (truth == err).sum() >= 3
        assert roc_auc_score(truth[sel] == err, p[sel]) > 0.7, err

    assert not will_train_boxgrader(ds, "noisy")
    mtime = os.path.getmtime(ckpt)
    rep2 = grade(ds, "noisy", detector=None, consistency=False, ensemble=False)
    info2 = rep2.reports["boxgrader"].info["trained"]
    assert info2["cached"] is True and info2["checkpoint"] == ckpt
    assert os.path.getmtime(ckpt) == mtime
    assert np.allclose(ds.values("noisy.detections.boxgrader_p_not_good", unwind=True), p)


def test_grade_trains_for_the_classes_the_shipped_grader_does_not_know(coco128_base, tmp_path,
                                                                        monkeypatch):
    """COCO classes and an own class in one field (more than half known): the shipped grader keeps the COCO
    labels, a grader trained on these labels takes the raccoons (their class evidence with it)."""
    from grader.pipeline import SHIPPED_BOXGRADER, grade, will_train_boxgrader

    monkeypatch.setenv("LABEL_GRADER_CACHE", str(tmp_path / "cache"))
    ds = raccoon_subset(10, "lg-test-mixed")
    try:
        ds.add_samples(coco128_base.select(sorted(coco128_base.values("id"))[:8]))
        labels = np.array(ds.values("ground_truth.detections.label", unwind=True))
        own = labels == "raccoon"
        assert 0.1 <= own.mean() <= 0.5
        assert will_train_boxgrader(ds, "ground_truth")
        rep = grade(ds, detector=None, consistency=False, ensemble=False).reports["boxgrader"]
        trained = rep.info["trained"]
        assert "trained for the others" in trained["why"] and "raccoon" in trained["classes"]
        assert rep.info["labels_by_grader"] == {SHIPPED_BOXGRADER: int((~own).sum()),
                                                trained["checkpoint"]: int(own.sum())}
        other = np.array(ds.values("ground_truth.detections.boxgrader_p_other_class",
                                   unwind=True), dtype=float)
        assert np.isfinite(other).all()          # the raccoons' class is known to their grader
        assert not will_train_boxgrader(ds, "ground_truth")   # cached for these labels
    finally:
        ds.delete()


def test_grade_does_not_train_when_told_or_on_too_few_labels(raccoon24, tmp_path, monkeypatch):
    from grader.pipeline import grade

    monkeypatch.setenv("LABEL_GRADER_CACHE", str(tmp_path / "cache"))
    kw = dict(detector=None, consistency=False, ensemble=False, cleanlab=False)
    rep = grade(raccoon24, "ground_truth", boxgrader={"train": False}, **kw)
    assert "boxgrader" not in rep.reports and "training disabled" in rep.not_run["boxgrader"]
    few = raccoon24.select(raccoon24.values("id")[:5])
    rep = grade(few, "ground_truth", **kw)
    assert "too few labels to train" in rep.not_run["boxgrader"]
    assert not (tmp_path / "cache").exists()


def test_onnxruntime_features_match_cv2_dnn(coco128_base):
    """The onnxruntime backend (dynamic sizes, zoom crops batched) gives the cv2.dnn backend's
    features (one crop at a time) within float tolerance, on every view of real boxes."""
    pytest.importorskip("onnxruntime")
    rgb, gt = _first_image_and_gt(coco128_base)
    shifted = gt.copy()
    shifted[:, [0, 2]] += (gt[:, 2] - gt[:, 0])[:, None] * 0.3
    boxes = np.concatenate([gt, shifted])
    out = {}
    for backend in ("cv2", "onnxruntime"):
        fx = YoloxFeatures(backend=backend)
        fx.batch = 4   # several batches of crops
        out[backend] = fx.box_features(fx.image_features(rgb), boxes)
    assert out["cv2"].shape == out["onnxruntime"].shape == (len(boxes), fx.dim)
    np.testing.assert_allclose(out["onnxruntime"], out["cv2"], atol=5e-3)
    with pytest.raises(ValueError, match="backend"):
        YoloxFeatures(backend="tensorrt")


def test_other_class_prob_leaves_out_the_classes_of_objects_on_the_box():
    from grader.judges.boxgrader.grade import other_class_prob

    pc = np.array([0.07, 0.90, 0.02, 0.01])     # table, pizza, bowl, cup
    assert other_class_prob(pc, 0, []) == pytest.approx(0.93)
    # the pizza on the table explains the head's belief: 1 - 0.07 / (1 - 0.90)
    assert other_class_prob(pc, 0, [1]) == pytest.approx(0.30)
    assert other_class_prob(pc, 0, [1, 3]) == pytest.approx(1 - 0.07 / 0.09)
    assert other_class_prob(pc, 0, [0, 1, 1]) == pytest.approx(0.30)   # own class, repeats ignored
    assert other_class_prob(np.array([0.0, 1.0]), 0, [1]) == 0.0         # nothing left to judge


def test_a_labelled_object_on_a_box_does_not_make_it_a_swap(coco128_base):
    """coco128's pizzas on dining tables: the class head sees the pizza in the table's crop;
    the dataset holds that pair legitimately, so the table's p_other_class leaves it out."""
    from grader.judges.consistency import legit_partners
    from grader.fields import read_detections

    ids, labels = coco128_base.values(["id", "ground_truth.detections.label"])
    ids = [i for i, ls in zip(ids, labels) if {"pizza", "dining table"} <= set(ls or ())]
    assert len(ids) >= 3
    ds = coco128_base.select(ids).clone()
    try:
        grader = load_boxgrader(SHIPPED_CHECKPOINT)
        grade_boxgrader(ds, "ground_truth", grader=grader, feature_cache=False)
        partners = legit_partners(read_detections(ds, "ground_truth"))
        tables = [d for s in ds for d in s.ground_truth.detections
                  if d.label == "dining table" and "pizza" in partners.get(d.id, ())]
        assert tables
        # Without the rule a table whose crop the head reads as pizza (p(table) <= 1/2) would
        # score p_other_class >= 1/2; the pizza on it explains that belief.
        explained = [d for d in tables if d["boxgrader_class"] == "pizza"]
        assert explained and all(d["boxgrader_p_other_class"] < 0.5 for d in explained)
    finally:
        ds.delete()


def test_one_thread_holds_the_limits_once_when_nested(monkeypatch):
    """Grading enters one_thread around every image's head: nested entries must not pay
    threadpoolctl's library scan again, and the outermost exit restores torch's threads. The
    box grader and the ensemble's fits use this one helper."""
    import threadpoolctl
    import torch

    import grader.ensemble
    import grader.ensemble_selfsup
    from grader.judges.boxgrader import features
    from grader.parallel import one_thread

    assert features.one_thread is grader.ensemble._one_thread is one_thread
    assert grader.ensemble_selfsup._one_thread is one_thread

    calls = []
    real = threadpoolctl.threadpool_limits

    def counting(*a, **k):
        calls.append(a or k)
        return real(*a, **k)

    monkeypatch.setattr(threadpoolctl, "threadpool_limits", counting)
    before = torch.get_num_threads()
    with one_thread():
        assert torch.get_num_threads() == 1
        for _ in range(5):
            with one_thread():
                assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 1     # an inner exit leaves the outer limits on
    assert len(calls) == 1
    assert torch.get_num_threads() == before
    with one_thread():                          # and a later entry limits again
        pass
    assert len(calls) == 2
