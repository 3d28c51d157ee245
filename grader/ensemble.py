"""Reliability-weighted ensemble of the judges' per-label scores (REVEAL-style).

REVEAL (seed 003) estimates each method's accuracy on a small human-verified subset and sums
the methods' votes weighted by those accuracies. Here the votes are continuous scores, so:

1. every present judge score (``grader.scores.SCORES``, direction-aware) is turned into a
   percentile rank over the labels in scope, so scales (cleanlab's 0-1 quality, Brain's
   mistakenness, yes/no flags) become comparable. When most labels share a judge's
   least-suspect value exactly (cleanlab's 1.0 for a box with no prediction near it), the
   judge abstains on those labels (``abstain_floor``);
2. on the trusted subset (samples tagged ``verified`` by default) each score's reliability for
   an issue is its AUROC at separating labels with that issue from clean labels, measured on
   the trusted labels the judge scored. Small trusted subsets give noisy AUROCs, so the
   estimate is shrunk toward a prior: ``(n_pos * AUROC + prior_strength * a0) / (n_pos +
   prior_strength)``, with ``a0 = prior_auroc`` (0.75) for a judge registered for the issue
   (every judge for ``any``) and 0.5 for the others; with fewer than ``min_positives`` /
   ``min_negatives`` scored trusted labels (Brain scores only boxes matched to a prediction)
   ``a0`` alone is used. The weight is ``max(0, 2 * (AUROC - 0.5)) ** sharpness``: a judge at
   chance, or one that is wrong on the trusted subset, gets 0. Every score may contribute to
   every issue when the trusted labels show it helps;
3. a label's ``ensemble_<issue>`` combines the percentiles of the judges that scored it (the
   others abstain): by default a weighted Stouffer z (``sum(w * z) / sqrt(sum(w**2))`` with
   ``z = probit(percentile)``, mapped back to (0, 1)), so agreeing judges add up and one
   reliable judge's extreme rank is not averaged away; ``method="mean"`` takes the weighted
   mean of percentiles. ``ensemble_any`` is the same with weights measured for "any error".

Without enough verified labels to fit a stacker for an issue (``learner="auto"``), the
default ensemble shipped with the package is used where the judges it needs ran
(:mod:`grader.ensemble_prior`: per-issue logistic regressions over the same percentile
features, fitted on coco128 with injected errors; ``info['learner'][issue]['chosen'] ==
"default_model"``). ``default_model=False`` (or ``learner="vote"``) keeps the vote below.

Fallback, when there is no trusted subset or it holds fewer than ``min_positives`` labels with
the issue (or fewer than ``min_negatives`` clean ones): equal weights over the scores that are
registered for that issue (or for ``any``). ``info['weights_source'][issue]`` says which.

Truth on the trusted subset: with ``truth="tags"`` a label tagged ``error:<issue>`` has that
issue and every other label of a trusted sample is clean; ``truth=<attribute>`` reads the issue
from a detection attribute instead (``injected_error`` after :func:`grader.noise.inject_errors`).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .classes import known_class_share
from .ensemble_prior import (adapt_to_prevalence, default_model_scores, one_issue_each,
                             training_rate)
from .ensemble_reviews import extend_with_reviews, review_rows, summary
from .ensemble_selfsup import (apply_selection, collect_injected, select_models,
                               selection_from_json, selection_to_json)
from .score_stats import (DEFAULT_PLUS, abstaining_percentiles, floor_as_abstention, logit, platt,
                          percentiles, stack_features)
from .score_stats import finite_or as _finite_or
from .score_stats import make_model as _make_model
from .parallel import one_thread as _one_thread
from .evaluate import TRUSTED_TAG, auroc, present_score_specs, read_label_scores
from .fields import last_run, read_detections, record_run, set_label_tag, write_label_attrs
from .noise import CLEAN
from .report import RunReport
from .scores import EXCLUSIVE_ISSUES, GT_ISSUES, NO_OBJECT_ISSUE, REVIEWED_TAGS, SCORES, ScoreSpec

JUDGE = "ensemble"
RUN_KEY = "label_grader_ensemble"
ERROR_TAG_PREFIX = "error:"
ISSUES = GT_ISSUES


def reliability_weight(auc: float, sharpness: float = 2.0) -> float:
    """REVEAL-style weight from a measured AUROC: 0 at chance or worse, 1 for a perfect judge."""
    if auc is None or not math.isfinite(auc):
        return 0.0
    return max(0.0, 2.0 * (auc - 0.5)) ** sharpness


def combine(columns: dict[str, np.ndarray], weights: dict[str, float],
            method: str = "mean") -> np.ndarray:
    """Combine percentile columns per label; judges that did not score a label abstain.

    ``mean``: weighted mean of the percentiles. ``stouffer``: weighted Stouffer z,
    ``sum(w * z) / sqrt(sum(w**2))`` with ``z = probit(percentile)``, mapped back to (0, 1):
    agreeing judges add up and one judge's extreme rank is not averaged away.
    """
    from scipy.special import ndtr, ndtri

    n = len(next(iter(columns.values()))) if columns else 0
    num, den = np.zeros(n), np.zeros(n)
    for name, w in weights.items():
        if w <= 0:
            continue
        p = columns[name]
        ok = np.isfinite(p)
        if method == "stouffer":
            m = max(int(ok.sum()), 1)
            # Percentiles lie in (0, 1]; shift by half a rank so the top one has a finite z.
            z = ndtri(np.clip(p[ok] - 0.5 / m, 1e-9, 1 - 1e-9))
            num[ok] += w * z
            den[ok] += w * w
        else:
            num[ok] += w * p[ok]
            den[ok] += w
    with np.errstate(invalid="ignore", divide="ignore"):
        if method == "stouffer":
            return np.where(den > 0, ndtr(num / np.sqrt(np.maximum(den, 1e-24))), np.nan)
        return np.where(den > 0, num / np.maximum(den, 1e-12), np.nan)


def _label_tags(collection, gt_field: str, label_ids: Sequence[str]) -> list[list[str]]:
    """Per label (in ``label_ids`` order): its tags."""
    tab = read_detections(collection, gt_field, attrs=["tags"])
    by_id = {lid: tab.attrs["tags"][i][j] or [] for i, ids in enumerate(tab.ids)
             for j, lid in enumerate(ids)}
    return [by_id.get(l, []) for l in label_ids]


def _truth_from_tags(tags: Sequence[Sequence[str]]) -> list[str]:
    """Per label: the issue of its ``error:<issue>`` tag, else clean."""
    return [next((t[len(ERROR_TAG_PREFIX):] for t in ts if t.startswith(ERROR_TAG_PREFIX)), CLEAN)
            for ts in tags]


LEARNERS = ("auto", "vote", "stack", "self")
METHODS = ("mean", "stouffer")


def _validate(method: str, learner: str, tag_fraction: float, min_positives: int,
              min_negatives: int, min_stack_positives: int, sharpness: float, prior_auroc: float,
              prior_strength: float, cv_folds: int) -> None:
    """Every parameter checked before anything is read or written."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    if learner not in LEARNERS:
        raise ValueError(f"learner must be one of {list(LEARNERS)}, got {learner!r}")
    finite = lambda x: isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
    if not finite(tag_fraction) or not 0 <= tag_fraction <= 1:
        raise ValueError(f"tag_fraction must be a number in [0, 1], got {tag_fraction!r}")
    for name, v in (("min_positives", min_positives), ("min_negatives", min_negatives),
                    ("min_stack_positives", min_stack_positives)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    if not isinstance(cv_folds, int) or cv_folds < 2:
        raise ValueError(f"cv_folds must be an integer >= 2, got {cv_folds!r}")
    for name, v, lo in (("sharpness", sharpness, 0.0), ("prior_strength", prior_strength, 0.0)):
        if not finite(v) or v < lo:
            raise ValueError(f"{name} must be a finite number >= {lo}, got {v!r}")
    if not finite(prior_auroc) or not 0 <= prior_auroc <= 1:
        raise ValueError(f"prior_auroc must be in [0, 1], got {prior_auroc!r}")


def vote_weights(pct: dict[str, np.ndarray], specs: dict[str, ScoreSpec], issue: str,
                 pos: np.ndarray, neg: np.ndarray, min_positives: int = 3,
                 min_negatives: int = 10, sharpness: float = 2.0, prior_auroc: float = 0.75,
                 prior_strength: float = 10.0) -> tuple[dict[str, float], str, dict[str, float]]:
    """REVEAL weights for one issue from the trusted labels ``pos`` / ``neg`` (boolean masks).

    Returns ``(weights, source, reliability AUROC per score)``; below the minimum counts the
    registered judges get equal weights (``source`` says why).
    """
    if not (pos.sum() >= min_positives and neg.sum() >= min_negatives):
        why = "fallback:no_trusted_subset" if not (pos | neg).any() else "fallback:too_few_trusted_labels"
        return _prior_weights(specs, issue), why, {}
    sel = pos | neg
    reliab, weights = {}, {}
    prior = _prior_weights(specs, issue)
    for name, p in pct.items():
        # Reliability where the judge speaks: combine() lets it abstain elsewhere.
        scored = sel & np.isfinite(p)
        n_pos = int(pos[scored].sum())
        # Registered judges start from an assumed AUROC, others from chance; the trusted
        # labels pull the estimate as n_pos / (n_pos + prior_strength).
        a0 = prior_auroc if prior[name] > 0 else 0.5
        if n_pos >= min_positives and neg[scored].sum() >= min_negatives:
            a_hat = auroc(pos[scored], p[scored])
            a = (n_pos * a_hat + prior_strength * a0) / (n_pos + prior_strength)
        else:
            # Too few trusted labels where this judge speaks (e.g. Brain scores only
            # matched boxes): the prior alone.
            a = a0
        reliab[name] = a
        weights[name] = reliability_weight(a, sharpness)
    if not any(w > 0 for w in weights.values()):
        return _prior_weights(specs, issue), "fallback:no_reliable_judge", reliab
    return weights, "trusted", reliab


def fit_stacker(pct: dict[str, np.ndarray], specs: dict[str, ScoreSpec], issue: str,
                pos: np.ndarray, neg: np.ndarray, vote_kwargs: dict, method: str = "stouffer",
                candidates: Sequence[str] = ("logistic", "hgb"), cv_folds: int = 5,
                seed: int = 0, prior_scores: np.ndarray | None = None,
                min_gain: float = 0.0, vote: bool = True) -> dict:
    """Choose among the vote and learned models by cross-validated AUROC on the trusted labels.

    Each fold re-fits the vote's weights and every model on the training part only; the
    score of a candidate is its mean AUROC over the held-out folds. ``prior_scores`` (the
    shipped default model's scores, which need no fitting) join as candidate
    ``"default_model"``, kept unless another candidate beats its AUROC on the same folds by
    more than ``min_gain``: with tens of verified errors the folds' AUROCs are noisy, and the
    best of several noisy estimates is biased upwards. ``vote=False``: the vote (weights fitted
    freely on the trusted labels) is no candidate. Returns ``{"chosen", "cv_auroc":
    {candidate: auroc}, "scores": suspicion of every label (chosen candidate, fitted on all
    trusted labels)}``.
    """
    from sklearn.model_selection import StratifiedKFold

    X, names = stack_features(pct)
    sel = np.nonzero(pos | neg)[0]
    y = pos[sel].astype(int)
    n_splits = int(min(cv_folds, y.sum(), (1 - y).sum()))
    folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    if prior_scores is not None:
        candidates = (*candidates, DEFAULT_PLUS)
    cv = {c: [] for c in (*(("vote",) if vote else ()), *candidates)}
    if not cv:
        raise ValueError("fit_stacker needs a candidate: the vote, a model or prior_scores")
    if prior_scores is not None:
        cv["default_model"] = []
    with _one_thread():
        return _fit_stacker_body(pct, specs, issue, pos, neg, vote_kwargs, method, candidates,
                                 seed, X, names, sel, y, folds, n_splits, cv, prior_scores,
                                 min_gain)


def _with_prior(X: np.ndarray, prior_scores: np.ndarray | None) -> np.ndarray:
    """``X`` with the default model's log-odds as a first column (0 where it abstains)."""
    return np.hstack([logit(prior_scores)[:, None], X])


def _fit_stacker_body(pct, specs, issue, pos, neg, vote_kwargs, method, candidates, seed, X,
                      names, sel, y, folds, n_splits, cv, prior_scores, min_gain) -> dict:
    for tr, te in folds.split(X[sel], y):
        if prior_scores is not None:
            ps = prior_scores[sel[te]]
            cv["default_model"].append(auroc(y[te], np.where(np.isfinite(ps), ps, -1.0)))
        tr_mask = np.zeros(len(pos), dtype=bool)
        tr_mask[sel[tr]] = True
        if "vote" in cv:
            w, _, _ = vote_weights(pct, specs, issue, pos & tr_mask, neg & tr_mask, **vote_kwargs)
            v = combine(pct, w, method)[sel[te]]
            cv["vote"].append(auroc(y[te], np.where(np.isfinite(v), v, -1.0)))
        for c in candidates:
            Xc = _with_prior(X, prior_scores) if c == DEFAULT_PLUS else X
            m = _make_model(c, seed).fit(Xc[sel[tr]], y[tr])
            cv[c].append(auroc(y[te], m.predict_proba(Xc[sel[te]])[:, 1]))
    cv_mean = {c: float(np.nanmean(a)) if np.isfinite(a).any() else float("nan")
               for c, a in cv.items()}
    # Ties (and NaNs) go to the vote: a learned model must earn its place.
    fitted = {c: v for c, v in cv_mean.items() if c != "default_model"}
    chosen = max(fitted, key=lambda c: (_finite_or(fitted[c], -1.0), c == "vote"))
    if "default_model" in cv_mean and (
            _finite_or(fitted[chosen], -1.0) <= _finite_or(cv_mean["default_model"], -1.0) + min_gain):
        chosen = "default_model"
    if chosen == "default_model":
        scores = prior_scores
    elif chosen == "vote":
        w, _, _ = vote_weights(pct, specs, issue, pos, neg, **vote_kwargs)
        scores = combine(pct, w, method)
    else:
        Xc = _with_prior(X, prior_scores) if chosen == DEFAULT_PLUS else X
        m = _make_model(chosen, seed).fit(Xc[sel], y)
        scores = m.predict_proba(Xc)[:, 1]
    return {"chosen": chosen, "cv_auroc": cv_mean, "scores": scores, "features": names,
            "folds": n_splits}


#: How much a model fitted on the verified labels must beat the shipped default model's
#: cross-validated AUROC by to replace it. On coco128 (`bench/eval_judges.py --split dev
#: --min-gain 0.02 0 0.01 0.05 1.0`) 0.02 and 0.05 tied and 0 lost badloc at 20 % verified;
#: of the tied, the larger: the best of three noisy fold estimates is biased upwards.
MIN_GAIN_OVER_DEFAULT = 0.05


def compute_ensemble(collection, gt_field: str = "ground_truth", trusted_tag: str = TRUSTED_TAG,
                     truth: str = "tags", issues: Sequence[str] | None = None,
                     min_positives: int = 3, min_negatives: int = 10, sharpness: float = 2.0,
                     prior_auroc: float = 0.75, prior_strength: float = 10.0,
                     abstain_floor: float | None = 0.5, method: str = "stouffer",
                     learner: str = "auto", min_stack_positives: int = 10,
                     cv_folds: int = 5, seed: int = 0, exclude_judges: Sequence[str] = (),
                     pred_field: str | None = None, self_supervised: dict | None = None,
                     tag_fraction: float = 0.05, default_model: bool | str = True,
                     min_gain: float = MIN_GAIN_OVER_DEFAULT, reviews: bool = True,
                     write: bool = True, fuse_cross_duplicates: bool | float = True,
                     reference_judges: Sequence[str] | None = None,
                     adapt_prevalence: bool = True, one_issue_per_label: bool = True,
                     reuse_selection: Mapping[str, Any] | None = None,
                     progress: Callable[[int, int], None] | None = None) -> RunReport:
    """Write ``ensemble_<issue>`` (0-1, high = suspect) and ``ensemble_any`` on ``gt_field``'s labels.

    ``learner``: ``"vote"`` (the reliability-weighted vote), ``"stack"`` / ``"auto"`` (with at
    least ``min_stack_positives`` trusted errors of an issue, choose among the vote, a
    class-balanced logistic regression and a gradient-boosted tree model on the scores'
    percentiles by ``cv_folds``-fold cross-validated AUROC on the trusted labels; below that,
    the shipped default model where it fits these data, else the self-supervised choice).
    ``"self"``: like ``"auto"``, but where the trusted subset is too small always the
    self-supervised choice: errors are injected into a copy of these labels, the copy is scored
    as this run was, and per issue the best of a fitted logistic / tree model, the shipped
    model and the best single score by cross-validated AUROC on the injected errors combines
    the scores (:mod:`grader.ensemble_selfsup`; ``pred_field`` is the predictions cleanlab
    used; ``self_supervised`` keyword arguments of
    :func:`grader.ensemble_selfsup.collect_injected`, e.g. ``boxgrader={"checkpoint": ...}``
    and the zoom judge's ``detector`` to re-score injected boxes with). ``"auto"`` takes that
    path by itself when fewer than :data:`SHIPPED_MIN_KNOWN` of the labels are of classes the
    shipped model was fitted on (``info['default_model_fit']``). Tags the top ``tag_fraction`` of scored labels per issue
    ``suspect:ensemble_<issue>``. Returns a report whose ``info`` holds the weights, their
    source, the trusted counts and, per issue, the learner chosen with its CV AUROC.
    ``default_model``: where no stacker can be fitted (too few trusted errors of an issue) and
    ``learner`` is not ``"vote"``, combine the scores with the model shipped in
    ``grader/models/default_ensemble.json`` (a path: another such JSON; ``False``: the vote),
    using its richest variant whose judges all ran; otherwise the vote.
    With enough trusted errors the default model is a candidate too, kept unless a fitted one
    beats its cross-validated AUROC by more than ``min_gain`` (see :func:`fit_stacker`).
    ``reviews`` (with ``truth="tags"``): every review decision counts as a verified label —
    accepted labels (``reviewed:ok``) clean, labels fixed through the review (relabel, new
    box, delete; from the fix log, undone fixes left out) errors with the scores they had
    before the fix (:mod:`grader.ensemble_reviews`); so re-running the ensemble after a batch
    of decisions re-ranks the labels not yet reviewed.
    ``fuse_cross_duplicates``: one object boxed twice under two classes is the commonest real
    error seen by eye, and no model fitted on injected errors weighs it: ``ensemble_duplicate``
    and ``ensemble_any`` take ``consistency_xdup`` in by a noisy-OR (see
    :func:`_fuse_cross_duplicates`; a number: the least ``consistency_xdup`` fused).
    ``reference_judges``: the judges whose raw scores the shipped model reads against where
    they fell on its training runs (:func:`grader.ensemble_prior.reference_percentiles`); the
    others' scores it reads as percentiles within these labels. None: every judge the
    reference covers. Scores from other models than the ones it was fitted with (your own
    predictions for cleanlab, another detector for zoom, your own box grader checkpoint) are
    distributed otherwise: leave those judges out (``grade()`` does).
    ``adapt_prevalence``: the shipped model's per-issue probabilities assume the share of
    errors it was fitted at (about 5 % per issue); re-read them at this dataset's share,
    estimated from the probabilities themselves (:func:`grader.ensemble_prior.adapt_to_prevalence`),
    where that estimate is above the training share; duplicates (:data:`PREVALENCE_KEPT`),
    ``ensemble_any`` itself and models fitted here keep theirs
    (``info["learner"][issue]["prevalence"]`` says both shares and whether it applied).
    ``reuse_selection``: the choice a self-supervised run made on its copy (its report's
    ``info["selection_models"]``), applied to the scores as they are now instead of injecting
    errors into a new copy and re-scoring it (which needs the run's detector and box grader):
    what :func:`refit_if_due` passes when the review panel re-ranks on classes the shipped
    model never saw.
    ``one_issue_per_label``: the probabilities of badloc, swap and spurious read as one
    distribution (a label has at most one of them: :data:`grader.scores.EXCLUSIVE_ISSUES`,
    :func:`grader.ensemble_prior.one_issue_each`), where they are probabilities
    (``info["one_issue_each"]`` lists the issues read together); a box the spurious model is
    sure of then leaves the top of the badloc and swap queues. Spurious is read first and keeps
    its own probability (:data:`grader.scores.NO_OBJECT_ISSUE`); duplicates are not changed.
    Where ``ensemble_any`` is a composition of the issues' probabilities it is composed from
    the columns as written (:func:`_recompose_any`).
    ``progress(done, total)``: called as the work advances (the self-supervised copies are
    most of it).
    ``exclude_judges``: judges whose scores are not inputs (e.g. ``["brain"]`` to keep a
    baseline out of the ensemble it is compared with).
    """
    _validate(method, learner, tag_fraction, min_positives, min_negatives, min_stack_positives,
              sharpness, prior_auroc, prior_strength, cv_folds)
    if not (isinstance(default_model, bool) or isinstance(default_model, str)):
        raise ValueError(f"default_model must be True, False or a path, got {default_model!r}")
    prior = None
    if default_model is not False and learner != "vote":
        from .ensemble_prior import load_default_model

        prior = load_default_model(None if default_model is True else default_model)
    specs = present_score_specs(collection, gt_field, exclude_judges=[JUDGE, *exclude_judges])
    report = RunReport(judge=JUDGE)
    if not specs:
        raise ValueError(f"no judge scores found on '{gt_field}'; run a judge (e.g. run_cleanlab) first. "
                         f"Known scores: {[s.attr for s in SCORES if s.judge != JUDGE]}")
    if issues is not None:
        bad = [i for i in issues if i not in ISSUES]
        if bad:
            raise ValueError(f"unknown issues {bad}; use {list(ISSUES)}")
    truth_attr = None if truth == "tags" else truth
    ls = read_label_scores(collection, gt_field, truth_attr=truth_attr, specs=specs,
                           trusted_tag=trusted_tag)
    report.samples_seen = len(set(ls.sample_ids))
    tags = _label_tags(collection, gt_field, ls.label_ids) if truth == "tags" else None
    labels_truth = (_truth_from_tags(tags) if tags is not None
                    else [t if t is not None else CLEAN for t in ls.truth])
    labels_truth = np.array(labels_truth, dtype=object)
    pct = {name: abstaining_percentiles(col, abstain_floor) for name, col in ls.columns.items()}
    if issues is None:
        covered = {i for s in specs for i in (s.issue, *s.also)}
        issues = [i for i in ISSUES if i in covered] or list(ISSUES if "any" in covered else [])
    trusted = ls.trusted
    n_labels = len(ls.label_ids)
    from_reviews = False
    raw = dict(ls.columns)   # + a row per review fix below (its scores before the fix)
    if reviews and tags is not None:
        # Every review decision is a verified label (grader.ensemble_reviews): accepted labels
        # are clean, fixed ones errors, described by their scores before the fix.
        rev = review_rows(collection, gt_field, ls.specs, ls.label_ids, tags)
        report.info["reviews"] = summary(rev)
        if rev.accepted or len(rev):
            acc = np.array([l in rev.accepted for l in ls.label_ids], dtype=bool)
            fixed_now = np.array([l in rev.fixed_ids for l in ls.label_ids], dtype=bool)
            labels_truth[acc] = CLEAN
            trusted = np.concatenate([(trusted & ~fixed_now) | acc, np.ones(len(rev), bool)])
            labels_truth = np.concatenate([labels_truth, np.array(rev.issues, dtype=object)])
            pct = extend_with_reviews(pct, ls.columns, rev)
            if len(rev):
                raw = {k: np.concatenate([c, rev.raw.get(k, np.full(len(rev), np.nan))])
                       for k, c in raw.items()}
            from_reviews = bool(len(rev) or rev.accepted)
    dup_raw = raw.get(DUP_SCORE)
    # the scores the shipped model reads against its training runs (the rest as percentiles)
    ref_raw = {k: c for k, c in raw.items()
               if reference_judges is None or k.split(":", 1)[0] in reference_judges}
    report.info["reference_judges"] = sorted({k.split(":", 1)[0] for k in ref_raw})
    report.info["trusted_samples"] = len({s for s, t in zip(ls.sample_ids, trusted) if t})
    vote_kwargs = dict(min_positives=min_positives, min_negatives=min_negatives,
                       sharpness=sharpness, prior_auroc=prior_auroc, prior_strength=prior_strength)

    n_classes = len([c for c in collection.distinct(f"{gt_field}.detections.label") if c is not None])
    selection: dict[str, dict] = {}
    model_fit = shipped_model_fit(collection, gt_field, prior)
    report.info["default_model_fit"] = model_fit
    if reuse_selection:
        selection = selection_from_json(reuse_selection)
        report.info["self_supervised"] = {"reused": "the last run's choice, made on its copy"}
        report.info["selection"] = {i: e["cv_auroc"] for i, e in selection.items()}
    elif learner == "self" or (learner == "auto" and prior is not None and not model_fit["fits"]):
        try:
            data = collect_injected(collection, gt_field, pred_field, seed=seed,
                                    abstain_floor=abstain_floor, progress=progress,
                                    **(self_supervised or {}))
        except ValueError as e:   # no judge that a copy can re-run: the vote
            report.info["self_supervised"] = {"skipped": str(e)}
        else:
            selection = select_models(data, issues, prior=prior, seed=seed)
            report.info["self_supervised"] = {"judges": data["judges"], "rounds": data["rounds"],
                                              "injected": data["injected"]}
            report.info["selection"] = {i: e["cv_auroc"] for i, e in selection.items()}
    if selection:   # kept with the run, so a re-ranking after review decisions can apply it
        report.info["selection_models"] = selection_to_json(selection)
    # Where the copy gave no choice for an issue: the shipped model only where it fits.
    fallback_prior = prior if (learner != "auto" or model_fit["fits"]) else None
    scores: dict[str, np.ndarray] = {}
    weights_all: dict[str, dict[str, float]] = {}
    sources: dict[str, str] = {}
    reliab: dict[str, dict[str, float]] = {}
    learners: dict[str, dict] = {}
    for issue in list(issues) + ["any"]:
        pos = trusted & ((labels_truth != CLEAN) if issue == "any" else (labels_truth == issue))
        neg = trusted & (labels_truth == CLEAN)
        weights, sources[issue], r = vote_weights(pct, ls.specs, issue, pos, neg, **vote_kwargs)
        if r:
            reliab[issue] = r
        weights_all[issue] = weights
        report.info.setdefault("trusted_counts", {})[issue] = {"errors": int(pos.sum()),
                                                               "clean": int(neg.sum())}
        # The answer without verified labels: the choice made on the injected copy, else the
        # shipped model where it fits, else (None) the vote.
        base, shipped = None, False
        if issue in selection:
            base = apply_selection(selection[issue], pct, prior)
        if base is None and fallback_prior is not None:
            base = default_model_scores(pct, issue, fallback_prior, raw=ref_raw)
            shipped = base is not None
        if issue == "duplicate" and base is not None:
            base = _compose_duplicate(base, dup_raw, prior)
        if shipped and issue != "any" and adapt_prevalence:
            # (a choice made on the copy, the shipped model included, is scaled on the copy)
            base = _at_this_prevalence(base, issue, prior, n_labels)
        if issue == "any" and (base is not None or issue in selection):
            composed = _any_from_issues(scores, learners, issues, n_classes)
            if composed is not None:
                any_, inputs = composed
                # (the composition does not read consistency_xdup: the fusion below applies)
                if issue in selection:
                    # fitted on the copy: its "any" model (trees over four error signatures,
                    # a few dozen injected errors each) ranked below the composition on every
                    # run measured (raccoon, coco128-custom; docs/evaluation.md); a choice
                    # re-applied from the run record (reuse_selection) keeps no tree model
                    was = base[1] if base is not None else {
                        "chosen": selection[issue]["chosen"],
                        "cv_auroc": dict(selection[issue]["cv_auroc"])}
                    base = (any_, {**was, "chosen": "self:noisy_or", "variant": "noisy_or",
                                   "inputs": inputs, "copy_choice": was.get("chosen")})
                elif base[1].get("chosen") == "default_model":
                    # the higher of the two readings: the model's own "any" (which weighs the
                    # cross-class duplicates real datasets hold) and the per-issue composition
                    # (which carries to other domains; see _any_from_issues)
                    base = (_calibrate_composed(np.fmax(any_, base[0]), prior or {}),
                            {**base[1], "variant": f"max({base[1].get('variant')}, noisy_or)",
                             "inputs": inputs, "model_inputs": base[1]["inputs"]})
        few = f"fewer than {min_stack_positives} trusted errors"
        if learner != "vote" and pos.sum() >= min_stack_positives and neg.sum() >= min_negatives:
            # Review decisions come from the top of the queue, not from random images: a
            # model fitted freely on them ranks that top well and the rest badly, so with an
            # answer at hand only its anchored refinement (DEFAULT_PLUS) competes with it --
            # not the vote either, whose weights are fitted as freely (on coco128-custom it
            # replaced the copy's choice for duplicates after 75 decisions: items 51-100 of
            # bench/review_learning.py fell from 0.82 to 0.54 of errors)
            biased = from_reviews and base is not None
            fit = fit_stacker(pct, ls.specs, issue, pos, neg, vote_kwargs, method,
                              candidates=() if biased else ("logistic", "hgb"), vote=not biased,
                              cv_folds=cv_folds, seed=seed,
                              prior_scores=base[0] if base is not None else None,
                              min_gain=min_gain)
            scores[issue] = fit["scores"]
            learners[issue] = {"chosen": fit["chosen"], "folds": fit["folds"],
                               "cv_auroc": {k: round(v, 4) for k, v in fit["cv_auroc"].items()}}
            if base is not None and fit["chosen"] == "default_model":
                for k in ("variant", "score"):
                    if k in base[1]:
                        learners[issue][k] = base[1][k]
                if base[1]["chosen"] != "default_model":   # the copy's choice, kept
                    learners[issue]["chosen"] = base[1]["chosen"]
        elif base is not None:
            scores[issue], learners[issue] = base
            learners[issue].setdefault("why", few)
        else:
            scores[issue] = combine(pct, weights, method)
            learners[issue] = {"chosen": "vote",
                               "why": "learner='vote'" if learner == "vote" else few}
    scores = {k: v[:n_labels] for k, v in scores.items()}   # review rows are not labels any more
    if fuse_cross_duplicates is not False:
        _fuse_cross_duplicates(scores, ls.columns, report,
                               None if fuse_cross_duplicates is True else float(fuse_cross_duplicates),
                               learners)
    if one_issue_per_label:
        _one_issue_each(scores, learners, issues, n_classes, report)
    _recompose_any(scores, learners, issues, n_classes, report)
    report.info["learner"] = learners
    report.info["weights"] = {i: {k: round(v, 4) for k, v in w.items() if v > 0}
                              for i, w in weights_all.items()}
    report.info["weights_source"] = sources
    report.info["reliability_auroc"] = {i: {k: round(v, 4) for k, v in r.items()}
                                        for i, r in reliab.items()}
    report.info["inputs"] = sorted(pct)
    if write:
        _write(collection, gt_field, ls, scores, tag_fraction, report, tags)
        if progress is not None:
            progress(1, 1)
        params = dict(gt_field=gt_field, trusted_tag=trusted_tag, truth=truth, issues=list(issues),
                      min_positives=min_positives, min_negatives=min_negatives,
                      sharpness=sharpness, prior_auroc=prior_auroc,
                      prior_strength=prior_strength, method=method, learner=learner,
                      min_stack_positives=min_stack_positives, cv_folds=cv_folds,
                      tag_fraction=tag_fraction, reviews=reviews,
                      fuse_cross_duplicates=fuse_cross_duplicates,
                      reference_judges=None if reference_judges is None else list(reference_judges),
                      adapt_prevalence=adapt_prevalence, one_issue_per_label=one_issue_per_label,
                      default_model=default_model if isinstance(default_model, bool) else str(default_model))
        record_run(collection, RUN_KEY, params, report.to_dict())
    return report


#: Per-issue learners whose output reads as a probability (the shipped model's Platt-scaled
#: entries; the copy's choices, Platt-scaled on their out-of-fold scores).
PROBABILITY_LEARNERS = ("default_model", "self:logistic", "self:hgb", "single")


def _possible_issues(issues: Sequence[str], n_classes: int) -> list[str]:
    """``issues`` a label of this field can have: with one class none carries another, so
    swap is not one of them."""
    return [i for i in issues if not (i == "swap" and n_classes < 2)]


def _any_from_issues(scores: dict[str, np.ndarray], learners: dict[str, dict],
                     issues: Sequence[str], n_classes: int, exclusive: Sequence[str] = ()
                     ) -> tuple[np.ndarray, list[str]] | None:
    """``1 - prod(1 - p_issue)`` over the per-issue probabilities, with the ``ensemble_<issue>``
    names it read, where every issue's score is one (the shipped model's, or the copy's choice
    Platt-scaled on its out-of-fold scores; None where an issue came from the vote or a model
    fitted on verified labels). ``exclusive``: issues already read as one distribution over
    "clean" and them (:func:`grader.ensemble_prior.one_issue_each`), whose chance of any one of
    them is their sum; it enters the noisy-OR as one term.

    The shipped model's own "any" entry is one more logistic fit over the judges' percentiles;
    off COCO's images its weights carry worse than the per-issue models' do (Penn-Fudan
    pedestrians, 2 seeds: AP 0.66 against 0.75 composed; docs/evaluation.md "ensemble_any").
    With one class in the field no label can carry another class, so swap is left out."""
    used = [i for i in _possible_issues(issues, n_classes) if i in scores and i != "any"]
    if not used or any(learners.get(i, {}).get("chosen") not in PROBABILITY_LEARNERS
                       for i in used):
        return None
    P = np.stack([scores[i] for i in used], axis=1)
    seen = np.isfinite(P).any(axis=1)
    P = np.clip(np.nan_to_num(P, nan=0.0), 0.0, 1.0)
    together = np.isin(used, list(exclusive))
    terms = P[:, ~together]
    if together.any():
        terms = np.column_stack([terms, np.clip(P[:, together].sum(axis=1), 0.0, 1.0)])
    any_ = 1.0 - np.prod(1.0 - terms, axis=1)
    return np.where(seen, any_, np.nan), [f"ensemble_{i}" for i in used]


def _recompose_any(scores: dict[str, np.ndarray], learners: dict[str, dict],
                   issues: Sequence[str], n_classes: int, report: RunReport) -> None:
    """``ensemble_any`` composed again from the per-issue scores as written (after the
    cross-class duplicates were fused in and badloc / swap / spurious read together), where it
    was a composition: the exclusive issues' sum, noisy-OR the duplicate's. In place.

    Why: composed earlier, from the per-issue probabilities before they were read together and
    as the higher of that and the shipped model's own "any" entry, a label one issue's model
    was unsure of ranked alongside labels every model gave a little; read from the final
    scores, AP of ``ensemble_any`` on coco128 (5 % of each type, 2 seeds,
    ``bench/eval_judges.py``) 0.888 -> 0.902, AUROC +0.002, ECE unchanged (README,
    "ensemble_any from the per-issue scores as written")."""
    info = learners.get("any")
    if not info or "any" not in scores or "noisy_or" not in str(info.get("variant", "")):
        return
    exclusive = report.info.get("one_issue_each") or []
    composed = _any_from_issues(scores, learners, issues, n_classes, exclusive=exclusive)
    if composed is None:
        return
    scores["any"], inputs = composed
    rest = [i.removeprefix("ensemble_") for i in inputs if i.removeprefix("ensemble_") not in exclusive]
    terms = ([f"sum({', '.join(exclusive)})"] if exclusive else []) + rest
    info.update(variant=f"noisy_or({', '.join(terms)})", inputs=inputs,
                composed_from=info.get("variant"))


def _one_issue_each(scores: dict[str, np.ndarray], learners: dict[str, dict],
                    issues: Sequence[str], n_classes: int, report: RunReport) -> None:
    """The :data:`grader.scores.EXCLUSIVE_ISSUES` whose scores are probabilities
    (:data:`PROBABILITY_LEARNERS`), read together as exclusive
    (:func:`grader.ensemble_prior.one_issue_each`), in place; the others (the vote, models
    fitted on verified labels) as they are; only :func:`_possible_issues`."""
    used = [i for i in _possible_issues(issues, n_classes) if i in EXCLUSIVE_ISSUES
            and i in scores and learners.get(i, {}).get("chosen") in PROBABILITY_LEARNERS]
    report.info["one_issue_each"] = used if len(used) > 1 else []
    if len(used) < 2:
        return
    q = one_issue_each(np.stack([scores[i] for i in used], axis=1),
                       no_object=used.index(NO_OBJECT_ISSUE) if NO_OBJECT_ISSUE in used else None)
    for k, issue in enumerate(used):
        scores[issue] = q[:, k]


#: The same-class duplicate score (grader.judges.consistency), composed into ensemble_duplicate.
DUP_SCORE = "consistency:consistency_duplicate"


def _compose_duplicate(base: tuple[np.ndarray, dict], raw: np.ndarray | None,
                       model: dict | None) -> tuple[np.ndarray, dict]:
    """``sigmoid(a (w p + d) + b)``: the per-issue model's duplicate probability ``p``, weighted
    by ``w`` (``p_weight``, 1 where the model carries none), plus the raw
    ``consistency_duplicate`` ``d`` (the pair's IoU split by the evidence), Platt-scaled by the
    shipped model's ``duplicate_composition`` (``bench/fit_default_ensemble.py calibrate-any``).
    ``w`` = 0.25: ``d`` orders the pairs and ``p`` breaks its ties; AP of injected duplicates
    on coco128, 3 seeds, before the cross-class fusion: p + d 0.872, 0.25 p + d 0.893, d alone
    0.891 (coco128-val, reporting only: 0.764, 0.790, 0.789; docs/evaluation.md).

    Every model reads its inputs as percentiles, and a score that is 0 for most labels keeps
    little of its top in them: the copy at IoU 0.9 and its source halved to 0.45 are both in
    the last 2 %. The raw score gives that order back. AP of injected duplicates, 2 seeds
    (bench/eval_judges.py, bench/custom_classes.py): coco128 0.811 -> 0.855, raccoon 0.810 ->
    0.829 (docs/evaluation.md). Kept as it was where the learner's output is no probability, the
    score is absent, or the model carries no such scale."""
    p, info = base
    platt = ((model or {}).get("duplicate_composition") or {}).get("platt")
    if raw is None or not platt or info.get("chosen") not in PROBABILITY_LEARNERS:
        return base
    d = np.clip(np.nan_to_num(np.asarray(raw, dtype=float)[:len(p)], nan=0.0), 0.0, 1.0)
    w = float(platt.get("p_weight", 1.0))
    z = float(platt["a"]) * (w * np.nan_to_num(p, nan=0.0) + d) + float(platt["b"])
    seen = np.isfinite(p) | (d > 0)
    out = np.where(seen, 1.0 / (1.0 + np.exp(-z)), np.nan)
    return out, {**info, "composed_with": DUP_SCORE}


#: Issues whose probabilities are not re-read at the dataset's share: a duplicate's copy and
#: its source both score high, so the estimate counts each pair twice. ``ensemble_any`` is not
#: re-read either: it holds the duplicates' pairs too (re-read at its composition's share it
#: overshot on coco128 at 15 and 25 %: mean 0.587 for 0.516 observed, 0.953 for 0.792).
PREVALENCE_KEPT = ("duplicate",)


def _at_this_prevalence(base: tuple[np.ndarray, dict], issue: str, model: dict | None,
                        n_labels: int | None = None) -> tuple[np.ndarray, dict]:
    """The shipped model's probabilities for ``issue`` re-read at this dataset's share of the
    issue, estimated on its ``n_labels`` labels (the rows after them are labels a reviewer
    fixed: :func:`grader.ensemble_prior.adapt_to_prevalence`); other learners' as they are."""
    p, info = base
    rate = training_rate(model or {}, issue, info) if info.get("chosen") == "default_model" else None
    if rate is None or issue in PREVALENCE_KEPT:
        return base
    q, est = adapt_to_prevalence(p, rate, n_estimate=n_labels)
    record = {"trained_at": round(rate, 4), "estimated": round(est, 4), "applied": est > rate}
    return (q if est > rate else p), {**info, "prevalence": record}


def _calibrate_composed(p: np.ndarray, model: dict) -> np.ndarray:
    """The higher of two probabilities reads high; the shipped model's ``any_composition``
    Platt scaling (``sigmoid(a logit(p) + b)``, fitted on graded coco128 by
    ``bench/fit_default_ensemble.py calibrate-any``) takes that back. Ranks are unchanged."""
    scale = (model.get("any_composition") or {}).get("platt")
    if not scale:
        return p
    return platt(p, float(scale["a"]), float(scale["b"]))


#: The cross-class duplicate score (grader.judges.consistency) and the issues it is fused into.
XDUP_SCORE = "consistency:consistency_xdup"
XDUP_ISSUES = ("duplicate", "any")


def _fuse_cross_duplicates(scores: dict[str, np.ndarray], columns: dict[str, np.ndarray],
                           report: RunReport, x_min: float | None = None,
                           learners: dict[str, dict] | None = None) -> None:
    """``1 - (1 - p)(1 - x)``: the ensemble's probability ``p`` and the cross-class duplicate
    score ``x`` (the pair's IoU discounted by how often the two classes legitimately overlap in
    the dataset; 0 for a box without such a partner) as two independent chances of an error.
    A box with no cross-class partner keeps its score; one whose class pair overlaps nowhere
    else in the dataset rises to near the pair's IoU. On coco128's own labels (checked by eye,
    ``bench/real_errors.py``) cross-class duplicates are most of the real errors. Only boxes
    at ``x >= x_min`` (the consistency judge's tag threshold by default) count: below it sit
    the many legitimate overlaps (a rider on a horse), and raising them all cost injected
    duplicates AP 0.69 -> 0.52 on coco128-val. An issue whose shipped model already reads
    ``consistency_xdup`` as an input (``learners[issue]["inputs"]``) is not fused again: that
    model was fitted on injected cross-class duplicates and weighs the score itself."""
    from .judges.consistency import XDUP_TAG_SCORE

    x = columns.get(XDUP_SCORE)
    if x is None:
        return
    x_min = XDUP_TAG_SCORE if x_min is None else x_min
    n = len(next(iter(scores.values()))) if scores else 0
    x = np.clip(np.nan_to_num(x[:n], nan=0.0), 0.0, 1.0)
    x = np.where(x >= x_min, x, 0.0)
    fused, learned = [], []
    for issue in XDUP_ISSUES:
        if XDUP_SCORE in ((learners or {}).get(issue) or {}).get("inputs", ()):
            learned.append(issue)
        elif issue in scores:
            p = scores[issue]
            scores[issue] = np.where(np.isfinite(p), 1.0 - (1.0 - p) * (1.0 - x),
                                     np.where(x > 0, x, np.nan))
            fused.append(issue)
    report.info["fused"] = {XDUP_SCORE: fused, "labels_raised": int((x > 0).sum()) if fused else 0,
                            "model_input_for": learned}


#: Share of the labels that must be of classes the shipped model was fitted on for ``"auto"``
#: to use it without checking; below it the self-supervised selection runs, with the shipped
#: model one of its candidates. 0.9 as the box grader's ``MIXED_MIN_UNKNOWN``: on coco128 with
#: 42 % of the boxes renamed (61 % known; bench/custom_classes.py --data coco128-mixed, 2
#: seeds) checking raised ensemble_any from 0.918 (AP 0.746) to 0.964 (0.856) and ensemble_swap
#: from 0.972 (0.840) to 0.991 (0.916); badloc 0.977 (0.744) -> 0.975 (0.737).
SHIPPED_MIN_KNOWN = 0.9


def shipped_model_fit(collection, gt_field: str, prior: dict | None) -> dict:
    """Whether the shipped default model fits these labels: the share of labels whose class it
    was fitted on (its JSON's ``classes``; a model without that list is taken to fit)."""
    if prior is None:
        return {"fits": False, "why": "no shipped model"}
    known = set(prior.get("classes") or ())
    if not known:
        return {"fits": True, "why": "the model lists no classes"}
    share, _ = known_class_share(collection, gt_field, known)
    return {"fits": share >= SHIPPED_MIN_KNOWN, "known_share": round(share, 4),
            "why": f"{share:.0%} of the labels are of classes the shipped model was fitted on"}


def _prior_weights(specs: dict[str, ScoreSpec], issue: str) -> dict[str, float]:
    return {name: 1.0 if (s.covers(issue) or issue == "any") else 0.0
            for name, s in specs.items()}


def _write(collection, gt_field: str, ls, scores: dict[str, np.ndarray], tag_fraction: float,
           report: RunReport, tags: list[list[str]] | None = None) -> None:
    # Labels a reviewer decided on keep the scores and tags they were reviewed with: they
    # have left the queue, and rewriting them would make their fixes look changed since
    # (undo refuses to restore a label that changed after its fix).
    tags = tags if tags is not None else _label_tags(collection, gt_field, ls.label_ids)
    frozen = np.array([any(t in REVIEWED_TAGS for t in ts) for ts in tags], dtype=bool)
    keys = list(zip(ls.sample_ids, ls.label_ids))
    write_label_attrs(collection, gt_field, {
        f"{JUDGE}_{issue}": {k: (float(v) if math.isfinite(v) else None)
                             for k, v, f in zip(keys, col, frozen) if not f}
        for issue, col in scores.items()})
    keep = [l for l, f in zip(ls.label_ids, frozen) if f]
    report.info["reviewed_labels_kept"] = len(keep)
    for issue, col in scores.items():
        report.fields.append(f"{JUDGE}_{issue}")
        ok = np.nonzero(np.isfinite(col) & ~frozen)[0]
        n_tag = int(math.ceil(tag_fraction * len(ok))) if tag_fraction > 0 else 0
        top = ok[np.argsort(-col[ok], kind="mergesort")[:n_tag]]
        tag = f"suspect:{JUDGE}_{issue}"
        report.tagged[tag] = set_label_tag(collection, gt_field, tag, [ls.label_ids[i] for i in top],
                                           keep=keep)
    report.labels_scored = int(np.isfinite(scores.get("any", np.array([]))).sum())
    report.samples_scored = len({s for s, v in zip(ls.sample_ids, scores.get("any", [])) if math.isfinite(v)})


#: Decisions between two re-rankings of the queue (issue: "say 25").
REFIT_EVERY = 25


def _last_run(collection, gt_field: str) -> tuple[dict, dict] | None:
    """(params, report info) of the last ensemble run on ``gt_field``; None if there is none."""
    return last_run(collection, RUN_KEY, gt_field)


def _decisions_since(collection, gt_field: str, info: dict) -> int:
    """Review decisions on ``gt_field`` newer than the fix-log entry a run with ``info`` read."""
    from .review.log import count_fixes

    last = int((info.get("reviews") or {}).get("last_seq", 0))
    return count_fixes(collection._root_dataset, after_seq=last, field=gt_field)


def decisions_since_ensemble(collection, gt_field: str) -> tuple[int, dict | None]:
    """(review decisions on ``gt_field`` newer than the last ensemble run, that run's params)."""
    run = _last_run(collection, gt_field)
    if run is None:
        return 0, None
    return _decisions_since(collection, gt_field, run[1]), run[0]


def refit_if_due(collection, gt_field: str, every: int = REFIT_EVERY, **overrides):
    """Re-run the ensemble (with the parameters of its last run) once ``every`` review
    decisions have been taken since; returns its report, else None. What the review panel
    calls after each decision, so the queue re-orders as the curator works.

    A last run that fitted the ensemble on an injected copy (classes the shipped model never
    saw) re-scored the copy with the run's detector and box grader, which a re-run from the
    panel does not have: its choice per issue, kept in the run record, is applied again to the
    current scores (``reuse_selection``) rather than chosen anew on a copy scored by fewer
    judges; pass ``self_supervised=...`` to choose anew. A run recorded before the choices
    were kept is not re-run.
    """
    run = _last_run(collection, gt_field)
    if run is None:
        return None
    params, info = run
    if info.get("selection") and "self_supervised" not in overrides:
        if not info.get("selection_models"):
            return None
        overrides = {"reuse_selection": info["selection_models"], **overrides}
    if _decisions_since(collection, gt_field, info) < every:
        return None
    params.update(overrides)
    rescore_labels_only(collection, gt_field)
    return compute_ensemble(collection._root_dataset, **params)


def rescore_labels_only(collection, gt_field: str):
    """Re-run the judge that reads only the labels (consistency: duplicate pairs, class
    outliers) with the parameters of its last run on ``gt_field``, so the queue re-ordered
    after review decisions sees the fixes: a deleted copy leaves its partner with no pair (it
    kept its duplicate score and tag until the next grade()), a relabelled box no longer makes a
    cross-class pair. Its report, or None where it never ran on ``gt_field``."""
    import inspect

    from .judges.consistency import RUN_KEY as CONSISTENCY_KEY, run_consistency

    run = last_run(collection, CONSISTENCY_KEY, gt_field)
    if run is None:
        return None
    accepted = inspect.signature(run_consistency).parameters
    params = {k: v for k, v in run[0].items() if k in accepted}
    return run_consistency(collection._root_dataset, **params)
