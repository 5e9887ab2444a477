"""One place that seeds every random number generator we use, and the seeded draws several layers share."""

from __future__ import annotations

import random

import numpy as np

from mindvis.utils.errors import InputDataError


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python, NumPy and torch (if imported); return a NumPy Generator."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # torch is a dependency, but keep data tools importable without it
        pass
    return np.random.default_rng(seed)


def derangement(n: int, seed: int) -> np.ndarray:
    """A random permutation of 0..n-1 with no fixed point (rejection sampling), fixed by `seed`."""
    if n < 2:
        raise InputDataError(None, f"a derangement needs >= 2 items, got {n}")
    rng = np.random.default_rng([seed & 0xFFFFFFFF, 5])
    while True:  # about e tries on average
        order = rng.permutation(n)
        if not np.any(order == np.arange(n)):
            return order
