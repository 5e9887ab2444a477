"""Train the embedded default's judge: a small CNN on the stimulus set's TRAINING images.

The reference judges with an ImageNet classifier (ViT-H/14) that never saw the
fMRI experiment's test images. The demo's stand-in keeps that property: it is
trained on the training images only and its accuracy is measured on the
held-out test images (the ones the decoder reconstructs), which it never sees.

With 8 training images per class, augmentation carries the training: random
affine jitter (rotation, scale, shift; the border colour fills in), random
colours (channel permutation, inversion, per-channel gain and offset, gray),
blur and pixel noise, so that the judge classifies digit SHAPE and stays
usable on blurry reconstructions. (The judge's "ink map" input already
removes most colour variation; the colour jitter covers the rest.)
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mindvis.evaluation.judges import SmallCNN, SmallCNNJudge, small_cnn_checkpoint
from mindvis.utils.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class JudgeTrainConfig:
    epochs: int = 75  # passes over the training images
    batch_size: int = 40  # images per optimisation step
    lr: float = 5e-3  # AdamW peak learning rate (cosine decay to 0)
    weight_decay: float = 1e-4  # AdamW weight decay
    width: int = 16  # channels of the first conv block (then 2x, 4x); penultimate features = 4 * width
    image_size: int = 32  # the judge's input side: every image is resized to it (antialiased) first
    augment: bool = True  # random geometry / colour / blur / noise per batch (see module docstring)
    seed: int = 0  # initialisation, batch order and augmentation
    threads: int = 1  # torch CPU threads; 1 is fastest for this tiny network (thread sync costs more than it saves)
    max_steps: int | None = None  # stop after this many optimisation steps (None: no cap; the cosine still spans
    #                               every epoch, so a capped run is the start of the full one)


# ----------------------------------------------------------------------------- augmentation


def _random_affine(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    angle = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(12)
    scale = 0.85 + torch.rand(n, generator=gen) * 0.3
    shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * 0.12
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # "border" repeats the edge pixels: the background colour fills the uncovered area.
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _random_colour(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    perm = torch.stack([torch.randperm(3, generator=gen) for _ in range(n)])
    x = torch.gather(x, 1, perm[:, :, None, None].expand_as(x))
    invert = (torch.rand(n, 1, 1, 1, generator=gen) < 0.5).float()
    x = invert * (1 - x) + (1 - invert) * x
    gain = 0.6 + torch.rand(n, 3, 1, 1, generator=gen) * 0.8
    offset = (torch.rand(n, 3, 1, 1, generator=gen) * 2 - 1) * 0.2
    x = x * gain + offset
    gray = (torch.rand(n, 1, 1, 1, generator=gen) < 0.2).float()
    x = gray * x.mean(dim=1, keepdim=True).expand_as(x) + (1 - gray) * x
    return x.clamp(0, 1)


def _random_blur_noise(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    sigma = torch.rand(n, generator=gen) * 1.5 + 1e-3
    radius = 3
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-(t[None, :] ** 2) / (2 * sigma[:, None] ** 2))
    k = k / k.sum(dim=1, keepdim=True)  # (n, 2r+1)
    # Separable per-image blur: fold the batch into channels for one grouped conv.
    c = x.shape[1]
    flat = x.reshape(1, n * c, *x.shape[2:])
    kx = k.repeat_interleave(c, 0)[:, None, None, :]
    ky = k.repeat_interleave(c, 0)[:, None, :, None]
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="replicate"), kx, groups=n * c)
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="replicate"), ky, groups=n * c)
    x = flat.reshape_as(x)
    noise = torch.randn(x.shape, generator=gen) * (torch.rand(n, 1, 1, 1, generator=gen) * 0.08)
    return (x + noise).clamp(0, 1)


def augment_batch(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random geometry, colour, blur and noise for (n, 3, S, S) images in [0, 1]."""
    return _random_blur_noise(_random_colour(_random_affine(x, gen), gen), gen)


# ----------------------------------------------------------------------------- training


def _to_tensor(images: np.ndarray, size: int) -> torch.Tensor:
    """uint8 (n, H, W, 3) -> float (n, 3, size, size) in [0, 1], as `SmallCNNJudge.preprocess` does."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x


@torch.no_grad()
def accuracy(model: SmallCNN, images: np.ndarray, labels: np.ndarray, size: int) -> float:
    model.eval()
    pred = model(_to_tensor(images, size)).argmax(dim=1).numpy()
    return float(np.mean(pred == labels))


def train_judge(
    train_images: np.ndarray,
    train_labels: np.ndarray,
    class_names: list[str],
    cfg: JudgeTrainConfig,
    heldout_images: np.ndarray | None = None,
    heldout_labels: np.ndarray | None = None,
) -> tuple[SmallCNNJudge, dict]:
    """Train a SmallCNN judge; return it and a summary (losses, train and held-out accuracy, time)."""
    if cfg.epochs < 1 or cfg.batch_size < 1 or cfg.image_size < 8:
        raise ConfigError("train_judge: epochs and batch_size must be >= 1, image_size >= 8")
    if cfg.max_steps is not None and cfg.max_steps < 1:
        raise ConfigError(f"train_judge: max_steps must be >= 1 or null, got {cfg.max_steps}")
    n_classes = len(class_names)
    if train_labels.min() < 0 or train_labels.max() >= n_classes:
        raise ConfigError(f"train_judge: labels outside [0, {n_classes})")
    threads_before = torch.get_num_threads()
    torch.set_num_threads(max(1, cfg.threads))
    try:
        torch.manual_seed(cfg.seed)
        gen = torch.Generator().manual_seed(cfg.seed)
        model = SmallCNN(n_classes, cfg.width)
        x_all, y_all = _to_tensor(train_images, cfg.image_size), torch.from_numpy(train_labels.astype(np.int64))
        steps_per_epoch = math.ceil(len(x_all) / cfg.batch_size)
        total = cfg.epochs * steps_per_epoch
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
        last_step = total if cfg.max_steps is None else min(total, int(cfg.max_steps))
        step = 0
        t0 = time.perf_counter()
        losses = []
        for epoch in range(cfg.epochs):
            if step >= last_step:
                break
            model.train()
            order = torch.randperm(len(x_all), generator=gen)
            epoch_loss, seen = 0.0, 0
            for start in range(0, len(order), cfg.batch_size):
                if step >= last_step:
                    break
                idx = order[start : start + cfg.batch_size]
                xb = augment_batch(x_all[idx], gen) if cfg.augment else x_all[idx]
                loss = F.cross_entropy(model(xb), y_all[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                step += 1
                epoch_loss += loss.item() * len(idx)
                seen += len(idx)
            losses.append(epoch_loss / seen)
            log.debug("judge epoch %d loss %.4f", epoch, losses[-1])
        seconds = time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads_before)
    summary = {
        "n_train": int(len(x_all)),
        "n_classes": n_classes,
        "epochs": cfg.epochs,
        "steps": step,
        "max_steps": cfg.max_steps,
        "final_loss": losses[-1],
        "train_accuracy": accuracy(model, train_images, train_labels, cfg.image_size),
        "train_seconds": round(seconds, 2),
        "loss_per_epoch": losses,
    }
    if heldout_images is not None and heldout_labels is not None and len(heldout_images):
        summary["heldout_accuracy"] = accuracy(model, heldout_images, heldout_labels, cfg.image_size)
        summary["n_heldout"] = int(len(heldout_images))
        summary["heldout_chance"] = 1.0 / n_classes
    log.info(
        "judge: %d epochs on %d images in %.1f s; train acc %.3f, held-out acc %s",
        cfg.epochs, len(x_all), seconds, summary["train_accuracy"], summary.get("heldout_accuracy"),
    )
    info = {k: v for k, v in summary.items() if k != "loss_per_epoch"}
    return SmallCNNJudge(model.eval(), cfg.image_size, list(class_names), info), summary


def train_judge_on_stimuli(stimuli_path: str | Path, cfg: JudgeTrainConfig) -> tuple[SmallCNNJudge, dict]:
    """Read stimuli.npz (make-stimuli's output); train on its training images, score its test images."""
    from mindvis.simulate.stimuli import load_stimuli

    stim = load_stimuli(stimuli_path)
    return train_judge(
        stim.train_images, stim.train_labels, stim.class_names, cfg, stim.test_images, stim.test_labels
    )


def save_judge(judge: SmallCNNJudge, width: int, path: str | Path) -> None:
    """Write the judge file atomically (plain tensors + values: loads with weights_only=True)."""
    from mindvis.utils.atomic import atomic_path

    ckpt = small_cnn_checkpoint(judge.model, width, judge.image_size, judge.class_names, judge.info)
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)
