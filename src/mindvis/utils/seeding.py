"""One place that seeds every random number generator we use."""

from __future__ import annotations

import random

import numpy as np


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
