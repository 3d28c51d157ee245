"""The registry of every judge's per-label scores: which issue each one speaks to and its direction.

The panel, the ensemble and the evaluation read this table instead of hard-coding field names.
A judge that adds a score adds one :class:`ScoreSpec` line here.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ScoreSpec:
    attr: str                 # attribute on the detection (e.g. "cleanlab_badloc")
    judge: str                # "cleanlab", "clipgrader", "vlm", "ensemble"
    issue: str                # "badloc", "swap", "overlooked", "spurious", "any"
    higher_is_suspect: bool   # False: low values flag problems (cleanlab's convention)
    on_candidates: bool = False  # True: lives on the overlooked-candidates field, not on GT
    tag: str | None = None    # tag this judge puts on labels past its threshold
    description: str = ""

    def suspicion(self, value: float | None) -> float | None:
        """Map a raw value to 'higher = more suspect' (None stays None)."""
        if value is None:
            return None
        return float(value) if self.higher_is_suspect else 1.0 - float(value)


SCORES: list[ScoreSpec] = [
    ScoreSpec("cleanlab_badloc", "cleanlab", "badloc", False, tag="suspect:badloc",
              description="ObjectLab badly-located score (0-1, low = box likely misplaced)"),
    ScoreSpec("cleanlab_swap", "cleanlab", "swap", False, tag="suspect:swap",
              description="ObjectLab swap score (0-1, low = class likely wrong)"),
    ScoreSpec("cleanlab_overlooked", "cleanlab", "overlooked", False, on_candidates=True,
              tag="suspect:overlooked",
              description="ObjectLab overlooked score of a predicted box (low = object likely missing from GT)"),
]

SUSPECT_TAGS = sorted({s.tag for s in SCORES if s.tag})
REVIEWED_OK_TAG = "reviewed:ok"


def get_spec(attr: str) -> ScoreSpec:
    for s in SCORES:
        if s.attr == attr:
            return s
    raise KeyError(f"unknown score attribute '{attr}'; known: {[s.attr for s in SCORES]}")
