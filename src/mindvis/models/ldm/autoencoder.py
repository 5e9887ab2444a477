"""The first stage: a VQ autoencoder (diffusers `VQModel`) laid out like CompVis's VQ-f4.

CompVis's `VQModelInterface`, which the LDM uses, maps
    encode(x) = quant_conv(encoder(x))          (NOT quantised: the diffusion runs on these)
    decode(h) = decoder(post_quant_conv(quantize(h)))   (quantised first)
and diffusers' `VQModel.encode(...).latents` / `VQModel.decode(h)` do the
same, so the model is used as is. Levels without attention are
`DownEncoderBlock2D` / `UpDecoderBlock2D`; a level listed in
`attn_resolutions` gets the attention variants (CompVis puts an attention
after each res-block of such a level); the middle block always has one.

`restart_dead_codes` is our addition for training the embedded demo's
autoencoder from scratch (CompVis's VQ was trained elsewhere): codes that no
latent of a batch chose are moved onto randomly chosen latents of that batch,
so a small codebook does not collapse onto a few entries.
"""

from __future__ import annotations

import torch
from diffusers import VQModel

from mindvis.models.ldm.presets import VqSpec, level_block_types


def build_vq(spec: VqSpec) -> VQModel:
    spec.validate()
    return VQModel(
        in_channels=spec.in_channels,
        out_channels=spec.out_ch,
        down_block_types=level_block_types(spec, "AttnDownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=level_block_types(spec, "AttnUpDecoderBlock2D", "UpDecoderBlock2D", lowest_first=True),
        block_out_channels=tuple(spec.ch * m for m in spec.ch_mult),
        layers_per_block=spec.num_res_blocks,
        act_fn="silu",
        latent_channels=spec.z_channels,
        sample_size=spec.resolution,
        num_vq_embeddings=spec.n_embed,
        norm_num_groups=spec.norm_num_groups,
        vq_embed_dim=spec.embed_dim,
        scaling_factor=1.0,
    )


def encode_latents(vq: VQModel, images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] (B, 3, H, W) -> pre-quantisation latents (B, embed_dim, H/f, W/f)."""
    return vq.encode(images).latents


def decode_latents(vq: VQModel, latents: torch.Tensor, quantize: bool = True) -> torch.Tensor:
    """Latents -> images (about [-1, 1]); quantised first, as CompVis's LDM decodes."""
    return vq.decode(latents, force_not_quantize=not quantize).sample


def nearest_codes(vq: VQModel, latents: torch.Tensor) -> torch.Tensor:
    """Index of the nearest codebook entry of every latent vector, (B * h * w,)."""
    flat = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
    return torch.cdist(flat, vq.quantize.embedding.weight).argmin(dim=1)


def codebook_usage(vq: VQModel, latents: torch.Tensor) -> dict[str, float]:
    """Codes used by a batch of latents and the perplexity of their distribution."""
    codes = nearest_codes(vq, latents)
    counts = torch.bincount(codes, minlength=vq.quantize.embedding.num_embeddings).float()
    p = counts / counts.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return {"codes_used": float((counts > 0).sum()), "perplexity": float(entropy.exp())}


@torch.no_grad()
def restart_dead_codes(vq: VQModel, latents: torch.Tensor, generator: torch.Generator) -> int:
    """Move codes that no vector of `latents` chose onto random vectors of `latents`; return how many moved."""
    codebook = vq.quantize.embedding.weight
    flat = latents.detach().permute(0, 2, 3, 1).reshape(-1, latents.shape[1]).to(codebook.dtype)
    used = torch.zeros(codebook.shape[0], dtype=torch.bool, device=codebook.device)
    used[nearest_codes(vq, latents)] = True
    dead = torch.nonzero(~used).flatten()
    if dead.numel():
        pick = torch.randint(0, flat.shape[0], (dead.numel(),), generator=generator).to(flat.device)
        jitter = 0.01 * flat.std() * torch.randn(dead.numel(), flat.shape[1], generator=generator).to(flat.device)
        codebook[dead] = flat[pick] + jitter
    return int(dead.numel())
