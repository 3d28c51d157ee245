"""cleanlab ObjectLab judge: per-image label quality and per-box overlooked / swap / badloc scores.

Inputs are built in cleanlab's own format (checked against cleanlab 2.9's source):

- ``labels[i] = {"bboxes": (L, 4) absolute xyxy, "labels": (L,) int class}``
- ``predictions[i] = [K arrays of shape (M_k, 5)]``, row ``[x1, y1, x2, y2, p]``: one array
  per class (MMDetection style). A predicted box appears in its own class's array and in
  every class where its probability can change a score (see :func:`build_inputs`).

Scores come from cleanlab's public ``compute_*_box_scores`` functions; this module only adds
what cleanlab does not return: which prediction / class each score refers to, the mapping
back to FiftyOne label ids, thresholds, and the bulk writes.

Score convention (cleanlab's): every score is in [0, 1] and LOW means suspect.

Modules: :mod:`.inputs` (parameters and cleanlab-format inputs), :mod:`.scoring` (auxiliary
inputs, dataset-wide statistics, scores), :mod:`.run` (:func:`run_cleanlab`, two passes),
:mod:`.sharding` (one delegated operation per shard), :mod:`.writing` (fields, tags, suspects).
"""
from .inputs import (PROB_SOURCE_ATTR, PROB_SOURCE_LOGITS, PROB_SOURCE_SPREAD, CleanlabInputs,
                     CleanlabParams, build_inputs, resolve_run_inputs)
from .run import (DEFAULT_CHUNK, MAX_CACHED_SAMPLES, config_hash, iter_chunks, prepare,
                  run_cleanlab, score_samples)
from .scoring import (CleanlabScores, CleanlabStats, compute_scores, compute_stats, image_aux,
                      thresholds_for)
from .sharding import finalize_sharded_run, plan_sharded_run, run_shard
from .writing import (CONFIG_FIELD, RUN_KEY, TAG_BADLOC, TAG_ISSUE, TAG_OVERLOOKED, TAG_SWAP,
                      check_output_fields, suspects)

__all__ = [
    "PROB_SOURCE_ATTR", "PROB_SOURCE_LOGITS", "PROB_SOURCE_SPREAD", "CleanlabInputs",
    "CleanlabParams", "build_inputs", "resolve_run_inputs", "DEFAULT_CHUNK",
    "MAX_CACHED_SAMPLES", "config_hash", "iter_chunks", "prepare", "run_cleanlab",
    "score_samples", "CleanlabScores", "CleanlabStats", "compute_scores", "compute_stats",
    "image_aux", "thresholds_for", "finalize_sharded_run", "plan_sharded_run", "run_shard",
    "CONFIG_FIELD", "RUN_KEY", "TAG_BADLOC", "TAG_ISSUE", "TAG_OVERLOOKED", "TAG_SWAP",
    "check_output_fields", "suspects",
]
