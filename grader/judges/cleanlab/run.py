"""One cleanlab run: two passes, ``chunk_size`` samples at a time (statistics, then scores and
writes), under a lease on (dataset, judge, ``gt_field``)."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from typing import Any, Callable, Iterable, Sequence

from fiftyone import ViewField as F

from ...images import ensure_metadata
from ...report import RunReport
from ...runs import DEFAULT_TTL_S, run_lease
from .inputs import CleanlabInputs, CleanlabParams, build_inputs, resolve_run_inputs
from .scoring import CleanlabStats, _StatsAccumulator, compute_scores, thresholds_for
from .writing import (CONFIG_FIELD, RUN_KEY, _declare_outputs, _write_results,
                      _write_sample_values, check_output_fields)

DEFAULT_CHUNK = 5000               # samples read, scored and written together
MAX_CACHED_SAMPLES = 20000         # inputs kept in memory between the two passes up to this


def iter_chunks(collection, params: CleanlabParams, classes: list[str], probs_attr: str | None,
                report: RunReport, sample_ids: Sequence[str] | None = None,
                chunk_size: int = DEFAULT_CHUNK) -> Iterable[tuple[Any, CleanlabInputs]]:
    """Yield ``(chunk view, inputs)`` over ``sample_ids`` (default: all of ``collection``)."""
    ids = list(sample_ids) if sample_ids is not None else collection.values("id")
    for s in range(0, len(ids), chunk_size):
        view = collection.select(ids[s:s + chunk_size])
        yield view, build_inputs(view, params, report, classes, probs_attr)


def config_hash(params: CleanlabParams, ov_field: str, stats: CleanlabStats) -> str:
    """Identity of a run configuration: parameters + dataset-wide statistics."""
    blob = json.dumps({"params": asdict(params), "ov_field": ov_field, "stats": stats.to_dict()},
                      sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def prepare(collection, params: CleanlabParams, *, chunk_size: int = DEFAULT_CHUNK,
            sample_ids: Sequence[str] | None = None, keep_inputs: bool = False,
            report: RunReport | None = None) -> tuple[CleanlabStats, list | None]:
    """First pass over the collection: the dataset-wide statistics (and, if asked and small
    enough, the chunk inputs so the second pass need not read them again; their skips and
    sources are then counted in ``report``)."""
    classes, probs_attr = resolve_run_inputs(collection, params)
    ids = list(sample_ids) if sample_ids is not None else collection.values("id")
    keep = keep_inputs and len(ids) <= MAX_CACHED_SAMPLES
    acc = _StatsAccumulator(len(classes))
    cached = [] if keep else None
    scratch = report if (keep and report is not None) else RunReport(judge="cleanlab-stats")
    for view, inputs in iter_chunks(collection, params, classes, probs_attr, scratch, ids,
                                    chunk_size):
        acc.add(inputs.labels, inputs.predictions, params.alpha)
        if keep:
            cached.append((view, inputs))
    if acc.n_images == 0:
        scratch = scratch if scratch.samples_seen else RunReport(judge="cleanlab-stats")
        raise ValueError(
            f"Nothing to score: none of the {scratch.samples_seen} samples in scope has both "
            f"image size and '{params.pred_field}' (skipped: {dict(scratch.skipped)}); "
            "nothing was written")
    return acc.finish(classes, probs_attr), cached


def score_samples(collection, params: CleanlabParams, stats: CleanlabStats, ov_field: str,
                  report: RunReport, *, sample_ids: Sequence[str] | None = None,
                  chunk_size: int = DEFAULT_CHUNK, config: str | None = None,
                  skip_done: bool = False, cached: list | None = None,
                  progress: Callable[[int, int], None] | None = None) -> int:
    """Second pass: score and write chunk by chunk with the shared ``stats``; returns the
    number of samples processed.

    Each chunk's writes end with ``cleanlab_config = config`` on its samples, so with
    ``skip_done`` a resumed (or re-queued) shard only scores samples not yet written by this
    configuration. Memory is bounded by ``chunk_size``.
    """
    config = config or config_hash(params, ov_field, stats)
    if skip_done:
        scope = collection.select(sample_ids) if sample_ids is not None else collection
        sample_ids = scope.match(F(CONFIG_FIELD) != config).values("id")
    _declare_outputs(collection, ov_field)
    thresholds = thresholds_for(stats, params)
    chunks = cached if cached is not None else iter_chunks(
        collection, params, stats.classes, stats.probs_attr, report, sample_ids, chunk_size)
    total = len(sample_ids) if sample_ids is not None else None
    done = 0
    for view, inputs in chunks:
        scores = compute_scores(inputs, params, stats) if inputs.sample_ids else None
        _write_results(view, params, ov_field, inputs, scores, thresholds, report)
        chunk_ids = inputs.gt_table.sample_ids
        _write_sample_values(view, {sid: {CONFIG_FIELD: config} for sid in chunk_ids})
        done += len(chunk_ids)
        if progress:
            progress(done, total or done)
    return done


def run_cleanlab(collection, gt_field: str = "ground_truth", pred_field: str = "predictions",
                 *, progress: Callable[[int, int], None] | None = None,
                 overwrite: bool = False, wait: bool = False,
                 lease_ttl_s: float = DEFAULT_TTL_S, chunk_size: int = DEFAULT_CHUNK,
                 **kwargs: Any) -> RunReport:
    """Score ``gt_field`` against ``pred_field`` with cleanlab ObjectLab and write the results.

    Writes (all LOW = suspect, see :class:`CleanlabParams` for parameters):

    - on each ground-truth detection: ``cleanlab_badloc``, ``cleanlab_swap``,
      ``cleanlab_support`` (max IoU with any prediction above ``low_probability_threshold``,
      any class: 0 = nothing the model sees is there, a possibly spurious box),
      ``cleanlab_swap_label`` (the class the swap score points to), ``cleanlab_swap_pred_id``,
      ``cleanlab_badloc_pred_id`` (the prediction a fix could take the box from);
    - on each sample: ``cleanlab_label_quality``, ``cleanlab_issue`` (any box flagged) and
      ``cleanlab_config`` (which run configuration scored it);
    - ``<gt_field>_overlooked``: predicted boxes cleanlab considers possibly overlooked, with
      ``cleanlab_overlooked`` and ``source_pred_id``, ready to review and adopt;
    - tags ``suspect:badloc`` / ``suspect:swap`` / ``suspect:overlooked`` on labels and samples
      past the thresholds, and ``suspect:cleanlab_issue`` on flagged samples.

    Only these fields and tags are written; labels and boxes are never changed. Samples that
    cannot be scored get ``None`` so no stale score survives a re-run. An existing
    ``overlooked_field`` that this judge did not write is refused unless ``overwrite=True``.

    Two passes, ``chunk_size`` samples at a time: the dataset-wide statistics (minimum
    similarity, per-class AP), then scores and writes; memory stays bounded by the chunk.
    The run holds a lease on (dataset, judge, ``gt_field``): a concurrent run on the same field
    raises :class:`grader.runs.LeaseHeld` (or waits, ``wait=True``); the run record reads
    ``state="running"`` until it is ``"complete"`` or ``"failed"``.
    """
    params = CleanlabParams(gt_field=gt_field, pred_field=pred_field, **kwargs)
    params.validate()
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    progress = progress or (lambda done, total: None)
    report = RunReport(judge="cleanlab")
    ov_field = check_output_fields(collection, params, overwrite)

    with run_lease(collection, RUN_KEY, {**asdict(params), "overlooked_field": ov_field},
                   resource=gt_field, ttl_s=lease_ttl_s, wait=wait) as lease:
        progress(0, 4)
        ensure_metadata(collection)
        stats, cached = prepare(collection, params, chunk_size=chunk_size, keep_inputs=True,
                                report=report)
        progress(1, 4)
        score_samples(collection, params, stats, ov_field, report, chunk_size=chunk_size,
                      cached=cached)
        progress(3, 4)
        _finish_report(report, stats)
        lease.report = report.to_dict()
    progress(4, 4)
    return report


def _finish_report(report: RunReport, stats: CleanlabStats) -> None:
    report.info["class_list"] = list(stats.classes)
    report.info["min_possible_similarity"] = stats.min_possible_similarity
