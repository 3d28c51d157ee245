"""What a quality grader (ClipGrader, the box grader) writes on each label: seven ``<judge>_*``
attributes and the ``suspect:<judge>_bad`` / ``_background`` tags; shared by both."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from ...fields import set_label_tag, write_label_attrs
from ...report import RunReport

_ATTRS = ("p_good", "p_bad", "p_background", "p_not_good", "quality", "class", "p_other_class")


def quality_attrs(judge: str) -> tuple[str, ...]:
    """The per-label attributes of ``judge`` (registered in grader/scores.py)."""
    return tuple(f"{judge}_{a}" for a in _ATTRS)


def quality_tags(judge: str) -> tuple[str, str]:
    """``judge``'s (bad box, background) label tags."""
    return f"suspect:{judge}_bad", f"suspect:{judge}_background"


def write_quality(collection, field: str, judge: str,
                  scores: Mapping[tuple[str, str], Mapping[str, Any]],
                  keys: Sequence[tuple[str, str]], attrs: Sequence[str], bad_threshold: float,
                  background_threshold: float, report: RunReport) -> None:
    """Write ``attrs`` of every label in ``keys`` (None where unscored, so no stale value
    survives a re-run), tag the labels past the thresholds, and count them in ``report``."""
    write_label_attrs(collection, field,
                      {a: {k: scores.get(k, {}).get(a) for k in keys} for a in attrs})
    tag_bad, tag_bg = quality_tags(judge)
    bad = [k[1] for k, r in scores.items() if r[f"{judge}_p_bad"] >= bad_threshold]
    bg = [k[1] for k, r in scores.items() if r[f"{judge}_p_background"] >= background_threshold]
    report.tagged[tag_bad] = set_label_tag(collection, field, tag_bad, bad)
    report.tagged[tag_bg] = set_label_tag(collection, field, tag_bg, bg)
    report.labels_scored = len(scores)
    report.samples_scored = len({k[0] for k in scores})
    report.fields = [f"{field}.detections.{a}" for a in attrs]
