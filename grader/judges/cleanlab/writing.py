"""What the cleanlab judge writes: output-field checks, the per-label attributes, sample fields,
overlooked candidates and tags of a scored chunk (bulk writes), and reading its suspects back."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Mapping

import fiftyone as fo
import numpy as np
from bson import ObjectId
from pymongo import UpdateOne

from ... import fields as lgf
from ...report import RunReport
from .inputs import CleanlabInputs, CleanlabParams
from .scoring import CleanlabScores, _nan_to_none, _threshold_for

RUN_KEY = "label_grader_cleanlab"
TAG_BADLOC = "suspect:badloc"
TAG_SWAP = "suspect:swap"
TAG_OVERLOOKED = "suspect:overlooked"
TAG_ISSUE = "suspect:cleanlab_issue"
CONFIG_FIELD = "cleanlab_config"   # per sample: hash of the run configuration that scored it


def check_output_fields(collection, params: CleanlabParams, overwrite: bool = False) -> str:
    """Validate input and output fields before any write; return the overlooked field name.

    The overlooked field must not be an input, and an existing field there must be a
    ``Detections`` field this judge wrote (its detections carry ``cleanlab_overlooked``)
    unless ``overwrite=True``.
    """
    lgf.detections_path(collection, params.gt_field)
    lgf.detections_path(collection, params.pred_field)
    ov_field = params.overlooked_field or f"{params.gt_field}_overlooked"
    if ov_field in (params.gt_field, params.pred_field):
        raise ValueError(f"overlooked_field '{ov_field}' would overwrite an input field")
    schema = collection._dataset.get_field_schema(flat=True)
    doc_type = getattr(schema.get(ov_field), "document_type", None)
    if ov_field in schema and doc_type is not fo.Detections:
        raise ValueError(f"overlooked_field '{ov_field}' exists and is not a Detections field "
                         f"({schema[ov_field]}); choose another name")
    if ov_field in schema and not overwrite:
        ours = (doc_type is fo.Detections
                and f"{ov_field}.detections.cleanlab_overlooked" in schema)
        if not ours:
            raise ValueError(
                f"overlooked_field '{ov_field}' already exists and was not written by the "
                "cleanlab judge; choose another name or pass overwrite=True to replace it")
    return ov_field


def _write_results(collection, params: CleanlabParams, ov_field: str, inputs: CleanlabInputs,
                   scores: CleanlabScores | None, thresholds: Mapping[str, Any],
                   report: RunReport) -> None:
    """Write one chunk's scores, fields and tags (tags are replaced within ``collection`` only)."""
    gt_field = params.gt_field
    classes = inputs.classes
    gt_tab = inputs.gt_table
    # Every GT label in scope gets a value (None when unscored) so re-runs leave nothing stale.
    attrs = ("cleanlab_badloc", "cleanlab_swap", "cleanlab_support", "cleanlab_swap_label",
             "cleanlab_swap_pred_id", "cleanlab_badloc_pred_id")
    values: dict[str, dict[tuple[str, str], Any]] = {a: {} for a in attrs}
    for sid, ids in zip(gt_tab.sample_ids, gt_tab.ids):
        for lid in ids:
            for a in attrs:
                values[a][(sid, lid)] = None

    tagged: dict[str, list[str]] = {TAG_BADLOC: [], TAG_SWAP: []}
    sample_tags: dict[str, set[str]] = {TAG_BADLOC: set(), TAG_SWAP: set(),
                                        TAG_OVERLOOKED: set(), TAG_ISSUE: set()}
    quality: dict[str, float | None] = {sid: None for sid in gt_tab.sample_ids}
    issue: dict[str, bool | None] = {sid: None for sid in gt_tab.sample_ids}
    overlooked: dict[str, fo.Detections | None] = {sid: None for sid in gt_tab.sample_ids}

    for i, sid in enumerate(inputs.sample_ids if scores is not None else []):
        lab_cls = inputs.labels[i]["labels"]
        flagged = False
        for r, lid in enumerate(inputs.gt_ids[i]):
            cname = classes[lab_cls[r]]
            b, s = float(scores.badloc[i][r]), float(scores.swap[i][r])
            key = (sid, lid)
            values["cleanlab_badloc"][key] = _nan_to_none(b)
            values["cleanlab_swap"][key] = _nan_to_none(s)
            values["cleanlab_support"][key] = float(scores.support[i][r])
            sm, bm = scores.swap_match[i][r], scores.badloc_match[i][r]
            if sm >= 0:
                values["cleanlab_swap_label"][key] = classes[inputs.pred_classes[i][sm]]
                values["cleanlab_swap_pred_id"][key] = inputs.pred_ids[i][sm]
            if bm >= 0:
                values["cleanlab_badloc_pred_id"][key] = inputs.pred_ids[i][bm]
            # cleanlab's rule: NaN counts as 1.0 (clean) and "issue" means score <= threshold.
            if (b if b == b else 1.0) <= _threshold_for(thresholds, "badloc", cname):
                tagged[TAG_BADLOC].append(lid)
                sample_tags[TAG_BADLOC].add(sid)
                flagged = True
            if (s if s == s else 1.0) <= _threshold_for(thresholds, "swap", cname):
                tagged[TAG_SWAP].append(lid)
                sample_tags[TAG_SWAP].add(sid)
                flagged = True
            report.labels_scored += 1

        cands = []
        for j, sc in enumerate(scores.overlooked[i]):
            if not np.isfinite(sc):
                continue
            cname = classes[inputs.pred_classes[i][j]]
            is_flag = sc <= _threshold_for(thresholds, "overlooked", cname)
            cands.append(fo.Detection(
                label=cname,
                bounding_box=inputs.pred_boxes_rel[i][j],
                confidence=_pred_prob(inputs, i, j),
                cleanlab_overlooked=float(sc),
                source_pred_id=inputs.pred_ids[i][j],
                tags=[TAG_OVERLOOKED] if is_flag else [],
            ).to_mongo())
            if is_flag:
                sample_tags[TAG_OVERLOOKED].add(sid)
                flagged = True
        overlooked[sid] = {"_cls": "Detections", "detections": cands}
        quality[sid] = float(scores.label_quality[i])
        issue[sid] = flagged
        if flagged:
            sample_tags[TAG_ISSUE].add(sid)
        report.samples_scored += 1

    lgf.write_label_attrs(collection, gt_field, values)
    for tag, ids in tagged.items():
        report.tagged[tag] = report.tagged.get(tag, 0) + lgf.set_label_tag(
            collection, gt_field, tag, ids)
    _write_sample_values(collection, {sid: {"cleanlab_label_quality": quality[sid],
                                            "cleanlab_issue": issue[sid],
                                            ov_field: overlooked[sid]} for sid in quality})
    report.tagged[TAG_OVERLOOKED] = report.tagged.get(TAG_OVERLOOKED, 0) + sum(
        1 for d in overlooked.values() if d for x in d["detections"] if TAG_OVERLOOKED in x["tags"])
    for tag, sids in sample_tags.items():
        lgf.set_sample_tag(collection, tag, sids)
    report.info["samples_flagged"] = (report.info.get("samples_flagged", 0)
                                      + len(sample_tags[TAG_ISSUE]))
    report.info["thresholds"] = {
        k: (v if not isinstance(v, dict) else "per-class (cleanlab find_label_issues rule)")
        for k, v in thresholds.items()}
    report.fields = [f"{gt_field}.detections.{a}" for a in values] + [
        "cleanlab_label_quality", "cleanlab_issue", ov_field]


def _write_sample_values(collection, rows: Mapping[str, Mapping[str, Any]]) -> None:
    """``{sample_id: {field: value}}`` as one ``$set`` per sample in one bulk write (the
    fields are declared up front by :func:`_declare_outputs`; values are BSON-ready).
    FiftyOne's ``set_values`` once per field cost ~1 s per 10k samples and field."""
    if not rows:
        return
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    ops = [UpdateOne({"_id": ObjectId(sid)}, {"$set": {**vals, "last_modified_at": now}})
           for sid, vals in rows.items()]
    collection._dataset._bulk_write(ops, ids=list(rows))


def _pred_prob(inputs: CleanlabInputs, i: int, j: int) -> float:
    """Probability of flattened prediction entry ``j`` of image ``i`` (its class array's last column)."""
    c = inputs.pred_classes[i][j]
    offset = int(np.sum(inputs.pred_classes[i] < c))
    return float(inputs.predictions[i][c][j - offset, 4])


def suspects(collection, gt_field: str = "ground_truth", limit: int = 20) -> list[dict[str, Any]]:
    """The most suspect ground-truth boxes by cleanlab's lowest badloc/swap score, for summaries."""
    tab = lgf.read_detections(collection, gt_field, attrs=["cleanlab_badloc", "cleanlab_swap",
                                                             "cleanlab_swap_label"])
    rows = []
    for i, sid in enumerate(tab.sample_ids):
        for j, lid in enumerate(tab.ids[i]):
            b = tab.attrs["cleanlab_badloc"][i][j]
            s = tab.attrs["cleanlab_swap"][i][j]
            if b is None and s is None:
                continue
            issue, score = min((("badloc", b), ("swap", s)),
                               key=lambda t: 1.0 if t[1] is None else t[1])
            rows.append({"sample_id": sid, "filepath": tab.filepaths[i], "label_id": lid,
                         "label": tab.labels[i][j], "issue": issue, "score": score,
                         "suggested_label": tab.attrs["cleanlab_swap_label"][i][j]})
    rows.sort(key=lambda r: r["score"])
    return rows[:limit]


def _declare_outputs(collection, ov_field: str) -> None:
    """Declare the sample fields up front: a chunk whose values are all None could not infer
    them (FiftyOne's "Cannot infer an appropriate type")."""
    ds = collection._dataset
    schema = ds.get_field_schema()
    for name, ftype, kw in (("cleanlab_label_quality", fo.FloatField, {}),
                            ("cleanlab_issue", fo.BooleanField, {}),
                            (CONFIG_FIELD, fo.StringField, {}),
                            (ov_field, fo.EmbeddedDocumentField, {"embedded_doc_type": fo.Detections})):
        if name not in schema:
            ds.add_sample_field(name, ftype, **kw)
    lgf.declare_attrs(ds, f"{ov_field}.detections",
                      {"cleanlab_overlooked": fo.FloatField, "source_pred_id": fo.StringField})
