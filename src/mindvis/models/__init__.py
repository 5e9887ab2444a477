"""The models: SC-MBM (MinD-Vis stage A) here, the stage B latent diffusion model in `models.ldm`.

Exported here: the masked autoencoder, its presets and position tables; the
DC-LDM, its presets and samplers are imported from `mindvis.models.ldm`.
"""

from mindvis.data.conventions import fit_voxels  # the MinD-Vis voxel-count rule lives with the data conventions
from mindvis.models.pos_embed import interpolate_pos_table, sincos_1d, sincos_table
from mindvis.models.presets import PRESETS, ArchSpec, MbmModelConfig, resolve_arch
from mindvis.models.sc_mbm import ENCODER_PREFIXES, ScMbm, count_parameters

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
