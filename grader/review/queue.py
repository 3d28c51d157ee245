"""The review queue: suspect labels of a view, filtered by issue/class/threshold and sorted by a score.

Which scores exist comes from the registry (:mod:`grader.scores`) intersected with what is on
the dataset, so a judge that adds a ``ScoreSpec`` line shows up here with no change.
Everything is read column-wise in one ``values()`` query per field.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import fiftyone as fo
import fiftyone.core.aggregations as foa

from grader.fields import SUSPECT_PREFIX, read_detections
from grader.scores import SCORES, ScoreSpec, get_spec

from .fixes import REVIEWED_TAGS, candidates_field, per_label_values

# Extra per-label attributes the fixes use as suggestions.
_HINT_ATTRS = ("cleanlab_swap_label", "cleanlab_badloc_pred_id", "source_pred_id")


@dataclass
class QueueItem:
    """One suspect label in the queue."""

    sample_id: str
    label_id: str
    field: str                 # GT field, or the candidates field for overlooked items
    label: str | None
    filepath: str
    score: str | None          # the sort score's attribute
    value: float | None        # its raw value
    suspicion: float | None    # the value mapped to "higher = more suspect"
    issues: list[str] = field(default_factory=list)   # suspect tags on the label
    tags: list[str] = field(default_factory=list)
    suggested_label: str | None = None                 # cleanlab_swap_label
    pred_id: str | None = None                         # cleanlab_badloc_pred_id
    is_candidate: bool = False
    box: list[float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _field_exists(collection, name: str) -> bool:
    return collection.get_field(name) is not None if name else False


def available_scores(collection, gt_field: str = "ground_truth") -> list[ScoreSpec]:
    """The registry's scores that exist on ``gt_field`` (or its candidates field) in ``collection``.

    A score counts as present when its attribute is declared on the field's schema or, for
    undeclared dynamic attributes, when any label carries a value (all such checks run as one
    aggregation).
    """
    cfield = candidates_field(gt_field)
    present, unknown = set(), []
    for spec in SCORES:
        f = cfield if spec.on_candidates else gt_field
        if not _field_exists(collection, f):
            continue
        path = f"{f}.detections.{spec.attr}"
        if collection.get_field(path) is not None:
            present.add(spec.attr)
        else:
            unknown.append((spec.attr, path))
    if unknown:
        counts = collection.aggregate([foa.Count(path) for _, path in unknown])
        present |= {attr for (attr, _), n in zip(unknown, counts) if n}
    return [s for s in SCORES if s.attr in present]


def _tag_issue(tag: str) -> str:
    for s in SCORES:
        if s.tag == tag:
            return s.issue
    return tag[len(SUSPECT_PREFIX):]


def _read(collection, field_name: str, attrs: Sequence[str]):
    return read_detections(collection, field_name, attrs=list(attrs) + ["tags"])


def issue_counts(collection, gt_field: str = "ground_truth",
                 include_reviewed: bool = False) -> dict[str, int]:
    """Count of labels per suspect tag (``suspect:badloc``: 12, ...) in ``collection``.

    Covers the GT field and its overlooked-candidates field; reviewed labels are left out
    unless ``include_reviewed``. Every registry tag is present (0 when absent).
    """
    counts: Counter = Counter({s.tag: 0 for s in SCORES if s.tag})
    for f in (gt_field, candidates_field(gt_field)):
        if not _field_exists(collection, f):
            continue
        path = f"{f}.detections.tags"
        for tags in per_label_values(collection, [path])[0]:
            tags = tags or []
            if not include_reviewed and any(t in REVIEWED_TAGS for t in tags):
                continue
            for t in tags:
                if t.startswith(SUSPECT_PREFIX):
                    counts[t] += 1
    return dict(counts)


def _passes_threshold(spec: ScoreSpec, value: float | None, threshold: float | None) -> bool:
    if threshold is None:
        return True
    if value is None:
        return False
    return value >= threshold if spec.higher_is_suspect else value <= threshold


def review_queue(collection, gt_field: str = "ground_truth", score: str | None = None,
                 issues: Sequence[str] | None = None, classes: Sequence[str] | None = None,
                 threshold: float | None = None, suspects_only: bool = True,
                 include_reviewed: bool = False, limit: int | None = None) -> list[QueueItem]:
    """Suspect labels of ``collection``, most suspect first by ``score``.

    Args:
        score: registry attribute to sort by (default: the first available score). An
            ``on_candidates`` score (``cleanlab_overlooked``) lists the overlooked candidates.
        issues: keep labels carrying a suspect tag of one of these issue types or tags
            (``"badloc"`` or ``"suspect:badloc"``); None keeps every issue.
        classes: keep labels of these classes.
        threshold: keep labels whose raw score is at least as suspect as this value
            (``<=`` for low-is-suspect scores, ``>=`` otherwise).
        suspects_only: with no ``issues``/``threshold``, keep only labels with a suspect tag.
        include_reviewed: keep labels tagged ``reviewed:ok``/``reviewed:fixed``.
        limit: at most this many items.
    """
    if score is None:
        avail = available_scores(collection, gt_field)
        if not avail:
            return []
        score = avail[0].attr
    spec = get_spec(score)
    fname = candidates_field(gt_field) if spec.on_candidates else gt_field
    if not _field_exists(collection, fname):
        return []
    wanted_issues = None
    if issues:
        wanted_issues = {i if i.startswith(SUSPECT_PREFIX) else None for i in issues} - {None}
        plain = {i for i in issues if not i.startswith(SUSPECT_PREFIX)}
        wanted_issues |= {s.tag for s in SCORES if s.tag and s.issue in plain}
        wanted_issues |= {SUSPECT_PREFIX + i for i in plain}
    class_set = set(classes) if classes else None

    hints = [a for a in _HINT_ATTRS if a != score]
    table = _read(collection, fname, [score] + hints)
    items: list[QueueItem] = []
    for i, sid in enumerate(table.sample_ids):
        for j, lid in enumerate(table.ids[i]):
            tags = table.attrs["tags"][i][j] or []
            label = table.labels[i][j]
            if not include_reviewed and any(t in REVIEWED_TAGS for t in tags):
                continue
            if class_set is not None and label not in class_set:
                continue
            sus_tags = [t for t in tags if t.startswith(SUSPECT_PREFIX)]
            if wanted_issues is not None and not wanted_issues.intersection(sus_tags):
                continue
            if wanted_issues is None and threshold is None and suspects_only and not sus_tags:
                continue
            value = table.attrs[score][i][j]
            if not _passes_threshold(spec, value, threshold):
                continue
            items.append(QueueItem(
                sample_id=sid, label_id=lid, field=fname, label=label,
                filepath=table.filepaths[i], score=score,
                value=None if value is None else float(value),
                suspicion=spec.suspicion(value), issues=sus_tags, tags=list(tags),
                suggested_label=table.attrs["cleanlab_swap_label"][i][j],
                pred_id=table.attrs["cleanlab_badloc_pred_id"][i][j],
                is_candidate=spec.on_candidates, box=list(table.boxes[i][j] or []),
            ))
    # most suspect first; unscored last; stable within ties (dataset order)
    items.sort(key=lambda it: (it.suspicion is None, -(it.suspicion or 0.0)))
    return items[:limit] if limit else items


def score_histogram(collection, score: str, gt_field: str = "ground_truth", bins: int = 20,
                    include_reviewed: bool = False) -> dict[str, Any]:
    """Histogram of a score's raw values over the labels in ``collection``.

    Returns ``{"counts", "edges", "score", "n", "higher_is_suspect"}``; empty counts when
    no label has the score.
    """
    spec = get_spec(score)
    fname = candidates_field(gt_field) if spec.on_candidates else gt_field
    out = {"score": score, "counts": [], "edges": [], "n": 0,
           "higher_is_suspect": spec.higher_is_suspect}
    if not _field_exists(collection, fname):
        return out
    path = f"{fname}.detections"
    vals, tags = per_label_values(collection, [f"{path}.{score}", f"{path}.tags"])
    xs = [float(v) for v, t in zip(vals, tags)
          if v is not None and (include_reviewed or not any(x in REVIEWED_TAGS for x in (t or [])))]
    if not xs:
        return out
    import numpy as np

    lo, hi = min(xs), max(xs)
    if hi <= lo:
        hi = lo + 1e-6
    if 0.0 <= lo and hi <= 1.0:  # the usual 0-1 scores: fixed edges read better by eye
        lo, hi = 0.0, 1.0
    counts, edges = np.histogram(np.asarray(xs), bins=bins, range=(lo, hi))
    out.update(counts=[int(c) for c in counts], edges=[float(e) for e in edges], n=len(xs))
    return out


def queue_view(collection, items: Sequence[QueueItem]) -> fo.DatasetView:
    """A view of ``collection`` showing just the queued labels (in their samples, queue order)."""
    if not items:
        return collection.limit(0)
    fields = sorted({it.field for it in items})
    ids = [it.label_id for it in items]
    order = list(dict.fromkeys(it.sample_id for it in items))
    return collection.select(order, ordered=True).select_labels(ids=ids, fields=fields)
