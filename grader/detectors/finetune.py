"""Fine-tune the shipped YOLOX-Nano on a dataset's own classes, cross-fitted.

No shipped detector knows a curator's own classes (cells, parts, raccoons), so cleanlab, zoom
and overlooked are blind there. :func:`crossfit_detector` splits the images into ``folds``,
fine-tunes one YOLOX-Nano per fold on the *other* folds' labels (the noisy labels are all a user
has), and writes every image's out-of-fold predictions, with per-class ``probs`` over the
dataset's own classes, into a predictions field: what cleanlab's ObjectLab wants (a model that
never saw the image's labels) and what grade() feeds it.

The recipe is YOLOX's own, shortened: multi-scale inputs and horizontal flips, the center prior
plus SimOTA's dynamic-k assignment, BCE on objectness and IoU-weighted class targets, an IoU
loss on boxes. Each dataset class starts from the COCO class channel the pretrained model gives
its boxes most (a raccoon starts as the COCO class it looks most like). Checkpoints are cached
by dataset, field, label content and recipe, and reused while the labels are unchanged.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ..cache import detector_cache_root, label_content_hash
from ..images import ImageReadError, load_rgb
from ..report import RunReport
from .base import letterbox
from .cvdnn import yolox_grid

#: Bumped when the recipe changes so cached checkpoints of an older recipe are retrained.
FINETUNE_VERSION = 1


@dataclass
class FinetuneSettings:
    """The training recipe (defaults chosen on raccoon and coco128 with renamed classes)."""

    epochs: int = 10
    batch_size: int = 8
    lr: float = 5e-5
    weight_decay: float = 5e-4
    input_size: int = 416
    #: multi-scale training: input sides drawn from this range (multiples of 32)
    min_size: int = 320
    folds: int = 2
    #: at most this many training images per fold model (a random sample; bounded time/memory)
    max_images: int = 2000
    seed: int = 0
    device: str | None = None

    def key(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d.pop("device")
        return d


# --- targets --------------------------------------------------------------------------------

def _box_iou(a, b):
    """Pairwise IoU of xyxy tensors ``(G, 4)`` x ``(A, 4)``."""
    import torch

    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(-1)
    return inter / (area_a[:, None] + area_b[None, :] - inter + 1e-9)


def simota_assign(pred_boxes, obj_logit, cls_logit, gt_boxes, gt_cls, centers, strides,
                  center_radius: float = 2.5):
    """YOLOX's assignment for one image: ``(fg mask (A,), matched gt index (A,), IoU (A,))``.

    Candidates are anchor points inside a GT box or within ``center_radius`` strides of its
    centre; each GT takes its dynamic-k cheapest candidates (k = sum of its 10 best IoUs), an
    anchor claimed twice goes to the cheaper GT.
    """
    import torch
    import torch.nn.functional as F

    g, a = len(gt_boxes), len(pred_boxes)
    cx, cy = centers[:, 0], centers[:, 1]
    in_box = ((cx[None] > gt_boxes[:, None, 0]) & (cx[None] < gt_boxes[:, None, 2])
              & (cy[None] > gt_boxes[:, None, 1]) & (cy[None] < gt_boxes[:, None, 3]))
    gcx = (gt_boxes[:, 0] + gt_boxes[:, 2]) / 2
    gcy = (gt_boxes[:, 1] + gt_boxes[:, 3]) / 2
    r = center_radius * strides[None, :]
    in_ctr = ((cx[None] - gcx[:, None]).abs() < r) & ((cy[None] - gcy[:, None]).abs() < r)
    cand = (in_box | in_ctr).any(0)
    fg = torch.zeros(a, dtype=torch.bool, device=pred_boxes.device)
    matched = torch.zeros(a, dtype=torch.long, device=pred_boxes.device)
    ious_out = torch.zeros(a, device=pred_boxes.device)
    if not cand.any():
        return fg, matched, ious_out
    idx = cand.nonzero(as_tuple=True)[0]
    with torch.no_grad():
        ious = _box_iou(gt_boxes, pred_boxes[idx])
        k = cls_logit.shape[-1]
        p = (torch.sigmoid(cls_logit[idx]) * torch.sigmoid(obj_logit[idx, None])).sqrt()
        onehot = F.one_hot(gt_cls, k).float()
        cls_cost = F.binary_cross_entropy(p[None].expand(g, -1, -1).clamp(1e-6, 1 - 1e-6),
                                          onehot[:, None].expand(-1, len(idx), -1),
                                          reduction="none").sum(-1)
        both = in_box[:, idx] & in_ctr[:, idx]
        cost = cls_cost + 3.0 * -torch.log(ious + 1e-8) + 1e5 * (~both).float()
        topk = min(10, len(idx))
        dyn_k = ious.topk(topk, dim=1).values.sum(1).int().clamp(min=1)
        match = torch.zeros_like(cost, dtype=torch.bool)
        for gi in range(g):  # G is the number of boxes in one image: small
            match[gi, cost[gi].topk(int(dyn_k[gi]), largest=False).indices] = True
        multi = match.sum(0) > 1
        if multi.any():
            best = cost[:, multi].argmin(0)
            match[:, multi] = False
            match[best, multi.nonzero(as_tuple=True)[0]] = True
        has = match.any(0)
        sel = idx[has]
        fg[sel] = True
        matched[sel] = match[:, has].float().argmax(0)
        ious_out[sel] = ious[matched[sel], has.nonzero(as_tuple=True)[0]]
    return fg, matched, ious_out


def yolox_loss(out, targets: Sequence[tuple], grid, stride, k: int):
    """YOLOX's loss for a batch: ``out`` (N, A, 85) logits; ``targets`` per image
    ``(boxes xyxy (G, 4), classes (G,))`` tensors in input pixels."""
    import torch
    import torch.nn.functional as F

    from .torch_yolox import decode

    boxes = decode(out, grid, stride)
    centers = (grid + 0.5) * stride
    st = stride[:, 0]
    obj_t = torch.zeros(out.shape[:2], device=out.device)
    l_cls, l_iou, n_fg = out.new_zeros(()), out.new_zeros(()), 0
    for i, (gb, gc) in enumerate(targets):
        if len(gb) == 0:
            continue
        fg, m, iou = simota_assign(boxes[i], out[i, :, 4], out[i, :, 5:5 + k], gb, gc, centers, st)
        if not fg.any():
            continue
        obj_t[i, fg] = 1.0
        n_fg += int(fg.sum())
        cls_t = F.one_hot(gc[m[fg]], k).float() * iou[fg, None]
        l_cls = l_cls + F.binary_cross_entropy_with_logits(out[i, fg, 5:5 + k], cls_t, reduction="sum")
        pb, tb = boxes[i, fg], gb[m[fg]]
        iou_fg = torch.diag(_box_iou(pb, tb)) if len(pb) < 2048 else None
        if iou_fg is None:  # pragma: no cover - huge images only
            iou_fg = torch.stack([_box_iou(p[None], t[None])[0, 0] for p, t in zip(pb, tb)])
        l_iou = l_iou + (1 - iou_fg ** 2).sum()
    l_obj = F.binary_cross_entropy_with_logits(out[..., 4], obj_t, reduction="sum")
    n = max(n_fg, 1)
    return (5.0 * l_iou + l_obj + l_cls) / n


# --- data -----------------------------------------------------------------------------------

@dataclass
class TrainingImages:
    """Images letterboxed once at the training size (uint8, BGR NCHW) and their labels in
    input pixels; ``ids`` the samples they come from."""

    ids: list[str]
    blobs: np.ndarray
    boxes: list[np.ndarray]
    classes: list[np.ndarray]
    skipped: dict[str, int] = field(default_factory=dict)


def load_training_images(collection, gt_field: str, classes: Sequence[str], size: int,
                         ids: Sequence[str] | None = None) -> TrainingImages:
    """Decode each image once into a ``size`` letterbox; boxes of unknown classes, crowd and
    degenerate boxes are left out (counted)."""
    from ..boxes import rel_xywh_to_abs_xyxy

    view = collection.select(list(ids)) if ids is not None else collection
    sids, paths, rel, labels = view.values(
        ["id", "filepath", f"{gt_field}.detections.bounding_box", f"{gt_field}.detections.label"])
    cidx = {c: i for i, c in enumerate(classes)}
    out_ids, blobs, bxs, cls = [], [], [], []
    skipped: dict[str, int] = {}
    for sid, path, rb, lb in zip(sids, paths, rel, labels):
        try:
            rgb = load_rgb(path)
        except ImageReadError:
            skipped["unreadable_image"] = skipped.get("unreadable_image", 0) + 1
            continue
        h, w = rgb.shape[:2]
        blob, meta = letterbox([rgb], size, bgr=True, dtype=np.uint8)
        r = meta[0][0]
        rb, lb = rb or [], lb or []
        keep = [i for i, l in enumerate(lb) if l in cidx and rb[i] is not None]
        skipped["unknown_class"] = skipped.get("unknown_class", 0) + len(lb) - len(keep)
        xyxy = rel_xywh_to_abs_xyxy(np.asarray([rb[i] for i in keep], dtype=np.float64).reshape(-1, 4), w, h) * r
        ok = (xyxy[:, 2] - xyxy[:, 0] >= 2) & (xyxy[:, 3] - xyxy[:, 1] >= 2)
        skipped["degenerate_box"] = skipped.get("degenerate_box", 0) + int((~ok).sum())
        out_ids.append(sid)
        blobs.append(blob[0])
        bxs.append(xyxy[ok].astype(np.float32))
        cls.append(np.asarray([cidx[lb[i]] for i in keep], dtype=np.int64)[ok])
    return TrainingImages(out_ids, np.stack(blobs) if blobs else np.zeros((0, 3, size, size), np.uint8),
                          bxs, cls, {k: v for k, v in skipped.items() if v})


def class_init(module, data: TrainingImages, k: int, device) -> list[int]:
    """Per dataset class, the COCO class channel the pretrained model scores highest on its
    boxes: per box the best score of each COCO class over the anchor points in the box's
    central half, summed over (at most 64 images') boxes of the class."""
    import torch

    from .torch_yolox import NUM_DET_CLASSES

    grid, stride = yolox_grid(data.blobs.shape[-1])
    centers = (grid + 0.5) * stride
    acc = np.zeros((k, NUM_DET_CLASSES))
    module.eval()
    with torch.inference_mode():
        for s in range(0, min(len(data.ids), 64), 8):
            out = module(torch.from_numpy(data.blobs[s:s + 8]).to(device).float())
            p = (torch.sigmoid(out[..., 4:5]) * torch.sigmoid(out[..., 5:])).cpu().numpy()
            for j in range(len(out)):
                for b, c in zip(data.boxes[s + j], data.classes[s + j]):
                    cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
                    hw, hh = (b[2] - b[0]) / 4, (b[3] - b[1]) / 4
                    m = (np.abs(centers[:, 0] - cx) <= hw) & (np.abs(centers[:, 1] - cy) <= hh)
                    if m.any():
                        acc[c] += p[j][m].max(0)
    return [int(acc[c].argmax()) if acc[c].any() else c for c in range(k)]


# --- training -------------------------------------------------------------------------------

def train_fold(data: TrainingImages, k: int, settings: FinetuneSettings, model_dir: str,
               progress: Callable[[int, int], None] | None = None,
               losses: list[float] | None = None) -> dict:
    """Fine-tune YOLOX-Nano on ``data`` (k classes); the fine-tuned ``state_dict`` (on CPU).
    ``losses``, when given, receives each epoch's mean training loss."""
    import torch

    from .torch_yolox import class_conv_names, default_device, yolox_module

    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    device = torch.device(settings.device or default_device())
    module = yolox_module(os.path.join(model_dir, "model.onnx")).to(device)
    init = class_init(module, data, k, device)
    with torch.no_grad():
        for name in class_conv_names(module):
            conv = module.get_submodule(name)
            conv.weight[:k] = conv.weight[init].clone()
            conv.bias[:k] = conv.bias[init].clone()
    opt = torch.optim.AdamW(module.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    n = len(data.ids)
    steps_per_epoch = max(1, math.ceil(n / settings.batch_size))
    total = settings.epochs * steps_per_epoch
    warm = min(steps_per_epoch, total // 10 + 1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (
        1 + math.cos(math.pi * min(s, total) / max(total, 1))))
    size = data.blobs.shape[-1]
    sizes = [s for s in range(settings.min_size, size + 1, 32)] or [size]
    grids = {s: tuple(torch.from_numpy(x).to(device) for x in yolox_grid(s)) for s in sizes}
    step = 0
    module.train()
    for _ in range(settings.epochs):
        order = rng.permutation(n)
        epoch_loss = []
        for b in range(0, n, settings.batch_size):
            idx = order[b:b + settings.batch_size]
            x = torch.from_numpy(data.blobs[idx]).to(device).float()
            tgt = [(torch.from_numpy(data.boxes[i]).to(device), torch.from_numpy(data.classes[i]).to(device))
                   for i in idx]
            if rng.random() < 0.5:  # horizontal flip: the letterbox sits top-left, flip whole canvas
                x = x.flip(-1)
                tgt = [(torch.stack([size - bb[:, 2], bb[:, 1], size - bb[:, 0], bb[:, 3]], 1), c)
                       for bb, c in tgt]
            s = int(rng.choice(sizes))
            if s != size:
                x = torch.nn.functional.interpolate(x, size=(s, s), mode="bilinear", align_corners=False)
                tgt = [(bb * (s / size), c) for bb, c in tgt]
            out = module(x)
            loss = yolox_loss(out, tgt, *grids[s], k)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(module.parameters(), 10.0)
            opt.step()
            sched.step()
            step += 1
            epoch_loss.append(float(loss.detach()))
            if progress:
                progress(step, total)
        if losses is not None:
            losses.append(float(np.mean(epoch_loss)))
    module.eval()
    return {n_: t.detach().cpu() for n_, t in module.state_dict().items()}


def _cache_key(collection, gt_field: str, classes: Sequence[str], settings: FinetuneSettings,
               fold_ids: Sequence[Sequence[str]]) -> str:
    content = label_content_hash(collection, gt_field)
    blob = json.dumps({"v": FINETUNE_VERSION, "dataset": collection._dataset.name, "field": gt_field,
                       "labels": content, "classes": list(classes), "settings": settings.key(),
                       "folds": [sorted(f) for f in fold_ids]}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cache_root() -> str:
    """Where fine-tuned checkpoints are kept (beside the trained box graders)."""
    return detector_cache_root()


def crossfit_detector(collection, gt_field: str = "ground_truth", label_field: str = "lg_predictions",
                      *, classes: Sequence[str] | None = None, model_dir: str | None = None,
                      settings: FinetuneSettings | dict | None = None, overwrite: bool = False,
                      conf_threshold: float = 0.05, nms_iou: float = 0.45,
                      progress: Callable[[int, int], None] | None = None) -> RunReport:
    """Fine-tune YOLOX-Nano on ``gt_field``'s classes in ``folds`` folds and write each image's
    out-of-fold predictions (with ``probs`` over ``classes``) to ``label_field``.

    ``classes``: the dataset's classes (default: ``default_classes`` or the labels' distinct
    values; at most 80). Checkpoints are cached (:func:`cache_root`) and reused while the labels,
    folds and recipe are unchanged. The report's ``info`` says what was trained, where it is
    kept, the per-fold training time and what was skipped.
    """
    import torch

    from .runner import _detectors_dir, run_detector
    from .torch_yolox import TorchYolox, default_device

    st = settings if isinstance(settings, FinetuneSettings) else FinetuneSettings(**(settings or {}))
    if st.folds < 2:
        raise ValueError("folds must be >= 2: every image needs a model that never saw its labels")
    from ..classes import resolve_classes

    classes = resolve_classes(collection, [gt_field], classes, store=False)
    if not 0 < len(classes) <= 80:
        raise ValueError(f"fine-tuning YOLOX-Nano takes 1..80 classes, got {len(classes)}")
    model_dir = model_dir or os.path.join(_detectors_dir(None), "yolox-nano")
    ids = collection.values("id")
    if len(ids) < 2 * st.folds:
        raise ValueError(f"{len(ids)} images are too few to fine-tune in {st.folds} folds")
    rng = np.random.default_rng(st.seed)
    fold_of = rng.permutation(np.arange(len(ids)) % st.folds)
    fold_ids = [[ids[i] for i in np.nonzero(fold_of == f)[0]] for f in range(st.folds)]
    key = _cache_key(collection, gt_field, classes, st, fold_ids)
    root = os.path.join(cache_root(), key)
    report = RunReport(judge="detector:yolox-nano-finetuned")
    report.info.update({"classes": classes, "folds": st.folds, "settings": st.key(),
                        "checkpoints": root,
                        "device": st.device or default_device(), "trained": [], "reused": []})
    total_steps = st.folds * st.epochs * max(1, math.ceil(
        min(st.max_images, len(ids) - len(ids) // st.folds) / st.batch_size))
    done_before = 0
    for f in range(st.folds):
        path = os.path.join(root, f"fold{f}.pt")
        if os.path.isfile(path):
            state = torch.load(path, map_location="cpu", weights_only=True)
            report.info["reused"].append(path)
        else:
            train_ids = [i for g in range(st.folds) if g != f for i in fold_ids[g]]
            if len(train_ids) > st.max_images:
                train_ids = list(rng.choice(train_ids, st.max_images, replace=False))
            t0, c0 = time.time(), time.process_time()
            data = load_training_images(collection, gt_field, classes, st.input_size, train_ids)
            for why, n in data.skipped.items():
                report.skip(f"train_{why}", n)
            state = train_fold(data, len(classes), st, model_dir, progress=(
                (lambda d, t, b=done_before: progress(b + d, total_steps)) if progress else None))
            os.makedirs(root, exist_ok=True)
            tmp = path + ".tmp"
            torch.save(state, tmp)
            os.replace(tmp, path)  # atomic: an interrupted run leaves no half checkpoint
            report.info["trained"].append({"fold": f, "images": len(data.ids), "path": path,
                                           "wall_s": round(time.time() - t0, 1),
                                           "cpu_s": round(time.process_time() - c0, 1)})
        done_before += total_steps // st.folds
        det = TorchYolox(model_dir, classes, state_dict=state, input_size=st.input_size,
                         device=st.device)
        rep = run_detector(collection.select(fold_ids[f]), model=det, label_field=label_field,
                           gt_field=gt_field, overwrite=overwrite or f > 0,
                           conf_threshold=conf_threshold, nms_iou=nms_iou)
        report.absorb(rep)
    report.fields = [label_field]
    return report
