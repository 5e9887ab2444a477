"""What the three stage B trainings share (autoencoder, label2img, finetune): their loop keys,
the image augmentation, and the diffusion loss of a step.

Recipe (MinD-Vis's public code): images to [-1, 1]; with probability `crop_p`
(0.5) a random crop of `crop_ratio` (0.8) of the side, resized back; AdamW (torch
defaults, weight decay 0.01 as the reference); gradient-norm clipping; fp32 on CPU,
mixed precision on GPU (the loop: training.engine). Every random draw comes from
the step's draws (training.draws): a resumed or multi-process run draws the same.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mindvis.models.ldm.dc_ldm import DcLdm
from mindvis.training.draws import StepDraws, draws_for
from mindvis.training.engine import EngineConfig


@dataclass
class LdmLoopConfig(EngineConfig):
    """Keys every stage B loop shares (on top of the engine's)."""

    crop_p: float = 0.5  # probability of the random-crop augmentation
    crop_ratio: float = 0.8  # crop side / image side (reference: 205 of 256 px)
    grid_every_epochs: int = 0  # log a sample grid to MLflow every K epochs (0: at the end only)


def augment(batch: torch.Tensor, generator: torch.Generator | StepDraws, crop_p: float,
            crop_ratio: float) -> torch.Tensor:
    """uint8 (B, 3, S, S) -> float in [-1, 1]; each image with probability crop_p is randomly cropped and resized.

    `generator`: a torch generator (draws for these B images) or the step's StepDraws (this
    process's share of the global batch's draws).
    """
    x = batch.float() / 127.5 - 1.0
    size = x.shape[-1]
    crop = max(1, int(round(crop_ratio * size)))
    draws = draws_for(generator, x.shape[0])
    do_crop = draws.rand("crop") < crop_p
    offsets = draws.randint("crop_offset", size - crop + 1, 2)
    if crop >= size or not bool(do_crop.any()):
        return x
    out = x.clone()
    for i in torch.nonzero(do_crop).flatten().tolist():
        top, left = offsets[i].tolist()
        patch = x[i:i + 1, :, top:top + crop, left:left + crop]
        out[i] = F.interpolate(patch, size=(size, size), mode="bilinear", align_corners=False)[0]
    return out


def random_patches(x: torch.Tensor, size: int, generator: torch.Generator | StepDraws) -> torch.Tensor:
    """One random size x size patch per image (whole images when size is 0 or not smaller)."""
    side = x.shape[-1]
    if size <= 0 or size >= side:
        return x
    offsets = draws_for(generator, x.shape[0]).randint("patch_offset", side - size + 1, 2).tolist()
    return torch.stack([img[:, t:t + size, l:l + size] for img, (t, l) in zip(x, offsets)])


def step_diffusion_loss(model: DcLdm, images: torch.Tensor, cond_input: torch.Tensor, draws: StepDraws,
                        cond_drop_prob: float = 0.0, snr_gamma: float = 0.0) -> torch.Tensor:
    """DcLdm's diffusion loss with its noise, steps and condition dropout taken from `draws`:
    each item's draws are its rows of the GLOBAL batch's draws, so the loss of a process's
    slice does not depend on how the global batch was split."""
    latents = model.encode_images(images)
    noise = draws.randn("noise", *latents.shape[1:])
    t = draws.randint("timestep", model.noise_scheduler.config.num_train_timesteps)
    drop = draws.rand("cond_drop") < cond_drop_prob if cond_drop_prob > 0 else None
    return model.loss_at(latents, cond_input, noise, t, drop, snr_gamma)
