"""Fine-tuning ClipGrader on a dataset's own ground truth (multi-positive contrastive loss).

By default only the vision encoder is trained (the paper: vision-only matches full fine-tuning;
text-only stalls); ``lora_rank > 0`` trains LoRA adapters on it instead of all its weights.
Train/val split is by image. Every epoch writes ``last.pt`` (weights + optimizer + history,
used by ``resume=True``) and, when validation improves, ``best.pt``.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ...classes import resolve_classes
from ...report import RunReport
from .data import iter_item_crops, ordered_batches, shuffled_batches
from .loss import multi_positive_contrastive_loss
from .model import (DEFAULT_MODEL, DEFAULT_PRETRAINED, ClipGrader, apply_lora, load_grader,
                    read_checkpoint)
from .prompts import QUALITIES, class_prompts, target_index
from .synth import SynthItem, split_by_image, synthesize


def start_training(out_dir: str, seed: int, judge: str) -> tuple[str, str, RunReport]:
    """What a training run of either grader (ClipGrader, the box grader) starts with: torch
    seeded, ``out_dir`` made; returns its ``last.pt`` / ``best.pt`` paths and the run's report."""
    torch.manual_seed(seed)
    os.makedirs(out_dir, exist_ok=True)
    return (os.path.join(out_dir, "last.pt"), os.path.join(out_dir, "best.pt"),
            RunReport(judge=judge))


@dataclass
class TrainResult:
    """Where the checkpoints are and how training went, epoch by epoch."""

    out_dir: str
    best_checkpoint: str | None
    last_checkpoint: str
    history: list[dict[str, float]] = field(default_factory=list)
    num_train: int = 0
    num_val: int = 0
    classes: list[str] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _targets(items: Sequence[SynthItem], index: dict[str, int], C: int) -> list[int]:
    return [target_index(index[it.label], it.quality, C) for it in items]


def _trainable(grader: ClipGrader, lora_rank: int, train_text: bool) -> list[torch.nn.Parameter]:
    m = grader.model
    for p in m.parameters():
        p.requires_grad_(False)
    if lora_rank:
        params = [p for n, p in m.visual.named_parameters() if "lora_" in n]
    else:
        params = list(m.visual.parameters())
    if train_text:
        params += [p for n, p in m.named_parameters()
                   if not n.startswith("visual.") and n not in ("logit_scale", "logit_bias")]
    for p in params:
        p.requires_grad_(True)
    return params


@torch.no_grad()
def validate(grader: ClipGrader, items: Sequence[SynthItem], classes: Sequence[str], *,
             batch_size: int = 64, num_workers: int | None = None,
             seed: int = 0) -> dict[str, float]:
    """Loss and 3-way accuracy on ``items`` rendered at fixed context, no jitter."""
    grader.model.eval()
    index = {c: i for i, c in enumerate(classes)}
    C = len(classes)
    txt = grader.text_features(classes)
    tot_loss, n, correct = 0.0, 0, 0
    stream = iter_item_crops(items, grader.image_size, num_workers=num_workers, seed=seed)
    for batch_items, arr in ordered_batches(stream, batch_size):
        img = grader.image_features(grader.normalize(grader.hwc_to_tensor(arr)))
        t = _targets(batch_items, index, C)
        loss = multi_positive_contrastive_loss(img, txt[t], t, grader.logit_scale)
        p = grader.probabilities_from_features(img, [index[i.label] for i in batch_items], classes)
        truth = np.array([QUALITIES.index(i.quality) for i in batch_items])
        correct += int((p["quality"] == truth).sum())
        tot_loss += float(loss) * len(batch_items)
        n += len(batch_items)
    return {"val_loss": tot_loss / max(n, 1), "val_accuracy": correct / max(n, 1)}


def train_clipgrader(collection, gt_field: str = "ground_truth", out_dir: str = "clipgrader_ckpt",
                     *, model_name: str = DEFAULT_MODEL,
                     pretrained: str | None = DEFAULT_PRETRAINED, init_checkpoint: str | None = None,
                     classes: Sequence[str] | None = None, epochs: int = 5, batch_size: int = 32,
                     lr: float = 1e-5, weight_decay: float = 0.1, lora_rank: int = 0,
                     lora_alpha: float | None = None, train_text: bool = False,
                     val_fraction: float = 0.1, min_size: float = 20.0,
                     context_range: tuple[float, float] = (1.2, 1.5), jitter: float = 0.1,
                     seed: int = 0, device: str = "cpu", resume: bool = False,
                     num_workers: int | None = None, shuffle_buffer: int = 512,
                     max_steps_per_epoch: int | None = None,
                     progress: Callable[[int, int], None] | None = None) -> TrainResult:
    """Fine-tune a ClipGrader on good/bad/background examples synthesised from ``gt_field``.

    The model starts from ``init_checkpoint`` (a ClipGrader checkpoint) or
    ``model_name``/``pretrained``; with ``resume`` and an existing ``out_dir/last.pt`` training
    continues after its last finished epoch (same data split, optimizer state restored).
    Returns a :class:`TrainResult`; grade with ``checkpoint=result.best_checkpoint``.
    """
    last_path, best_path, report = start_training(out_dir, seed, "clipgrader_train")

    state = None
    if resume and os.path.isfile(last_path):
        state = read_checkpoint(last_path)
        grader = load_grader(checkpoint=last_path, device=device)
        classes = state["train_state"]["classes"]
        lora_rank = grader.lora_rank
    else:
        if init_checkpoint:
            grader = load_grader(checkpoint=init_checkpoint, device=device)
            if lora_rank and not grader.lora_rank:
                apply_lora(grader.model.visual, lora_rank, lora_alpha)
                grader.model.to(device)
                grader.lora_rank, grader.lora_alpha = lora_rank, lora_alpha
            lora_rank = grader.lora_rank
        else:
            grader = load_grader(model_name, pretrained, device=device, lora_rank=lora_rank,
                                 lora_alpha=lora_alpha)
        classes = resolve_classes(collection, [gt_field], classes)
    classes = list(classes)
    index = {c: i for i, c in enumerate(classes)}
    C = len(classes)

    items = synthesize(collection, gt_field, min_size=min_size, seed=seed, classes=classes,
                       report=report)
    if not items:
        raise ValueError(f"no training examples could be made from '{gt_field}' "
                         f"(skips: {dict(report.skipped)}); lower min_size or check the field")
    train_items, val_items = split_by_image(items, val_fraction, seed)
    report.info.update({"train_examples": len(train_items), "val_examples": len(val_items)})

    params = _trainable(grader, lora_rank, train_text)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    history: list[dict[str, float]] = []
    start_epoch, best_metric = 0, -np.inf
    if state is not None:
        ts = state["train_state"]
        opt.load_state_dict(ts["optimizer"])
        history = list(ts["history"])
        start_epoch = int(ts["epoch"]) + 1
        best_metric = float(ts["best_metric"])

    grader.meta.update({"classes": classes, "trained_on_field": gt_field})
    frozen_txt = None if train_text else grader.text_features(classes).detach()
    steps_per_epoch = int(np.ceil(len(train_items) / batch_size))
    if max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, max_steps_per_epoch)
    total_steps = steps_per_epoch * epochs
    for epoch in range(start_epoch, epochs):
        grader.model.train()
        rng = np.random.default_rng([seed, epoch])
        stream = iter_item_crops(train_items, grader.image_size, context_range=context_range,
                                 jitter=jitter, seed=seed * 1000 + epoch, shuffle=True,
                                 num_workers=num_workers, report=report)
        tot, n, step = 0.0, 0, 0
        for batch_items, arr in shuffled_batches(stream, batch_size, shuffle_buffer, rng):
            t = _targets(batch_items, index, C)
            img = grader.image_features(grader.normalize(grader.hwc_to_tensor(arr)))
            if frozen_txt is not None:
                txt = frozen_txt[t]
            else:
                prompts = class_prompts(classes)
                tok = grader.tokenizer([prompts[i] for i in t]).to(grader.device)
                txt = grader.model.encode_text(tok, normalize=True).float()
            loss = multi_positive_contrastive_loss(img, txt, t, grader.logit_scale.detach())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot += loss.item() * len(batch_items)
            n += len(batch_items)
            step += 1
            if progress is not None:
                progress(epoch * steps_per_epoch + step, total_steps)
            if step >= steps_per_epoch:
                break
        rec = {"epoch": epoch, "train_loss": tot / max(n, 1), "steps": step}
        grader._text_cache.clear()  # text features are recomputed in eval mode for validation
        if val_items:
            rec.update(validate(grader, val_items, classes, batch_size=batch_size,
                                num_workers=num_workers, seed=seed))
            metric = rec["val_accuracy"]
        else:
            metric = -rec["train_loss"]
        history.append(rec)
        if metric > best_metric:
            best_metric = metric
            grader.save(best_path, extra={"history": history})
        grader.save(last_path, extra={"train_state": {
            "optimizer": opt.state_dict(), "epoch": epoch, "history": history,
            "best_metric": float(best_metric), "classes": classes}})
    with open(os.path.join(out_dir, "history.json"), "w") as f:
        json.dump(history, f, indent=1)
    return TrainResult(out_dir=os.path.abspath(out_dir),
                       best_checkpoint=os.path.abspath(best_path) if os.path.isfile(best_path) else None,
                       last_checkpoint=os.path.abspath(last_path), history=history,
                       num_train=len(train_items), num_val=len(val_items), classes=classes,
                       report=report.to_dict())
