"""Image grids: the one tiling rule behind every PNG of samples (training previews, `generate`).

Images are (H, W, 3) uint8; `save_png` writes atomically, so a killed job never leaves half a picture.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mindvis.utils.atomic import atomic_path


def tile(rows: list[list[np.ndarray]], pad: int = 2, value: int = 255) -> np.ndarray:
    """Images (H, W, 3) uint8 arranged in rows (ragged rows are padded) -> one uint8 image."""
    if not rows or not any(rows):
        raise ValueError("nothing to tile")
    h, w = next(img for row in rows for img in row).shape[:2]
    n_cols = max(len(r) for r in rows)
    out = np.full((len(rows) * (h + pad) + pad, n_cols * (w + pad) + pad, 3), value, dtype=np.uint8)
    for r, row in enumerate(rows):
        for c, img in enumerate(row):
            y, x = pad + r * (h + pad), pad + c * (w + pad)
            out[y:y + h, x:x + w] = img
    return out


def sample_grid(ground_truth: np.ndarray, samples: np.ndarray, max_rows: int | None = None) -> np.ndarray:
    """Rows: ground truth | K samples (the reference's layout)."""
    n = ground_truth.shape[0] if max_rows is None else min(max_rows, ground_truth.shape[0])
    return tile([[ground_truth[i], *samples[i]] for i in range(n)])


def save_png(picture: np.ndarray, path: str | Path) -> None:
    """(H, W, 3) uint8 -> a PNG file, written atomically."""
    from PIL import Image  # Pillow: only the commands that write pictures need it

    with atomic_path(path) as tmp:
        Image.fromarray(picture).save(tmp, format="PNG")
