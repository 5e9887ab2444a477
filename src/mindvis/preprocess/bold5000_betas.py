"""BOLD5000 GLMsingle betas and ROI masks (NIfTI) -> each ROI's (trials, voxels) array.

Every session is masked with every ROI on the betas' own grid (masks on another grid are
an error: resample them first), sessions are concatenated in trial order, and a voxel that
is non-finite (GLMsingle could not fit it) or constant in any trial is dropped everywhere.
`cfg` is the `bold5000.Bold5000PreprocessConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mindvis.preprocess.bold5000_files import SubjectFiles
from mindvis.utils.errors import InputDataError


def open_nifti(path: Path):
    import nibabel as nib

    try:
        return nib.load(str(path))
    except Exception as exc:  # noqa: BLE001 - any header failure is a bad file for the user
        raise InputDataError(path, f"not a readable NIfTI file ({type(exc).__name__}: {exc})") from None


def read_nifti_data(img, path: Path) -> np.ndarray:
    """The voxel data as float32; a truncated .nii.gz fails only here, so it is checked here."""
    try:
        return np.asarray(img.get_fdata(caching="unchanged", dtype=np.float32))
    except Exception as exc:  # noqa: BLE001 - EOFError, zlib.error, OSError, ValueError...
        raise InputDataError(
            path, f"cannot read the voxel data ({type(exc).__name__}: {exc}); the file is truncated or corrupt"
        ) from None


def load_mask(path: Path, ref_shape: tuple[int, ...], ref_affine: np.ndarray, ref_path: Path, cfg) -> np.ndarray:
    img = open_nifti(path)
    shape = tuple(int(s) for s in img.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if shape != tuple(ref_shape):
        raise InputDataError(path, f"mask grid {shape} differs from the betas grid {tuple(ref_shape)} of {ref_path}")
    if not np.allclose(img.affine, ref_affine, atol=cfg.affine_atol):
        raise InputDataError(
            path,
            f"mask affine differs from the betas affine of {ref_path} (largest difference "
            f"{float(np.abs(img.affine - ref_affine).max()):.4g} mm): the mask is on another grid; resample it first",
        )
    data = read_nifti_data(img, path).reshape(shape)
    mask = np.nan_to_num(data, nan=0.0) > cfg.mask_threshold
    if not mask.any():
        raise InputDataError(path, f"ROI mask is empty (no value above {cfg.mask_threshold})")
    return mask


@dataclass
class RoiBetas:
    """All trials of every ROI after dropping unusable voxels."""

    labels: list[str]
    arrays: dict[str, np.ndarray]  # label -> (trials, kept voxels) float32
    ijk: dict[str, np.ndarray]  # label -> (kept voxels, 3) grid indices
    dropped_nonfinite: dict[str, int]
    dropped_constant: dict[str, int]
    trials_per_session: dict[int, int]
    grid: tuple[int, int, int]
    affine: np.ndarray


def extract_roi_betas(files: SubjectFiles, sessions_expected: dict[int, int], cfg) -> RoiBetas:
    """Mask every session with every ROI, concatenate sessions, drop voxels unusable in any trial."""
    from tqdm import tqdm

    labels = cfg.roi_labels()
    sessions = sorted(sessions_expected)
    first = files.betas[sessions[0]]
    ref = open_nifti(first)
    if len(ref.shape) != 4:
        raise InputDataError(first, f"betas must be 4-D (X, Y, Z, trials), got shape {tuple(ref.shape)}")
    grid, affine = tuple(int(s) for s in ref.shape[:3]), np.asarray(ref.affine, dtype=np.float64)
    masks = {label: load_mask(files.masks[label], grid, affine, first, cfg) for label in labels}
    union = np.zeros(grid, dtype=bool)
    for mask in masks.values():
        union |= mask
    # Columns of each ROI inside the union's C-ordered voxel list (numpy boolean-index order).
    columns = {label: np.flatnonzero(mask[union]) for label, mask in masks.items()}
    union_ijk = np.argwhere(union)

    chunks: list[np.ndarray] = []
    for session in tqdm(sessions, desc="BOLD5000 sessions", unit="session", disable=None):
        path = files.betas[session]
        img = ref if session == sessions[0] else open_nifti(path)
        if len(img.shape) != 4 or tuple(img.shape[:3]) != grid:
            raise InputDataError(path, f"betas shape {tuple(img.shape)} differs from {first.name} {grid + ('trials',)}")
        if not np.allclose(img.affine, affine, atol=cfg.affine_atol):
            raise InputDataError(path, f"betas affine differs from the one of {first}")
        if img.shape[3] != sessions_expected[session]:
            raise InputDataError(
                path,
                f"{img.shape[3]} trials in the betas but {sessions_expected[session]} in the presentation lists "
                f"of session {session} under {files.lists_dir}",
            )
        data = read_nifti_data(img, path)
        chunks.append(np.ascontiguousarray(data[union].T))  # (trials, union voxels)
        del data
    betas = np.concatenate(chunks, axis=0)
    del chunks

    # A voxel unusable in any trial of any session is dropped everywhere, so every
    # session (and train and test) keeps the same columns.
    nonfinite = ~np.isfinite(betas).all(axis=0)
    constant = np.zeros_like(nonfinite)
    if cfg.drop_constant_voxels:
        finite = betas[:, ~nonfinite]
        constant[~nonfinite] = finite.max(axis=0) == finite.min(axis=0)

    arrays, ijk, dropped_nf, dropped_const = {}, {}, {}, {}
    for label in labels:
        cols = columns[label]
        keep = cols[~nonfinite[cols] & ~constant[cols]]
        dropped_nf[label] = int(nonfinite[cols].sum())
        dropped_const[label] = int(constant[cols].sum())
        if keep.size == 0:
            raise InputDataError(
                files.masks[label],
                f"all {cols.size} voxels of {label} are NaN/Inf or constant in the betas: nothing left to use",
            )
        arrays[label] = betas[:, keep].astype(np.float32)
        ijk[label] = union_ijk[keep].astype(np.int32)
    return RoiBetas(labels, arrays, ijk, dropped_nf, dropped_const, dict(sessions_expected), grid, affine)

