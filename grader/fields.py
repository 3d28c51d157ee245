"""Bulk reads and writes of per-detection attributes, sample fields, tags and run records.

Every write here goes through FiftyOne's bulk paths (its bulk writer, ``set_values``,
``tag_labels``/``untag_labels``), never a per-sample ``save()`` loop. Judges only ever write
their own attributes (``<judge>_<quantity>``) and their own ``suspect:*`` tags; the label,
box and any other attribute of a user's detection are never modified here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping, Sequence

import fiftyone as fo
import numpy as np
from bson import ObjectId
from pymongo import UpdateOne

SUSPECT_PREFIX = "suspect:"


def detections_path(collection, field_name: str) -> str:
    """Return the list path (``<field>.detections``) of a ``Detections`` field, or raise."""
    schema = collection.get_field_schema(flat=True)
    if field_name not in schema:
        raise ValueError(
            f"Field '{field_name}' does not exist on this collection; "
            f"available label fields: {sorted(collection.get_field_schema(embedded_doc_type=fo.Detections))}"
        )
    doc_type = getattr(schema[field_name], "document_type", None)
    if doc_type is not fo.Detections:
        raise ValueError(f"Field '{field_name}' must be a Detections field, found {doc_type}")
    return f"{field_name}.detections"


@dataclass
class DetectionTable:
    """Column-wise view of one ``Detections`` field over a collection, read in one query.

    ``ids[i]``, ``labels[i]``, ``boxes[i]``... hold the detections of sample ``i``;
    a sample whose field is ``None`` has ``present[i] == False`` and empty lists.
    """

    field: str
    sample_ids: list[str]
    filepaths: list[str]
    widths: list[int | None]
    heights: list[int | None]
    present: list[bool]
    ids: list[list[str]]
    labels: list[list[str]]
    boxes: list[list[list[float]]]
    attrs: dict[str, list[list[Any]]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.sample_ids)

    @property
    def num_labels(self) -> int:
        return sum(len(x) for x in self.ids)


def read_detections(collection, field_name: str, attrs: Iterable[str] = ()) -> DetectionTable:
    """Read ids, labels, boxes (and the given attributes) of ``field_name`` in one ``values()`` call."""
    path = detections_path(collection, field_name)
    attrs = list(attrs)
    # `<field>._cls` tells None (field missing on the sample) from an empty Detections
    # without pulling the whole label document.
    keys = ["id", "filepath", "metadata.width", "metadata.height", f"{field_name}._cls",
            f"{path}.id", f"{path}.label", f"{path}.bounding_box"] + [f"{path}.{a}" for a in attrs]
    vals = collection.values(keys)
    n = len(vals[0])
    fix = lambda col: [x if x is not None else [] for x in col]
    table = DetectionTable(
        field=field_name,
        sample_ids=vals[0],
        filepaths=vals[1],
        widths=vals[2],
        heights=vals[3],
        present=[v is not None for v in vals[4]],
        ids=fix(vals[5]),
        labels=fix(vals[6]),
        boxes=fix(vals[7]),
    )
    for a, col in zip(attrs, vals[8:]):
        table.attrs[a] = [
            (x if x is not None else [None] * len(table.ids[i])) for i, x in enumerate(col)
        ]
    assert len(table.ids) == n
    return table


def _plain(v: Any) -> Any:
    """numpy scalars -> Python scalars (BSON cannot encode numpy types)."""
    return v.item() if isinstance(v, np.generic) else v


_FIELD_TYPES = ((bool, fo.BooleanField), (int, fo.IntField), (float, fo.FloatField),
                (str, fo.StringField), (list, fo.ListField), (dict, fo.DictField))


def declare_attrs(dataset, path: str, attr_types: Mapping[str, type]) -> None:
    """Declare ``<path>.<attr>`` fields (e.g. ``gt.detections.score: FloatField``) if missing,
    so the App and the panel can filter and sort on attributes written in bulk."""
    schema = dataset.get_field_schema(flat=True)
    missing = {f"{path}.{attr}": ftype() for attr, ftype in attr_types.items()
               if f"{path}.{attr}" not in schema}
    if missing:
        # One schema merge for all of them: add_sample_field reloads the dataset per field
        # (grade() on coco128-val, bench/grade_speed.py: 352 -> 240 DB commands, 36.8 -> 36.0 s).
        dataset.add_dynamic_sample_fields(fields=missing)


def _infer_field_type(values: Mapping) -> type | None:
    sample = next((_plain(v) for v in values.values() if v is not None), None)
    for py, ftype in _FIELD_TYPES:
        if sample is not None and isinstance(sample, py):
            return ftype
    return None


def write_label_attrs(collection, field_name: str,
                      values: Mapping[str, Mapping[tuple[str, str], Any]]) -> int:
    """Set several ``<field>.detections.<attr>`` at once from ``{attr: {(sample_id, label_id): value}}``.

    One update per sample (all its labels and attributes, matched by label id through array
    filters, so a concurrent reorder or delete cannot misplace a value), sent through
    FiftyOne's bulk writer. FiftyOne's ``set_label_values`` issues one update per label and
    per attribute, ~4x slower at 100k labels (``bench/bulk_writes.py``). New attributes are
    declared on the dataset schema. Returns the number of labels written.
    """
    path = detections_path(collection, field_name)
    per_sample: dict[str, dict[str, dict[str, Any]]] = {}
    for attr, m in values.items():
        for (sid, lid), v in m.items():
            per_sample.setdefault(sid, {}).setdefault(lid, {})[attr] = _plain(v)
    if not per_sample:
        return 0
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    ops = []
    n = 0
    for sid, labels in per_sample.items():
        sets: dict[str, Any] = {"last_modified_at": now}
        filters = []
        for k, (lid, attrs) in enumerate(labels.items()):
            filters.append({f"l{k}._id": ObjectId(lid)})
            for a, v in attrs.items():
                sets[f"{path}.$[l{k}].{a}"] = v
        n += len(labels)
        ops.append(UpdateOne({"_id": ObjectId(sid)}, {"$set": sets}, array_filters=filters))
    dataset = collection._dataset
    dataset._bulk_write(ops, ids=list(per_sample))
    types = {a: _infer_field_type(m) for a, m in values.items()}
    declare_attrs(dataset, path, {a: t for a, t in types.items() if t is not None})
    return n


def write_label_attr(collection, field_name: str, attr: str,
                     values: Mapping[tuple[str, str], Any]) -> int:
    """Set one ``<field>.detections.<attr>`` for ``(sample_id, label_id) -> value`` pairs."""
    return write_label_attrs(collection, field_name, {attr: values})


def write_sample_field(collection, field_name: str, values: Mapping[str, Any]) -> int:
    """Set a sample-level field for ``sample_id -> value`` pairs in one bulk write."""
    if not values:
        return 0
    collection.set_values(field_name, dict(values), key_field="id")
    return len(values)


def set_label_tag(collection, field_name: str, tag: str, label_ids: Iterable[str],
                  keep: Iterable[str] = ()) -> int:
    """Make ``tag`` sit on exactly ``label_ids`` among ``field_name``'s labels in ``collection``.

    The tag is first removed from every label of the field in the collection (so a re-run
    over the same view replaces its previous verdicts), except the labels in ``keep`` (a judge
    could not judge them this time, so their earlier tag stands), then added to ``label_ids``.
    """
    label_ids = list(label_ids)
    keep = list(keep)
    scope = collection.exclude_labels(ids=keep, fields=field_name) if keep else collection
    scope.untag_labels(tag, label_fields=[field_name])
    if label_ids:
        collection.select_labels(ids=label_ids, fields=field_name).tag_labels(
            tag, label_fields=[field_name]
        )
    return len(label_ids)


def set_sample_tag(collection, tag: str, sample_ids: Iterable[str], keep: Iterable[str] = ()) -> int:
    """Make ``tag`` sit on exactly ``sample_ids`` among the samples of ``collection`` (samples
    in ``keep`` keep whatever they had)."""
    sample_ids = list(sample_ids)
    keep = list(keep)
    (collection.exclude(keep) if keep else collection).untag_samples(tag)
    if sample_ids:
        collection.select(sample_ids).tag_samples(tag)
    return len(sample_ids)


_SECRET_WORDS = ("api_key", "apikey", "token", "secret", "password", "authorization")


def is_secret_param(name: str) -> bool:
    """Whether a parameter name looks like it carries a credential (never stored or logged)."""
    n = name.lower()
    return any(w in n for w in _SECRET_WORDS) and not n.endswith(("_env", "_secret_name"))


def record_run(collection, run_key: str, params: Mapping[str, Any],
               report: Mapping[str, Any] | None = None) -> None:
    """Record a judge run's parameters (never secrets) on the dataset as a FiftyOne run.

    Visible with ``dataset.list_runs()`` / ``dataset.get_run_info(run_key)``; a re-run
    under the same key replaces the record.
    """
    from .redact import redact_obj

    clean = redact_obj({k: v for k, v in params.items() if not is_secret_param(k)})
    config = collection.init_run(**clean, report=redact_obj(dict(report or {})))
    collection.register_run(run_key, config, overwrite=True, cleanup=False)


def last_run(collection, run_key: str, gt_field: str | None = None) -> tuple[dict, dict] | None:
    """(params, report info) of the run :func:`record_run` kept under ``run_key`` on the
    collection's dataset; None where there is none (or, with ``gt_field``, it ran on another
    field)."""
    dataset = collection._root_dataset
    if run_key not in dataset.list_runs():
        return None
    cfg = dataset.get_run_info(run_key).config.serialize()
    params = {k: v for k, v in cfg.items() if k not in ("report", "type", "method", "cls")}
    if gt_field is not None and params.get("gt_field") != gt_field:
        return None
    return params, (cfg.get("report") or {}).get("info") or {}


OWNER_INFO_KEY = "label_grader_owner"  # in a field's ``info``: which of our writers created it


def _field_info(collection, field_name: str, key: str) -> Any:
    """``key`` of the field's ``info`` (None for a missing field or key)."""
    dataset = collection._root_dataset
    if field_name not in dataset.get_field_schema():
        return None
    return (dataset.get_field(field_name).info or {}).get(key)


def _set_field_info(collection, field_name: str, key: str, value: Any) -> None:
    """Set ``key`` in an existing field's ``info`` (saved only when it changes)."""
    fld = collection._root_dataset.get_field(field_name)
    info = dict(fld.info or {})
    if info.get(key) != value:
        info[key] = value
        fld.info = info
        fld.save()


#: in a predictions field's ``info``: the detector and settings that wrote it (run_detector)
MODEL_INFO_KEY = "label_grader_model"


def record_field_model(collection, field_name: str, model: dict[str, Any]) -> None:
    """Record in ``field_name``'s ``info`` which model (and settings) wrote its predictions."""
    _set_field_info(collection, field_name, MODEL_INFO_KEY, dict(model))


def field_model(collection, field_name: str) -> dict[str, Any] | None:
    """What :func:`record_field_model` recorded on ``field_name`` (None if unknown/absent)."""
    return _field_info(collection, field_name, MODEL_INFO_KEY)


def field_owner(collection, field_name: str) -> str | None:
    """The label-grader writer recorded as the creator of ``field_name`` (None if unknown/absent)."""
    return _field_info(collection, field_name, OWNER_INFO_KEY)


def _type_matches(fld, kind) -> bool:
    if isinstance(kind, type) and issubclass(kind, fo.Label):
        return getattr(fld, "document_type", None) is kind
    return isinstance(fld, kind)


def _kind_name(fld) -> str:
    doc = getattr(fld, "document_type", None)
    return doc.__name__ if doc is not None else type(fld).__name__


def guard_output_field(collection, field: str, *, overwrite: bool = False,
                       inputs: Sequence[str] = (), kind=fo.Detections,
                       owner: str | None = None) -> None:
    """Refuse (``ValueError``) to write ``field`` before anything is written, when:

    - ``field`` is one of ``inputs`` (a judge never overwrites the field it judges);
    - ``field`` exists with another type than ``kind`` (a ``fo.Label`` subclass or a field class);
    - ``field`` holds values, was not created by the same ``owner`` (see
      :func:`claim_output_field`) and ``overwrite`` is False.

    A field that does not exist, exists but is empty, or was created by ``owner`` passes.
    ``overwrite=True`` never overrides the first two rules.
    """
    if not isinstance(field, str) or not field.strip():
        raise ValueError(f"output field must be a non-empty name, got {field!r}")
    if field in set(inputs):
        raise ValueError(f"output field '{field}' is also an input of this run; "
                         "choose another output field name")
    dataset = collection._root_dataset
    schema = dataset.get_field_schema()
    if field not in schema:
        return
    fld = schema[field]
    if not _type_matches(fld, kind):
        want = kind.__name__ if isinstance(kind, type) else str(kind)
        raise ValueError(f"field '{field}' exists with type {_kind_name(fld)}, "
                         f"but this run writes {want}; choose another output field name")
    if overwrite:
        return
    if owner is not None and (fld.info or {}).get(OWNER_INFO_KEY) == owner:
        return
    n = dataset.count(field)  # samples with a non-None value, over the whole dataset
    if n:
        who = (fld.info or {}).get(OWNER_INFO_KEY)
        made_by = f"created by '{who}'" if who else "not created by label-grader"
        raise ValueError(f"field '{field}' already holds values on {n} samples ({made_by}); "
                         "pass overwrite=True to replace it, or choose another output field")


def claim_output_field(collection, field: str, owner: str, kind=fo.Detections) -> None:
    """Create ``field`` (if missing) and record ``owner`` in its ``info`` so the same writer may
    rewrite it later without ``overwrite=True``. Call right after :func:`guard_output_field`,
    before the first write, so a run killed mid-write still leaves the field marked as ours."""
    dataset = collection._root_dataset
    if field not in dataset.get_field_schema():
        if isinstance(kind, type) and issubclass(kind, fo.Label):
            dataset.add_sample_field(field, fo.EmbeddedDocumentField, embedded_doc_type=kind,
                                     info={OWNER_INFO_KEY: owner})
        else:
            dataset.add_sample_field(field, kind, info={OWNER_INFO_KEY: owner})
        return
    _set_field_info(collection, field, OWNER_INFO_KEY, owner)


PROBS_CLASSES_INFO_KEY = "probs_classes"  # in a predictions field's ``info``


def set_probs_classes(collection, field: str, classes: Sequence[str]) -> None:
    """Record, in ``field``'s ``info``, the class of each entry of the per-class ``probs``
    vectors its detections carry, so readers map probabilities by class name (the detector's
    class order rarely equals the dataset's class list)."""
    _set_field_info(collection, field, PROBS_CLASSES_INFO_KEY, [str(c) for c in classes])


def probs_classes(collection, field: str) -> list[str] | None:
    """The class order of ``field``'s ``probs`` vectors (see :func:`set_probs_classes`), or
    None when it was not recorded (the vectors then follow the run's class list)."""
    got = _field_info(collection, field, PROBS_CLASSES_INFO_KEY)
    return list(got) if got else None
