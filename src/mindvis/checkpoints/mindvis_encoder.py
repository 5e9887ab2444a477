"""Read and write SC-MBM checkpoints in MinD-Vis's `fmri_encoder.pth` layout.

The file is a dict (docs/reference.md §5.1):
    model      state dict of MAEforFMRI (cls_token, pos_embed (1, N+1, D), patch_embed.proj.*,
               blocks.{i}.*, norm.*, mask_token, decoder_embed.*, decoder_pos_embed,
               decoder_blocks.{i}.*, decoder_norm.*, decoder_pred.*)
    optimizer  optimizer state dict
    epoch      int
    scaler     GradScaler state dict ({} when mixed precision was off)
    config     MinD-Vis: a pickled `config.Config_MBM_fMRI` object; ours: a PLAIN dict
               with the same field names (never a pickled class).

The architecture is read from the tensors' shapes (width, depth, patch, MLP
ratio, decoder sizes, number of tokens N); only the head counts, which no
shape reveals, come from `config` (num_heads, decoder_num_heads): a config
without them is an error naming the key (never a guessed 16).

Plain-dict configs and MinD-Vis code: MinD-Vis's scripts read the config by
attribute (`sd['config'].patch_size`); wrap ours with
`types.SimpleNamespace(**sd['config'])` there. The state dict itself loads
into MinD-Vis's MAEforFMRI / fmri_encoder unchanged.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mindvis.checkpoints.safe_load import ForeignConfig, safe_load
from mindvis.models.pos_embed import interpolate_pos_table
from mindvis.models.presets import PRESETS, ArchSpec
from mindvis.models.sc_mbm import ENCODER_PREFIXES, ScMbm
from mindvis.utils.atomic import atomic_path
from mindvis.utils.errors import ConfigError, InputDataError

log = logging.getLogger(__name__)

POS_TABLE_KEYS = ("pos_embed", "decoder_pos_embed")


def config_fields(config: Any) -> dict[str, Any]:
    """A checkpoint's `config` as a dict, whether ours (dict) or MinD-Vis's (ForeignConfig)."""
    if config is None:
        return {}
    if isinstance(config, ForeignConfig):
        return dict(config.fields)
    if isinstance(config, dict):
        return dict(config)
    raise InputDataError(None, f"checkpoint 'config' has unsupported type {type(config).__name__}")


def _depth(state: dict[str, torch.Tensor], prefix: str) -> int:
    pattern = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.")
    indices = {int(m.group(1)) for k in state if (m := pattern.match(k))}
    if indices and indices != set(range(max(indices) + 1)):
        raise InputDataError(None, f"checkpoint '{prefix}' block indices are not 0..n-1: {sorted(indices)}")
    return len(indices)


def arch_from_state_dict(state: dict[str, torch.Tensor], fields: dict[str, Any] | None = None,
                         path: str | Path | None = None) -> tuple[ArchSpec, int, bool]:
    """(architecture, number of tokens N, has decoder) from a MAEforFMRI state dict."""
    fields = fields or {}
    try:
        width, _, patch = state["patch_embed.proj.weight"].shape
        n_tokens = state["pos_embed"].shape[1] - 1
        depth = _depth(state, "blocks")
        hidden = state["blocks.0.mlp.fc1.weight"].shape[0]
    except KeyError as exc:
        raise InputDataError(path, f"not an SC-MBM state dict: key {exc} missing") from None
    except ValueError:
        raise InputDataError(path, "not an SC-MBM state dict: patch_embed.proj.weight is not 3-D") from None
    has_decoder = "decoder_embed.weight" in state
    dec_width = state["decoder_embed.weight"].shape[0] if has_decoder else PRESETS["paper"].decoder_embed_dim
    dec_depth = _depth(state, "decoder_blocks") if has_decoder else 0

    def heads(key: str, width_: int) -> int:
        # no tensor's shape shows a head count: a guess would load silently wrong weights' meaning
        if key in fields and fields[key] is not None:
            return int(fields[key])
        raise InputDataError(path, f"the checkpoint's config has no '{key}' (the attention head count of the "
                                   f"{width_}-wide layers, which no tensor shape shows); set '{key}' in its config")

    arch = ArchSpec(
        patch_size=int(patch), embed_dim=int(width), depth=depth, num_heads=heads("num_heads", width),
        mlp_ratio=float(hidden) / float(width), decoder_embed_dim=int(dec_width),
        decoder_depth=max(dec_depth, 1), decoder_num_heads=heads("decoder_num_heads", dec_width) if has_decoder
        else int(fields.get("decoder_num_heads") or PRESETS["paper"].decoder_num_heads),
    )
    try:
        arch.validate()
    except ConfigError as exc:
        raise InputDataError(path, f"inconsistent architecture: {exc}") from None
    return arch, int(n_tokens), has_decoder


@dataclass
class LoadedMbm:
    """A model built from a checkpoint, with what the file said about itself."""

    model: ScMbm
    arch: ArchSpec
    n_tokens: int  # tokens of the returned model
    checkpoint_tokens: int  # tokens the file was trained with
    config: dict[str, Any] = field(default_factory=dict)
    config_class: str | None = None  # "config.Config_MBM_fMRI" for MinD-Vis files, None for ours
    epoch: int | None = None
    optimizer: dict | None = None
    scaler: dict | None = None


def adapt_token_count(state: dict[str, torch.Tensor], n_tokens: int, mode: str = "linear") -> dict[str, torch.Tensor]:
    """Resize the position tables to `n_tokens` (cls row kept; see pos_embed.interpolate_pos_table)."""
    out = dict(state)
    for key in POS_TABLE_KEYS:
        if key in out:
            out[key] = interpolate_pos_table(out[key], n_tokens, mode)
    return out


def load_mbm_checkpoint(path: str | Path, n_tokens: int | None = None, interpolation: str = "linear",
                        with_decoder: bool = True, map_location: str = "cpu") -> LoadedMbm:
    """Build an ScMbm from an `fmri_encoder.pth` (ours or MinD-Vis's) and load it strictly.

    n_tokens: None keeps the checkpoint's N (then the data must be padded/cut
    to N * patch voxels: `mindvis.data.conventions.fit_voxels`); another value resizes
    the position tables by `interpolation` (what MinD-Vis does in stage B).
    """
    ckpt = safe_load(path, map_location=map_location)
    if not isinstance(ckpt, dict) or "model" not in ckpt or not isinstance(ckpt["model"], dict):
        raise InputDataError(path, "not an fmri_encoder.pth checkpoint: expected a dict with a 'model' state dict")
    state = {k.removeprefix("module."): v for k, v in ckpt["model"].items()}  # tolerate a DDP-wrapped save
    raw_config = ckpt.get("config")
    fields = config_fields(raw_config)
    arch, ckpt_tokens, has_decoder = arch_from_state_dict(state, fields, path)
    if with_decoder and not has_decoder:
        raise InputDataError(path, "checkpoint holds only the encoder; the masked-autoencoder decoder is missing")
    if not with_decoder:
        state = {k: v for k, v in state.items() if k.startswith(ENCODER_PREFIXES)}
    tokens = ckpt_tokens if n_tokens is None else int(n_tokens)
    if tokens != ckpt_tokens:
        log.info("%s: position tables resized from %d to %d tokens (%s)", path, ckpt_tokens, tokens, interpolation)
        state = adapt_token_count(state, tokens, interpolation)
    model = ScMbm(arch, tokens, with_decoder=with_decoder)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise InputDataError(path, f"state dict does not match the SC-MBM layout: {exc}") from None
    return LoadedMbm(
        model=model, arch=arch, n_tokens=tokens, checkpoint_tokens=ckpt_tokens, config=fields,
        config_class=raw_config.class_name if isinstance(raw_config, ForeignConfig) else None,
        epoch=ckpt.get("epoch"), optimizer=ckpt.get("optimizer"), scaler=ckpt.get("scaler"),
    )


def reference_config(arch: ArchSpec, n_tokens: int, **extra: Any) -> dict[str, Any]:
    """A plain-dict config with MinD-Vis's Config_MBM_fMRI field names (plus ours under `extra`)."""
    cfg: dict[str, Any] = {
        "patch_size": arch.patch_size, "embed_dim": arch.embed_dim, "depth": arch.depth,
        "num_heads": arch.num_heads, "mlp_ratio": arch.mlp_ratio, "decoder_embed_dim": arch.decoder_embed_dim,
        "decoder_depth": arch.decoder_depth, "decoder_num_heads": arch.decoder_num_heads,
        "num_voxels": n_tokens * arch.patch_size,
    }
    cfg.update(extra)
    return cfg


def _check_plain(value: Any, where: str = "config") -> None:
    if value is None or isinstance(value, (bool, int, float, str)):
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{where} has a non-string key {k!r}")
            _check_plain(v, f"{where}.{k}")
        return
    raise TypeError(f"{where} holds a {type(value).__name__}; checkpoint configs must be plain data")


def export_mbm_checkpoint(path: str | Path, model: ScMbm, config: dict[str, Any], epoch: int = 0,
                          optimizer: dict | None = None, scaler: dict | None = None) -> Path:
    """Write `fmri_encoder.pth` atomically in MinD-Vis's layout, with a plain-dict config."""
    _check_plain(config)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    payload = {"model": state, "optimizer": optimizer or {}, "epoch": int(epoch), "scaler": scaler or {},
               "config": dict(config)}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)
