"""The default ensemble shipped with the package (used when there are no verified images)."""
from __future__ import annotations

import json

import fiftyone as fo
import numpy as np
import pytest

from grader import ensemble_prior as ep
from grader.fields import write_label_attr
from grader.noise import TRUTH_ATTR, inject_errors
from grader.score_stats import percentiles


def test_shipped_model_loads_and_is_complete():
    model = ep.load_default_model()
    assert model is not None, "grader/models/default_ensemble.json must ship with the package"
    assert model["format"] == "label-grader-default-ensemble/1"
    assert "coco128" in model["training_data"] and model["sklearn_version"]
    for issue in ("badloc", "swap", "spurious", "duplicate", "any"):
        full = model["issues"][issue]["full"]
        n = len(full["features"]) + len(full["interactions"])
        assert len(full["coef"]) == n and np.isfinite(full["coef"]).all()
        assert set(ep.base_scores(full["features"])) <= set(model["expects"]["full"])
        judges = {s.split(":")[0] for s in ep.base_scores(full["features"])}
        assert judges <= {"cleanlab", "zoom", "consistency"}
        # A detector-free variant exists, so grade(detector=None) still gets a model.
        assert ep.choose_variant(model, issue, [s for s in ep.base_scores(full["features"])
                                                if s.startswith("consistency:")]) == "consistency"
        # The box grader's variant reads its scores and wins whenever they are present
        # (grade() runs the shipped box grader by default on COCO classes) ...
        box = model["issues"][issue]["full+boxgrader"]
        box_scores = ep.base_scores(box["features"])
        assert {s.split(":")[0] for s in box_scores} == {"cleanlab", "zoom", "boxgrader", "consistency"}
        assert len(box["coef"]) == len(box["features"]) + len(box["interactions"])
        assert ep.choose_variant(model, issue, box_scores) == "full+boxgrader"
        # ... and the variant without it is used when the box grader did not run.
        assert ep.choose_variant(model, issue, ep.base_scores(full["features"])) == "full"
        no_zoom = [s for s in box_scores if not s.startswith("zoom:")]
        assert ep.choose_variant(model, issue, no_zoom) == "cleanlab+boxgrader+consistency"


def test_apply_is_the_logistic_formula():
    entry = {"features": ["a:x", "a:x:missing", "b:y"], "interactions": [[0, 2]],
             "coef": [2.0, -1.0, 0.5, 3.0], "intercept": -1.5}
    pct = {"a:x": np.array([0.2, np.nan, 0.9]), "b:y": np.array([0.4, 0.6, 1.0])}
    x = np.array([0.2, 0.5, 0.9])          # unscored -> 0.5 ...
    miss = np.array([0.0, 1.0, 0.0])       # ... with its missing indicator set
    y = pct["b:y"]
    z = 2.0 * x - 1.0 * miss + 0.5 * y + 3.0 * x * y - 1.5
    np.testing.assert_allclose(ep.apply_logistic(entry, pct), 1 / (1 + np.exp(-z)))
    model = {"issues": {"badloc": {"small": entry}}}
    assert ep.choose_variant(model, "badloc", ["a:x", "b:y", "c:z"]) == "small"
    assert ep.choose_variant(model, "badloc", ["a:x"]) is None      # judge b did not run
    # Judge b ran but wrote no 'y': it abstains there (0.5), the model is still used.
    s_b, info_b = ep.default_model_scores({"a:x": pct["a:x"], "b:other": y}, "badloc", model)
    z_b = 2.0 * x - 1.0 * miss + 0.5 * 0.5 + 3.0 * x * 0.5 - 1.5
    np.testing.assert_allclose(s_b[[0, 2]], 1 / (1 + np.exp(-z_b[[0, 2]])))
    assert np.isnan(s_b[1]) and info_b["absent"] == ["b:y"]     # no used judge scored label 1
    s, info = ep.default_model_scores(pct, "badloc", model)
    np.testing.assert_allclose(s, 1 / (1 + np.exp(-z)))
    assert info["chosen"] == "default_model" and info["inputs"] == ["a:x", "b:y"]
    assert ep.default_model_scores({"a:x": pct["a:x"]}, "badloc", model) is None


def test_rejects_a_foreign_json(tmp_path):
    p = tmp_path / "m.json"
    p.write_text(json.dumps({"issues": {}}))
    with pytest.raises(ValueError, match="not a label-grader default ensemble"):
        ep.load_default_model(p)
    with pytest.raises(FileNotFoundError):
        ep.load_default_model(tmp_path / "absent.json")


@pytest.fixture()
def unverified(tmp_path):
    """30 images, 5 boxes each, injected errors, no verified samples."""
    from conftest import write_random_images

    paths = write_random_images(tmp_path / "imgs", 30, size=(48, 64))
    rng = np.random.default_rng(3)
    ds = fo.Dataset()
    ds.add_samples([fo.Sample(filepath=p, ground_truth=fo.Detections(detections=[
        fo.Detection(label=str(rng.choice(["cat", "dog"])),
                     bounding_box=[0.02 + 0.18 * j, rng.uniform(0.05, 0.4), 0.15, 0.2])
        for j in range(5)])) for p in paths])
    ds.default_classes = ["cat", "dog"]
    ds.save()
    inject_errors(ds, "ground_truth", "noisy", rates={"badloc": 0.1, "swap": 0.1}, seed=0)
    yield ds
    ds.delete()


def _write_box_variant(ds, seed: int):
    """Random values of every score the shipped model's box grader variant reads; returns the
    model and that variant's badloc entry."""
    model = ep.load_default_model()
    box = model["issues"]["badloc"]["full+boxgrader"]
    for i, name in enumerate(ep.base_scores(box["features"])):
        _write_random(ds, name, seed + i)
    return model, box


def _write_random(ds, score: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    ids, lids = ds.values(["id", "noisy.detections.id"])
    write_label_attr(ds, "noisy", score.split(":", 1)[1],
                     {(s, l): float(rng.uniform()) for s, ls_ in zip(ids, lids) for l in ls_})


def test_compute_ensemble_uses_default_model_without_verified_images(unverified):
    from grader.ensemble import compute_ensemble

    ds = unverified
    model = ep.load_default_model()
    full = model["issues"]["badloc"]["full"]
    # Only cleanlab scores: no variant's judges all ran -> the vote.
    for i, name in enumerate(ep.base_scores(full["features"])):
        if name.startswith("cleanlab:"):
            _write_random(ds, name, i)
    rep = compute_ensemble(ds, "noisy", truth=TRUTH_ATTR)
    assert rep.info["learner"]["badloc"]["chosen"] == "vote"
    # Every score of the full variant present -> the shipped model, for every issue.
    for i, name in enumerate(ep.base_scores(full["features"])):
        _write_random(ds, name, i)
    # (the model's own outputs: not read together as exclusive issues, see the test below)
    rep = compute_ensemble(ds, "noisy", truth=TRUTH_ATTR, one_issue_per_label=False)
    info = rep.info["learner"]
    assert {info[i]["chosen"] for i in info} == {"default_model"}
    assert info["badloc"]["variant"] == "full"
    pct, ls = ep.label_percentiles(ds, "noisy")
    # the model reads each raw score's place in its training runs (its reference), not the
    # score's percentile in this dataset
    assert model["reference"]["quantiles"]
    want = dict(zip(ls.label_ids, ep.apply_logistic(full, ep.reference_percentiles(
        pct, ls.columns, model))))
    assert not np.allclose(list(want.values()), ep.apply_logistic(full, pct))
    got = dict(zip(*ds.values(["noisy.detections.id", "noisy.detections.ensemble_badloc"], unwind=True)))
    assert set(got) == set(want)
    np.testing.assert_allclose([got[k] for k in want], list(want.values()), rtol=1e-9)
    # Box grader scores as well (grade()'s default on COCO classes) -> its variant.
    box = model["issues"]["badloc"]["full+boxgrader"]
    for i, name in enumerate(ep.base_scores(box["features"])):
        if name.startswith("boxgrader:"):
            _write_random(ds, name, 100 + i)
    rep = compute_ensemble(ds, "noisy", truth=TRUTH_ATTR, one_issue_per_label=False)
    info = rep.info["learner"]
    assert {info[i]["variant"] for i in info if i != "any"} == {"full+boxgrader"}
    assert not [s for s in info["badloc"]["ignored"] if s.startswith("boxgrader:")]
    # ensemble_any: the noisy-OR of the per-issue scores as written (duplicate with the
    # cross-class duplicates fused in; with one_issue_per_label=False no issues are summed)
    assert info["any"]["variant"] == "noisy_or(badloc, swap, spurious, duplicate)"
    assert info["any"]["composed_from"] == "max(full+boxgrader, noisy_or)"
    pct, ls = ep.label_percentiles(ds, "noisy")
    per = {i: ep.default_model_scores(pct, i, raw=ls.columns)[0]
           for i in ("badloc", "swap", "spurious", "duplicate")}
    assert info["badloc"]["feature_space"] == "reference"
    def raw(attr):
        got = dict(zip(*ds.values(["noisy.detections.id", f"noisy.detections.{attr}"], unwind=True)))
        return np.array([got.get(l) or 0.0 for l in ls.label_ids], dtype=float)

    # ensemble_duplicate: the model's probability plus the raw consistency_duplicate (the
    # percentile the model reads loses the top's order), Platt-scaled (duplicate_composition)
    dplatt = model["duplicate_composition"]["platt"]
    d = np.clip(raw("consistency_duplicate"), 0, 1)
    assert d.max() > 0.1
    w = dplatt["p_weight"]   # the shipped model's: d orders the pairs, p breaks ties
    assert 0 < w < 1
    per["duplicate"] = 1 / (1 + np.exp(-(dplatt["a"] * (w * per["duplicate"] + d) + dplatt["b"])))
    assert info["duplicate"]["composed_with"] == "consistency:consistency_duplicate"
    x = raw("consistency_xdup")
    x = np.where(x >= 0.5, x, 0.0)
    got_dup = dict(zip(*ds.values(["noisy.detections.id", "noisy.detections.ensemble_duplicate"],
                                  unwind=True)))
    per["duplicate"] = 1 - (1 - per["duplicate"]) * (1 - x)
    np.testing.assert_allclose([got_dup[l] for l in ls.label_ids], per["duplicate"], rtol=1e-9)
    # (as written: the per-issue columns may have been re-read at this dataset's share)
    written = {a: raw(f"ensemble_{a}") for a in ("badloc", "swap", "spurious", "duplicate")}
    np.testing.assert_allclose(written["badloc"], per["badloc"], rtol=1e-2)
    want_any = 1 - np.prod([1 - written[i] for i in written], axis=0)
    assert "prevalence" not in info["any"]
    got_any = dict(zip(*ds.values(["noisy.detections.id", "noisy.detections.ensemble_any"],
                                  unwind=True)))
    np.testing.assert_allclose([got_any[l] for l in ls.label_ids], want_any, rtol=1e-9)
    pct, ls = ep.label_percentiles(ds, "noisy")
    want = dict(zip(ls.label_ids, ep.apply_logistic(box, ep.reference_percentiles(
        pct, ls.columns, model))))
    got = dict(zip(*ds.values(["noisy.detections.id", "noisy.detections.ensemble_badloc"], unwind=True)))
    np.testing.assert_allclose([got[k] for k in want], list(want.values()), rtol=1e-9)
    # read together as exclusive (the default), badloc, swap and spurious enter as their sum
    rep = compute_ensemble(ds, "noisy", truth=TRUTH_ATTR)
    assert rep.info["one_issue_each"] == ["badloc", "swap", "spurious"]
    assert rep.info["learner"]["any"]["variant"] == "noisy_or(sum(badloc, swap, spurious), duplicate)"
    col = {a: dict(zip(*ds.values(["noisy.detections.id", f"noisy.detections.ensemble_{a}"],
                                  unwind=True))) for a in ("badloc", "swap", "spurious", "duplicate", "any")}
    q = {a: np.array([col[a][l] for l in ls.label_ids]) for a in col}
    np.testing.assert_allclose(q["any"], 1 - (1 - np.clip(q["badloc"] + q["swap"] + q["spurious"], 0, 1))
                               * (1 - q["duplicate"]), rtol=1e-9)
    # learner="vote" stays available explicitly.
    rep = compute_ensemble(ds, "noisy", truth=TRUTH_ATTR, learner="vote")
    assert rep.info["learner"]["badloc"]["chosen"] == "vote"
    vote = dict(zip(*ds.values(["noisy.detections.id", "noisy.detections.ensemble_badloc"], unwind=True)))
    assert not np.allclose([vote[k] for k in want], list(want.values()))
    # Verified images with enough errors: the default model competes with the fitted ones
    # (a margin no fitted model can clear keeps it, with its own scores).
    ds.tag_samples("verified")
    rep = compute_ensemble(ds, "noisy", truth=TRUTH_ATTR, min_stack_positives=5, min_gain=1.0,
                           one_issue_per_label=False)
    info = rep.info["learner"]["badloc"]
    assert "default_model" in info["cv_auroc"] and info["folds"] >= 2
    assert info["chosen"] == "default_model" and info["variant"] == "full+boxgrader"
    got = dict(zip(*ds.values(["noisy.detections.id", "noisy.detections.ensemble_badloc"], unwind=True)))
    np.testing.assert_allclose([got[k] for k in want], list(want.values()), rtol=1e-9)
    ds.untag_samples("verified")


def test_hinge_feature_on_a_scores_top_percentiles():
    """``<score>:top<NN>``: a linear model's handle on a score whose evidence is in its last few
    percent; 0 where the score abstains; the score itself is what the entry needs."""
    from grader.score_stats import feature_base, stack_features

    pct = {"c:x": np.array([0.1, 0.96, 1.0, np.nan])}
    X, _ = stack_features(pct, ["c:x", "c:x:top95", "c:x:missing"])
    np.testing.assert_allclose(X[:, 1], [0.0, 0.2, 1.0, 0.0])
    assert feature_base("c:x:top95") == ("c:x", 0.95) and feature_base("c:x:missing") == ("c:x", None)
    assert feature_base("c:stop95") == ("c:stop95", None)
    assert ep.base_scores(["c:x", "c:x:top95", "c:x:missing", "d:y"]) == ["c:x", "d:y"]


def test_shipped_any_reads_cross_duplicates_and_duplicate_keeps_the_fusion():
    """Issue 22: ``ensemble_any`` weighs ``consistency_xdup`` itself (anchored on the model fitted
    on today's errors, bench/fit_default_ensemble.py anchor), so compute_ensemble does not fuse
    it again; ``ensemble_duplicate``'s entries do not read it and keep the noisy-OR."""
    model = ep.load_default_model()
    for variant, e in model["issues"]["any"].items():
        assert "consistency:consistency_xdup:top95" in e["features"], variant
        assert len(e["coef"]) == len(e["features"]) + len(e["interactions"])
        assert "anchored" in e
    assert "platt" in model["issues"]["any"]["full+boxgrader"]
    for e in model["issues"]["duplicate"].values():
        assert "consistency:consistency_xdup" not in ep.base_scores(e["features"])


def test_reference_position_reads_a_value_against_stored_quantiles():
    """Levels interpolate between quantiles; a point mass (a run of equal quantiles) gives its
    middle, as tied values share their average rank; outside the range: the ends."""
    q = [0.0, 0.0, 0.0, 1.0, 2.0, 3.0]        # levels 0, 0.2, ..., 1
    got = ep.reference_position(np.array([0.0, 1.5, 2.0, -1.0, 5.0, np.nan]), q)
    np.testing.assert_allclose(got[:5], [0.2, 0.7, 0.8, 0.1, 1.0])
    assert np.isnan(got[5])


def test_reference_features_do_not_depend_on_the_share_of_errors():
    """The point of the reference: with dataset percentiles a label's score falls as more of
    the other labels look suspect (the model then assumes the share of errors it was fitted
    at); read against the training runs' distribution it stays. A judge abstaining on a label
    (NaN percentile) still abstains."""
    entry = {"features": ["j:s"], "interactions": [], "coef": [8.0], "intercept": -6.0}
    model = {"issues": {"badloc": {"v": entry}},
             "reference": {"quantiles": {"j:s": list(np.linspace(0.0, 1.0, 101))}}}
    few = np.r_[np.full(95, 0.1), np.full(5, 0.95)]        # 5 % suspect
    many = np.r_[np.full(70, 0.1), np.full(30, 0.95)]      # 30 % suspect
    scores = {}
    for name, raw in (("few", few), ("many", many)):
        pct = {"j:s": percentiles(raw)}
        on_ref, info = ep.default_model_scores(pct, "badloc", model, raw={"j:s": raw})
        on_pct, _ = ep.default_model_scores(pct, "badloc", model)
        assert info["feature_space"] == "reference"
        scores[name] = (on_ref[-1], on_pct[-1])
    assert scores["few"][0] == pytest.approx(scores["many"][0])          # same raw, same score
    assert scores["many"][1] < scores["few"][1] - 0.1                    # percentiles: it fell
    pct = {"j:s": np.array([np.nan, 0.5])}
    got = ep.reference_percentiles(pct, {"j:s": np.array([0.9, 0.9])}, model)["j:s"]
    assert np.isnan(got[0]) and got[1] == pytest.approx(0.9)
    # a score the reference lacks keeps its dataset percentile
    assert ep.reference_percentiles({"k:t": pct["j:s"]}, {"k:t": np.ones(2)}, model)["k:t"] is pct["j:s"]


def test_shipped_model_has_a_reference_for_every_score_its_box_grader_variant_reads():
    model = ep.load_default_model()
    ref = model["reference"]
    for issue, entries in model["issues"].items():
        for name in ep.base_scores(entries["full+boxgrader"]["features"]):
            q = np.asarray(ref["quantiles"][name], dtype=float)
            assert len(q) == ref["levels"] and np.isfinite(q).all(), name
            assert (np.diff(q) >= 0).all(), name
    assert "out-of-fold" in ref["built_from"]


def test_compute_ensemble_reads_only_the_named_judges_against_the_reference(unverified):
    """Scores from other models than the shipped ones (the caller's predictions for cleanlab)
    are read as percentiles; the rest against the reference."""
    from grader.ensemble import compute_ensemble

    ds = unverified
    model, box = _write_box_variant(ds, 200)
    rep = compute_ensemble(ds, "noisy", truth=TRUTH_ATTR,
                           reference_judges=["boxgrader", "consistency", "zoom"],
                           one_issue_per_label=False)
    assert rep.info["reference_judges"] == ["boxgrader", "consistency", "zoom"]
    pct, ls = ep.label_percentiles(ds, "noisy")
    raw = {k: c for k, c in ls.columns.items() if not k.startswith("cleanlab:")}
    want = ep.apply_logistic(box, ep.reference_percentiles(pct, raw, model))
    got = dict(zip(*ds.values(["noisy.detections.id", "noisy.detections.ensemble_badloc"], unwind=True)))
    np.testing.assert_allclose([got[k] for k in ls.label_ids], want, rtol=1e-9)
    everything = ep.apply_logistic(box, ep.reference_percentiles(pct, ls.columns, model))
    assert not np.allclose(want, everything)


def test_grade_names_the_judges_that_ran_with_the_shipped_models():
    """cleanlab's scores count as the shipped model's only on predictions run_detector wrote with
    YOLOX-Nano at its defaults (recorded on the field), zoom's with the shipped detector, the box
    grader's without a checkpoint of the caller's."""
    from types import SimpleNamespace

    from grader.detectors.runner import SHIPPED_PREDICTIONS
    from grader.fields import record_field_model
    from grader.pipeline import GradeContext, reference_judges

    ds = fo.Dataset()
    ds.add_sample_field("p", fo.EmbeddedDocumentField, embedded_doc_type=fo.Detections)
    ds.add_sample_field("mine", fo.EmbeddedDocumentField, embedded_doc_type=fo.Detections)
    record_field_model(ds, "p", SHIPPED_PREDICTIONS)

    def ctx(detector="yolox-nano", pred="p", **options):
        return GradeContext(collection=ds, gt_field="gt", pred_field=pred, options=options,
                            progress=lambda *a: None, detector=SimpleNamespace(name=detector))

    every = ["boxgrader", "cleanlab", "consistency", "zoom"]
    assert reference_judges(ctx()) == every
    assert reference_judges(ctx(zoom={"batch_size": 64})) == every
    assert reference_judges(ctx(pred="mine")) == ["boxgrader", "consistency", "zoom"]   # caller's predictions
    assert reference_judges(ctx(detector="yolov3-tiny")) == ["boxgrader", "cleanlab", "consistency"]
    assert reference_judges(ctx(zoom={"context": 3.0})) == ["boxgrader", "cleanlab", "consistency"]
    assert reference_judges(ctx(cleanlab={"high_probability_threshold": 0.9})) == \
        ["boxgrader", "consistency", "zoom"]
    assert reference_judges(ctx(boxgrader={"checkpoint": "mine.pt"})) == ["cleanlab", "consistency", "zoom"]
    record_field_model(ds, "p", {**SHIPPED_PREDICTIONS, "input_size": 640})   # another input size
    assert reference_judges(ctx()) == ["boxgrader", "consistency", "zoom"]
    ds.delete()


def _calibrated(n: int, share: float, trained_at: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels (True = error) at ``share`` and a calibrated model's probabilities for them at
    ``trained_at``: errors' scores ~ N(1.5, 1), clean ~ N(-1.5, 1)."""
    rng = np.random.default_rng(seed)
    y = rng.random(n) < share
    s = np.where(y, rng.normal(1.5, 1, n), rng.normal(-1.5, 1, n))
    l1, l0 = np.exp(-(s - 1.5) ** 2 / 2), np.exp(-(s + 1.5) ** 2 / 2)
    return y, trained_at * l1 / (trained_at * l1 + (1 - trained_at) * l0)


def test_probabilities_are_re_read_at_the_datasets_share_of_errors():
    for share in (0.25, 0.5):
        y, p = _calibrated(20000, share, 0.05, seed=int(share * 100))
        p[:10] = np.nan
        q, est = ep.adapt_to_prevalence(p, 0.05)
        assert est == pytest.approx(y[10:].mean(), abs=0.02)
        assert np.nanmean(q) == pytest.approx(y[10:].mean(), abs=0.02)
        assert np.isnan(q[:10]).all()
        ok = np.isfinite(p)
        assert (np.argsort(q[ok], kind="stable") == np.argsort(p[ok], kind="stable")).all()
        assert np.nanmean(p) < share - 0.05                    # before: the training share
    y, p = _calibrated(20000, 0.05, 0.05, seed=1)                # at the training share: kept
    q, est = ep.adapt_to_prevalence(p, 0.05)
    assert est == pytest.approx(0.05, abs=0.01) and np.abs(q - p).max() < 0.02
    # rows after n_estimate (labels a reviewer fixed) are adjusted but do not count
    q2, est2 = ep.adapt_to_prevalence(np.r_[p, np.full(5000, 0.99)], 0.05, n_estimate=len(p))
    assert est2 == pytest.approx(est) and np.allclose(q2[:len(p)], q) and (q2[len(p):] > 0.9).all()
    assert ep.adapt_to_prevalence(np.r_[p, np.full(5000, 0.99)], 0.05)[1] > est + 0.1


def test_training_rate_is_the_share_the_scale_was_fitted_at():
    model = ep.load_default_model()
    entry = model["issues"]["badloc"]["full+boxgrader"]
    info = {"chosen": "default_model", "variant": "full+boxgrader"}
    assert ep.training_rate(model, "badloc", info) == entry["platt"]["error_rate"]
    assert ep.training_rate(model, "duplicate", {**info, "composed_with": "x"}) == \
        model["duplicate_composition"]["platt"]["error_rate"]
    n = model["issues"]["badloc"]["full"]["n_train"]
    assert ep.training_rate(model, "badloc", {**info, "variant": "full"}) == pytest.approx(
        n["errors"] / (n["errors"] + n["clean"]))


def test_the_shipped_probabilities_rise_with_a_higher_share_of_errors_only():
    """More errors than the model was fitted at: its probabilities are re-read at the share
    estimated here. Fewer, a duplicate (copy and source both score), or another learner: kept."""
    from grader.ensemble import _at_this_prevalence

    model = ep.load_default_model()
    rate = model["issues"]["badloc"]["full+boxgrader"]["platt"]["error_rate"]
    info = {"chosen": "default_model", "variant": "full+boxgrader"}
    y, p = _calibrated(5000, 0.3, rate, seed=2)
    q, got = _at_this_prevalence((p, info), "badloc", model)
    assert got["prevalence"]["applied"] and got["prevalence"]["estimated"] == pytest.approx(0.3, abs=0.03)
    assert q.mean() == pytest.approx(y.mean(), abs=0.03) and p.mean() < y.mean() - 0.05
    _, p_few = _calibrated(5000, 0.01, rate, seed=3)
    q, got = _at_this_prevalence((p_few, info), "badloc", model)
    assert q is p_few and not got["prevalence"]["applied"]
    assert _at_this_prevalence((p, info), "duplicate", model)[0] is p
    assert _at_this_prevalence((p, {**info, "chosen": "self:hgb"}), "badloc", model)[0] is p


def test_compute_ensemble_records_the_share_it_read_the_model_at(unverified):
    from grader.ensemble import compute_ensemble

    ds = unverified
    model, box = _write_box_variant(ds, 300)
    info = compute_ensemble(ds, "noisy", truth=TRUTH_ATTR).info["learner"]
    assert {"trained_at", "estimated", "applied"} <= set(info["badloc"]["prevalence"])
    assert "prevalence" not in info["duplicate"]
    off = compute_ensemble(ds, "noisy", truth=TRUTH_ATTR, adapt_prevalence=False)
    assert "prevalence" not in off.info["learner"]["badloc"]


def test_one_issue_each_reads_the_issues_as_exclusive():
    p = np.array([[0.8, 0.01, 0.99, 0.01],     # sure it is spurious: not also badly placed
                  [0.8, 0.01, 0.01, 0.01],     # only badloc speaks: stays near its own
                  [0.3, np.nan, 0.2, 0.1],     # swap unknown
                  [0.0, 0.0, 0.0, 0.0]])
    q = ep.one_issue_each(p)
    assert q[0, 0] < 0.05 and q[0, 2] > 0.95
    assert abs(q[1, 0] - 0.8) < 0.02
    assert q[1, 0] > q[0, 0]                   # the spurious box falls behind in the badloc queue
    assert np.isnan(q[2, 1]) and np.all(np.isfinite(q[2, [0, 2, 3]]))
    assert np.all(np.nansum(q, axis=1) < 1) and np.all(q[3] == 0)
    # each issue's odds against "clean" are kept: q_k / q_clean = p_k / (1 - p_k)
    clean = 1 - np.nansum(q[2])
    np.testing.assert_allclose(q[2, 0] / clean, 0.3 / 0.7)
    # one issue alone keeps its order
    col = np.array([[0.1, 0.0], [0.5, 0.0], [0.9, 0.0]])
    assert list(np.argsort(ep.one_issue_each(col)[:, 0])) == [0, 1, 2]
    # "no object" read first: a box on nothing, which the swap model is even surer of (a
    # random class), stays at the top of the spurious queue; flat, a clean box with a middling
    # spurious score would pass it
    p = np.array([[0.01, 0.99, 0.90],          # badloc, swap, spurious
                  [0.01, 0.01, 0.40]])
    flat, tree = ep.one_issue_each(p), ep.one_issue_each(p, no_object=2)
    assert flat[0, 2] < flat[1, 2]
    np.testing.assert_allclose(tree[:, 2], p[:, 2])
    assert tree[0, 2] > tree[1, 2]
    # the issues of an object's label share what "no object" leaves, exclusive among themselves
    o = p[:, :2] / (1 - p[:, :2])
    np.testing.assert_allclose(tree[:, :2], (1 - p[:, [2]]) * o / (1 + o.sum(1, keepdims=True)))
    assert np.all(tree.sum(1) <= 1)


def test_compute_ensemble_reads_the_shipped_issues_as_exclusive(unverified):
    from grader.ensemble import compute_ensemble

    ds = unverified
    model, box = _write_box_variant(ds, 500)
    fields = ["noisy.detections.ensemble_" + i for i in ("badloc", "swap", "spurious", "duplicate", "any")]
    off = compute_ensemble(ds, "noisy", truth=TRUTH_ATTR, one_issue_per_label=False)
    assert "one_issue_each" not in off.info
    before = np.array(ds.values(fields, unwind=True), dtype=float).T
    rep = compute_ensemble(ds, "noisy", truth=TRUTH_ATTR)
    after = np.array(ds.values(fields, unwind=True), dtype=float).T
    from grader.scores import EXCLUSIVE_ISSUES, GT_ISSUES, NO_OBJECT_ISSUE

    assert rep.info["one_issue_each"] == ["badloc", "swap", "spurious"] == list(EXCLUSIVE_ISSUES)
    assert set(EXCLUSIVE_ISSUES) < set(GT_ISSUES) and NO_OBJECT_ISSUE == "spurious"
    np.testing.assert_allclose(after[:, :3], ep.one_issue_each(before[:, :3], no_object=2),
                               rtol=1e-9)
    # spurious ("no object") keeps its own probability; badloc and swap share what it leaves
    np.testing.assert_allclose(after[:, 2], before[:, 2])
    # duplicates (a relation between two boxes, which comes with the others) are unchanged;
    # ensemble_any reads the three together as one chance, their sum, noisy-OR the duplicate's
    np.testing.assert_allclose(after[:, 3], before[:, 3])
    np.testing.assert_allclose(before[:, 4], 1 - np.prod(1 - before[:, :4], axis=1), rtol=1e-9)
    np.testing.assert_allclose(after[:, 4], 1 - (1 - after[:, :3].sum(1)) * (1 - after[:, 3]),
                               rtol=1e-9)
    assert np.abs(after[:, 4] - before[:, 4]).max() < 1e-3   # (the two agree where p is small)
    assert (after[:, :3] <= before[:, :3] + 1e-12).all() and (after[:, :3] < before[:, :3]).any()
    from grader.ensemble import decisions_since_ensemble

    assert decisions_since_ensemble(ds, "noisy")[1]["one_issue_per_label"] is True
