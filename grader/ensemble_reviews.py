"""Review decisions as truth for the ensemble: the queue learns from every verdict.

Each decision a curator takes in the review panel (or through :mod:`grader.review.fixes`) is a
verified label: *accept* tags it ``reviewed:ok`` (clean); *relabel*, *replace box* and *delete*
are errors, and the fix log keeps the label as it was before the fix, with every judge's score
on it. :func:`review_rows` turns them into training rows for :func:`grader.ensemble.compute_ensemble`:

- an accepted label still in the field is a trusted clean label;
- a fixed label is a trusted error of the fix's issue (relabel -> ``swap``, replace box ->
  ``badloc``, delete -> the issue the reviewer gave or :func:`grader.review.fixes.deletion_issue`
  read from the label's scores; a deletion logged before that says only "an error": ``any``), described by
  the scores it had *before* the fix (a relabelled label's current scores, if a judge re-ran,
  describe the corrected label). Its percentile in each score is its place among the labels of
  the current run, so a deleted label counts as it ranked when it was reviewed.

The ensemble then fits on the verified labels as on a verified subset of images (choosing
between the shipped model and fitted ones by cross-validated AUROC), and the items not yet seen
are re-ranked. A fix that was undone is not a decision any more.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from .evaluate import suspicion_column
from .scores import REVIEWED_OK_TAG, ScoreSpec

#: The issue a fix establishes (a deletion says only "error" unless the reviewer said which).
FIX_ISSUE = {"relabel": "swap", "replace_box": "badloc"}
ANY = "any"


@dataclass
class ReviewRows:
    """Verified labels from the review: accepted ids, and error rows (issue, raw scores)."""

    accepted: set[str] = field(default_factory=set)
    fixed_ids: set[str] = field(default_factory=set)
    issues: list[str] = field(default_factory=list)
    raw: dict[str, np.ndarray] = field(default_factory=dict)
    #: the newest fix-log entry read (its ``seq``), so a later call knows what is new
    last_seq: int = 0

    def __len__(self) -> int:
        return len(self.issues)


def review_rows(collection, gt_field: str, specs: Mapping[str, ScoreSpec],
                label_ids: list[str], tags: list[list[str] | None]) -> ReviewRows:
    """The review decisions on ``gt_field``: ``label_ids`` / ``tags`` are the current labels
    (in the order of the ensemble's columns), ``specs`` the scores it reads."""
    from .review.log import iter_fixes

    out = ReviewRows()
    out.accepted = {lid for lid, t in zip(label_ids, tags) if t and REVIEWED_OK_TAG in t}
    befores: list[dict] = []
    seen: set[str] = set()
    for rec in iter_fixes(collection._root_dataset, undone=False, state="done"):
        out.last_seq = max(out.last_seq, int(rec.seq or 0))
        if rec.field != gt_field or rec.before is None or rec.label_id in seen:
            continue
        if rec.kind not in ("relabel", "replace_box", "delete"):
            continue
        seen.add(rec.label_id)   # newest first: a label's latest fix decides
        issue = FIX_ISSUE.get(rec.kind) or (rec.extra or {}).get("issue") or ANY
        out.issues.append(str(issue))
        out.fixed_ids.add(str(rec.label_id))
        befores.append(rec.before)
    out.accepted -= out.fixed_ids
    for name, spec in specs.items():
        out.raw[name] = suspicion_column(spec, [b.get(spec.attr) for b in befores])
    return out


def percentile_in(values: np.ndarray, ref: np.ndarray, abstained: np.ndarray) -> np.ndarray:
    """Percentile of each value among the finite values of ``ref`` (the current labels' raw
    scores; ties share their average rank, as :func:`grader.ensemble.percentiles`); values at or
    below ``ref``'s floor are NaN where the ensemble let the judge abstain there
    (``abstained``: the current labels it abstained on)."""
    out = np.full(len(values), np.nan)
    r = np.sort(ref[np.isfinite(ref)])
    if not len(r):
        return out
    ok = np.isfinite(values)
    v = values[ok]
    lo = np.searchsorted(r, v, side="left")
    hi = np.searchsorted(r, v, side="right")
    out[ok] = np.clip((lo + hi + 1) / 2.0, 1.0, len(r)) / len(r)
    if abstained.any():
        out[ok & (values <= r[0])] = np.nan
    return out


def extend_with_reviews(pct: dict[str, np.ndarray], raw: dict[str, np.ndarray],
                        rows: ReviewRows) -> dict[str, np.ndarray]:
    """``pct`` with one more row per fixed label (its percentile before the fix)."""
    if not len(rows):
        return pct
    out = {}
    for name, col in pct.items():
        abstained = ~np.isfinite(col) & np.isfinite(raw[name])
        extra = percentile_in(rows.raw.get(name, np.full(len(rows), np.nan)), raw[name], abstained)
        out[name] = np.concatenate([col, extra])
    return out


def summary(rows: ReviewRows) -> dict[str, Any]:
    from collections import Counter

    return {"accepted": len(rows.accepted), "fixed": dict(Counter(rows.issues)),
            "last_seq": rows.last_seq}
