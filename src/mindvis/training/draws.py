"""The seeded random draws of a training step: a function of (seed, step, kind) only.

Every random draw a step makes (crops, noise, diffusion steps, condition dropout,
codebook restarts) comes from a generator seeded by (seed, step, kind), never from
the global RNG: a resumed run and a run split over several processes draw exactly
what one uninterrupted process would. Per-item draws are made for the whole GLOBAL
batch and cut to this process's rows (`StepDraws`), so the split does not matter.
(The item order of an epoch and SC-MBM's masking noise: training.distributed.)
"""

from __future__ import annotations

import numpy as np
import torch


def step_generator(seed: int, step: int, stream: int = 3) -> torch.Generator:
    """The generator of every random draw of one step: a function of (seed, step) only."""
    mixed = np.random.SeedSequence([seed & 0xFFFFFFFF, stream, step & 0xFFFFFFFF]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(mixed % (2**63)))


# Each kind of draw has its own stream, so a stage that skips one kind (no crops, no condition
# dropout) leaves the others unchanged.
DRAW_STREAMS = {"crop": 21, "crop_offset": 22, "patch_offset": 23, "noise": 24, "timestep": 25, "cond_drop": 26,
                "restart": 27, "augment": 28}


class StepDraws:
    """Every random draw of one optimizer step, for this process's items.

    Per-item draws (`rand`, `randint`, `randn`: leading dimension = items) are
    made for the whole GLOBAL batch from a generator seeded by (seed, step,
    kind) and cut to this process's rows `rows` of it: every process sees the
    draws one process with the global batch would, whatever the split.
    `shared(kind)` is a generator for draws that belong to no item (codebook
    restarts): the same in every process.
    """

    def __init__(self, seed: int, step: int, global_batch: int, rows: slice | None = None):
        self.seed, self.step, self.global_batch = int(seed), int(step), int(global_batch)
        self.rows = rows if rows is not None else slice(0, self.global_batch)
        self.n = len(range(self.global_batch)[self.rows])

    def shared(self, kind: str) -> torch.Generator:
        if kind not in DRAW_STREAMS:
            raise KeyError(f"unknown kind of draw {kind!r} (known: {', '.join(DRAW_STREAMS)})")
        return step_generator(self.seed, self.step, DRAW_STREAMS[kind])

    def rand(self, kind: str, *shape: int) -> torch.Tensor:
        return torch.rand(self.global_batch, *shape, generator=self.shared(kind))[self.rows]

    def randint(self, kind: str, high: int, *shape: int) -> torch.Tensor:
        return torch.randint(0, high, (self.global_batch, *shape), generator=self.shared(kind))[self.rows]

    def randn(self, kind: str, *shape: int) -> torch.Tensor:
        return torch.randn(self.global_batch, *shape, generator=self.shared(kind))[self.rows]


class GeneratorDraws:
    """StepDraws' interface over one plain generator for `n` items (draws in call order, kinds ignored)."""

    def __init__(self, generator: torch.Generator, n: int):
        self.generator, self.n = generator, n

    def shared(self, kind: str) -> torch.Generator:
        return self.generator

    def rand(self, kind: str, *shape: int) -> torch.Tensor:
        return torch.rand(self.n, *shape, generator=self.generator)

    def randint(self, kind: str, high: int, *shape: int) -> torch.Tensor:
        return torch.randint(0, high, (self.n, *shape), generator=self.generator)

    def randn(self, kind: str, *shape: int) -> torch.Tensor:
        return torch.randn(self.n, *shape, generator=self.generator)


def draws_for(rng: torch.Generator | StepDraws | GeneratorDraws, n: int) -> StepDraws | GeneratorDraws:
    """The draws of `n` items: a step's StepDraws as given, a plain generator wrapped."""
    draws = GeneratorDraws(rng, n) if isinstance(rng, torch.Generator) else rng
    if draws.n != n:
        raise ValueError(f"draws for {draws.n} items given for a batch of {n}")
    return draws
