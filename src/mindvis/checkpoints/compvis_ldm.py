"""CompVis latent-diffusion checkpoints <-> our diffusers modules, key by key, both directions.

CompVis layout (the `state_dict` of `label2img/model.ckpt`, cin256-v2; docs/reference.md §7.3):

    model.diffusion_model.*   the UNet (openaimodel.UNetModel)
      input_blocks.0.0                     conv_in
      input_blocks.{n}.0                   res-block (in_layers.{0 norm, 2 conv}, emb_layers.1,
                                           out_layers.{0 norm, 3 conv}, skip_connection when widths differ)
      input_blocks.{n}.1                   spatial transformer of a level with attention
                                           (norm, proj_in, transformer_blocks.{d}.{attn1,attn2,ff,norm1..3}, proj_out)
      input_blocks.{n}.0.op                downsampling conv
        with R res-blocks per level, level l uses n = 1 + l(R+1) + i (i < R), its downsampler n = (l+1)(R+1)
      middle_block.{0, 2}                  res-blocks; middle_block.1 spatial transformer
      output_blocks.{k}.0 / .1             res-block / transformer, k = j(R+1) + i over the levels from the
                                           lowest resolution up (R+1 blocks each)
      output_blocks.{k}.{1|2}.conv         upsampling conv after the last block of a level
                                           (index 2 when that level has a transformer)
      time_embed.{0, 2}                    Linear-SiLU-Linear time embedding
      out.{0 norm, 2 conv}                 output head
      label_emb                            class embedding of class-conditional UNets (not cin256-v2)
    first_stage_model.*       the VQ autoencoder (taming/CompVis VQModel)
      encoder.conv_in, encoder.down.{i}.block.{j} (norm1, conv1, norm2, conv2, nin_shortcut),
      encoder.down.{i}.attn.{j} (norm, q, k, v, proj_out: 1x1 convs), encoder.down.{i}.downsample.conv,
      encoder.mid.{block_1, attn_1, block_2}, encoder.norm_out, encoder.conv_out,
      decoder.conv_in, decoder.mid.*, decoder.up.{i}.block.{j} (R+1 per level), decoder.up.{i}.attn.{j},
      decoder.up.{i}.upsample.conv, decoder.norm_out, decoder.conv_out   (up.{i}: level i, 0 = full res)
      quantize.embedding, quant_conv, post_quant_conv
    cond_stage_model.embedding   the ClassEmbedder (1000 ImageNet classes + 1 unconditional)
    betas, alphas_cumprod, ... , scale_factor    the DDPM schedule buffers

diffusers names: UNet conv_in, time_embedding.linear_{1,2}, down_blocks.{l}.{resnets,attentions}.{i},
down_blocks.{l}.downsamplers.0.conv, mid_block.{resnets.{0,1}, attentions.0}, up_blocks.{j}.*,
up_blocks.{j}.upsamplers.0.conv, conv_norm_out, conv_out; res-blocks norm1, conv1, time_emb_proj,
norm2, conv2, conv_shortcut; the transformer blocks keep CompVis's names. VQ: encoder/decoder
down_blocks / up_blocks (decoder up_blocks.{k} = CompVis up.{L-1-k}), mid_block, conv_norm_out;
attention group_norm, to_q, to_k, to_v, to_out.0 as Linear layers (CompVis: 1x1 convs, reshaped).

Every name is produced by the rules below from our module's own key list, so
a conversion uses every key or says which it could not place: unknown keys
are an error; the keys we knowingly leave out (a class embedder when the
fMRI conditioner replaces it, EMA copies, the VQ's training loss networks,
the schedule buffers, which are recomputed and checked) are listed in the
returned report.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from mindvis.checkpoints.safe_load import safe_load
from mindvis.models.ldm.presets import (
    LdmSpec,
    ScheduleSpec,
    UnetSpec,
    VqSpec,
    ldm_spec_from_dict,
    spec_to_dict,
    vq_spec_from_dict,
)
from mindvis.utils.atomic import atomic_path
from mindvis.utils.errors import InputDataError

log = logging.getLogger(__name__)

UNET_PREFIX = "model.diffusion_model."
VQ_PREFIX = "first_stage_model."
COND_PREFIX = "cond_stage_model."

# the DDPM buffers CompVis's LatentDiffusion stores next to the networks (recomputed from the betas)
SCHEDULE_KEYS = ("betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
                 "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
                 "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
                 "posterior_mean_coef1", "posterior_mean_coef2", "scale_factor", "logvar", "cond_ids")


# -- UNet names ---------------------------------------------------------------------------------
_RES_TO_COMPVIS = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
                   "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}


def _res(sub: str) -> str:
    head, _, tail = sub.partition(".")
    if head not in _RES_TO_COMPVIS:
        raise KeyError(sub)
    return f"{_RES_TO_COMPVIS[head]}.{tail}"


def unet_key_to_compvis(key: str, spec: UnetSpec) -> str:
    """diffusers UNet2DConditionModel key -> CompVis UNetModel key (no prefix)."""
    r = spec.num_res_blocks
    if m := re.fullmatch(r"conv_in\.(.+)", key):
        return f"input_blocks.0.0.{m[1]}"
    if m := re.fullmatch(r"time_embedding\.linear_([12])\.(.+)", key):
        return f"time_embed.{0 if m[1] == '1' else 2}.{m[2]}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        return f"input_blocks.{1 + int(m[1]) * (r + 1) + int(m[2])}.0.{_res(m[3])}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", key):
        return f"input_blocks.{1 + int(m[1]) * (r + 1) + int(m[2])}.1.{m[3]}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"input_blocks.{(int(m[1]) + 1) * (r + 1)}.0.op.{m[2]}"
    if m := re.fullmatch(r"mid_block\.resnets\.([01])\.(.+)", key):
        return f"middle_block.{0 if m[1] == '0' else 2}.{_res(m[2])}"
    if m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", key):
        return f"middle_block.1.{m[1]}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        return f"output_blocks.{int(m[1]) * (r + 1) + int(m[2])}.0.{_res(m[3])}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", key):
        return f"output_blocks.{int(m[1]) * (r + 1) + int(m[2])}.1.{m[3]}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
        level = len(spec.channel_mult) - 1 - int(m[1])  # up block j works at level L-1-j
        slot = 2 if spec.level_has_attention(level) else 1
        return f"output_blocks.{int(m[1]) * (r + 1) + r}.{slot}.conv.{m[2]}"
    if m := re.fullmatch(r"conv_norm_out\.(.+)", key):
        return f"out.0.{m[1]}"
    if m := re.fullmatch(r"conv_out\.(.+)", key):
        return f"out.2.{m[1]}"
    raise KeyError(f"no CompVis name for UNet key {key!r}")


# -- VQ names -----------------------------------------------------------------------------------
_VQ_ATTN_TO_COMPVIS = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
_VQ_MID = {"resnets.0": "block_1", "resnets.1": "block_2", "attentions.0": "attn_1"}


def _vq_res(sub: str) -> str:
    return re.sub(r"^conv_shortcut\.", "nin_shortcut.", sub)


def _vq_attn(sub: str) -> str:
    for ours, theirs in _VQ_ATTN_TO_COMPVIS.items():
        if sub.startswith(ours + "."):
            return theirs + sub[len(ours):]
    raise KeyError(sub)


def _vq_mid(sub: str) -> str:
    m = re.fullmatch(r"(resnets\.[01]|attentions\.0)\.(.+)", sub)
    if m is None:
        raise KeyError(sub)
    inner = _vq_attn(m[2]) if m[1].startswith("attentions") else _vq_res(m[2])
    return f"{_VQ_MID[m[1]]}.{inner}"


def vq_key_to_compvis(key: str, spec: VqSpec) -> str:
    """diffusers VQModel key -> CompVis/taming VQModel key (no prefix)."""
    n_levels = len(spec.ch_mult)
    if key.startswith(("quant_conv.", "post_quant_conv.", "quantize.embedding.")):
        return key
    for part in ("encoder", "decoder"):
        if not key.startswith(part + "."):
            continue
        rest = key[len(part) + 1:]
        if m := re.fullmatch(r"(conv_in|conv_out)\.(.+)", rest):
            return f"{part}.{m[1]}.{m[2]}"
        if m := re.fullmatch(r"conv_norm_out\.(.+)", rest):
            return f"{part}.norm_out.{m[1]}"
        if m := re.fullmatch(r"mid_block\.(.+)", rest):
            return f"{part}.mid.{_vq_mid(m[1])}"
        if part == "encoder" and (m := re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", rest)):
            inner = _vq_res(m[4]) if m[2] == "resnets" else _vq_attn(m[4])
            return f"encoder.down.{m[1]}.{'block' if m[2] == 'resnets' else 'attn'}.{m[3]}.{inner}"
        if part == "encoder" and (m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", rest)):
            return f"encoder.down.{m[1]}.downsample.conv.{m[2]}"
        if part == "decoder" and (m := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", rest)):
            inner = _vq_res(m[4]) if m[2] == "resnets" else _vq_attn(m[4])
            level = n_levels - 1 - int(m[1])
            return f"decoder.up.{level}.{'block' if m[2] == 'resnets' else 'attn'}.{m[3]}.{inner}"
        if part == "decoder" and (m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", rest)):
            return f"decoder.up.{n_levels - 1 - int(m[1])}.upsample.conv.{m[2]}"
    raise KeyError(f"no CompVis name for VQ key {key!r}")


def vq_is_attention_weight(key: str) -> bool:
    # CompVis's attention projections are 1x1 convs (C, C, 1, 1); diffusers' are Linear (C, C)
    return bool(re.search(r"attentions\.\d+\.(to_q|to_k|to_v|to_out\.0)\.weight$", key))


# -- generic conversion -------------------------------------------------------------------------
@dataclass
class ImportReport:
    """What a conversion did: how many tensors it placed and which input keys it left out, and why."""

    used: int = 0
    dropped: dict[str, str] = field(default_factory=dict)

    def drop(self, key: str, reason: str) -> None:
        self.dropped[key] = reason

    def reasons(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for reason in self.dropped.values():
            out[reason] = out.get(reason, 0) + 1
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"used": self.used, "dropped": len(self.dropped), "dropped_by_reason": self.reasons()}


def to_foreign(state: Mapping[str, torch.Tensor], rename, reshape=None) -> dict[str, torch.Tensor]:
    """Our module's state dict -> the foreign names (and shapes)."""
    out = {}
    for key, value in state.items():
        value = value.detach().cpu().clone()
        if reshape is not None and reshape(key):
            value = value.reshape(*value.shape, 1, 1)
        out[rename(key)] = value
    return out


def from_foreign(foreign: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], rename,
                 reshape=None, where: str = "", path: str | Path | None = None) -> dict[str, torch.Tensor]:
    """Foreign tensors -> our names, for exactly the keys of `expected` (our module's state dict).

    Fails (InputDataError) on a missing or unknown key, or a shape that differs.
    """
    names = {rename(k): k for k in expected}
    unknown = sorted(set(foreign) - set(names))
    missing = sorted(set(names) - set(foreign))
    if unknown or missing:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(where + k for k in missing[:4])})")
        if unknown:
            parts.append(f"{len(unknown)} unexpected (e.g. {', '.join(where + k for k in unknown[:4])})")
        raise InputDataError(path, f"{where or 'state dict'} does not match the expected layout: " + "; ".join(parts))
    out = {}
    for theirs, ours in names.items():
        value = foreign[theirs]
        if reshape is not None and reshape(ours) and value.ndim == 4 and value.shape[2:] == (1, 1):
            value = value.reshape(value.shape[:2])
        if tuple(value.shape) != tuple(expected[ours].shape):
            raise InputDataError(path, f"{where}{theirs}: shape {tuple(value.shape)}, the model expects "
                                       f"{tuple(expected[ours].shape)} (for {ours})")
        out[ours] = value
    return out


def unet_to_compvis(state: Mapping[str, torch.Tensor], spec: UnetSpec) -> dict[str, torch.Tensor]:
    return to_foreign(state, lambda k: unet_key_to_compvis(k, spec))


def unet_from_compvis(foreign: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], spec: UnetSpec,
                      path=None, where: str = UNET_PREFIX) -> dict[str, torch.Tensor]:
    return from_foreign(foreign, expected, lambda k: unet_key_to_compvis(k, spec), where=where, path=path)


def vq_to_compvis(state: Mapping[str, torch.Tensor], spec: VqSpec) -> dict[str, torch.Tensor]:
    return to_foreign(state, lambda k: vq_key_to_compvis(k, spec), vq_is_attention_weight)


def vq_from_compvis(foreign: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], spec: VqSpec,
                    path=None, where: str = VQ_PREFIX) -> dict[str, torch.Tensor]:
    return from_foreign(foreign, expected, lambda k: vq_key_to_compvis(k, spec), vq_is_attention_weight,
                        where=where, path=path)


def strip(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def add_prefix(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in state.items()}


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


def _compvis_yaml(path: Path) -> dict[str, Any]:
    """read_prior_yaml of the config.yaml beside a CompVis checkpoint ({} when there is none)."""
    cfg_path = path.with_name("config.yaml")
    return read_prior_yaml(cfg_path) if cfg_path.is_file() else {}


# -- whole checkpoints -----------------------------------------------------------------------------
@dataclass
class LoadedLdm:
    """A CompVis-layout LDM checkpoint read as data: its sizes and its tensors by part (CompVis names)."""

    spec: LdmSpec
    unet: dict[str, torch.Tensor]  # CompVis UNet keys, prefix removed
    vq: dict[str, torch.Tensor]
    class_embedding: torch.Tensor | None  # (n_classes + 1, context_dim) or None
    report: ImportReport
    config: dict[str, Any] = field(default_factory=dict)  # our files: the plain-dict "mindvis" block


def _state_of(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        return obj["state_dict"]
    if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    raise InputDataError(path, "not a CompVis checkpoint: expected a dict with a 'state_dict' of tensors")


def split_ldm_state(state: Mapping[str, torch.Tensor], report: ImportReport, keep_class_embedder: bool,
                    path=None) -> tuple[dict, dict, torch.Tensor | None, dict]:
    """(unet, vq, class embedding, schedule buffers) of a CompVis LatentDiffusion state dict."""
    unet, vq, sched, class_emb = {}, {}, {}, None
    unexpected = []
    for key, value in state.items():
        if key.startswith(UNET_PREFIX):
            inner = key[len(UNET_PREFIX):]
            if inner.startswith("label_emb."):
                report.drop(key, "class embedder of the UNet (replaced by the conditioner)")
            else:
                unet[inner] = value
        elif key.startswith(VQ_PREFIX):
            inner = key[len(VQ_PREFIX):]
            if inner.startswith("loss."):
                report.drop(key, "VQ training loss networks (LPIPS / discriminator)")
            else:
                vq[inner] = value
        elif key == COND_PREFIX + "embedding.weight":
            if keep_class_embedder:
                class_emb = value
            else:
                report.drop(key, "class embedder (replaced by the fMRI conditioner)")
        elif key.startswith("model_ema."):
            report.drop(key, "EMA weights (not used: the reference trains without EMA)")
        elif key in SCHEDULE_KEYS:
            sched[key] = value
            report.drop(key, "schedule buffer (recomputed from the schedule)")
        else:
            unexpected.append(key)
    if unexpected:
        raise InputDataError(path, f"{len(unexpected)} unexpected key(s) in the LDM checkpoint: "
                                   f"{', '.join(sorted(unexpected)[:6])}")
    return unet, vq, class_emb, sched


def read_compvis_ldm(path: str | Path, keep_class_embedder: bool = True) -> LoadedLdm:
    """Read a CompVis LatentDiffusion checkpoint (CompVis's own, or our label2img.pt) without running code."""
    path = Path(path)
    obj = safe_load(path)
    state = _state_of(obj, path)
    ours = obj.get("mindvis") if isinstance(obj, dict) and isinstance(obj.get("mindvis"), dict) else {}
    report = ImportReport()
    unet, vq, class_emb, sched = split_ldm_state(state, report, keep_class_embedder, path)
    if not unet or not vq:
        raise InputDataError(path, "the checkpoint lacks the UNet (model.diffusion_model.*) or the first stage "
                                   "(first_stage_model.*)")
    if ours.get("spec"):
        spec = ldm_spec_from_dict(ours["spec"])
    else:
        hints = _compvis_yaml(path)
        vq_spec = infer_vq_spec(vq, resolution=int(hints.get("resolution") or 256), path=path)
        if hints:
            check_latent_size(path.with_name("config.yaml"), hints.get("latent_size"), vq_spec.resolution,
                              len(vq_spec.ch_mult), hints.get("n_levels"))
        unet_spec = infer_unet_spec(unet, num_heads=int(hints.get("num_heads") or 1),
                                    sample_size=int(hints.get("latent_size") or vq_spec.latent_size), path=path)
        schedule = schedule_from_buffers(sched, path) or ScheduleSpec()
        schedule = replace(schedule, prediction_type=hints.get("prediction_type") or "epsilon")
        spec = LdmSpec(unet=unet_spec, vq=vq_spec, schedule=schedule)
        spec.validate()
        log.info("%s: architecture read from the tensors' shapes: %s", path, spec_to_dict(spec))
    from_buffers = schedule_from_buffers(sched, path)
    if from_buffers is not None and not _same_schedule(from_buffers, spec.schedule):
        raise InputDataError(path, f"schedule buffers {spec_to_dict(from_buffers)} disagree with the config "
                                   f"{spec_to_dict(spec.schedule)}")
    report.used = len(unet) + len(vq) + (class_emb is not None)
    return LoadedLdm(spec=spec, unet=unet, vq=vq, class_embedding=class_emb, report=report, config=dict(ours))


def _same_schedule(a: ScheduleSpec, b: ScheduleSpec) -> bool:
    return (a.timesteps == b.timesteps and math.isclose(a.linear_start, b.linear_start, rel_tol=1e-4)
            and math.isclose(a.linear_end, b.linear_end, rel_tol=1e-4)
            and math.isclose(a.scale_factor, b.scale_factor, rel_tol=1e-6))


def export_compvis_state(model) -> dict[str, torch.Tensor]:
    """A DcLdm with a ClassConditioner -> CompVis LatentDiffusion state dict (what label2img/model.ckpt holds)."""
    spec = model.spec
    state = add_prefix(unet_to_compvis(model.unet.state_dict(), spec.unet), UNET_PREFIX)
    state.update(add_prefix(vq_to_compvis(model.vq.state_dict(), spec.vq), VQ_PREFIX))
    embedding = getattr(model.conditioner, "embedding", None)
    if embedding is not None:
        state[COND_PREFIX + "embedding.weight"] = embedding.weight.detach().cpu().clone()
    state.update(schedule_buffers(spec.schedule))
    return state


def save_compvis_checkpoint(path: str | Path, state: Mapping[str, torch.Tensor], mindvis: dict[str, Any],
                            **extra: Any) -> Path:
    """Write {"state_dict", "mindvis": plain-dict config, ...} atomically (Lightning-like, loadable by CompVis code)."""
    payload = {"state_dict": dict(state), "mindvis": dict(mindvis), **extra}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def read_vq_checkpoint(path: str | Path) -> tuple[VqSpec, dict[str, torch.Tensor], ImportReport, dict[str, Any]]:
    """A CompVis/taming VQ checkpoint (ours: autoencoder.pt) -> (sizes, CompVis-named tensors, report, config)."""
    path = Path(path)
    obj = safe_load(path)
    state = _state_of(obj, path)
    ours = obj.get("mindvis") if isinstance(obj, dict) and isinstance(obj.get("mindvis"), dict) else {}
    report = ImportReport()
    vq = {}
    for key, value in state.items():
        inner = key[len(VQ_PREFIX):] if key.startswith(VQ_PREFIX) else key
        if inner.startswith("loss."):
            report.drop(key, "VQ training loss networks (LPIPS / discriminator)")
        elif inner.startswith(("encoder.", "decoder.", "quantize.", "quant_conv.", "post_quant_conv.")):
            vq[inner] = value
        else:
            raise InputDataError(path, f"unexpected key {key!r} in a VQ autoencoder checkpoint")
    if ours.get("vq"):
        spec = vq_spec_from_dict(ours["vq"])
    else:
        spec = infer_vq_spec(vq, path=path).validate()
    report.used = len(vq)
    return spec, vq, report, dict(ours)
