"""HCP resting-state samples for stage A1 (SC-MBM pre-training).

MinD-Vis turns each subject's `HCP_visual_voxel.npz` into samples by
concatenating V1..V4 along voxels and averaging non-overlapping blocks of
frames. Its code derives the block length as `8 s // 0.75 s = 10` frames,
i.e. it assumes a TR of 0.75 s; HCP's TR is 0.72 s, so 10 frames are 7.2 s.
We keep `window=10` as the default because it is what the reference (and
its checkpoints) used: 120 samples per 1200-frame run.

Blocks are taken within each run when the npz carries `run_lengths` (ours
do), so no sample mixes the end of one run with the start of the next; a
run's last `frames % window` frames are dropped. (The reference uses
`np.array_split`, which instead spreads a remainder over slightly longer
blocks; both agree when the run length is a multiple of the window, as
1200 is.) Files without `run_lengths` (e.g. the reference's own) count as
one run. NaN entries (the reference writes NaN for constant grayordinates)
are replaced by 0, as our preprocessing does.

Padding, normalisation and joining subjects: `mindvis.data.stage_a1`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mindvis.io.npz import open_npz
from mindvis.utils.errors import InputDataError

log = logging.getLogger(__name__)

HCP_AREAS = ("V1", "V2", "V3", "V4")
DEFAULT_WINDOW = 10  # frames per sample, as the reference: 7.2 s at HCP's TR of 0.72 s


def load_hcp_voxels(path: str | os.PathLike, areas: Sequence[str] = HCP_AREAS) -> tuple[np.ndarray, np.ndarray]:
    """(frames, V) float32 with the areas concatenated in order, and the run lengths."""
    p = Path(path)
    with open_npz(p, "HCP visual-voxel npz") as npz:  # member reads give a clean error on any defect
        missing = [a for a in areas if a not in npz.files]
        if missing:
            raise InputDataError(p, f"missing keys {missing} (has {sorted(npz.files)})")
        parts = [np.asarray(npz[a]) for a in areas]
        run_lengths = np.asarray(npz["run_lengths"]) if "run_lengths" in npz.files else None
    if run_lengths is not None:
        if run_lengths.dtype.kind not in "iu" or run_lengths.ndim != 1:
            raise InputDataError(p, f"run_lengths must be a 1-D integer array, got {run_lengths.dtype} "
                                    f"{run_lengths.shape}")
        run_lengths = run_lengths.astype(np.int64)
    for area, part in zip(areas, parts):
        if part.dtype.kind not in "fiub":  # concatenating e.g. datetime64 with floats raises deep in numpy
            raise InputDataError(p, f"{area} must hold real numbers, got dtype {part.dtype}")
        if part.ndim != 2 or part.shape[0] != parts[0].shape[0]:
            raise InputDataError(
                p, f"{area} has shape {part.shape}; expected (frames, voxels) with the frames of {areas[0]}"
            )
    voxels = np.concatenate(parts, axis=1).astype(np.float32, copy=False)
    frames = voxels.shape[0]
    if run_lengths is None:
        run_lengths = np.asarray([frames], dtype=np.int64)
    elif run_lengths.sum() != frames or (run_lengths < 0).any():
        raise InputDataError(p, f"run_lengths {run_lengths.tolist()} do not add up to its {frames} frames")
    bad = ~np.isfinite(voxels)
    if bad.any():
        log.warning("%s: %d NaN/Inf entries replaced by 0", p, int(bad.sum()))
        voxels = np.where(bad, np.float32(0), voxels)
    return voxels, run_lengths


def block_average(voxels: np.ndarray, window: int, run_lengths: Sequence[int] | None = None) -> np.ndarray:
    """Mean of non-overlapping `window`-frame blocks, within each run; remainders dropped."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    lengths = [voxels.shape[0]] if run_lengths is None else [int(n) for n in run_lengths]
    out, start = [], 0
    for n in lengths:
        k = n // window
        if k:
            run = voxels[start : start + k * window]
            out.append(run.reshape(k, window, -1).mean(axis=1, dtype=np.float64).astype(np.float32))
        start += n
    if not out:
        return np.zeros((0, voxels.shape[1]), dtype=np.float32)
    return np.concatenate(out, axis=0)
