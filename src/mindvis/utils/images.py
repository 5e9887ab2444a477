"""Image grids: every PNG of samples is laid out here.

    tile / sample_grid  training previews and `generate`'s grid: equal gaps, ground truth | K samples
    grid_image          `evaluate`'s grid: rows spread over the test set, a wider gap after the ground
                        truth (the HTML report finds this layout back: evaluation/report/grids.py)

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


def grid_image(
    samples: np.ndarray, ground_truth: np.ndarray, rows: int, gap: int = 2, cell_max: int = 0
) -> np.ndarray:
    """uint8 grid: one row per test item (evenly spaced over the set): ground truth | K samples.

    A wider white gap separates the ground truth from the samples. With cell_max > 0,
    images larger than cell_max px are downscaled (Lanczos) first.
    """
    n = samples.shape[0]
    idx = np.unique(np.linspace(0, n - 1, min(rows, n)).round().astype(int))
    samples, ground_truth = samples[idx], ground_truth[idx]
    rows_n, k = samples.shape[:2]
    if cell_max and max(samples.shape[2:4]) > cell_max:
        ground_truth = _shrink(ground_truth, cell_max)
        samples = _shrink(samples.reshape(-1, *samples.shape[2:]), cell_max).reshape(rows_n, k, *ground_truth.shape[1:])
    h, w = ground_truth.shape[1:3]
    # Layout per row: gap | GT | 3 gaps | sample 1 | gap | ... | sample K | gap
    width = (k + 1) * w + (k + 4) * gap
    height = rows_n * h + (rows_n + 1) * gap
    grid = np.full((height, width, 3), 255, dtype=np.uint8)
    for r in range(rows_n):
        y = gap + r * (h + gap)
        grid[y : y + h, gap : gap + w] = ground_truth[r]
        for j in range(k):
            x = 4 * gap + w + j * (w + gap)
            grid[y : y + h, x : x + w] = samples[r, j]
    return grid


def _shrink(images: np.ndarray, size: int) -> np.ndarray:
    """(m, H, W, 3) uint8 -> the longer side `size`, Lanczos (PIL)."""
    from PIL import Image

    h, w = images.shape[1:3]
    scale = size / max(h, w)
    new = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.stack([np.asarray(Image.fromarray(im).resize(new, Image.Resampling.LANCZOS)) for im in images])
