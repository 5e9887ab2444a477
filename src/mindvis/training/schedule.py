"""Learning-rate schedule: linear warm-up, then half a cosine down to `min_lr`, set every iteration.

MinD-Vis (after MAE) computes a fractional epoch `e = epoch + i / iters_per_epoch`
and sets lr = base * e / warmup during warm-up, then
min + (base - min) * (1 + cos(pi * (e - warmup) / (epochs - warmup))) / 2.
Counting in iterations gives the same values; the schedule's position is
just the global step, which the resumable checkpoint stores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class WarmupCosine:
    base_lr: float
    total_steps: int
    warmup_steps: int
    min_lr: float = 0.0

    def lr_at(self, step: int) -> float:
        """Learning rate for the update that follows `step` completed updates."""
        if self.warmup_steps > 0 and step < self.warmup_steps:
            return self.base_lr * step / self.warmup_steps
        decay_steps = max(self.total_steps - self.warmup_steps, 1)
        progress = min(max(step - self.warmup_steps, 0) / decay_steps, 1.0)
        return self.min_lr + (self.base_lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))

    @classmethod
    def from_epochs(cls, base_lr: float, epochs: int, warmup_epochs: float, steps_per_epoch: int,
                    min_lr: float = 0.0) -> WarmupCosine:
        return cls(base_lr=base_lr, total_steps=epochs * steps_per_epoch,
                   warmup_steps=int(round(warmup_epochs * steps_per_epoch)), min_lr=min_lr)

    def apply(self, optimizer, step: int) -> float:
        lr = self.lr_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr
