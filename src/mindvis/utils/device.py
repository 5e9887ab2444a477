"""The torch device and CPU thread count a command runs with: one rule for every stage.

`resolve_device("auto" | "cpu" | "cuda", local_rank)`: "auto" takes CUDA when present; a
process of a DDP job (mindvis.training.distributed) passes its local rank and gets its own
GPU. `set_threads(n)`: n > 0 fixes torch's CPU threads, 0 leaves torch's default.
"""

from __future__ import annotations

import torch

from mindvis.utils.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """The device named by a config's `device:`; a clean error when it cannot be had."""
    if name not in DEVICES:
        raise ConfigError(f"device must be auto, cpu or cuda, got {name!r}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device=cuda but no CUDA device is available")
        return torch.device("cuda", int(local_rank))
    return torch.device("cpu")


def set_threads(n: int) -> None:
    """torch's CPU threads: n > 0 fixes them (1 is fastest for tiny models on shared cores)."""
    if n and n > 0:
        torch.set_num_threads(int(n))
