"""SC-MBM training, shared by stage A1 (pre-training) and A2 (fine-tuning): its keys, its rows, its loss.

Input: a float32 matrix (n, V) already wrap-padded, scalar-normalised and brought to the
model's length (`prepare_rows`), plus held-out rows for evaluation. MinD-Vis stage A
(its public code): AdamW (0.9, 0.95) without decay on biases / 1-D parameters, per-iteration
warm-up + half cosine, gradient-norm clipping; the loss of a batch is the MAE loss on the
masked patches, the masking noise of step s drawn for the global batch from (seed, s)
(training.distributed.global_mask_noise). Every epoch the held-out rows are scored on their
hidden voxels (training.mbm_quality). The loop, resuming, SIGTERM and DDP: training.engine.
The final model goes to `<out>` in MinD-Vis's fmri_encoder.pth layout.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mindvis.checkpoints.mindvis_encoder import export_mbm_checkpoint
from mindvis.data.conventions import ScalarNorm, fit_voxels, wrap_pad
from mindvis.models.sc_mbm import ScMbm
from mindvis.training import distributed as ddp
from mindvis.training.engine import EngineConfig, LoopHooks, digest, resolve_precision, run_loop, start_process
from mindvis.training.mbm_quality import masked_reconstruction_quality, voxel_mean_baseline
from mindvis.training.optim import build_adamw
from mindvis.training.schedule import WarmupCosine
from mindvis.utils.errors import ConfigError, InputDataError

log = logging.getLogger(__name__)


@dataclass
class LoopConfig(EngineConfig):
    """Keys every SC-MBM training stage shares (A1 and A2 subclass it with their own defaults)."""

    epochs: int = 20  # passes over the training rows
    batch_size: int = 32  # rows per process and step (global batch = batch_size * processes)
    lr: float = 2.5e-4  # peak learning rate, reached after warm-up
    min_lr: float = 0.0  # learning rate at the end of the half cosine
    weight_decay: float = 0.05  # AdamW decay (not on biases and 1-D parameters)
    warmup_epochs: float = 2.0  # linear warm-up length, in epochs (per-iteration schedule)
    clip_grad: float = 0.8  # max gradient L2 norm; 0 disables clipping
    mask_ratio: float = 0.75  # fraction of tokens masked (MAE-style, per sample)
    holdout_fraction: float = 0.1  # rows held out for the reconstruction-quality metric
    num_workers: int = 0  # DataLoader worker processes (rows live in memory: 0 is usually fastest)
    eval_mask_seed: int = 7  # fixed masks for the held-out metric, identical every epoch and run
    threads: int = 0  # CPU intra-op threads for torch (0: torch's default); set it to the job's cores


# -- data -------------------------------------------------------------------------
@dataclass
class PreparedRows:
    train: np.ndarray  # (n_train, num_voxels) float32, normalised
    holdout: np.ndarray  # (n_holdout, num_voxels) float32, normalised
    norm: ScalarNorm  # statistics of the (padded) training rows
    raw_voxels: int  # voxels before any padding
    padded_voxels: int  # after MinD-Vis's wrap padding
    num_voxels: int  # after fitting to the model (padding or cutting)


def check_finite(matrix: np.ndarray, what: str, path: str | Path | None = None) -> np.ndarray:
    matrix = np.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape[0] == 0 or matrix.shape[1] == 0:
        raise InputDataError(path, f"{what}: expected a non-empty (samples, voxels) matrix, got {matrix.shape}")
    bad = ~np.isfinite(matrix)
    if bad.any():
        rows = np.unique(np.nonzero(bad)[0])
        raise InputDataError(path, f"{what}: {int(bad.sum())} NaN/Inf values in {rows.size} rows "
                                   f"(first rows {rows[:5].tolist()})")
    return matrix.astype(np.float32, copy=False)


def prepare_rows(train_rows: np.ndarray, holdout_rows: np.ndarray, num_voxels: int | None = None,
                 norm_rows: np.ndarray | None = None, patch_size: int = 16) -> PreparedRows:
    """MinD-Vis conventions: wrap-pad, scalar z-score with training statistics, fit to the model length.

    `norm_rows` (default: `train_rows`) are the rows whose single mean/std is
    used, computed after wrap padding (the reference pads first, then
    normalises). `num_voxels`: the model's input length (None: the padded
    length); longer rows are cut, shorter wrap-padded (`fit_voxels`).
    """
    raw = train_rows.shape[1]
    train_p = wrap_pad(train_rows, patch_size)
    hold_p = wrap_pad(holdout_rows, patch_size) if holdout_rows.size else holdout_rows.reshape(0, train_p.shape[1])
    norm = ScalarNorm.fit(wrap_pad(norm_rows, patch_size) if norm_rows is not None else train_p)
    target = train_p.shape[1] if num_voxels is None else int(num_voxels)
    if target < train_p.shape[1]:
        log.warning("data have %d voxels after padding but the model takes %d: the last %d are cut",
                    train_p.shape[1], target, train_p.shape[1] - target)
    train = fit_voxels(norm.apply(train_p), target)
    hold = fit_voxels(norm.apply(hold_p), target) if hold_p.shape[0] else np.zeros((0, target), np.float32)
    return PreparedRows(train=np.ascontiguousarray(train, dtype=np.float32),
                        holdout=np.ascontiguousarray(hold, dtype=np.float32), norm=norm, raw_voxels=raw,
                        padded_voxels=train_p.shape[1], num_voxels=target)


class _Rows(torch.utils.data.Dataset):
    """Rows of an in-memory matrix; `__getitems__` fetches a whole batch by one fancy index."""

    def __init__(self, rows: torch.Tensor):
        self.rows = rows

    def __len__(self) -> int:
        return self.rows.shape[0]

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.rows[i]

    def __getitems__(self, indices: list[int]) -> torch.Tensor:
        return self.rows[torch.as_tensor(indices)]


def train_mbm(model: ScMbm, train_rows: np.ndarray, holdout_rows: np.ndarray, cfg: LoopConfig,
              out_path: str | Path, export_config: dict[str, Any], tracker=None, env: ddp.DistEnv | None = None,
              stop_after_steps: int | None = None, holdout_sources: np.ndarray | None = None,
              inputs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train `model` on normalised rows; write `out_path` (fmri_encoder.pth layout); return a summary.

    `holdout_sources`: (P,) or (n_holdout, P) original voxel id of each position of the
    held-out rows (`wrap_sources`; None: all positions distinct), so the metric scores
    each voxel once and only when none of its copies was visible.
    `stop_after_steps` abandons the run after that many global steps without
    saving anything more (what a SIGKILL does): for tests of resuming.
    `inputs`: identities of the files the model was built from (`input_identity`), for the resume fingerprint.
    """
    env, device = start_process(cfg, env)
    train_rows = check_finite(train_rows, "training rows")
    if train_rows.shape[1] != model.num_voxels:
        raise ConfigError(f"rows have {train_rows.shape[1]} voxels, the model takes {model.num_voxels}")
    model.to(device)
    n_train = train_rows.shape[0]
    fingerprint = {
        "data": digest(train_rows), "num_voxels": model.num_voxels, "arch": str(model.arch.as_dict()),
        **{k: getattr(cfg, k) for k in ("epochs", "lr", "min_lr", "weight_decay", "warmup_epochs", "clip_grad",
                                        "mask_ratio", "seed")}, **(inputs or {}),
    }
    voxel_mean = train_rows.mean(axis=0)  # the per-voxel-mean baseline's prediction
    amp_dtype, _ = resolve_precision(cfg.precision, device)  # the held-out metric runs as training does

    def step_loss(rows, draws, step):
        noise = ddp.global_mask_noise(cfg.seed, step, draws.global_batch, model.n_tokens)[draws.rows]
        loss, _, _ = model(rows.to(device, non_blocking=True), cfg.mask_ratio, noise.to(device, non_blocking=True))
        return loss

    def evaluate(epoch: int = 0) -> dict[str, float]:
        if not env.is_main or holdout_rows.shape[0] == 0:
            return {}
        q = masked_reconstruction_quality(model, holdout_rows, cfg.mask_ratio, cfg.eval_mask_seed,
                                          batch_size=max(cfg.batch_size, 64), device=device,
                                          autocast_dtype=amp_dtype, voxel_mean=voxel_mean, sources=holdout_sources)
        return {f"holdout_{k}": v for k, v in q.items()}

    def export(done):
        config = dict(export_config, num_epoch=cfg.epochs, **{k: v for k, v in asdict(cfg).items()
                                                              if k in ("lr", "min_lr", "weight_decay",
                                                                       "warmup_epochs", "batch_size",
                                                                       "clip_grad", "mask_ratio", "seed")})
        export_mbm_checkpoint(out_path, model, config, epoch=max(done.step - 1, 0) // done.steps_per_epoch,
                              optimizer=done.optimizer.state_dict(), scaler=done.scaler.state_dict())

    baseline = voxel_mean_baseline(voxel_mean, holdout_rows, model, cfg.mask_ratio, cfg.eval_mask_seed,
                                   sources=holdout_sources) if env.is_main else {}
    hooks = LoopHooks(step_loss, epoch_end=evaluate, initial=evaluate,
                      optimizer=lambda: build_adamw(model, cfg.lr, cfg.weight_decay),
                      schedule=lambda steps_per_epoch: WarmupCosine.from_epochs(
                          cfg.lr, cfg.epochs, cfg.warmup_epochs, steps_per_epoch, cfg.min_lr))
    rows = _Rows(torch.from_numpy(np.ascontiguousarray(train_rows)))
    result = run_loop(model, rows, cfg, out_path, fingerprint, hooks, export, tracker=tracker,
                      stop_after_steps=stop_after_steps, desc="SC-MBM", env=env, read_every_steps=10,
                      num_workers=cfg.num_workers)
    if "stopped_at_step" in result:
        return result
    history = result["history"]
    final, first = (history[-1], history[0]) if history else ({}, {})
    result.update({
        "n_train": n_train, "n_holdout": int(holdout_rows.shape[0]), "num_voxels": model.num_voxels,
        "n_tokens": model.n_tokens,
        **{f"initial_holdout_{k}": first.get(f"holdout_{k}") for k in ("masked_corr", "masked_r2",
                                                                       "masked_corr_per_sample")},
        **{f"holdout_{k}": final.get(f"holdout_{k}") for k in ("masked_corr", "masked_r2", "masked_corr_per_sample",
                                                               "hidden_voxels", "loss")},
        **{f"voxel_mean_baseline_{name}": baseline.get(k) for name, k in (
            ("corr", "masked_corr"), ("loss", "loss"), ("r2", "masked_r2"),
            ("corr_per_sample", "masked_corr_per_sample"))},
    })
    return result
