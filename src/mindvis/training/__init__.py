"""Training of every stage: SC-MBM (MinD-Vis stage A) and the latent diffusion model (stage B).

Stage A: mbm_trainer (the loop), schedule, optim; stage_a1 (pre-training) and stage_a2
(fine-tuning), run by the thin commands cli_pretrain (`pretrain-mbm`) and cli_finetune (`finetune-mbm`).
Stage B: ldm_trainer (the demo prior's VQ autoencoder and label2img UNet, and
DC-LDM fine-tuning); commands cli_autoencoder, cli_label2img and
cli_finetune_ldm (`finetune-ldm`).
Shared: checkpointing (resume files), distributed (DDP), input_identity
(resume fingerprints), job (the shell of every training command).
The names exported here are stage A's; stage B's live in ldm_trainer.
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
