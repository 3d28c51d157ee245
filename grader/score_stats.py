"""Score statistics below both the judges and the ensemble: percentile ranks, abstention
floors, the stacking features, and the small models the ensembles fit on them.

A judge may use these (the consistency judge splits a duplicate pair by percentiles of the
other judges' scores) without depending on the ensemble that combines the judges.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from .evaluate import _ranks


def percentiles(col: np.ndarray) -> np.ndarray:
    """Percentile rank in (0, 1] of each finite value (ties share their average); NaN stays NaN."""
    out = np.full(len(col), np.nan)
    ok = np.isfinite(col)
    if ok.any():
        out[ok] = _ranks(col[ok]) / ok.sum()
    return out


def floor_as_abstention(col: np.ndarray, min_share: float = 0.5) -> np.ndarray:
    """Treat a judge's least-suspect value as 'no opinion' when most labels share it exactly.

    cleanlab gives 1.0 (perfect) to every box with no prediction near it, and a weak detector
    leaves most boxes so: that 1.0 says "nothing to compare with", not "verified correct".
    Yes/no flags (two values) are left alone.
    """
    ok = np.isfinite(col)
    if ok.sum() == 0 or len(np.unique(col[ok])) <= 2:
        return col
    lo = col[ok].min()
    at_floor = ok & (col == lo)
    if at_floor.sum() / ok.sum() < min_share:
        return col
    out = col.copy()
    out[at_floor] = np.nan
    return out


def abstaining_percentiles(col: np.ndarray, abstain_floor: float | None = 0.5) -> np.ndarray:
    """:func:`percentiles` of a score column after :func:`floor_as_abstention` (``None``: none),
    as every ensemble reads a judge's column."""
    return percentiles(floor_as_abstention(col, abstain_floor) if abstain_floor else col)


def sigmoid(z: np.ndarray) -> np.ndarray:
    """The logistic function, its argument clipped to [-50, 50] (no overflow warnings)."""
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))


def logit(p: np.ndarray, eps: float = 1e-4) -> np.ndarray:
    """Log-odds of probabilities clipped to [eps, 1 - eps]; NaN (no opinion) counts as 0.5."""
    p = np.clip(np.where(np.isfinite(p), p, 0.5), eps, 1 - eps)
    return np.log(p / (1 - p))


#: How far :func:`platt` lets log-odds go: only probabilities this close to 0 or 1 tie.
PLATT_EPS = 1e-12


def platt(p: np.ndarray, a: float, b: float) -> np.ndarray:
    """Platt scaling ``sigmoid(a logit(p) + b)`` of probabilities ``p`` (NaN stays NaN); for
    ``a > 0`` it keeps their order. The log-odds are clipped only at :data:`PLATT_EPS`, not at
    the features' 1e-4: the shipped model reads a dataset of classes it never saw with
    probabilities far below that (coco128-custom, seed 1: spurious at most 0.046 and mostly
    under 1e-4), and the clip tied them, injected spurious boxes among them (847 distinct
    scores became 56; AUROC 0.994 -> 0.965)."""
    p = np.asarray(p, dtype=float)
    return np.where(np.isfinite(p), sigmoid(a * logit(p, PLATT_EPS) + b), np.nan)


def stack_features(pct: dict[str, np.ndarray],
                   names: Sequence[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """Feature matrix for the learned ensemble: each score's percentile (0.5 where unscored)
    and, for scores that abstain on some labels, an explicit missing-indicator column.

    ``names`` (from an earlier call) rebuilds the same columns on other labels. A name
    ``<score>:top<NN>`` (only ever asked for, never made here) is the hinge
    ``max(0, p - NN/100) / (1 - NN/100)`` of the score's percentile ``p`` (0 where it
    abstains): a linear model can then weigh a score whose evidence lies in its last few
    percent only (``consistency_xdup``: a cross-class partner at high IoU).
    """
    if names is None:
        names = []
        for name in sorted(pct):
            miss = ~np.isfinite(pct[name])
            names.append(name)
            if miss.any() and not miss.all():
                names.append(f"{name}:missing")
    n = len(next(iter(pct.values()))) if pct else 0
    cols = []
    for name in names:
        base, q = feature_base(name)
        p = pct.get(base, np.full(n, np.nan))
        miss = ~np.isfinite(p)
        if name.endswith(":missing"):
            cols.append(miss.astype(float))
        elif q is not None:
            cols.append(np.where(miss, 0.0, np.clip((p - q) / (1.0 - q), 0.0, 1.0)))
        else:
            cols.append(np.where(miss, 0.5, p))
    X = np.stack(cols, axis=1) if cols else np.zeros((n, 0))
    return X, list(names)


def feature_base(name: str) -> tuple[str, float | None]:
    """(score name, hinge quantile or None) of a stacking feature name (see :func:`stack_features`)."""
    if name.endswith(":missing"):
        return name[:-len(":missing")], None
    head, _, tail = name.rpartition(":top")
    if head and tail.isdigit() and 0 < int(tail) < 100:
        return head, int(tail) / 100.0
    return name, None


#: The learned candidate that starts from the shipped model: a logistic regression on the
#: default model's log-odds and the scores' percentiles, kept close to the default by a
#: stronger penalty (a verified subset drawn from the top of the queue is small and biased).
DEFAULT_PLUS = "default+"


def make_model(kind: str, seed: int):
    if kind in ("logistic", DEFAULT_PLUS):
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(class_weight="balanced", C=1.0 if kind == "logistic" else 0.1,
                                  max_iter=2000)
    from sklearn.ensemble import HistGradientBoostingClassifier

    # Small trees and strong regularisation: the verified subset holds tens of errors.
    return HistGradientBoostingClassifier(max_depth=3, max_iter=100, learning_rate=0.05,
                                          min_samples_leaf=10, l2_regularization=1.0,
                                          class_weight="balanced", random_state=seed)


def finite_or(x: float, default: float) -> float:
    return x if x is not None and math.isfinite(x) else default
