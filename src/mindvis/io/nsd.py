"""Readers of the Natural Scenes Dataset release files (docs/reference.md section 9.4).

    read_design       nsd_expdesign.mat -> NsdDesign, every index made 0-based
    read_responses    behav/responses.tsv -> (session, 0-based 73k id) per row, in file order
    read_ctab         <atlas>.mgz.ctab -> {label name: value}
    roi_mask          an ROI NIfTI (-1 / 0 / labels) -> boolean (X, Y, Z) for chosen label values
    BetasSession      one session's betas (NIfTI trials last, or HDF5 `/betas` trials first),
                      read for a set of voxels in chunks: never the whole int16 volume at once
    StimulusBrick     nsd_stimuli.hdf5 `imgBrick` rows by 0-based 73k id

Sizes are taken from the files (a scaled-down release has fewer images, trials and
sessions than the real one); nothing here assumes 73000 / 10000 / 1000 / 750.
Every defect is an InputDataError naming the file.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mindvis.io.volume import AFFINE_ATOL, extract_voxels, load_label_image, open_volume_run
from mindvis.utils.errors import InputDataError

log = logging.getLogger(__name__)

DESIGN_VARIABLES = ("masterordering", "subjectim", "sharedix")
_H5_ERRORS = (OSError, ValueError, KeyError, TypeError, RuntimeError)


# ----------------------------------------------------------------------------- the design file
@dataclass(frozen=True)
class NsdDesign:
    path: Path
    masterordering: np.ndarray  # (n_trials_max,) int64: 0-based 10k index of each global trial
    subjectim: np.ndarray  # (n_subjects, n_10k) int64: 0-based 73k id of each subject's 10k images
    sharedix: np.ndarray  # (n_shared,) int64: 0-based 73k ids of the shared images

    @property
    def n_shared(self) -> int:
        return int(self.sharedix.size)

    def subject_ids(self, subject: int) -> np.ndarray:
        """(n_10k,) 0-based 73k id of each of the subject's 10k images."""
        if not 1 <= subject <= self.subjectim.shape[0]:
            raise InputDataError(self.path, f"subjectim has {self.subjectim.shape[0]} subject rows, no subject {subject}")
        return self.subjectim[subject - 1]

    def trial_ids(self, subject: int, global_trials: np.ndarray) -> np.ndarray:
        """0-based 73k id shown on each 0-based global trial: subjectim[s-1, masterordering[t]-1]-1."""
        global_trials = np.asarray(global_trials, dtype=np.int64)
        if global_trials.size and global_trials.max() >= self.masterordering.size:
            raise InputDataError(self.path, f"masterordering has {self.masterordering.size} trials, the betas need "
                                            f"trial {int(global_trials.max()) + 1}")
        return self.subject_ids(subject)[self.masterordering[global_trials]]


def _load_mat(path: Path) -> dict[str, np.ndarray]:
    """The variables of a MATLAB file: v5 through scipy, v7.3 (HDF5) through h5py (axes reversed)."""
    import scipy.io

    try:
        return {k: v for k, v in scipy.io.loadmat(path).items() if not k.startswith("__")}
    except NotImplementedError:  # MATLAB v7.3: an HDF5 file, arrays stored transposed
        import h5py

        try:
            with h5py.File(path, "r") as f:
                return {k: np.asarray(f[k]).T for k in f.keys() if isinstance(f[k], h5py.Dataset)}
        except _H5_ERRORS as exc:
            raise InputDataError(path, f"not a readable MATLAB v7.3 file ({type(exc).__name__}: {exc})") from None
    except Exception as exc:  # noqa: BLE001 - scipy raises many types for a damaged file
        raise InputDataError(path, f"not a readable MATLAB file ({type(exc).__name__}: {exc})") from None


def _one_based(path: Path, name: str, arr: np.ndarray, upper: int | None) -> np.ndarray:
    """A 1-based integer index array -> 0-based int64; non-integers or values outside 1..upper are errors."""
    if arr.dtype.kind not in "iuf" or arr.size == 0:
        raise InputDataError(path, f"variable '{name}' must hold 1-based indices, got dtype {arr.dtype} shape {arr.shape}")
    if arr.dtype.kind == "f" and not (np.isfinite(arr).all() and np.array_equal(arr, np.round(arr))):
        raise InputDataError(path, f"variable '{name}' holds non-integer values")
    out = arr.astype(np.int64) - 1
    if out.min() < 0 or (upper is not None and out.max() >= upper):
        raise InputDataError(path, f"variable '{name}' holds {int(out.min()) + 1}..{int(out.max()) + 1}, "
                                   f"outside 1..{upper if upper is not None else 'n'} (is it 1-based?)")
    return out


def _vector(path: Path, name: str, arr: np.ndarray) -> np.ndarray:
    """(1, N), (N, 1) and (N,) are all read as (N,)."""
    arr = np.asarray(arr)
    if arr.ndim > 2 or (arr.ndim == 2 and min(arr.shape) != 1):
        raise InputDataError(path, f"variable '{name}' must be a vector, got shape {arr.shape}")
    return arr.reshape(-1)


def read_design(path: str | os.PathLike) -> NsdDesign:
    """nsd_expdesign.mat: masterordering, subjectim, sharedix, every index made 0-based and checked."""
    path = Path(path)
    if not path.is_file():
        raise InputDataError(path, "NSD design file not found")
    variables = _load_mat(path)
    for name in DESIGN_VARIABLES:
        if name not in variables:
            raise InputDataError(path, f"design file lacks the variable '{name}' (has {', '.join(sorted(variables)) or 'none'})")
    subjectim = np.asarray(variables["subjectim"])
    if subjectim.ndim == 1:
        subjectim = subjectim[None, :]  # a single subject's row
    if subjectim.ndim != 2:
        raise InputDataError(path, f"variable 'subjectim' must be (subjects, images), got shape {subjectim.shape}")
    subjectim = _one_based(path, "subjectim", subjectim, None)
    masterordering = _one_based(path, "masterordering", _vector(path, "masterordering", variables["masterordering"]),
                                subjectim.shape[1])
    sharedix = _one_based(path, "sharedix", _vector(path, "sharedix", variables["sharedix"]), None)
    n_shared = sharedix.size
    if n_shared > subjectim.shape[1] or len(np.unique(sharedix)) != n_shared:
        raise InputDataError(path, f"sharedix holds {n_shared} ids ({len(np.unique(sharedix))} distinct) for "
                                   f"{subjectim.shape[1]} subjectim columns")
    shared = set(sharedix.tolist())
    for row in range(subjectim.shape[0]):  # the first n_shared columns of every subject are the shared images
        if set(subjectim[row, :n_shared].tolist()) != shared:
            raise InputDataError(path, f"subjectim row {row + 1}: its first {n_shared} columns are not the "
                                       f"{n_shared} images of sharedix")
        if np.isin(subjectim[row, n_shared:], sharedix).any():
            raise InputDataError(path, f"subjectim row {row + 1}: a shared image appears again after column {n_shared}")
    return NsdDesign(path, masterordering, subjectim, sharedix)


# ----------------------------------------------------------------------------- responses.tsv
def read_responses(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(session, 0-based 73k id) of every row of responses.tsv, in file (= trial) order."""
    path = Path(path)
    try:
        with open(path, newline="") as fh:
            rows = list(csv.reader(fh, delimiter="\t"))
    except (OSError, UnicodeDecodeError) as exc:
        raise InputDataError(path, f"cannot read ({type(exc).__name__}: {exc})") from None
    if not rows:
        raise InputDataError(path, "empty responses file")
    header = [h.strip().upper() for h in rows[0]]
    missing = [c for c in ("SESSION", "73KID") if c not in header]
    if missing:
        raise InputDataError(path, f"no column {', '.join(missing)} (header: {', '.join(header)})")
    si, ki = header.index("SESSION"), header.index("73KID")
    sessions, ids = [], []
    for line, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        try:
            sessions.append(int(float(row[si])))
            ids.append(int(float(row[ki])) - 1)
        except (IndexError, ValueError):
            raise InputDataError(path, f"line {line}: no integer SESSION / 73KID") from None
    return np.asarray(sessions, dtype=np.int64), np.asarray(ids, dtype=np.int64)


# ----------------------------------------------------------------------------- ROIs
def read_ctab(path: str | os.PathLike) -> dict[str, int]:
    """A FreeSurfer colour table: lines `<value> <name> [R G B A]`; '#' comments and blank lines skipped."""
    path = Path(path)
    if not path.is_file():
        raise InputDataError(path, "ROI label table (.ctab) not found")
    table: dict[str, int] = {}
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputDataError(path, f"cannot read ({type(exc).__name__}: {exc})") from None
    for number, line in enumerate(lines, start=1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        try:
            value = int(parts[0])
        except ValueError:
            raise InputDataError(path, f"line {number}: '{line.strip()}' does not start with an integer label") from None
        if len(parts) < 2:
            raise InputDataError(path, f"line {number}: label {value} has no name")
        table[parts[1]] = value
    return table


@dataclass(frozen=True)
class RoiImage:
    path: Path
    values: np.ndarray  # (X, Y, Z) int32: -1 outside the brain, 0 none, > 0 labels
    affine: np.ndarray


def read_roi_image(path: str | os.PathLike) -> RoiImage:
    img = load_label_image(path)
    return RoiImage(img.path, img.labels, img.affine)


def roi_mask(roi: RoiImage, values: list[int]) -> np.ndarray:
    """Voxels whose label is one of `values` (never `!= 0`: -1 marks voxels outside the brain)."""
    if any(v <= 0 for v in values):
        raise ValueError("ROI label values must be positive")
    return np.isin(roi.values, values)


# ----------------------------------------------------------------------------- betas
class BetasSession:
    """One session's betas on an (X, Y, Z) grid: `betas_sessionNN.nii.gz` (X, Y, Z, trials) or
    `betas_sessionNN.hdf5` dataset `/betas` (trials, Z, Y, X). Values are returned as stored
    (int16 percent signal change x 300; a NIfTI scl_slope is applied as nibabel would)."""

    def __init__(self, path: str | os.PathLike, kind: str):
        self.path = Path(path)
        self.kind = kind
        if not self.path.is_file():
            raise InputDataError(self.path, "betas file not found")
        if kind == "nifti":
            self._run = open_volume_run(self.path)
            self.grid = tuple(int(s) for s in self._run.grid_shape)
            self.n_trials = int(self._run.n_frames)
            self.affine: np.ndarray | None = self._run.affine
        elif kind == "hdf5":
            shape = self._h5_shape()
            if len(shape) != 4:
                raise InputDataError(self.path, f"/betas must be 4-D (trials, Z, Y, X), got shape {shape}")
            self.n_trials, self.grid = int(shape[0]), (int(shape[3]), int(shape[2]), int(shape[1]))
            self.affine = None  # HDF5 betas carry no affine: only the grid shape can be checked
        else:
            raise ValueError(f"betas kind must be 'nifti' or 'hdf5', got {kind!r}")

    def _h5_shape(self) -> tuple[int, ...]:
        import h5py

        try:
            with h5py.File(self.path, "r") as f:
                if "betas" not in f:
                    raise InputDataError(self.path, f"no dataset '/betas' (has {', '.join(f.keys()) or 'none'})")
                return tuple(f["betas"].shape)
        except _H5_ERRORS as exc:
            raise InputDataError(self.path, f"not a readable HDF5 file ({type(exc).__name__}: {exc})") from None

    def check_grid(self, shape: tuple[int, ...], affine: np.ndarray, other: Path) -> None:
        """The betas must lie on the ROI's grid (same shape; same affine where the file has one)."""
        if self.grid != tuple(shape):
            raise InputDataError(self.path, f"betas grid {self.grid} differs from the grid {tuple(shape)} of {other}")
        if self.affine is not None and not np.allclose(self.affine, affine, atol=AFFINE_ATOL):
            worst = float(np.abs(self.affine - affine).max())
            raise InputDataError(self.path, f"betas affine differs from the one of {other} by up to {worst:.4g} mm: "
                                            "another grid (1 mm vs 1.8 mm?)")

    def read_voxels(self, ijk: np.ndarray, trials_per_chunk: int = 50, slices_per_chunk: int = 4) -> np.ndarray:
        """(n_trials, n) float32 of the voxels at grid indices `ijk` (n, 3), in that order.

        NIfTI: `trials_per_chunk` trials at a time (a trial is one contiguous block on disk);
        HDF5: `slices_per_chunk` z-slices at a time (NSD's own files are chunked voxel by voxel
        across all trials, so a slab of slices reads each chunk once)."""
        ijk = np.asarray(ijk, dtype=np.int64).reshape(-1, 3)
        if self.kind == "nifti":
            flat = np.ravel_multi_index((ijk[:, 0], ijk[:, 1], ijk[:, 2]), self.grid, order="F")
            return extract_voxels(self._run, flat, chunk_frames=trials_per_chunk)
        return self._read_h5(ijk, max(1, slices_per_chunk))

    def _read_h5(self, ijk: np.ndarray, slices: int) -> np.ndarray:
        import h5py

        out = np.empty((self.n_trials, len(ijk)), dtype=np.float32)
        if not len(ijk):
            return out
        try:
            with h5py.File(self.path, "r") as f:
                data = f["betas"]
                for z0 in range(int(ijk[:, 2].min()), int(ijk[:, 2].max()) + 1, slices):
                    cols = np.flatnonzero((ijk[:, 2] >= z0) & (ijk[:, 2] < z0 + slices))
                    if not cols.size:
                        continue
                    block = data[:, z0:z0 + slices, :, :]  # (trials, dz, Y, X)
                    sel = ijk[cols]
                    out[:, cols] = block[:, sel[:, 2] - z0, sel[:, 1], sel[:, 0]]
                    del block
        except _H5_ERRORS as exc:
            raise InputDataError(self.path, f"/betas could not be read (truncated or corrupt?): "
                                            f"{type(exc).__name__}: {exc}") from None
        return out


# ----------------------------------------------------------------------------- stimuli
class StimulusBrick:
    """`imgBrick` of nsd_stimuli.hdf5: (n_images, H, W, 3) uint8, row = 0-based 73k id."""

    def __init__(self, path: str | os.PathLike, key: str = "imgBrick"):
        import h5py

        self.path = Path(path)
        self.key = key
        if not self.path.is_file():
            raise InputDataError(self.path, "NSD stimulus file not found")
        try:
            with h5py.File(self.path, "r") as f:
                if key not in f:
                    raise InputDataError(self.path, f"no dataset '{key}' (has {', '.join(f.keys()) or 'none'})")
                self.shape, self.dtype = tuple(f[key].shape), f[key].dtype
        except _H5_ERRORS as exc:
            raise InputDataError(self.path, f"not a readable HDF5 file ({type(exc).__name__}: {exc})") from None
        if len(self.shape) != 4 or self.shape[3] != 3:
            raise InputDataError(self.path, f"{key} must be (images, H, W, 3), got shape {self.shape}")

    @property
    def n_images(self) -> int:
        return int(self.shape[0])

    def check_ids(self, ids: np.ndarray, source: Path) -> None:
        ids = np.asarray(ids)
        bad = ids[(ids < 0) | (ids >= self.n_images)]
        if bad.size:
            raise InputDataError(self.path, f"73k id {int(bad[0])} (0-based, from {source}) is outside {self.key}'s "
                                            f"{self.n_images} images ({bad.size} such ids)")

    def batches(self, ids: np.ndarray, batch: int = 64) -> Iterator[np.ndarray]:
        """The rows of `ids` (any order, repeats allowed) as uint8 batches of at most `batch` images."""
        import h5py

        ids = np.asarray(ids, dtype=np.int64)
        try:
            with h5py.File(self.path, "r") as f:
                data = f[self.key]
                for start in range(0, ids.size, batch):
                    part = ids[start:start + batch]
                    uniq, inverse = np.unique(part, return_inverse=True)  # h5py wants increasing indices
                    rows = data[uniq] if uniq.size > 1 else data[int(uniq[0])][None]
                    yield _as_uint8(np.asarray(rows)[inverse], self.path)
        except _H5_ERRORS as exc:
            raise InputDataError(self.path, f"{self.key} could not be read ({type(exc).__name__}: {exc})") from None


def _as_uint8(images: np.ndarray, path: Path) -> np.ndarray:
    if images.dtype == np.uint8:
        return images
    if images.dtype.kind in "iuf" and images.size and 0 <= images.min() and images.max() <= 255:
        return np.round(images).astype(np.uint8)  # documented repair: 0..255 stored in another dtype
    raise InputDataError(path, f"images must be uint8 0..255, got {images.dtype}")
