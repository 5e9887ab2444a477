"""The paper-size workloads the cost benchmarks measure, built once here for both of them.

`paper_rehearsal.py --only-flops` counts their FLOPs on the CPU; `gpu_check.py` times them
on a GPU. Each is one unit of the paper's run (docs/reference.md §7-8):

    a1_step        SC-MBM paper preset (1024 x 24, decoder 512 x 8), one optimizer step:
                   forward + backward of the masked autoencoder, mask ratio 0.75 (A2's step
                   is the same network at its own batch size)
    stage_b_step   the DC-LDM (VQ-f4 + cin256-v2 UNet at 256 px + the SC-MBM encoder and the
                   mappers), one optimizer step: VQ encoding (no grad), conditioner, UNet,
                   backward into the reference's trainable set (encoder, mappers, time branch,
                   cross-attention)
    sampler_step   one denoising step of a sampler: the UNet's forward pass on one image's
                   latent (plus the conditioner, which samplers run once per image: counted
                   separately as `condition`)
    decode         the VQ decoder from 64 x 64 latents to one 256-px image (once per image)

`size="smoke"` builds the same structures at tiny width (the test suite's rehearsal sizes),
so the code path is proven on a CPU in seconds. FLOPs are torch's FlopCounterMode counts
(matrix products, convolutions, attention; elementwise work is not counted), forward plus
backward for training steps.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

# MinD-Vis's released fmri_encoder.pth holds 262 tokens (4192 voxels: HCP V1..V4, wrap-padded)
PAPER_TOKENS = 262
MASK_RATIO = 0.75


@dataclass(frozen=True)
class Sizes:
    name: str
    tokens: int
    image_size: int


def sizes(size: str) -> Sizes:
    if size == "paper":
        return Sizes("paper", PAPER_TOKENS, 256)
    if size == "smoke":
        return Sizes("smoke", 8, 32)
    raise ValueError(f"size must be paper or smoke, got {size!r}")


def mbm_arch(size: str):
    from mindvis.models import PRESETS

    arch = PRESETS["paper"]
    if size == "smoke":  # the paper preset's structure at tiny width (tests/data/rehearsal_micro.yaml)
        arch = replace(arch, embed_dim=32, depth=2, num_heads=4, decoder_embed_dim=32, decoder_depth=1,
                       decoder_num_heads=4)
    return arch


def ldm_spec(size: str):
    from mindvis.models.ldm.presets import LdmModelConfig, resolve_ldm_spec

    if size == "paper":
        return resolve_ldm_spec(LdmModelConfig(preset="paper"))
    return resolve_ldm_spec(LdmModelConfig(preset="paper", image_size=32, vq_ch=16, vq_num_res_blocks=1,
                                           vq_n_embed=64, unet_model_channels=16, unet_num_res_blocks=1,
                                           context_dim=32, time_embed_dim=64, norm_num_groups=8))


def build_mbm(size: str, device) -> torch.nn.Module:
    from mindvis.models import ScMbm

    return ScMbm(mbm_arch(size), sizes(size).tokens).to(device)


def build_stage_b(size: str, device) -> torch.nn.Module:
    """The DC-LDM with the reference's trainable set (random weights: costs do not depend on them)."""
    from mindvis.models.ldm.dc_ldm import STAGE_B_REFERENCE, build_fmri_ldm

    model = build_fmri_ldm(ldm_spec(size), mbm_arch(size), sizes(size).tokens)
    model.set_trainable(STAGE_B_REFERENCE)
    return model.to(device)


def a1_step(model, batch: int, device, amp_dtype=None, optimizer=None):
    """A function running one SC-MBM training step (forward, backward, and the optimizer step if given)."""
    n_voxels = model.num_voxels
    x = torch.randn(batch, 1, n_voxels, device=device)
    noise = torch.rand(batch, model.n_tokens, device=device)

    def step():
        with torch.autocast(torch.device(device).type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss, _, _ = model(x, MASK_RATIO, noise)
        loss.backward()
        if optimizer is not None:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return loss

    return step


def stage_b_step(model, batch: int, device, amp_dtype=None, optimizer=None):
    """A function running one stage B training step on random (image, fMRI) pairs."""
    size = model.spec.vq.resolution
    images = torch.rand(batch, 3, size, size, device=device) * 2 - 1
    fmri = torch.randn(batch, 1, model.conditioner.num_voxels, device=device)
    t = torch.randint(0, model.noise_scheduler.config.num_train_timesteps, (batch,), device=device)

    def step():
        with torch.autocast(torch.device(device).type, dtype=amp_dtype, enabled=amp_dtype is not None):
            latents = model.encode_images(images)
            loss = model.loss_at(latents, fmri, torch.randn_like(latents), t)
        loss.backward()
        if optimizer is not None:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return loss

    return step


def sampler_step(model, batch: int, device, amp_dtype=None):
    """A function running one denoising step (the UNet's forward pass) for `batch` images."""
    spec = model.spec.unet
    latents = torch.randn(batch, spec.in_channels, spec.sample_size, spec.sample_size, device=device)
    t = torch.full((batch,), 500, device=device, dtype=torch.long)
    with torch.no_grad(), torch.autocast(torch.device(device).type, dtype=amp_dtype, enabled=amp_dtype is not None):
        cond = model.condition(torch.randn(batch, 1, model.conditioner.num_voxels, device=device))

    @torch.no_grad()
    def step():
        with torch.autocast(torch.device(device).type, dtype=amp_dtype, enabled=amp_dtype is not None):
            return model.predict(latents, t, cond)

    return step


def condition_step(model, batch: int, device, amp_dtype=None):
    """A function running the conditioner (encoder + mappers + time branch) once for `batch` fMRI vectors."""
    fmri = torch.randn(batch, 1, model.conditioner.num_voxels, device=device)

    @torch.no_grad()
    def step():
        with torch.autocast(torch.device(device).type, dtype=amp_dtype, enabled=amp_dtype is not None):
            return model.condition(fmri).context

    return step


def decode_step(model, batch: int, device, amp_dtype=None):
    """A function decoding `batch` latents to images with the VQ decoder (quantised, as sampling does)."""
    spec = model.spec.unet
    latents = torch.randn(batch, spec.in_channels, spec.sample_size, spec.sample_size, device=device)

    @torch.no_grad()
    def step():
        with torch.autocast(torch.device(device).type, dtype=amp_dtype, enabled=amp_dtype is not None):
            return model.decode_latents(latents)

    return step


def count_flops(fn) -> int:
    """FLOPs of one call of `fn` (torch's FlopCounterMode; runs it once)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        out = fn()
        del out
    return int(counter.get_total_flops())


def model_evaluations(sampler: str, steps: int) -> int:
    """UNet evaluations per image of a sampler at `steps` steps (no guidance): its timestep grid's length."""
    from mindvis.models.ldm.presets import ScheduleSpec
    from mindvis.models.ldm.sampling import make_sampler

    return len(make_sampler(sampler, ScheduleSpec(), steps).timesteps)
