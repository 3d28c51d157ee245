"""Class lists: where a field's classes come from, and how they are stored."""
from __future__ import annotations

from typing import Sequence


#: Other spellings of COCO class names (PASCAL VOC's, Darknet's ``coco.names``) -> COCO's. The
#: shipped models name their classes COCO's way; a dataset that spells one of these VOC's way
#: means the same class.
COCO_SPELLINGS = {"tvmonitor": "tv", "motorbike": "motorcycle", "aeroplane": "airplane",
                  "sofa": "couch", "diningtable": "dining table", "pottedplant": "potted plant"}


def with_spellings(classes: Sequence[str]) -> set[str]:
    """``classes`` and the other spellings of those that are COCO names."""
    known = set(classes)
    return known | {alt for alt, coco in COCO_SPELLINGS.items() if coco in known}


def dataset_spellings(collection, field: str) -> dict[str, str]:
    """``{COCO name: the spelling field's labels use}`` for the classes ``field`` spells only
    another way (VOC's ``aeroplane``, never ``airplane``); empty for COCO-spelled labels. One
    aggregation. Models' class lists renamed with it (:func:`respell`) speak the dataset's
    vocabulary: their predictions, class probabilities and class lookups match its labels."""
    labels = {c for c in collection.distinct(f"{field}.detections.label") if c is not None}
    return {coco: alt for alt, coco in COCO_SPELLINGS.items()
            if alt in labels and coco not in labels}


def respell(classes: Sequence[str], spellings: dict[str, str]) -> list[str]:
    """``classes`` with each name in ``spellings`` replaced by its spelling there."""
    return [spellings.get(c, c) for c in classes]


def known_class_share(collection, field: str,
                      known: Sequence[str]) -> tuple[float, dict[str, int]]:
    """(share of ``field``'s labels whose class is in ``known`` or another spelling of one,
    label count per class): one aggregation. Whether a model fitted on other classes applies
    here (the shipped box grader, the shipped ensemble, the detector's class names for
    overlooked candidates). Labels with no class count in neither; no labels gives share 0."""
    counts = {c: n for c, n in collection.count_values(f"{field}.detections.label").items()
              if c is not None}
    total = sum(counts.values())
    known = with_spellings(known)
    return (sum(n for c, n in counts.items() if c in known) / total if total else 0.0), counts


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
