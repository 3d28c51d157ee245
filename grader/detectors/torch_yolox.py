"""The shipped YOLOX-Nano ONNX as a PyTorch module (``onnx2torch``): GPU inference and training.

The ONNX export ends in sigmoids on objectness and class scores; :func:`yolox_module` swaps
those last sigmoids for identities so the module returns *logits* (what a training loss wants,
and what keeps gradients alive at saturated scores). :class:`TorchYolox` is the same network
as an :class:`ArrayDetector` over any class list (the first ``K`` of the head's 80 class
channels), on CUDA when present. With the shipped weights its rows match ``cv2.dnn`` and
onnxruntime within 1e-4 (tests/test_torch_yolox.py).
"""
from __future__ import annotations

import os
import warnings
from typing import Sequence

import numpy as np

from .base import ArrayDetector, letterbox, read_names
from .cvdnn import yolox_grid

NUM_DET_CLASSES = 80

# onnx2torch's Slice indexes with a list (deprecated by torch, same result today): one line of
# noise per forward pass otherwise.
warnings.filterwarnings("ignore", message="Using a non-tuple sequence for multidimensional indexing",
                        category=UserWarning)


def available() -> bool:
    """Whether torch and onnx2torch can be imported."""
    try:
        import onnx2torch  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def default_device() -> str:
    """``cuda`` when torch sees a GPU (``$LABEL_GRADER_DEVICE`` overrides), else ``cpu``."""
    import torch

    return os.environ.get("LABEL_GRADER_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")


def yolox_module(model_path: str):
    """The YOLOX ONNX graph as a ``torch.fx.GraphModule`` returning ``(N, A, 85)`` with raw box
    terms and objectness / class *logits* (the export's closing sigmoids removed)."""
    import onnx
    import torch
    from onnx2torch import convert

    from .ort import yolox_dynamic

    if not os.path.isfile(model_path):
        raise FileNotFoundError(f"detector file missing: {model_path}")
    data, _ = yolox_dynamic(model_path)
    gm = convert(onnx.load_from_string(data))
    head_convs = {name for name, mod in gm.named_modules()
                  if isinstance(mod, torch.nn.Conv2d) and mod.kernel_size == (1, 1)
                  and mod.in_channels == 64 and mod.out_channels in (1, NUM_DET_CLASSES)}
    swapped = 0
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(gm.get_submodule(node.target), torch.nn.Sigmoid):
            continue
        src = node.args[0]
        if getattr(src, "op", None) == "call_module" and src.target in head_convs:
            gm.add_submodule(node.target, torch.nn.Identity())
            swapped += 1
    if swapped != 6:  # objectness + classes at three strides
        raise RuntimeError(f"unexpected YOLOX graph: {swapped} head sigmoids found, expected 6")
    gm.recompile()
    return gm


def class_conv_names(gm) -> list[str]:
    """The three 1x1 convs predicting the 80 class logits (strides 8, 16, 32)."""
    import torch

    return [name for name, mod in gm.named_modules()
            if isinstance(mod, torch.nn.Conv2d) and mod.kernel_size == (1, 1)
            and mod.in_channels == 64 and mod.out_channels == NUM_DET_CLASSES]


def decode(out, grid, stride):
    """Raw head ``(N, A, 85)`` -> xyxy boxes ``(N, A, 4)`` in input pixels (torch tensors)."""
    import torch

    xy = (out[..., :2] + grid) * stride
    wh = torch.exp(out[..., 2:4].clamp(max=10.0)) * stride
    return torch.cat([xy - wh / 2, xy + wh / 2], -1)


class TorchYolox(ArrayDetector):
    """YOLOX-Nano in PyTorch over ``classes`` (``len(classes) <= 80``; COCO's 80 by default),
    optionally with fine-tuned weights (``state_dict``); CUDA when present."""

    name = "yolox-nano-torch"

    def __init__(self, model_dir: str, classes: Sequence[str] | None = None, *,
                 state_dict: dict | None = None, input_size: int = 416,
                 device: str | None = None, batch_size: int = 16):
        import torch

        self.module = yolox_module(os.path.join(model_dir, "model.onnx"))
        if state_dict is not None:
            self.module.load_state_dict(state_dict)
        self.classes = list(classes) if classes is not None else read_names(
            os.path.join(model_dir, "coco.names"))
        if not 0 < len(self.classes) <= NUM_DET_CLASSES:
            raise ValueError(f"YOLOX-Nano's head has {NUM_DET_CLASSES} class channels; "
                             f"got {len(self.classes)} classes")
        self.device = torch.device(device or default_device())
        self.module.to(self.device).eval()
        self.batch_size = batch_size
        #: threads letterboxing the next batches while the device runs (none on a CPU device,
        #: where they would only compete with the network's own threads)
        self.letterbox_workers = min(4, os.cpu_count() or 1) if self.device.type == "cuda" else 0
        self.set_input_size(input_size)

    def set_input_size(self, input_size: int) -> None:
        import torch

        if input_size % 32:
            raise ValueError(f"YOLOX input size must be a multiple of 32, got {input_size}")
        self.size = input_size
        grid, stride = yolox_grid(input_size)
        self._grid = torch.from_numpy(grid).to(self.device)
        self._stride = torch.from_numpy(stride).to(self.device)

    def predict(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        import torch

        from ..parallel import prefetch_map

        k = len(self.classes)
        b = self.batch_size
        # Batches are letterboxed in threads (cv2 releases the GIL) while the device runs the
        # previous ones; uint8 goes to the device (4x fewer bytes than float32).
        batches = prefetch_map(lambda s: letterbox(images[s:s + b], self.size, bgr=True, dtype=np.uint8),
                               range(0, len(images), b), workers=self.letterbox_workers, prefetch=4)
        res = []
        with torch.inference_mode():
            for blob, meta in batches:
                out = self.module(torch.from_numpy(blob).to(self.device).float())
                boxes = decode(out, self._grid, self._stride)
                scores = torch.sigmoid(out[..., 4:5]) * torch.sigmoid(out[..., 5:5 + k])
                rows = torch.cat([boxes, scores], -1).float().cpu().numpy()
                for row, (r, _, _) in zip(rows, meta):
                    row[:, :4] /= r
                    res.append(row)
        return res
