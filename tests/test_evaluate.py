"""Metrics checked against scikit-learn; evaluation tables on injected errors; Brain baseline."""
from __future__ import annotations

import math

import fiftyone as fo
import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from grader import evaluate as ev
from grader.fields import write_label_attr
from grader.noise import TRUTH_ATTR, inject_errors
from grader.review_cost import expected_hits_curve, review_cost
from grader.scores import GT_ISSUES

FIXED = [
    ([0, 1, 1, 0, 1, 0, 0, 1], [0.1, 0.9, 0.8, 0.3, 0.35, 0.2, 0.7, 0.6]),
    ([1, 0, 1, 0, 0, 0], [0.5, 0.5, 0.5, 0.1, 0.5, 0.9]),            # heavy ties
    ([0, 0, 1, 0, 1, 1, 0, 0, 0, 1], [1, 1, 1, 0, 0, 0, 0, 1, 0, 1]),  # yes/no flag
]


@pytest.mark.parametrize("y,s", FIXED)
def test_auroc_and_ap_match_sklearn(y, s):
    assert ev.auroc(y, s) == pytest.approx(roc_auc_score(y, s))
    assert ev.average_precision(y, s) == pytest.approx(average_precision_score(y, s))


def test_metrics_match_sklearn_on_random_arrays():
    rng = np.random.default_rng(0)
    for _ in range(30):
        n = int(rng.integers(5, 300))
        y = rng.random(n) < rng.uniform(0.05, 0.5)
        if y.all() or not y.any():
            continue
        s = np.round(rng.normal(size=n) + y * rng.uniform(0, 2), int(rng.integers(0, 3)))
        assert ev.auroc(y, s) == pytest.approx(roc_auc_score(y, s))
        assert ev.average_precision(y, s) == pytest.approx(average_precision_score(y, s))


def test_precision_recall_at_top_with_ties():
    y = [1, 0, 1, 0, 0, 1, 0, 0, 0, 0]
    s = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    assert ev.precision_at_k(y, s, 3) == pytest.approx(2 / 3)
    assert ev.recall_at_fraction(y, s, 0.1) == pytest.approx(1 / 3)   # top 1 of 10
    assert ev.recall_at_fraction(y, s, 0.3) == pytest.approx(2 / 3)
    assert ev.recall_at_fraction(y, s, 0.3, n_pos_total=6) == pytest.approx(2 / 6)
    # A tie straddling the cut-off is credited its expected share, not dataset order.
    y2, s2 = [1, 0, 0, 1], [1, 1, 1, 1]
    assert ev.precision_at_k(y2, s2, 2) == pytest.approx(0.5)
    assert ev.expected_hits_at_k(y2, s2, 1) == pytest.approx(0.5)
    curve = expected_hits_curve([1, 0, 1, 0], [3, 2, 2, 0])
    assert np.allclose(curve, [0, 1, 1.5, 2, 2])


def test_review_cost_ranked_beats_random():
    y = np.zeros(100, dtype=bool)
    y[:10] = True
    s = -np.arange(100.0)   # perfect ranking
    rc = review_cost(s, y, budgets=(0.1, 20), check_s=3, draw_s=80)
    b10 = rc["budgets"][0]
    assert b10["checks"] == 10 and b10["found_ranked"] == 10 and b10["found_random"] == pytest.approx(1)
    assert b10["time_ranked_s"] == pytest.approx(10 * 3 + 10 * 80)
    assert rc["budgets"][1]["checks"] == 20
    assert rc["recall_targets"]["80%"]["checks_ranked"] == 8
    assert rc["recall_targets"]["80%"]["checks_random"] == 80
    assert rc["redraw_all_s"] == 100 * 80 and rc["check_all_s"] == 300 + 800


@pytest.fixture()
def noisy(many_boxes_ds):
    inject_errors(many_boxes_ds, "ground_truth", "noisy",
                  rates={"badloc": 0.1, "swap": 0.1, "spurious": 0.05, "overlooked": 0.05,
                         "duplicate": 0.05}, seed=0)
    return many_boxes_ds


@pytest.fixture()
def many_boxes_ds(tmp_path):
    from conftest import write_random_images

    paths = write_random_images(tmp_path / "imgs", 20, size=(64, 80))
    rng = np.random.default_rng(5)
    ds = fo.Dataset()
    samples = []
    for p in paths:
        gt, pr = [], []
        for j in range(5):
            box = [0.02 + 0.18 * j, rng.uniform(0.05, 0.4), 0.15, rng.uniform(0.1, 0.3)]
            lab = str(rng.choice(["cat", "dog"]))
            gt.append(fo.Detection(label=lab, bounding_box=box))
            pr.append(fo.Detection(label=lab, bounding_box=box, confidence=0.99))
        samples.append(fo.Sample(filepath=p, ground_truth=fo.Detections(detections=gt),
                                 predictions=fo.Detections(detections=pr)))
    ds.add_samples(samples)
    ds.default_classes = ["cat", "dog"]
    ds.save()
    yield ds
    ds.delete()


def _write_scores(ds, field, attr, fn):
    ids, lids, truth = ds.values(["id", f"{field}.detections.id", f"{field}.detections.{TRUTH_ATTR}"])
    vals = {(s, l): fn(t) for s, ls_, ts in zip(ids, lids, truth) for l, t in zip(ls_, ts)}
    write_label_attr(ds, field, attr, vals)


def test_evaluate_judges_scores_each_error_type(noisy):
    ds = noisy
    # A perfect badloc judge (cleanlab convention: low = suspect) and a useless swap judge.
    _write_scores(ds, "noisy", "cleanlab_badloc", lambda t: 0.05 if t == "badloc" else 0.9)
    _write_scores(ds, "noisy", "cleanlab_swap", lambda t: 0.5)
    res = ev.evaluate_judges(ds, "noisy", pred_field=None, exclude_tag=None, k=5)
    assert res["counts"]["badloc"] == 10 and res["counts"]["swap"] == 10
    row = res["gt"]["badloc"]["cleanlab:cleanlab_badloc"]
    assert row["auroc"] == pytest.approx(1.0) and row["ap"] == pytest.approx(1.0)
    assert row["p@5"] == pytest.approx(1.0)
    n = row["n"]
    assert row["recall@10%"] == pytest.approx(min(math.ceil(0.1 * n), 10) / 10)
    assert res["gt"]["swap"]["cleanlab:cleanlab_swap"]["auroc"] == pytest.approx(0.5)
    assert res["gt"]["swap"]["cleanlab:cleanlab_badloc"]["auroc"] == pytest.approx(0.5)
    text = ev.format_table(res)
    assert "== badloc" in text and "cleanlab:cleanlab_badloc" in text

    # The trusted subset is left out of the evaluation.
    first = ds.first()
    ds.select(first.id).tag_samples("verified")
    res2 = ev.evaluate_judges(ds, "noisy", pred_field=None)
    assert res2["excluded_samples"] == 1
    n_first = len(first["noisy"].detections)
    kinds = GT_ISSUES + ("clean",)
    assert sum(res2["counts"][k] for k in kinds) == sum(res["counts"][k] for k in kinds) - n_first

    # Duplicates are evaluated like every GT issue; the consistency judge finds them.
    from grader.judges.consistency import run_consistency

    assert res["counts"]["duplicate"] == 5
    run_consistency(ds, "noisy")
    res3 = ev.evaluate_judges(ds, "noisy", pred_field=None, exclude_tag=None)
    assert res3["gt"]["duplicate"]["consistency:consistency_duplicate"]["auroc"] > 0.95
    assert res3["gt"]["duplicate"]["consistency:consistency_dup_iou"]["auroc"] > 0.95


def test_brain_baseline_runs_and_lands_in_table(noisy):
    ds = noisy
    rep = ev.run_brain_mistakenness(ds, "noisy", "predictions")
    assert "mistakenness" in rep.fields
    schema = ds.get_field_schema(flat=True)
    assert "noisy.detections.mistakenness" in schema and "noisy.detections.possible_spurious" in schema
    res = ev.evaluate_judges(ds, "noisy", pred_field="predictions", exclude_tag=None)
    # Predictions are the clean boxes with confidence 0.99: a swapped GT label disagrees with
    # a confident matched prediction, so Brain's class mistakenness finds every swap.
    assert res["gt"]["swap"]["brain:mistakenness"]["auroc"] == pytest.approx(1.0)
    # Spurious GT boxes have no matching prediction -> possible_spurious.
    assert res["gt"]["spurious"]["brain:possible_spurious"]["auroc"] > 0.9
    # Deleted boxes are still predicted with confidence 0.99 > 0.95 -> possible_missing (so are
    # the predictions of badloc boxes shifted below IoU 0.5: false alarms, hence AUROC < 1).
    ov = res["overlooked"]["brain:possible_missing"]
    assert ov["coverage"] == pytest.approx(1.0) and ov["auroc"] > 0.9
    # Every deleted box is still predicted: the ceiling is 1; reviewing 2x as many candidates
    # as deleted boxes finds at least as many as 1x, never more than the ceiling.
    assert res["overlooked_ceiling"] == pytest.approx(1.0)
    assert 0 < ov["recall@1xN"] <= ov["recall@2xN"] <= res["overlooked_ceiling"]
    # Re-running replaces the previous brain run instead of failing.
    ev.run_brain_mistakenness(ds, "noisy", "predictions")


def test_brain_needs_confidence(synthetic_dataset):
    ds = synthetic_dataset
    ds.set_values("predictions.detections.confidence",
                  [[None] * len(x) for x in ds.values("predictions.detections")])
    with pytest.raises(ValueError, match="no confidence"):
        ev.run_brain_mistakenness(ds, "ground_truth", "predictions")
