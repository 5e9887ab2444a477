"""MinD-Vis `finetuned.pth` (the whole stage B model) <-> our `DcLdm`, both directions.

The file (REFERENCE.md section 6) is a dict:
    model_state_dict   model.diffusion_model.*               the UNet, CompVis names (compvis_ldm rules)
                       model.diffusion_model.time_embed_condtion.{0,1,2}.*   the time branch (sic, the
                                                             reference's spelling): Conv1d, Conv1d, Linear
                       first_stage_model.*                   the VQ, CompVis names
                       cond_stage_model.mae.*                the stage A encoder (fmri_encoder keys:
                                                             patch_embed, cls_token, pos_embed, blocks, norm)
                       cond_stage_model.channel_mapper.{0,1}.*, cond_stage_model.dim_mapper.*
                       betas, alphas_cumprod, ..., scale_factor    schedule buffers
    config             MinD-Vis: a pickled config.Config_Generative_Model (read as data by safe_load);
                       ours: a plain dict with its field names where they apply, plus a `mindvis` block
                       holding every size, so no shape guessing is needed
    state              a torch RNG state

Our names: unet.* (diffusers), vq.* (diffusers), conditioner.encoder.* (= mae.*),
conditioner.channel_mapper.*, conditioner.dim_mapper.*, conditioner.time_branch.* (= time_embed_condtion.*).
The sizes of a MinD-Vis file come from its tensors' shapes; the encoder's head
count, which no shape shows, from the config when it has one (else MinD-Vis's 16).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mindvis.checkpoints.compvis_ldm import (
    SCHEDULE_KEYS,
    UNET_PREFIX,
    VQ_PREFIX,
    ImportReport,
    from_foreign,
    infer_unet_spec,
    infer_vq_spec,
    schedule_buffers,
    schedule_from_buffers,
    unet_key_to_compvis,
    vq_is_attention_weight,
    vq_key_to_compvis,
)
from mindvis.checkpoints.mindvis_encoder import arch_from_state_dict, config_fields
from mindvis.checkpoints.safe_load import ForeignConfig, safe_load
from mindvis.models.ldm.dc_ldm import DcLdm, build_fmri_ldm
from mindvis.models.ldm.presets import LdmSpec, ScheduleSpec, ldm_spec_from_dict, spec_to_dict
from mindvis.models.presets import ArchSpec
from mindvis.utils.atomic import atomic_path
from mindvis.utils.errors import InputDataError

log = logging.getLogger(__name__)

COND_PREFIX = "cond_stage_model."
MAE_PREFIX = COND_PREFIX + "mae."
TIME_PREFIX = UNET_PREFIX + "time_embed_condtion."  # sic
SCHEDULE_DROP = "schedule buffer (recomputed from the schedule)"


def mindvis_key(key: str, model: DcLdm) -> str:
    """Our DcLdm state-dict key -> the key in MinD-Vis's model_state_dict."""
    spec = model.spec
    if key.startswith("unet."):
        return UNET_PREFIX + unet_key_to_compvis(key[len("unet."):], spec.unet)
    if key.startswith("vq."):
        return VQ_PREFIX + vq_key_to_compvis(key[len("vq."):], spec.vq)
    if key.startswith("conditioner.encoder."):
        return MAE_PREFIX + key[len("conditioner.encoder."):]
    if key.startswith(("conditioner.channel_mapper.", "conditioner.dim_mapper.")):
        return COND_PREFIX + key[len("conditioner."):]
    if key.startswith("conditioner.time_branch."):
        return TIME_PREFIX + key[len("conditioner.time_branch."):]
    raise KeyError(f"no MinD-Vis name for {key!r}")


def _needs_conv_shape(key: str) -> bool:
    return key.startswith("vq.") and vq_is_attention_weight(key)


def export_mindvis_state(model: DcLdm, with_schedule: bool = True) -> dict[str, torch.Tensor]:
    """Our stage B model -> MinD-Vis's model_state_dict (loads into its LatentDiffusion)."""
    out = {}
    for key, value in model.state_dict().items():
        value = value.detach().cpu().clone()
        if _needs_conv_shape(key):
            value = value.reshape(*value.shape, 1, 1)
        out[mindvis_key(key, model)] = value
    if with_schedule:
        out.update(schedule_buffers(model.spec.schedule))
    return out


def import_mindvis_state(model: DcLdm, state: dict[str, torch.Tensor], path=None) -> ImportReport:
    """Load a MinD-Vis model_state_dict into `model` (every key used or reported; unknown keys fail)."""
    report = ImportReport()
    nets = {}
    for key, value in state.items():
        if key in SCHEDULE_KEYS:
            report.drop(key, SCHEDULE_DROP)
        elif key.startswith("model_ema."):
            report.drop(key, "EMA weights (not used: the reference trains without EMA)")
        elif key.startswith(VQ_PREFIX + "loss."):
            report.drop(key, "VQ training loss networks (LPIPS / discriminator)")
        else:
            nets[key] = value
    if "betas" in state:
        found = schedule_from_buffers(state, path)
        ours = model.spec.schedule
        if (found.timesteps, round(found.linear_start, 6), round(found.linear_end, 6)) != \
                (ours.timesteps, round(ours.linear_start, 6), round(ours.linear_end, 6)):
            raise InputDataError(path, f"schedule buffers {spec_to_dict(found)} differ from the model's "
                                       f"{spec_to_dict(ours)}")
    expected = model.state_dict()
    converted = from_foreign(nets, expected, lambda k: mindvis_key(k, model), _needs_conv_shape, path=path)
    model.load_state_dict(converted, strict=True)
    report.used = len(converted)
    return report


# -- architecture of a file ------------------------------------------------------------------------
@dataclass
class StageBLayout:
    spec: LdmSpec
    encoder_arch: ArchSpec
    n_tokens: int
    use_time_cond: bool


def _strip(state, prefix):
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def layout_from_state(state: dict[str, torch.Tensor], fields: dict[str, Any], path=None) -> StageBLayout:
    """Every size of a stage B model from its model_state_dict (+ our `mindvis` block when present)."""
    ours = fields.get("mindvis") if isinstance(fields.get("mindvis"), dict) else {}
    mae = _strip(state, MAE_PREFIX)
    if not mae:
        raise InputDataError(path, "no cond_stage_model.mae.* keys: not a MinD-Vis stage B checkpoint")
    if COND_PREFIX + "channel_mapper.0.weight" not in state:
        raise InputDataError(path, "no cond_stage_model.channel_mapper: checkpoints made with global_pool=True "
                                   "(one pooled token) are not supported")
    enc_fields = dict(ours.get("encoder") or {})
    for key in ("num_heads", "decoder_num_heads"):
        if key in fields and key not in enc_fields:
            enc_fields[key] = fields[key]
    arch, n_tokens, _ = arch_from_state_dict(mae, enc_fields, path)
    use_time = any(k.startswith(TIME_PREFIX) for k in state)
    if ours.get("spec"):
        spec = ldm_spec_from_dict(ours["spec"])
    else:
        unet_sd = {k: v for k, v in _strip(state, UNET_PREFIX).items() if not k.startswith("time_embed_condtion.")}
        img = int(fields.get("img_size") or 256)
        vq = infer_vq_spec(_strip(state, VQ_PREFIX), resolution=img, path=path)
        unet = infer_unet_spec(unet_sd, sample_size=vq.latent_size, path=path)
        context_len = int(state[COND_PREFIX + "channel_mapper.1.weight"].shape[0])
        spec = LdmSpec(unet=unet, vq=vq, schedule=schedule_from_buffers(state, path) or ScheduleSpec(),
                       context_len=context_len).validate()
    return StageBLayout(spec=spec, encoder_arch=arch, n_tokens=n_tokens, use_time_cond=use_time)


# -- files -----------------------------------------------------------------------------------------
@dataclass
class LoadedFinetuned:
    model: DcLdm
    layout: StageBLayout
    config: dict[str, Any] = field(default_factory=dict)  # the file's config as a plain dict
    config_class: str | None = None  # "config.Config_Generative_Model" for MinD-Vis's files
    report: ImportReport = field(default_factory=ImportReport)

    @property
    def mindvis(self) -> dict[str, Any]:
        block = self.config.get("mindvis")
        return block if isinstance(block, dict) else {}


def load_finetuned(path: str | Path, map_location: str = "cpu") -> LoadedFinetuned:
    """A stage B model ready to sample, from MinD-Vis's finetuned.pth or ours (no pickled code runs)."""
    path = Path(path)
    obj = safe_load(path, map_location=map_location)
    if not isinstance(obj, dict) or not isinstance(obj.get("model_state_dict"), dict):
        raise InputDataError(path, "not a stage B checkpoint: expected a dict with 'model_state_dict'")
    state = obj["model_state_dict"]
    raw_config = obj.get("config")
    fields = config_fields(raw_config)
    layout = layout_from_state(state, fields, path)
    model = build_fmri_ldm(layout.spec, layout.encoder_arch, layout.n_tokens, layout.use_time_cond)
    report = import_mindvis_state(model, state, path)
    log.info("%s: loaded %d tensors (%s)", path, report.used, report.reasons() or "nothing dropped")
    return LoadedFinetuned(model=model, layout=layout, config=fields, report=report,
                           config_class=raw_config.class_name if isinstance(raw_config, ForeignConfig) else None)


def save_finetuned(path: str | Path, model: DcLdm, config: dict[str, Any]) -> Path:
    """Write finetuned.pth atomically in MinD-Vis's layout (config: a plain dict)."""
    payload = {"model_state_dict": export_mindvis_state(model), "config": dict(config),
               "state": torch.get_rng_state()}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def finetuned_config(model: DcLdm, layout_extra: dict[str, Any], **reference_fields: Any) -> dict[str, Any]:
    """A plain-dict config: MinD-Vis's Config_Generative_Model field names + our `mindvis` block of sizes."""
    encoder = model.conditioner.encoder
    block = {"format": "mindvis.dc_ldm/1", "spec": spec_to_dict(model.spec), "encoder": encoder.arch.as_dict(),
             "n_tokens": encoder.n_tokens, "use_time_cond": model.conditioner.time_branch is not None,
             **layout_extra}
    cfg = {"img_size": model.spec.vq.resolution, "use_time_cond": block["use_time_cond"], "global_pool": False,
           "patch_size": encoder.patch_size, "num_voxels": encoder.num_voxels, **reference_fields}
    cfg["mindvis"] = block
    return cfg
