"""grader.grade(): one call writes every judge's registered fields and one report; bad input
is refused before anything is written."""
from __future__ import annotations

import pytest

import fiftyone as fo

from grader.pipeline import grade
from grader.scores import SCORES

from conftest import shared_path


@pytest.fixture()
def coco8(coco128_base):
    if shared_path("detectors") is None:
        pytest.skip("../shared/data/detectors is not present")
    ds = coco128_base.select(coco128_base.values("id")[:8]).clone()
    yield ds
    ds.delete()


def test_grade_runs_every_judge_with_defaults(coco8):
    ds = coco8
    rep = grade(ds, "ground_truth")
    for step in ("detector", "cleanlab", "zoom", "overlooked", "boxgrader", "consistency",
                 "ensemble"):
        assert step in rep.reports, (step, rep.not_run)
    assert rep.pred_field == "lg_predictions"
    preds = ds.values("lg_predictions.detections", unwind=True)
    assert preds and all(len(p.probs) == 80 for p in preds)
    schema = ds.get_field_schema(flat=True)
    for s in SCORES:
        if s.judge in ("zoom", "boxgrader"):
            assert f"ground_truth.detections.{s.attr}" in schema, s.attr
    assert "ground_truth_overlooked.detections.overlooked_score" in schema
    # the shipped detector's own pass gives the candidates: its predictions field is no
    # second source (that is for a detector fine-tuned on the labels' classes)
    ov = rep.reports["overlooked"].info
    assert ov["candidates_from"] == "yolox-nano" and "label_recall" not in ov, ov
    assert any(k.startswith("ground_truth.detections.ensemble_") for k in schema)
    # No verified images: the shipped default model combines the scores, with its variant
    # that reads the box grader's (the default box grader ran on these COCO classes).
    learners = rep.reports["ensemble"].info["learner"]
    assert {v.get("variant") for k, v in learners.items() if k != "any"} == {"full+boxgrader"}, learners
    # ensemble_any composed from the per-issue probabilities as written (the shipped model gave
    # each; badloc, swap and spurious read together as exclusive)
    assert learners["any"]["variant"] == "noisy_or(sum(badloc, swap, spurious), duplicate)", learners["any"]
    assert "zoom" in rep.summary() and rep.to_dict()["reports"]["zoom"]["labels_scored"] > 0
    # zoom was scored inside the box grader's crop passes, and reads as its own run would
    from grader.judges.zoom import ZOOM_ATTRS, run_zoom

    zrep = rep.reports["zoom"]
    assert zrep.info["shared_with"] == "boxgrader" and zrep.info["samples_in_own_run"] == 0
    shared = {a: ds.values(f"ground_truth.detections.{a}", unwind=True) for a in ZOOM_ATTRS}
    own = run_zoom(ds, "ground_truth")
    assert own.labels_scored == zrep.labels_scored and dict(own.skipped) == dict(zrep.skipped)
    for a in ZOOM_ATTRS:
        again = ds.values(f"ground_truth.detections.{a}", unwind=True)
        if a == "zoom_other_label":
            assert again == shared[a]
        else:
            assert again == pytest.approx(shared[a], abs=1e-5), a
    # a second run rewrites its own fields without overwrite=True
    rep2 = grade(ds, "ground_truth", cleanlab=False, zoom=False)
    assert "detector" in rep2.reports and rep2.not_run["zoom"] == "disabled by the caller"


def test_grade_bad_input_is_refused_before_any_write(coco8):
    ds = coco8
    before = set(ds.get_field_schema(flat=True))
    import grader

    with pytest.raises(ValueError, match="does not exist"):
        grader.grade(ds, "no_such_field")  # the one-call entry point, as the README shows it
    ds.add_sample_field("cls", fo.EmbeddedDocumentField, embedded_doc_type=fo.Classification)
    before = set(ds.get_field_schema(flat=True))
    with pytest.raises(ValueError, match="Detections"):
        grade(ds, "cls")
    with pytest.raises(ValueError, match="does not exist"):
        grade(ds, "ground_truth", pred_field="nope")
    with pytest.raises(ValueError, match="unknown detector"):
        grade(ds, "ground_truth", detector="yolo-huge")
    with pytest.raises(TypeError):
        grade([1, 2, 3])
    assert set(ds.get_field_schema(flat=True)) == before


def test_grade_labels_operator_from_sdk(synthetic_dataset):
    """The App operator runs grade(): here with existing predictions and no detector (fast)."""
    import fiftyone.operators as foo

    ds = synthetic_dataset
    result = foo.execute_operator(
        "@label-grader/label-grader/grade_labels",
        ctx={"view": ds.view(), "params": {"target": "DATASET", "gt_field": "ground_truth",
                                           "pred_field": "predictions", "detector": "none"}})
    out = result.result
    assert "cleanlab" in out["reports"] and "ensemble" in out["reports"]
    assert out["not_run"]["zoom"].startswith("no detector")
    assert ds.count("ground_truth.detections.cleanlab_badloc") == 18
    assert "[ensemble]" in out["summary"]


def test_shipped_box_grader_runs_only_on_classes_it_knows(coco8):
    """The box grader shipped with the package (trained on coco128) grades COCO-class labels by
    default; on a dataset whose classes it never saw it is not run, and the report says why."""
    from grader.pipeline import SHIPPED_BOXGRADER

    ds = coco8
    rep = grade(ds, "ground_truth", detector=None, consistency=False, ensemble=False)
    assert rep.reports["boxgrader"].info["checkpoint"] == SHIPPED_BOXGRADER
    scored = [v for v in ds.values("ground_truth.detections.boxgrader_p_bad", unwind=True)
              if v is not None]
    assert len(scored) > 0.8 * ds.count("ground_truth.detections")
    # the same boxes under class names the grader never saw
    labels = ds.values("ground_truth.detections.label")
    ds.set_values("ground_truth.detections.label",
                  [[f"widget{i % 3}" for i, _ in enumerate(ls or [])] for ls in labels])
    # (grade() would train one on these labels: tests/test_boxgrader.py; here that is off)
    rep = grade(ds, "ground_truth", detector=None, consistency=False, ensemble=False,
                boxgrader={"train": False})
    assert "boxgrader" not in rep.reports
    assert "the shipped box grader knows 0/" in rep.not_run["boxgrader"]
    assert "training disabled" in rep.not_run["boxgrader"]


def test_labels_spelled_another_way_are_the_detectors_classes(coco8):
    """A dataset that says ``pottedplant`` (PASCAL VOC) for COCO's ``potted plant`` and
    ``Person`` for ``person``: the models speak its vocabulary, so those labels are judged as
    their class, not as unknown ones, and the predictions carry its spelling. The caller's
    detector keeps its own names."""
    from grader.classes import dataset_spellings, known_class_share
    from grader.detectors import load_detector

    ds = coco8
    ours = {"potted plant": "pottedplant", "person": "Person"}
    labels = ds.values("ground_truth.detections.label")
    ds.set_values("ground_truth.detections.label",
                  [[ours.get(c, c) for c in ls or []] for ls in labels])
    if ds.default_classes:   # its class list spelled the same way, as such a dataset's is
        ds.default_classes = [ours.get(c, c) for c in ds.default_classes]
    labels = ds.distinct("ground_truth.detections.label")
    assert dataset_spellings(["potted plant", "person", "tv"], labels) == ours
    assert dataset_spellings(["traffic light", "tv"], ["traffic_light", "TV-Monitor"]) == {
        "traffic light": "traffic_light", "tv": "TV-Monitor"}
    det = load_detector("yolox-nano")
    assert known_class_share(ds, "ground_truth", det.classes)[0] == 1.0
    rep = grade(ds, "ground_truth", detector=det, overlooked=False, ensemble=False)
    assert "potted plant" in det.classes and "pottedplant" not in det.classes
    pred = set(ds.distinct("lg_predictions.detections.label"))
    assert "Person" in pred and not pred & set(ours)
    for name, n in (("pottedplant", 2), ("Person", 10)):
        ours_view = ds.filter_labels("ground_truth", fo.ViewField("label") == name)
        assert ours_view.count("ground_truth.detections") == n
        for attr in ("zoom_label_prob", "boxgrader_p_other_class", "cleanlab_swap"):
            vals = ours_view.values(f"ground_truth.detections.{attr}", unwind=True)
            assert all(v is not None for v in vals), (name, attr, vals)
    assert rep.reports["boxgrader"].info["checkpoint"].endswith("coco128.pt")   # the shipped one
    assert "unknown_class" not in rep.reports["boxgrader"].skipped
    assert not {k: v for k, v in rep.reports["zoom"].skipped.items() if "unknown" in k}
