"""SC-MBM (MinD-Vis stage A): the masked autoencoder, its presets and position tables."""

from mindvis.models.pos_embed import interpolate_pos_table, sincos_1d, sincos_table
from mindvis.models.presets import PRESETS, ArchSpec, MbmModelConfig, resolve_arch
from mindvis.models.sc_mbm import ENCODER_PREFIXES, ScMbm, count_parameters, fit_voxels

__all__ = [
    "ArchSpec",
    "ENCODER_PREFIXES",
    "MbmModelConfig",
    "PRESETS",
    "ScMbm",
    "count_parameters",
    "fit_voxels",
    "interpolate_pos_table",
    "resolve_arch",
    "sincos_1d",
    "sincos_table",
]
