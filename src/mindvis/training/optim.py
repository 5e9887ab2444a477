"""AdamW as in MinD-Vis stage A: betas (0.9, 0.95), no weight decay on biases and 1-D parameters."""

from __future__ import annotations

import torch
import torch.nn as nn


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two parameter groups: decayed (matrices, conv kernels, the (1,1,D) cls/mask tokens) and not decayed.

    The rule is MAE's `add_weight_decay`: a parameter is exempt when it is 1-D
    (LayerNorm scales) or its name ends in `.bias`. Frozen parameters (the
    sine-cosine tables) are left out of the optimizer altogether.
    """
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 or name.endswith(".bias") else decay).append(param)
    return [
        {"params": no_decay, "weight_decay": 0.0},
        {"params": decay, "weight_decay": weight_decay},
    ]


def build_adamw(model: nn.Module, lr: float, weight_decay: float,
                betas: tuple[float, float] = (0.9, 0.95)) -> torch.optim.AdamW:
    return torch.optim.AdamW(decay_groups(model, weight_decay), lr=lr, betas=betas)
