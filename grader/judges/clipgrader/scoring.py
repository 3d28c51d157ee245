"""Model-side scoring of rendered crops (no database): batches in, per-label scores out."""
from __future__ import annotations

from typing import Callable, Iterable, Iterator, Sequence

import torch

from ...render import BoxCrop
from .model import QUALITY_NAMES, ClipGrader


def batched(crops: Iterable[BoxCrop], batch_size: int) -> Iterator[list[BoxCrop]]:
    """Group a crop stream into lists of ``batch_size`` (the last one may be shorter)."""
    batch: list[BoxCrop] = []
    for c in crops:
        batch.append(c)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def score_crops(grader: ClipGrader, crops: Iterable[BoxCrop], classes: Sequence[str], *,
                all_classes: bool = False, batch_size: int = 64,
                on_batch: Callable[[int], None] | None = None,
                ) -> dict[tuple[str, str], dict[str, object]]:
    """Run the model over a crop stream; return ``(sample_id, label_id) -> scores``.

    One batch of look-ahead: batch i's image tower is launched (asynchronously on a GPU)
    before batch i-1's scores are pulled back, so stacking and copying the next batch on the
    CPU overlaps with the GPU's work instead of waiting for it.
    """
    index = {c: i for i, c in enumerate(classes)}
    cuda = grader.device.type == "cuda"
    out: dict[tuple[str, str], dict[str, object]] = {}

    def collect(batch: list[BoxCrop], k: list[int], feats: torch.Tensor) -> None:
        p = grader.probabilities_from_features(feats, k, classes, all_classes)
        for i, c in enumerate(batch):
            rec: dict[str, object] = {
                "clipgrader_p_good": float(p["p_good"][i]),
                "clipgrader_p_bad": float(p["p_bad"][i]),
                "clipgrader_p_background": float(p["p_background"][i]),
                "clipgrader_p_not_good": float(1.0 - p["p_good"][i]),
                "clipgrader_quality": QUALITY_NAMES[int(p["quality"][i])],
            }
            if all_classes:
                pc = int(p["pred_class"][i])
                rec["clipgrader_class"] = classes[pc] if pc >= 0 else None
                rec["clipgrader_p_other_class"] = float(p["p_other_class"][i])
            out[(c.sample_id, c.label_id)] = rec
        if on_batch is not None:
            on_batch(len(batch))

    grader.model.eval()
    pending = None
    with torch.inference_mode():
        for batch in batched(crops, batch_size):
            x = grader.to_uint8_batch([c.image for c in batch])
            if cuda:
                x = x.pin_memory()
            feats = grader.image_features(grader.normalize(x))
            if pending is not None:
                collect(*pending)
            pending = (batch, [index[c.label] for c in batch], feats)
        if pending is not None:
            collect(*pending)
    return out
