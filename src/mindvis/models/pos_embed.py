"""Fixed 1-D sine-cosine position tables, and resizing them to another token count.

MinD-Vis (after MAE) gives every token position `p` the vector
    [sin(p * w_0), ..., sin(p * w_{D/2-1}), cos(p * w_0), ..., cos(p * w_{D/2-1})]
with w_k = 10000 ** (-k / (D/2)), and prepends an all-zero row for the cls
token. The table is a non-trainable parameter of shape (1, N + 1, D), so it is
saved in the state dict and a checkpoint fixes its number of tokens N.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def sincos_1d(dim: int, length: int) -> np.ndarray:
    """(length, dim) float32 sine-cosine table for positions 0..length-1."""
    if dim % 2:
        raise ValueError(f"sine-cosine embedding needs an even width, got {dim}")
    half = dim // 2
    # float64 for the angles: positions times frequencies lose digits in float32
    omega = 1.0 / 10000.0 ** (np.arange(half, dtype=np.float64) / half)
    angles = np.arange(length, dtype=np.float64)[:, None] * omega[None, :]
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1).astype(np.float32)


def sincos_table(dim: int, n_tokens: int, cls_row: bool = True) -> torch.Tensor:
    """(1, n_tokens [+1], dim) table; the cls row (first) is all zeros."""
    table = sincos_1d(dim, n_tokens)
    if cls_row:
        table = np.concatenate([np.zeros((1, dim), dtype=np.float32), table], axis=0)
    return torch.from_numpy(table)[None]


INTERPOLATION_MODES = ("linear", "nearest")


def interpolate_pos_table(table: torch.Tensor, n_tokens: int, mode: str = "linear") -> torch.Tensor:
    """Resize a (1, 1 + N, D) table with a cls row to (1, 1 + n_tokens, D).

    The cls row is kept as is; the N position rows are resampled along the
    token axis with `torch.nn.functional.interpolate`, align_corners=False
    (sample centres map onto sample centres). `mode="nearest"` reproduces the
    MinD-Vis code, which calls interpolate without a mode (default nearest);
    `"linear"` (our default) gives a smooth table.
    """
    if mode not in INTERPOLATION_MODES:
        raise ValueError(f"interpolation mode must be one of {INTERPOLATION_MODES}, got {mode!r}")
    if table.ndim != 3 or table.shape[0] != 1 or table.shape[1] < 2:
        raise ValueError(f"expected a (1, 1 + N, D) position table, got {tuple(table.shape)}")
    if table.shape[1] - 1 == n_tokens:
        return table.clone()
    cls_row, rows = table[:, :1], table[:, 1:]
    kwargs = {"align_corners": False} if mode == "linear" else {}
    resized = F.interpolate(rows.transpose(1, 2).float(), size=n_tokens, mode=mode, **kwargs)
    return torch.cat([cls_row, resized.transpose(1, 2).to(table.dtype)], dim=1)
