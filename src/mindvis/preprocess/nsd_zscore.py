"""The z-score conventions of preprocess-nsd (docs/reference.md section 9.4).

session        MindEye2's notebook: each voxel over all the trials of each session
               (StandardScaler: ddof 0, a voxel constant in the session becomes 0).
session_train  the MindEye2 paper: each session's statistics from its training trials only
               (shared1000 trials left out of the fit), applied to every trial of that session.
train          Brain-Diffuser: mean and std (ddof=1) over the training rows as written
               (single trials or per-image averages), applied to training and test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mindvis.utils.errors import InputDataError

ZSCORES = ("session", "session_train", "train")
SESSION_ZSCORES = ("session", "session_train")


def zscore_session(x: np.ndarray, fit: np.ndarray | None = None, source: Path | None = None) -> int:
    """x (trials, V) float64 in place: per voxel (x - mean) / std (ddof 0) of the rows `fit` (a bool
    mask; None: every row). A voxel whose fitted std is 0 keeps std 1 (over all rows: it becomes 0).
    Returns how many voxels had std 0."""
    rows = x if fit is None else x[fit]
    if rows.shape[0] < 2:
        raise InputDataError(source, f"zscore: session_train needs at least 2 training trials in every session, "
                                     f"this one has {rows.shape[0]}")
    mean, std = rows.mean(axis=0), rows.std(axis=0)
    x -= mean
    x /= np.where(std > 0, std, 1.0)
    return int((std == 0).sum())


def train_statistics(rows: np.ndarray, source: Path | None = None, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Per-voxel mean and std (ddof=1) in float64, a block of rows at a time (no float64 copy of the whole)."""
    n = rows.shape[0]
    if n < 2:
        raise InputDataError(source, f"zscore: train needs at least 2 training rows, the sessions read give {n}")
    total = np.zeros(rows.shape[1])
    for start in range(0, n, chunk):
        total += rows[start:start + chunk].sum(axis=0, dtype=np.float64)
    mean = total / n
    square = np.zeros(rows.shape[1])
    for start in range(0, n, chunk):
        d = rows[start:start + chunk].astype(np.float64) - mean
        square += (d * d).sum(axis=0)
    return mean, np.sqrt(square / (n - 1))


def apply_statistics(rows: np.ndarray, mean: np.ndarray, std: np.ndarray, chunk: int = 2048) -> None:
    """rows = (rows - mean) / std in place (float32 storage, float64 arithmetic)."""
    for start in range(0, rows.shape[0], chunk):
        rows[start:start + chunk] = (rows[start:start + chunk].astype(np.float64) - mean) / std
