"""Class lists: where a field's classes come from, and how they are stored."""
from __future__ import annotations

from typing import Sequence


#: Other spellings of COCO class names (PASCAL VOC's, Darknet's ``coco.names``) -> COCO's. The
#: shipped models name their classes COCO's way; a dataset that spells one of these VOC's way
#: means the same class.
COCO_SPELLINGS = {"tvmonitor": "tv", "motorbike": "motorcycle", "aeroplane": "airplane",
                  "sofa": "couch", "diningtable": "dining table", "pottedplant": "potted plant"}


def canonical(name: str) -> str:
    """A class name as compared with a model's: case, ``_`` / ``-`` for spaces and VOC's
    spellings aside (``Traffic_Light`` is ``traffic light``, ``TV-Monitor`` is ``tv``)."""
    n = " ".join(str(name).lower().replace("_", " ").replace("-", " ").split())
    return COCO_SPELLINGS.get(n.replace(" ", ""), n)


def dataset_spellings(classes: Sequence[str], labels: Sequence[str]) -> dict[str, str]:
    """``{model class: the labels' spelling}`` for each of a model's ``classes`` that the
    ``labels`` (a field's distinct classes) spell only another way (``Person``, ``aeroplane``,
    ``traffic_light``); empty when they spell them the model's way. A model's class list
    renamed with it (:func:`respell`) speaks the dataset's vocabulary: its predictions, class
    probabilities and class lookups match the labels."""
    labels = {c for c in labels if c is not None}
    by_canon: dict[str, list[str]] = {}
    for lab in sorted(labels):
        by_canon.setdefault(canonical(lab), []).append(lab)
    return {c: by_canon[k][0] for c in classes
            if c not in labels and (k := canonical(c)) in by_canon}


def respell(classes: Sequence[str], spellings: dict[str, str]) -> list[str]:
    """``classes`` with each name in ``spellings`` replaced by its spelling there."""
    return [spellings.get(c, c) for c in classes]


def known_class_share(collection, field: str,
                      known: Sequence[str]) -> tuple[float, dict[str, int]]:
    """(share of ``field``'s labels whose class is in ``known`` (as :func:`canonical` compares),
    label count per class): one aggregation. Whether a model fitted on other classes applies
    here (the shipped box grader, the shipped ensemble, the detector's class names for
    overlooked candidates). Labels with no class count in neither; no labels gives share 0."""
    counts = {c: n for c, n in collection.count_values(f"{field}.detections.label").items()
              if c is not None}
    total = sum(counts.values())
    known = {canonical(c) for c in known}
    return (sum(n for c, n in counts.items() if canonical(c) in known) / total
            if total else 0.0), counts


def resolve_classes(collection, fields: Sequence[str], classes: Sequence[str] | None = None,
                    store: bool = True) -> list[str]:
    """Return the class list for ``fields``.

    Order of precedence: explicit ``classes``; ``dataset.classes[field]`` of the first field
    that has one; ``dataset.default_classes``; else the sorted distinct labels of all
    ``fields`` (stored as ``dataset.classes[fields[0]]`` when ``store`` so later runs agree
    on class indices).
    """
    if classes:
        return list(classes)
    dataset = collection._dataset
    for f in fields:
        if dataset.classes.get(f):
            return list(dataset.classes[f])
    if dataset.default_classes:
        return list(dataset.default_classes)
    found: set[str] = set()
    for f in fields:
        found.update(x for x in collection.distinct(f"{f}.detections.label") if x is not None)
    inferred = sorted(found)
    if store and inferred:
        dataset.classes[fields[0]] = inferred
        dataset.save()
    return inferred
