"""CompVis latent-diffusion key names <-> our diffusers modules' key names (the renaming rules only).

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

Each rule below is one row of a table (a pattern on our key, the CompVis name it makes), so
the rules read as the layout above; a key no rule places is a KeyError naming it.
"""

from __future__ import annotations

import re

from mindvis.models.ldm.presets import UnetSpec, VqSpec

UNET_PREFIX = "model.diffusion_model."
VQ_PREFIX = "first_stage_model."
COND_PREFIX = "cond_stage_model."


# -- UNet names ---------------------------------------------------------------------------------
_RES_TO_COMPVIS = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
                   "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}


def _res(sub: str) -> str:
    head, _, tail = sub.partition(".")
    if head not in _RES_TO_COMPVIS:
        raise KeyError(sub)
    return f"{_RES_TO_COMPVIS[head]}.{tail}"



def _down_index(m: re.Match, spec: UnetSpec) -> int:
    # level l, res-block i -> input block 1 + l(R+1) + i
    return 1 + int(m[1]) * (spec.num_res_blocks + 1) + int(m[2])


def _up_index(m: re.Match, spec: UnetSpec) -> int:
    # up block j, block i -> output block j(R+1) + i
    return int(m[1]) * (spec.num_res_blocks + 1) + int(m[2])


def _unet_upsampler(m: re.Match, spec: UnetSpec) -> str:
    level = len(spec.channel_mult) - 1 - int(m[1])  # up block j works at level L-1-j
    slot = 2 if spec.level_has_attention(level) else 1
    return f"output_blocks.{int(m[1]) * (spec.num_res_blocks + 1) + spec.num_res_blocks}.{slot}.conv.{m[2]}"


# (pattern on our key, CompVis name from the match and the UNet's sizes), tried in order
_UNET_RULES = (
    (r"conv_in\.(.+)", lambda m, s: f"input_blocks.0.0.{m[1]}"),
    (r"time_embedding\.linear_([12])\.(.+)", lambda m, s: f"time_embed.{0 if m[1] == '1' else 2}.{m[2]}"),
    (r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", lambda m, s: f"input_blocks.{_down_index(m, s)}.0.{_res(m[3])}"),
    (r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", lambda m, s: f"input_blocks.{_down_index(m, s)}.1.{m[3]}"),
    (r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)",
     lambda m, s: f"input_blocks.{(int(m[1]) + 1) * (s.num_res_blocks + 1)}.0.op.{m[2]}"),
    (r"mid_block\.resnets\.([01])\.(.+)", lambda m, s: f"middle_block.{0 if m[1] == '0' else 2}.{_res(m[2])}"),
    (r"mid_block\.attentions\.0\.(.+)", lambda m, s: f"middle_block.1.{m[1]}"),
    (r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", lambda m, s: f"output_blocks.{_up_index(m, s)}.0.{_res(m[3])}"),
    (r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", lambda m, s: f"output_blocks.{_up_index(m, s)}.1.{m[3]}"),
    (r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", _unet_upsampler),
    (r"conv_norm_out\.(.+)", lambda m, s: f"out.0.{m[1]}"),
    (r"conv_out\.(.+)", lambda m, s: f"out.2.{m[1]}"),
)


def _apply_rules(rules, key: str, spec, what: str) -> str:
    for pattern, name in rules:
        if m := re.fullmatch(pattern, key):
            return name(m, spec)
    raise KeyError(f"no CompVis name for {what} key {key!r}")


def unet_key_to_compvis(key: str, spec: UnetSpec) -> str:
    """diffusers UNet2DConditionModel key -> CompVis UNetModel key (no prefix)."""
    return _apply_rules(_UNET_RULES, key, spec, "UNet")


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



def _vq_block(m: re.Match) -> str:
    # (level, resnets|attentions, index, rest) -> "block.{i}.<res names>" or "attn.{i}.<attention names>"
    if m[2] == "resnets":
        return f"block.{m[3]}.{_vq_res(m[4])}"
    return f"attn.{m[3]}.{_vq_attn(m[4])}"


def _vq_level(m: re.Match, spec: VqSpec) -> int:
    return len(spec.ch_mult) - 1 - int(m[1])  # decoder up block k is CompVis up.{L-1-k}


_VQ_RULES = (
    (r"(?:quant_conv|post_quant_conv|quantize\.embedding)\..*", lambda m, s: m[0]),
    (r"(encoder|decoder)\.(conv_in|conv_out)\.(.+)", lambda m, s: f"{m[1]}.{m[2]}.{m[3]}"),
    (r"(encoder|decoder)\.conv_norm_out\.(.+)", lambda m, s: f"{m[1]}.norm_out.{m[2]}"),
    (r"(encoder|decoder)\.mid_block\.(.+)", lambda m, s: f"{m[1]}.mid.{_vq_mid(m[2])}"),
    (r"encoder\.down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)",
     lambda m, s: f"encoder.down.{m[1]}.{_vq_block(m)}"),
    (r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)",
     lambda m, s: f"encoder.down.{m[1]}.downsample.conv.{m[2]}"),
    (r"decoder\.up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)",
     lambda m, s: f"decoder.up.{_vq_level(m, s)}.{_vq_block(m)}"),
    (r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)",
     lambda m, s: f"decoder.up.{_vq_level(m, s)}.upsample.conv.{m[2]}"),
)


def vq_key_to_compvis(key: str, spec: VqSpec) -> str:
    """diffusers VQModel key -> CompVis/taming VQModel key (no prefix)."""
    return _apply_rules(_VQ_RULES, key, spec, "VQ")


def vq_is_attention_weight(key: str) -> bool:
    # CompVis's attention projections are 1x1 convs (C, C, 1, 1); diffusers' are Linear (C, C)
    return bool(re.search(r"attentions\.\d+\.(to_q|to_k|to_v|to_out\.0)\.weight$", key))
