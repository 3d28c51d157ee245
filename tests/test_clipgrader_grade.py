"""ClipGrader on datasets: fields and tags written, re-runs, skips, evaluation, operators, CLI."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import fiftyone as fo
import fiftyone.operators as foo

from grader.judges.clipgrader import evaluate_clipgrader, grade_clipgrader, load_grader
from grader.judges.clipgrader.grade import TAG_BACKGROUND, TAG_BAD
from grader.judges.clipgrader.model import TINY_MODEL
from grader.images import load_rgb
from grader.render import crop_with_box

OP = "@label-grader/label-grader"


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return load_grader(TINY_MODEL, None)


def _gt(ds, attr):
    return ds.values(f"ground_truth.detections.{attr}", unwind=True)


def _tags(ds):
    """Per-detection tag lists (``unwind=True`` would flatten the lists themselves)."""
    return [t for per_sample in ds.values("ground_truth.detections.tags") for t in per_sample]


def test_grade_writes_fields_matching_the_model_and_tags(synthetic_dataset, tiny):
    ds = synthetic_dataset
    before = ds.values("ground_truth.detections.bounding_box", unwind=True)
    preds_before = ds.values("predictions.detections.bounding_box", unwind=True)
    rep = grade_clipgrader(ds, "ground_truth", grader=tiny, bad_threshold=0.34,
                           background_threshold=0.34, batch_size=5)
    assert rep.labels_scored == 18 and rep.samples_scored == 6 and not rep.skipped
    pg, pb, pbg = (np.array(_gt(ds, a), dtype=float) for a in
                   ("clipgrader_p_good", "clipgrader_p_bad", "clipgrader_p_background"))
    assert np.allclose(pg + pb + pbg, 1, atol=1e-5)
    assert np.allclose(np.array(_gt(ds, "clipgrader_p_not_good"), dtype=float), 1 - pg, atol=1e-6)
    q = _gt(ds, "clipgrader_quality")
    assert q == [("good", "bad", "background")[i] for i in np.stack([pg, pb, pbg], 1).argmax(1)]
    # the stored score is the model's verdict on this very box's rendered crop
    s = ds.first()
    det = s.ground_truth.detections[1]
    img = load_rgb(s.filepath)
    H, W = img.shape[:2]
    x, y, w, h = det.bounding_box
    crop = crop_with_box(img, [x * W, y * H, (x + w) * W, (y + h) * H], out_size=tiny.image_size)
    ref = tiny.probabilities(tiny.to_uint8_batch([crop]), [["cat", "dog"].index(det.label)],
                             ["cat", "dog"])
    assert det.clipgrader_p_good == pytest.approx(float(ref["p_good"][0]), abs=1e-5)
    # tags: exactly the labels past the thresholds
    tags = _tags(ds)
    assert [TAG_BAD in t for t in tags] == list(pb >= 0.34)
    assert [TAG_BACKGROUND in t for t in tags] == list(pbg >= 0.34)
    assert rep.tagged[TAG_BAD] == int((pb >= 0.34).sum())
    # user data untouched; run recorded
    assert ds.values("ground_truth.detections.bounding_box", unwind=True) == before
    assert ds.values("predictions.detections.bounding_box", unwind=True) == preds_before
    assert "clipgrader" in ds.list_runs()

    # a re-run with other thresholds replaces this judge's tags, and only them
    ds.select_labels(ids=[det.id], fields="ground_truth").tag_labels("reviewed:ok",
                                                                      label_fields=["ground_truth"])
    grade_clipgrader(ds, "ground_truth", grader=tiny, bad_threshold=1.01,
                     background_threshold=0.0)
    tags = _tags(ds)
    assert not any(TAG_BAD in t for t in tags) and all(TAG_BACKGROUND in t for t in tags)
    assert sum("reviewed:ok" in t for t in tags) == 1


def test_unscorable_labels_get_none_and_are_counted(synthetic_dataset, tiny):
    ds = synthetic_dataset
    grade_clipgrader(ds, "ground_truth", grader=tiny)
    s = ds.first()
    s.ground_truth.detections[0].bounding_box = [0.2, 0.2, 0.0, 0.3]   # degenerate now
    s.save()
    broken = ds.skip(1).first()
    broken.filepath = broken.filepath + ".missing.jpg"
    broken.save()
    rep = grade_clipgrader(ds, "ground_truth", grader=tiny)
    assert rep.skipped == {"degenerate_box": 1, "unreadable_image": 3}
    assert rep.labels_scored == 14
    assert ds.first().ground_truth.detections[0].clipgrader_p_good is None  # stale value cleared
    assert all(d.clipgrader_quality is None for d in ds.skip(1).first().ground_truth.detections)
    assert ds.first().ground_truth.detections[1].clipgrader_quality is not None


def test_grade_on_a_view_and_all_classes(synthetic_dataset, tiny):
    ds = synthetic_dataset
    view = ds.limit(2)
    rep = grade_clipgrader(view, "ground_truth", grader=tiny, all_classes=True)
    assert rep.labels_scored == 6
    assert ds.count("ground_truth.detections.clipgrader_p_good") == 6   # only the view
    classes = _gt(view, "clipgrader_class")
    assert all(c in ("cat", "dog", None) for c in classes)
    p_other = np.array(_gt(view, "clipgrader_p_other_class"), dtype=float)
    assert ((p_other >= 0) & (p_other <= 1)).all()
    # explicit classes: labels outside them are skipped and counted, not guessed
    rep = grade_clipgrader(ds, "ground_truth", grader=tiny, classes=["cat"])
    n_dog = ds.count_values("ground_truth.detections.label")["dog"]
    assert rep.skipped["unknown_class"] == n_dog


class _Constant:
    """A stand-in grader that always answers one quality (to check the evaluation arithmetic)."""

    def __init__(self, quality: int, image_size: int = 16):
        self.quality, self.image_size = quality, image_size
        self.model_name, self.pretrained, self.meta = "const", None, {}

    hwc_to_tensor = staticmethod(lambda arr: arr)

    def probabilities(self, batch, class_idx, classes, all_classes=False):
        n = len(class_idx)
        return {"quality": np.full(n, self.quality)}


def test_evaluation_metrics(synthetic_dataset):
    ds = synthetic_dataset
    always_good = evaluate_clipgrader(ds, grader=_Constant(0), min_size=5)
    n = always_good.num_examples
    conf = np.array(always_good.confusion)
    assert conf.sum() == n and (conf[:, 1:] == 0).all()
    assert always_good.false_positive_rate == 1.0
    assert always_good.accuracy == pytest.approx(conf[0, 0] / n)
    always_bg = evaluate_clipgrader(ds, grader=_Constant(2), min_size=5)
    assert always_bg.false_positive_rate == 0.0
    assert always_bg.accuracy == pytest.approx(np.array(always_bg.confusion)[2, 2] / n)
    assert set(always_bg.per_class) == {"cat", "dog"}
    assert sum(v["n"] for v in always_bg.per_class.values()) == n
    table = always_bg.table()
    assert "3-way accuracy" in table and "background" in table


def test_operators_grade_train_evaluate(synthetic_dataset, tmp_path):
    ds = synthetic_dataset
    model = {"model_name": TINY_MODEL, "pretrained": "", "device": "cpu"}
    out = foo.execute_operator(f"{OP}/grade_clipgrader", ctx={"view": ds.view(), "params": {
        "target": "DATASET", "field": "ground_truth", **model, "all_classes": True,
        "render_pool": "processes"}}).result
    assert out["labels_scored"] == 18
    assert ds.count("ground_truth.detections.clipgrader_class") + \
        len([c for c in _gt(ds, "clipgrader_class") if c is None]) == 18

    res = foo.execute_operator(f"{OP}/train_clipgrader", ctx={"view": ds.view(), "params": {
        "target": "DATASET", "gt_field": "ground_truth", "out_dir": str(tmp_path / "ck"),
        **model, "epochs": 1, "batch_size": 8, "lr": 1e-3, "min_size": 5,
        "val_fraction": 0.34}}).result
    ckpt = res["best_checkpoint"]
    assert ckpt and len(res["history"]) == 1

    ev = foo.execute_operator(f"{OP}/evaluate_clipgrader", ctx={"view": ds.view(), "params": {
        "target": "DATASET", "gt_field": "ground_truth", "checkpoint": ckpt, "min_size": 5}}).result
    assert 0 <= ev["accuracy"] <= 1 and "confusion" in ev["table"]

    out = foo.execute_operator(f"{OP}/grade_clipgrader", ctx={"view": ds.view(), "params": {
        "target": "DATASET", "field": "ground_truth", "checkpoint": ckpt}}).result
    assert out["labels_scored"] == 18 and out["info"]["checkpoint"] == ckpt


def test_cli_grade_and_eval(synthetic_dataset, capsys):
    from grader.judges.clipgrader.cli import add_clipgrader_commands
    import argparse

    parser = argparse.ArgumentParser()
    add_clipgrader_commands(parser.add_subparsers(dest="command", required=True))
    ds = synthetic_dataset
    args = parser.parse_args(["clipgrader-grade", "--dataset", ds.name, "--model", TINY_MODEL,
                              "--pretrained", "none", "--workers", "0"])
    assert args.func(args) == 0
    assert ds.count("ground_truth.detections.clipgrader_p_bad") == 18
    args = parser.parse_args(["clipgrader-eval", "--dataset", ds.name, "--model", TINY_MODEL,
                              "--pretrained", "none", "--min-size", "5"])
    assert args.func(args) == 0
    assert "false-positive rate" in capsys.readouterr().out


def test_operator_defaults_match_the_library():
    import ast
    from pathlib import Path
    from grader.judges.clipgrader import model

    src = (Path(__file__).resolve().parents[1] / "operators" / "clipgrader.py").read_text()
    consts = {t.id: n.value.value for n in ast.parse(src).body if isinstance(n, ast.Assign)
              for t in n.targets if isinstance(t, ast.Name) and isinstance(n.value, ast.Constant)}
    assert consts["DEFAULT_MODEL"] == model.DEFAULT_MODEL
    assert consts["DEFAULT_PRETRAINED"] == model.DEFAULT_PRETRAINED


def test_operator_forms_resolve(synthetic_dataset):
    from types import SimpleNamespace

    registry = foo.OperatorRegistry()
    ctx = SimpleNamespace(dataset=synthetic_dataset, selected=[], params={}, view=None)
    for name in ("grade_clipgrader", "train_clipgrader", "evaluate_clipgrader"):
        op = registry.get_operator(f"{OP}/{name}")
        assert op is not None, name
        prop = op.resolve_input(ctx)
        fields = prop.type.properties
        assert {"target", "model_name", "pretrained", "device"} <= set(fields)
        assert "ground_truth" in str(prop.to_json())
    assert op.config.allow_delegated_execution
