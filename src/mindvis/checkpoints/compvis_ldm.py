"""CompVis latent-diffusion checkpoints <-> our diffusers modules, key by key, both directions.

Reading and writing whole checkpoints, and converting state dicts through the renaming rules of
`compvis_names` (the layout is described there); the sizes come from `compvis_specs`.

Every name is produced by those rules from our module's own key list, so
a conversion uses every key or says which it could not place: unknown keys
are an error; the keys we knowingly leave out (a class embedder when the
fMRI conditioner replaces it, EMA copies, the VQ's training loss networks,
the schedule buffers, which are recomputed and checked) are listed in the
returned report.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from mindvis.checkpoints.compvis_names import (
    COND_PREFIX,
    UNET_PREFIX,
    VQ_PREFIX,
    unet_key_to_compvis,
    vq_is_attention_weight,
    vq_key_to_compvis,
)
from mindvis.checkpoints.compvis_specs import (
    SCHEDULE_KEYS,
    check_latent_size,
    infer_unet_spec,
    infer_vq_spec,
    same_schedule,
    schedule_buffers,
    schedule_from_buffers,
    yaml_beside,
)
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


# what each network of a LatentDiffusion state dict leaves out (a key prefix inside it), and why
_LEFT_OUT = {UNET_PREFIX: ("label_emb.", "class embedder of the UNet (replaced by the conditioner)"),
             VQ_PREFIX: ("loss.", "VQ training loss networks (LPIPS / discriminator)")}


def split_ldm_state(state: Mapping[str, torch.Tensor], report: ImportReport, keep_class_embedder: bool,
                    path=None) -> tuple[dict, dict, torch.Tensor | None, dict]:
    """(unet, vq, class embedding, schedule buffers) of a CompVis LatentDiffusion state dict."""
    nets: dict[str, dict[str, torch.Tensor]] = {UNET_PREFIX: {}, VQ_PREFIX: {}}
    sched, class_emb = {}, None
    unexpected = []
    for key, value in state.items():
        prefix = next((p for p in nets if key.startswith(p)), None)
        if prefix is not None:
            inner = key[len(prefix):]
            left_out, reason = _LEFT_OUT[prefix]
            if inner.startswith(left_out):
                report.drop(key, reason)
            else:
                nets[prefix][inner] = value
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
    return nets[UNET_PREFIX], nets[VQ_PREFIX], class_emb, sched


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
        hints = yaml_beside(path)
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
    if from_buffers is not None and not same_schedule(from_buffers, spec.schedule):
        raise InputDataError(path, f"schedule buffers {spec_to_dict(from_buffers)} disagree with the config "
                                   f"{spec_to_dict(spec.schedule)}")
    report.used = len(unet) + len(vq) + (class_emb is not None)
    return LoadedLdm(spec=spec, unet=unet, vq=vq, class_embedding=class_emb, report=report, config=dict(ours))


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
    left_out, reason = _LEFT_OUT[VQ_PREFIX]
    for key, value in state.items():
        inner = key[len(VQ_PREFIX):] if key.startswith(VQ_PREFIX) else key
        if inner.startswith(left_out):
            report.drop(key, reason)
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
