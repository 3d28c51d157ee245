"""Classes no shipped model knows (real raccoon photos): a new user's default ``grade()`` ranks
injected errors above clean boxes, and its ensemble is fitted on these data, not taken from COCO."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import raccoon_subset

from grader import evaluate as ev
from grader.noise import CLEAN, TRUTH_ATTR, inject_errors


@pytest.fixture(scope="module")
def raccoon48():
    ds = raccoon_subset(48, "lg-test-raccoon48")
    inject_errors(ds, "ground_truth", "noisy",
                  rates={"badloc": 0.12, "spurious": 0.12, "duplicate": 0.12}, seed=7)
    yield ds
    ds.delete()


def test_default_grade_ranks_injected_errors_on_unknown_classes(raccoon48, tmp_path, monkeypatch):
    from grader.ensemble_prior import default_model_scores, label_percentiles
    from grader.pipeline import grade

    monkeypatch.setenv("LABEL_GRADER_CACHE", str(tmp_path / "cache"))
    ds = raccoon48
    boxes = ds.values("noisy.detections.bounding_box", unwind=True)
    rep = grade(ds, "noisy")
    assert ds.values("noisy.detections.bounding_box", unwind=True) == boxes
    # no shipped detector knows raccoons: YOLOX-Nano is fine-tuned on them (on a CPU too)
    assert "finetune" in rep.reports and rep.pred_field == "lg_predictions"
    assert set(ds.distinct("lg_predictions.detections.label")) <= {"raccoon"}
    ens = rep.reports["ensemble"].info
    assert ens["default_model_fit"]["fits"] is False
    assert "boxgrader" in ens["self_supervised"]["judges"]
    assert {v["chosen"] for v in ens["learner"].values()} - {"vote"}   # fitted here, not COCO's
    truth = np.array(ds.values(f"noisy.detections.{TRUTH_ATTR}", unwind=True), dtype=object)
    any_ = np.array(ds.values("noisy.detections.ensemble_any", unwind=True), dtype=float)
    err = truth != CLEAN
    assert err.sum() >= 10
    got = {"any": ev.auroc(err, np.nan_to_num(any_, nan=0.0))}
    for issue in ("badloc", "spurious", "duplicate"):
        s = np.array(ds.values(f"noisy.detections.ensemble_{issue}", unwind=True), dtype=float)
        sel = (truth == issue) | (truth == CLEAN)
        got[issue] = ev.auroc(truth[sel] == issue, np.nan_to_num(s[sel], nan=0.0))
    pct, _ = label_percentiles(ds, "noisy")
    shipped = ev.auroc(err, np.nan_to_num(default_model_scores(pct, "any")[0], nan=0.0))
    # 48 images, ~70 boxes: little to learn from. Measured (2026-12-08): any 0.949 (the shipped
    # model on the same scores 0.806), badloc 0.993, spurious 0.915, duplicate 0.972.
    assert got["any"] >= 0.85 and got["any"] >= shipped - 0.03, (got, shipped)
    for issue in ("badloc", "spurious", "duplicate"):
        assert got[issue] > 0.85, (issue, got)
