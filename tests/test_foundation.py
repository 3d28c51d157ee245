"""Foundation: box geometry, dataset I/O, bulk writes, class lists, plugin discovery."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import fiftyone as fo
from hypothesis import given, settings, strategies as st

from grader import boxes, fields, io
from grader.classes import resolve_classes

from conftest import shared_path


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 0.9), min_size=4, max_size=4), st.integers(1, 4000), st.integers(1, 4000))
def test_box_round_trip(xywh, w, h):
    b = np.array([[xywh[0], xywh[1], xywh[2] * 0.5 + 0.01, xywh[3] * 0.5 + 0.01]])
    back = boxes.abs_xyxy_to_rel_xywh(boxes.rel_xywh_to_abs_xyxy(b, w, h), w, h)
    assert np.allclose(back, b, atol=1e-9)


def test_box_conversion_values_and_iou():
    xyxy = boxes.rel_xywh_to_abs_xyxy([[0.25, 0.5, 0.5, 0.25]], 200, 100)
    assert xyxy.tolist() == [[50.0, 50.0, 150.0, 75.0]]
    a = [[0, 0, 10, 10]]
    b = [[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10]]
    assert np.allclose(boxes.iou_matrix(a, b), [[50 / 150, 0.0, 1.0]])
    assert boxes.iou_matrix([], b).shape == (0, 3)


def test_iou_matrix_matches_pycocotools():
    # COCO evaluation's IoU is the reference; numpy replaced it for speed, not for new semantics.
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 50, (40, 2))
    wh = np.where(rng.random((40, 2)) < 0.1, 0.0, rng.uniform(0, 30, (40, 2)))  # some zero-area
    a = np.c_[xy, xy + wh]
    b = np.r_[a[:5], a[5:] + rng.normal(0, 3, (35, 4))]      # exact copies and near misses
    ref = np.asarray(mask_utils.iou(np.c_[a[:, :2], a[:, 2:] - a[:, :2]].tolist(),
                                    np.c_[b[:, :2], b[:, 2:] - b[:, :2]].tolist(), [0] * len(b)))
    got = boxes.iou_matrix(a, b)
    assert got.shape == (40, 40) and np.isfinite(got).all()
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)


def test_sanitize_boxes_flags_without_mutating():
    raw = [[0.1, 0.1, 0.2, 0.2], [0.9, 0.9, 0.3, 0.3], [0.5, 0.5, 0.0, 0.1],
           [1.2, 0.1, 0.1, 0.1], [np.nan, 0, 0.1, 0.1]]
    orig = [list(r) for r in raw]
    clipped, status = boxes.sanitize_rel_boxes(raw)
    assert status == ["ok", "clipped", "degenerate", "degenerate", "degenerate"]
    assert np.allclose(clipped[1], [0.9, 0.9, 0.1, 0.1])
    assert raw[:4] == orig[:4]


def test_loaders_on_real_data():
    c = shared_path("coco128-val")
    p = shared_path("pennfudan")
    if c is None or p is None:
        pytest.skip("shared data absent")
    y = io.load_yolo(str(c / "images"), str(c / "labels"), str(c / "classes.yaml"))
    assert len(y) == 128 and y.count("ground_truth.detections") == 898
    assert y.default_classes[0] == "person" and len(y.default_classes) == 80
    pf = io.load_pennfudan(str(p))
    assert len(pf) == 170 and pf.count("ground_truth.detections") == 423
    d = pf.first().ground_truth.detections[0]
    # FudanPed00001: (160,182)-(302,431) in a 559x536 image, 1-based inclusive
    assert np.allclose(d.bounding_box, [159 / 559, 181 / 536, 143 / 559, 250 / 536])
    named = io.load_pennfudan(str(p), name="lg-test-pf", overwrite=True)
    with pytest.raises(ValueError, match="already exists"):
        io.load_pennfudan(str(p), name="lg-test-pf")
    for d in (y, pf, named):
        d.delete()


def test_coco_loader(coco128):
    assert len(coco128) == 128
    assert coco128.count("ground_truth.detections") == 939
    assert coco128.default_classes[:2] == ["person", "bicycle"]
    assert coco128.exists("metadata.width").count() == 128


def test_bulk_label_writes_by_id(synthetic_dataset):
    ds = synthetic_dataset
    tab = fields.read_detections(ds, "ground_truth")
    assert tab.num_labels == 18 and all(tab.present)
    vals = {(s, l): float(k) for s, ids in zip(tab.sample_ids, tab.ids) for k, l in enumerate(ids)}
    strs = {key: f"v{v}" for key, v in vals.items()}
    n = fields.write_label_attrs(ds, "ground_truth", {"lg_score": vals, "lg_note": strs})
    assert n == 18
    for s in ds:
        for k, d in enumerate(s.ground_truth.detections):
            assert d.lg_score == float(k) and d.lg_note == f"v{float(k)}"
    schema = ds.get_field_schema(flat=True)
    assert isinstance(schema["ground_truth.detections.lg_score"], fo.FloatField)
    assert isinstance(schema["ground_truth.detections.lg_note"], fo.StringField)
    # Declared in one schema merge: filterable as the App's sidebar filters them.
    assert ds.filter_labels("ground_truth", fo.ViewField("lg_score") >= 1).count(
        "ground_truth.detections") == 18 - len(ds)
    fields.declare_attrs(ds, "ground_truth.detections", {"lg_flag": fo.BooleanField,
                                                          "lg_score": fo.FloatField})
    assert isinstance(ds.get_field_schema(flat=True)["ground_truth.detections.lg_flag"], fo.BooleanField)
    # A label reordered after reading still gets its own value (matched by id, not position).
    s = ds.first()
    s.ground_truth.detections = s.ground_truth.detections[::-1]
    s.save()
    first_ids = tab.ids[0]
    fields.write_label_attr(ds, "ground_truth", "lg_score",
                            {(tab.sample_ids[0], lid): 100.0 + k for k, lid in enumerate(first_ids)})
    got = {d.id: d.lg_score for d in ds.first().ground_truth.detections}
    assert got == {lid: 100.0 + k for k, lid in enumerate(first_ids)}
    # Only the targeted attribute changed.
    assert [d.label for d in ds.first().ground_truth.detections] == [d.label for d in s.ground_truth.detections]


def test_tags_and_sample_fields_on_a_view(synthetic_dataset):
    ds = synthetic_dataset
    ids = ds.values("ground_truth.detections.id", unwind=True)
    view = ds.limit(3)
    in_view = view.values("ground_truth.detections.id", unwind=True)
    fields.set_label_tag(ds, "ground_truth", "suspect:x", ids)
    fields.set_label_tag(view, "ground_truth", "suspect:x", in_view[:2])
    tagged = ds.count_label_tags()["suspect:x"]
    # Re-tagging the view replaced its tags only; labels outside it kept theirs.
    assert tagged == 2 + (len(ids) - len(in_view))
    fields.write_sample_field(view, "lg_q", {sid: 0.5 for sid in view.values("id")})
    assert ds.count("lg_q") == 3


def test_classes_inferred_and_stored(synthetic_dataset):
    ds = synthetic_dataset
    ds.default_classes = []
    ds.save()
    assert resolve_classes(ds, ["ground_truth", "predictions"]) == ["cat", "dog"]
    assert ds.classes["ground_truth"] == ["cat", "dog"]
    assert resolve_classes(ds, ["ground_truth"], ["x"]) == ["x"]


def test_secret_params_never_recorded(synthetic_dataset):
    ds = synthetic_dataset
    fields.record_run(ds, "lg_test_run", {"model": "m", "api_key": "sk-123", "api_key_env": "OPENAI_API_KEY"})
    cfg = ds.get_run_info("lg_test_run").config.serialize()
    assert "api_key" not in cfg and cfg["api_key_env"] == "OPENAI_API_KEY"
    assert "sk-123" not in str(cfg)


def test_plugin_listed_by_fiftyone_cli():
    env = dict(os.environ)
    fo_cli = os.path.join(os.path.dirname(sys.executable), "fiftyone")
    out = subprocess.run([fo_cli, "operators", "list"], capture_output=True, text=True,
                         env=env, timeout=300)
    assert "@label-grader/label-grader/run_cleanlab" in out.stdout, out.stdout + out.stderr
    plugins = subprocess.run([fo_cli, "plugins", "list"], capture_output=True, text=True,
                             env=env, timeout=300)
    line = next(ln for ln in plugins.stdout.splitlines() if "@label-grader/label-grader" in ln)
    assert line.split()[-1].endswith("label-grader")  # found under FIFTYONE_PLUGINS_DIR


def test_cli_review_and_ensemble_commands(synthetic_dataset, capsys):
    """The CLI drives cleanlab, a fix's undo, the fix log, saved views and the ensemble."""
    from grader import cli, review

    ds = synthetic_dataset
    ds.persistent = True
    # a planted class error, so cleanlab has a suspect to put in a saved view
    first = ds.first().ground_truth.detections[0]
    ds.set_label_values("ground_truth.detections.label", [{
        "sample_id": ds.first().id, "label_id": first.id,
        "value": "dog" if first.label == "cat" else "cat"}])
    assert cli.main(["cleanlab", "--dataset", ds.name, "--high-probability-threshold", "0.5"]) == 0
    s = ds.first()
    lid = s.ground_truth.detections[0].id
    review.relabel(ds, s.id, lid, new_label="dog" if s.ground_truth.detections[0].label == "cat" else "cat")
    before = ds.first().ground_truth.detections[0].label
    assert cli.main(["fix-log", "--dataset", ds.name]) == 0
    assert "relabel" in capsys.readouterr().out
    assert cli.main(["undo", "--dataset", ds.name]) == 0
    assert ds.first().ground_truth.detections[0].label != before
    assert cli.main(["save-views", "--dataset", ds.name]) == 0
    assert set(capsys.readouterr().out.split("\n")) & set(ds.list_saved_views())
    assert cli.main(["ensemble", "--dataset", ds.name]) == 0
    assert ds.count("ground_truth.detections.ensemble_any") == 18


def test_report_summary_keeps_long_info_short():
    from grader.report import RunReport

    rep = RunReport(judge="cleanlab")
    rep.info["class_list"] = [f"class{i}" for i in range(80)]
    rep.info["threshold"] = 0.6
    text = rep.summary()
    line = next(l for l in text.splitlines() if "class_list" in l)
    assert len(line) < 220 and line.endswith("(80 items)")
    assert "threshold: 0.6" in text
    assert rep.to_dict()["info"]["class_list"][-1] == "class79"  # the full value stays
