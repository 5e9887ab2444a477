"""Stage A1: pre-train the SC-MBM masked autoencoder on HCP resting-state fMRI (+ GOD training fMRI).

Data (`mindvis.data.stage_a1_rows`, docs/reference.md §4): each HCP_visual_voxel.npz
gives the `roi` voxels (VC = V1..V4) averaged over non-overlapping blocks of
`window` frames; GOD sbj_N.npz files add the `roi` voxels of their training fMRI
when `include_god` is true. Each subject is wrap-padded to a multiple of the
patch size and z-scored on its own (`normalisation`: "clean" fits the statistics
on its training rows, "reference" on all its rows as MinD-Vis), then wrapped to
the joint length; rows are stacked HCP first. A seeded `holdout_fraction` of the
rows is held out to report the masked-voxel reconstruction quality every epoch
(training.mbm_quality: masked_corr, masked_r2, masked_corr_per_sample, each voxel scored
once and only when all its wrap-padding copies were masked).

Output: <out> (e.g. fmri_encoder.pth) in MinD-Vis's layout: dict with model,
optimizer, epoch, scaler and config (a plain dict with Config_MBM_fMRI's field
names). Progress is saved to <out>.resume.pt every `checkpoint_every_steps`
steps and on SIGTERM (exit code 143); rerunning the same command resumes.
Multi-GPU / multi-process: `torchrun --nproc_per_node=K -m mindvis pretrain-mbm ...`
(batch_size is per process).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mindvis.checkpoints.mindvis_encoder import reference_config
from mindvis.data.stage_a1 import NORMALISATIONS, A1Source, StageA1Rows, join_a1_sources, stage_a1_rows
from mindvis.models import MbmModelConfig, ScMbm, count_parameters, resolve_arch
from mindvis.models.sc_mbm import ENCODER_PREFIXES
from mindvis.training import distributed as ddp
from mindvis.training.mbm import LoopConfig, check_finite, train_mbm
from mindvis.utils.errors import ConfigError
from mindvis.utils.seeding import seed_everything

log = logging.getLogger(__name__)


@dataclass
class MbmTrainConfig(LoopConfig):
    """Stage A1 (`stage_a.pretrain`, with `model` from `stage_a.model`). Defaults: the embedded demo."""

    model: MbmModelConfig = field(default_factory=MbmModelConfig)  # architecture: preset + overrides
    epochs: int = 40  # paper: 500
    batch_size: int = 16  # per process; paper: 100 per GPU (the demo needs optimizer steps more than rows)
    lr: float = 3.0e-3  # paper: 2.5e-4 (the tiny model tolerates more)
    warmup_epochs: float = 2.0  # paper: 40
    window: int = 10  # HCP frames averaged per sample (non-overlapping blocks)
    # Add the GOD training fMRI given with --god (MinD-Vis does; they include the rows A2 holds out).
    include_god: bool = True
    # ROI of every subject: VC = HCP's V1..V4 and GOD's VC mask (MinD-Vis); another name = that HCP
    # npz key and that GOD mask.
    roi: str = "VC"
    # Per-subject scalar z-score after wrap padding (docs/reference.md §4). clean: statistics of the
    # subject's training rows only, so the held-out rows scoring the reconstruction metric never shape
    # the scaling; reference: of all its rows, as MinD-Vis (equal to the reference's matrix at
    # holdout_fraction 0).
    normalisation: str = "clean"
    threads: int = 1  # torch CPU threads (0 = torch's default); 2 collapse when jobs share 2 cores


def check_normalisation(cfg: MbmTrainConfig) -> None:
    if cfg.normalisation not in NORMALISATIONS:
        raise ConfigError(f"stage_a.pretrain.normalisation must be one of {NORMALISATIONS}, got {cfg.normalisation!r}")


def pretrain_from_rows(data: StageA1Rows, out: str | Path, cfg: MbmTrainConfig, tracker=None,
                       env: ddp.DistEnv | None = None, stop_after_steps: int | None = None) -> dict[str, Any]:
    """Stage A1 on a built matrix (`stage_a1_rows`): the model takes its length, N = L / patch tokens."""
    arch = resolve_arch(cfg.model)
    if data.n_voxels % arch.patch_size:
        raise ConfigError(f"stage A1 rows have {data.n_voxels} voxels, not a multiple of the model's "
                          f"patch size {arch.patch_size}")
    data_summary = data.summary()
    seed_everything(cfg.seed)  # model initialisation
    model = ScMbm(arch, data.n_voxels // arch.patch_size)
    export = reference_config(arch, model.n_tokens,
                              mindvis={"stage": "A1", "window": cfg.window, "roi": cfg.roi, **data_summary})
    summary = train_mbm(model, data.train_rows(), data.holdout_rows(), cfg, out, export, tracker=tracker, env=env,
                        stop_after_steps=stop_after_steps, holdout_sources=data.voxel_sources(data.holdout))
    summary.update(encoder_params=count_parameters(model, ENCODER_PREFIXES, trainable_only=True),
                   total_params=count_parameters(model, trainable_only=True), **data_summary)
    return summary


def pretrain_from_matrix(matrix: np.ndarray, out: str | Path, cfg: MbmTrainConfig, tracker=None,
                         env: ddp.DistEnv | None = None, stop_after_steps: int | None = None) -> dict[str, Any]:
    """Stage A1 on one subject's (n, V) raw (unpadded, unnormalised) rows, with `cfg.normalisation`."""
    check_normalisation(cfg)
    matrix = check_finite(matrix, "stage A1 matrix")
    data = join_a1_sources([A1Source("matrix", "matrix", matrix)], cfg.normalisation, cfg.holdout_fraction,
                           cfg.seed, resolve_arch(cfg.model).patch_size)
    return pretrain_from_rows(data, out, cfg, tracker=tracker, env=env, stop_after_steps=stop_after_steps)


def pretrain_mbm(hcp_paths: list[Path], god_paths: list[Path], out: str | Path, cfg: MbmTrainConfig,
                 tracker=None, env: ddp.DistEnv | None = None) -> dict[str, Any]:
    check_normalisation(cfg)
    if god_paths and not cfg.include_god:
        log.warning("include_god is false: ignoring %d GOD file(s)", len(god_paths))
        god_paths = []
    data = stage_a1_rows(hcp_paths, god_paths, window=cfg.window, roi=cfg.roi, normalisation=cfg.normalisation,
                         holdout_fraction=cfg.holdout_fraction, seed=cfg.seed,
                         patch_size=resolve_arch(cfg.model).patch_size)
    return pretrain_from_rows(data, out, cfg, tracker=tracker, env=env)
