"""Review-cost estimate: errors caught and human time for a review budget, ranked vs random order.

Time assumptions from seed 001 (VLM-in-the-loop annotation study): drawing one instance by
hand takes ~80 s, a yes/no check of a proposed label ~3 s. Reviewing ``k`` labels costs
``k * check_s`` and fixing each error found costs ``draw_s`` (it is redrawn); the alternative
of re-annotating every label from scratch costs ``n * draw_s``.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from .evaluate import TRUSTED_TAG, expected_hits_at_k, read_label_scores
from .noise import CLEAN, TRUTH_ATTR
from .scores import get_spec

DRAW_S = 80.0
CHECK_S = 3.0


def expected_hits_curve(is_error: Sequence[bool], scores: Sequence[float]) -> np.ndarray:
    """``curve[k]`` = expected errors among the top ``k`` (ties in random order), k = 0..n."""
    y = np.asarray(is_error, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-s, kind="mergesort")
    ys, ss = y[order].astype(float), s[order]
    out = np.zeros(len(s) + 1)
    start = 0
    while start < len(ss):
        end = start
        while end + 1 < len(ss) and ss[end + 1] == ss[start]:
            end += 1
        rate = ys[start:end + 1].mean()   # within a tie group every position is equally likely
        out[start + 1:end + 2] = out[start] + rate * np.arange(1, end - start + 2)
        start = end + 1
    return out


def review_cost(scores: Sequence[float], is_error: Sequence[bool],
                budgets: Sequence[float] = (0.05, 0.1, 0.2), check_s: float = CHECK_S,
                draw_s: float = DRAW_S, recall_targets: Sequence[float] = (0.5, 0.8)) -> dict[str, Any]:
    """For each budget (a fraction of labels if < 1, else a count), errors caught and time.

    ``ranked``: reviewing in decreasing ``scores`` order (ties at random, expected value);
    ``random``: reviewing a random subset (expected ``k * prevalence``). NaN scores rank last.
    """
    y = np.asarray(is_error, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    finite = s[np.isfinite(s)]
    s = np.where(np.isfinite(s), s, (finite.min() - 1) if len(finite) else 0.0)
    n, n_err = len(y), int(y.sum())
    prevalence = n_err / n if n else 0.0
    rows = []
    for b in budgets:
        k = int(min(n, math.ceil(b * n) if b < 1 else int(b)))
        found = expected_hits_at_k(y, s, k)
        rand = k * prevalence
        rows.append({
            "budget": b, "checks": k,
            "found_ranked": found, "found_random": rand,
            "recall_ranked": found / n_err if n_err else float("nan"),
            "recall_random": rand / n_err if n_err else float("nan"),
            "time_ranked_s": k * check_s + found * draw_s,
            "time_random_s": k * check_s + rand * draw_s,
            "s_per_error_ranked": (k * check_s + found * draw_s) / found if found else float("inf"),
            "s_per_error_random": (k * check_s + rand * draw_s) / rand if rand else float("inf"),
        })
    targets = {}
    if n_err:
        # Smallest number of checks whose expected hits reach the target, in ranked order.
        curve = expected_hits_curve(y, s)
        for t in recall_targets:
            need = t * n_err
            k_rank = int(np.argmax(curve >= need - 1e-9))
            k_rand = int(math.ceil(t * n))
            targets[f"{int(t * 100)}%"] = {
                "checks_ranked": k_rank, "checks_random": k_rand,
                "time_ranked_s": (k_rank * check_s + need * draw_s) if k_rank else None,
                "time_random_s": k_rand * check_s + need * draw_s,
            }
    return {
        "n_labels": n, "n_errors": n_err, "check_s": check_s, "draw_s": draw_s,
        "budgets": rows, "recall_targets": targets,
        "check_all_s": n * check_s + n_err * draw_s,
        "redraw_all_s": n * draw_s,
    }


def estimate_review_cost(collection, gt_field: str, score_attr: str = "ensemble_any",
                         truth_attr: str = TRUTH_ATTR, exclude_tag: str | None = TRUSTED_TAG,
                         **kwargs) -> dict[str, Any]:
    """:func:`review_cost` of the labels of ``gt_field`` ranked by ``score_attr`` vs injected truth.

    Covers errors that sit on GT labels (``grader.scores.GT_ISSUES``: badloc, swap, spurious,
    duplicate); samples tagged
    ``exclude_tag`` (the trusted subset) are left out.
    """
    spec = get_spec(score_attr)
    ls = read_label_scores(collection, gt_field, truth_attr=truth_attr, specs=[spec],
                           trusted_tag=exclude_tag or "")
    keep = ~ls.trusted if exclude_tag else np.ones(len(ls.label_ids), dtype=bool)
    truth = np.array([t if t is not None else CLEAN for t in ls.truth], dtype=object)
    col = ls.columns[f"{spec.judge}:{spec.attr}"]
    out = review_cost(col[keep], (truth != CLEAN)[keep], **kwargs)
    out["score"] = score_attr
    return out


def format_review_cost(rc: dict[str, Any]) -> str:
    """Human-readable table of a :func:`review_cost` result."""
    h = lambda sec: f"{sec / 3600:.2f} h" if sec >= 3600 else f"{sec / 60:.1f} min"
    lines = [
        f"Review cost ({rc.get('score', 'score')}; {rc['n_labels']} labels, {rc['n_errors']} errors; "
        f"check {rc['check_s']:.0f} s, redraw {rc['draw_s']:.0f} s per label)",
        f"{'budget':>8s} {'checks':>7s} {'found(ranked)':>14s} {'found(random)':>14s} "
        f"{'time ranked':>12s} {'time random':>12s} {'s/err ranked':>13s} {'s/err random':>13s}",
    ]
    for r in rc["budgets"]:
        b = f"{r['budget'] * 100:.0f}%" if r["budget"] < 1 else str(r["budget"])
        lines.append(f"{b:>8s} {r['checks']:7d} {r['found_ranked']:14.1f} {r['found_random']:14.1f} "
                     f"{h(r['time_ranked_s']):>12s} {h(r['time_random_s']):>12s} "
                     f"{r['s_per_error_ranked']:13.0f} {r['s_per_error_random']:13.0f}")
    for t, v in rc["recall_targets"].items():
        lines.append(f"to catch {t} of errors: {v['checks_ranked']} checks ranked "
                     f"({h(v['time_ranked_s'])}) vs {v['checks_random']} at random ({h(v['time_random_s'])})")
    lines.append(f"check every label: {h(rc['check_all_s'])}; redraw every label: {h(rc['redraw_all_s'])}")
    return "\n".join(lines)
