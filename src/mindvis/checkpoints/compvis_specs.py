"""A CompVis latent-diffusion checkpoint's sizes: from its tensors' shapes, its schedule buffers and
the config.yaml beside it (what shapes cannot tell: heads, latent side, prediction type).

The DDPM schedule buffers CompVis stores are recomputed here from a ScheduleSpec, both to write
them and to check that a checkpoint's `betas` are the linear-in-sqrt schedule we support.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from mindvis.models.ldm.presets import ScheduleSpec, UnetSpec, VqSpec
from mindvis.utils.errors import InputDataError

# the DDPM buffers CompVis's LatentDiffusion stores next to the networks (recomputed from the betas)
SCHEDULE_KEYS = ("betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
                 "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
                 "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
                 "posterior_mean_coef1", "posterior_mean_coef2", "scale_factor", "logvar", "cond_ids")


# -- schedule buffers ---------------------------------------------------------------------------
def schedule_buffers(schedule: ScheduleSpec) -> dict[str, torch.Tensor]:
    """CompVis's DDPM buffers for a linear-in-sqrt schedule (computed in float64, stored as float32)."""
    betas = torch.linspace(schedule.linear_start ** 0.5, schedule.linear_end ** 0.5, schedule.timesteps,
                           dtype=torch.float64) ** 2
    alphas = 1.0 - betas
    cum = torch.cumprod(alphas, dim=0)
    prev = torch.cat([torch.ones(1, dtype=torch.float64), cum[:-1]])
    post_var = betas * (1.0 - prev) / (1.0 - cum)
    out = {
        "betas": betas, "alphas_cumprod": cum, "alphas_cumprod_prev": prev, "sqrt_alphas_cumprod": cum.sqrt(),
        "sqrt_one_minus_alphas_cumprod": (1.0 - cum).sqrt(), "log_one_minus_alphas_cumprod": (1.0 - cum).log(),
        "sqrt_recip_alphas_cumprod": (1.0 / cum).sqrt(), "sqrt_recipm1_alphas_cumprod": (1.0 / cum - 1).sqrt(),
        "posterior_variance": post_var, "posterior_log_variance_clipped": post_var.clamp_min(1e-20).log(),
        "posterior_mean_coef1": betas * prev.sqrt() / (1.0 - cum),
        "posterior_mean_coef2": (1.0 - prev) * alphas.sqrt() / (1.0 - cum),
    }
    out = {k: v.to(torch.float32) for k, v in out.items()}
    out["scale_factor"] = torch.tensor(float(schedule.scale_factor))
    return out


def schedule_from_buffers(state: Mapping[str, torch.Tensor], path=None) -> ScheduleSpec | None:
    """The schedule a checkpoint's `betas` describe; an error when they are not linear in sqrt space."""
    if "betas" not in state:
        return None
    betas = state["betas"].double()
    start, end, steps = float(betas[0]), float(betas[-1]), int(betas.numel())
    scale = float(state["scale_factor"]) if "scale_factor" in state else 1.0
    # stored as float32: keep 6 significant digits (0.0195000004 -> 0.0195)
    spec = ScheduleSpec(timesteps=steps, linear_start=float(f"{start:.6g}"), linear_end=float(f"{end:.6g}"),
                        scale_factor=scale)
    expected = schedule_buffers(spec)["betas"].double()
    if not torch.allclose(betas, expected, rtol=1e-4, atol=1e-7):
        raise InputDataError(path, "the checkpoint's betas are not linear in sqrt space "
                                   f"({start:.6g} -> {end:.6g}); only that schedule is supported")
    return spec



def same_schedule(a: ScheduleSpec, b: ScheduleSpec) -> bool:
    return (a.timesteps == b.timesteps and math.isclose(a.linear_start, b.linear_start, rel_tol=1e-4)
            and math.isclose(a.linear_end, b.linear_end, rel_tol=1e-4)
            and math.isclose(a.scale_factor, b.scale_factor, rel_tol=1e-6))



# -- architecture from shapes ---------------------------------------------------------------------
def _count(state: Mapping[str, Any], pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m[1] for k in state if (m := rx.match(k))})


def infer_unet_spec(sd: Mapping[str, torch.Tensor], num_heads: int = 1, norm_num_groups: int = 32,
                    sample_size: int | None = None, path=None) -> UnetSpec:
    """A CompVis UNet's sizes from its tensors (prefix-free keys); heads and norm groups are not in shapes."""
    try:
        mc, in_ch = sd["input_blocks.0.0.weight"].shape[:2]
        out_ch = sd["out.2.weight"].shape[0]
        temb = sd["time_embed.0.weight"].shape[0]
    except KeyError as exc:
        raise InputDataError(path, f"not a CompVis UNet state dict: {exc} missing") from None
    mults, res_counts, attn, n, idx, level = [], [], [], 0, 1, 0
    level_attn, last_width = False, mc
    while True:
        if f"input_blocks.{idx}.0.op.weight" in sd:
            mults.append(last_width // mc)
            res_counts.append(n)
            attn.append(level_attn)
            n, level_attn, level = 0, False, level + 1
        elif f"input_blocks.{idx}.0.in_layers.0.weight" in sd:
            n += 1
            last_width = sd[f"input_blocks.{idx}.0.out_layers.3.weight"].shape[0]
            level_attn |= f"input_blocks.{idx}.1.proj_in.weight" in sd
        else:
            break
        idx += 1
    mults.append(last_width // mc)
    res_counts.append(n)
    attn.append(level_attn)
    if len(set(res_counts)) != 1 or res_counts[0] < 1:
        raise InputDataError(path, f"UNet levels have different numbers of res-blocks: {res_counts}")
    to_k = [v for k, v in sd.items() if k.endswith("attn2.to_k.weight")]
    if not to_k:
        raise InputDataError(path, "the UNet has no cross-attention (attn2): not a conditional LDM")
    depth = _count(sd, r"middle_block\.1\.transformer_blocks\.(\d+)\.")
    size = sample_size if sample_size is not None else 2 ** (len(mults) - 1) * 8
    return UnetSpec(sample_size=size, in_channels=int(in_ch), out_channels=int(out_ch), model_channels=int(mc),
                    channel_mult=tuple(int(m) for m in mults), num_res_blocks=res_counts[0],
                    attention_resolutions=tuple(2**lv for lv in reversed(range(len(attn))) if attn[lv]),
                    num_heads=num_heads, transformer_depth=max(depth, 1), context_dim=int(to_k[0].shape[1]),
                    time_embed_dim=int(temb), norm_num_groups=norm_num_groups)


def infer_vq_spec(sd: Mapping[str, torch.Tensor], resolution: int = 256, norm_num_groups: int = 32,
                  path=None) -> VqSpec:
    """A CompVis VQ autoencoder's sizes from its tensors (prefix-free keys)."""
    try:
        ch, in_ch = sd["encoder.conv_in.weight"].shape[:2]
        z = sd["encoder.conv_out.weight"].shape[0]
        embed_dim = sd["quant_conv.weight"].shape[0]
        n_embed = sd["quantize.embedding.weight"].shape[0]
        out_ch = sd["decoder.conv_out.weight"].shape[0]
    except KeyError as exc:
        raise InputDataError(path, f"not a CompVis VQ state dict: {exc} missing") from None
    levels = _count(sd, r"encoder\.down\.(\d+)\.block\.0\.conv1\.weight")
    mult = tuple(int(sd[f"encoder.down.{i}.block.0.conv2.weight"].shape[0] // ch) for i in range(levels))
    nrb = _count(sd, r"encoder\.down\.0\.block\.(\d+)\.conv1\.weight")
    attn = tuple(resolution // 2**i for i in range(levels) if f"encoder.down.{i}.attn.0.q.weight" in sd)
    return VqSpec(resolution=resolution, in_channels=int(in_ch), out_ch=int(out_ch), ch=int(ch), ch_mult=mult,
                  num_res_blocks=nrb, z_channels=int(z), embed_dim=int(embed_dim), n_embed=int(n_embed),
                  attn_resolutions=attn, norm_num_groups=norm_num_groups)


def read_prior_yaml(cfg_path: Path) -> dict[str, Any]:
    """The sizes shapes cannot tell (heads, latent and image size) from a CompVis LDM config.yaml.

    latent_size is `model.params.image_size`, the side MinD-Vis samples latents at
    (fLDM.generate with HW None), else the UNet's own `image_size`; the two must agree.
    """
    import yaml

    try:
        doc = yaml.safe_load(cfg_path.read_text()) or {}
        params = doc["model"]["params"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise InputDataError(cfg_path, f"not a CompVis LDM config: {exc}") from None
    unet = (params.get("unet_config") or {}).get("params") or {}
    dd = ((params.get("first_stage_config") or {}).get("params") or {}).get("ddconfig") or {}
    cond = (params.get("cond_stage_config") or {}).get("params") or {}
    if unet.get("num_head_channels", -1) not in (-1, None):
        raise InputDataError(cfg_path, "num_head_channels is set; only a fixed head count (num_heads) is supported")
    parameterization = params.get("parameterization", "eps")
    if parameterization not in ("eps", "v"):
        raise InputDataError(cfg_path, f"parameterization {parameterization!r} is not supported (eps or v)")
    sampled, unet_side = params.get("image_size"), unet.get("image_size")
    if sampled is not None and unet_side is not None and int(sampled) != int(unet_side):
        raise InputDataError(cfg_path, f"model.params.image_size {sampled} and unet_config image_size {unet_side} "
                                       "disagree")
    latent = sampled if sampled is not None else unet_side
    return {"num_heads": unet.get("num_heads"), "latent_size": None if latent is None else int(latent),
            "resolution": dd.get("resolution"), "n_classes": cond.get("n_classes"),
            "n_levels": len(dd["ch_mult"]) if dd.get("ch_mult") else None,
            "prediction_type": "epsilon" if parameterization == "eps" else "v_prediction"}


def check_latent_size(cfg_path: Path, latent_size: int | None, image_size: int, n_levels: int,
                      yaml_levels: int | None = None) -> None:
    """The config's latent side must be what the first stage makes of the images (else an error naming both)."""
    if yaml_levels is not None and yaml_levels != n_levels:
        raise InputDataError(cfg_path, f"first_stage ddconfig.ch_mult has {yaml_levels} levels but the "
                                       f"checkpoint's first stage has {n_levels}")
    expected = image_size // 2 ** (n_levels - 1)
    if latent_size is not None and latent_size != expected:
        raise InputDataError(cfg_path, f"image_size {latent_size} (the latent side sampled) disagrees with "
                                       f"{image_size}-px images through the first stage's {n_levels} levels "
                                       f"(down-sampling {2 ** (n_levels - 1)}: {expected}-px latents)")


def yaml_beside(path: Path) -> dict[str, Any]:
    """read_prior_yaml of the config.yaml beside a CompVis checkpoint ({} when there is none)."""
    cfg_path = path.with_name("config.yaml")
    return read_prior_yaml(cfg_path) if cfg_path.is_file() else {}

