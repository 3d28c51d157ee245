"""The default ensemble shipped with the package, for a dataset without verified images.

With no (or too small a) verified subset, ``compute_ensemble`` cannot measure how reliable
each judge is on the user's data. Instead of an equal-weight vote it can then use a model
fitted once, on coco128 with injected errors (``bench/fit_default_ensemble.py``), over the
same features the learned ensemble uses: each present score's percentile rank (0.5 where the
judge abstains) plus missing indicators (:func:`grader.score_stats.stack_features`).

The model is a class-balanced logistic regression per issue, stored as explicit coefficients
in ``grader/models/default_ensemble.json`` (transparent, no pickle, independent of the
scikit-learn version). It holds one *variant* per judge subset: the full default ``grade()``
run with the shipped box grader (``full+boxgrader``; its scores on coco128 come from box
graders trained on the other image folds, so they are not in-sample), the same without a
detector pass (``cleanlab+boxgrader+consistency``, ``boxgrader+consistency``) and the subsets
without the box grader, for classes it does not know or when it is skipped (``full``,
``cleanlab+consistency``, ``consistency``). :func:`choose_variant` picks the richest variant
whose judges all ran, else none (the caller falls back to the vote).

Where ``compute_ensemble`` applies the model to a dataset of COCO classes, it reads each raw
score against the model's ``reference`` (where that score fell on the model's own training
runs) instead of its percentile within the dataset, so the features, the probabilities and the
ranking do not assume the share of errors the model was fitted at
(:func:`reference_percentiles`; ``bench/error_rates.py``).
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .score_stats import logit, sigmoid

DEFAULT_MODEL_PATH = Path(__file__).resolve().parent / "models" / "default_ensemble.json"


def label_percentiles(collection, gt_field: str, truth_attr: str | None = None,
                      trusted_tag: str = "", exclude_judges: Sequence[str] = (),
                      abstain_floor: float | None = 0.5):
    """Per-label percentile columns of every present registered score, as compute_ensemble
    builds them (ensemble outputs excluded). Returns ``(pct, LabelScores)``."""
    from .evaluate import present_score_specs, read_label_scores
    from .score_stats import abstaining_percentiles

    specs = present_score_specs(collection, gt_field, exclude_judges=["ensemble", *exclude_judges])
    ls = read_label_scores(collection, gt_field, truth_attr=truth_attr, specs=specs,
                           trusted_tag=trusted_tag)
    pct = {name: abstaining_percentiles(col, abstain_floor) for name, col in ls.columns.items()}
    return pct, ls


def base_scores(features: Sequence[str]) -> list[str]:
    """Score names (``judge:attr``) a feature list needs, missing indicators and hinges folded in."""
    from .score_stats import feature_base

    out = []
    for f in features:
        name = feature_base(f)[0]
        if name not in out:
            out.append(name)
    return out


def design_matrix(pct: Mapping[str, np.ndarray], features: Sequence[str],
                  interactions: Sequence[Sequence[int]] = ()) -> np.ndarray:
    """The model's inputs: :func:`grader.score_stats.stack_features` on the given feature names,
    then one product column per ``(i, j)`` pair of those features."""
    from .score_stats import stack_features

    X, _ = stack_features(dict(pct), list(features))
    if len(interactions):
        X = np.hstack([X] + [X[:, [i]] * X[:, [j]] for i, j in interactions])
    return X


def apply_logistic(entry: Mapping, pct: Mapping[str, np.ndarray]) -> np.ndarray:
    """``sigmoid(X @ coef + intercept)`` for one fitted issue/variant entry of the JSON.

    The models were fitted class-balanced (every issue's few errors weigh as much as the clean
    labels), which moves their log-odds by ``log(clean / errors)``. Where the entry records
    its training counts (``n_train``) that shift is taken back, so the output reads as the
    probability of the issue at the training data's error rate (3-10 % per issue), not at
    50 %. An entry with ``platt`` (a, b) was measured on graded coco128 instead:
    ``sigmoid(a z + b)`` of the raw log-odds ``z``. Ranks are unchanged either way.
    """
    X = design_matrix(pct, entry["features"], entry.get("interactions", ()))
    z = X @ np.asarray(entry["coef"], dtype=float) + float(entry["intercept"])
    if entry.get("platt"):
        # Measured on graded coco128 (bench/fit_default_ensemble.py calibrate).
        return sigmoid(float(entry["platt"]["a"]) * z + float(entry["platt"]["b"]))
    n = entry.get("n_train") or {}
    if n.get("errors") and n.get("clean"):
        z = z + float(np.log(n["errors"] / n["clean"]))
    return sigmoid(z)


@lru_cache(maxsize=4)
def _load(path: str) -> dict:
    with open(path) as fh:
        model = json.load(fh)
    if model.get("format") != "label-grader-default-ensemble/1":
        raise ValueError(f"{path}: not a label-grader default ensemble (format {model.get('format')!r})")
    return model


def load_default_model(path: str | Path | None = None) -> dict | None:
    """The shipped model (``grader/models/default_ensemble.json``; None if the package lacks
    it), or the model at ``path`` (which must exist)."""
    p = Path(path) if path is not None else DEFAULT_MODEL_PATH
    if not p.exists():
        if path is not None:
            raise FileNotFoundError(f"no default ensemble model at {p}")
        return None
    return _load(str(p))


def _judge(score: str) -> str:
    return score.split(":", 1)[0]


def choose_variant(model: Mapping, issue: str, present: Sequence[str]) -> str | None:
    """The richest variant for ``issue`` whose judges all ran (each has a score present), else None.

    A judge that ran but did not write one of the variant's scores (cleanlab writes its swap
    score only where a prediction of another class overlaps) is treated as abstaining on it.
    """
    ran = {_judge(s) for s in present}
    entries = model.get("issues", {}).get(issue, {})
    ok = [(len(base_scores(e["features"])), v) for v, e in entries.items()
          if {_judge(s) for s in base_scores(e["features"])} <= ran]
    return max(ok)[1] if ok else None


def reference_position(values: np.ndarray, quantiles: Sequence[float]) -> np.ndarray:
    """Where each value sits in a reference distribution given by its ``quantiles`` (at evenly
    spaced levels 0..1): the level, linearly interpolated between neighbouring quantiles; a
    value equal to a run of equal quantiles (a point mass) gets the middle of the run, as tied
    values get their average rank in :func:`grader.score_stats.percentiles`. NaN stays NaN."""
    q = np.asarray(quantiles, dtype=float)
    v = np.asarray(values, dtype=float)
    out = np.full(len(v), np.nan)
    ok = np.isfinite(v)
    m = len(q) - 1
    if m < 1 or not ok.any():
        return out
    x = v[ok]
    lo = np.searchsorted(q, x, side="left")
    hi = np.searchsorted(q, x, side="right")
    tied = hi > lo
    i = np.clip(lo, 1, m)
    gap = q[i] - q[i - 1]
    frac = np.where(gap > 0, (x - q[i - 1]) / np.where(gap > 0, gap, 1.0), 0.5)
    pos = np.where(tied, (lo + hi - 1) / 2.0, i - 1 + np.clip(frac, 0.0, 1.0))
    pos = np.where(x < q[0], 0.0, np.where(x > q[-1], m, pos))
    out[ok] = np.clip(pos / m, 0.5 / m, 1.0)
    return out


def reference_percentiles(pct: Mapping[str, np.ndarray], raw: Mapping[str, np.ndarray],
                          model: Mapping) -> dict[str, np.ndarray]:
    """``pct`` with each score the model has a reference distribution for (``reference``)
    re-read as its raw value's place in that distribution, where the label has a percentile
    (a judge abstaining on a label still abstains).

    Percentiles within the dataset are the same whatever share of its labels is wrong, so a
    model reading them assumes the share it was fitted at (3-10 % of each error type): with 15 %
    of each type its per-issue probabilities fell to a tenth of the observed share and
    ``ensemble_any`` ranked below the best single score (``bench/error_rates.py``). The
    reference is where each raw score fell on the model's own training runs (coco128 graded
    with out-of-fold box graders, errors drawn as in training: ``bench/fit_default_ensemble.py
    reference``), so the features mean what they meant in training at any share of errors."""
    ref = (model.get("reference") or {}).get("quantiles") or {}
    out = dict(pct)
    for name, q in ref.items():
        if name in pct and name in raw:
            r = np.asarray(raw[name], dtype=float)
            out[name] = np.where(np.isfinite(pct[name]), reference_position(r, q), np.nan)
    return out


def default_model_scores(pct: Mapping[str, np.ndarray], issue: str,
                         model: Mapping | None = None,
                         raw: Mapping[str, np.ndarray] | None = None) -> tuple[np.ndarray, dict] | None:
    """Suspicion of every label for ``issue`` from the shipped model, with what was used.

    ``raw``: the scores' raw columns (same rows as ``pct``); where given and the model carries
    reference distributions, the model reads each score's place in its training runs instead
    of its percentile in this dataset (:func:`reference_percentiles`).
    Returns None when there is no shipped model or no variant whose scores are all present
    (the caller then uses the vote). Labels no used judge scored get NaN, as with the vote.
    """
    model = model if model is not None else load_default_model()
    if model is None:
        return None
    variant = choose_variant(model, issue, list(pct))
    if variant is None:
        return None
    entry = model["issues"][issue][variant]
    used = base_scores(entry["features"])
    n = len(next(iter(pct.values())))
    absent = [u for u in used if u not in pct]
    referenced = raw is not None and bool((model.get("reference") or {}).get("quantiles"))
    if referenced:
        pct = reference_percentiles(pct, raw, model)
    pct = {**pct, **{u: np.full(n, np.nan) for u in absent}}   # abstains everywhere
    s = apply_logistic(entry, pct)
    scored = np.zeros(len(s), dtype=bool)
    for name in used:
        scored |= np.isfinite(pct[name])
    s = np.where(scored, s, np.nan)
    info = {"chosen": "default_model", "variant": variant, "inputs": used,
            "feature_space": "reference" if referenced else "dataset percentiles",
            "absent": absent, "ignored": sorted(set(pct) - set(used)),
            "cv_auroc": entry.get("cv_auroc"), "trained_on": model.get("training_data", "")[:80]}
    return s, info


def training_rate(model: Mapping, issue: str, info: Mapping) -> float | None:
    """The share of ``issue``'s errors the shipped model's output for it assumes: the rate its
    Platt scale was fitted at (``platt.error_rate``; the duplicate composition's own where
    ``info`` says the output was composed with the raw duplicate score), else the training
    counts' (``n_train``); None where neither is recorded."""
    if info.get("composed_with"):
        platt = (model.get("duplicate_composition") or {}).get("platt") or {}
    else:
        entry = ((model.get("issues") or {}).get(issue) or {}).get(info.get("variant")) or {}
        platt = entry.get("platt") or {}
        if not platt.get("error_rate"):
            n = entry.get("n_train") or {}
            if n.get("errors") and n.get("clean"):
                return float(n["errors"]) / (float(n["errors"]) + float(n["clean"]))
    rate = platt.get("error_rate")
    return float(rate) if rate else None


#: Bounds of the share of errors :func:`adapt_to_prevalence` may settle on.
PREVALENCE_BOUNDS = (1e-4, 0.9)


def adapt_to_prevalence(p: np.ndarray, train_rate: float, max_iter: int = 200,
                        tol: float = 1e-6, n_estimate: int | None = None) -> tuple[np.ndarray, float]:
    """``p`` (probabilities of an issue at the training share ``train_rate``) re-read at this
    dataset's share of that issue, estimated from ``p`` itself by EM (Saerens, Latinne &
    Decaestecker, "Adjusting the outputs of a classifier to new a priori probabilities", 2002):
    each output's log-odds shifted by ``logit(q) - logit(train_rate)`` and ``q``
    set to the mean adjusted output until it settles. Returns (adjusted ``p``, ``q``); NaN stays
    NaN and ranks are unchanged. ``n_estimate``: estimate ``q`` on the first ``n_estimate``
    rows only (the dataset's labels; rows after them, such as labels a reviewer already fixed,
    are adjusted but do not count).

    Why: a model fitted where 3-10 % of each issue's labels were wrong says "5 %" for a label
    that is wrong with 40 % chance on a dataset where a quarter of the labels are wrong
    (``bench/error_rates.py``); the noisy-OR behind ``ensemble_any`` then lets an issue whose
    probabilities stayed low fall behind another's."""
    p = np.asarray(p, dtype=float)
    ok = np.isfinite(p)
    fit = ok.copy()
    if n_estimate is not None:
        fit[n_estimate:] = False
    if not fit.any() or not 0 < train_rate < 1:
        return p, float(train_rate)
    z = logit(p[ok], 1e-9)
    zf = z[fit[ok]]
    z_train = np.log(train_rate / (1.0 - train_rate))
    lo, hi = PREVALENCE_BOUNDS
    q = float(np.clip(train_rate, lo, hi))
    for _ in range(max_iter):
        new = float(np.clip(sigmoid(zf + np.log(q / (1.0 - q)) - z_train).mean(), lo, hi))
        converged = abs(new - q) < tol
        q = new
        if converged:
            break
    out = p.copy()
    out[ok] = sigmoid(z + np.log(q / (1.0 - q)) - z_train)
    return out, q


def one_issue_each(p: np.ndarray, no_object: int | None = None) -> np.ndarray:
    """Per-issue probabilities ``p`` ``(n_labels, n_issues)``, each from its own one-vs-rest
    model, read as one distribution over "clean" and the issues, which exclude each other (a
    box on nothing is spurious, not also badly placed): each issue's odds ``o_k = p_k / (1 -
    p_k)`` against the label being clean, ``q_k = o_k / (1 + sum_j o_j)``. NaN (an issue no
    judge spoke to) adds no odds and stays NaN. Ranks within an issue change only where
    another issue explains the label better.

    Why: every one-vs-rest model scores the boxes the others are sure of as well, since the
    same evidence (the box grader's ``p_not_good``, no detection on the box) speaks to
    several issues. On coco128 (5 % of each type, 2 seeds) 89 of the 184 labels at the top of
    ``ensemble_badloc`` were injected spurious boxes whose ``ensemble_spurious`` was near 1;
    badloc, swap and spurious read together: AP of badloc 0.617 -> 0.788 and of swap 0.911 ->
    0.936 (docs/evaluation.md).

    ``no_object`` (the column of :data:`grader.scores.NO_OBJECT_ISSUE`): read first, as "is
    there an object at all", keeping its own probability ``p_0``; the other issues, errors of an
    object's label, share ``1 - p_0``: ``q_k = (1 - p_0) o_k / (1 + sum_{j != 0} o_j)``. A box
    on nothing also looks like a wrong class; read flat, its spurious probability fell wherever
    the swap model was surer of it (coco128-custom, seed 1: ``ensemble_spurious`` AUROC 0.994
    before the reading, 0.954 after)."""
    p = np.asarray(p, dtype=float)
    x = np.clip(np.nan_to_num(p, nan=0.0), 0.0, 1.0 - 1e-9)
    odds = x / (1.0 - x)
    if no_object is None:
        q = odds / (1.0 + odds.sum(axis=1, keepdims=True))
    else:
        # "no object" first, keeping its own probability; the issues of an object's label
        # share the rest as one distribution among themselves
        rest = [j for j in range(x.shape[1]) if j != no_object]
        q = np.empty_like(x)
        q[:, no_object] = x[:, no_object]
        q[:, rest] = ((1.0 - x[:, [no_object]]) * odds[:, rest]
                      / (1.0 + odds[:, rest].sum(axis=1, keepdims=True)))
    return np.where(np.isfinite(p), q, np.nan)
