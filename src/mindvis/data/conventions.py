"""MinD-Vis's conventions for fMRI vectors (docs/reference.md section 1).

These few functions fix the shapes a checkpoint depends on, so every dataset
goes through them:
- wrap padding by `16 - V % 16` voxels (always at least one; 16 when V is
  already a multiple of 16), as `numpy.pad(..., mode="wrap")`;
- one scalar mean and std for a whole matrix (`ScalarNorm`; which rows it is
  fitted on and applied to: `mindvis.data.normalisation`);
- several subjects: each wrap-padded to the longest length, rows concatenated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mindvis.utils.errors import ConfigError

PATCH_SIZE = 16


def wrap_pad_amount(n_voxels: int, patch_size: int = PATCH_SIZE) -> int:
    """How many voxels MinD-Vis appends: `patch - V % patch`, never zero."""
    return patch_size - n_voxels % patch_size


def wrap_pad(x: np.ndarray, patch_size: int = PATCH_SIZE) -> np.ndarray:
    """Pad the last axis by wrapping around, MinD-Vis style."""
    extra = wrap_pad_amount(x.shape[-1], patch_size)
    widths = [(0, 0)] * (x.ndim - 1) + [(0, extra)]
    return np.pad(x, widths, mode="wrap")


def pad_to_length(x: np.ndarray, length: int) -> np.ndarray:
    """Wrap-pad (or cut) the last axis to exactly `length` voxels."""
    if x.shape[-1] >= length:
        return x[..., :length]
    widths = [(0, 0)] * (x.ndim - 1) + [(0, length - x.shape[-1])]
    return np.pad(x, widths, mode="wrap")


def fit_voxels(x: np.ndarray, num_voxels: int) -> np.ndarray:
    """Bring (n, V) data to a model's length, as MinD-Vis stage A2 does.

    Shorter rows are wrap-padded (numpy mode="wrap", MinD-Vis's pad_to_length);
    longer rows are cut to their first `num_voxels` voxels (MinD-Vis asserts
    instead; cutting drops the last voxels, which are the wrap padding when the
    difference is below one patch). Log the cut: it loses data.
    """
    return pad_to_length(np.asarray(x), num_voxels)


@dataclass(frozen=True)
class ScalarNorm:
    """One mean and one std for a whole matrix (not per voxel)."""

    mean: float
    std: float

    @classmethod
    def fit(cls, train: np.ndarray) -> ScalarNorm:
        train = np.asarray(train, dtype=np.float64)
        std = float(train.std())
        return cls(mean=float(train.mean()), std=std if std > 0 else 1.0)

    def apply(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, dtype=np.float64) - self.mean) / self.std).astype(np.float32)


def join_subjects(matrices: Sequence[np.ndarray]) -> np.ndarray:
    """Wrap-pad each subject's (n, V_s) matrix to the longest V, then stack rows."""
    if not matrices:
        raise ValueError("no subjects to join")
    length = max(m.shape[-1] for m in matrices)
    return np.concatenate([pad_to_length(m, length) for m in matrices], axis=0)


# how a training stage picks its epoch: clean = on held-out training rows (split_holdout);
# reference = on the TEST set, as MinD-Vis does (docs/reference.md section 6)
PROTOCOLS = ("clean", "reference")


def split_holdout(n_rows: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, held-out indices), a seeded random split; at least one held-out row when fraction > 0."""
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"holdout_fraction must be in [0, 1), got {fraction}")
    n_hold = 0 if fraction == 0 else max(1, int(round(n_rows * fraction)))
    if n_rows - n_hold < 1:
        raise ConfigError(f"holdout_fraction={fraction} leaves no training rows out of {n_rows}")
    order = np.random.default_rng(seed).permutation(n_rows)
    return np.sort(order[n_hold:]), np.sort(order[:n_hold])
