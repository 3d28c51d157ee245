"""Saved views for review: one per suspect tag present, overlooked candidates, and reviewed labels.

They are ordinary FiftyOne saved views (``dataset.save_view``), so they appear in the App's
saved-views menu and load with ``dataset.load_saved_view(name)``. Names carry the field and the
issue (``ground_truth suspect badloc``); each view shows only the field under review and only
the labels in question; empty views are not saved.
"""
from __future__ import annotations

from fiftyone import ViewField as F

from grader.fields import SUSPECT_PREFIX
from grader.scores import SCORES

from .fixes import REVIEWED_TAGS, candidates_field, root_dataset


def view_name(gt_field: str, what: str) -> str:
    """A review view's name: the field, then what it shows (``ground_truth suspect swap``)."""
    return f"{gt_field} {what}"


def _not_reviewed():
    return ~F("tags").contains(list(REVIEWED_TAGS))


def review_views(collection, gt_field: str = "ground_truth") -> dict:
    """The non-empty review views (name -> view) for ``collection``'s field and tags."""
    dataset = root_dataset(collection)
    views = {}
    if dataset.get_field(gt_field) is not None:
        present = dataset.count_label_tags(label_fields=[gt_field])
        tags = {s.tag for s in SCORES if s.tag and not s.on_candidates} | {
            t for t in present if t.startswith(SUSPECT_PREFIX)}
        for tag in sorted(t for t in tags if present.get(t)):
            views[view_name(gt_field, "suspect " + tag[len(SUSPECT_PREFIX):])] = (
                dataset.filter_labels(gt_field, F("tags").contains(tag) & _not_reviewed()))
        views[view_name(gt_field, "reviewed")] = dataset.filter_labels(
            gt_field, F("tags").contains(list(REVIEWED_TAGS)))
    cfield = candidates_field(gt_field)
    if dataset.get_field(cfield) is not None:
        views[view_name(gt_field, "overlooked candidates")] = dataset.filter_labels(
            cfield, _not_reviewed())
    out = {}
    for name, view in views.items():
        field = cfield if name.endswith("overlooked candidates") else gt_field
        if view.count(f"{field}.detections"):
            out[name] = view.select_fields(field)
    return out


def save_review_views(collection, gt_field: str = "ground_truth", overwrite: bool = True) -> list[str]:
    """Save the non-empty review views on the dataset (replacing same-named ones); returns
    their names."""
    dataset = root_dataset(collection)
    names = []
    for name, view in review_views(dataset, gt_field).items():
        if dataset.has_saved_view(name) and not overwrite:
            continue
        dataset.save_view(name, view, description=f"label-grader review view ({gt_field})",
                          overwrite=True)
        names.append(name)
    return names
