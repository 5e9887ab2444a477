"""NSD volumes: the simulated anatomy (brain mask, nsdgeneral, prf-visualrois, streams) on the
1.8 mm functional grid, and streaming writers for the betas (NIfTI .nii.gz with trials last, and
the HDF5 variant with `/betas` shaped (trials, Z, Y, X)), one chunk of trials at a time so that a
full-size session never sits in memory twice.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mindvis.simulate.bold5000 import brain_mask, save_nifti_gz
from mindvis.utils.atomic import atomic_path
from mindvis.utils.errors import ConfigError

GRID_MM = 1.8
PRF_LABELS = ("V1v", "V1d", "V2v", "V2d", "V3v", "V3d", "hV4")  # prf-visualrois values 1..7
STREAM_LABELS = ("early", "midventral", "midlateral", "midparietal", "ventral", "lateral", "parietal")  # 1..7
RETINOTOPIC = ("V1", "V2", "V3", "hV4")
CATEGORY_STREAM = {"ventral": "ventral", "lateral": "lateral"}  # category ROI -> its streams label
# Blob centres (grid fractions; x left->right, y posterior->anterior, z inferior->superior) for the left
# hemisphere; the right mirrors x. Ventral (v) parts below dorsal (d) ones, as on the cortex.
CENTRES = {
    "V1v": (0.45, 0.08, 0.40), "V1d": (0.45, 0.08, 0.55),
    "V2v": (0.40, 0.12, 0.33), "V2d": (0.40, 0.12, 0.62),
    "V3v": (0.36, 0.16, 0.27), "V3d": (0.36, 0.16, 0.68),
    "hV4": (0.33, 0.22, 0.25), "ventral": (0.30, 0.35, 0.22), "lateral": (0.15, 0.28, 0.45),
}


@dataclass
class NsdAnatomy:
    brain: np.ndarray  # (X, Y, Z) bool
    nsdgeneral: np.ndarray  # (X, Y, Z) int16: -1 outside the brain, 0, 1
    prf: np.ndarray  # (X, Y, Z) int16: -1 outside, 0 none, 1..7 PRF_LABELS
    streams: np.ndarray  # (X, Y, Z) int16: -1 outside, 0 none, 1..7 STREAM_LABELS
    voxel_flat: np.ndarray  # (V,) C-order flat grid index of each model voxel


def grid_affine(grid: tuple[int, int, int]) -> np.ndarray:
    affine = np.diag([GRID_MM, GRID_MM, GRID_MM, 1.0])
    affine[:3, 3] = -GRID_MM * (np.asarray(grid) - 1) / 2.0
    return affine


def _standardise(x: np.ndarray) -> np.ndarray:
    sd = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


def _match(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A neighbour-keeping one-to-one match of point sets a and b (same size) by recursive
    bisection along a's widest axis; returns perm with a[i] <-> b[perm[i]]. O(n log n), unlike an
    optimal assignment, so full-size ROIs (~15k voxels) are fine."""
    out = np.empty(len(a), dtype=np.int64)

    def split(ia: np.ndarray, ib: np.ndarray) -> None:
        if ia.size <= 1:
            out[ia] = ib
            return
        axis = int(np.argmax(np.ptp(a[ia], axis=0)))
        sa = ia[np.argsort(a[ia, axis], kind="stable")]
        sb = ib[np.argsort(b[ib, axis], kind="stable")]
        h = ia.size // 2
        split(sa[:h], sb[:h])
        split(sa[h:], sb[h:])

    a, b = _standardise(a.astype(float)), _standardise(b.astype(float))
    split(np.arange(len(a)), np.arange(len(b)))
    return out


def model_labels(model) -> list[tuple[str, np.ndarray]]:
    """(label, model voxel indices) per blob: V1..V3 split into ventral/dorsal parts by the RF's
    vertical position (the ventral bank sees the upper field), each part and each category ROI
    split into hemispheres (the left sees the right field; category ROIs at random halves)."""
    out = []
    for roi in model.roi_names:
        idx = np.flatnonzero(model.roi_mask(roi))
        if roi in RETINOTOPIC:
            right = model.rf_centres[idx, 0] >= 0.5
            parts = [(roi, np.ones(idx.size, bool))] if roi == "hV4" else [
                (roi + "v", model.rf_centres[idx, 1] < 0.5), (roi + "d", model.rf_centres[idx, 1] >= 0.5)]
        else:
            right = np.arange(idx.size) % 2 == 0
            parts = [(roi, np.ones(idx.size, bool))]
        for name, sel in parts:
            out.append((name + "|LH", idx[sel & right]))
            out.append((name + "|RH", idx[sel & ~right]))
    return [(n, i) for n, i in out if i.size]


def place(model, grid: tuple[int, int, int], rng: np.random.Generator) -> NsdAnatomy:
    """Each blob takes the free in-brain voxels nearest its centre; model voxels are matched to
    them by position, so the retinotopic map stays a map on the grid."""
    brain = brain_mask(grid)
    free = brain.copy()
    ijk_all = np.argwhere(brain)
    flat = np.zeros(model.n_voxels, dtype=np.int64)
    prf = np.where(brain, 0, -1).astype(np.int16)
    streams = prf.copy()
    for label, idx in model_labels(model):
        name, hemi = label.split("|")
        cx, cy, cz = CENTRES[name]
        centre = np.array([cx if hemi == "LH" else 1.0 - cx, cy, cz]) * np.asarray(grid)
        centre = centre + rng.uniform(-1.0, 1.0, size=3)  # subjects differ a little
        candidates = ijk_all[free[tuple(ijk_all.T)]]
        if candidates.shape[0] < idx.size:
            raise ConfigError(f"nsd simulate.grid {list(grid)} has no room for {name} ({idx.size} voxels)")
        d = ((candidates + 0.5 - centre) ** 2).sum(axis=1)
        blob = candidates[np.argsort(d, kind="stable")[: idx.size]]
        perm = _match(model.coords[idx], blob)
        flat[idx] = np.ravel_multi_index(tuple(blob[perm].T), grid)
        free[tuple(blob.T)] = False
        if name in PRF_LABELS:
            prf[tuple(blob.T)] = PRF_LABELS.index(name) + 1
        stream = CATEGORY_STREAM.get(name, "early")
        streams[tuple(blob.T)] = STREAM_LABELS.index(stream) + 1
    general = np.where(brain, 0, -1).astype(np.int16)
    general.ravel()[flat] = 1
    return NsdAnatomy(brain, general, prf, streams, flat)


def ctab_text(labels: Iterable[str]) -> str:
    """FreeSurfer-style label table as NSD ships it: "<int> <name>" lines, starting "0 Unknown"."""
    return "".join(f"{k} {name}\n" for k, name in enumerate(["Unknown", *labels]))


def write_label_volume(path: Path, volume: np.ndarray, grid: tuple[int, int, int]) -> None:
    save_nifti_gz(path, volume, grid_affine(grid))


# --------------------------------------------------------------------------- streaming betas writers
def _nifti_header(shape: tuple[int, ...], grid: tuple[int, int, int]):
    import nibabel as nib

    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(np.int16)
    hdr.set_data_shape(shape)
    affine = grid_affine(grid)
    hdr.set_qform(affine, code=1)
    hdr.set_sform(affine, code=1)
    hdr.set_xyzt_units("mm", "sec")
    hdr["vox_offset"] = 352  # 348-byte header + 4-byte extension flag, as nibabel writes single files
    hdr["scl_slope"] = np.nan  # no scaling: the stored ints are the values (NSD: % signal change x 300)
    hdr["scl_inter"] = np.nan
    return hdr


class BetasWriter:
    """Writes one session as `betas_sessionNN.nii.gz` (int16 (X, Y, Z, trials)) and, optionally,
    `betas_sessionNN.hdf5` (`/betas` int16 (trials, Z, Y, X)), fed chunks of whole trials in order.
    NIfTI stores x fastest and trials slowest, so each trial's volume is appended in Fortran order;
    both files appear under their names only when complete (temp file + rename)."""

    def __init__(self, nifti: Path, hdf5: Path | None, grid: tuple[int, int, int], n_trials: int):
        self.grid, self.n_trials, self.done = grid, n_trials, 0
        self._nifti_ctx = atomic_path(nifti)
        self._nifti_tmp = self._nifti_ctx.__enter__()
        self._raw = open(self._nifti_tmp, "wb")
        # Level 1: betas are mostly noise, which level 6 compresses barely better at ~3x the time.
        self._gz = gzip.GzipFile(filename="", mode="wb", fileobj=self._raw, mtime=0, compresslevel=1)
        self._gz.write(_nifti_header(grid + (n_trials,), grid).binaryblock + b"\x00" * 4)
        self._h5 = self._h5_ctx = None
        if hdf5 is not None:
            import h5py

            self._h5_ctx = atomic_path(hdf5)
            tmp = self._h5_ctx.__enter__()
            self._h5 = h5py.File(tmp, "w")
            # One chunk per trial volume. NSD's files are chunked per voxel time series (MATLAB [1 1 1 750],
            # h5py (750, 1, 1, 1)); chunking changes speed, not the values, and per-voxel chunks written
            # trial by trial would touch every chunk for every trial.
            self._dset = self._h5.create_dataset("betas", shape=(n_trials,) + grid[::-1], dtype=np.int16,
                                                 chunks=(1,) + grid[::-1])

    def write(self, chunk: np.ndarray) -> None:
        """`chunk`: int16 (X, Y, Z, k), the next k trials."""
        if chunk.dtype != np.int16 or chunk.shape[:3] != self.grid or self.done + chunk.shape[3] > self.n_trials:
            raise ValueError(f"bad betas chunk {chunk.dtype} {chunk.shape} after {self.done} of {self.n_trials} trials")
        self._gz.write(np.asfortranarray(chunk).tobytes(order="F"))
        if self._h5 is not None:
            self._dset[self.done : self.done + chunk.shape[3]] = chunk.transpose(3, 2, 1, 0)
        self.done += chunk.shape[3]

    def close(self, error: BaseException | None = None) -> None:
        """Finish both files (renamed into place), or, given the error that stopped the writing,
        remove them; closing before every trial arrived is itself an error."""
        short = None
        if error is None and self.done != self.n_trials:
            short = error = ValueError(f"betas writer closed after {self.done} of {self.n_trials} trials")
        self._gz.close()
        self._raw.close()
        if self._h5 is not None:
            self._h5.close()
        for ctx in (self._nifti_ctx, self._h5_ctx):
            if ctx is not None:
                ctx.__exit__(*((None, None, None) if error is None else (type(error), error, error.__traceback__)))
        if short is not None:
            raise short

    def __enter__(self) -> BetasWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(exc)
