"""GOD (Kamitani) subjects as MinD-Vis reads them: `sbj_N.npz` + `images_256.npz`.

`load_god_npz` reads one subject file, ours (`preprocess-god`) or MinD-Vis's
own released one, unchanged: `arr_0`..`arr_3` are required, `arr_4`.. and the
ROI mask keys are optional (docs/reference.md §9.1, §2).

`GodFmriDataset` applies MinD-Vis's conventions (docs/reference.md section 2,
`mindvis.data.conventions`, `mindvis.data.normalisation`), in the reference's order:
  1. keep the ROI's voxels (mask `roi`, default VC);
  2. per subject: wrap-pad by 16 - V % 16 voxels and z-score with one scalar
     mean/std (`normalisation`: "clean" = that subject's padded TRAINING rows,
     applied to its training and test rows; "reference" = MinD-Vis's own steps,
     bit for bit: test rows divided by the statistics of the already normalised
     training rows, i.e. in effect only padded);
  3. several subjects: wrap-pad each to the longest padded length, stack rows,
     then wrap-pad the whole matrix to `padded_length` (e.g. a checkpoint's).
`include_nonavg_test` appends each subject's single test trials (arr_1) to its
averaged test rows (arr_2), as the reference's flag of that name (stage A2).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mindvis.data.conventions import PATCH_SIZE, ScalarNorm, wrap_pad
from mindvis.data.fmri_dataset import SubjectFmriDataset, cut_voxels, pick_roi_mask
from mindvis.data.normalisation import clean_rows, reference_normalize, stats_of
from mindvis.io.npz import open_npz, read_npz
from mindvis.utils.errors import ConfigError, InputDataError

log = logging.getLogger(__name__)

_ARRAY_KEY = re.compile(r"^arr_\d+$")
REQUIRED_KEYS = ("arr_0", "arr_1", "arr_2", "arr_3")


@dataclass
class GodSubjectData:
    """One GOD subject (all voxels of the file; `select_roi` narrows them).

    fMRI arrays are float32, or as stored when read with `keep_dtype` (reference normalisation).
    """

    train_fmri: np.ndarray  # (n_train, V) float32, arr_0, trial order
    test_fmri_trials: np.ndarray  # (n_test_trials, V) float32, arr_1, grouped image by image
    test_fmri: np.ndarray  # (n_test_images, V) float32, arr_2, row i <-> test_images[i]
    train_image_index: np.ndarray  # (n_train,) int64, arr_3, row in train_images
    test_labels: np.ndarray | None  # arr_4 when present
    roi_masks: dict[str, np.ndarray]  # name -> bool (V,)
    path: Path | None = None
    extras: dict[str, np.ndarray] = field(default_factory=dict)  # arr_5 (noise ceiling), arr_6 (SNR), ...

    @property
    def n_voxels(self) -> int:
        return int(self.train_fmri.shape[1])

    def roi_mask(self, roi: str | None) -> np.ndarray:
        """Boolean (V,) mask of `roi`; None = all voxels.

        A file without any ROI mask is taken to hold the VC selection already
        (what `preprocess-god` keeps by default), so roi "VC" then means all voxels.
        """
        if roi is None or (roi == "VC" and not self.roi_masks):
            if roi is not None:
                log.info("%s has no ROI masks; using all %d voxels as VC", self.path, self.n_voxels)
            return np.ones(self.n_voxels, dtype=bool)
        return pick_roi_mask(self.roi_masks, roi, self.path)

    def select_roi(self, roi: str | None) -> GodSubjectData:
        """A copy holding only the voxels of `roi` (masks cut the same way)."""
        return cut_voxels(self, self.roi_mask(roi))

    def test_trial_image_index(self) -> np.ndarray:
        """Image of each arr_1 row; only defined when every test image has the same number of trials."""
        n_trials, n_images = self.test_fmri_trials.shape[0], self.test_fmri.shape[0]
        if n_trials % n_images:
            raise InputDataError(
                self.path,
                f"arr_1 has {n_trials} test trials for {n_images} images: repeats differ between images, "
                "so the image of each trial is not recoverable from the npz",
            )
        return np.repeat(np.arange(n_images, dtype=np.int64), n_trials // n_images)


def _as_index(path: Path, arr: np.ndarray, name: str) -> np.ndarray:
    if arr.ndim != 1:
        raise InputDataError(path, f"{name} must be 1-D, got shape {arr.shape}")
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all() or not np.all(arr == np.round(arr)):
            raise InputDataError(path, f"{name} must hold whole-number image indices")
    elif arr.dtype.kind not in "iu":
        raise InputDataError(path, f"{name} must hold integer image indices, got dtype {arr.dtype}")
    out = arr.astype(np.int64)
    if out.size and out.min() < 0:
        raise InputDataError(path, f"{name} holds negative image indices")
    return out


def _as_mask(path: Path, arr: np.ndarray, name: str, n_voxels: int) -> np.ndarray:
    if arr.shape != (n_voxels,):
        raise InputDataError(
            path, f"ROI mask '{name}' has shape {arr.shape}, expected ({n_voxels},) like arr_0's voxels"
        )
    if arr.dtype != bool:
        if not np.isin(arr, (0, 1)).all():
            raise InputDataError(path, f"ROI mask '{name}' must be boolean (0/1), got values outside 0/1")
        arr = arr.astype(bool)
    return arr


def load_god_npz(path: str | os.PathLike, keep_dtype: bool = False) -> GodSubjectData:
    """Read and check one `sbj_N.npz`; every defect is an `InputDataError` naming the file.

    The fMRI arrays come back as float32 unless `keep_dtype` (then as stored:
    the reference normalises in the file's own dtype).
    """
    path = Path(path)
    raw = read_npz(path, "GOD subject npz")
    missing = [k for k in REQUIRED_KEYS if k not in raw]
    if missing:
        raise InputDataError(path, f"missing key(s) {', '.join(missing)} (keys present: {', '.join(sorted(raw))})")
    fmri = {}
    for key in ("arr_0", "arr_1", "arr_2"):
        arr = raw[key]
        if arr.ndim != 2 or arr.dtype.kind not in "fiu":
            raise InputDataError(
                path, f"{key} must be a 2-D numeric (samples, voxels) array, got {arr.dtype} {arr.shape}"
            )
        bad = int((~np.isfinite(arr)).sum())
        if bad:
            raise InputDataError(path, f"{key} holds {bad} NaN/Inf value(s); rerun preprocess-god (bad_voxels: drop)")
        fmri[key] = arr if keep_dtype else arr.astype(np.float32, copy=False)
    widths = {k: a.shape[1] for k, a in fmri.items()}
    if len(set(widths.values())) != 1:
        raise InputDataError(path, f"arr_0, arr_1, arr_2 disagree on the number of voxels: {widths}")
    train_index = _as_index(path, raw["arr_3"], "arr_3")
    if train_index.size != fmri["arr_0"].shape[0]:
        raise InputDataError(
            path, f"arr_3 has {train_index.size} image indices for {fmri['arr_0'].shape[0]} training trials (arr_0)"
        )
    n_voxels = fmri["arr_0"].shape[1]
    masks = {k: _as_mask(path, a, k, n_voxels) for k, a in raw.items() if not _ARRAY_KEY.match(k)}
    extras = {k: a for k, a in raw.items() if _ARRAY_KEY.match(k) and k not in (*REQUIRED_KEYS, "arr_4")}
    return GodSubjectData(
        train_fmri=fmri["arr_0"],
        test_fmri_trials=fmri["arr_1"],
        test_fmri=fmri["arr_2"],
        train_image_index=train_index,
        test_labels=raw.get("arr_4"),
        roi_masks=masks,
        path=path,
        extras=extras,
    )


def _load_images(path: Path, split: str, image_index: np.ndarray) -> np.ndarray:
    key = "train_images" if split == "train" else "test_images"
    with open_npz(path, "images npz") as npz:
        if key not in npz.files:
            raise InputDataError(path, f"has no '{key}' (keys: {', '.join(npz.files)})")
        images = npz[key]
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise InputDataError(path, f"{key} must be (n, H, W, 3) uint8, got {images.dtype} {images.shape}")
    if image_index.size and image_index.max() >= images.shape[0]:
        raise InputDataError(
            path, f"{key} holds {images.shape[0]} images but the fMRI refers to image {int(image_index.max())}"
        )
    return images


def reference_god_rows(train: np.ndarray, rows: np.ndarray, is_train: bool,
                       patch_size: int = PATCH_SIZE) -> tuple[np.ndarray, ScalarNorm]:
    """One subject as MinD-Vis's `create_Kamitani_dataset` normalises it, in the arrays' own dtype.

    Training rows: padded, z-scored with their own scalar mean/std. Other rows:
    padded, then z-scored with the mean/std of the NORMALISED training rows
    (about 0 and 1). Returns the rows and the statistics applied to them.
    """
    padded = wrap_pad(train, patch_size)
    mean, std = np.mean(padded), np.std(padded)
    if not std > 0:
        raise ConfigError("GodFmriDataset: the training fMRI is constant; it cannot be normalised")
    train_norm = reference_normalize(padded, mean, std)
    if is_train:
        return train_norm, stats_of(mean, std)
    mean, std = np.mean(train_norm), np.std(train_norm)
    return reference_normalize(wrap_pad(rows, patch_size), mean, std), stats_of(mean, std)


class GodFmriDataset(SubjectFmriDataset):
    """GOD fMRI (and images) for MinD-Vis: items {"fmri": (1, L) float32, "image_index", "subject"[, "image"]}.

    Attributes: `norms` (per subject, the ScalarNorm applied to this split's
    rows), `norm` (the same when there is one subject, else None),
    `padded_length` (L, a multiple of `patch_size` unless `padded_length` was
    forced), `num_voxels` (= L, the reference's name), `subjects` (per-subject
    GodSubjectData restricted to the ROI), `normalisation`.
    """

    name = "GodFmriDataset"

    def __init__(
        self,
        npz_paths: str | os.PathLike | Sequence[str | os.PathLike],
        images_npz: str | os.PathLike | None = None,
        split: str = "train",
        roi: str | None = "VC",
        patch_size: int = PATCH_SIZE,
        padded_length: int | None = None,
        image_transform: Callable[[np.ndarray], Any] | None = None,
        normalisation: str = "clean",
        include_nonavg_test: bool = False,
    ):
        paths = self._begin(npz_paths, split, include_nonavg_test, image_transform, normalisation)
        reference = self.normalisation == "reference"
        self.subjects = [load_god_npz(p, keep_dtype=reference).select_roi(roi) for p in paths]
        blocks = self._join_subjects(patch_size, padded_length)
        natural = max(b.shape[1] for b in blocks)
        self.images = None if images_npz is None else _load_images(Path(images_npz), split, self.image_index)
        log.info(
            "GOD %s: %d samples from %d subject(s), %d voxels padded to %d, %s normalisation (%s)",
            split, len(self), len(self.subjects), natural, self.padded_length, self.normalisation,
            "; ".join(f"mean {n.mean:.4g} std {n.std:.4g}" for n in self.norms),
        )

    def _rows_of(self, subj: GodSubjectData, patch_size: int) -> tuple[np.ndarray, np.ndarray, ScalarNorm]:
        x, idx = self._split_of(subj)
        if self.normalisation == "reference":
            rows, norm = reference_god_rows(subj.train_fmri, x, self.split == "train", patch_size)
        else:
            rows, norm = clean_rows(subj.train_fmri, x, patch_size)
        return rows, idx, norm

    def _image(self, i: int) -> np.ndarray | None:
        return None if self.images is None else self.images[self.image_index[i]]
