"""The ClipGrader model: an open_clip CLIP scoring rendered box crops against quality prompts.

Weights come from (a) an open_clip architecture name plus ``pretrained`` tag (downloaded by
open_clip where the network allows, or found in its cache), (b) a local open_clip weights file
(``pretrained=/path/to/file``), or (c) a ClipGrader checkpoint written by fine-tuning
(``checkpoint=``), which is self-contained. ``pretrained=None`` gives random weights (tests,
benchmarks only).
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.utils.parametrize as parametrize
from PIL import Image

from .prompts import BACKGROUND, BAD, GOOD, class_prompts

# The paper's best backbone; "ViT-B-32" + "openai" is the cheap option (about 12 points lower).
DEFAULT_MODEL = "ViT-L-14-336"
DEFAULT_PRETRAINED = "openai"
CHECKPOINT_FORMAT = "clipgrader-v1"

TINY_MODEL = "lg-tiny-clip"
# A few-layer CLIP small enough to build and train in tests on CPU in well under a second.
TINY_CONFIG: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


# "bf16"/"fp16": weights stay fp32, the image tower runs under torch.autocast (GPU speed-up).
_AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class ClipWeightsError(RuntimeError):
    """CLIP weights could not be found or loaded; the message says what to provide."""


def register_tiny_config(name: str = TINY_MODEL, config: dict[str, Any] | None = None) -> str:
    """Make a tiny open_clip architecture available under ``name`` (random weights, no download)."""
    import open_clip.factory as ocf

    # open_clip only scans its own config folder; its registry dict is the one public-enough hook.
    ocf._MODEL_CONFIGS[name] = dict(config or TINY_CONFIG)
    return name


def _weights_help(model_name: str, pretrained: str | None) -> str:
    return (
        f"Provide one of: (1) an open_clip model name + pretrained tag whose weights are in the "
        f"open_clip / Hugging Face cache or downloadable from this machine (e.g. model="
        f"'{DEFAULT_MODEL}', pretrained='{DEFAULT_PRETRAINED}', or the cheaper 'ViT-B-32' + "
        f"'openai'); (2) a local open_clip weights file as pretrained='/path/to/weights.pt' with "
        f"the matching model name (now model='{model_name}'); or (3) a ClipGrader checkpoint "
        f"from train_clipgrader as checkpoint='/path/to/best.pt'."
    )


def _create_model(model_name: str, pretrained: str | None, device: str, cache_dir: str | None):
    import open_clip

    if model_name == TINY_MODEL:
        register_tiny_config()
    if model_name not in open_clip.list_models():
        raise ClipWeightsError(
            f"unknown open_clip architecture '{model_name}'. Known include: ViT-B-32, ViT-B-16, "
            f"ViT-L-14, ViT-L-14-336 (see open_clip.list_models()).")
    if pretrained and not os.path.isfile(pretrained) and \
            pretrained not in open_clip.list_pretrained_tags_by_model(model_name):
        if os.sep in pretrained or pretrained.endswith((".pt", ".bin", ".safetensors", ".pth")):
            raise ClipWeightsError(f"weights file not found: {pretrained}. "
                                   + _weights_help(model_name, pretrained))
        raise ClipWeightsError(
            f"'{pretrained}' is not a pretrained tag of '{model_name}' (known: "
            f"{open_clip.list_pretrained_tags_by_model(model_name)}). "
            + _weights_help(model_name, pretrained))
    try:
        model = open_clip.create_model(model_name, pretrained=pretrained or None, device=device,
                                       cache_dir=cache_dir)
    except Exception as e:  # download/cache failures surface as assorted exception types
        raise ClipWeightsError(
            f"could not load weights for model='{model_name}' pretrained='{pretrained}': {e}. "
            + _weights_help(model_name, pretrained)) from e
    return model, open_clip.get_tokenizer(model_name)


class LoRA(nn.Module):
    """Low-rank update ``W + (alpha / r) * B @ A`` applied as a weight parametrization."""

    def __init__(self, out_features: int, in_features: int, rank: int, alpha: float):
        super().__init__()
        self.lora_A = nn.Parameter(torch.randn(rank, in_features) / np.sqrt(in_features))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank))
        self.scale = alpha / rank

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + self.scale * (self.lora_B @ self.lora_A).to(weight.dtype)


def apply_lora(visual: nn.Module, rank: int, alpha: float | None = None) -> list[nn.Parameter]:
    """Add LoRA (rank ``rank``) to every attention and MLP weight of the vision transformer.

    The original weights are frozen; returns the new trainable LoRA parameters. Uses weight
    parametrizations so ``nn.MultiheadAttention`` (which reads ``in_proj_weight`` directly)
    sees the adapted weight.
    """
    alpha = float(alpha if alpha is not None else rank)
    root = getattr(visual, "transformer", visual)
    params: list[nn.Parameter] = []
    targets = []
    for mod in root.modules():
        if isinstance(mod, nn.MultiheadAttention) and mod.in_proj_weight is not None:
            targets.append((mod, "in_proj_weight"))
        elif isinstance(mod, nn.Linear):
            targets.append((mod, "weight"))
    for mod, name in targets:
        w = getattr(mod, name)
        w.requires_grad_(False)
        lora = LoRA(w.shape[0], w.shape[1], rank, alpha).to(w.device)
        parametrize.register_parametrization(mod, name, lora)
        params += [lora.lora_A, lora.lora_B]
    if not params:
        raise ValueError("no attention/linear weights found in the vision encoder for LoRA")
    return params


class ClipGrader:
    """A CLIP model plus the prompt machinery to grade rendered box crops.

    ``probabilities`` returns, for each crop and its labelled class, ``p_good``, ``p_bad``,
    ``p_background`` (softmax over that class's two prompts and background) or, with
    ``all_classes``, a softmax over every class's prompts plus background, from which the
    predicted class is also read.
    """

    def __init__(self, model: nn.Module, tokenizer, *, model_name: str, pretrained: str | None,
                 device: str = "cpu", lora_rank: int = 0, lora_alpha: float | None = None,
                 meta: dict[str, Any] | None = None, precision: str = "fp32"):
        if precision not in _AUTOCAST:
            raise ValueError(f"precision must be one of {sorted(_AUTOCAST)}, got '{precision}'")
        self.precision = precision
        self.model = model
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.pretrained = pretrained
        self.device = torch.device(device)
        self.lora_rank = lora_rank
        self.lora_alpha = lora_alpha
        self.meta = dict(meta or {})
        size = model.visual.image_size
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
        mean = cfg.get("mean", (0.48145466, 0.4578275, 0.40821073))
        std = cfg.get("std", (0.26862954, 0.26130258, 0.27577711))
        self._mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1) * 255.0
        self._std = torch.tensor(std, device=self.device).view(1, 3, 1, 1) * 255.0
        self._text_cache: dict[tuple[str, ...], torch.Tensor] = {}

    # -- inputs --------------------------------------------------------------------------------
    @staticmethod
    def to_uint8_batch(crops: Sequence[Image.Image]) -> torch.Tensor:
        """Stack equally sized RGB crops into a ``(B, 3, S, S)`` uint8 tensor (CPU)."""
        return ClipGrader.hwc_to_tensor(np.stack([np.asarray(c, dtype=np.uint8) for c in crops]))

    @staticmethod
    def hwc_to_tensor(arr: np.ndarray) -> torch.Tensor:
        """``(B, S, S, 3)`` uint8 array -> ``(B, 3, S, S)`` uint8 tensor."""
        return torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).contiguous()

    def normalize(self, batch_uint8: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, 3, S, S)`` -> float normalised with the model's mean/std, on the model device."""
        x = batch_uint8.to(self.device, non_blocking=True).float()
        return (x - self._mean) / self._std

    # -- features ------------------------------------------------------------------------------
    def text_features(self, classes: Sequence[str]) -> torch.Tensor:
        """Normalised embeddings of :func:`class_prompts` (cached; the text tower is frozen)."""
        key = tuple(classes)
        if key not in self._text_cache:
            prompts = class_prompts(classes)
            with torch.no_grad():
                feats = []
                for i in range(0, len(prompts), 256):
                    tok = self.tokenizer(prompts[i:i + 256]).to(self.device)
                    feats.append(self.model.encode_text(tok, normalize=True).float())
            self._text_cache[key] = torch.cat(feats)
        return self._text_cache[key]

    def image_features(self, batch: torch.Tensor) -> torch.Tensor:
        """Normalised image embeddings of a normalised float batch (autocast if ``precision``)."""
        dtype = _AUTOCAST[self.precision]
        if dtype is None:
            return self.model.encode_image(batch, normalize=True).float()
        with torch.autocast(self.device.type, dtype=dtype):
            return self.model.encode_image(batch, normalize=True).float()

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.model.logit_scale.exp().float()

    # -- scoring -------------------------------------------------------------------------------
    @torch.no_grad()
    def probabilities(self, batch_uint8: torch.Tensor, class_idx: Sequence[int],
                      classes: Sequence[str], all_classes: bool = False) -> dict[str, np.ndarray]:
        """Grade a batch of crops whose labelled classes are ``classes[class_idx[i]]``.

        Returns arrays ``p_good``, ``p_bad``, ``p_background``, ``quality`` (index into
        good/bad/background), and with ``all_classes`` also ``pred_class`` (index, -1 when
        background wins) and ``p_other_class`` (mass on other classes' prompts).
        """
        self.model.eval()
        img = self.image_features(self.normalize(batch_uint8))
        return self.probabilities_from_features(img, class_idx, classes, all_classes)

    def probabilities_from_features(self, img: torch.Tensor, class_idx: Sequence[int],
                                    classes: Sequence[str], all_classes: bool = False,
                                    ) -> dict[str, np.ndarray]:
        """As :meth:`probabilities`, from normalised image embeddings."""
        txt = self.text_features(classes)
        logits = self.logit_scale * img @ txt.T                     # (B, 2C + 1)
        k = torch.as_tensor(np.asarray(class_idx, dtype=np.int64), device=logits.device)
        C = len(classes)
        if not all_classes:
            cols = torch.stack([2 * k, 2 * k + 1, torch.full_like(k, 2 * C)], dim=1)
            p = torch.softmax(torch.gather(logits, 1, cols), dim=1).cpu().numpy()
            return {"p_good": p[:, 0], "p_bad": p[:, 1], "p_background": p[:, 2],
                    "quality": p.argmax(1)}
        p = torch.softmax(logits, dim=1)
        rows = torch.arange(len(k), device=p.device)
        p_good, p_bad, p_bg = p[rows, 2 * k], p[rows, 2 * k + 1], p[:, 2 * C]
        per_class = p[:, :2 * C].reshape(len(k), C, 2).sum(2)
        top = p.argmax(1)
        is_bg = top == 2 * C
        pred_class = torch.where(is_bg, torch.full_like(top, -1), per_class.argmax(1))
        quality = torch.where(is_bg, torch.full_like(top, 2), top % 2)
        to = lambda t: t.cpu().numpy()
        return {"p_good": to(p_good), "p_bad": to(p_bad), "p_background": to(p_bg),
                "quality": to(quality), "pred_class": to(pred_class),
                "p_other_class": to((1 - p_good - p_bad - p_bg).clamp_min(0))}

    # -- persistence ---------------------------------------------------------------------------
    def checkpoint_meta(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "pretrained": self.pretrained,
                "lora_rank": int(self.lora_rank),
                "lora_alpha": None if self.lora_alpha is None else float(self.lora_alpha),
                **self.meta}

    def save(self, path: str, extra: dict[str, Any] | None = None) -> str:
        """Write a self-contained checkpoint (architecture name, LoRA settings, all weights)."""
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        payload = {"format": CHECKPOINT_FORMAT, "meta": self.checkpoint_meta(),
                   "state_dict": self.model.state_dict(), **(extra or {})}
        tmp = path + ".tmp"
        torch.save(payload, tmp)
        os.replace(tmp, path)  # an interrupted save never leaves a truncated checkpoint
        return path


QUALITY_NAMES = (GOOD, BAD, BACKGROUND)


def read_checkpoint(path: str) -> dict[str, Any]:
    """Load a ClipGrader checkpoint dict, or raise :class:`ClipWeightsError`."""
    if not os.path.isfile(path):
        raise ClipWeightsError(f"ClipGrader checkpoint not found: {path}. "
                               + _weights_help(DEFAULT_MODEL, DEFAULT_PRETRAINED))
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ClipWeightsError(f"cannot read checkpoint {path}: {e}") from e
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ClipWeightsError(
            f"{path} is not a ClipGrader checkpoint (format '{CHECKPOINT_FORMAT}'); to load plain "
            f"open_clip weights pass them as pretrained='{path}' with the matching model name.")
    return payload


def load_grader(model_name: str = DEFAULT_MODEL, pretrained: str | None = DEFAULT_PRETRAINED, *,
                checkpoint: str | None = None, device: str = "cpu", cache_dir: str | None = None,
                lora_rank: int = 0, lora_alpha: float | None = None,
                precision: str = "fp32") -> ClipGrader:
    """Build a :class:`ClipGrader`: zero-shot from ``model_name``/``pretrained`` or from a checkpoint.

    With ``checkpoint`` the architecture, LoRA settings and weights all come from the file (no
    download). Otherwise ``pretrained`` is an open_clip tag or a local weights file; ``None``
    means random weights. ``lora_rank > 0`` adds fresh LoRA adapters (for fine-tuning).
    ``precision`` "bf16"/"fp16" runs the image tower under autocast (faster on GPUs).
    Raises :class:`ClipWeightsError` with what to provide when weights cannot be found.
    """
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device '{device}' requested but CUDA is not available")
    if checkpoint:
        payload = read_checkpoint(checkpoint)
        meta = payload["meta"]
        model, tok = _create_model(meta["model_name"], None, "cpu", cache_dir)
        rank = int(meta.get("lora_rank") or 0)
        if rank:
            apply_lora(model.visual, rank, meta.get("lora_alpha"))
        model.load_state_dict(payload["state_dict"])
        model.to(device).eval()
        extra = {k: v for k, v in meta.items()
                 if k not in ("model_name", "pretrained", "lora_rank", "lora_alpha")}
        return ClipGrader(model, tok, model_name=meta["model_name"], pretrained=meta.get("pretrained"),
                          device=device, lora_rank=rank, lora_alpha=meta.get("lora_alpha"),
                          meta={**extra, "checkpoint": os.path.abspath(checkpoint)},
                          precision=precision)
    model, tok = _create_model(model_name, pretrained, device, cache_dir)
    if lora_rank:
        apply_lora(model.visual, lora_rank, lora_alpha)
        model.to(device)
    model.eval()
    return ClipGrader(model, tok, model_name=model_name, pretrained=pretrained, device=device,
                      lora_rank=lora_rank, lora_alpha=lora_alpha, precision=precision)
