"""The VLM judge: render labels, ask a vision-language model, parse, write fields and tags.

Per detection, each box is rendered on a context crop (``grader.render.iter_box_crops``) and
the prompt names its class; per sample, all boxes are drawn in distinct colours with a legend
(``grader.render.render_overlay``) and the model is asked whether anything is wrong or missing.

Writes (``label_field``'s detections): ``vlm_verdict`` ("yes" = label correct / "no" /
"unparsed"), ``vlm_reason``, ``vlm_confidence`` (P(label correct)); per sample:
``vlm_sample_verdict``, ``vlm_sample_reason``, ``vlm_sample_confidence``. Tag ``suspect:vlm``
goes on labels (and, per-sample, on samples) whose confidence is below ``threshold``.
Unparsed answers get no confidence and no tag, and are counted in the report.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

import fiftyone as fo

from ...boxes import BOX_DEGENERATE, rel_xywh_to_abs_xyxy, sanitize_rel_boxes
from ...fields import (claim_output_field, detections_path, guard_output_field, read_detections,
                      record_run, set_label_tag, set_sample_tag, write_label_attrs,
                      write_sample_field)
from ...images import ImageReadError, load_rgb
from ...redact import redact
from ...render import iter_box_crops, render_overlay
from ...report import RunReport
from .backends import VLMBackend, VLMRequest
from .cache import VLMCache, image_identity, make_key, round_box
from .parse import UNPARSED, ParsedAnswer, parse_answer
from .prompts import format_sample_labels, get_prompt

log = logging.getLogger(__name__)

TAG = "suspect:vlm"
DETECTION_ATTRS = ("vlm_verdict", "vlm_reason", "vlm_confidence")
SAMPLE_FIELDS = ("vlm_sample_verdict", "vlm_sample_reason", "vlm_sample_confidence")
MODES = ("detections", "samples", "both")
OWNER = "vlm_judge"  # recorded on the sample fields it creates (grader.fields.claim_output_field)
_SAMPLE_TYPES = (fo.StringField, fo.StringField, fo.FloatField)

Progress = Callable[[int, int], None]


def _open_cache(cache) -> VLMCache | None:
    if cache is False:
        return None
    if isinstance(cache, VLMCache):
        return cache
    return VLMCache(cache)  # None -> default dir


class _Counter:
    """Progress over cached + fresh items, forwarded to the caller's callback."""

    def __init__(self, total: int, progress: Progress | None):
        self.done, self.total, self.progress = 0, total, progress

    def step(self, n: int = 1) -> None:
        self.done += n
        if self.progress is not None:
            self.progress(self.done, self.total)


def _ask(backend: VLMBackend, requests, keys: dict, cache: VLMCache | None,
         answers: dict, report: RunReport, counter: _Counter, error_reason: str,
         failed: set | None = None) -> None:
    """Stream ``requests`` through the backend; cache and collect every answer as it arrives.
    Items the backend could not answer go to ``failed`` (their earlier verdicts are kept)."""
    stream = backend.stream(requests)
    try:
        for item_id, resp in stream:
            if resp.error is not None or resp.text is None:
                report.skip(error_reason)
                report.info.setdefault("last_backend_error", redact(resp.error))
                if failed is not None:
                    failed.add(item_id)
            else:
                answers[item_id] = (resp.text, resp.yes_prob)
                if cache is not None:
                    cache.put(keys[item_id], resp.text, resp.yes_prob, backend.model_id)
                report.info["model_calls"] = report.info.get("model_calls", 0) + 1
    finally:
        # Close both generators here, in this thread: left to the garbage collector, the
        # renderer's thread pool (grader.parallel.prefetch_map) was shut down -- joining its
        # threads -- from inside another thread's start-up, which deadlocked a CI run.
        for gen in (stream, requests):
            close = getattr(gen, "close", None)
            if close is not None:
                close()
        counter.step()


def judge_detections(collection, backend: VLMBackend, label_field: str, *, prompt: str = "stepwise",
                     threshold: float = 0.5, context: float = 1.35, out_size: int | None = 384,
                     cache: VLMCache | None = None, report: RunReport | None = None,
                     progress: Progress | None = None, render_workers: int = 1) -> RunReport:
    """Judge every box of ``label_field`` on its own crop; write per-detection fields and tags."""
    report = report or RunReport("vlm")
    tmpl = get_prompt(prompt, "detection")
    table = read_detections(collection, label_field)
    report.samples_seen = max(report.samples_seen, len(table))
    render_cfg = {"kind": "crop", "context": context, "out_size": out_size}
    keys: dict[str, str] = {}
    answers: dict[str, tuple[str, float | None]] = {}
    failed: set[str] = set()
    todo: list[str] = []
    for fp, ids, labels, boxes in zip(table.filepaths, table.ids, table.labels, table.boxes):
        if not ids:
            continue
        try:
            ident = image_identity(fp)
        except OSError:
            report.skip("unreadable_image", len(ids))
            continue
        _, status = sanitize_rel_boxes(boxes)
        for lid, lab, box, st in zip(ids, labels, boxes, status):
            if st == BOX_DEGENERATE:
                report.skip("degenerate_box")
                continue
            if lab is None:
                report.skip("missing_label")
                continue
            key = make_key(image=ident, model_id=backend.model_id, prompt=tmpl.format(label=lab),
                           subject={"box": round_box(box), "label": lab}, render=render_cfg)
            keys[lid] = key
            hit = cache.get(key) if cache is not None else None
            if hit is not None:
                answers[lid] = hit
            else:
                todo.append(lid)
    counter = _Counter(len(keys), progress)
    report.info["cache_hits"] = report.info.get("cache_hits", 0) + len(answers)
    counter.step(len(answers))

    if todo:
        view = collection.select_labels(ids=todo, fields=label_field)
        render_report = RunReport("render")

        def requests():
            for crop in iter_box_crops(view, label_field, context=context, out_size=out_size,
                                       report=render_report, num_workers=render_workers):
                if crop.label_id in keys:
                    yield crop.label_id, VLMRequest(crop.image, tmpl.format(label=crop.label))

        try:
            _ask(backend, requests(), keys, cache, answers, report, counter, "backend_error",
                 failed)
        finally:
            # Images found on disk but undecodable are only discovered while rendering.
            for k, v in render_report.skipped.items():
                report.skip(k, v)

    parsed = {lid: parse_answer(*answers[lid]) for lid in answers}
    _write_detections(collection, table, label_field, parsed, threshold, report, failed)
    return report


def _write_detections(collection, table, label_field: str, parsed: dict[str, ParsedAnswer],
                      threshold: float, report: RunReport, failed: set = frozenset()) -> None:
    verdicts, reasons, confs = {}, {}, {}
    flagged = []
    for sid, ids in zip(table.sample_ids, table.ids):
        for lid in ids:
            if lid in failed:  # the backend could not answer: keep the earlier verdict and tag
                continue
            p = parsed.get(lid)
            # Labels in scope that got no answer are reset so a re-run leaves no stale verdict.
            verdicts[(sid, lid)] = p.verdict if p else None
            reasons[(sid, lid)] = redact(p.reason) if p and p.reason is not None else None
            confs[(sid, lid)] = p.confidence if p else None
            if p is None:
                continue
            if p.verdict == UNPARSED:
                report.skip("unparsed_answer")
                continue
            report.labels_scored += 1
            if p.confidence is not None and p.confidence < threshold:
                flagged.append(lid)
    write_label_attrs(collection, label_field, {"vlm_verdict": verdicts, "vlm_reason": reasons,
                                                "vlm_confidence": confs})
    report.tagged[TAG] += set_label_tag(collection, label_field, TAG, flagged, keep=failed)
    report.samples_scored = max(report.samples_scored, sum(
        1 for ids in table.ids if any(parsed.get(l) and parsed[l].verdict != UNPARSED for l in ids)))
    report.fields.extend(f"{label_field}.detections.{a}" for a in DETECTION_ATTRS)


def judge_samples(collection, backend: VLMBackend, label_field: str, *, prompt: str = "stepwise",
                  threshold: float = 0.5, cache: VLMCache | None = None,
                  report: RunReport | None = None, progress: Progress | None = None,
                  thickness: int = 3) -> RunReport:
    """Judge each sample's whole image with all boxes drawn; write per-sample fields and tags."""
    report = report or RunReport("vlm")
    tmpl = get_prompt(prompt, "sample")
    table = read_detections(collection, label_field)
    report.samples_seen = max(report.samples_seen, len(table))
    render_cfg = {"kind": "overlay", "thickness": thickness}
    keys: dict[str, str] = {}
    answers: dict[str, tuple[str, float | None]] = {}
    todo: list[tuple[str, str, list, list[str], str]] = []
    for sid, fp, labels, boxes in zip(table.sample_ids, table.filepaths, table.labels, table.boxes):
        try:
            ident = image_identity(fp)
        except OSError:
            report.skip("sample_unreadable_image")
            continue
        _, status = sanitize_rel_boxes(boxes)
        keep = [(b, lab) for b, lab, st in zip(boxes, labels, status)
                if st != BOX_DEGENERATE and lab is not None]
        if len(keep) < len(boxes):
            report.skip("sample_boxes_not_drawn", len(boxes) - len(keep))
        kb, kl = [b for b, _ in keep], [lab for _, lab in keep]
        text = tmpl.format(labels=format_sample_labels(kl), num_boxes=len(kl))
        key = make_key(image=ident, model_id=backend.model_id, prompt=text,
                       subject={"boxes": [round_box(b) for b in kb], "labels": kl}, render=render_cfg)
        keys[sid] = key
        hit = cache.get(key) if cache is not None else None
        if hit is not None:
            answers[sid] = hit
        else:
            todo.append((sid, fp, kb, kl, text))
    counter = _Counter(len(keys), progress)
    report.info["cache_hits"] = report.info.get("cache_hits", 0) + len(answers)
    counter.step(len(answers))

    def requests():
        for sid, fp, kb, kl, text in todo:
            try:
                image = load_rgb(fp)
            except ImageReadError:
                report.skip("sample_unreadable_image")
                counter.step()
                continue
            h, w = image.shape[:2]
            clipped, _ = sanitize_rel_boxes(kb)
            overlay = render_overlay(image, rel_xywh_to_abs_xyxy(clipped, w, h), kl,
                                     thickness=thickness, legend=True)
            yield sid, VLMRequest(overlay, text)

    failed: set[str] = set()
    if todo:
        _ask(backend, requests(), keys, cache, answers, report, counter, "sample_backend_error",
             failed)

    verdicts, reasons, confs, flagged = {}, {}, {}, []
    n_unparsed = 0
    for sid in table.sample_ids:
        if sid in failed:  # no answer from the backend: keep the earlier verdict and tag
            continue
        p = parse_answer(*answers[sid]) if sid in answers else None
        verdicts[sid] = p.verdict if p else None
        reasons[sid] = redact(p.reason) if p and p.reason is not None else None
        confs[sid] = p.confidence if p else None
        if p is not None and p.verdict == UNPARSED:
            n_unparsed += 1
        elif p is not None and p.confidence is not None and p.confidence < threshold:
            flagged.append(sid)
    report.skip("sample_unparsed_answer", n_unparsed)
    dataset = collection._root_dataset
    for name, ftype, vals in zip(SAMPLE_FIELDS, _SAMPLE_TYPES, (verdicts, reasons, confs)):
        # Declared up front (FiftyOne cannot infer a type when every value is None), marked ours.
        claim_output_field(dataset, name, OWNER, kind=ftype)
        write_sample_field(collection, name, vals)
    report.tagged[f"sample:{TAG}"] += set_sample_tag(collection, TAG, flagged, keep=failed)
    report.info["samples_judged"] = sum(1 for v in verdicts.values() if v not in (None, UNPARSED))
    report.fields.extend(SAMPLE_FIELDS)
    return report


def run_vlm_judge(collection, backend: VLMBackend, *, label_field: str = "ground_truth",
                  mode: str = "detections", prompt: str = "stepwise",
                  sample_prompt: str | None = None, threshold: float = 0.5,
                  context: float = 1.35, out_size: int | None = 384,
                  cache: VLMCache | str | bool | None = None, progress: Progress | None = None,
                  run_key: str | None = "vlm_judge", overwrite: bool = False) -> RunReport:
    """Grade ``label_field`` over ``collection`` with a VLM backend and write fields and tags.

    ``mode``: ``"detections"`` (one crop per box), ``"samples"`` (one overlay per image) or
    ``"both"``. ``prompt``/``sample_prompt``: ``"yesno"``, ``"stepwise"`` or a custom template
    (``{label}``; per sample ``{labels}``, ``{num_boxes}``). ``cache``: a :class:`VLMCache`, a
    directory/file path, ``None`` for the default directory, or ``False`` to disable.
    ``threshold``: tag ``suspect:vlm`` where P(label correct) < threshold. The per-sample
    fields (``mode`` samples/both) are refused if they exist with another type, or hold values
    this judge did not write, unless ``overwrite=True``; every check runs before any write.
    Returns a :class:`RunReport`; the run's parameters (never credentials) are recorded on the
    dataset under ``run_key``.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError("threshold must be in [0, 1]")
    detections_path(collection, label_field)
    if mode in ("samples", "both"):
        for name, ftype in zip(SAMPLE_FIELDS, _SAMPLE_TYPES):
            guard_output_field(collection, name, overwrite=overwrite, inputs=[label_field],
                               kind=ftype, owner=OWNER)
    # Validate templates before any model call.
    get_prompt(prompt, "detection")
    sample_prompt = sample_prompt or prompt
    get_prompt(sample_prompt, "sample")
    store = _open_cache(cache)
    report = RunReport("vlm")
    report.info["model"] = backend.model_id
    try:
        if mode in ("detections", "both"):
            judge_detections(collection, backend, label_field, prompt=prompt, threshold=threshold,
                             context=context, out_size=out_size, cache=store, report=report,
                             progress=progress)
        if mode in ("samples", "both"):
            judge_samples(collection, backend, label_field, prompt=sample_prompt,
                          threshold=threshold, cache=store, report=report, progress=progress)
    finally:
        if store is not None and not isinstance(cache, VLMCache):
            store.close()
    stats = getattr(backend, "stats", None)
    if stats:
        report.info["backend_stats"] = dict(stats)
    if run_key:
        params: dict[str, Any] = {
            "label_field": label_field, "mode": mode, "prompt": prompt,
            "sample_prompt": sample_prompt, "threshold": threshold, "context": context,
            "out_size": out_size, "backend_config": backend.describe(),
        }
        record_run(collection, run_key, params, report.to_dict())
    log.info("%s", report.summary())
    return report
