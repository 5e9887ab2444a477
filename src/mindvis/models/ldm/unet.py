"""The denoising UNet: diffusers `UNet2DConditionModel` configured as CompVis's cin256-v2 UNet.

How the CompVis `UNetModel` options translate (docs/reference.md §7.3):
- level l works at downsampling factor ds = 2**l; a level whose ds is in
  `attention_resolutions` uses Cross-Attention blocks (one spatial transformer
  after each res-block), the others plain blocks. cin256-v2: [8, 4, 2] ->
  levels 1, 2, 3 with attention, level 0 (full latent resolution) without;
  the middle block always has one;
- `num_heads=1` with CompVis's legacy rule head width = channels / heads: in
  diffusers the per-block head COUNT goes into `attention_head_dim` (its
  historical name for the number of heads when `num_attention_heads` is unset);
- conv (not linear) proj_in/proj_out, GEGLU feed-forward, LayerNorms with eps
  1e-5 and GroupNorm(32) everywhere: diffusers' defaults, the same as CompVis;
- sinusoidal time features with cos first, no frequency shift
  (`flip_sin_to_cos=True`, `freq_shift=0`), then Linear-SiLU-Linear to
  `time_embed_dim` (768 = 4 x 192 in the paper);
- the fMRI time-conditioning branch (MinD-Vis's `time_embed_condtion`) adds a
  vector to the time embedding. diffusers does exactly that for a class
  embedding: with `class_embed_type="identity"` the `class_labels` argument is
  added to the time embedding unchanged, so the branch lives in the
  conditioner and its output is passed as `class_labels`. The identity has no
  parameters: the state dict is CompVis's UNet, key for key.
"""

from __future__ import annotations

import re

import torch
from diffusers import UNet2DConditionModel

from mindvis.models.ldm.presets import UnetSpec, level_block_types


def build_unet(spec: UnetSpec) -> UNet2DConditionModel:
    spec.validate()
    return UNet2DConditionModel(
        sample_size=spec.sample_size,
        in_channels=spec.in_channels,
        out_channels=spec.out_channels,
        flip_sin_to_cos=True,
        freq_shift=0,
        down_block_types=level_block_types(spec, "CrossAttnDownBlock2D", "DownBlock2D"),
        mid_block_type="UNetMidBlock2DCrossAttn",
        up_block_types=level_block_types(spec, "CrossAttnUpBlock2D", "UpBlock2D", lowest_first=True),
        block_out_channels=spec.block_channels,
        layers_per_block=spec.num_res_blocks,
        downsample_padding=1,
        act_fn="silu",
        norm_num_groups=spec.norm_num_groups,
        norm_eps=1e-5,
        cross_attention_dim=spec.context_dim,
        transformer_layers_per_block=spec.transformer_depth,
        attention_head_dim=spec.num_heads,  # diffusers: the number of heads (see module docstring)
        use_linear_projection=False,
        class_embed_type="identity",
        time_embedding_dim=spec.time_embed_dim,
    )


def unet_predict(unet: UNet2DConditionModel, latents: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor,
             time_cond: torch.Tensor | None) -> torch.Tensor:
    """The UNet's output (the noise, or v); `time_cond` (B, time_embed_dim) is added to the time embedding."""
    if time_cond is None:
        time_cond = latents.new_zeros(latents.shape[0], unet.config.time_embedding_dim or
                                      4 * unet.config.block_out_channels[0])
    return unet(latents, timesteps, encoder_hidden_states=context, class_labels=time_cond).sample


# The reference's stage B trains, inside the UNet, the cross-attention layers and the norms in front of
# them. In CompVis names that is every parameter whose name contains "attn2" or "norm2"; only the
# transformer blocks have a "norm2" there. In diffusers names the res-blocks ALSO have a norm2, so the
# rule is spelled out: the transformer block's norm2 (the one before attn2), and attn2 itself.
_CROSS_ATTENTION = re.compile(r"(^|\.)transformer_blocks\.\d+\.(attn2\.|norm2\.)")


def is_cross_attention_param(name: str) -> bool:
    return bool(_CROSS_ATTENTION.search(name))
