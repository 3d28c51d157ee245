"""Previews for the review queue: a crop of the image around a label, its box in magenta and
the suggested box (or the suggested class) in a second colour, with the IoU between them.

Rendered server-side with :mod:`grader.render` and returned as a ``data:`` URL the App can show
in an ``<img>``. Crops are cached (by file, its modification time, the boxes and the size), and
each image is decoded once for all of its labels on a page.
"""
from __future__ import annotations

import base64
import io
import os
import threading
from collections import OrderedDict
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from grader.boxes import rel_xywh_to_abs_xyxy
from grader.images import ImageReadError, load_rgb
from grader.render import MAGENTA, crop_window, draw_box

LABEL_COLOR = MAGENTA            # the label under review
SUGGESTION_COLOR = (0, 230, 118)  # the suggested box / candidate (green, far from magenta)
CAPTION_H = 18

_CACHE: "OrderedDict[tuple, str]" = OrderedDict()
_CACHE_SIZE = 512
_IMAGES: "OrderedDict[tuple, np.ndarray]" = OrderedDict()
_IMAGE_CACHE_SIZE = 16


# The review panel renders the next labels' previews in a background thread while the
# curator looks at the current one: the caches are shared between threads.
_LOCK = threading.Lock()


def _lru_get(cache: OrderedDict, key):
    with _LOCK:
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        return None


def _lru_put(cache: OrderedDict, key, value, size: int) -> None:
    with _LOCK:
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > size:
            cache.popitem(last=False)


def _image(filepath: str, mtime: float) -> np.ndarray:
    key = (filepath, mtime)
    img = _lru_get(_IMAGES, key)
    if img is None:
        img = load_rgb(filepath)
        _lru_put(_IMAGES, key, img, _IMAGE_CACHE_SIZE)
    return img


def clear_cache() -> None:
    """Forget every cached crop and decoded image."""
    with _LOCK:
        _CACHE.clear()
        _IMAGES.clear()


def cache_info() -> dict:
    """How many crops and decoded images are cached."""
    return {"crops": len(_CACHE), "images": len(_IMAGES)}


def _placeholder(size: int, text: str) -> Image.Image:
    img = Image.new("RGB", (size, size // 2), (60, 60, 60))
    ImageDraw.Draw(img).text((8, 8), text, fill=(255, 255, 255), font=ImageFont.load_default())
    return img


def render_preview(filepath: str, box: Sequence[float] | None, *,
                   suggested_box: Sequence[float] | None = None, label: str | None = None,
                   suggested_label: str | None = None, iou: float | None = None,
                   size: int = 256, context: float = 1.6) -> Image.Image:
    """The preview picture (PIL): crop around the label's box (and the suggested box, if any).

    Boxes are FiftyOne's relative ``[x, y, w, h]``. The label's box is drawn in magenta, the
    suggested box in green; a caption strip says ``label -> suggestion`` and the IoU.
    """
    try:
        image = _image(filepath, os.path.getmtime(filepath))
    except (OSError, ImageReadError) as e:
        return _placeholder(size, f"image unreadable: {type(e).__name__}")
    h, w = image.shape[:2]
    boxes = [b for b in (box, suggested_box) if b]
    if not boxes:
        return _placeholder(size, "no box")
    abs_boxes = rel_xywh_to_abs_xyxy(np.asarray(boxes, dtype=float), w, h)
    union = [abs_boxes[:, 0].min(), abs_boxes[:, 1].min(), abs_boxes[:, 2].max(), abs_boxes[:, 3].max()]
    # a square-ish window: small objects get context, never less than 64 px of image
    side = max(union[2] - union[0], union[3] - union[1], 64.0 / context)
    cx, cy = (union[0] + union[2]) / 2, (union[1] + union[3]) / 2
    win = crop_window((h, w), [cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2],
                      context=context)
    crop = Image.fromarray(image).crop((win.x0, win.y0, win.x0 + win.width, win.y0 + win.height))
    scale = size / max(win.width, win.height)
    crop = crop.resize((max(1, round(win.width * scale)), max(1, round(win.height * scale))),
                       Image.BILINEAR)
    thick = max(2, size // 128)

    def to_crop(b):
        return [(b[0] - win.x0) * scale, (b[1] - win.y0) * scale,
                (b[2] - win.x0) * scale, (b[3] - win.y0) * scale]

    k = 0
    if box:
        draw_box(crop, to_crop(abs_boxes[0]), color=LABEL_COLOR, thickness=thick)
        k = 1
    if suggested_box:
        draw_box(crop, to_crop(abs_boxes[k]), color=SUGGESTION_COLOR, thickness=thick)
    parts = [label or "?"]
    if suggested_label and suggested_label != label:
        parts.append(f"-> {suggested_label}")
    if iou is not None:
        parts.append(f"IoU {iou:.2f}")
    out = Image.new("RGB", (crop.width, crop.height + CAPTION_H), (255, 255, 255))
    out.paste(crop, (0, 0))
    d = ImageDraw.Draw(out)
    font = ImageFont.load_default()
    d.rectangle([2, crop.height + 4, 12, crop.height + 14], fill=LABEL_COLOR)
    x = 16
    d.text((x, crop.height + 3), parts[0], fill=(0, 0, 0), font=font)
    x += int(d.textlength(parts[0], font=font)) + 6
    if len(parts) > 1:
        if suggested_box or suggested_label:
            d.rectangle([x, crop.height + 4, x + 10, crop.height + 14], fill=SUGGESTION_COLOR)
            x += 14
        d.text((x, crop.height + 3), " ".join(parts[1:]), fill=(0, 0, 0), font=font)
    return out


def preview_data_url(filepath: str, box: Sequence[float] | None, *,
                     suggested_box: Sequence[float] | None = None, label: str | None = None,
                     suggested_label: str | None = None, iou: float | None = None,
                     size: int = 256, quality: int = 85) -> str:
    """:func:`render_preview` as a cached ``data:image/jpeg;base64,...`` URL."""
    try:
        mtime = os.path.getmtime(filepath)
    except OSError:
        mtime = -1.0
    key = (filepath, mtime, tuple(box or ()), tuple(suggested_box or ()), label,
           suggested_label, None if iou is None else round(iou, 3), size)
    url = _lru_get(_CACHE, key)
    if url is None:
        img = render_preview(filepath, box, suggested_box=suggested_box, label=label,
                             suggested_label=suggested_label, iou=iou, size=size)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=quality)
        url = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
        _lru_put(_CACHE, key, url, _CACHE_SIZE)
    return url


def item_preview(item, size: int = 256) -> str:
    """The preview of a :class:`grader.review.queue.QueueItem` (its box and its suggestion)."""
    if item.is_candidate:  # the candidate itself is the suggestion: draw it in the second colour
        return preview_data_url(item.filepath, None, suggested_box=item.box, label=item.label,
                                suggested_label=None, size=size)
    return preview_data_url(item.filepath, item.box, suggested_box=item.suggested_box,
                            label=item.label, suggested_label=item.suggested_label,
                            iou=item.suggested_iou, size=size)
