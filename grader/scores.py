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
    also: tuple[str, ...] = ()   # further issue types the score is evidence for

    def covers(self, issue: str) -> bool:
        """Whether this score is evidence for ``issue`` (its own issue, ``also``, or "any")."""
        return issue in (self.issue, "any") or issue in self.also or self.issue == "any"

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
    ScoreSpec("cleanlab_support", "cleanlab", "spurious", False, also=("badloc",),
              description="max IoU with any confident prediction of any class (low = no detection "
                          "supports the box: possibly spurious)"),
    ScoreSpec("cleanlab_overlooked", "cleanlab", "overlooked", False, on_candidates=True,
              tag="suspect:overlooked",
              description="ObjectLab overlooked score of a predicted box (low = object likely missing from GT)"),
    # Zoom judge (grader.judges.zoom.run_zoom): the detector re-run on a context crop per GT box.
    ScoreSpec("zoom_support", "zoom", "spurious", False, also=("badloc",),
              description="Zoom: max IoU of the box with any confident prediction on its crop (low = nothing there)"),
    ScoreSpec("zoom_label_prob", "zoom", "swap", False, also=("spurious",),
              description="Zoom: the labeled class's score at the matching crop prediction (low = class doubtful)"),
    ScoreSpec("zoom_other_prob", "zoom", "swap", True,
              description="Zoom: best other class's score at the matching crop prediction (high = likely another class)"),
    ScoreSpec("zoom_iou", "zoom", "badloc", False,
              description="Zoom: best IoU with a crop prediction of the labeled class (low = box misplaced)"),
    ScoreSpec("zoom_badloc", "zoom", "badloc", True,
              description="Zoom: p(label) x (1 - IoU) of the crop prediction surest of the labeled class "
                          "(high = a confident object of this class the box only partly covers)"),
    ScoreSpec("zoom_swap", "zoom", "swap", True,
              description="Zoom: best other class's score minus the labeled class's score at the "
                          "matching crop prediction (-1..1, high = another class fits better)"),
    ScoreSpec("zoom_evidence", "zoom", "spurious", False,
              description="Zoom: max over crop predictions of IoU x confidence (low = no object there)"),
    # Overlooked objects (grader.judges.overlooked.find_overlooked): the detector at 640 on the
    # full image (sliced when large, mirrored when asked), docs/overlooked.md.
    ScoreSpec("overlooked_score", "overlooked", "overlooked", True, on_candidates=True,
              tag="suspect:overlooked",
              description="Overlooked: noisy-OR of the passes' confidences for a detected box no GT box "
                          "accounts for, x (1 - IoU with a GT box of its class); for classes no detector "
                          "knows, x how often its detector classes are labelled objects in this dataset "
                          "(high = object likely missing from GT)"),
    # ClipGrader (grader.judges.clipgrader.grade_clipgrader): CLIP probabilities per GT box.
    ScoreSpec("clipgrader_p_bad", "clipgrader", "badloc", True, tag="suspect:clipgrader_bad",
              description="ClipGrader probability that the box is badly drawn (0-1, high = suspect)"),
    ScoreSpec("clipgrader_p_background", "clipgrader", "spurious", True,
              tag="suspect:clipgrader_background",
              description="ClipGrader probability that the box holds no object of its class (0-1, high = suspect)"),
    ScoreSpec("clipgrader_p_not_good", "clipgrader", "any", True,
              description="ClipGrader 1 - p_good: any problem with the box (0-1, high = suspect)"),
    ScoreSpec("clipgrader_p_other_class", "clipgrader", "swap", True,
              description="ClipGrader (all-class scoring) probability mass on other classes' prompts (high = suspect)"),
    # Box grader (grader.judges.boxgrader.grade_boxgrader): ClipGrader's recipe on
    # a frozen YOLOX-Nano's features, head trained on the user's own GT.
    ScoreSpec("boxgrader_p_bad", "boxgrader", "badloc", True, tag="suspect:boxgrader_bad",
              description="Box grader probability that the box is badly drawn (0-1, high = suspect)"),
    ScoreSpec("boxgrader_p_background", "boxgrader", "spurious", True,
              tag="suspect:boxgrader_background",
              description="Box grader probability that the box holds no object (0-1, high = suspect)"),
    ScoreSpec("boxgrader_p_not_good", "boxgrader", "any", True,
              description="Box grader 1 - p_good: any problem with the box (0-1, high = suspect)"),
    ScoreSpec("boxgrader_p_other_class", "boxgrader", "swap", True,
              description="Box grader class head: 1 - probability of the labelled class (high = suspect)"),
    # FiftyOne Brain compute_mistakenness baseline (grader.evaluate.run_brain_mistakenness).
    ScoreSpec("mistakenness", "brain", "swap", True,
              description="FiftyOne Brain class mistakenness of a GT box matched to a prediction (high = suspect)"),
    ScoreSpec("mistakenness_loc", "brain", "badloc", True,
              description="FiftyOne Brain localization mistakenness of a matched GT box (high = suspect)"),
    ScoreSpec("possible_spurious", "brain", "spurious", True,
              description="FiftyOne Brain flag: GT box with no matching prediction"),
    # VLM judge (grader.judges.vlm.run_vlm_judge): per-box verdict from a vision-language model.
    ScoreSpec("vlm_confidence", "vlm", "any", False, tag="suspect:vlm",
              description="VLM probability that the label is correct (0-1, low = suspect; None = unparsed/not judged)"),
    # Consistency judge (grader.judges.consistency.run_consistency): labels only, no model.
    ScoreSpec("consistency_duplicate", "consistency", "duplicate", True, tag="suspect:duplicate",
              description="IoU with a same-class box of the image, lowered towards half for the "
                          "better-supported box of the pair (0-1, high = likely a duplicate)"),
    ScoreSpec("consistency_dup_iou", "consistency", "duplicate", True,
              description="max IoU with another box of the same class in the image (0-1)"),
    ScoreSpec("consistency_dup_iou_any", "consistency", "duplicate", True,
              description="max IoU with another box of any class in the image (0-1)"),
    ScoreSpec("consistency_xdup", "consistency", "duplicate", True,
              description="IoU with a box of another class, discounted by how often the two classes "
                          "legitimately overlap in this dataset and split by which class fits worse "
                          "(0-1, high = one object likely boxed twice under two classes)"),
    ScoreSpec("consistency_outlier", "consistency", "badloc", True,
              description="max robust z-score of the box's log width/height/aspect/area within its "
                          "class (high = unusual geometry for the class)"),
    # Reliability-weighted ensemble (grader.ensemble.compute_ensemble).
    ScoreSpec("ensemble_badloc", "ensemble", "badloc", True, tag="suspect:ensemble_badloc",
              description="Ensemble suspect score for a misplaced box (0-1, high = suspect)"),
    ScoreSpec("ensemble_swap", "ensemble", "swap", True, tag="suspect:ensemble_swap",
              description="Ensemble suspect score for a wrong class (0-1, high = suspect)"),
    ScoreSpec("ensemble_spurious", "ensemble", "spurious", True, tag="suspect:ensemble_spurious",
              description="Ensemble suspect score for a box on no object (0-1, high = suspect)"),
    ScoreSpec("ensemble_duplicate", "ensemble", "duplicate", True, tag="suspect:ensemble_duplicate",
              description="Ensemble suspect score for a duplicate box (0-1, high = suspect)"),
    ScoreSpec("ensemble_any", "ensemble", "any", True, tag="suspect:ensemble_any",
              description="Ensemble suspect score for any error: judges weighted by their reliability on any error (0-1, high = suspect)"),
]

#: Every issue type a ground-truth label can have, and then missing labels. Every list of issue
#: types (panel filters and counts, saved views, injection, evaluation, ensemble) reads these.
GT_ISSUES: tuple[str, ...] = ("badloc", "swap", "spurious", "duplicate")
ISSUE_TYPES: tuple[str, ...] = GT_ISSUES + ("overlooked",)
#: The ground-truth issues a label has at most one of (a box on nothing is not also badly
#: placed or of the wrong class); the ensemble reads their probabilities as one distribution.
#: Duplicates are a relation between two boxes and come with the others: a copy under a
#: confusable class is a duplicate whose class is also wrong; read together with swap, injected
#: cross-class copies fell from AP 0.43 / 0.68 to 0.22 / 0.28 in ensemble_duplicate (coco128,
#: ``bench/error_rates.py --mix real``, 2 seeds), so duplicates keep their own.
EXCLUSIVE_ISSUES: tuple[str, ...] = ("badloc", "swap", "spurious")
#: Of the exclusive issues, the one that says there is no object at all: read first, the others
#: (errors of an object's label) share what it leaves. A box on nothing also looks like a wrong
#: class, so read flat beside swap its probability fell wherever the swap model was surer.
NO_OBJECT_ISSUE = "spurious"

SUSPECT_TAGS = sorted({s.tag for s in SCORES if s.tag})
REVIEWED_OK_TAG = "reviewed:ok"
REVIEWED_FIXED_TAG = "reviewed:fixed"  # put on labels a reviewer changed (relabel/box/adopt)
#: Labels a reviewer decided on: out of the review queue, and kept as reviewed by the ensemble.
REVIEWED_TAGS = (REVIEWED_OK_TAG, REVIEWED_FIXED_TAG)


def get_spec(attr: str) -> ScoreSpec:
    for s in SCORES:
        if s.attr == attr:
            return s
    raise KeyError(f"unknown score attribute '{attr}'; known: {[s.attr for s in SCORES]}")
