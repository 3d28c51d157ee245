"""The paper's evaluation: grade held-out good / bad / background boxes made from ground truth.

Reports 3-way accuracy, false-positive rate (a bad or background box graded "good"), the
confusion matrix (rows = truth, columns = prediction) and per-class accuracy.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ...classes import resolve_classes
from ...report import RunReport
from .data import iter_item_crops, ordered_batches
from .model import DEFAULT_MODEL, DEFAULT_PRETRAINED, ClipGrader, load_grader
from .prompts import QUALITIES
from .synth import synthesize


@dataclass
class EvalResult:
    """Evaluation figures; ``confusion[t][p]`` counts truth ``QUALITIES[t]`` graded ``QUALITIES[p]``."""

    accuracy: float
    false_positive_rate: float
    confusion: list[list[int]]
    per_class: dict[str, dict[str, float]]
    num_examples: int
    model: str = ""
    report: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self, max_classes: int = 100) -> str:
        """A plain-text summary table."""
        lines = [f"ClipGrader evaluation ({self.model}) on {self.num_examples} examples",
                 f"  3-way accuracy      : {self.accuracy:.4f}",
                 f"  false-positive rate : {self.false_positive_rate:.4f}  "
                 f"(bad or background graded good)",
                 "", "  confusion (rows = truth, cols = predicted)",
                 "  " + " " * 12 + "".join(f"{q:>12}" for q in QUALITIES)]
        for q, row in zip(QUALITIES, self.confusion):
            lines.append(f"  {q:>12}" + "".join(f"{v:>12d}" for v in row))
        lines += ["", f"  {'class':<20}{'n':>6}{'accuracy':>10}"]
        for c, v in sorted(self.per_class.items(), key=lambda kv: -kv[1]["n"])[:max_classes]:
            lines.append(f"  {c:<20}{int(v['n']):>6d}{v['accuracy']:>10.3f}")
        return "\n".join(lines)


def evaluate_clipgrader(collection, gt_field: str = "ground_truth", *,
                        grader: ClipGrader | None = None, model_name: str = DEFAULT_MODEL,
                        pretrained: str | None = DEFAULT_PRETRAINED, checkpoint: str | None = None,
                        device: str = "cpu", precision: str = "fp32",
                        classes: Sequence[str] | None = None, min_size: float = 20.0,
                        seed: int = 12345, context: float = 1.35,
                        batch_size: int = 64, num_workers: int | None = None,
                        progress: Callable[[int, int], None] | None = None) -> EvalResult:
    """Make one good, bad and background example per GT object of ``collection``; grade them.

    Use a collection the model was not trained on (e.g. a held-out split or another dataset).
    The seed differs from training's default so perturbations are new even on the same images.
    """
    report = RunReport(judge="clipgrader_eval")
    if grader is None:
        grader = load_grader(model_name, pretrained, checkpoint=checkpoint, device=device,
                             precision=precision)
    classes = list(resolve_classes(collection, [gt_field], classes))
    index = {c: i for i, c in enumerate(classes)}
    items = synthesize(collection, gt_field, min_size=min_size, seed=seed, classes=classes,
                       report=report)
    if not items:
        raise ValueError(f"no evaluation examples could be made from '{gt_field}' "
                         f"(skips: {dict(report.skipped)})")
    conf = np.zeros((3, 3), dtype=np.int64)
    per_n: dict[str, int] = {}
    per_ok: dict[str, int] = {}
    done = 0
    stream = iter_item_crops(items, grader.image_size, context=context, seed=seed,
                             num_workers=num_workers, report=report)
    for batch_items, arr in ordered_batches(stream, batch_size):
        with torch.inference_mode():
            p = grader.probabilities(grader.hwc_to_tensor(arr), [index[i.label] for i in batch_items],
                                     classes)
        for it, pred in zip(batch_items, p["quality"]):
            t = QUALITIES.index(it.quality)
            conf[t, int(pred)] += 1
            per_n[it.label] = per_n.get(it.label, 0) + 1
            per_ok[it.label] = per_ok.get(it.label, 0) + int(t == int(pred))
        done += len(batch_items)
        if progress is not None:
            progress(done, len(items))
    n = int(conf.sum())
    negatives = int(conf[1:].sum())
    return EvalResult(
        accuracy=float(np.trace(conf) / max(n, 1)),
        false_positive_rate=float(conf[1:, 0].sum() / max(negatives, 1)),
        confusion=conf.tolist(),
        per_class={c: {"n": per_n[c], "accuracy": per_ok[c] / per_n[c]} for c in per_n},
        num_examples=n,
        model=grader.meta.get("checkpoint") or f"{grader.model_name}:{grader.pretrained}",
        report=report.to_dict(),
    )
