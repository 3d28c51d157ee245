"""Grade every box of a Detections field with a (zero-shot or fine-tuned) ClipGrader."""
from __future__ import annotations

import time
from collections import Counter
from typing import Callable, Iterable, Iterator, Sequence

from ...classes import resolve_classes
from ...fields import read_detections, record_run
from ...render import BoxCrop, iter_box_crops
from ...report import RunReport
from .model import DEFAULT_MODEL, DEFAULT_PRETRAINED, ClipGrader, load_grader
from .outputs import quality_attrs, quality_tags, write_quality
from .scoring import score_crops

TAG_BAD, TAG_BACKGROUND = quality_tags("clipgrader")
ATTRS = quality_attrs("clipgrader")


def grade_clipgrader(collection, field: str = "ground_truth", *, grader: ClipGrader | None = None,
                     model_name: str = DEFAULT_MODEL, pretrained: str | None = DEFAULT_PRETRAINED,
                     checkpoint: str | None = None, device: str = "cpu",
                     precision: str = "fp32",
                     classes: Sequence[str] | None = None, all_classes: bool = False,
                     bad_threshold: float = 0.5, background_threshold: float = 0.5,
                     context: float = 1.35, batch_size: int = 64,
                     num_workers: int | None = None, render_pool: str = "threads",
                     progress: Callable[[int, int], None] | None = None,
                     run_key: str = "clipgrader") -> RunReport:
    """Grade every detection of ``field`` in ``collection`` and write ClipGrader's attributes.

    Writes per detection ``clipgrader_p_good``, ``_p_bad``, ``_p_background``, ``_p_not_good``,
    ``_quality`` ("good"/"bad"/"background") and, with ``all_classes``, ``clipgrader_class``
    (predicted class, None when background wins) and ``_p_other_class``. Tags
    ``suspect:clipgrader_bad`` (p_bad >= ``bad_threshold``) and ``suspect:clipgrader_background``
    (p_background >= ``background_threshold``). Labels in scope that get no score (unreadable
    image, degenerate box, unknown class) get None, so a re-run leaves no stale values; nothing
    else on the detections is touched. ``grader`` overrides the model arguments; otherwise the
    model comes from ``checkpoint`` or ``model_name``/``pretrained`` (see ``load_grader``).
    ``num_workers`` threads decode and render ahead of the model (None: cores - 1, at most 8);
    ``render_pool="processes"`` uses processes instead (faster on a GPU, see ``iter_box_crops``).
    """
    report = RunReport(judge="clipgrader")
    if grader is None:
        grader = load_grader(model_name, pretrained, checkpoint=checkpoint, device=device,
                             precision=precision)
    table = read_detections(collection, field)
    explicit = bool(classes)
    classes = resolve_classes(collection, [field], classes)
    if not explicit:
        # CLIP prompts work for any class name, so labels missing from the class list are scored.
        seen = {l for labs in table.labels for l in labs if l is not None}
        classes = list(classes) + sorted(seen - set(classes))
    known = set(classes)
    total = table.num_labels
    done = [0]

    def tick(n: int) -> None:
        done[0] += n
        if progress is not None:
            progress(done[0], total)

    def keep_known(crops: Iterable[BoxCrop]) -> Iterator[BoxCrop]:
        for c in crops:
            if c.label in known:
                yield c
            else:
                report.skip("unknown_class")

    crops = iter_box_crops(collection, field, context=context, out_size=grader.image_size,
                           report=report, num_workers=num_workers, prefetch=16,
                           pool=render_pool)
    t0 = time.perf_counter()
    scores = score_crops(grader, keep_known(crops), classes, all_classes=all_classes,
                         batch_size=batch_size, on_batch=tick)

    t1 = time.perf_counter()
    attrs = [a for a in ATTRS if all_classes or a not in ("clipgrader_class",
                                                          "clipgrader_p_other_class")]
    keys = [(sid, lid) for sid, ids in zip(table.sample_ids, table.ids) for lid in ids]
    write_quality(collection, field, "clipgrader", scores, keys, attrs, bad_threshold,
                  background_threshold, report)

    report.info["seconds"] = {"render_and_score": round(t1 - t0, 3),
                              "write": round(time.perf_counter() - t1, 3)}
    report.info.update({"model": grader.model_name, "pretrained": grader.pretrained,
                        "checkpoint": grader.meta.get("checkpoint"), "num_classes": len(classes),
                        "quality_counts": dict(Counter(r["clipgrader_quality"]
                                                       for r in scores.values()))})
    record_run(collection, run_key, {
        "method": "clipgrader", "field": field, "model_name": grader.model_name,
        "pretrained": grader.pretrained, "checkpoint": grader.meta.get("checkpoint"),
        "all_classes": all_classes, "bad_threshold": bad_threshold,
        "background_threshold": background_threshold, "context": context,
    }, report.to_dict())
    return report
