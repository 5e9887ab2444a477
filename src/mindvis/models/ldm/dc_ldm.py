"""The latent diffusion model: frozen VQ first stage, denoising UNet, conditioner.

With an `FmriConditioner` this is MinD-Vis's double-conditioned LDM (DC-LDM):
the fMRI reaches the UNet through every cross-attention (context) and
through the time embedding (time branch). With a `ClassConditioner` it is
the class-conditional image prior (CompVis cin256 "label2img") that stage B
starts from: stage B swaps the conditioner and keeps the UNet weights.

Diffusion (docs/reference.md §7.5): DDPM with T = 1000 steps, betas linear
in sqrt space 0.0015 -> 0.0195 (diffusers' "scaled_linear"), epsilon
prediction (the tiny preset predicts v; see presets), latents = scale_factor (1.0) x pre-quantisation VQ latents. The
training loss is the plain MSE between the true and the predicted noise at a
uniformly drawn step (CompVis's loss with its defaults: l_simple_weight 1,
no learned variance, no ELBO term).

Classifier-free guidance (optional; off in the reference): during training a
fraction `cond_drop_prob` of the conditions is replaced by the conditioner's
unconditional input; at sampling eps = eps_u + s (eps_c - eps_u). s = 1 is
exactly the conditional model (one pass, no unconditional evaluation).

Trainable sets (`set_trainable`), by named group:
    encoder          the stage A encoder inside the conditioner (all of it, as the reference,
                     whose loop sets requires_grad on every cond_stage_model parameter)
    mappers          channel_mapper + dim_mapper
    time_branch      the time-conditioning branch
    cross_attention  UNet cross-attention (attn2) and the LayerNorm in front of it (norm2)
    unet             the whole UNet
    class_embedder   the label prior's class embedding
    first_stage      the VQ autoencoder (frozen in every reference stage)
Stage B in the reference = encoder + mappers + time_branch + cross_attention.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import DDPMScheduler

from mindvis.models.ldm.autoencoder import build_vq, decode_latents, encode_latents
from mindvis.models.ldm.conditioning import ClassConditioner, Condition, FmriConditioner
from mindvis.models.ldm.presets import LdmSpec, ScheduleSpec
from mindvis.models.ldm.unet import build_unet, is_cross_attention_param, unet_predict
from mindvis.utils.errors import ConfigError

STAGE_B_REFERENCE = ("encoder", "mappers", "time_branch", "cross_attention")
PRIOR_TRAINABLE = ("unet", "class_embedder")


def _in_group(name: str, group: str) -> bool:
    if group == "encoder":
        return name.startswith("conditioner.encoder.")
    if group == "mappers":
        return name.startswith(("conditioner.channel_mapper.", "conditioner.dim_mapper."))
    if group == "time_branch":
        return name.startswith("conditioner.time_branch.")
    if group == "class_embedder":
        return name.startswith("conditioner.embedding.")
    if group == "cross_attention":
        return name.startswith("unet.") and is_cross_attention_param(name)
    if group == "unet":
        return name.startswith("unet.")
    if group == "first_stage":
        return name.startswith("vq.")
    raise ConfigError(f"unknown trainable group {group!r}; choose from {TRAINABLE_GROUPS}")


TRAINABLE_GROUPS = ("encoder", "mappers", "time_branch", "cross_attention", "unet", "class_embedder", "first_stage")


def ddpm_scheduler(schedule: ScheduleSpec) -> DDPMScheduler:
    """The training noise schedule (the samplers build theirs from the same numbers)."""
    return DDPMScheduler(num_train_timesteps=schedule.timesteps, beta_start=schedule.linear_start,
                         beta_end=schedule.linear_end, beta_schedule="scaled_linear",
                         prediction_type=schedule.prediction_type,
                         clip_sample=False)


def guided(out_cond: torch.Tensor, out_uncond: torch.Tensor, scale: float) -> torch.Tensor:
    return out_uncond + scale * (out_cond - out_uncond)


class DcLdm(nn.Module):
    def __init__(self, spec: LdmSpec, conditioner: FmriConditioner | ClassConditioner, vq: nn.Module | None = None,
                 unet: nn.Module | None = None):
        super().__init__()
        self.spec = spec.validate()
        self.vq = vq if vq is not None else build_vq(spec.vq)
        self.unet = unet if unet is not None else build_unet(spec.unet)
        self.conditioner = conditioner
        self.noise_scheduler = ddpm_scheduler(spec.schedule)
        self.scale_factor = float(spec.schedule.scale_factor)
        self.set_trainable(STAGE_B_REFERENCE if isinstance(conditioner, FmriConditioner) else PRIOR_TRAINABLE)

    # -- trainable parameters ------------------------------------------------------------------
    def set_trainable(self, groups: Iterable[str]) -> dict[str, int]:
        """requires_grad on the parameters of `groups` only; returns parameter counts per group."""
        groups = tuple(groups)
        for g in groups:
            _in_group("", g)  # validates the name
        counts = {g: 0 for g in groups}
        for name, p in self.named_parameters():
            hits = [g for g in groups if _in_group(name, g)]
            p.requires_grad_(bool(hits))
            for g in hits:
                counts[g] += p.numel()
        self.trainable_groups = groups
        return counts

    def trainable_named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.named_parameters() if p.requires_grad]

    def train(self, mode: bool = True) -> DcLdm:
        super().train(mode)
        if "first_stage" not in getattr(self, "trainable_groups", ()):
            self.vq.eval()  # a frozen first stage always runs in inference mode
        return self

    # -- first stage ---------------------------------------------------------------------------
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] (B, 3, H, W) -> scaled latents."""
        with torch.set_grad_enabled("first_stage" in self.trainable_groups and torch.is_grad_enabled()):
            return encode_latents(self.vq, images) * self.scale_factor

    def decode_latents(self, latents: torch.Tensor, quantize: bool = True) -> torch.Tensor:
        return decode_latents(self.vq, latents / self.scale_factor, quantize=quantize)

    # -- conditioning and noise prediction -------------------------------------------------------
    def condition(self, cond_input: torch.Tensor) -> Condition:
        return self.conditioner(cond_input)

    def null_condition(self, batch: int, device, dtype=torch.float32) -> Condition:
        return self.conditioner.null_condition(batch, device, dtype)

    def predict(self, latents: torch.Tensor, timesteps: torch.Tensor, cond: Condition,
                guidance_scale: float = 1.0, uncond: Condition | None = None) -> torch.Tensor:
        """The UNet's prediction (the noise, or v); with guidance_scale != 1 guided by the unconditional one."""
        if timesteps.ndim == 0:
            timesteps = timesteps.expand(latents.shape[0])
        if guidance_scale == 1.0:
            return unet_predict(self.unet, latents, timesteps, cond.context, cond.time_cond)
        if uncond is None:
            uncond = self.null_condition(latents.shape[0], latents.device, cond.context.dtype)
        both = Condition.cat([cond, uncond])
        out = unet_predict(self.unet, torch.cat([latents, latents]), torch.cat([timesteps, timesteps]), both.context,
                       both.time_cond)
        out_c, out_u = out.chunk(2)
        return guided(out_c, out_u, guidance_scale)

    def diffusion_loss(self, images: torch.Tensor, cond_input: torch.Tensor, generator: torch.Generator,
                       cond_drop_prob: float = 0.0, snr_gamma: float = 0.0) -> torch.Tensor:
        """MSE between the target (the added noise, or v) and its prediction at uniformly drawn steps.

        All randomness (noise, steps, condition dropout) comes from `generator`
        (a CPU generator): a step's draws depend on its seed only, so a resumed
        run repeats them exactly. See `loss_at` for `snr_gamma`.
        """
        latents = self.encode_images(images)
        b = latents.shape[0]
        noise = torch.randn(latents.shape, generator=generator)
        t = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (b,), generator=generator)
        drop = torch.rand(b, generator=generator) < cond_drop_prob
        return self.loss_at(latents, cond_input, noise, t, drop if cond_drop_prob > 0 else None, snr_gamma)

    def loss_at(self, latents: torch.Tensor, cond_input: torch.Tensor, noise: torch.Tensor, t: torch.Tensor,
                drop: torch.Tensor | None = None, snr_gamma: float = 0.0) -> torch.Tensor:
        """The diffusion loss for given draws: noise (b, C, h, w), steps t (b,), dropped conditions (b,) bool.

        `snr_gamma` > 0 weights each step by min(SNR, gamma) / SNR ("min-SNR"
        weighting, Hang et al. 2023): low-noise steps count less, so a model
        trained from scratch learns the global structure sooner. 0 (the
        reference) is the plain mean.
        """
        noise, t = noise.to(latents), t.to(latents.device)
        noisy = self.noise_scheduler.add_noise(latents, noise, t)
        cond = self.condition(cond_input)
        if drop is not None:
            cond = self.conditioner.drop(cond, drop.to(latents.device))
        pred = unet_predict(self.unet, noisy, t, cond.context, cond.time_cond)
        target = noise if self.spec.schedule.prediction_type == "epsilon" else \
            self.noise_scheduler.get_velocity(latents, noise, t)
        if snr_gamma <= 0:
            return F.mse_loss(pred.float(), target.float())
        alpha_bar = self.noise_scheduler.alphas_cumprod.to(latents.device)[t].float()
        snr = alpha_bar / (1 - alpha_bar)
        # min(SNR, gamma) / SNR for epsilon targets, / (SNR + 1) for v targets: the same weight on x0's error
        weight = torch.clamp(snr, max=snr_gamma) / (snr if self.spec.schedule.prediction_type == "epsilon"
                                                     else snr + 1)
        per_item = ((pred.float() - target.float()) ** 2).mean(dim=(1, 2, 3))
        return (weight * per_item).mean()


def build_fmri_ldm(spec: LdmSpec, encoder_arch, n_tokens: int, use_time_cond: bool = True) -> DcLdm:
    """A fresh stage B model: the given sizes, a stage A encoder (no decoder) of `n_tokens` tokens."""
    from mindvis.models.sc_mbm import ScMbm

    encoder = ScMbm(encoder_arch, n_tokens, with_decoder=False)
    conditioner = FmriConditioner(encoder, spec.context_len, spec.unet.context_dim, spec.unet.time_embed_dim,
                                  use_time_cond=use_time_cond)
    return DcLdm(spec, conditioner)


def build_label_ldm(spec: LdmSpec, n_classes: int) -> DcLdm:
    """A fresh class-conditional prior (CompVis cin256 layout) with `n_classes` classes + 1 'no class'."""
    return DcLdm(spec, ClassConditioner(n_classes, spec.unet.context_dim))
