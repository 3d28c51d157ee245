"""Saved views for review: one per suspect tag, overlooked candidates, and reviewed labels.

They are ordinary FiftyOne saved views (``dataset.save_view``), so they appear in the App's
saved-views menu and load with ``dataset.load_saved_view(name)``.
"""
from __future__ import annotations

from fiftyone import ViewField as F

from grader.fields import SUSPECT_PREFIX
from grader.scores import SCORES

from .fixes import REVIEWED_TAGS, candidates_field, root_dataset

VIEW_PREFIX = ""  # names read as in the issue: "suspect badloc", "reviewed", ...


def _not_reviewed():
    return ~F("tags").contains(list(REVIEWED_TAGS))


def review_views(collection, gt_field: str = "ground_truth") -> dict:
    """The review views (name -> view) that make sense for ``collection``'s fields and tags."""
    dataset = root_dataset(collection)
    views = {}
    tags = {s.tag for s in SCORES if s.tag and not s.on_candidates}
    if dataset.get_field(gt_field) is not None:
        present = dataset.count_label_tags(label_fields=[gt_field])
        tags |= {t for t in present if t.startswith(SUSPECT_PREFIX)}
        for tag in sorted(tags):
            name = "suspect " + tag[len(SUSPECT_PREFIX):]
            views[name] = dataset.filter_labels(
                gt_field, F("tags").contains(tag) & _not_reviewed())
        views["reviewed"] = dataset.filter_labels(gt_field, F("tags").contains(list(REVIEWED_TAGS)))
    cfield = candidates_field(gt_field)
    if dataset.get_field(cfield) is not None:
        views["overlooked candidates"] = dataset.filter_labels(cfield, _not_reviewed())
    return views


def save_review_views(collection, gt_field: str = "ground_truth", overwrite: bool = True) -> list[str]:
    """Save the review views on the dataset (replacing same-named ones); returns their names."""
    dataset = root_dataset(collection)
    names = []
    for name, view in review_views(dataset, gt_field).items():
        if dataset.has_saved_view(name) and not overwrite:
            continue
        dataset.save_view(name, view, description=f"label-grader review view ({gt_field})",
                          overwrite=True)
        names.append(name)
    return names
