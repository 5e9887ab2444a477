"""Resumable training state, written atomically beside the output checkpoint.

`<out>.resume.pt` holds everything needed to continue exactly where a killed
or preempted run stopped: model, optimizer, GradScaler, the schedule's
position (global step, epoch, step within the epoch), the running sums of the
current epoch's metrics, and the RNG states (python, numpy, torch, CUDA, the
data-order generator). It is loaded back with weights_only=True, so every
value in it is plain data or a tensor (numpy's state is stored as a tensor).
A fingerprint of the data and the config guards against resuming a different run.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mindvis.checkpoints.safe_load import safe_load
from mindvis.utils.atomic import atomic_path

log = logging.getLogger(__name__)

RESUME_FORMAT = "mindvis.mbm_resume/1"


def resume_path_for(out_path: str | Path) -> Path:
    out = Path(out_path)
    return out.with_name(out.name + ".resume.pt")


def capture_rng(data_generator: torch.Generator | None = None) -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if data_generator is not None:
        state["data_order"] = data_generator.get_state()
    return state


def restore_rng(state: dict[str, Any], data_generator: torch.Generator | None = None) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npst = state["numpy"]
    np.random.set_state((npst["kind"], npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"],
                         npst["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    if data_generator is not None and "data_order" in state:
        data_generator.set_state(state["data_order"])


def save_resume_state(path: str | Path, state: dict[str, Any]) -> None:
    payload = dict(state, format=RESUME_FORMAT)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_resume_state(path: str | Path, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    """The saved state when it exists and belongs to this run (same fingerprint), else None."""
    path = Path(path)
    if not path.is_file():
        return None
    state = safe_load(path)
    if not isinstance(state, dict) or state.get("format") != RESUME_FORMAT:
        log.warning("%s is not a mindvis resume file; starting from scratch", path)
        return None
    if state.get("fingerprint") != fingerprint:
        differing = sorted(k for k in set(fingerprint) | set(state.get("fingerprint", {}))
                           if fingerprint.get(k) != state.get("fingerprint", {}).get(k))
        log.warning("%s belongs to another run (differs in %s); starting from scratch and replacing it",
                    path, ", ".join(differing))
        return None
    return state
