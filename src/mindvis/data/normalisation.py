"""How fMRI rows are z-scored and joined (docs/reference.md sections 2 and 3).

Two choices, named by `normalisation`:
  clean      (mindvis default) per subject, ONE scalar mean/std of that subject's
             wrap-padded TRAINING rows, applied to its own training and test rows.
  reference  exactly what MinD-Vis's `code/dataset.py` computes, in the dtype the
             file holds (a float32 file stays float32 throughout, as there). Each
             dataset module implements its own reference steps with the helpers here.

Several subjects are joined as the reference does: each block wrap-padded to the
longest width, rows stacked; then the whole matrix wrap-padded (or cut) to a
forced length such as a checkpoint's, as its stage A2 does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mindvis.data.conventions import PATCH_SIZE, ScalarNorm, pad_to_length, wrap_pad
from mindvis.utils.errors import ConfigError

NORMALISATIONS = ("clean", "reference")


def check_normalisation(name: str, who: str, renamed: dict[str, str] | None = None) -> str:
    """`name` if it is a known choice; a one-line ConfigError otherwise (naming a renamed value's successor)."""
    if name in NORMALISATIONS:
        return name
    if renamed and name in renamed:
        raise ConfigError(f"{who}: normalisation '{name}' is now called '{renamed[name]}' (docs/reference.md)")
    raise ConfigError(f"{who}: normalisation must be one of {NORMALISATIONS}, got '{name}'")


def resolve_normalisation(normalisation: str, protocol: str, who: str) -> str:
    """A stage's config value: "auto" follows its protocol (reference -> reference, else clean)."""
    if normalisation == "auto":
        return "reference" if protocol == "reference" else "clean"
    return check_normalisation(normalisation, who)


def reference_normalize(x: np.ndarray, mean=None, std=None) -> np.ndarray:
    """MinD-Vis's `normalize`: one scalar mean/std of the whole array unless given.

    The statistics are numpy scalars of x's own dtype and the arithmetic stays in
    that dtype (float32 in, float32 out), so the result is the reference's bit for bit.
    """
    mean = np.mean(x) if mean is None else mean
    std = np.std(x) if std is None else std
    return (x - mean) / std


def stats_of(mean, std) -> ScalarNorm:
    """The statistics a split was normalised with, as plain floats (for logs and checkpoint metadata)."""
    return ScalarNorm(mean=float(mean), std=float(std))


def clean_rows(train: np.ndarray, rows: np.ndarray, patch_size: int = PATCH_SIZE) -> tuple[np.ndarray, ScalarNorm]:
    """Clean normalisation of one subject: `rows` wrap-padded, z-scored with its padded training statistics."""
    norm = ScalarNorm.fit(wrap_pad(train, patch_size))
    return norm.apply(wrap_pad(rows, patch_size)), norm


def join_blocks(blocks: Sequence[np.ndarray], padded_length: int | None, who: str) -> np.ndarray:
    """Per-subject (n_s, L_s) blocks -> one float32 (n, L) matrix, the reference's way.

    Each block is wrap-padded to the longest L_s and the rows stacked; a forced
    `padded_length` then wrap-pads the whole matrix (never shorter than the data).
    The cast to float32 comes last, where the reference's torch.FloatTensor casts.
    """
    if not blocks:
        raise ConfigError(f"{who}: no subjects to join")
    natural = max(b.shape[1] for b in blocks)
    if padded_length is not None and padded_length < natural:
        raise ConfigError(f"{who}: padded_length {padded_length} is shorter than the data's {natural} padded voxels")
    joined = np.concatenate([pad_to_length(b, natural) for b in blocks], axis=0)
    if padded_length is not None and padded_length > natural:
        joined = pad_to_length(joined, padded_length)
    return np.ascontiguousarray(joined, dtype=np.float32)
