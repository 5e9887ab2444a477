"""Image files -> square uint8 RGB arrays: the one reader every stimulus set goes through.

GOD's ImageNet JPEGs (`preprocess-god-images`), BOLD5000's stimuli (`preprocess-bold5000`)
and a `folder` stimulus set (`simulate-stimuli`) are read the same way: decoded with PIL,
converted to RGB, optionally centre-cropped to a square, resized to size x size (bicubic).
A file PIL cannot decode is an InputDataError naming it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from mindvis.utils.errors import InputDataError

CROPS = ("none", "center")  # "none" stretches the whole image to the square


def read_image(path: str | Path, size: int, crop: str = "center") -> tuple[np.ndarray, bool]:
    """(size, size, 3) uint8 RGB image, and whether the file was not RGB already."""
    if crop not in CROPS:
        raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")
    try:
        with Image.open(path) as img:
            img.load()  # decode now: a truncated file fails here, inside the try
            converted = img.mode != "RGB"
            rgb = img.convert("RGB")
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad files
        raise InputDataError(path, f"cannot read image ({type(exc).__name__}: {exc}); corrupt or not an image?") from None
    if crop == "center":
        w, h = rgb.size
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        rgb = rgb.crop((left, top, left + side, top + side))
    rgb = rgb.resize((size, size), Image.Resampling.BICUBIC)  # PIL returns a plain copy when already that size
    return np.asarray(rgb, dtype=np.uint8), converted
