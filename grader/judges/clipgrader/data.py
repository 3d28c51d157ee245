"""Rendering synthetic examples for training/evaluation: one decode per image, threaded prefetch."""
from __future__ import annotations

from collections import OrderedDict
from typing import Iterator, Sequence

import numpy as np

from ...images import ImageReadError, load_rgb
from ...parallel import prefetch_map
from ...render import crop_with_box, default_workers
from ...report import RunReport
from .synth import SynthItem


def _group(items: Sequence[SynthItem]) -> list[list[SynthItem]]:
    groups: "OrderedDict[str, list[SynthItem]]" = OrderedDict()
    for it in items:
        groups.setdefault(it.filepath, []).append(it)
    return list(groups.values())


def iter_item_crops(items: Sequence[SynthItem], out_size: int, *, context: float = 1.35,
                    context_range: tuple[float, float] | None = None, jitter: float = 0.0,
                    seed: int = 0, shuffle: bool = False, num_workers: int | None = None,
                    prefetch: int = 8,
                    report: RunReport | None = None,
                    ) -> Iterator[tuple[SynthItem, np.ndarray]]:
    """Yield ``(item, crop)`` with ``crop`` an ``(S, S, 3)`` uint8 array, decoding each image once.

    With ``context_range`` each crop's context is drawn uniformly from it (training); otherwise
    ``context`` is used for all (evaluation). ``shuffle`` visits images in a seeded random order.
    Unreadable images are skipped and counted (``unreadable_image``, per item).
    """
    if num_workers is None:
        num_workers = default_workers()
    groups = _group(items)
    order = np.arange(len(groups))
    if shuffle:
        np.random.default_rng([seed, 1]).shuffle(order)

    def work(gi: int):
        group = groups[gi]
        try:
            image = load_rgb(group[0].filepath)
        except ImageReadError:
            return group, None
        rng = np.random.default_rng([seed, 2, gi])
        out = []
        for it in group:
            ctx = rng.uniform(*context_range) if context_range else context
            crop = crop_with_box(image, it.box_xyxy, context=ctx, jitter=jitter, rng=rng,
                                 out_size=out_size)
            out.append(np.asarray(crop))
        return group, out

    def emit(result):
        group, crops = result
        if crops is None:
            if report is not None:
                report.skip("unreadable_image", len(group))
            return
        yield from zip(group, crops)

    for result in prefetch_map(work, order, workers=num_workers, prefetch=prefetch):
        yield from emit(result)


def shuffled_batches(stream: Iterator[tuple[SynthItem, np.ndarray]], batch_size: int,
                     buffer: int, rng: np.random.Generator,
                     ) -> Iterator[tuple[list[SynthItem], np.ndarray]]:
    """Batches drawn from a shuffle buffer of ``buffer`` examples (mixes examples across images)."""
    pool: list[tuple[SynthItem, np.ndarray]] = []

    def take(n: int):
        idx = rng.permutation(len(pool))[:n]
        chosen = [pool[i] for i in idx]
        for i in sorted(idx, reverse=True):
            pool.pop(i)
        return [c[0] for c in chosen], np.stack([c[1] for c in chosen])

    for ex in stream:
        pool.append(ex)
        if len(pool) >= max(buffer, batch_size):
            yield take(batch_size)
    while pool:
        yield take(min(batch_size, len(pool)))


def ordered_batches(stream: Iterator[tuple[SynthItem, np.ndarray]], batch_size: int,
                    ) -> Iterator[tuple[list[SynthItem], np.ndarray]]:
    """Consecutive batches of a stream, order kept."""
    items, crops = [], []
    for it, c in stream:
        items.append(it)
        crops.append(c)
        if len(items) == batch_size:
            yield items, np.stack(crops)
            items, crops = [], []
    if items:
        yield items, np.stack(crops)
