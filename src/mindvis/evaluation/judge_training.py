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

This module is the judge's stage of the one training loop (training.engine): its
config, its batch -> loss and its hooks. The engine brings the rest: seeded item
order, augmentation draws from (seed, step) (training.draws), the resume file
`<out>.resume.pt` and SIGTERM -> save -> exit 143. Like every stage, an epoch
drops its incomplete last batch; a batch_size above the training images takes
them all in one step.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mindvis.evaluation.judges import SmallCNN, SmallCNNJudge, small_cnn_checkpoint
from mindvis.training import distributed as ddp
from mindvis.training.draws import StepDraws
from mindvis.training.engine import EngineConfig, LoopHooks, digest, run_loop, start_process
from mindvis.training.schedule import WarmupCosine
from mindvis.utils.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class JudgeTrainConfig(EngineConfig):
    """`judge:` the embedded demo's small-CNN judge (the loop's keys: training.engine.EngineConfig)."""

    epochs: int = 75  # passes over the training images
    batch_size: int = 40  # images per optimisation step (above the training images: all of them)
    lr: float = 5e-3  # AdamW peak learning rate (cosine decay to 0 over every step)
    weight_decay: float = 1e-4  # AdamW weight decay
    clip_grad: float = 0.0  # no gradient clipping
    seed: int = 0  # initialisation (and dropout), item order and augmentation
    device: str = "cpu"  # a tiny network: CPU keeps the demo's judge the same on every machine
    width: int = 16  # channels of the first conv block (then 2x, 4x); penultimate features = 4 * width
    image_size: int = 32  # the judge's input side: every image is resized to it (antialiased) first
    augment: bool = True  # random geometry / colour / blur / noise per batch (see module docstring)
    threads: int = 1  # torch CPU threads; 1 is fastest for this tiny network (thread sync costs more than it saves)


# ----------------------------------------------------------------------------- augmentation


class _ItemDraws:
    """Per-item draws for a step's GLOBAL batch from one generator, cut to this process's rows
    (so a split over processes draws what one process would)."""

    def __init__(self, draws: StepDraws):
        self.gen, self.n, self.rows = draws.shared("augment"), draws.global_batch, draws.rows

    def rand(self, *shape: int) -> torch.Tensor:
        return torch.rand(self.n, *shape, generator=self.gen)[self.rows]

    def randn(self, *shape: int) -> torch.Tensor:
        return torch.randn(self.n, *shape, generator=self.gen)[self.rows]

    def permutations(self, k: int) -> torch.Tensor:
        return torch.stack([torch.randperm(k, generator=self.gen) for _ in range(self.n)])[self.rows]


def _random_affine(x: torch.Tensor, draw: _ItemDraws) -> torch.Tensor:
    angle = (draw.rand() * 2 - 1) * math.radians(12)
    scale = 0.85 + draw.rand() * 0.3
    shift = (draw.rand(2) * 2 - 1) * 0.12
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # "border" repeats the edge pixels: the background colour fills the uncovered area.
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _random_colour(x: torch.Tensor, draw: _ItemDraws) -> torch.Tensor:
    perm = draw.permutations(3)
    x = torch.gather(x, 1, perm[:, :, None, None].expand_as(x))
    invert = (draw.rand(1, 1, 1) < 0.5).float()
    x = invert * (1 - x) + (1 - invert) * x
    gain = 0.6 + draw.rand(3, 1, 1) * 0.8
    offset = (draw.rand(3, 1, 1) * 2 - 1) * 0.2
    x = x * gain + offset
    gray = (draw.rand(1, 1, 1) < 0.2).float()
    x = gray * x.mean(dim=1, keepdim=True).expand_as(x) + (1 - gray) * x
    return x.clamp(0, 1)


def _random_blur_noise(x: torch.Tensor, draw: _ItemDraws) -> torch.Tensor:
    n = x.shape[0]
    sigma = draw.rand() * 1.5 + 1e-3
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
    noise = draw.randn(*x.shape[1:]) * (draw.rand(1, 1, 1) * 0.08)
    return (x + noise).clamp(0, 1)


def augment_batch(x: torch.Tensor, draws: StepDraws) -> torch.Tensor:
    """Random geometry, colour, blur and noise for (n, 3, S, S) images in [0, 1] (n: this process's rows)."""
    draw = _ItemDraws(draws)
    return _random_blur_noise(_random_colour(_random_affine(x, draw), draw), draw)


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
    device = next(model.parameters()).device
    pred = model(_to_tensor(images, size).to(device)).argmax(dim=1).cpu().numpy()
    return float(np.mean(pred == labels))


def train_judge(
    train_images: np.ndarray,
    train_labels: np.ndarray,
    class_names: list[str],
    cfg: JudgeTrainConfig,
    heldout_images: np.ndarray | None = None,
    heldout_labels: np.ndarray | None = None,
    out: str | Path | None = None,
    tracker=None,
    env: ddp.DistEnv | None = None,
) -> tuple[SmallCNNJudge, dict]:
    """Train a SmallCNN judge on the engine; return it and a summary (losses, train and held-out accuracy, time).

    `out`: the judge file to write (resumable through `<out>.resume.pt`); None keeps the judge in
    memory only (the resume file then lives in a temporary folder).
    """
    if cfg.epochs < 1 or cfg.batch_size < 1 or cfg.image_size < 8:
        raise ConfigError("train_judge: epochs and batch_size must be >= 1, image_size >= 8")
    n_classes = len(class_names)
    if train_labels.min() < 0 or train_labels.max() >= n_classes:
        raise ConfigError(f"train_judge: labels outside [0, {n_classes})")
    threads_before = torch.get_num_threads()
    try:
        env, device = start_process(cfg, env)
        torch.manual_seed(cfg.seed)  # initialisation, then dropout
        model = SmallCNN(n_classes, cfg.width).to(device)
        x_all, y_all = _to_tensor(train_images, cfg.image_size), torch.from_numpy(train_labels.astype(np.int64))
        # a batch above the training images takes them all (per process: the global batch must fit)
        run_cfg = replace(cfg, batch_size=max(1, min(cfg.batch_size, len(x_all) // env.world_size)))

        def step_loss(idx, draws, step):
            xb = augment_batch(x_all[idx], draws) if cfg.augment else x_all[idx]
            return F.cross_entropy(model(xb.to(device)), y_all[idx].to(device))

        # BatchNorm's running statistics are buffers, not trained parameters: the resume file
        # keeps them through the stage's state hooks, so a resumed judge equals an uninterrupted one
        def buffers() -> dict[str, Any]:
            return {"buffers": {k: v.detach().cpu().clone() for k, v in model.named_buffers()}}

        def load_buffers(state: dict[str, Any]) -> None:
            model.load_state_dict(state["buffers"], strict=False)

        summary: dict[str, Any] = {}
        t0 = time.perf_counter()

        def summarize(history: list[dict[str, Any]], steps: int) -> None:
            losses = [row["loss"] for row in history if row["epoch"] >= 1]
            summary.update({
                "n_train": int(len(x_all)), "n_classes": n_classes, "epochs": cfg.epochs, "steps": steps,
                "max_steps": cfg.max_steps, "final_loss": losses[-1],
                "train_accuracy": accuracy(model, train_images, train_labels, cfg.image_size),
                "train_seconds": round(time.perf_counter() - t0, 2), "loss_per_epoch": losses,
            })
            if heldout_images is not None and heldout_labels is not None and len(heldout_images):
                summary["heldout_accuracy"] = accuracy(model, heldout_images, heldout_labels, cfg.image_size)
                summary["n_heldout"] = int(len(heldout_images))
                summary["heldout_chance"] = 1.0 / n_classes
            log.info("judge: %d epochs on %d images in %.1f s; train acc %.3f, held-out acc %s", cfg.epochs,
                     len(x_all), summary["train_seconds"], summary["train_accuracy"], summary.get("heldout_accuracy"))

        def export(done) -> None:
            summarize(done.history, done.step)
            if out is not None:
                save_judge(_judge(model, cfg, class_names, summary), cfg.width, out)

        fingerprint = {"stage": "judge", "data": digest(x_all, y_all), "n_classes": n_classes,
                       **{k: getattr(cfg, k) for k in ("epochs", "lr", "weight_decay", "clip_grad", "seed", "width",
                                                       "image_size", "augment")}}
        hooks = LoopHooks(step_loss, best_state=buffers, load_best=load_buffers,
                          schedule=lambda steps_per_epoch: WarmupCosine.from_epochs(cfg.lr, cfg.epochs, 0,
                                                                                    steps_per_epoch))
        with tempfile.TemporaryDirectory(prefix="judge-") as scratch:
            result = run_loop(model, int(len(x_all)), run_cfg, out if out is not None else Path(scratch) / "judge.pt",
                              fingerprint, hooks, export, tracker=tracker, desc="judge", env=env)
        if not summary:  # (only rank 0 exports)
            summarize(result["history"], result["steps"])
    finally:
        torch.set_num_threads(threads_before)
    return _judge(model, cfg, class_names, summary), summary


def _judge(model: SmallCNN, cfg: JudgeTrainConfig, class_names: list[str], summary: dict) -> SmallCNNJudge:
    info = {k: v for k, v in summary.items() if k != "loss_per_epoch"}
    return SmallCNNJudge(model.eval(), cfg.image_size, list(class_names), info)


def train_judge_on_stimuli(stimuli_path: str | Path, cfg: JudgeTrainConfig, out: str | Path | None = None,
                           tracker=None, env: ddp.DistEnv | None = None) -> tuple[SmallCNNJudge, dict]:
    """Read stimuli.npz (make-stimuli's output); train on its training images, score its test images."""
    from mindvis.simulate.stimuli import load_stimuli

    stim = load_stimuli(stimuli_path)
    return train_judge(stim.train_images, stim.train_labels, stim.class_names, cfg, stim.test_images,
                       stim.test_labels, out=out, tracker=tracker, env=env)


def save_judge(judge: SmallCNNJudge, width: int, path: str | Path) -> None:
    """Write the judge file atomically (plain tensors + values: loads with weights_only=True)."""
    from mindvis.utils.atomic import atomic_path

    ckpt = small_cnn_checkpoint(judge.model, width, judge.image_size, judge.class_names, judge.info)
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)
