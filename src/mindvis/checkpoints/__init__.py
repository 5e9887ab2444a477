"""Checkpoint I/O: safe (no-code) loading and MinD-Vis's fmri_encoder.pth layout."""

from mindvis.checkpoints.mindvis_encoder import (
    LoadedMbm,
    arch_from_state_dict,
    config_fields,
    export_mbm_checkpoint,
    load_mbm_checkpoint,
    reference_config,
)
from mindvis.checkpoints.safe_load import ForeignConfig, UnsafeCheckpointError, pickle_globals, safe_load

__all__ = [
    "ForeignConfig",
    "LoadedMbm",
    "UnsafeCheckpointError",
    "arch_from_state_dict",
    "config_fields",
    "export_mbm_checkpoint",
    "load_mbm_checkpoint",
    "pickle_globals",
    "reference_config",
    "safe_load",
]
