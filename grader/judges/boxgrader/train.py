"""The box grader: ClipGrader's recipe on a frozen pretrained detector's features.

Same synthesis as ClipGrader (``synth.py``: good = GT, bad = IoU 0.5-0.8, background = IoU <=
0.2), same image-level split, checkpoints and resume, same evaluation protocol; the backbone
is YOLOX-Nano (``features.py``, frozen: each box seen on the full image at two sizes and on
its own zoom crop; features cached) and the trainable part is:

- **quality** (good / bad / background), a gradient-boosted tree model (scikit-learn's
  ``HistGradientBoostingClassifier``) → ``boxgrader_p_bad`` (badloc), ``_p_background``
  (spurious), ``_p_not_good`` (any). On a coco128 image split it graded 3-way at 0.84 against
  0.78 for the MLP's own quality head on the same features;
- **class** (which of the training classes is in the box), a small MLP →
  ``boxgrader_p_other_class`` = 1 - p(labelled class) (swap). Its quality head is trained
  alongside (it picks the best epoch) and grades only checkpoints without the tree model.

Figures in docs/clipgrader.md (``bench/boxgrader.py``).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from ...boxes import BOX_DEGENERATE, rel_xywh_to_abs_xyxy, sanitize_rel_boxes
from ...classes import resolve_classes
from ...fields import read_detections, record_run, set_label_tag, write_label_attrs
from ...images import ImageReadError, ensure_metadata, load_rgb
from ...parallel import prefetch_map
from ...report import RunReport
from ..clipgrader.evaluate import EvalResult
from ..clipgrader.prompts import QUALITIES
from ..clipgrader.synth import SynthItem, split_by_image, synthesize
from ..clipgrader.train import TrainResult
from .features import DEFAULT_GROUPS, YoloxFeatures, load_backbone

TAG_BAD = "suspect:boxgrader_bad"
TAG_BACKGROUND = "suspect:boxgrader_background"
ATTRS = ("boxgrader_p_good", "boxgrader_p_bad", "boxgrader_p_background",
         "boxgrader_p_not_good", "boxgrader_quality", "boxgrader_class",
         "boxgrader_p_other_class")
CHECKPOINT_KIND = "label-grader/boxgrader"
#: the rate of bad/background boxes graded good that the threshold aims at on the validation
#: images: 4 %, so that new images stay within 5 % (on a coco128 split, aiming at 5 % gave
#: 0.036-0.069 on the held-out images, mean 0.056; 4 % gave mean 0.049 at the same accuracy)
DEFAULT_MAX_FPR = 0.04
#: label-conditioned inputs of the quality head per view of the box (see :func:`label_inputs`)
NUM_LABEL_INPUTS = 3


# --- features ------------------------------------------------------------------------------

def _decode(path: str):
    try:
        return load_rgb(path)
    except ImageReadError:
        return None


def extract_features(backbone: YoloxFeatures, groups: Sequence[tuple[str, np.ndarray]], *,
                     report: RunReport | None = None, num_workers: int = 1,
                     progress: Callable[[int, int], None] | None = None,
                     ) -> list[np.ndarray | None]:
    """Features of every box, grouped by image: ``groups`` = ``[(filepath, boxes_xyxy)]``.

    Each image is decoded (in ``num_workers`` threads, ahead of the model) and run through the
    detector once. Returns one ``(n_i, dim)`` array per group, or None for an unreadable image
    (counted as ``unreadable_image`` per box).
    """
    out: list[np.ndarray | None] = []
    paths = [g[0] for g in groups]
    with one_thread():  # roi_align on a few boxes: threads only add waiting
        for k, rgb in enumerate(prefetch_map(_decode, paths, workers=num_workers, prefetch=4)):
            boxes = groups[k][1]
            if rgb is None:
                if report is not None:
                    report.skip("unreadable_image", len(boxes))
                out.append(None)
            else:
                out.append(backbone.box_features(backbone.image_features(rgb), boxes))
            if progress is not None:
                progress(k + 1, len(groups))
    return out


def item_features(backbone: YoloxFeatures, items: Sequence[SynthItem], *,
                  report: RunReport | None = None, num_workers: int = 1,
                  progress: Callable[[int, int], None] | None = None,
                  ) -> tuple[np.ndarray, list[SynthItem]]:
    """Features of synthetic items (one detector pass per image); items on unreadable images drop."""
    by_path: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        by_path.setdefault(it.filepath, []).append(i)
    groups = [(p, np.array([items[i].box_xyxy for i in idx])) for p, idx in by_path.items()]
    feats = extract_features(backbone, groups, report=report, num_workers=num_workers,
                             progress=progress)
    X, kept = [], []
    for (p, idx), f in zip(by_path.items(), feats):
        if f is not None:
            X.append(f)
            kept += [items[i] for i in idx]
    if not X:
        return np.zeros((0, backbone.dim), np.float32), []
    return np.concatenate(X), kept


def label_inputs(X: np.ndarray, labels: Sequence[str], det_index: dict[str, int],
                 det_slices: Sequence[slice]) -> np.ndarray:
    """What the detector thinks of the *labelled* class on each box, per view (``det_slices``:
    where each view's class probabilities sit): its probability, that probability relative to
    the best class, and whether the detector knows the class at all (0 for a class outside its
    80; then the first two are 0 too)."""
    if not det_slices:  # backbone without the detector's class probabilities
        return np.zeros((len(X), NUM_LABEL_INPUTS), np.float32)
    idx = np.array([det_index.get(l, -1) for l in labels], dtype=np.int64).reshape(-1)
    known = idx >= 0
    out = []
    for sl in det_slices:
        P = X[:, sl]
        p = np.where(known, P[np.arange(len(X)), np.maximum(idx, 0)], 0.0)
        rel = p / np.maximum(P.max(1), 1e-6)
        out += [p, np.where(known, rel, 0.0), known.astype(np.float64)]
    return np.stack(out, 1).astype(np.float32)


# --- head ----------------------------------------------------------------------------------

@contextmanager
def one_thread():
    """Run the (tiny) head, the per-box feature maths and the tree model on one thread (torch's
    intra-op pool, numpy's BLAS, scikit-learn's OpenMP): on the busy 2-core machine here, two
    OpenMP threads spinning made a 234-example tree fit take 30 CPU-s against 3.5 on one; two OpenMP threads waiting at barriers
    made one epoch 17x slower in wall time (60 s vs 3.6 s), and a (12, 3549) x (3549, 80)
    float64 product (the detector's class evidence per box) took 75 ms on two OpenBLAS
    threads against 1 ms on one."""
    from threadpoolctl import threadpool_limits

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):   # BLAS and OpenMP (scikit-learn's trees) alike
            yield
    finally:
        torch.set_num_threads(n)


class BoxGraderHead(nn.Module):
    """Standardise → MLP trunk → quality head (3, also sees the label inputs) + class head."""

    def __init__(self, dim: int, num_classes: int, hidden: int = 256, dropout: float = 0.3,
                 input_dropout: float = 0.2, label_dim: int = NUM_LABEL_INPUTS):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.trunk = nn.Sequential(nn.Dropout(input_dropout), nn.Linear(dim, hidden), nn.GELU(),
                                   nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.GELU(),
                                   nn.Dropout(dropout))
        self.quality = nn.Linear(hidden + label_dim, 3)
        self.cls = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor, lab: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk((x - self.mean) / self.std)
        return self.quality(torch.cat([h, lab], 1)), self.cls(h)


@dataclass
class BoxGrader:
    """A trained head (and quality model) with its backbone settings, classes and threshold."""

    head: BoxGraderHead
    backbone: YoloxFeatures
    classes: list[str]
    config: dict[str, Any]
    good_threshold: float = 0.5
    meta: dict[str, Any] = field(default_factory=dict)
    #: the gradient-boosted quality model (None: the MLP's quality head grades)
    quality_model: Any = None

    @property
    def det_index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.config["detector_classes"])}

    def label_inputs(self, X: np.ndarray, labels: Sequence[str]) -> np.ndarray:
        return label_inputs(X, labels, self.det_index, self.backbone.det_class_slices())

    @torch.no_grad()
    def predict(self, X: np.ndarray, labels: Sequence[str]) -> dict[str, np.ndarray]:
        """Quality probabilities, decided quality, class probabilities for boxes' features."""
        self.head.eval()
        lab = self.label_inputs(X, labels)
        with one_thread():
            q, c = self.head(torch.from_numpy(X), torch.from_numpy(lab))
        pq = torch.softmax(q, 1).numpy().astype(np.float64)
        pc = torch.softmax(c, 1).numpy().astype(np.float64)
        if self.quality_model is not None and len(X):
            pq = quality_proba(self.quality_model, X, lab)
        return {"p_quality": pq, "quality": decide(pq, self.good_threshold), "p_class": pc}

    def save(self, path: str, extra: dict[str, Any] | None = None) -> None:
        state = {"kind": CHECKPOINT_KIND, "head": self.head.state_dict(),
                 "classes": self.classes, "config": self.config,
                 "good_threshold": self.good_threshold, "meta": self.meta,
                 "quality_model": self.quality_model}
        state.update(extra or {})
        tmp = path + ".tmp"
        torch.save(state, tmp)
        os.replace(tmp, path)


def quality_proba(model, X: np.ndarray, lab: np.ndarray) -> np.ndarray:
    """(N, 3) good/bad/background probabilities from the tree model (columns in that order
    even when a quality was absent from its training data)."""
    p = model.predict_proba(np.concatenate([X, lab], 1))
    out = np.zeros((len(X), 3))
    out[:, np.asarray(model.classes_, dtype=np.int64)] = p
    return out


def fit_quality_model(X: np.ndarray, lab: np.ndarray, q: np.ndarray, *, seed: int = 0,
                      max_iter: int = 200, max_leaf_nodes: int = 15, min_samples_leaf: int = 40,
                      learning_rate: float = 0.05, l2_regularization: float = 1.0,
                      max_bins: int = 255):
    """The quality model: gradient-boosted trees on the box features and label inputs, classes
    weighted equally (training has many more bad/background boxes than good). The defaults
    were chosen on a coco128 image split (docs/clipgrader.md)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    # A few hundred examples (a small dataset, or one cross-fitting fold of it) cannot fill
    # leaves of 40: the model would stay at the prior. Leaves shrink with the data below 1000.
    min_samples_leaf = min(min_samples_leaf, max(5, len(X) // 25))
    model = HistGradientBoostingClassifier(
        max_iter=max_iter, learning_rate=learning_rate, max_leaf_nodes=max_leaf_nodes,
        min_samples_leaf=min_samples_leaf, l2_regularization=l2_regularization,
        max_bins=max_bins, class_weight="balanced", random_state=seed)
    with one_thread():
        return model.fit(np.concatenate([X, lab], 1), q)


def decide(p_quality: np.ndarray, good_threshold: float) -> np.ndarray:
    """Quality index per row: good when ``p_good >= good_threshold``, else the likelier of
    bad / background. A threshold above 0.5 trades accuracy for fewer bad boxes passed as good."""
    other = 1 + p_quality[:, 1:].argmax(1)
    return np.where(p_quality[:, 0] >= good_threshold, 0, other)


def _build_head(config: dict[str, Any], backbone: YoloxFeatures, n_classes: int) -> BoxGraderHead:
    label_dim = NUM_LABEL_INPUTS * max(1, len(backbone.det_class_slices()))
    return BoxGraderHead(backbone.dim, n_classes, hidden=config["hidden"],
                         dropout=config["dropout"], input_dropout=config["input_dropout"],
                         label_dim=label_dim)


def _backbone(cfg: dict[str, Any], model_path: str | None) -> YoloxFeatures:
    # checkpoints from before the hires/zoom views have none of their keys: defaults apply
    views = {k: cfg[k] for k in ("hires_size", "zoom_size", "zoom_context") if k in cfg}
    return load_backbone(cfg["backbone"], model_path, pool=cfg["pool"], context=cfg["context"],
                         groups=tuple(cfg.get("groups", DEFAULT_GROUPS)), **views)


def load_boxgrader(checkpoint: str, model_path: str | None = None) -> BoxGrader:
    """Load a box grader checkpoint (``best.pt`` / ``last.pt`` of :func:`train_boxgrader`).

    ``model_path`` overrides where the detector ONNX file is (else the shipped one)."""
    if not os.path.isfile(checkpoint):
        raise FileNotFoundError(f"box grader checkpoint not found: {checkpoint}")
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    if not isinstance(state, dict) or state.get("kind") != CHECKPOINT_KIND:
        raise ValueError(f"{checkpoint} is not a box grader checkpoint")
    cfg = state["config"]
    backbone = _backbone(cfg, model_path)
    head = _build_head(cfg, backbone, len(state["classes"]))
    head.load_state_dict(state["head"])
    meta = dict(state.get("meta", {}))
    meta["checkpoint"] = os.path.abspath(checkpoint)
    return BoxGrader(head, backbone, list(state["classes"]), cfg,
                     float(state.get("good_threshold", 0.5)), meta, state.get("quality_model"))


# --- training ------------------------------------------------------------------------------

@dataclass
class BoxTrainResult(TrainResult):
    """Checkpoints, history and timing of one training run (ClipGrader's result, plus the
    chosen ``good_threshold`` and the time spent per phase)."""

    good_threshold: float = 0.5
    seconds: dict[str, float] = field(default_factory=dict)
    #: CPU seconds of this process per phase (steadier than wall time on a shared machine)
    cpu_seconds: dict[str, float] = field(default_factory=dict)


def _targets(items: Sequence[SynthItem], index: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    q = np.array([QUALITIES.index(it.quality) for it in items], dtype=np.int64)
    c = np.array([index[it.label] for it in items], dtype=np.int64)
    return q, c


def balanced_accuracy(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean per-quality recall: the accuracy of the evaluation protocol's 1:1:1 mix, whatever
    the mix of ``truth`` (training synthesises many more bad/background boxes than good)."""
    return float(np.mean([(pred[truth == k] == k).mean() for k in range(3) if (truth == k).any()]))


def choose_good_threshold(p_quality: np.ndarray, truth: np.ndarray, max_fpr: float) -> float:
    """The ``good_threshold`` with the best balanced accuracy among those whose rate of bad or
    background graded good is at most ``max_fpr`` on (``p_quality``, ``truth``). It may be
    below 0.5: a grader that rarely passes a bad box as good can afford to pass more good ones."""
    best, best_acc = None, -1.0
    neg = truth != 0
    for t in np.linspace(0.01, 0.99, 99):
        pred = decide(p_quality, t)
        fpr = float((pred[neg] == 0).mean()) if neg.any() else 0.0
        acc = balanced_accuracy(pred, truth)
        if fpr <= max_fpr and acc > best_acc:
            best, best_acc = float(t), acc
    return 0.99 if best is None else best


def _feature_cache(out_dir: str, key: dict[str, Any]) -> str:
    h = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return os.path.join(out_dir, f"features_{h}.npz")


#: the features of the training's good boxes (the labels themselves), kept beside ``best.pt``:
#: grading those labels afterwards reads them instead of running the detector again
BOX_FEATURES_FILE = "box_features.npz"


def _backbone_key(bb: YoloxFeatures) -> str:
    """What a box's features depend on besides its image and box: the backbone's settings."""
    return json.dumps([bb.name, list(bb.groups), bb.pool, bb.context, bb.size, bb.hires_size,
                       bb.zoom_size, bb.zoom_context])


def _box_keys(filepaths: Sequence[str], boxes: np.ndarray) -> list[tuple[str, tuple]]:
    # boxes to 1/100 px: the same label read twice gives the same key, float noise aside
    r = np.round(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), 2)
    return list(zip(filepaths, map(tuple, r.tolist())))


def save_box_features(path: str, bb: YoloxFeatures, filepaths: Sequence[str],
                      boxes: Sequence[Sequence[float]], X: np.ndarray) -> None:
    """Keep features of boxes (absolute xyxy) on images for :func:`grade_boxgrader` to reuse."""
    np.savez(path + ".tmp.npz", filepaths=np.array(list(filepaths), dtype=str),
             boxes=np.asarray(boxes, dtype=np.float64).reshape(-1, 4), X=X,
             backbone=np.array(_backbone_key(bb)))
    os.replace(path + ".tmp.npz", path)


def load_box_features(path: str, bb: YoloxFeatures) -> dict[tuple[str, tuple], np.ndarray]:
    """``{(filepath, box): features}`` from :func:`save_box_features`; empty when the file is
    missing or was written with other backbone settings."""
    if not os.path.isfile(path):
        return {}
    z = np.load(path)
    if str(z["backbone"]) != _backbone_key(bb):
        return {}
    return dict(zip(_box_keys(z["filepaths"].tolist(), z["boxes"]), z["X"]))


def _run_epoch(head: BoxGraderHead, opt, tr: np.ndarray, Xt: torch.Tensor, lab_t: torch.Tensor,
               q_t: torch.Tensor, c_t: torch.Tensor, qw: torch.Tensor, cfg: dict[str, Any],
               epoch: int) -> float:
    """One epoch over the examples ``tr`` (seeded order); returns the mean training loss. The
    class head learns from good and bad examples only (a background box holds no object)."""
    head.train()
    g = torch.Generator().manual_seed(cfg["seed"] * 1000 + epoch)
    perm = torch.from_numpy(tr)[torch.randperm(len(tr), generator=g)]
    tot, n = 0.0, 0
    for s in range(0, len(perm), cfg["batch_size"]):
        b = perm[s:s + cfg["batch_size"]]
        ql, cl = head(Xt[b], lab_t[b])
        loss = nn.functional.cross_entropy(ql, q_t[b], weight=qw)
        has_obj = q_t[b] != QUALITIES.index("background")
        if has_obj.any():
            loss = loss + cfg["class_weight"] * nn.functional.cross_entropy(
                cl[has_obj], c_t[b][has_obj])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        tot += loss.item() * len(b)
        n += len(b)
    return tot / max(n, 1)


def _val_record(grader: "BoxGrader", X: np.ndarray, items: Sequence[SynthItem], va: np.ndarray,
                q_all: np.ndarray, c_all: np.ndarray) -> dict[str, float]:
    """Balanced 3-way accuracy and class accuracy on the validation examples ``va``."""
    if not len(va):
        return {}
    p = grader.predict(X[va], [items[i].label for i in va])
    obj = q_all[va] != QUALITIES.index("background")
    return {"val_accuracy": balanced_accuracy(p["quality"], q_all[va]),
            "val_class_accuracy": float((p["p_class"][obj].argmax(1) == c_all[va][obj]).mean())}


#: written beside ``best.pt`` by a cross-fitted training: which fold each image was held out of
FOLDS_FILE = "folds.json"


def _crossfit(out_dir: str, grader: BoxGrader, X: np.ndarray, lab_all: np.ndarray,
              kept: Sequence[SynthItem], q_all: np.ndarray, folds: int,
              progress: Callable[[str, int, int], None] | None = None) -> None:
    """Cross-fitting of the quality model: the images are split into ``folds`` groups; for
    each, a quality model is fitted on the other images' examples (features computed once)
    and its ``good_threshold`` chosen on some of them, saved as ``fold_<k>.pt``;
    :data:`FOLDS_FILE` maps each image (file path) to the fold that did not see it. Grading
    the training labels then grades each image's quality with a model that never learned its
    (possibly wrong) labels as good. The class head stays the full grader's: on coco128 with
    renamed classes, swap AUROC fell from 0.93 to 0.82 with half-data class heads, while
    badloc rose from 0.84 to 0.88 and spurious from 0.86 to 0.98 with out-of-fold quality
    (docs/clipgrader.md)."""
    cfg = grader.config
    sids = sorted({it.sample_id for it in kept})
    rng = np.random.default_rng([cfg["seed"], 7])
    rng.shuffle(sids)
    fold_of = {sid: k % folds for k, sid in enumerate(sids)}
    img_fold = np.array([fold_of[it.sample_id] for it in kept])
    qm_opts = dict(cfg.get("quality_model") or {})
    qm_opts.pop("off", None)
    for k in range(folds):
        idx = np.nonzero(img_fold != k)[0]
        tr_items, va_items = split_by_image([kept[i] for i in idx], cfg["val_fraction"],
                                            cfg["seed"] + 1 + k)
        va_sids = {it.sample_id for it in va_items}
        is_va = np.array([kept[i].sample_id in va_sids for i in idx], dtype=bool)
        tr, va = idx[~is_va], idx[is_va]
        qm = fit_quality_model(X[tr], lab_all[tr], q_all[tr], seed=cfg["seed"], **qm_opts)
        thr = (choose_good_threshold(quality_proba(qm, X[va], lab_all[va]), q_all[va],
                                     cfg["max_fpr"]) if len(va) else grader.good_threshold)
        torch.save({"kind": CHECKPOINT_KIND + "/fold", "fold": k, "quality_model": qm,
                    "good_threshold": thr}, os.path.join(out_dir, f"fold_{k}.pt"))
        if progress is not None:
            progress("crossfit", k + 1, folds)
    with open(os.path.join(out_dir, FOLDS_FILE), "w") as f:
        json.dump({"folds": folds, "image_fold": {it.filepath: int(k)
                                                  for it, k in zip(kept, img_fold)}}, f)


def train_boxgrader(collection, gt_field: str = "ground_truth", out_dir: str = "boxgrader_ckpt",
                    *, classes: Sequence[str] | None = None, backbone: str = "yolox-nano",
                    model_path: str | None = None, features: Sequence[str] = DEFAULT_GROUPS,
                    pool: int = 3, context: float = 2.0, hires_size: int = 832,
                    zoom_size: int = 256, zoom_context: float = 2.0,
                    per_object: tuple[int, int, int] = (1, 4, 4), good_iou: float | None = None,
                    min_size: float = 8.0,
                    epochs: int = 15, batch_size: int = 256, lr: float = 1e-3,
                    weight_decay: float = 1e-2, hidden: int = 256, dropout: float = 0.3,
                    input_dropout: float = 0.2, class_weight: float = 0.5,
                    quality_model: dict[str, Any] | None = None,
                    val_fraction: float = 0.15, max_fpr: float = DEFAULT_MAX_FPR, seed: int = 0,
                    resume: bool = False, num_workers: int = 1, crossfit: int = 0,
                    progress: Callable[[str, int, int], None] | None = None) -> BoxTrainResult:
    """Train the box grader's head on examples synthesised from ``gt_field``.

    ``per_object`` = (good, bad, background) examples per GT object; bad and background are
    several per object since the backbone is frozen and coco128-sized data has few boxes (4
    each graded as well as 8 on a coco128 split, at half the zoom passes). The three kinds
    weigh equally. The MLP's class head learns from good and bad examples (both still hold
    the object). Features are computed once (one pass per image and view, one zoom pass per
    box) and cached in ``out_dir`` (``features_<key>.npz``); the split is by image; every
    epoch writes ``last.pt`` (head, optimizer, history) and ``best.pt`` when validation
    accuracy improves; ``resume`` continues from ``last.pt``. Then the quality model
    (:func:`fit_quality_model`; ``quality_model`` overrides its settings, ``{"off": True}``
    leaves the MLP's quality head grading) is fitted on the training images and
    ``good_threshold`` is chosen on the validation images so that at most ``max_fpr`` of
    bad/background boxes are graded good; both go into ``best.pt``.

    ``crossfit`` >= 2: also fit that many quality models, each on the images the others hold
    out (see :func:`_crossfit`); :func:`grade_boxgrader` then grades each training image's
    quality with the one that did not see it (needs the tree quality model).
    """
    progress = progress or (lambda stage, d, t: None)
    torch.manual_seed(seed)
    os.makedirs(out_dir, exist_ok=True)
    last_path, best_path = os.path.join(out_dir, "last.pt"), os.path.join(out_dir, "best.pt")
    report = RunReport(judge="boxgrader_train")
    state = None
    if resume and os.path.isfile(last_path):
        state = torch.load(last_path, map_location="cpu", weights_only=False)
        cfg = dict(state["config"])
        classes = list(state["classes"])
    else:
        classes = list(resolve_classes(collection, [gt_field], classes))
        cfg = dict(backbone=backbone, pool=pool, context=context, hires_size=hires_size,
                   zoom_size=zoom_size, zoom_context=zoom_context, per_object=list(per_object),
                   quality_model=dict(quality_model or {}),
                   good_iou=good_iou, groups=list(features),
                   min_size=min_size, epochs=epochs, batch_size=batch_size, lr=lr,
                   weight_decay=weight_decay, hidden=hidden, dropout=dropout,
                   input_dropout=input_dropout, class_weight=class_weight,
                   val_fraction=val_fraction, max_fpr=max_fpr, seed=seed, gt_field=gt_field)
    cfg["epochs"] = epochs  # a resumed run may be asked to go further
    bb = _backbone(cfg, model_path)
    cfg["detector_classes"] = list(bb.classes)
    index = {c: i for i, c in enumerate(classes)}

    t0, c0 = time.perf_counter(), time.process_time()
    items = synthesize(collection, gt_field, min_size=cfg["min_size"], seed=cfg["seed"],
                       classes=classes, per_object=tuple(cfg["per_object"]),
                       good_iou=cfg.get("good_iou"), report=report)
    if not items:
        raise ValueError(f"no training examples could be made from '{gt_field}' "
                         f"(skips: {dict(report.skipped)}); lower min_size or check the field")
    # keyed by image path and box (not label ids, which change when a dataset is re-imported)
    cache = _feature_cache(out_dir, {"boxes": [(it.filepath, it.quality, it.box_xyxy)
                                               for it in items], "n": len(items),
                                     "bb": [cfg["backbone"], cfg["pool"], cfg["context"],
                                            cfg["groups"], bb.size, bb.hires_size,
                                            bb.zoom_size, bb.zoom_context]})
    if os.path.isfile(cache):
        z = np.load(cache)
        X, keep = z["X"], z["keep"]
        kept = [items[i] for i in keep]
    else:
        X, kept = item_features(bb, items, report=report, num_workers=num_workers,
                                progress=lambda d, t: progress("features", d, t))
        pos = {id(it): i for i, it in enumerate(items)}
        np.savez(cache, X=X, keep=np.array([pos[id(it)] for it in kept], dtype=np.int64))
    t_feat, c_feat = time.perf_counter() - t0, time.process_time() - c0
    good = [i for i, it in enumerate(kept) if it.quality == QUALITIES[0]]
    save_box_features(os.path.join(out_dir, BOX_FEATURES_FILE), bb,
                      [kept[i].filepath for i in good], [kept[i].box_xyxy for i in good], X[good])
    train_items, val_items = split_by_image(kept, cfg["val_fraction"], cfg["seed"])
    val_ids = {it.sample_id for it in val_items}
    is_val = np.array([it.sample_id in val_ids for it in kept])
    q_all, c_all = _targets(kept, index)
    tr, va = np.nonzero(~is_val)[0], np.nonzero(is_val)[0]
    report.info.update({"train_examples": int(len(tr)), "val_examples": int(len(va))})

    head = _build_head(cfg, bb, len(classes))
    grader = BoxGrader(head, bb, classes, cfg, 0.5, {"trained_on_field": gt_field})
    lab_all = grader.label_inputs(X, [it.label for it in kept])
    Xt = torch.from_numpy(X)
    head.mean.copy_(Xt[tr].mean(0))
    head.std.copy_(Xt[tr].std(0).clamp_min(1e-3))
    opt = torch.optim.AdamW(head.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    history: list[dict[str, float]] = []
    start, best_metric = 0, -np.inf
    if state is not None:
        head.load_state_dict(state["head"])
        ts = state["train_state"]
        opt.load_state_dict(ts["optimizer"])
        history, start, best_metric = list(ts["history"]), int(ts["epoch"]) + 1, float(ts["best_metric"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs, 1),
                                                       last_epoch=start - 1 if start else -1)
    counts = np.bincount(q_all[tr], minlength=3).astype(np.float64)
    qw = torch.tensor(counts.sum() / (3 * np.maximum(counts, 1)), dtype=torch.float32)
    q_t, c_t, lab_t = torch.from_numpy(q_all), torch.from_numpy(c_all), torch.from_numpy(lab_all)
    t1, c1 = time.perf_counter(), time.process_time()
    with one_thread():  # the head is tiny: one thread (see one_thread)
        for epoch in range(start, epochs):
            rec = {"epoch": epoch, "train_loss": _run_epoch(head, opt, tr, Xt, lab_t, q_t, c_t,
                                                            qw, cfg, epoch)}
            sched.step()
            rec.update(_val_record(grader, X, kept, va, q_all, c_all))
            metric = rec["val_accuracy"] if len(va) else -rec["train_loss"]
            history.append(rec)
            progress("train", epoch + 1, epochs)
            if metric > best_metric:
                best_metric = metric
                grader.save(best_path, extra={"history": history})
            grader.save(last_path, extra={"train_state": {
                "optimizer": opt.state_dict(), "epoch": epoch, "history": history,
                "best_metric": float(best_metric)}})
    # The best weights get the quality model (fitted on the training images) and the decision
    # threshold (chosen on the validation images); best.pt is written once more with both.
    t_head, c_head = time.perf_counter() - t1, time.process_time() - c1
    qm_opts = dict(cfg.get("quality_model") or {})
    best_grader = None
    if os.path.isfile(best_path):
        best = load_boxgrader(best_path, model_path)
        if not qm_opts.pop("off", False):
            best.quality_model = fit_quality_model(X[tr], lab_all[tr], q_all[tr],
                                                   seed=cfg["seed"], **qm_opts)
        if len(va):
            p = best.predict(X[va], [kept[i].label for i in va])
            best.good_threshold = choose_good_threshold(p["p_quality"], q_all[va], cfg["max_fpr"])
        st = torch.load(best_path, map_location="cpu", weights_only=False)
        best.meta.pop("checkpoint", None)
        best.save(best_path, extra={"history": st.get("history", history)})
        grader.good_threshold = best.good_threshold
        best_grader = best
        progress("quality_model", 1, 1)
    t_train, c_train = time.perf_counter() - t1, time.process_time() - c1
    t2, c2 = time.perf_counter(), time.process_time()
    if crossfit >= 2 and best_grader is not None and best_grader.quality_model is not None:
        _crossfit(out_dir, best_grader, X, lab_all, kept, q_all, int(crossfit), progress)
    elif os.path.isfile(os.path.join(out_dir, FOLDS_FILE)):
        os.remove(os.path.join(out_dir, FOLDS_FILE))  # stale folds of an earlier run
    t_cross, c_cross = time.perf_counter() - t2, time.process_time() - c2
    with open(os.path.join(out_dir, "history.json"), "w") as f:
        json.dump(history, f, indent=1)
    return BoxTrainResult(
        out_dir=os.path.abspath(out_dir),
        best_checkpoint=os.path.abspath(best_path) if os.path.isfile(best_path) else None,
        last_checkpoint=os.path.abspath(last_path), history=history, num_train=int(len(tr)),
        num_val=int(len(va)), classes=classes, good_threshold=grader.good_threshold,
        seconds={"features": round(t_feat, 3), "train": round(t_train, 3),
                 "head": round(t_head, 3), "quality_model": round(t_train - t_head, 3),
                 "crossfit": round(t_cross, 3)},
        cpu_seconds={"features": round(c_feat, 3), "head": round(c_head, 3),
                     "quality_model": round(c_train - c_head, 3), "crossfit": round(c_cross, 3)},
        report=report.to_dict())


# --- evaluation (the ClipGrader protocol) --------------------------------------------------

def evaluate_boxgrader(collection, gt_field: str = "ground_truth", *, checkpoint: str | None = None,
                       grader: BoxGrader | None = None, min_size: float = 20.0, seed: int = 12345,
                       num_workers: int = 1,
                       progress: Callable[[int, int], None] | None = None) -> EvalResult:
    """One good, bad and background example per GT object of ``collection`` (held-out images),
    graded; same figures as :func:`evaluate_clipgrader` (accuracy, FPR, confusion, per class)."""
    if grader is None:
        if checkpoint is None:
            raise ValueError("pass checkpoint= or grader=")
        grader = load_boxgrader(checkpoint)
    report = RunReport(judge="boxgrader_eval")
    items = synthesize(collection, gt_field, min_size=min_size, seed=seed, report=report)
    if not items:
        raise ValueError(f"no evaluation examples could be made from '{gt_field}' "
                         f"(skips: {dict(report.skipped)})")
    X, kept = item_features(grader.backbone, items, report=report, num_workers=num_workers,
                            progress=progress)
    p = grader.predict(X, [it.label for it in kept])
    truth = np.array([QUALITIES.index(it.quality) for it in kept])
    conf = np.zeros((3, 3), dtype=np.int64)
    np.add.at(conf, (truth, p["quality"]), 1)
    per_n: Counter = Counter(it.label for it in kept)
    per_ok: Counter = Counter(it.label for it, t, q in zip(kept, truth, p["quality"]) if t == q)
    n, negatives = int(conf.sum()), int(conf[1:].sum())
    return EvalResult(
        accuracy=float(np.trace(conf) / max(n, 1)),
        false_positive_rate=float(conf[1:, 0].sum() / max(negatives, 1)),
        confusion=conf.tolist(),
        per_class={c: {"n": per_n[c], "accuracy": per_ok[c] / per_n[c]} for c in per_n},
        num_examples=n, model=grader.meta.get("checkpoint") or "boxgrader",
        report=report.to_dict())


# --- grading -------------------------------------------------------------------------------

def _load_folds(grader: BoxGrader) -> tuple[dict[str, int], list[BoxGrader]]:
    """The cross-fitted quality models beside ``grader``'s checkpoint as graders sharing its
    backbone and class head: ``({filepath: fold}, graders)``; empty where there are none."""
    ck = grader.meta.get("checkpoint")
    path = os.path.join(os.path.dirname(ck), FOLDS_FILE) if ck else ""
    if not os.path.isfile(path):
        return {}, []
    with open(path) as f:
        info = json.load(f)
    graders = []
    for k in range(int(info["folds"])):
        st = torch.load(os.path.join(os.path.dirname(ck), f"fold_{k}.pt"), map_location="cpu",
                        weights_only=False)
        graders.append(BoxGrader(grader.head, grader.backbone, grader.classes, grader.config,
                                 float(st["good_threshold"]), {**grader.meta, "fold": k},
                                 st["quality_model"]))
    return {p: int(k) for p, k in info["image_fold"].items()}, graders


def grade_boxgrader(collection, field: str = "ground_truth", *, checkpoint: str | None = None,
                    grader: BoxGrader | None = None, model_path: str | None = None,
                    bad_threshold: float = 0.5, background_threshold: float = 0.5,
                    num_workers: int = 1, progress: Callable[[int, int], None] | None = None,
                    run_key: str = "boxgrader", feature_cache: str | bool = True,
                    crossfit: bool = True) -> RunReport:
    """Grade every detection of ``field`` with a trained box grader; write ``boxgrader_*``.

    Per detection: ``boxgrader_p_good``, ``_p_bad``, ``_p_background`` (sum to 1),
    ``_p_not_good`` (1 - p_good), ``_quality`` (decided with the checkpoint's
    ``good_threshold``), ``_class`` (the class head's pick) and ``_p_other_class`` (1 - the class
    head's probability of the labelled class; None for a class the grader was not trained on,
    counted ``unknown_class``). Tags ``suspect:boxgrader_bad`` / ``suspect:boxgrader_background``
    past the thresholds. Labels that cannot be scored (unreadable image, degenerate box,
    missing metadata) get None and are counted; labels and boxes are never changed.

    ``feature_cache``: a :data:`BOX_FEATURES_FILE` to read boxes' features from (same image
    path and box, same backbone settings) instead of running the detector; ``True`` (default)
    uses the one beside the checkpoint, which holds the features of the labels the grader was
    trained on, so grading those labels right after training costs no detector pass for them.
    Only the images with a box not in it are read. ``False``: always run the detector.

    ``crossfit``: where the checkpoint was trained with ``crossfit`` folds, grade each image
    the training saw with the fold grader that held it out (other images: the full grader).
    """
    if grader is None:
        if checkpoint is None:
            raise ValueError("grade_boxgrader needs checkpoint= (train one with train_boxgrader)")
        grader = load_boxgrader(checkpoint, model_path)
    if feature_cache is True:
        ck = grader.meta.get("checkpoint")
        feature_cache = os.path.join(os.path.dirname(ck), BOX_FEATURES_FILE) if ck else False
    cached = load_box_features(feature_cache, grader.backbone) if feature_cache else {}
    fold_of, fold_graders = _load_folds(grader) if crossfit else ({}, [])
    report = RunReport(judge="boxgrader")
    ensure_metadata(collection, report)
    table = read_detections(collection, field)
    report.samples_seen = len(table)
    groups, keys = [], []
    for i in range(len(table)):
        W, H = table.widths[i], table.heights[i]
        if not table.ids[i]:
            continue
        if not W or not H:
            report.skip("missing_metadata_labels", len(table.ids[i]))
            continue
        clipped, status = sanitize_rel_boxes(table.boxes[i])
        ok = [j for j, st in enumerate(status) if st != BOX_DEGENERATE]
        report.skip("degenerate_box", len(status) - len(ok))
        if ok:
            groups.append((table.filepaths[i], rel_xywh_to_abs_xyxy(clipped[ok], W, H)))
            keys.append([(table.sample_ids[i], table.ids[i][j], table.labels[i][j]) for j in ok])
    t0 = time.perf_counter()
    feats: list[np.ndarray | None] = [None] * len(groups)
    todo = []
    for g, (path, boxes) in enumerate(groups):
        rows = [cached.get(k) for k in _box_keys([path] * len(boxes), boxes)] if cached else [None]
        if all(r is not None for r in rows):
            feats[g] = np.stack(rows).astype(np.float32)
        else:
            todo.append(g)
    for g, f in zip(todo, extract_features(grader.backbone, [groups[g] for g in todo],
                                           report=report, num_workers=num_workers,
                                           progress=progress)):
        feats[g] = f
    report.info["images_from_feature_cache"] = len(groups) - len(todo)
    report.info["images_by_fold_grader"] = 0
    cindex = {c: i for i, c in enumerate(grader.classes)}
    scores: dict[tuple[str, str], dict[str, Any]] = {}
    n_fold = 0
    for (path, _), ks, X in zip(groups, keys, feats):
        if X is None:
            continue
        fk = fold_of.get(path)
        n_fold += fk is not None
        p = (grader if fk is None else fold_graders[fk]).predict(X, [k[2] for k in ks])
        for r, (sid, lid, lab) in enumerate(ks):
            pq, pc = p["p_quality"][r], p["p_class"][r]
            known = lab in cindex
            if not known:
                report.skip("unknown_class")
            scores[(sid, lid)] = {
                "boxgrader_p_good": float(pq[0]), "boxgrader_p_bad": float(pq[1]),
                "boxgrader_p_background": float(pq[2]), "boxgrader_p_not_good": float(1 - pq[0]),
                "boxgrader_quality": QUALITIES[int(p["quality"][r])],
                "boxgrader_class": grader.classes[int(pc.argmax())],
                "boxgrader_p_other_class": float(1 - pc[cindex[lab]]) if known else None}
    report.info["images_by_fold_grader"] = n_fold
    t1 = time.perf_counter()
    all_keys = [(sid, lid) for sid, ids in zip(table.sample_ids, table.ids) for lid in ids]
    write_label_attrs(collection, field,
                      {a: {k: scores.get(k, {}).get(a) for k in all_keys} for a in ATTRS})
    bad = [k[1] for k, r in scores.items() if r["boxgrader_p_bad"] >= bad_threshold]
    bg = [k[1] for k, r in scores.items() if r["boxgrader_p_background"] >= background_threshold]
    report.tagged[TAG_BAD] = set_label_tag(collection, field, TAG_BAD, bad)
    report.tagged[TAG_BACKGROUND] = set_label_tag(collection, field, TAG_BACKGROUND, bg)
    report.labels_scored = len(scores)
    report.samples_scored = len({k[0] for k in scores})
    report.fields = [f"{field}.detections.{a}" for a in ATTRS]
    report.info.update({"checkpoint": grader.meta.get("checkpoint"),
                        "seconds": {"features_and_score": round(t1 - t0, 3),
                                    "write": round(time.perf_counter() - t1, 3)},
                        "quality_counts": dict(Counter(r["boxgrader_quality"]
                                                       for r in scores.values()))})
    record_run(collection, run_key, {
        "method": "boxgrader", "field": field, "checkpoint": grader.meta.get("checkpoint"),
        "backbone": grader.config["backbone"], "bad_threshold": bad_threshold,
        "background_threshold": background_threshold,
        "good_threshold": grader.good_threshold}, report.to_dict())
    return report
