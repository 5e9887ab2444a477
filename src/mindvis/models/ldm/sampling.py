"""Samplers for the latent diffusion model: PLMS (the reference), DDIM, DPM-Solver++ (diffusers schedulers).

All three read the model's training schedule (scaled-linear betas, T = 1000)
and use CompVis's conventions for the step grid: timesteps spaced
T / steps apart starting at 1 ("leading" spacing, steps_offset 1) and the last
step going to alpha_cumprod[0] (set_alpha_to_one False). PLMS is diffusers'
PNDM with `skip_prk_steps` (the pseudo linear multistep method of the
reference's PLMSSampler, started with a repeated first step instead of
Runge-Kutta warm-up steps); DPM-Solver++ is the second-order multistep solver.

Reproducibility: the starting noise of sample k of item i (and DDIM's
per-step noise when eta > 0) comes from a generator seeded by (seed, i, k),
so a sample does not depend on the batch size, on the other items in the
batch, or on the device.

Output images follow the reference: (x + 1) / 2 clamped to [0, 1], x255,
then cast to uint8 (truncation, as numpy's astype does).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, PNDMScheduler

from mindvis.models.ldm.conditioning import Condition
from mindvis.models.ldm.presets import ScheduleSpec
from mindvis.utils.errors import ConfigError

SAMPLERS = ("plms", "ddim", "dpmpp")


@dataclass
class SamplerConfig:
    """How to sample (config keys of `generate` and of the training-time sample grids)."""

    sampler: str = "dpmpp"  # plms (reference, 250 steps) | ddim | dpmpp (DPM-Solver++ 2M)
    steps: int = 25  # denoising steps (reference: 250 PLMS)
    eta: float = 0.0  # DDIM stochasticity (0 = deterministic; only DDIM uses it)
    guidance_scale: float = 1.0  # classifier-free guidance; 1 = none (reference)
    n_samples: int = 5  # samples per condition K (reference: 5)
    seed: int = 2022  # starting noise of sample k of item i comes from (seed, i, k)
    batch_size: int = 50  # samples denoised together
    quantize_decode: bool = True  # quantise latents before decoding (CompVis's LDM does)


def make_sampler(name: str, schedule: ScheduleSpec, steps: int):
    """A fresh diffusers scheduler with its step grid set (schedulers keep state between steps)."""
    common = dict(num_train_timesteps=schedule.timesteps, beta_start=schedule.linear_start,
                  beta_end=schedule.linear_end, beta_schedule="scaled_linear",
                  prediction_type=schedule.prediction_type)
    if steps < 1 or steps > schedule.timesteps:
        raise ConfigError(f"steps must be in 1..{schedule.timesteps}, got {steps}")
    if name in ("plms", "ddim") and steps == schedule.timesteps:
        # their grid is shifted by one (steps_offset=1, as CompVis's +1): all T steps would end at t = T
        raise ConfigError(f"{name} takes at most {schedule.timesteps - 1} steps (its step grid starts at t = 1), "
                          f"got {steps}")
    if name == "plms":
        sched = PNDMScheduler(skip_prk_steps=True, set_alpha_to_one=False, steps_offset=1, **common)
    elif name == "ddim":
        sched = DDIMScheduler(clip_sample=False, set_alpha_to_one=False, steps_offset=1, **common)
    elif name == "dpmpp":
        sched = DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2, lower_order_final=True,
                                            **common)
    else:
        raise ConfigError(f"sampler must be one of {SAMPLERS}, got {name!r}")
    sched.set_timesteps(steps)
    return sched


def sample_seed(seed: int, item: int, k: int) -> int:
    # SeedSequence mixes the three numbers: neighbouring (item, k) get unrelated streams
    return int(np.random.SeedSequence([seed & 0xFFFFFFFF, item & 0xFFFFFFFF, k & 0xFFFFFFFF, 7])
               .generate_state(1, np.uint64)[0] % (2**63))


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in about [-1, 1] -> (B, H, W, 3) uint8, as the reference writes its samples."""
    x = torch.clamp((images.float() + 1.0) / 2.0, 0.0, 1.0) * 255.0
    return x.permute(0, 2, 3, 1).cpu().numpy().astype(np.uint8)


@torch.no_grad()
def denoise(model, cond: Condition, seeds: list[int], cfg: SamplerConfig) -> torch.Tensor:
    """Run the sampler from seeded noise to clean latents, for one batch of conditions."""
    device = cond.context.device
    spec = model.spec
    shape = (spec.unet.in_channels, spec.unet.sample_size, spec.unet.sample_size)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    sched = make_sampler(cfg.sampler, spec.schedule, cfg.steps)
    x = torch.stack([torch.randn(shape, generator=g) for g in gens]).to(device) * sched.init_noise_sigma
    uncond = None
    if cfg.guidance_scale != 1.0:
        uncond = model.null_condition(x.shape[0], device, cond.context.dtype)
    for t in sched.timesteps:
        t_batch = torch.full((x.shape[0],), int(t), device=device, dtype=torch.long)
        out = model.predict(sched.scale_model_input(x, t), t_batch, cond, cfg.guidance_scale, uncond)
        if cfg.sampler == "ddim":
            noise = None
            if cfg.eta > 0:
                noise = torch.stack([torch.randn(shape, generator=g) for g in gens]).to(device)
            x = sched.step(out, t, x, eta=cfg.eta, variance_noise=noise).prev_sample
        else:
            x = sched.step(out, t, x).prev_sample
    return x


@torch.no_grad()
def sample_images(model, cond_inputs: torch.Tensor, cfg: SamplerConfig, item_ids: list[int] | None = None,
                  device: torch.device | str = "cpu", progress=None) -> tuple[np.ndarray, dict]:
    """K samples for each of n conditions -> uint8 (n, K, H, W, 3), and timing.

    `item_ids` (default 0..n-1) name the items in the seeds, so a subset of
    the test set gets the same samples as the full run.
    """
    if cfg.n_samples < 1 or cfg.batch_size < 1:
        raise ConfigError("n_samples and batch_size must be at least 1")
    n = int(cond_inputs.shape[0])
    item_ids = list(range(n)) if item_ids is None else list(item_ids)
    pairs = [(i, k) for i in range(n) for k in range(cfg.n_samples)]
    was_training = model.training
    model.eval()
    out: np.ndarray | None = None
    t0 = time.perf_counter()
    for start in range(0, len(pairs), cfg.batch_size):
        chunk = pairs[start:start + cfg.batch_size]
        rows = torch.tensor([i for i, _ in chunk])
        unique, inverse = torch.unique(rows, return_inverse=True)
        cond = model.condition(cond_inputs[unique].to(device)).select(inverse.to(device))
        seeds = [sample_seed(cfg.seed, item_ids[i], k) for i, k in chunk]
        latents = denoise(model, cond, seeds, cfg)
        images = to_uint8(model.decode_latents(latents, quantize=cfg.quantize_decode))
        if out is None:
            out = np.zeros((n, cfg.n_samples, *images.shape[1:]), dtype=np.uint8)
        for (i, k), img in zip(chunk, images):
            out[i, k] = img
        if progress is not None:
            progress(len(chunk))
    seconds = time.perf_counter() - t0
    model.train(was_training)
    return out, {"seconds": seconds, "seconds_per_image": seconds / max(len(pairs), 1), "n_images": len(pairs)}
