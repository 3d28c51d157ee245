"""Rendering boxes for image judges: context crops with the box drawn, and full-image overlays.

Shared by ClipGrader (one crop per box) and the VLM judge (crops, or one overlay per sample).
Every image is decoded once and all of its boxes are rendered from that single decode.
"""
from __future__ import annotations

import colorsys
import math
import os
from functools import partial
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .boxes import BOX_DEGENERATE, rel_xywh_to_abs_xyxy, sanitize_rel_boxes
from .images import ImageReadError, load_rgb
from .parallel import prefetch_map
from .report import RunReport

MAGENTA = (255, 0, 255)
PAD_VALUE = 114  # neutral grey for the part of a crop window that falls outside the image


def default_workers() -> int:
    """Decode/render threads to use when the caller does not say: cores - 1, between 1 and 8."""
    return max(1, min(8, (os.cpu_count() or 2) - 1))


@dataclass(frozen=True)
class CropWindow:
    """A crop window in image pixels (``x0``/``y0`` may be negative: padded) and the box within it."""

    x0: int
    y0: int
    width: int
    height: int
    box_in_crop: tuple[float, float, float, float]  # box xyxy in crop pixels, before resizing


def crop_window(image_hw: tuple[int, int], box_xyxy: Sequence[float], *, context: float = 1.35,
                jitter: float = 0.0, rng: np.random.Generator | None = None) -> CropWindow:
    """Compute the crop window around ``box_xyxy``: ``context`` x the box size on each side.

    The window centre is moved by up to ``jitter`` x the box size (uniform, per axis), but never
    so far that the box leaves the window. Where the window fits inside the image along an axis
    it is shifted to lie inside it (more real context, no padding); where it is larger than the
    image it stays centred and the outside is padded.
    """
    h, w = image_hw
    x1, y1, x2, y2 = (float(v) for v in box_xyxy)
    bw, bh = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
    # At least the box's whole-pixel span: a window of integer start and size must be able to
    # hold the box (1.75..6.25 spans pixels 1..7; round(1.22 * 4.5) = 5 could not).
    cw = max(int(round(context * bw)), int(math.ceil(x2)) - int(math.floor(x1)), 1)
    ch = max(int(round(context * bh)), int(math.ceil(y2)) - int(math.floor(y1)), 1)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    if jitter > 0:
        rng = rng if rng is not None else np.random.default_rng()
        # The box must stay fully inside the window, so the offset is capped by the margin.
        mx, my = max((cw - bw) / 2, 0.0), max((ch - bh) / 2, 0.0)
        cx += float(np.clip(rng.uniform(-jitter, jitter) * bw, -mx, mx))
        cy += float(np.clip(rng.uniform(-jitter, jitter) * bh, -my, my))
    x0, y0 = int(math.floor(cx - cw / 2)), int(math.floor(cy - ch / 2))
    x0 = _clamp_start(x0, cw, w, x1, x2)
    y0 = _clamp_start(y0, ch, h, y1, y2)
    return CropWindow(x0, y0, cw, ch, (x1 - x0, y1 - y0, x2 - x0, y2 - y0))


def _clamp_start(start: int, size: int, limit: int, b1: float, b2: float) -> int:
    if size <= limit:
        start = min(max(start, 0), limit - size)
    # Shifting must not push the box out of the window (possible only when the box itself
    # sticks out of the image); keep the box inside and pad instead.
    start = min(start, int(math.floor(b1)))
    start = max(start, int(math.ceil(b2)) - size)
    return start


def cut_window(image: np.ndarray, win: CropWindow) -> np.ndarray:
    """The window's pixels, padded with :data:`PAD_VALUE` where it leaves the image."""
    h, w = image.shape[:2]
    sx0, sy0 = max(win.x0, 0), max(win.y0, 0)
    sx1, sy1 = min(win.x0 + win.width, w), min(win.y0 + win.height, h)
    if sx0 == win.x0 and sy0 == win.y0 and sx1 - sx0 == win.width and sy1 - sy0 == win.height:
        return image[sy0:sy1, sx0:sx1]
    out = np.full((win.height, win.width, 3), PAD_VALUE, dtype=np.uint8)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - win.y0:sy1 - win.y0, sx0 - win.x0:sx1 - win.x0] = image[sy0:sy1, sx0:sx1]
    return out


def crop_with_box(image: np.ndarray, box_xyxy: Sequence[float], *, context: float = 1.35,
                  jitter: float = 0.0, rng: np.random.Generator | None = None,
                  color=MAGENTA, thickness: int = 3,
                  out_size: int | None = None) -> Image.Image:
    """Crop ``image`` (H, W, 3 uint8 RGB) around ``box_xyxy`` (absolute pixels) and draw the box.

    The crop is ``context`` x the box size (see :func:`crop_window` for jitter, clamping and
    padding). With ``out_size`` the crop is first resized to ``out_size`` x ``out_size`` and the
    box is drawn afterwards, so the drawn line is ``thickness`` px at the model's input size
    whatever the object's size. The box outline is drawn on the box's own pixels (inward).
    """
    win = crop_window(image.shape[:2], box_xyxy, context=context, jitter=jitter, rng=rng)
    crop = Image.fromarray(np.ascontiguousarray(cut_window(image, win)))
    bx1, by1, bx2, by2 = win.box_in_crop
    if out_size is not None:
        sx, sy = out_size / win.width, out_size / win.height
        crop = crop.resize((out_size, out_size), Image.BILINEAR)
        bx1, bx2, by1, by2 = bx1 * sx, bx2 * sx, by1 * sy, by2 * sy
    draw_box(crop, (bx1, by1, bx2, by2), color=color, thickness=thickness)
    return crop


def draw_box(img: Image.Image, box_xyxy: Sequence[float], *, color=MAGENTA,
             thickness: int = 3) -> None:
    """Draw a ``thickness``-px rectangle whose outer edge is the box's edge, in place."""
    x1, y1, x2, y2 = box_xyxy
    # Pixel (i, j) covers [i, i+1); the last pixel inside the box is ceil(x2) - 1.
    l, t = int(math.floor(x1)), int(math.floor(y1))
    r, b = max(int(math.ceil(x2)) - 1, l), max(int(math.ceil(y2)) - 1, t)
    ImageDraw.Draw(img).rectangle([l, t, r, b], outline=tuple(color), width=max(int(thickness), 1))


def distinct_colors(n: int) -> list[tuple[int, int, int]]:
    """``n`` well-separated saturated colours (golden-ratio hue steps)."""
    out = []
    for i in range(n):
        hue = (i * 0.618033988749895) % 1.0
        val = 1.0 if i % 2 == 0 else 0.8
        r, g, b = colorsys.hsv_to_rgb(hue, 0.95, val)
        out.append((int(r * 255), int(g * 255), int(b * 255)))
    return out


def render_overlay(image: np.ndarray, boxes_xyxy, labels: Sequence[str], *, thickness: int = 3,
                   legend: bool = True) -> Image.Image:
    """Draw every box in its own colour; with ``legend``, append a strip naming ``index: class``.

    The legend is a separate strip to the right of the image, so it never hides image content.
    Box ``i`` has colour ``distinct_colors(n)[i]`` and a small index number at its top-left corner.
    """
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    if len(labels) != len(boxes):
        raise ValueError(f"got {len(boxes)} boxes but {len(labels)} labels")
    img = Image.fromarray(np.ascontiguousarray(image))
    colors = distinct_colors(len(boxes))
    font = ImageFont.load_default()
    draw = ImageDraw.Draw(img)
    for i, (box, col) in enumerate(zip(boxes, colors)):
        draw_box(img, box, color=col, thickness=thickness)
        tx, ty = max(int(box[0]) + thickness, 0), max(int(box[1]) + thickness, 0)
        draw.text((tx, ty), str(i), fill=col, font=font)
    if not legend or len(boxes) == 0:
        return img
    entries = [f"{i}: {lab}" for i, lab in enumerate(labels)]
    line_h = 14
    text_w = max(int(draw.textlength(e, font=font)) for e in entries)
    strip_w = text_w + 30
    strip_h = max(img.height, line_h * len(entries) + 8)
    out = Image.new("RGB", (img.width + strip_w, strip_h), (255, 255, 255))
    out.paste(img, (0, 0))
    d = ImageDraw.Draw(out)
    for i, (e, col) in enumerate(zip(entries, colors)):
        y = 4 + i * line_h
        d.rectangle([img.width + 4, y + 1, img.width + 16, y + 11], fill=col)
        d.text((img.width + 22, y), e, fill=(0, 0, 0), font=font)
    return out


@dataclass
class BoxCrop:
    """One rendered box: which sample/label it came from, its class, the crop, its pixel box."""

    sample_id: str
    label_id: str
    label: str
    image: Image.Image
    box_xyxy: tuple[float, float, float, float]

    def __iter__(self):
        # Unpacks like the tuple ``(sample_id, label_id, label, image)``.
        return iter((self.sample_id, self.label_id, self.label, self.image))


@dataclass
class _SampleJob:
    index: int
    sample_id: str
    filepath: str
    label_ids: list[str]
    labels: list[str]
    boxes: list[list[float]]


def _render_sample(job: _SampleJob, render: Callable[[np.ndarray, np.ndarray], Image.Image],
                   ) -> tuple[list[BoxCrop], dict[str, int], bool]:
    skips: dict[str, int] = {}
    if not job.label_ids:
        return [], skips, True  # nothing to render: don't pay for a decode
    try:
        image = load_rgb(job.filepath)
    except ImageReadError:
        skips["unreadable_image"] = len(job.label_ids)
        return [], skips, False
    h, w = image.shape[:2]
    clipped, status = sanitize_rel_boxes(job.boxes)
    abs_boxes = rel_xywh_to_abs_xyxy(clipped, w, h)
    crops = []
    for lid, lab, st, box in zip(job.label_ids, job.labels, status, abs_boxes):
        if st == BOX_DEGENERATE or lab is None:
            key = "degenerate_box" if st == BOX_DEGENERATE else "missing_label"
            skips[key] = skips.get(key, 0) + 1
            continue
        crops.append(BoxCrop(job.sample_id, lid, lab, render(image, box), tuple(float(v) for v in box)))
    return crops, skips, True


def _work(job: _SampleJob, *, context: float, jitter: float, seed: int | None, color,
          thickness: int, out_size: int | None):
    # One generator per sample keeps jittered crops reproducible under any pool.
    rng = np.random.default_rng([seed if seed is not None else 0, job.index]) if jitter else None
    render = lambda img, box: crop_with_box(img, box, context=context, jitter=jitter, rng=rng,
                                            color=color, thickness=thickness, out_size=out_size)
    return _render_sample(job, render)


def iter_box_crops(collection, field: str, *, context: float = 1.35, out_size: int | None = None,
                   report: RunReport | None = None, jitter: float = 0.0, seed: int | None = None,
                   thickness: int = 3, color=MAGENTA, num_workers: int | None = 0,
                   prefetch: int = 8, pool: str = "threads") -> Iterator[BoxCrop]:
    """Yield a :class:`BoxCrop` for every box of ``field`` over ``collection``, in sample order.

    Each image is decoded once (``grader.images.load_rgb``) and all its boxes are cropped from
    that decode. Missing/corrupt images (``unreadable_image``, counted per label), degenerate
    boxes (``degenerate_box``) and labels without a class (``missing_label``) are skipped and
    counted in ``report``; boxes partly outside the image are clipped for rendering only.
    ``num_workers > 0`` decodes and renders up to ``prefetch`` samples ahead in threads, so the
    consumer (a model) overlaps with image work (``None``: :func:`default_workers`).
    ``jitter``/``seed`` randomise crop centres reproducibly (per sample, independent of thread
    scheduling). ``pool="processes"`` renders in spawned processes instead of threads: on a
    GPU box the image tower is fast enough that render threads contend with the thread that
    drives the GPU for the GIL (H100, ViT-L-14-336 bf16: end-to-end/bare 1.56x with 15
    threads, 1.11x with 15 processes; ``bench/clipgrader_gpu.py``).
    """
    if num_workers is None:
        num_workers = default_workers()
    from .fields import read_detections  # the database layer, only when rendering a collection

    table = read_detections(collection, field)
    jobs = [
        _SampleJob(i, sid, fp, ids, labels, boxes)
        for i, (sid, fp, ids, labels, boxes) in enumerate(
            zip(table.sample_ids, table.filepaths, table.ids, table.labels, table.boxes))
    ]

    work = partial(_work, context=context, jitter=jitter, seed=seed, color=color,
                   thickness=thickness, out_size=out_size)

    def account(result) -> list[BoxCrop]:
        crops, skips, ok = result
        if report is not None:
            report.samples_seen += 1
            for k, v in skips.items():
                report.skip(k, v)
        return crops

    for result in prefetch_map(work, jobs, workers=num_workers, prefetch=prefetch, pool=pool):
        yield from account(result)
