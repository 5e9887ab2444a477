"""The SC-MBM training loop, shared by stage A1 (pre-training) and A2 (fine-tuning).

Input: a float32 matrix (n, V) already wrap-padded, scalar-normalised and
brought to the model's length (`prepare_rows`), plus held-out rows for
evaluation. The loop follows MinD-Vis stage A (MinD-Vis's public code):
AdamW (0.9, 0.95) without decay on biases / 1-D parameters, per-iteration
warm-up + half cosine, gradient-norm clipping, mixed precision on CUDA.

Determinism: the row order of an epoch and the masking noise of a step are
functions of (seed, epoch) and (seed, step) only (see training.distributed),
so a resumed run and a DDP run repeat the exact same batches and masks.

Evaluation: every epoch, the held-out rows are masked with fixed masks and
scored on their hidden voxels (see the evaluation section below): masked_corr
(pooled Pearson r beyond the per-voxel training mean), masked_r2 (share of the
per-voxel-mean baseline's squared error removed) and masked_corr_per_sample
(MinD-Vis-style per-row r, which ignores frame-wide fluctuations).

Reliability: every `checkpoint_every_steps` updates and at the end, the
full state goes atomically to `<out>.resume.pt`; SIGTERM saves it and raises
`TrainingInterrupted`; rerunning the same command resumes. The final model
goes to `<out>` in MinD-Vis's fmri_encoder.pth layout; the resume file is
then removed (unless `keep_resume`).
"""

from __future__ import annotations

import hashlib
import logging
import math
import signal
import threading
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from mindvis.checkpoints.mindvis_encoder import export_mbm_checkpoint
from mindvis.data.conventions import ScalarNorm, fit_voxels, wrap_pad
from mindvis.models.sc_mbm import ScMbm
from mindvis.training import distributed as ddp
from mindvis.training.checkpointing import (
    capture_rng,
    load_resume_state,
    restore_rng,
    resume_path_for,
    save_resume_state,
)
from mindvis.training.input_identity import hash_cache_path_for
from mindvis.training.optim import build_adamw
from mindvis.training.schedule import WarmupCosine
from mindvis.utils.errors import ConfigError, InputDataError, MindVisError
from mindvis.utils.device import resolve_device, set_threads

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass
class LoopConfig:
    """Keys every SC-MBM training stage shares (A1 and A2 subclass it with their own defaults)."""

    epochs: int = 20  # passes over the training rows
    batch_size: int = 32  # rows per process and step (global batch = batch_size * processes)
    lr: float = 2.5e-4  # peak learning rate, reached after warm-up
    min_lr: float = 0.0  # learning rate at the end of the half cosine
    weight_decay: float = 0.05  # AdamW decay (not on biases and 1-D parameters)
    warmup_epochs: float = 2.0  # linear warm-up length, in epochs (per-iteration schedule)
    clip_grad: float = 0.8  # max gradient L2 norm; 0 disables clipping
    mask_ratio: float = 0.75  # fraction of tokens masked (MAE-style, per sample)
    precision: str = "auto"  # auto (CUDA: bf16 if supported else fp16; CPU: fp32) | fp32 | bf16 | fp16
    seed: int = 2022  # seeds init, row order, masks, held-out split
    checkpoint_every_steps: int = 200  # resumable checkpoint period in optimizer steps (0: only at the end)
    holdout_fraction: float = 0.1  # rows held out for the reconstruction-quality metric
    num_workers: int = 0  # DataLoader worker processes (rows live in memory: 0 is usually fastest)
    eval_mask_seed: int = 7  # fixed masks for the held-out metric, identical every epoch and run
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda
    keep_resume: bool = False  # keep <out>.resume.pt after a successful run
    threads: int = 0  # CPU intra-op threads for torch (0: torch's default); set it to the job's cores
    max_steps: int | None = None  # stop after this many optimizer steps (None: no cap): the first max_steps
    #                               steps of the full run (schedule unchanged), then the normal outputs


class TrainingInterrupted(MindVisError):
    """SIGTERM (or an external stop) arrived; the state was saved to the resume file."""

    def __init__(self, step: int, resume_path: Path):
        self.step = step
        self.resume_path = resume_path
        super().__init__(f"training stopped at step {step}; state saved to {resume_path}; rerun to resume")


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


class _StepBatches(torch.utils.data.Sampler):
    """This process's row indices for steps `first..steps-1` of one epoch."""

    def __init__(self, order: torch.Tensor, first: int, steps: int, batch: int, env: ddp.DistEnv):
        self.order, self.first, self.steps, self.batch, self.env = order, first, steps, batch, env

    def __len__(self) -> int:
        return self.steps - self.first

    def __iter__(self):
        for i in range(self.first, self.steps):
            yield self.order[ddp.local_rows(self.order, i, self.batch, self.env)].tolist()


def _identity(batch):
    return batch


# -- evaluation ---------------------------------------------------------------------
# The held-out reconstruction quality. Only HIDDEN voxels count: a voxel of a row is hidden
# when every input position holding it is masked (wrap padding puts copies of voxels at
# several positions; a GOD subject fitted to a 262-token checkpoint appears ~6 times), so
# copying a visible duplicate earns nothing. A hidden voxel's prediction is the mean of the
# model's predictions at its positions. With m = the voxel's mean over the TRAINING rows:
#   masked_corr            Pearson r pooled over all hidden (row, voxel) entries between
#                          prediction - m and truth - m: what is predicted beyond the
#                          per-voxel-mean baseline (which scores 0 by construction), frame-wide
#                          fluctuations included;
#   masked_r2              1 - SSE(model) / SSE(per-voxel mean) over the same entries: the share
#                          of the baseline's squared error the model removes (< 0: worse than it);
#   masked_corr_per_sample mean over rows of the Pearson r across that row's hidden voxels
#                          (MinD-Vis style); blind to a frame-wide offset, it only credits the
#                          spatial pattern;
#   loss                   the model's own training loss (MSE over masked patches, copies included).
def wrap_sources(lengths: list[int] | tuple[int, ...]) -> np.ndarray:
    """The original voxel each position holds after a chain of wrap paddings or cuts.

    `lengths[0]` is the number of distinct voxels; each later entry is a length the
    vector is then brought to with `pad_to_length` (MinD-Vis's wrap padding, or a cut):
    e.g. [4183, 4192] for `wrap_pad` of an HCP row, [670, 672, 4192] for a GOD subject
    padded and fitted to a 262-token checkpoint. Equal ids = copies of one voxel.
    """
    ids = np.arange(int(lengths[0]))
    for n in lengths[1:]:
        ids = ids[np.arange(int(n)) % ids.size]
    return ids


def eval_masks(model: ScMbm, n_rows: int, mask_ratio: float, mask_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed held-out masking noise, and the (n, N) mask it gives (1 = masked)."""
    noise = model.masking_noise(n_rows, generator=torch.Generator().manual_seed(mask_seed))
    keep = int(model.n_tokens * (1 - mask_ratio))
    mask = torch.ones_like(noise)
    ranks = torch.argsort(torch.argsort(noise, dim=1), dim=1)
    mask[ranks < keep] = 0
    return noise, mask


class HiddenVoxelScore:
    """Accumulates, batch by batch, the sums behind masked_corr, masked_r2 and masked_corr_per_sample."""

    def __init__(self):
        self.sums = np.zeros(6)  # n, sum a, sum b, sum a^2, sum b^2, sum ab (a = pred - m, b = true - m)
        self.sse = 0.0
        self.row_corrs: list[float] = []

    def add(self, pred: torch.Tensor, true: torch.Tensor, voxel_mask: torch.Tensor, mean: torch.Tensor,
            sources: torch.Tensor) -> None:
        """pred, true, voxel_mask (1 = masked), sources: (B, P); mean: (P,)."""
        pred, true, voxel_mask = pred.double(), true.double(), voxel_mask.double()
        b = pred.shape[0]
        n_ids = int(sources.max()) + 1

        def per_voxel(values: torch.Tensor) -> torch.Tensor:
            return torch.zeros(b, n_ids, dtype=torch.float64, device=values.device).scatter_add_(1, sources, values)

        count = per_voxel(torch.ones_like(pred))
        hidden = (count > 0) & (per_voxel(voxel_mask) == count)
        denom = count.clamp_min(1)
        p, t = per_voxel(pred) / denom, per_voxel(true) / denom  # copies hold equal truths
        m = per_voxel(mean.double().expand(b, -1)) / denom
        a, c = (p - m)[hidden], (t - m)[hidden]
        self.sums += np.array([a.numel(), a.sum(), c.sum(), (a * a).sum(), (c * c).sum(), (a * c).sum()],
                              dtype=np.float64)
        self.sse += float(((a - c) ** 2).sum())
        w = hidden.double()
        n_row = w.sum(dim=1)
        pc = (p - (p * w).sum(1, keepdim=True) / n_row.clamp_min(1)[:, None]) * w
        tc = (t - (t * w).sum(1, keepdim=True) / n_row.clamp_min(1)[:, None]) * w
        norm = (pc.norm(dim=1) * tc.norm(dim=1))
        ok = (n_row >= 2) & (norm > 0)
        self.row_corrs += ((pc * tc).sum(dim=1)[ok] / norm[ok]).tolist()

    def result(self) -> dict[str, float]:
        n, sa, sb, saa, sbb, sab = self.sums
        if n == 0:
            return {}
        var_a, var_b = saa - sa * sa / n, sbb - sb * sb / n
        corr = (sab - sa * sb / n) / math.sqrt(var_a * var_b) if var_a > 1e-12 * n and var_b > 0 else 0.0
        return {"masked_corr": float(corr),
                "masked_r2": float(1.0 - self.sse / sbb) if sbb > 0 else 0.0,
                "masked_corr_per_sample": float(np.mean(self.row_corrs)) if self.row_corrs else 0.0,
                "hidden_voxels": int(n)}


def _voxel_mask(mask: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, N) token mask -> (B, N * patch) voxel mask."""
    return mask[:, :, None].expand(-1, -1, patch_size).reshape(mask.shape[0], -1)


def _sources_tensor(sources: np.ndarray | None, n_rows: int, n_positions: int) -> torch.Tensor:
    if sources is None:
        return torch.arange(n_positions).expand(n_rows, -1)
    src = torch.as_tensor(np.asarray(sources), dtype=torch.int64)
    if src.shape[-1] != n_positions or src.ndim not in (1, 2) or (src.ndim == 2 and src.shape[0] != n_rows):
        raise ValueError(f"sources must be ({n_positions},) or ({n_rows}, {n_positions}), got {tuple(src.shape)}")
    return src.expand(n_rows, -1)


@torch.no_grad()
def masked_reconstruction_quality(model: ScMbm, rows: np.ndarray | torch.Tensor, mask_ratio: float,
                                  mask_seed: int, batch_size: int = 256, device: str | torch.device = "cpu",
                                  autocast_dtype: torch.dtype | None = None,
                                  voxel_mean: np.ndarray | None = None,
                                  sources: np.ndarray | None = None) -> dict[str, float]:
    """Held-out loss and masked_corr / masked_r2 / masked_corr_per_sample (definitions above).

    `voxel_mean`: (P,) per-position mean of the training rows (None: zeros);
    `sources`: (P,) or (n, P) original voxel id of each position (None: all distinct).
    """
    x = torch.as_tensor(rows, dtype=torch.float32)
    if x.shape[0] == 0:
        return {}
    noise, _ = eval_masks(model, x.shape[0], mask_ratio, mask_seed)
    mean = torch.zeros(x.shape[1]) if voxel_mean is None else torch.as_tensor(voxel_mean, dtype=torch.float32)
    src = _sources_tensor(sources, x.shape[0], x.shape[1])
    was_training = model.training
    model.eval()
    device = torch.device(device)
    losses, score = [], HiddenVoxelScore()
    for start in range(0, x.shape[0], batch_size):
        xb = x[start:start + batch_size].to(device)
        nb = noise[start:start + batch_size].to(device)
        ctx = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else nullcontext()
        with ctx:
            loss, pred, mask = model(xb, mask_ratio, nb)
        if int(mask[0].sum()) == 0:
            continue
        losses.append(float(loss) * xb.shape[0])
        score.add(model.unpatchify(pred.float()).reshape(xb.shape[0], -1), xb, _voxel_mask(mask, model.patch_size),
                  mean.to(device), src[start:start + batch_size].to(device))
    model.train(was_training)
    quality = score.result()
    if not losses or not quality:
        return {}
    return {"loss": sum(losses) / x.shape[0], **quality}


def voxel_mean_baseline(train_rows: np.ndarray, holdout_rows: np.ndarray, model: ScMbm, mask_ratio: float,
                        mask_seed: int, sources: np.ndarray | None = None) -> dict[str, float]:
    """The same metrics when every masked voxel is predicted by its training mean (no model):
    masked_corr and masked_r2 are 0 by definition; loss and masked_corr_per_sample are measured."""
    if holdout_rows.shape[0] == 0:
        return {}
    _, mask = eval_masks(model, holdout_rows.shape[0], mask_ratio, mask_seed)
    vmask = _voxel_mask(mask, model.patch_size)
    mean = torch.as_tensor(train_rows.mean(axis=0), dtype=torch.float32)
    true = torch.as_tensor(holdout_rows, dtype=torch.float32)
    pred = mean[None].expand(true.shape[0], -1)
    score = HiddenVoxelScore()
    score.add(pred, true, vmask, mean, _sources_tensor(sources, true.shape[0], true.shape[1]))
    quality = score.result()
    if not quality:
        return {}
    sel = vmask.bool()
    return {"loss": float(((pred[sel] - true[sel]) ** 2).mean()), **quality}


# -- the loop -------------------------------------------------------------------------
def resolve_precision(name: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, use GradScaler)."""
    if name not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, got {name!r}")
    if name == "auto":
        if device.type != "cuda":
            return None, False
        name = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if name == "fp32":
        return None, False
    if name == "bf16":
        return torch.bfloat16, False
    if device.type != "cuda":
        raise ConfigError("precision=fp16 needs CUDA (use bf16 or fp32 on CPU)")
    return torch.float16, True


class _StopFlag:
    """Set by SIGTERM; checked after every step."""

    def __init__(self):
        self.raised = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame):
        log.warning("SIGTERM: saving a resumable checkpoint after the current step")
        self.raised = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _tracking(tracker) -> bool:
    # a disabled JobTracker would still import mlflow (~2 s) on every call
    return tracker is not None and getattr(tracker, "enabled", True)


def data_digest(rows: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(rows, dtype=np.float32).tobytes()).hexdigest()[:16]


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
    env = env or ddp.DistEnv()
    if cfg.threads < 0:
        raise ConfigError(f"threads must be >= 0, got {cfg.threads}")
    set_threads(cfg.threads)
    out_path = Path(out_path)
    resume_path = resume_path_for(out_path)
    device = resolve_device(cfg.device, env.local_rank)
    amp_dtype, use_scaler = resolve_precision(cfg.precision, device)
    train_rows = check_finite(train_rows, "training rows")
    if train_rows.shape[1] != model.num_voxels:
        raise ConfigError(f"rows have {train_rows.shape[1]} voxels, the model takes {model.num_voxels}")

    n_train = train_rows.shape[0]
    global_batch = cfg.batch_size * env.world_size
    steps_per_epoch = n_train // global_batch  # incomplete last batch dropped, as MAE
    if cfg.batch_size < 1 or steps_per_epoch < 1:
        raise ConfigError(f"batch_size={cfg.batch_size} x {env.world_size} process(es) exceeds the "
                          f"{n_train} training rows: lower batch_size")
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None and cfg.max_steps < 1:
        raise ConfigError(f"max_steps must be >= 1 or null, got {cfg.max_steps}")
    # a capped run is the prefix of the full run: the schedule still spans total_steps
    last_step = total_steps if cfg.max_steps is None else min(total_steps, int(cfg.max_steps))
    schedule = WarmupCosine.from_epochs(cfg.lr, cfg.epochs, cfg.warmup_epochs, steps_per_epoch, cfg.min_lr)

    model.to(device)
    optimizer = build_adamw(model, cfg.lr, cfg.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
    order_gen = torch.Generator()
    fingerprint = {
        "data": data_digest(train_rows), "n_train": n_train, "num_voxels": model.num_voxels,
        "arch": str(model.arch.as_dict()), "global_batch": global_batch, "epochs": cfg.epochs, "lr": cfg.lr,
        "min_lr": cfg.min_lr, "weight_decay": cfg.weight_decay, "warmup_epochs": cfg.warmup_epochs,
        "clip_grad": cfg.clip_grad, "mask_ratio": cfg.mask_ratio, "seed": cfg.seed,
        "precision": f"{amp_dtype}/{use_scaler}", **(inputs or {}),
    }

    step, history = 0, []
    accum = {"loss": 0.0, "grad_norm": 0.0, "steps": 0}
    resumed = load_resume_state(resume_path, fingerprint)
    if resumed is not None:
        model.load_state_dict(resumed["model"])
        optimizer.load_state_dict(resumed["optimizer"])
        scaler.load_state_dict(resumed["scaler"])
        restore_rng(resumed["rng"], order_gen)
        step, history, accum = int(resumed["step"]), list(resumed["history"]), dict(resumed["accum"])
        log.info("resumed from %s at step %d/%d", resume_path, step, total_steps)

    train_t = torch.from_numpy(np.ascontiguousarray(train_rows))
    core = model
    net = model
    if env.distributed:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    def state_payload() -> dict[str, Any]:
        return {
            "fingerprint": fingerprint, "step": step, "epoch": step // steps_per_epoch,
            "step_in_epoch": step % steps_per_epoch, "history": history, "accum": accum,
            "model": {k: v.detach().cpu() for k, v in core.state_dict().items()},
            "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
            "rng": capture_rng(order_gen), "world_size": env.world_size,
        }

    def save_state() -> None:
        if env.is_main:
            save_resume_state(resume_path, state_payload())
        ddp.barrier(env)

    voxel_mean = train_rows.mean(axis=0)  # the per-voxel-mean baseline's prediction

    def evaluate() -> dict[str, float]:
        if not env.is_main or holdout_rows.shape[0] == 0:
            return {}
        q = masked_reconstruction_quality(core, holdout_rows, cfg.mask_ratio, cfg.eval_mask_seed,
                                          batch_size=max(cfg.batch_size, 64), device=device,
                                          autocast_dtype=amp_dtype, voxel_mean=voxel_mean,
                                          sources=holdout_sources)
        return {f"holdout_{k}": v for k, v in q.items()}

    baseline = voxel_mean_baseline(train_rows, holdout_rows, core, cfg.mask_ratio, cfg.eval_mask_seed,
                                   sources=holdout_sources) if env.is_main else {}
    if step == 0:
        initial = evaluate()
        history.append({"epoch": 0, **initial})
        if _tracking(tracker) and initial:
            tracker.log_metrics(initial, step=0)

    clip = cfg.clip_grad if cfg.clip_grad and cfg.clip_grad > 0 else math.inf
    run_loss = torch.zeros((), device=device)
    run_gnorm = torch.zeros((), device=device)
    run_steps, last_loss = 0, float("nan")

    def flush() -> None:
        """Move the on-device running sums into `accum`; stop on a non-finite loss."""
        nonlocal run_steps, last_loss  # the tensors are zeroed in place
        if run_steps == 0:
            return
        total = float(run_loss)
        if not math.isfinite(total):
            raise MindVisError(f"SC-MBM loss became non-finite before step {step} (lr {lr:.3g}); "
                               "lower lr or use precision=fp32")
        accum["loss"] += total
        accum["grad_norm"] += float(run_gnorm)
        accum["steps"] += run_steps
        last_loss = total / run_steps
        run_loss.zero_()
        run_gnorm.zero_()
        run_steps = 0

    def checkpoint_due() -> bool:
        every = cfg.checkpoint_every_steps
        return every > 0 and step % every == 0 and step < last_step  # the end is saved anyway

    params = [p for p in core.parameters() if p.requires_grad]
    start_epoch = step // steps_per_epoch
    lr = schedule.lr_at(step)
    net.train()
    with _StopFlag() as stop:
        for epoch in range(start_epoch, cfg.epochs):
            if step >= last_step:
                break
            first = step - epoch * steps_per_epoch
            order = ddp.epoch_order(cfg.seed, epoch, n_train, order_gen)
            loader = DataLoader(_Rows(train_t), batch_sampler=_StepBatches(order, first, steps_per_epoch,
                                                                           cfg.batch_size, env),
                                collate_fn=_identity, num_workers=cfg.num_workers,
                                pin_memory=device.type == "cuda")
            t0, seen = time.perf_counter(), 0
            bar = tqdm(loader, total=steps_per_epoch, initial=first, disable=None if env.is_main else True,
                       desc=f"SC-MBM epoch {epoch + 1}/{cfg.epochs}", leave=False)
            for xb in bar:
                noise = ddp.global_mask_noise(cfg.seed, step, global_batch, core.n_tokens)
                noise = noise[env.rank * cfg.batch_size:(env.rank + 1) * cfg.batch_size]
                xb, noise = xb.to(device, non_blocking=True), noise.to(device, non_blocking=True)
                lr = schedule.apply(optimizer, step)
                ctx = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else nullcontext()
                with ctx:
                    loss, _, _ = net(xb, cfg.mask_ratio, noise)
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                grad_norm = torch.nn.utils.clip_grad_norm_(params, clip)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                seen += global_batch
                # stay on the device: reading a CUDA value every step would stall the pipeline
                run_loss += loss.detach().float()
                run_gnorm += grad_norm.detach().float()
                run_steps += 1
                if step % 10 == 0 or step % steps_per_epoch == 0:
                    flush()
                    bar.set_postfix(loss=f"{last_loss:.4f}", lr=f"{lr:.2e}")
                if stop_after_steps is not None and step >= stop_after_steps:
                    bar.close()
                    return {"stopped_at_step": step}
                if checkpoint_due() and step % steps_per_epoch:  # at an epoch's end: after its metrics, below
                    flush()
                    save_state()
                if step % steps_per_epoch and ddp.any_rank(stop.raised, env, device):
                    bar.close()
                    flush()
                    save_state()
                    raise TrainingInterrupted(step, resume_path)
                if step >= last_step:  # max_steps: the partial epoch still gets its metrics below
                    break
            bar.close()
            flush()
            elapsed = time.perf_counter() - t0
            sums = ddp.all_reduce_sum(torch.tensor([accum["loss"], accum["grad_norm"]], dtype=torch.float64),
                                      env) / env.world_size
            n_steps = max(accum["steps"], 1)
            metrics = {"loss": float(sums[0]) / n_steps, "grad_norm": float(sums[1]) / n_steps, "lr": lr,
                       "samples_per_s": seen / elapsed if elapsed > 0 else float("nan"), **evaluate()}
            history.append({"epoch": epoch + 1, **metrics})
            accum = {"loss": 0.0, "grad_norm": 0.0, "steps": 0}
            if env.is_main:
                log.info("epoch %d/%d: %s", epoch + 1, cfg.epochs,
                         ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
                if _tracking(tracker):
                    tracker.log_metrics(metrics, step=epoch + 1)
            if last_step < total_steps and step >= last_step:
                break  # max_steps reached: saved and exported below
            # at an epoch's end the state is saved after its metrics, so a resume starts the next epoch clean
            if ddp.any_rank(stop.raised, env, device):
                save_state()
                raise TrainingInterrupted(step, resume_path)
            if checkpoint_due():
                save_state()

    if env.is_main:
        save_resume_state(resume_path, state_payload())  # a crash during export still resumes at the end
        config = dict(export_config, num_epoch=cfg.epochs, **{k: v for k, v in asdict(cfg).items()
                                                              if k in ("lr", "min_lr", "weight_decay",
                                                                       "warmup_epochs", "batch_size",
                                                                       "clip_grad", "mask_ratio", "seed")})
        export_mbm_checkpoint(out_path, core, config, epoch=max(step - 1, 0) // steps_per_epoch,
                              optimizer=optimizer.state_dict(), scaler=scaler.state_dict())
        if not cfg.keep_resume:
            resume_path.unlink(missing_ok=True)
            hash_cache_path_for(out_path).unlink(missing_ok=True)
    ddp.barrier(env)

    final = history[-1] if history else {}
    return {
        "n_train": n_train, "n_holdout": int(holdout_rows.shape[0]), "num_voxels": model.num_voxels,
        "n_tokens": model.n_tokens, "steps": step, "steps_per_epoch": steps_per_epoch, "epochs": cfg.epochs,
        "max_steps": cfg.max_steps,
        "global_batch": global_batch, "world_size": env.world_size, "device": str(device),
        "precision": "fp32" if amp_dtype is None else str(amp_dtype).removeprefix("torch."),
        "resumed": resumed is not None, "final_loss": final.get("loss"),
        "initial_holdout_masked_corr": history[0].get("holdout_masked_corr") if history else None,
        "initial_holdout_masked_r2": history[0].get("holdout_masked_r2") if history else None,
        "initial_holdout_masked_corr_per_sample": history[0].get("holdout_masked_corr_per_sample")
        if history else None,
        "holdout_masked_corr": final.get("holdout_masked_corr"), "holdout_masked_r2": final.get("holdout_masked_r2"),
        "holdout_masked_corr_per_sample": final.get("holdout_masked_corr_per_sample"),
        "holdout_hidden_voxels": final.get("holdout_hidden_voxels"), "holdout_loss": final.get("holdout_loss"),
        "voxel_mean_baseline_corr": baseline.get("masked_corr"), "voxel_mean_baseline_loss": baseline.get("loss"),
        "voxel_mean_baseline_r2": baseline.get("masked_r2"),
        "voxel_mean_baseline_corr_per_sample": baseline.get("masked_corr_per_sample"),
        "history": history,
    }
