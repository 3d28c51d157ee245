"""Per-box features from a frozen pretrained detector (YOLOX-Nano through ``cv2.dnn``).

The box grader (:mod:`grader.judges.boxgrader`) trains a small model on these instead of fine-tuning CLIP.
Every box is seen three ways by the same detector, each through one forward pass:

1. the **full image at 416 px** (one pass per image, shared by all its boxes);
2. the **full image at 832 px** (``hires``; one pass per image): stride 8 becomes 4 source
   pixels on a 640 px image, so small objects' edges and the detector's own boxes are finer;
3. a **zoom crop around the box** (``zoom``; one pass per box): a square window of
   ``zoom_context`` x the box's longer side, centred on the box, at ``zoom_size`` px, so the
   object fills about half the detector's input whatever its size. This is what tells an exact
   box from one off by a fifth of its size: the detector's box regression and feature maps are
   then at a resolution where that difference is several cells.

From each view the same descriptors are read off:

- **edges**: for each edge, a strip just inside and one just outside, ``roi_align``-ed from the
  classification and regression branches' last 64-channel maps of each level; their cosine
  similarities with each other and with the box centre (is there a boundary at this edge?);
- **detector evidence near the box**: IoU with the detector's own predictions at several score
  levels, the best matching prediction's score and edge offsets relative to the box, the
  score-weighted mean offsets, and the IoU-weighted class probabilities (80) of the
  predictions on the box;
- **geometry** (full-image views): relative centre/size, log aspect, log relative area, log
  pixel size;
- **pooled maps** (off by default: they over-fit coco128): the maps ``roi_align``-ed over the
  box (``pool`` x ``pool``) and over the box enlarged ``context`` times.

Pooling from the detector's maps (and re-detecting on a zoom crop) was chosen over drawing the
box on a crop: see docs/clipgrader.md for the measurements behind every view.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import cv2
import numpy as np
import torch
from torchvision.ops import roi_align

from ...boxes import iou_matrix
from ...images import ImageReadError, load_rgb
from ...parallel import one_thread, prefetch_map
from ...render import CropWindow, cut_window
from ...report import RunReport
from ..clipgrader.synth import SynthItem
from ..zoom import square_window

from ...detectors.base import letterbox, read_names
from ...detectors.cvdnn import yolox_grid
from ...detectors.ort import OrtYolox, available as ort_available

YOLOX_INPUT = 416
YOLOX_STRIDES = (8, 16, 32)
NUM_DET_CLASSES = 80
#: scalar "detector evidence" features per box (see :meth:`YoloxFeatures._evidence`)
NUM_EVIDENCE = 22
NUM_GEOMETRY = 7
#: per level and branch: for each of the 4 edges, cos(inside strip, outside strip),
#: cos(inside strip, box centre), cos(outside strip, box centre)
NUM_EDGE = len(YOLOX_STRIDES) * 2 * 4 * 3
#: the descriptors of one view of the box (``hires`` and ``zoom`` repeat them on other views)
CORE_GROUPS = ("edges", "evidence", "det_classes", "geometry")
ALL_GROUPS = ("pooled", *CORE_GROUPS, "hires", "zoom")
#: chosen on a coco128 image split (docs/clipgrader.md): the pooled maps over-fit; the 832 px
#: and zoom views lift 3-way accuracy from 0.75 to 0.84 there
DEFAULT_GROUPS = (*CORE_GROUPS, "hires", "zoom")
HIRES_INPUT = 832
ZOOM_INPUT = 256


def _rowwise_iou(b: np.ndarray, p: np.ndarray) -> np.ndarray:
    """IoU of box ``b[i]`` (N, 4) with each of its own candidates ``p[i]`` (N, A, 4), xyxy."""
    b = b[:, None]
    iw = np.clip(np.minimum(b[..., 2], p[..., 2]) - np.maximum(b[..., 0], p[..., 0]), 0, None)
    ih = np.clip(np.minimum(b[..., 3], p[..., 3]) - np.maximum(b[..., 1], p[..., 1]), 0, None)
    inter = iw * ih
    area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])
    return inter / np.maximum(area(b) + area(p) - inter, 1e-12)


class DetectorFileError(FileNotFoundError):
    """The detector weights file for the feature backbone is missing."""


def default_detector_path(name: str = "yolox-nano") -> str:
    """Where the shipped detector lives (``$LABEL_GRADER_DETECTORS`` or ../shared/data/detectors)."""
    root = os.environ.get("LABEL_GRADER_DETECTORS", os.path.join(
        os.path.dirname(__file__), "..", "..", "..", "..", "shared", "data", "detectors"))
    return os.path.normpath(os.path.join(root, name, "model.onnx"))


@dataclass
class ImageFeatures:
    """One image's detector outputs: feature maps per level and decoded dense predictions."""

    maps: list[torch.Tensor]     # per level: (1, 2*64, h, w) [cls branch | reg branch]
    pred_xyxy: np.ndarray        # (A, 4) predicted boxes in original image pixels
    pred_obj: np.ndarray         # (A,) objectness
    pred_cls: np.ndarray         # (A, 80) class probabilities (not multiplied by objectness)
    scale: float                 # canvas pixels per image pixel
    width: int
    height: int
    hires: "ImageFeatures | None" = None   # the same image at ``hires_size`` ("hires" group)
    rgb: np.ndarray | None = None          # kept for the per-box zoom crops ("zoom" group)


class YoloxFeatures:
    """YOLOX-Nano (ONNX) as a frozen feature extractor for boxes.

    ``model_path``: the ONNX file (default: the shipped ``yolox-nano/model.onnx``); a missing
    file raises :class:`DetectorFileError`. ``pool``: roi_align output side; ``context``: how
    much larger the pooled context window is than the box. ``input_size`` / ``hires_size``:
    the detector's input side for the full-image views; ``zoom_size`` / ``zoom_context``: the
    zoom crop's input side and how much larger its window is than the box's longer side.
    ``backend``: ``"onnxruntime"`` (batched zoom crops; 3x less CPU per pass here), ``"cv2"``
    (cv2.dnn, one crop at a time) or ``"auto"`` (onnxruntime when installed). Both give the
    same features within float tolerance (tests/test_boxgrader.py).
    """

    name = "yolox-nano"

    def __init__(self, model_path: str | None = None, pool: int = 3, context: float = 2.0,
                 groups: tuple[str, ...] = DEFAULT_GROUPS, input_size: int = YOLOX_INPUT,
                 hires_size: int = HIRES_INPUT, zoom_size: int = ZOOM_INPUT,
                 zoom_context: float = 2.0, backend: str = "auto"):
        path = model_path or default_detector_path("yolox-nano")
        if not os.path.isfile(path):
            raise DetectorFileError(
                f"box grader backbone: YOLOX-Nano ONNX file not found at {path}. Pass "
                f"model_path=..., or set LABEL_GRADER_DETECTORS to the folder holding "
                f"yolox-nano/model.onnx")
        self.model_path = os.path.abspath(path)
        if backend == "auto":
            backend = "onnxruntime" if ort_available() else "cv2"
        if backend not in ("onnxruntime", "cv2"):
            raise ValueError(f"backend must be 'auto', 'onnxruntime' or 'cv2', got {backend!r}")
        self.backend = backend
        self.net = cv2.dnn.readNetFromONNX(self.model_path) if backend == "cv2" else None
        self.ort = OrtYolox(self.model_path, branch_outputs=True) if backend == "onnxruntime" else None
        #: zoom crops per onnxruntime batch (memory stays bounded on images with many boxes)
        self.batch = 32
        self.pool, self.context = int(pool), float(context)
        for what, v in (("input_size", input_size), ("hires_size", hires_size),
                        ("zoom_size", zoom_size)):
            if int(v) % 32 or int(v) < 64:
                raise ValueError(f"{what} must be a multiple of 32 and >= 64, got {v}")
        if zoom_context < 1:
            raise ValueError(f"zoom_context must be >= 1, got {zoom_context}")
        self.size, self.hires_size = int(input_size), int(hires_size)
        self.zoom_size, self.zoom_context = int(zoom_size), float(zoom_context)
        unknown = set(groups) - set(ALL_GROUPS)
        if unknown:
            raise ValueError(f"unknown feature groups {sorted(unknown)}; available: {ALL_GROUPS}")
        self.groups = tuple(g for g in ALL_GROUPS if g in groups)
        if self.net is not None:
            self.branch_layers = self._find_branch_layers()
            self.out_name = self.net.getUnconnectedOutLayersNames()[0]
        names = os.path.join(os.path.dirname(self.model_path), "coco.names")
        #: the detector's class names (COCO spelling), in its output order
        self.classes = read_names(names) if os.path.isfile(names) else []
        self._grids: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    # -- graph ---------------------------------------------------------------------------
    def _find_branch_layers(self) -> list[tuple[str, str]]:
        """Names of the (cls, reg) branch outputs per level: the activations feeding the
        80-channel class conv and the 4-channel box conv. Found by shape once, so a re-export
        with other node names still works."""
        names = list(self.net.getLayerNames())
        self.net.setInput(np.zeros((1, 3, YOLOX_INPUT, YOLOX_INPUT), np.float32))
        outs = self.net.forward(names)
        shapes = {n: o.shape for n, o in zip(names, outs)}
        cls_feats, reg_feats = [], []
        for k, n in enumerate(names):
            sh = shapes[n]
            if "Conv" not in n or len(sh) != 4 or sh[1] not in (NUM_DET_CLASSES, 4):
                continue
            prev = next(p for p in reversed(names[:k]) if len(shapes[p]) == 4
                        and shapes[p][1] == 64 and shapes[p][2:] == sh[2:] and "Conv" not in p)
            (cls_feats if sh[1] == NUM_DET_CLASSES else reg_feats).append(prev)
        if len(cls_feats) != 3 or len(reg_feats) != 3:
            raise RuntimeError(f"unexpected YOLOX graph in {self.model_path}: found class "
                               f"branches {cls_feats} and box branches {reg_feats}")
        return list(zip(cls_feats, reg_feats))

    def _grid(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        if size not in self._grids:
            self._grids[size] = yolox_grid(size, YOLOX_STRIDES)
        return self._grids[size]

    def _sizes(self) -> dict[str, int]:
        core = NUM_EDGE + NUM_EVIDENCE + NUM_DET_CLASSES
        return {"pooled": len(YOLOX_STRIDES) * 2 * 64 * 2 * self.pool * self.pool,
                "edges": NUM_EDGE, "evidence": NUM_EVIDENCE, "det_classes": NUM_DET_CLASSES,
                "geometry": NUM_GEOMETRY, "hires": core + NUM_GEOMETRY, "zoom": core}

    @property
    def dim(self) -> int:
        """Length of one box's feature vector."""
        sizes = self._sizes()
        return sum(sizes[g] for g in self.groups)

    # -- per image ---------------------------------------------------------------------
    def image_features(self, rgb: np.ndarray) -> ImageFeatures:
        """The per-image passes on an ``(H, W, 3)`` RGB uint8 image: the detector at
        ``input_size`` (and at ``hires_size`` with the "hires" group)."""
        f = self._pass(rgb, self.size)
        if "hires" in self.groups:
            f.hires = self._pass(rgb, self.hires_size)
        if "zoom" in self.groups:
            f.rgb = rgb
        return f

    def _pass(self, rgb: np.ndarray, size: int) -> ImageFeatures:
        """One detector forward on ``rgb`` letterboxed into a ``size`` x ``size`` canvas."""
        return self._passes([rgb], size)[0]

    def _forward(self, blob: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        """Branch maps per level ``(N, 2*64, h, w)`` [cls | reg] and the raw head ``(N, A, 85)``."""
        if self.ort is not None:
            outs = self.ort.run_batched(blob, self.batch)
            maps = [np.concatenate([outs[1 + 2 * i], outs[2 + 2 * i]], 1) for i in range(3)]
            return maps, outs[0]
        names = [n for pair in self.branch_layers for n in pair] + [self.out_name]
        per = []
        for k in range(len(blob)):  # cv2.dnn scrambles batched YOLOX blobs: one at a time
            self.net.setInput(blob[k:k + 1])
            per.append(self.net.forward(names))
        maps = [np.concatenate([np.concatenate([o[2 * i], o[2 * i + 1]], 1) for o in per], 0)
                for i in range(len(self.branch_layers))]
        raw = np.concatenate([o[-1].reshape(1, -1, 5 + NUM_DET_CLASSES) for o in per], 0)
        return maps, raw

    def _decode_batch(self, images: list[np.ndarray], size: int):
        """Forward ``images`` letterboxed into ``size`` x ``size`` canvases (one batch with
        onnxruntime); return the maps, each image's decoded predictions (boxes in its own
        pixels ``(K, A, 4)``, objectness ``(K, A)``, class probabilities ``(K, A, 80)``) and scales."""
        blob, meta = letterbox(images, size, bgr=True)   # YOLOX: top-left, BGR, 114 grey
        maps, raw = self._forward(blob)
        gxy, st = self._grid(size)
        r = np.array([m[0] for m in meta], dtype=np.float64)
        cxy = (raw[..., :2] + gxy) * st
        wh = np.exp(np.clip(raw[..., 2:4], -10, 10)) * st
        xyxy = np.concatenate([cxy - wh / 2, cxy + wh / 2], -1) / r[:, None, None]
        return (maps, xyxy.astype(np.float64), raw[..., 4].astype(np.float64),
                raw[..., 5:].astype(np.float64), r)

    def _passes(self, images: list[np.ndarray], size: int) -> list[ImageFeatures]:
        """Detector forwards on ``images`` letterboxed into ``size`` x ``size`` canvases."""
        maps, xyxy, obj, cls, r = self._decode_batch(images, size)
        return [ImageFeatures([torch.from_numpy(m[k:k + 1]) for m in maps], xyxy[k], obj[k],
                              cls[k], float(r[k]), im.shape[1], im.shape[0])
                for k, im in enumerate(images)]

    # -- per box ---------------------------------------------------------------------------
    def box_features(self, f: ImageFeatures, boxes_xyxy: np.ndarray) -> np.ndarray:
        """``(N, dim)`` float32 features of ``boxes_xyxy`` (absolute pixels) on one image."""
        return self.box_features_and_crops(f, boxes_xyxy)[0]

    def box_features_and_crops(self, f: ImageFeatures, boxes_xyxy: np.ndarray,
                               judge: tuple[float, int] | None = None,
                               ) -> tuple[np.ndarray, list[tuple[CropWindow, np.ndarray]] | None]:
        """:meth:`box_features`, and with ``judge`` = the zoom judge's ``(context, min_crop)``,
        per box that judge's crop window and the detector's rows on it (``(A, 84)`` in the
        pixels of the ``zoom_size`` input; ``grader.judges.zoom.crop_attrs`` reads them): the
        crops both need run once (a window of the judge's that differs from the grader's, a
        small box's, gets a pass of its own in the same batch)."""
        b = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
        if len(b) == 0:
            return np.zeros((0, self.dim), np.float32), ([] if judge else None)
        if judge is not None and ("zoom" not in self.groups or f.rgb is None):
            raise ValueError("zoom judge crops need the 'zoom' group and the image")
        parts = []
        if "pooled" in self.groups:
            parts.append(self._pooled(f, b))
        parts += self._core(f, b, [g for g in CORE_GROUPS if g in self.groups])
        if "hires" in self.groups:
            if f.hires is None:
                raise ValueError("these image features were computed without the hires pass")
            parts += self._core(f.hires, b, CORE_GROUPS)
        crops = None
        if "zoom" in self.groups:
            if f.rgb is None:
                raise ValueError("these image features were computed without the image")
            z, crops = self._zoom(f.rgb, b, judge)
            parts.append(z)
        return np.concatenate(parts, 1).astype(np.float32), crops

    def _core(self, f: ImageFeatures, b: np.ndarray, groups) -> list[np.ndarray]:
        """The ``groups`` (of :data:`CORE_GROUPS`) of boxes ``b`` on one view ``f``."""
        parts = []
        if "edges" in groups:
            parts.append(self._edges(f.maps, b, f.scale))
        if "evidence" in groups or "det_classes" in groups:
            ev = self._evidence(b, f.pred_xyxy, f.pred_obj, f.pred_cls)
            if "evidence" in groups:
                parts.append(ev[:, :NUM_EVIDENCE])
            if "det_classes" in groups:
                parts.append(ev[:, NUM_EVIDENCE:])
        if "geometry" in groups:
            parts.append(self._geometry(f, b))
        return parts

    def _zoom(self, rgb: np.ndarray, b: np.ndarray, judge: tuple[float, int] | None = None,
              ) -> tuple[np.ndarray, list[tuple[CropWindow, np.ndarray]] | None]:
        """Edges, evidence and class probabilities of each box re-read on its own zoom crop
        (one detector pass per box; the window is the one the zoom judge uses); with ``judge``
        also the zoom judge's window and rows per box (see :meth:`box_features_and_crops`)."""
        out = np.zeros((len(b), self._sizes()["zoom"]), np.float32)
        wins = [square_window(rgb.shape[:2], box, self.zoom_context, 32) for box in b]
        crops = [np.ascontiguousarray(cut_window(rgb, w)) for w in wins]
        inner = np.array([w.box_in_crop for w in wins], dtype=np.float64).reshape(-1, 4)
        # the judge's window per box: the grader's own crop where they coincide, else an extra
        jwins, src = None, []
        if judge is not None:
            jwins = [square_window(rgb.shape[:2], box, judge[0], int(judge[1])) for box in b]
            for i, (w, jw) in enumerate(zip(wins, jwins)):
                if (w.x0, w.y0, w.width, w.height) == (jw.x0, jw.y0, jw.width, jw.height):
                    src.append(i)
                else:
                    src.append(len(crops))
                    crops.append(np.ascontiguousarray(cut_window(rgb, jw)))
        want = set(src)
        rows: dict[int, np.ndarray] = {}
        for s in range(0, len(crops), self.batch):
            e = min(s + self.batch, len(crops))
            maps, xyxy, obj, cls, r = self._decode_batch(crops[s:e], self.zoom_size)
            for k in range(s, e):
                if k in want:   # as YoloXNano.predict gives them: input pixels, obj * cls
                    q = k - s
                    rows[k] = np.concatenate([xyxy[q] * r[q], obj[q][:, None] * cls[q]], 1)
            n = max(0, min(e, len(b)) - s)      # the grader's own crops in this batch
            if n:
                bz = inner[s:s + n]
                # each crop holds one box: its k-th row is read off the k-th crop's maps
                edges = self._edges([torch.from_numpy(m[:n]) for m in maps], bz, r[:n],
                                    np.arange(n))
                out[s:s + n] = np.concatenate(
                    [edges, self._evidence(bz, xyxy[:n], obj[:n], cls[:n])], 1)
        if judge is None:
            return out, None
        return out, [(jw, rows[k]) for jw, k in zip(jwins, src)]

    def _edges(self, maps: list[torch.Tensor], b: np.ndarray, scale, batch_index=None,
               strip: float = 0.2) -> np.ndarray:
        """Is there an object boundary at each edge? Feature similarity of a strip just inside
        the edge, a strip just outside it and the box centre (a well-drawn edge: inside looks
        like the centre, outside does not). Box ``i`` is read off image ``batch_index[i]`` of
        ``maps`` (default 0) at canvas ``scale`` (a number, or one per box)."""
        c = b * np.reshape(scale, (-1, 1))
        x1, y1, x2, y2 = c.T
        tw, th = (x2 - x1) * strip, (y2 - y1) * strip
        cx1, cy1 = x1 + (x2 - x1) * 0.3, y1 + (y2 - y1) * 0.3
        cx2, cy2 = x2 - (x2 - x1) * 0.3, y2 - (y2 - y1) * 0.3
        regions = [  # centre, then (inside, outside) for left, right, top, bottom
            (cx1, cy1, cx2, cy2),
            (x1, y1, x1 + tw, y2), (x1 - tw, y1, x1, y2),
            (x2 - tw, y1, x2, y2), (x2, y1, x2 + tw, y2),
            (x1, y1, x2, y1 + th), (x1, y1 - th, x2, y1),
            (x1, y2 - th, x2, y2), (x1, y2, x2, y2 + th)]
        n, R = len(b), len(regions)
        bi = np.zeros(n) if batch_index is None else np.asarray(batch_index, dtype=np.float64)
        rois = np.concatenate([np.stack([bi, *r], 1) for r in regions], 0)
        rois = torch.from_numpy(rois).float()
        out = []
        for m, s in zip(maps, YOLOX_STRIDES):
            p = roi_align(m, rois, (1, 1), spatial_scale=1.0 / s, sampling_ratio=2,
                          aligned=True).reshape(R, n, -1)
            for br in (p[:, :, :64], p[:, :, 64:]):
                v = torch.nn.functional.normalize(br, dim=2)
                ctr = v[0]
                for e in range(4):
                    vin, vout = v[1 + 2 * e], v[2 + 2 * e]
                    out += [(vin * vout).sum(1), (vin * ctr).sum(1), (vout * ctr).sum(1)]
        return torch.stack(out, 1).numpy()

    def _pooled(self, f: ImageFeatures, b: np.ndarray) -> np.ndarray:
        canvas = b * f.scale
        c = (canvas[:, :2] + canvas[:, 2:]) / 2
        half = (canvas[:, 2:] - canvas[:, :2]) / 2 * self.context
        ctx = np.concatenate([c - half, c + half], 1)
        rois = torch.from_numpy(np.concatenate([
            np.concatenate([np.zeros((len(b), 1)), canvas], 1),
            np.concatenate([np.zeros((len(b), 1)), ctx], 1)], 0)).float()
        out = []
        for m, s in zip(f.maps, YOLOX_STRIDES):
            p = roi_align(m, rois, (self.pool, self.pool), spatial_scale=1.0 / s,
                          sampling_ratio=2, aligned=True)
            p = p.reshape(2, len(b), -1).permute(1, 0, 2).reshape(len(b), -1)
            out.append(p.numpy())
        return np.concatenate(out, 1)

    def _evidence(self, b: np.ndarray, pred_xyxy: np.ndarray, pred_obj: np.ndarray,
                  pred_cls: np.ndarray) -> np.ndarray:
        """What the detector itself says near each box (scalars, then class probabilities).

        The predictions are one image's, shared by every box (``(A, 4)``, ``(A,)``, ``(A, 80)``),
        or one image's per box (``(N, A, 4)``, ``(N, A)``, ``(N, A, 80)``: the zoom crops)."""
        per_box = pred_xyxy.ndim == 3
        iou = _rowwise_iou(b, pred_xyxy) if per_box else iou_matrix(b, pred_xyxy)   # (N, A)
        score = pred_obj * pred_cls.max(-1)                           # (A,) or (N, A)
        score2 = score if per_box else score[None]
        obj2 = pred_obj if per_box else pred_obj[None]
        pxy = pred_xyxy if per_box else pred_xyxy[None]
        ev = []
        for t in (0.3, 0.5, 0.7, 0.85):                               # best score at IoU >= t
            ev.append(np.where(iou >= t, score2, 0).max(1))
        for s in (0.05, 0.1, 0.25, 0.5):                              # best IoU at score >= s
            ev.append(np.where(score2 >= s, iou, 0).max(1))
        w = iou * score2
        best = w.argmax(1)
        rows = np.arange(len(b))
        bw = np.maximum(b[:, 2] - b[:, 0], 1.0)
        bh = np.maximum(b[:, 3] - b[:, 1], 1.0)
        scale = np.stack([bw, bh, bw, bh], 1)
        pb = pxy[rows if per_box else 0, best]
        ev += [iou[rows, best], score2[rows if per_box else 0, best], obj2[rows if per_box else 0, best]]
        ev += list(((pb - b) / scale).T)                               # best's edge offsets
        wt = np.where(iou >= 0.3, w, 0)
        tot = wt.sum(1)
        # score x IoU weighted mean edge offsets of the predictions on the box:
        # sum_a wt (p_a - b) / scale = (wt @ p - tot * b) / scale (no (N, A, 4) temporary)
        wp = np.einsum("na,nac->nc", wt, pxy) if per_box else wt @ pred_xyxy
        mean_off = (wp - tot[:, None] * b) / scale / np.maximum(tot, 1e-9)[:, None]
        ev += list(mean_off.T)
        ev += [np.log1p(tot), (iou >= 0.5).sum(1) / 10.0]
        inside = iou * obj2
        ev.append(inside.max(1))
        assert len(ev) == NUM_EVIDENCE, len(ev)
        cw = (iou ** 2) * obj2
        cls = (np.einsum("na,nac->nc", cw, pred_cls) if per_box else cw @ pred_cls)
        cls = cls / np.maximum(cw.sum(1), 1e-9)[:, None]
        return np.concatenate([np.stack(ev, 1), cls], 1)

    def _geometry(self, f: ImageFeatures, b: np.ndarray) -> np.ndarray:
        W, H = float(f.width), float(f.height)
        w = np.maximum(b[:, 2] - b[:, 0], 1.0)
        h = np.maximum(b[:, 3] - b[:, 1], 1.0)
        return np.stack([(b[:, 0] + b[:, 2]) / 2 / W, (b[:, 1] + b[:, 3]) / 2 / H, w / W, h / H,
                         np.log(w / h), np.log(w * h / (W * H)), np.log(np.sqrt(w * h))], 1)

    def slices(self) -> dict[str, slice]:
        """Where each feature group sits in a box's vector (for ablations)."""
        out, at, sizes = {}, 0, self._sizes()
        for g in self.groups:
            out[g] = slice(at, at + sizes[g])
            at += sizes[g]
        return out

    def det_class_slices(self) -> list[slice]:
        """Where the detector's class probabilities (80) sit, once per view of the box."""
        sl, out = self.slices(), []
        if "det_classes" in sl:
            out.append(sl["det_classes"])
        skip = NUM_EDGE + NUM_EVIDENCE  # hires/zoom: edges, evidence, then det_classes
        for g in ("hires", "zoom"):
            if g in sl:
                out.append(slice(sl[g].start + skip, sl[g].start + skip + NUM_DET_CLASSES))
        return out


def load_backbone(name: str = "yolox-nano", model_path: str | None = None, **kw) -> YoloxFeatures:
    """A feature backbone by name (only ``yolox-nano`` is implemented)."""
    if name != "yolox-nano":
        raise ValueError(f"unknown box grader backbone '{name}'; available: yolox-nano")
    return YoloxFeatures(model_path, **kw)


# --- box features of many images, and their caches ----------------------------------------



def _decode(path: str):
    try:
        return load_rgb(path)
    except ImageReadError:
        return None


def extract_features(backbone: YoloxFeatures, groups: Sequence[tuple[str, np.ndarray]], *,
                     report: RunReport | None = None, num_workers: int = 1,
                     progress: Callable[[int, int], None] | None = None,
                     zoom_judge: tuple[float, int] | None = None,
                     on_crops: Callable[[int, list[tuple[CropWindow, np.ndarray]]], None] | None = None,
                     ) -> list[np.ndarray | None]:
    """Features of every box, grouped by image: ``groups`` = ``[(filepath, boxes_xyxy)]``.

    Each image is decoded (in ``num_workers`` threads, ahead of the model) and run through the
    detector once. Returns one ``(n_i, dim)`` array per group, or None for an unreadable image
    (counted as ``unreadable_image`` per box). With ``zoom_judge`` (the zoom judge's
    ``(context, min_crop)``), ``on_crops(group index, [(window, rows)] per box)`` receives the
    zoom judge's crops from the same passes (:meth:`YoloxFeatures.box_features_and_crops`).
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
                x, crops = backbone.box_features_and_crops(backbone.image_features(rgb), boxes,
                                                           zoom_judge)
                out.append(x)
                if on_crops is not None and crops is not None:
                    on_crops(k, crops)
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
