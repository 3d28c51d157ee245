"""Image decoding and metadata, with clear errors for missing or corrupt files."""
from __future__ import annotations

import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from .report import RunReport


class ImageReadError(RuntimeError):
    """An image file is missing or cannot be decoded."""


def load_rgb(path: str) -> np.ndarray:
    """Decode ``path`` to an ``(H, W, 3)`` uint8 RGB array, or raise :class:`ImageReadError`."""
    if not os.path.isfile(path):
        raise ImageReadError(f"image file not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise ImageReadError(f"cannot decode image {path}: {e}") from e


def ensure_metadata(collection, report: RunReport | None = None) -> int:
    """Compute image metadata where missing; return how many samples still lack width/height.

    Unreadable files are skipped (not raised) and counted in ``report`` as ``missing_metadata``.
    """
    missing = collection.exists("metadata", False)
    if len(missing):
        missing.compute_metadata(skip_failures=True, warn_failures=False)
    n_bad = len(collection.exists("metadata.width", False))
    if report is not None:
        report.skip("missing_metadata", n_bad)
    return n_bad
