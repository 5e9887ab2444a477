"""What a simulated voxel sees of an image: local feature maps and a coarse, colour-invariant shape.

- `retinotopic_features`: luminance, two colour-opponent channels, horizontal/vertical edge
  energy and chromatic edge energy, computed at full resolution and area-averaged onto a
  24x24 map, which retinotopic voxels pool through their receptive fields;
- `shape_features`: a figure map (each pixel's colour distance from the border colour) and
  edge energy on an 8x8 grid, which category voxels project;
- `synthetic_calibration_images`: the seeded generic images a voxel model is calibrated on
  before a simulator hands it its own stimulus set.
"""

from __future__ import annotations

import numpy as np

RETINO_GRID = 24  # retinotopic features are pooled on a 24x24 map (fast, RFs >= ~1 cell)
SHAPE_GRID = 8  # category voxels see an 8x8 figure/edge map (coarse shape, no detail)
N_RETINO_CHANNELS = 6


def _area_matrix(src: int, dst: int) -> np.ndarray:
    """(dst, src) matrix that area-averages a length-`src` axis down (or up) to `dst` cells."""
    edges_src = np.arange(src + 1) / src
    edges_dst = np.arange(dst + 1) / dst
    lo = np.maximum(edges_dst[:-1, None], edges_src[None, :-1])
    hi = np.minimum(edges_dst[1:, None], edges_src[None, 1:])
    overlap = np.clip(hi - lo, 0.0, None)
    return (overlap / overlap.sum(axis=1, keepdims=True)).astype(np.float32)


def _resize(maps: np.ndarray, dst: int) -> np.ndarray:
    """Area-resize (n, H, W) maps to (n, dst, dst) with two small matrix products."""
    my = _area_matrix(maps.shape[1], dst)
    mx = _area_matrix(maps.shape[2], dst)
    return np.einsum("yh,nhw,xw->nyx", my, maps, mx, optimize=True)


def _gradients(lum: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Absolute horizontal and vertical central differences (edge energy), same shape."""
    gx = np.zeros_like(lum)
    gy = np.zeros_like(lum)
    gx[:, :, 1:-1] = 0.5 * (lum[:, :, 2:] - lum[:, :, :-2])
    gy[:, 1:-1, :] = 0.5 * (lum[:, 2:, :] - lum[:, :-2, :])
    return np.abs(gx), np.abs(gy)


def as_float_images(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be (n, H, W, 3), got shape {images.shape}")
    if images.dtype == np.uint8:
        return images.astype(np.float32) / 255.0
    return images.astype(np.float32, copy=False)


def retinotopic_features(images: np.ndarray) -> np.ndarray:
    """(n, 6, G, G) local feature maps on the retinotopic grid: luminance, R-G, B-Y,
    |d/dx lum|, |d/dy lum| and chromatic edge energy (all computed at full resolution)."""
    x = as_float_images(images)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    lum = 0.299 * r + 0.587 * g + 0.114 * b
    rg = r - g
    by = b - 0.5 * (r + g)
    ex, ey = _gradients(lum)
    crg_x, crg_y = _gradients(rg)
    cby_x, cby_y = _gradients(by)
    chroma_edge = np.sqrt(crg_x**2 + crg_y**2 + cby_x**2 + cby_y**2)
    maps = np.stack([lum, rg, by, ex, ey, chroma_edge], axis=1)  # (n, 6, H, W)
    n, c, h, w = maps.shape
    small = _resize(maps.reshape(n * c, h, w), RETINO_GRID)
    return small.reshape(n, c, RETINO_GRID, RETINO_GRID)


def shape_features(images: np.ndarray) -> np.ndarray:
    """(n, 2*S*S) colour-invariant coarse shape: figure map (distance of each pixel's colour
    from the border colour, i.e. the background) and edge energy, on an SxS grid."""
    x = as_float_images(images)
    border = np.concatenate([x[:, 0, :, :], x[:, -1, :, :], x[:, :, 0, :], x[:, :, -1, :]], axis=1)
    background = np.median(border, axis=1)  # (n, 3): robust to a figure touching the border
    figure = np.linalg.norm(x - background[:, None, None, :], axis=-1)
    lum = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    ex, ey = _gradients(lum)
    edges = np.sqrt(ex**2 + ey**2)
    n = x.shape[0]
    maps = _resize(np.concatenate([figure, edges], axis=0), SHAPE_GRID)
    return np.concatenate([maps[:n].reshape(n, -1), maps[n:].reshape(n, -1)], axis=1)


def synthetic_calibration_images(n: int, image_size: int, rng: np.random.Generator) -> np.ndarray:
    """Seeded generic images (smooth colour field + one random ellipse), float32 in [0, 1]."""
    coarse = rng.uniform(0.0, 1.0, size=(n, 4, 4, 3)).astype(np.float32)
    up = _area_matrix(4, image_size)  # (image_size, 4): nearest-ish upsampling of the 4x4 field
    field_ = np.einsum("yh,nhwc,xw->nyxc", up, coarse, up, optimize=True)
    base = rng.uniform(0.0, 1.0, size=(n, 1, 1, 3)).astype(np.float32)
    images = 0.6 * base + 0.4 * field_
    yy, xx = np.mgrid[0:image_size, 0:image_size].astype(np.float32) / image_size
    cy, cx = rng.uniform(0.2, 0.8, size=(2, n))
    ry, rx = rng.uniform(0.08, 0.3, size=(2, n))
    inside = ((yy[None] - cy[:, None, None]) / ry[:, None, None]) ** 2 + (
        (xx[None] - cx[:, None, None]) / rx[:, None, None]
    ) ** 2 <= 1.0
    colour = rng.uniform(0.0, 1.0, size=(n, 3)).astype(np.float32)
    images = np.where(inside[..., None], colour[:, None, None, :], images)
    return np.clip(images, 0.0, 1.0).astype(np.float32)

