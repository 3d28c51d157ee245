"""The box grader's trainable part and its checkpoints: the MLP head (quality + class), the
gradient-boosted quality model, the decision rule, and loading a trained grader (with the
cross-fitted fold graders beside it)."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ...parallel import one_thread
from . import SHIPPED, SHIPPED_CHECKPOINT
from .features import DEFAULT_GROUPS, YoloxFeatures, load_backbone

CHECKPOINT_KIND = "label-grader/boxgrader"
#: the backbone settings a prior must share with the grader it is blended into (same features)
_PRIOR_KEYS = ("backbone", "pool", "context", "groups", "hires_size", "zoom_size",
               "zoom_context", "detector_classes")
#: label-conditioned inputs of the quality head per view of the box (see :func:`label_inputs`)
NUM_LABEL_INPUTS = 3
#: written beside ``best.pt`` by a cross-fitted training: which fold each image was held out of
FOLDS_FILE = "folds.json"


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
class QualityPrior:
    """Another grader's tree quality model and threshold, fitted on the same features (and so on
    the same label inputs) as the grader it is averaged into (:func:`attach_prior`)."""

    quality_model: Any
    good_threshold: float
    checkpoint: str


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
    #: a quality model trained elsewhere on the same features whose probabilities are
    #: averaged with this one's (``config["quality_prior"]``; see :func:`attach_prior`)
    prior: QualityPrior | None = None

    @property
    def det_index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.config["detector_classes"])}

    def respell(self, labels: Sequence[str]) -> "BoxGrader":
        """Name the class head's and the detector's classes as ``labels`` (a field's distinct
        classes) spell them (``Person``, ``aeroplane``: :func:`grader.classes.dataset_spellings`),
        so those labels are looked up as the same classes; features and predictions are
        unchanged."""
        from ...classes import dataset_spellings, respell

        det = list(self.config.get("detector_classes") or [])
        spellings = dataset_spellings([*self.classes, *det], labels)
        if spellings:
            self.classes = respell(self.classes, spellings)
            self.config = {**self.config, "detector_classes": respell(det, spellings)}
        return self

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
        threshold = self.good_threshold
        if self.prior is not None and len(X):
            pq = 0.5 * (pq + quality_proba(self.prior.quality_model, X, lab))
            threshold = 0.5 * (threshold + self.prior.good_threshold)
        return {"p_quality": pq, "quality": decide(pq, threshold), "p_class": pc}

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
    grader = BoxGrader(head, backbone, list(state["classes"]), cfg,
                       float(state.get("good_threshold", 0.5)), meta, state.get("quality_model"))
    if cfg.get("quality_prior"):
        attach_prior(grader, cfg["quality_prior"])
    return grader


def attach_prior(grader: BoxGrader, prior: str) -> BoxGrader:
    """Blend ``prior``'s quality probabilities into ``grader``'s (an equal-weight average).

    ``prior``: a checkpoint path or ``"shipped"`` (:data:`SHIPPED_CHECKPOINT`). It must have been
    trained on the same features (:data:`_PRIOR_KEYS` of its config equal), so its tree quality
    model reads the very vectors and label inputs ``grader`` computes; only that model is kept
    (its head is not needed). A grader trained on a
    dataset's own (noisy) labels learns that dataset; the shipped one learned what a tight box
    looks like from COCO's ~900 clean labels, and on classes it never saw it still grades
    boxes from the detector's edges and evidence: on raccoon and Penn-Fudan with the class
    renamed (2 + 1 seeds, ad-hoc, docs/clipgrader.md) neither graded best everywhere and the
    average never fell below the weaker. A missing or incompatible prior is recorded in
    ``grader.meta["prior"]`` and not used."""
    path = SHIPPED_CHECKPOINT if prior == SHIPPED else prior
    if not os.path.isfile(path):
        grader.meta["prior"] = {"used": False, "why": f"not found: {path}"}
        return grader
    state = torch.load(path, map_location="cpu", weights_only=False)
    differ = feature_mismatch(state.get("config") or {}, grader.config)
    if state.get("kind") != CHECKPOINT_KIND or differ or state.get("quality_model") is None:
        why = (f"other features: {differ}" if differ else "no tree quality model")
        grader.meta["prior"] = {"used": False, "why": why, "checkpoint": path}
        return grader
    grader.prior = QualityPrior(state["quality_model"], float(state.get("good_threshold", 0.5)),
                                path)
    grader.meta["prior"] = {"used": True, "checkpoint": path}
    return grader


def _norm(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def feature_mismatch(config_a: dict[str, Any], config_b: dict[str, Any]) -> list[str]:
    """The feature settings (:data:`_PRIOR_KEYS`) two graders' configs differ in: empty when
    both read the very same feature vectors, so one feature pass serves both."""
    return [k for k in _PRIOR_KEYS if _norm(config_a.get(k)) != _norm(config_b.get(k))]


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
                                 st["quality_model"], grader.prior))
    return {p: int(k) for p, k in info["image_fold"].items()}, graders
