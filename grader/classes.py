"""Class lists: where a field's classes come from, and how they are stored."""
from __future__ import annotations

from typing import Sequence


def known_class_share(collection, field: str,
                      known: Sequence[str]) -> tuple[float, dict[str, int]]:
    """(share of ``field``'s labels whose class is in ``known``, label count per class): one
    aggregation. Whether a model fitted on other classes applies here (the shipped box grader,
    the shipped ensemble, the detector's class names for overlooked candidates). Labels with no
    class count in neither; no labels gives share 0."""
    counts = {c: n for c, n in collection.count_values(f"{field}.detections.label").items()
              if c is not None}
    total = sum(counts.values())
    known = set(known)
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
