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
            if im.mode in _WIDE_MODES:
                return stretch_to_rgb(np.asarray(im))
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise ImageReadError(f"cannot decode image {path}: {e}") from e


#: single-channel modes wider than 8 bits (16-bit PNG / TIFF, 32-bit integer or float): PIL's
#: ``convert("RGB")`` clips them at 255, so a 12- or 16-bit scan (microscopy, X-ray, thermal)
#: came out almost all white
_WIDE_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I", "F"}


def stretch_to_rgb(a: np.ndarray) -> np.ndarray:
    """A single-channel image of any depth as ``(H, W, 3)`` uint8, its finite range stretched
    to 0-255 (what image viewers show for a 12/16-bit scan; a constant image is black)."""
    a = np.asarray(a, dtype=np.float64)
    finite = np.isfinite(a)
    lo, hi = (float(a[finite].min()), float(a[finite].max())) if finite.any() else (0.0, 0.0)
    g = np.zeros(a.shape, np.uint8) if hi <= lo else np.round(
        (np.where(finite, a, lo) - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    return np.repeat(g[..., None], 3, axis=2)


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
