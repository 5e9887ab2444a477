"""The stage A1 (SC-MBM pre-training) matrix: HCP rows, then GOD training rows (docs/reference.md §4).

Per subject, in the reference's order (`hcp_dataset`, `process_voxel_ts`,
`create_Kamitani_dataset`):
  1. ROI voxels: HCP roi "VC" = V1..V4 concatenated (any other roi: that npz
     key); GOD = the `roi` mask of `arr_0` (a file without masks holds VC only);
  2. HCP only: means of non-overlapping `window`-frame blocks (`mindvis.data.hcp`);
  3. wrap-pad to a multiple of the patch size, then z-score with ONE scalar
     mean/std of that padded subject matrix: all its rows ("reference") or its
     training rows only ("clean", held-out rows never feed the statistics);
  4. wrap each subject to its group's longest padded length (HCP, GOD), then
     both groups to the joint length (the larger), and stack: HCP then GOD.

The held-out rows (for the masked-reconstruction metric) are a seeded random
split over all stacked rows, made here so the statistics and the trainer agree.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mindvis.data.conventions import PATCH_SIZE, ScalarNorm, pad_to_length, split_holdout, wrap_pad, wrap_pad_amount
from mindvis.data.god import load_god_npz
from mindvis.data.hcp import HCP_AREAS, block_average, load_hcp_voxels
from mindvis.utils.errors import ConfigError, InputDataError

log = logging.getLogger(__name__)

NORMALISATIONS = ("reference", "clean")


@dataclass(frozen=True)
class A1Source:
    """One subject's raw rows (ROI voxels, block-averaged for HCP), not padded or normalised."""

    kind: str  # "hcp", "god" (or any label: subjects of one kind form one padding group)
    name: str  # file name, for logs and the checkpoint summary
    rows: np.ndarray  # (n, V) float32


@dataclass(frozen=True)
class A1Subject:
    """Where one subject's rows sit in the matrix, and the statistics they were scaled with."""

    kind: str
    name: str
    first_row: int
    n_rows: int
    raw_voxels: int  # ROI voxels
    padded_voxels: int  # after wrap padding to a multiple of the patch size
    group_voxels: int  # after wrapping to the longest padded subject of its kind
    norm: ScalarNorm

    def summary(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "rows": self.n_rows, "raw_voxels": self.raw_voxels,
                "padded_voxels": self.padded_voxels, "mean": self.norm.mean, "std": self.norm.std}


@dataclass(frozen=True)
class StageA1Rows:
    """The matrix fed to the model, and which rows are held out."""

    matrix: np.ndarray  # (rows, L) float32: padded, normalised, joined; L a multiple of the patch size
    holdout: np.ndarray  # (rows,) bool, rows kept out of training for the reconstruction metric
    subjects: tuple[A1Subject, ...]
    normalisation: str

    @property
    def n_voxels(self) -> int:
        return int(self.matrix.shape[1])

    @property
    def subject_index(self) -> np.ndarray:
        """(rows,) index into `subjects` of each row."""
        return np.repeat(np.arange(len(self.subjects)), [s.n_rows for s in self.subjects])

    def train_rows(self) -> np.ndarray:
        return np.ascontiguousarray(self.matrix[~self.holdout])

    def holdout_rows(self) -> np.ndarray:
        return np.ascontiguousarray(self.matrix[self.holdout])

    def voxel_sources(self, rows: np.ndarray) -> np.ndarray:
        """(n, L) original ROI voxel of every position of the selected rows (wrap copies share an id)."""
        which = self.subject_index[rows]
        out = np.empty((which.size, self.n_voxels), dtype=np.int64)
        for i, s in enumerate(self.subjects):
            ids = np.arange(s.raw_voxels)
            for length in (s.padded_voxels, s.group_voxels, self.n_voxels):
                ids = ids[np.arange(length) % ids.size]
            out[which == i] = ids
        return out

    def summary(self) -> dict[str, Any]:
        """Counts for logs, the tracker and the checkpoint's `mindvis` block."""
        by_kind = {k: [s for s in self.subjects if s.kind == k] for k in dict.fromkeys(s.kind for s in self.subjects)}
        out: dict[str, Any] = {"normalisation": self.normalisation, "rows": int(self.matrix.shape[0]),
                               "joined_voxels": self.n_voxels, "n_holdout": int(self.holdout.sum()),
                               "raw_voxels": max(s.raw_voxels for s in self.subjects),
                               "subjects": [s.summary() for s in self.subjects]}
        for kind, subjects in by_kind.items():
            out[f"{kind}_files"] = len(subjects)
            out[f"{kind}_rows"] = sum(s.n_rows for s in subjects)
            out[f"{kind}_voxels"] = max(s.raw_voxels for s in subjects)
        return out


def holdout_mask(n_rows: int, fraction: float, seed: int) -> np.ndarray:
    """(n_rows,) bool: the seeded held-out rows, the same split the SC-MBM trainer makes."""
    mask = np.zeros(n_rows, dtype=bool)
    mask[split_holdout(n_rows, fraction, seed)[1]] = True
    return mask


def join_a1_sources(sources: Sequence[A1Source], normalisation: str = "reference", holdout_fraction: float = 0.0,
                    seed: int = 2022, patch_size: int = PATCH_SIZE) -> StageA1Rows:
    """Pad, normalise and join raw subject rows (steps 3-4 of the module docstring)."""
    if normalisation not in NORMALISATIONS:
        raise ConfigError(f"stage A1 normalisation must be one of {NORMALISATIONS}, got {normalisation!r}")
    if not sources:
        raise ConfigError("stage A1: no subjects to pre-train on")
    n_rows = [src.rows.shape[0] for src in sources]
    holdout = holdout_mask(sum(n_rows), holdout_fraction, seed)
    starts = np.concatenate([[0], np.cumsum(n_rows)[:-1]]).astype(int)
    padded_len = [src.rows.shape[1] + wrap_pad_amount(src.rows.shape[1], patch_size) for src in sources]
    group: dict[str, int] = {}
    for src, n in zip(sources, padded_len):
        group[src.kind] = max(group.get(src.kind, 0), n)
    length = max(group.values())

    matrix = np.empty((sum(n_rows), length), dtype=np.float32)  # filled subject by subject: no second copy
    subjects = []
    for src, start, n, p in zip(sources, starts, n_rows, padded_len):
        padded = wrap_pad(np.asarray(src.rows, dtype=np.float32), patch_size)
        fit_rows = padded if normalisation == "reference" else padded[~holdout[start:start + n]]
        if fit_rows.shape[0] == 0:
            raise ConfigError(f"stage A1: every row of {src.name} is held out; lower holdout_fraction")
        norm = ScalarNorm.fit(fit_rows)
        matrix[start:start + n] = pad_to_length(pad_to_length(norm.apply(padded), group[src.kind]), length)
        subjects.append(A1Subject(kind=src.kind, name=src.name, first_row=int(start), n_rows=int(n),
                                  raw_voxels=int(src.rows.shape[1]), padded_voxels=int(p),
                                  group_voxels=group[src.kind], norm=norm))
    return StageA1Rows(matrix=matrix, holdout=holdout, subjects=tuple(subjects), normalisation=normalisation)


def hcp_source(path: str | os.PathLike, window: int, roi: str = "VC") -> A1Source:
    """One HCP subject: the ROI's voxels, `window`-frame block means."""
    voxels, run_lengths = load_hcp_voxels(path, HCP_AREAS if roi == "VC" else (roi,))
    rows = block_average(voxels, window, run_lengths)
    if rows.shape[0] == 0:
        raise InputDataError(path, f"fewer than window={window} frames in every run: no samples")
    return A1Source("hcp", Path(path).name, rows)


def god_source(path: str | os.PathLike, roi: str = "VC") -> A1Source:
    """One GOD subject: the training fMRI (arr_0) on the ROI's voxels."""
    rows = load_god_npz(path).select_roi(roi).train_fmri
    if rows.shape[0] == 0:
        raise InputDataError(path, "arr_0 holds no training rows")
    return A1Source("god", Path(path).name, rows)


def stage_a1_rows(hcp_npz_paths: Sequence[str | os.PathLike], god_npz_paths: Sequence[str | os.PathLike] = (),
                  window: int = 10, roi: str = "VC", normalisation: str = "reference",
                  holdout_fraction: float = 0.0, seed: int = 2022, patch_size: int = PATCH_SIZE) -> StageA1Rows:
    """The stage A1 matrix from HCP_visual_voxel.npz files, then GOD sbj_N.npz training rows, in the order given.

    `normalisation`: "reference" (statistics of all of a subject's rows, as MinD-Vis) or
    "clean" (of its rows not held out). `holdout_fraction`/`seed`: the held-out split
    (`StageA1Rows.holdout`). With "reference" and holdout 0 the matrix is the reference's.
    """
    if normalisation not in NORMALISATIONS:  # before reading any file
        raise ConfigError(f"stage A1 normalisation must be one of {NORMALISATIONS}, got {normalisation!r}")
    if not hcp_npz_paths and not god_npz_paths:
        raise ConfigError("stage A1: no HCP or GOD files given")
    # HCP NaN/Inf become 0 (mindvis.data.hcp); GOD files holding any are refused (mindvis.data.god)
    sources = [hcp_source(p, window, roi) for p in hcp_npz_paths] + [god_source(p, roi) for p in god_npz_paths]
    data = join_a1_sources(sources, normalisation, holdout_fraction, seed, patch_size)
    s = data.summary()
    log.info("stage A1 data (%s, roi %s): %d HCP rows, %d GOD rows -> %s, %d held out", normalisation, roi,
             s.get("hcp_rows", 0), s.get("god_rows", 0), data.matrix.shape, s["n_holdout"])
    return data
