"""BOLD5000 inputs for the models: the per-subject npz and a torch Dataset with MinD-Vis conventions.

`load_bold5000_npz` reads `npz/CSI{n}.npz` written by `preprocess-bold5000` (key
list in `mindvis.preprocess.bold5000`) into the names of `GodSubjectData` where
a meaning is shared: train_fmri = arr_0, test_fmri_trials = arr_1, test_fmri =
arr_2, train_image_index = arr_3, test_labels (None: BOLD5000 has no class
labels), roi_masks, and the methods roi_mask / select_roi / test_trial_image_index.
Unlike GOD, test images have different numbers of presentations (CSI4), so the
image of each arr_1 row is stored (`test_trial_image_index` key), not inferred.
The images live in the subject's npz (subjects saw different image sets).

`load_roi_arrays` concatenates MinD-Vis's per-ROI `.npy` files the way its own
BOLD5000 loader does (EarlyVis, LOC, OPA, PPA, RSC; LH before RH).

`Bold5000FmriDataset` mirrors `GodFmriDataset` (docs/reference.md section 3):
  1. optionally keep one ROI's voxels (default: all five ROIs, as MinD-Vis);
  2. per subject, `normalisation` "clean": wrap-pad by 16 - V % 16 voxels and
     z-score with one scalar mean/std of the subject's padded TRAINING rows;
     "reference": MinD-Vis's `create_BOLD5000_dataset` bit for bit: every trial of
     the subject in chronological order (test repeats included: a leak), padded
     and z-scored together, and only then the test images' trials averaged;
  3. several subjects: wrap-pad each to the longest padded length (the
     reference cannot join different lengths), stack rows, then wrap-pad the
     whole matrix to `padded_length` (e.g. a checkpoint's).
`include_nonavg_test` appends the single test trials to split "test", as the
reference's flag of that name (stage A2).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mindvis.data.conventions import PATCH_SIZE, ScalarNorm, wrap_pad
from mindvis.data.fmri_dataset import SubjectFmriDataset, cut_voxels, pick_roi_mask
from mindvis.data.normalisation import clean_rows, reference_normalize, stats_of
from mindvis.io.npz import NpzArchive, open_npz, read_npy
from mindvis.utils.errors import ConfigError, InputDataError

log = logging.getLogger(__name__)

ROIS = ("EarlyVis", "LOC", "OPA", "PPA", "RSC")
HEMISPHERES = ("LH", "RH")
ROI_ARRAY_NAME = "CSI{subject}_GLMbetas-TYPED-FITHRF-GLMDENOISE-RR_allses_{label}.npy"
REAL, INTEGER = "fiu", "iu"  # numpy dtype kinds a member may have
RENAMED_NORMALISATIONS = {"train": "clean", "subject_all": "reference"}  # names before docs/reference.md §3


@dataclass
class Bold5000SubjectData:
    subject: str
    train_fmri: np.ndarray  # (n_train, V) float32, arr_0, chronological
    test_fmri_trials: np.ndarray  # (n_test_trials, V), arr_1, grouped image by image
    test_fmri: np.ndarray  # (n_test, V) averaged, arr_2, row i <-> test_images[i]
    train_image_index: np.ndarray  # (n_train,) int64, arr_3, row in train_images
    test_trial_owner: np.ndarray  # (n_test_trials,) int64: row of test_fmri each arr_1 row belongs to
    roi_masks: dict[str, np.ndarray]  # EarlyVis.., LHEarlyVis.. -> bool (V,)
    test_labels: np.ndarray | None = None  # BOLD5000 has no class labels (kept for GOD symmetry)
    train_trial_number: np.ndarray | None = None  # (n_train,) chronological trial number of each arr_0 row
    test_trial_number: np.ndarray | None = None  # (n_test_trials,) the same for arr_1 rows
    roi_order: list[str] = field(default_factory=list)
    train_images: np.ndarray | None = None  # (n_train_images, S, S, 3) uint8
    test_images: np.ndarray | None = None  # (n_test, S, S, 3) uint8
    train_image_names: list[str] = field(default_factory=list)
    test_image_names: list[str] = field(default_factory=list)
    path: Path | None = None

    @property
    def n_voxels(self) -> int:
        return int(self.train_fmri.shape[1])

    def test_trial_image_index(self) -> np.ndarray:
        """Image (row of test_fmri) of each arr_1 row."""
        return self.test_trial_owner

    def roi_mask(self, roi: str | None) -> np.ndarray:
        """Boolean (V,) mask of `roi` (e.g. "LOC" or "LHLOC"); None = all voxels."""
        if roi is None:
            return np.ones(self.n_voxels, dtype=bool)
        return pick_roi_mask(self.roi_masks, roi, self.path)

    def select_roi(self, roi: str | None) -> Bold5000SubjectData:
        """A copy holding only the voxels of `roi` (masks cut the same way)."""
        mask = self.roi_mask(roi)
        kept = [label for label in self.roi_order if label in self.roi_masks and self.roi_masks[label][mask].any()]
        return cut_voxels(self, mask, roi_order=kept)


def _require(data: NpzArchive, path: Path, key: str, kinds: str | None = None) -> np.ndarray:
    """Member `key`; with `kinds` (numpy dtype kinds, e.g. "iu") its dtype must be one of them, so that
    casting it cannot silently truncate floats to indices or drop imaginary parts."""
    if key not in data.files:
        raise InputDataError(path, f"missing key '{key}' (not a BOLD5000 npz from preprocess-bold5000?)")
    arr = data[key]
    if kinds is not None and arr.dtype.kind not in kinds:
        what = "integers" if kinds == INTEGER else "real numbers"
        raise InputDataError(path, f"{key} must hold {what}, got dtype {arr.dtype}")
    return arr


def load_bold5000_npz(path: str | os.PathLike, with_images: bool = True) -> Bold5000SubjectData:
    """Read one subject's npz, checking that every array agrees on V and on the row counts."""
    path = Path(path)
    if not path.is_file():
        raise InputDataError(path, "BOLD5000 subject npz not found (run `mindvis preprocess-bold5000` first)")
    try:  # member reads are guarded by open_npz; what remains is a member of the wrong type or shape
        return _load_bold5000_npz(path, open_npz(path, "BOLD5000 subject npz"), with_images)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InputDataError(path, f"not a BOLD5000 subject npz: {type(exc).__name__}: {exc}") from None


def _load_bold5000_npz(path: Path, data: NpzArchive, with_images: bool) -> Bold5000SubjectData:
    with data:
        train = _require(data, path, "arr_0", REAL).astype(np.float32, copy=False)
        trials = _require(data, path, "arr_1", REAL).astype(np.float32, copy=False)
        test = _require(data, path, "arr_2", REAL).astype(np.float32, copy=False)
        index = _require(data, path, "arr_3", INTEGER).astype(np.int64)
        owner = _require(data, path, "test_trial_image_index", INTEGER).astype(np.int64)
        v = train.shape[1] if train.ndim == 2 else -1
        for key, arr in (("arr_1", trials), ("arr_2", test)):
            if arr.ndim != 2 or arr.shape[1] != v:
                raise InputDataError(path, f"{key} has shape {arr.shape}, expected (n, {v}) like arr_0")
        if index.shape != (train.shape[0],):
            raise InputDataError(path, f"arr_3 has shape {index.shape}, expected ({train.shape[0]},)")
        if owner.shape != (trials.shape[0],) or (owner.size and (owner.min() < 0 or owner.max() >= test.shape[0])):
            raise InputDataError(path, "test_trial_image_index does not match arr_1/arr_2")
        masks = {}
        listed = [str(x) for x in data["roi_order"]] if "roi_order" in data.files else []  # NSD: its own ROI names
        for key in dict.fromkeys((*ROIS, *(h + r for r in ROIS for h in HEMISPHERES), *listed)):
            if key in data.files:
                m = data[key]
                if m.shape != (v,) or m.dtype != bool:
                    raise InputDataError(path, f"ROI mask '{key}' has shape {m.shape} dtype {m.dtype}, expected bool ({v},)")
                masks[key] = m
        numbers = {}
        for key, rows in (("train_trial_index", train.shape[0]), ("test_trial_index", trials.shape[0])):
            if key in data.files:
                numbers[key] = _require(data, path, key, INTEGER).astype(np.int64)
                if numbers[key].shape != (rows,):
                    raise InputDataError(path, f"{key} has shape {numbers[key].shape}, expected ({rows},)")
        out = Bold5000SubjectData(
            subject=str(data["subject"]) if "subject" in data.files else path.stem,
            train_fmri=train,
            test_fmri_trials=trials,
            test_fmri=test,
            train_image_index=index,
            test_trial_owner=owner,
            roi_masks=masks,
            train_trial_number=numbers.get("train_trial_index"),
            test_trial_number=numbers.get("test_trial_index"),
            roi_order=[str(x) for x in data["roi_order"]] if "roi_order" in data.files else [],
            train_image_names=[str(x) for x in data["train_image_names"]] if "train_image_names" in data.files else [],
            test_image_names=[str(x) for x in data["test_image_names"]] if "test_image_names" in data.files else [],
            path=path,
        )
        if with_images:
            out.train_images = _require(data, path, "train_images")
            out.test_images = _require(data, path, "test_images")
            if index.size and (index.min() < 0 or index.max() >= len(out.train_images)):
                raise InputDataError(path, f"arr_3 points outside the {len(out.train_images)} train_images")
            if len(out.test_images) != test.shape[0]:
                raise InputDataError(path, f"{len(out.test_images)} test_images for {test.shape[0]} arr_2 rows")
    return out


def load_roi_arrays(
    py_dir: str | os.PathLike, subject: int, rois: Sequence[str] = ROIS, hemispheres: Sequence[str] = HEMISPHERES
) -> tuple[np.ndarray, list[str]]:
    """(trials, V) from the per-ROI .npy files in MinD-Vis's order, and the labels used."""
    py_dir = Path(py_dir)
    labels = [f"{h}{r}" for r in rois for h in hemispheres]
    arrays = []
    for label in labels:
        path = py_dir / ROI_ARRAY_NAME.format(subject=subject, label=label)
        if not path.is_file():
            raise InputDataError(path, "per-ROI betas file not found")
        arr = read_npy(path, "per-ROI betas file")
        if arr.dtype.kind not in "fiu":  # concatenating e.g. datetime64 with floats would raise deep in numpy
            raise InputDataError(path, f"must hold real numbers, got dtype {arr.dtype}")
        if arr.ndim != 2 or (arrays and arr.shape[0] != arrays[0].shape[0]):
            raise InputDataError(path, f"shape {arr.shape} disagrees with the other ROI files (trials, voxels)")
        arrays.append(arr)
    return np.concatenate(arrays, axis=1), labels


def _chronological_trials(subj: Bold5000SubjectData) -> np.ndarray:
    """Every trial of the subject in presentation order (arr_0 and arr_1 rows put back in place)."""
    if subj.train_trial_number is None or subj.test_trial_number is None:
        raise InputDataError(subj.path, "normalisation 'reference' needs the keys train_trial_index and "
                                        "test_trial_index (chronological trial numbers): rerun preprocess-bold5000")
    numbers = np.concatenate([subj.train_trial_number, subj.test_trial_number])
    if not np.array_equal(np.sort(numbers), np.arange(numbers.size)):
        raise InputDataError(subj.path, "train_trial_index and test_trial_index do not number the trials "
                                        "0..n-1 once each")
    every = np.empty((numbers.size, subj.n_voxels), dtype=np.result_type(subj.train_fmri, subj.test_fmri_trials))
    every[subj.train_trial_number] = subj.train_fmri
    every[subj.test_trial_number] = subj.test_fmri_trials
    return every


def reference_bold5000_rows(subj: Bold5000SubjectData, split: str, include_nonavg_test: bool = False,
                            patch_size: int = PATCH_SIZE) -> tuple[np.ndarray, np.ndarray, ScalarNorm]:
    """One subject as MinD-Vis's `create_BOLD5000_dataset` builds it: (rows, image index, statistics).

    All trials (chronological) padded and z-scored together in their own dtype;
    training rows in presentation order; a test image's row is the mean of its
    normalised trials (in trial order); single trials grouped image by image.
    """
    padded = wrap_pad(_chronological_trials(subj), patch_size)
    mean, std = np.mean(padded), np.std(padded)
    if not std > 0:
        raise InputDataError(subj.path, "the fMRI is constant; it cannot be normalised")
    every = reference_normalize(padded, mean, std)
    norm = stats_of(mean, std)
    if split == "train":
        order = np.argsort(subj.train_trial_number, kind="stable")
        return every[subj.train_trial_number[order]], subj.train_image_index[order], norm
    n_test = subj.test_fmri.shape[0]
    groups = [np.sort(subj.test_trial_number[subj.test_trial_owner == k]) for k in range(n_test)]
    empty = [k for k, g in enumerate(groups) if g.size == 0]
    if empty:
        raise InputDataError(subj.path, f"test image(s) {empty[:5]} have no trial in arr_1")
    trials = np.concatenate(groups)
    owners = np.repeat(np.arange(n_test, dtype=np.int64), [g.size for g in groups])
    if split == "test_trials":
        return every[trials], owners, norm
    rows, index = np.stack([every[g].mean(axis=0) for g in groups]), np.arange(n_test, dtype=np.int64)
    if include_nonavg_test:
        rows, index = np.concatenate([rows, every[trials]]), np.concatenate([index, owners])
    return rows, index, norm


class Bold5000FmriDataset(SubjectFmriDataset):
    """BOLD5000 fMRI (and images) for MinD-Vis: items {"fmri": (1, L) float32 tensor, "image_index",
    "subject"[, "image"]}.

    Splits: "train" (arr_0, one row per trial), "test" (arr_2, one row per test image, averaged
    over its presentations), "test_trials" (arr_1, every test presentation). Attributes: `norms`
    (per subject, the ScalarNorm applied to this split's rows), `norm` (the same with one
    subject, else None), `padded_length` (L), `num_voxels` (= L, the reference's name),
    `subjects` (Bold5000SubjectData per npz), `normalisation`.
    """

    name = "Bold5000FmriDataset"

    def __init__(
        self,
        npz_paths: str | os.PathLike | Sequence[str | os.PathLike],
        split: str = "train",
        roi: str | None = None,
        patch_size: int = PATCH_SIZE,
        padded_length: int | None = None,
        with_images: bool = True,
        image_transform: Callable[[np.ndarray], Any] | None = None,
        normalisation: str = "clean",
        include_nonavg_test: bool = False,
    ):
        paths = self._begin(npz_paths, split, include_nonavg_test, image_transform, normalisation,
                            RENAMED_NORMALISATIONS)
        self.subjects = [load_bold5000_npz(p, with_images=with_images).select_roi(roi) for p in paths]
        self._join_subjects(patch_size, padded_length)
        self._images = None
        if with_images:
            self._images = [s.train_images if split == "train" else s.test_images for s in self.subjects]
        log.info(
            "BOLD5000 %s: %d samples from %d subject(s), %d voxels padded to %d (%s normalisation)",
            split, len(self), len(self.subjects), max(s.n_voxels for s in self.subjects), self.padded_length,
            self.normalisation,
        )

    def _rows_of(self, subj: Bold5000SubjectData, patch_size: int) -> tuple[np.ndarray, np.ndarray, ScalarNorm]:
        if self.normalisation == "reference":
            return reference_bold5000_rows(subj, self.split, self.include_nonavg_test, patch_size)
        x, idx = self._split_of(subj)
        rows, norm = clean_rows(subj.train_fmri, x, patch_size)
        return rows, idx, norm

    def _check_blocks(self, blocks: list[np.ndarray]) -> None:
        widths = sorted({b.shape[1] for b in blocks})
        if self.normalisation == "reference" and len(widths) > 1:
            raise ConfigError(f"Bold5000FmriDataset: subjects of {widths} padded voxels: the reference joins "
                              "BOLD5000 subjects without padding them to one length, so it cannot join these")

    def _image(self, i: int) -> np.ndarray | None:
        return None if self._images is None else self._images[self.subject_index[i]][self.image_index[i]]
