"""SC-MBM training (MinD-Vis stage A): schedule, optimizer, resumable checkpoints, DDP, the loop.

The commands live in cli_pretrain (`pretrain-mbm`, stage A1) and cli_finetune
(`finetune-mbm`, stage A2); both are thin wrappers of library functions there.
"""

from mindvis.training.mbm_trainer import (
    LoopConfig,
    TrainingInterrupted,
    masked_reconstruction_quality,
    prepare_rows,
    train_mbm,
    voxel_mean_baseline,
)
from mindvis.training.schedule import WarmupCosine

__all__ = [
    "LoopConfig",
    "TrainingInterrupted",
    "WarmupCosine",
    "masked_reconstruction_quality",
    "prepare_rows",
    "train_mbm",
    "voxel_mean_baseline",
]
