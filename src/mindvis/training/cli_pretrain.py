"""Stage A1: pre-train the SC-MBM masked autoencoder on HCP resting-state fMRI (+ GOD training fMRI).

Data: each HCP_visual_voxel.npz gives V1..V4 voxels, averaged over
non-overlapping blocks of `window` frames (mindvis.data.hcp); GOD sbj_N.npz
files add their training fMRI when `include_god` is true. Subjects are joined
MinD-Vis style (each wrap-padded to the longest, rows stacked), wrap-padded to
a multiple of the patch size, and z-scored with one scalar mean/std of the
training rows. A seeded `holdout_fraction` of the rows is held out to report
the masked-voxel reconstruction quality every epoch (mbm_trainer: masked_corr,
masked_r2, masked_corr_per_sample, each voxel scored once and only when all its
wrap-padding copies were masked).

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
from mindvis.data.conventions import join_subjects
from mindvis.models import MbmModelConfig, ScMbm, count_parameters, resolve_arch
from mindvis.models.sc_mbm import ENCODER_PREFIXES
from mindvis.training import distributed as ddp
from mindvis.training.mbm_trainer import (
    LoopConfig,
    TrainingInterrupted,
    check_finite,
    prepare_rows,
    split_holdout,
    train_mbm,
    wrap_sources,
)
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
    # Add the GOD training fMRI given with --god (MinD-Vis does). The embedded demo sets false: its
    # simulated GOD rows have ~4x the std of HCP window averages, so under one scalar z-score they
    # dominate the loss, and they would put A2's held-out rows into A1's training set.
    include_god: bool = True


def load_stage_a1_rows(hcp_paths: list[Path], god_paths: list[Path], window: int,
                       include_god: bool) -> tuple[np.ndarray, dict[str, Any], np.ndarray]:
    """The joined (n, V) matrix (not yet padded/normalised), a count summary, and each
    row's number of distinct voxels before joining (shorter subjects are wrap-padded)."""
    from mindvis.data.hcp import hcp_stage_a_matrix

    parts: list[np.ndarray] = []
    summary: dict[str, Any] = {"hcp_files": len(hcp_paths), "god_files": 0}
    hcp = check_finite(hcp_stage_a_matrix([str(p) for p in hcp_paths], window=window), "HCP stage A matrix",
                       hcp_paths[0] if len(hcp_paths) == 1 else None)
    parts.append(hcp)
    summary.update(hcp_rows=int(hcp.shape[0]), hcp_voxels=int(hcp.shape[1]))
    if god_paths and not include_god:
        log.warning("include_god is false: ignoring %d GOD file(s)", len(god_paths))
    if god_paths and include_god:
        from mindvis.data.god import load_god_npz

        god_rows = 0
        for path in god_paths:
            fmri = check_finite(load_god_npz(path).train_fmri, "GOD training fMRI", path)
            parts.append(fmri)
            god_rows += fmri.shape[0]
        summary.update(god_files=len(god_paths), god_rows=god_rows)
    matrix = join_subjects(parts)
    row_voxels = np.concatenate([np.full(part.shape[0], part.shape[1], dtype=np.int64) for part in parts])
    summary.update(rows=int(matrix.shape[0]), joined_voxels=int(matrix.shape[1]))
    log.info("stage A1 data: %d HCP rows (%d voxels), %d GOD rows -> %s", summary["hcp_rows"],
             summary["hcp_voxels"], summary.get("god_rows", 0), matrix.shape)
    return matrix, summary, row_voxels


def row_sources(row_voxels: np.ndarray, joined: int, padded: int, num_voxels: int) -> np.ndarray:
    """(n, num_voxels) original voxel id of every position of each row (wrap copies share it)."""
    out = np.empty((row_voxels.size, num_voxels), dtype=np.int64)
    for n in np.unique(row_voxels):
        out[row_voxels == n] = wrap_sources([int(n), joined, padded, num_voxels])
    return out


def pretrain_from_matrix(matrix: np.ndarray, out: str | Path, cfg: MbmTrainConfig, tracker=None,
                         env: ddp.DistEnv | None = None, stop_after_steps: int | None = None,
                         data_summary: dict[str, Any] | None = None,
                         row_voxels: np.ndarray | None = None) -> dict[str, Any]:
    """Stage A1 on an (n, V) matrix of raw (unpadded, unnormalised) fMRI rows.

    `row_voxels`: each row's distinct voxels before it was wrap-padded to V (None: V).
    """
    arch = resolve_arch(cfg.model)
    matrix = check_finite(matrix, "stage A1 matrix")
    if row_voxels is None:
        row_voxels = np.full(matrix.shape[0], matrix.shape[1], dtype=np.int64)
    train_idx, hold_idx = split_holdout(matrix.shape[0], cfg.holdout_fraction, cfg.seed)
    rows = prepare_rows(matrix[train_idx], matrix[hold_idx], patch_size=arch.patch_size)
    sources = row_sources(np.asarray(row_voxels)[hold_idx], matrix.shape[1], rows.padded_voxels, rows.num_voxels)
    seed_everything(cfg.seed)  # model initialisation
    model = ScMbm(arch, rows.num_voxels // arch.patch_size)
    export = reference_config(
        arch, model.n_tokens,
        mindvis={"stage": "A1", "norm_mean": rows.norm.mean, "norm_std": rows.norm.std,
                 "raw_voxels": rows.raw_voxels, "window": cfg.window, **(data_summary or {})},
    )
    summary = train_mbm(model, rows.train, rows.holdout, cfg, out, export, tracker=tracker, env=env,
                        stop_after_steps=stop_after_steps, holdout_sources=sources)
    summary.update(raw_voxels=rows.raw_voxels, norm_mean=rows.norm.mean, norm_std=rows.norm.std,
                   encoder_params=count_parameters(model, ENCODER_PREFIXES, trainable_only=True),
                   total_params=count_parameters(model, trainable_only=True), **(data_summary or {}))
    return summary


def pretrain_mbm(hcp_paths: list[Path], god_paths: list[Path], out: str | Path, cfg: MbmTrainConfig,
                 tracker=None, env: ddp.DistEnv | None = None) -> dict[str, Any]:
    matrix, data_summary, row_voxels = load_stage_a1_rows(hcp_paths, god_paths, cfg.window, cfg.include_god)
    return pretrain_from_matrix(matrix, out, cfg, tracker=tracker, env=env, data_summary=data_summary,
                                row_voxels=row_voxels)


def add_arguments(parser) -> None:
    parser.add_argument("--hcp", nargs="+", type=Path, required=True, metavar="NPZ",
                        help="HCP_visual_voxel.npz files (one per HCP subject)")
    parser.add_argument("--god", nargs="*", type=Path, default=[], metavar="NPZ",
                        help="GOD sbj_N.npz files whose training fMRI join the pre-training data "
                             "(used when config include_god is true)")
    parser.add_argument("--out", type=Path, required=True,
                        help="output checkpoint, e.g. <dir>/fmri_encoder.pth (resume state: <out>.resume.pt)")


def run(args) -> int:
    from mindvis.config import load_section
    from mindvis.training.mbm_trainer import resolve_device

    cfg = load_section(MbmTrainConfig, args.config, args.overrides)
    env = ddp.init_distributed(resolve_device(cfg.device, ddp.env_from_environment()).type)
    if not env.is_main:
        args.no_tracking = True  # one MLflow run per job, from rank 0
    from mindvis.tracking import tracker_for

    try:
        with tracker_for(args, cfg, dataset="hcp") as tracker:
            try:
                summary = pretrain_mbm(args.hcp, args.god, args.out, cfg, tracker=tracker, env=env)
            except TrainingInterrupted as exc:
                log.warning("%s", exc)
                tracker.mark_interrupted(exc.step)
                return 143
            if env.is_main:
                tracker.log_dict(summary, "summary.json")
                tracker.log_file_reference(args.out, "fmri_encoder")
    finally:
        ddp.shutdown()
    return 0
