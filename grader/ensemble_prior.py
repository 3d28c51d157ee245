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
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

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


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))


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
        return _sigmoid(float(entry["platt"]["a"]) * z + float(entry["platt"]["b"]))
    n = entry.get("n_train") or {}
    if n.get("errors") and n.get("clean"):
        z = z + float(np.log(n["errors"] / n["clean"]))
    return _sigmoid(z)


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


def default_model_scores(pct: Mapping[str, np.ndarray], issue: str,
                         model: Mapping | None = None) -> tuple[np.ndarray, dict] | None:
    """Suspicion of every label for ``issue`` from the shipped model, with what was used.

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
    pct = {**pct, **{u: np.full(n, np.nan) for u in absent}}   # abstains everywhere
    s = apply_logistic(entry, pct)
    scored = np.zeros(len(s), dtype=bool)
    for name in used:
        scored |= np.isfinite(pct[name])
    s = np.where(scored, s, np.nan)
    info = {"chosen": "default_model", "variant": variant, "inputs": used,
            "absent": absent, "ignored": sorted(set(pct) - set(used)),
            "cv_auroc": entry.get("cv_auroc"), "trained_on": model.get("training_data", "")[:80]}
    return s, info
