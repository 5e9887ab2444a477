"""Pretrained networks' weights, from LOCAL files only.

Nothing in evaluation downloads: every pretrained network is a torchvision (or timm)
model DEFINITION built with random weights, then filled from a file the user points at
in the config. A missing file raises `MissingWeightsError` naming the config key and
where the file comes from; a file that is not the expected network's weights is an
`InputDataError` naming it; pickled files go through the project's checkpoint gate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from mindvis.utils.errors import InputDataError, MissingWeightsError

TORCHVISION_SOURCE = "download it once on a machine with network access from {url} and copy it here."


def require_file(path: str | Path | None, config_key: str, source: str) -> Path:
    """The path as a Path when the file exists, else MissingWeightsError naming the key and the source."""
    if path is None or str(path).strip() == "" or not Path(path).is_file():
        raise MissingWeightsError(config_key, path if path not in (None, "") else "(not set)", source)
    return Path(path)


def load_weight_file(path: Path) -> dict[str, Any]:
    """A state dict (or checkpoint dict) from .pth/.bin/.safetensors without running pickled code."""
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file

            return load_file(str(path))
        except Exception as exc:  # noqa: BLE001 - any unreadable weight file is the user's to fix
            raise InputDataError(path, f"cannot read safetensors file (truncated or corrupt?): {exc}") from None
    from mindvis.checkpoints.safe_load import UnsafeCheckpointError, safe_load

    try:
        obj = safe_load(path)  # the project's one checkpoint gate: refuses (naming it) what would run code
    except UnsafeCheckpointError:
        raise
    except InputDataError as exc:
        raise InputDataError(path, f"cannot read weight file: {exc.problem}") from None
    if not isinstance(obj, dict):
        raise InputDataError(path, f"expected a state dict, found {type(obj).__name__}")
    return obj


def load_strict(model: nn.Module, state: dict[str, torch.Tensor], path: Path, what: str) -> None:
    """Fill `model` with `state`, every key exactly; otherwise an error naming the file and the network."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(line.strip() for line in str(exc).splitlines()[1:3])  # line 0 is a generic header
        raise InputDataError(path, f"not {what} weights: {detail[:400]}") from None
