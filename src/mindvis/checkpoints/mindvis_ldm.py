"""MinD-Vis `finetuned.pth` (the whole stage B model) <-> our `DcLdm`, both directions.

The file (docs/reference.md §5 lists every key and where it comes from) is a dict:
    model_state_dict   the reference's LatentDiffusion.state_dict():
                       model.diffusion_model.*               the UNet, CompVis names (compvis_names rules)
                       model.diffusion_model.time_embed_condtion.{0,1,2}.*   the time branch (sic, the
                                                             reference's spelling): Conv1d, Conv1d, Linear
                       first_stage_model.*                   the VQ, CompVis names
                       cond_stage_model.mae.*                the stage A encoder (patch_embed, cls_token,
                                                             pos_embed, blocks, norm, mask_token)
                       cond_stage_model.channel_mapper.{0,1}.*, cond_stage_model.dim_mapper.*
                       betas, alphas_cumprod, ... (12)       schedule buffers (no scale_factor: the
                                                             reference keeps it as a plain attribute)
    config             a pickled config.Config_Generative_Model (read as data by safe_load); ours is
                       the same class name (stage_b_config) with a `mindvis` attribute holding
                       every size, so no shape guessing is needed
    state              an RNG state (ours: a CUDA generator state, which gen_eval.py sets)

Our names: unet.* (diffusers), vq.* (diffusers), conditioner.encoder.* (= mae.*),
conditioner.channel_mapper.*, conditioner.dim_mapper.*, conditioner.time_branch.* (= time_embed_condtion.*).

Import: every key of the reference's list is used or dropped for a stated
reason (`DROPPED_ON_IMPORT`); anything else is an error. A MinD-Vis file's
sizes come from its tensors' shapes, except two numbers no shape shows:
the encoder's head count (from the stage A checkpoint's config, as the
reference reads it, or a setting; never guessed) and the latent side (from
the prior's config.yaml when one is found, checked against img_size and the
first stage's down-sampling).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from mindvis.checkpoints import compvis_specs
from mindvis.checkpoints.compvis_ldm import ImportReport, from_foreign, strip
from mindvis.checkpoints.compvis_names import (
    UNET_PREFIX,
    VQ_PREFIX,
    unet_key_to_compvis,
    vq_is_attention_weight,
    vq_key_to_compvis,
)
from mindvis.checkpoints.mindvis_encoder import arch_from_state_dict, config_fields
from mindvis.checkpoints.stage_b_config import (
    ConfigGenerativeModel,
    cuda_rng_state,
    save_reference_payload,
)
from mindvis.checkpoints.stage_b_config import (
    reference_fields as config_for_reference,
)
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
MASK_TOKEN_KEY = MAE_PREFIX + "mask_token"
SCHEDULE_DROP = "schedule buffer (recomputed from the schedule)"
MASK_TOKEN_DROP = ("the stage A encoder's mask token (MAE pre-training only: encoding fMRI for stage B or "
                   "sampling never reads it; the reference itself does not carry the stage A value over)")
SCALE_FACTOR_DROP = ("scale_factor (only in mindvis exports made before issue 18: the reference keeps it as an "
                     "attribute, never saved; checked against the model's)")
# the DDPM buffers the reference registers with register_buffer (persistent ones: lvlb_weights is not saved)
REFERENCE_SCHEDULE_KEYS = tuple(k for k in compvis_specs.SCHEDULE_KEYS
                                if k not in ("scale_factor", "logvar", "cond_ids"))

# Every key a stage B file may hold that the import does not place in the model, and why
# (docs/reference.md §5). A key neither placed nor listed here is an error.
DROPPED_ON_IMPORT: dict[str, str] = {
    MASK_TOKEN_KEY: MASK_TOKEN_DROP,
    **{key: SCHEDULE_DROP for key in REFERENCE_SCHEDULE_KEYS},
    "scale_factor": SCALE_FACTOR_DROP,
}

STAGE_A_NAME = "fmri_encoder.pth"  # MinD-Vis's pretrains/<dataset>/ holds it beside finetuned.pth
HEADS_HINT = ("set generate's `encoder_num_heads` (e.g. --set encoder_num_heads=16; config "
              "stage_b.generate.encoder_num_heads) or give the stage A checkpoint (`encoder_checkpoint`, "
              f"or {STAGE_A_NAME} beside this file, as MinD-Vis's pretrains/<dataset>/ holds it)")


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


def export_mindvis_state(model: DcLdm, with_schedule: bool = True,
                         mask_token: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Our stage B model -> MinD-Vis's model_state_dict: exactly the keys its LatentDiffusion loads strictly.

    mask_token: the value to write for the encoder's mask token, which our encoder does not
    hold (nothing reads it when sampling); None writes zeros (1, 1, width).
    """
    out = {}
    for key, value in model.state_dict().items():
        value = value.detach().cpu().clone()
        if _needs_conv_shape(key):
            value = value.reshape(*value.shape, 1, 1)
        out[mindvis_key(key, model)] = value
    width = model.conditioner.encoder.arch.embed_dim
    token = torch.zeros(1, 1, width) if mask_token is None else mask_token.detach().cpu().clone()
    if tuple(token.shape) != (1, 1, width):
        raise ValueError(f"mask token of shape {tuple(token.shape)}; the encoder needs (1, 1, {width})")
    out[MASK_TOKEN_KEY] = token
    if with_schedule:
        buffers = compvis_specs.schedule_buffers(model.spec.schedule)
        out.update({k: buffers[k] for k in REFERENCE_SCHEDULE_KEYS})
    return out


def _check_schedule(model: DcLdm, state: dict[str, torch.Tensor], path) -> None:
    ours = model.spec.schedule
    if "betas" in state:
        found = compvis_specs.schedule_from_buffers(state, path)
        if (found.timesteps, round(found.linear_start, 6), round(found.linear_end, 6)) != \
                (ours.timesteps, round(ours.linear_start, 6), round(ours.linear_end, 6)):
            raise InputDataError(path, f"schedule buffers {spec_to_dict(found)} differ from the model's "
                                       f"{spec_to_dict(ours)}")
    if "scale_factor" in state and abs(float(state["scale_factor"]) - ours.scale_factor) > 1e-6:
        raise InputDataError(path, f"scale_factor {float(state['scale_factor'])} differs from the model's "
                                   f"{ours.scale_factor}")


def import_mindvis_state(model: DcLdm, state: dict[str, torch.Tensor], path=None) -> ImportReport:
    """Load a MinD-Vis model_state_dict into `model`: every key placed or in DROPPED_ON_IMPORT; others fail."""
    report = ImportReport()
    nets = {}
    ema = sorted(k for k in state if k.startswith("model_ema."))
    if ema:
        raise InputDataError(path, f"{len(ema)} EMA key(s) (e.g. {ema[0]}): the reference samples with EMA weights "
                                   "when it has them; a stage B file with EMA is not supported")
    for key, value in state.items():
        if key in DROPPED_ON_IMPORT:
            report.drop(key, DROPPED_ON_IMPORT[key])
        else:
            nets[key] = value
    _check_schedule(model, state, path)
    expected = model.state_dict()
    converted = from_foreign(nets, expected, lambda k: mindvis_key(k, model), _needs_conv_shape, path=path)
    model.load_state_dict(converted, strict=True)
    report.used = len(converted)
    return report


# -- what a MinD-Vis file does not hold --------------------------------------------------------------
@dataclass
class StageBLayout:
    spec: LdmSpec
    encoder_arch: ArchSpec
    n_tokens: int
    use_time_cond: bool
    sources: dict[str, str] = field(default_factory=dict)  # where the head count / latent side came from


def _stage_a_heads(stage_a: Path, mae: dict[str, torch.Tensor]) -> int:
    """num_heads from a stage A fmri_encoder.pth's config (the reference builds its encoder from it)."""
    obj = safe_load(stage_a, mmap=True)
    if not isinstance(obj, dict) or not isinstance(obj.get("model"), dict):
        raise InputDataError(stage_a, "not a stage A fmri_encoder.pth: expected a dict with a 'model' state dict")
    heads = config_fields(obj.get("config")).get("num_heads")
    if heads is None:
        raise InputDataError(stage_a, f"its config has no 'num_heads'; {HEADS_HINT}")
    theirs = {k.removeprefix("module."): v for k, v in obj["model"].items()}
    for key in ("patch_embed.proj.weight", "blocks.0.attn.qkv.weight"):
        if key in theirs and key in mae and tuple(theirs[key].shape) != tuple(mae[key].shape):
            raise InputDataError(stage_a, f"{key} {tuple(theirs[key].shape)} differs from the stage B encoder's "
                                          f"{tuple(mae[key].shape)}: not this model's stage A")
    return int(heads)


def encoder_heads(path: Path | None, fields: dict[str, Any], mae: dict[str, torch.Tensor],
                  encoder_checkpoint: str | Path | None = None,
                  encoder_num_heads: int | None = None) -> tuple[int, str]:
    """(head count, where it came from): the stage A checkpoint, a setting, the file's config, or an error."""
    if encoder_checkpoint is not None:
        stage_a = Path(encoder_checkpoint)
        heads = _stage_a_heads(stage_a, mae)
        if encoder_num_heads is not None and int(encoder_num_heads) != heads:
            raise InputDataError(stage_a, f"num_heads {heads} disagrees with encoder_num_heads {encoder_num_heads}")
        return heads, f"stage A checkpoint {stage_a}"
    if encoder_num_heads is not None:
        return int(encoder_num_heads), "setting encoder_num_heads"
    if fields.get("num_heads") is not None:
        return int(fields["num_heads"]), "the file's config (num_heads)"
    beside = path.with_name(STAGE_A_NAME) if path is not None else None
    if beside is not None and beside.is_file():
        return _stage_a_heads(beside, mae), f"stage A checkpoint {beside} (beside the file)"
    raise InputDataError(path, "the encoder's head count is not in a stage B file (Config_Generative_Model has no "
                               f"num_heads and no tensor shape shows it); {HEADS_HINT}")


def find_prior_yaml(path: Path | None, prior_config: str | Path | None = None) -> Path | None:
    """The prior's config.yaml: the given one, else beside the file, else MinD-Vis's pretrains/ldm/label2img/."""
    if prior_config is not None:
        if not Path(prior_config).is_file():
            raise InputDataError(prior_config, "prior config.yaml not found")
        return Path(prior_config)
    if path is None:
        return None
    for candidate in (path.with_name("config.yaml"), path.parent.parent / "ldm" / "label2img" / "config.yaml"):
        if candidate.is_file():
            return candidate
    return None


def layout_from_state(state: dict[str, torch.Tensor], fields: dict[str, Any], path=None, *,
                      encoder_checkpoint: str | Path | None = None, encoder_num_heads: int | None = None,
                      prior_config: str | Path | None = None) -> StageBLayout:
    """Every size of a stage B model: our `mindvis` block when present, else the shapes + the hints above."""
    path = None if path is None else Path(path)
    ours = fields.get("mindvis") if isinstance(fields.get("mindvis"), dict) else {}
    mae = strip(state, MAE_PREFIX)
    if not mae:
        raise InputDataError(path, "no cond_stage_model.mae.* keys: not a MinD-Vis stage B checkpoint")
    if COND_PREFIX + "channel_mapper.0.weight" not in state:
        raise InputDataError(path, "no cond_stage_model.channel_mapper: checkpoints made with global_pool=True "
                                   "(one pooled token) are not supported")
    use_time = any(k.startswith(TIME_PREFIX) for k in state)
    sources: dict[str, str] = {}
    enc_fields = dict(ours.get("encoder") or {})
    if enc_fields.get("num_heads") is not None:
        sources["encoder_num_heads"] = "the file's mindvis block"
    else:
        enc_fields["num_heads"], sources["encoder_num_heads"] = encoder_heads(
            path, fields, mae, encoder_checkpoint, encoder_num_heads)
    arch, n_tokens, _ = arch_from_state_dict(mae, enc_fields, path)
    if ours.get("spec"):
        spec = ldm_spec_from_dict(ours["spec"])
        sources["latent_size"] = "the file's mindvis block"
    else:
        spec = _spec_from_shapes(state, fields, path, prior_config, sources)
    return StageBLayout(spec=spec, encoder_arch=arch, n_tokens=n_tokens, use_time_cond=use_time, sources=sources)


def _spec_from_shapes(state, fields, path, prior_config, sources) -> LdmSpec:
    yaml_path = find_prior_yaml(path, prior_config)
    hints = compvis_specs.read_prior_yaml(yaml_path) if yaml_path is not None else {}
    img = int(fields.get("img_size") or hints.get("resolution") or 256)
    vq = compvis_specs.infer_vq_spec(strip(state, VQ_PREFIX), resolution=img, path=path)
    if yaml_path is not None:
        compvis_specs.check_latent_size(yaml_path, hints.get("latent_size"), img, len(vq.ch_mult),
                                        hints.get("n_levels"))
        sources["latent_size"] = f"{yaml_path} (model.params.image_size), checked against img_size {img}"
    else:
        sources["latent_size"] = f"img_size {img} / the first stage's down-sampling {vq.downsampling} (no config.yaml)"
    unet_sd = {k: v for k, v in strip(state, UNET_PREFIX).items() if not k.startswith("time_embed_condtion.")}
    unet = compvis_specs.infer_unet_spec(unet_sd, num_heads=int(hints.get("num_heads") or 1),
                                         sample_size=vq.latent_size, path=path)
    context_len = int(state[COND_PREFIX + "channel_mapper.1.weight"].shape[0])
    schedule = compvis_specs.schedule_from_buffers(state, path) or ScheduleSpec()
    if hints.get("prediction_type"):
        schedule = replace(schedule, prediction_type=hints["prediction_type"])
    return LdmSpec(unet=unet, vq=vq, schedule=schedule, context_len=context_len).validate()


# -- files -----------------------------------------------------------------------------------------
@dataclass
class LoadedFinetuned:
    model: DcLdm
    layout: StageBLayout
    config: dict[str, Any] = field(default_factory=dict)  # the file's config as a plain dict
    config_class: str | None = None  # "config.Config_Generative_Model" (MinD-Vis's files and ours); None: a dict
    report: ImportReport = field(default_factory=ImportReport)
    mask_token: torch.Tensor | None = None  # the file's (unused) encoder mask token, to write back on export

    @property
    def mindvis(self) -> dict[str, Any]:
        block = self.config.get("mindvis")
        return block if isinstance(block, dict) else {}

    @property
    def from_reference(self) -> bool:
        """Written by MinD-Vis's code (no `mindvis` block): its test fMRI conventions apply."""
        return not self.mindvis

    @property
    def trained_for_guidance(self) -> bool | None:
        """Whether training dropped the condition, so the model has the unconditional branch classifier-free
        guidance needs: never for MinD-Vis's files (its training does not drop it), the recorded
        cond_drop_prob > 0 for ours, None for our files written before it was recorded."""
        if self.from_reference:
            return False
        drop = self.mindvis.get("cond_drop_prob")
        return None if drop is None else float(drop) > 0


def load_finetuned(path: str | Path, map_location: str = "cpu", *, encoder_checkpoint: str | Path | None = None,
                   encoder_num_heads: int | None = None, prior_config: str | Path | None = None) -> LoadedFinetuned:
    """A stage B model ready to sample, from MinD-Vis's finetuned.pth or ours (no pickled code runs).

    For MinD-Vis's files (sizes from the shapes): encoder_checkpoint / encoder_num_heads give
    the encoder's head count (else fmri_encoder.pth beside the file, else an error); prior_config
    names the prior's config.yaml (else config.yaml beside the file or in ../ldm/label2img/).
    """
    path = Path(path)
    obj = safe_load(path, map_location=map_location)
    if not isinstance(obj, dict) or not isinstance(obj.get("model_state_dict"), dict):
        raise InputDataError(path, "not a stage B checkpoint: expected a dict with 'model_state_dict'")
    state = obj["model_state_dict"]
    raw_config = obj.get("config")
    fields = config_fields(raw_config)
    layout = layout_from_state(state, fields, path, encoder_checkpoint=encoder_checkpoint,
                               encoder_num_heads=encoder_num_heads, prior_config=prior_config)
    model = build_fmri_ldm(layout.spec, layout.encoder_arch, layout.n_tokens, layout.use_time_cond)
    report = import_mindvis_state(model, state, path)
    log.info("%s: loaded %d tensors (%s); encoder heads from %s; latent side from %s", path, report.used,
             report.reasons() or "nothing dropped", layout.sources.get("encoder_num_heads"),
             layout.sources.get("latent_size"))
    return LoadedFinetuned(model=model, layout=layout, config=fields, report=report,
                           config_class=raw_config.class_name if isinstance(raw_config, ForeignConfig) else None,
                           mask_token=state.get(MASK_TOKEN_KEY))


def save_finetuned(path: str | Path, model: DcLdm, config: dict[str, Any],
                   mask_token: torch.Tensor | None = None) -> Path:
    """Write finetuned.pth atomically in MinD-Vis's layout, loadable by its gen_eval.py as it is.

    config: a plain dict (finetuned_config); it is written as a config.Config_Generative_Model
    with every field MinD-Vis's scripts read (stage_b_config.reference_fields).
    """
    fields = config_for_reference(config)
    payload = {"model_state_dict": export_mindvis_state(model, mask_token=mask_token),
               "config": ConfigGenerativeModel(fields), "state": cuda_rng_state(int(fields["seed"]))}
    with atomic_path(path) as tmp:
        save_reference_payload(tmp, payload)
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
