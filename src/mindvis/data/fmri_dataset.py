"""What the GOD and BOLD5000 fMRI datasets share: the splits, ROI masks and the Dataset plumbing.

Both releases reach us as one npz per subject in MinD-Vis's layout (arr_0 training trials,
arr_1 test trials, arr_2 test averages, arr_3 training image rows, docs/reference.md §3), so
choosing a split, cutting voxels to an ROI, joining subjects into one padded matrix and
serving items are the same steps; each dataset module keeps only how it reads its file,
normalises its rows and finds its images.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from mindvis.data.conventions import ScalarNorm
from mindvis.data.normalisation import check_normalisation, join_blocks
from mindvis.utils.errors import ConfigError, InputDataError

SPLITS = ("train", "test", "test_trials")


def pick_roi_mask(masks: dict[str, np.ndarray], roi: str, path: Path | None) -> np.ndarray:
    """The bool (V,) mask named `roi`; an error naming the file when there is none or it selects nothing."""
    if roi not in masks:
        raise InputDataError(path, f"no ROI mask '{roi}' (masks present: {', '.join(masks) or 'none'})")
    if not masks[roi].any():
        raise InputDataError(path, f"ROI mask '{roi}' selects no voxels")
    return masks[roi]


def cut_voxels(subject: Any, mask: np.ndarray, **changes: Any) -> Any:
    """A copy of a subject's data holding only the voxels of `mask` (its fMRI and ROI masks cut alike)."""
    return replace(
        subject,
        train_fmri=subject.train_fmri[:, mask],
        test_fmri_trials=subject.test_fmri_trials[:, mask],
        test_fmri=subject.test_fmri[:, mask],
        roi_masks={k: m[mask] for k, m in subject.roi_masks.items()},
        **changes,
    )


class SubjectFmriDataset(Dataset):
    """Subjects' rows of one split joined into `fmri` (n, L); items {"fmri": (1, L) float32 tensor,
    "image_index", "subject"[, "image"]}.

    A dataset sets `name`, reads `subjects`, and gives `_rows_of` (a subject's normalised rows
    of the split, their image rows and the norm applied) and `_image` (item i's image or None).
    """

    name = "SubjectFmriDataset"
    subjects: list[Any]

    def _begin(self, npz_paths: str | os.PathLike | Sequence[str | os.PathLike], split: str,
               include_nonavg_test: bool, image_transform: Callable[[np.ndarray], Any] | None,
               normalisation: str, renamed: dict[str, str] | None = None) -> list:
        """Check the request (in this order: split, include_nonavg_test, normalisation, paths); the npz paths."""
        if split not in SPLITS:
            raise ConfigError(f"{self.name}: split must be one of {SPLITS}, got '{split}'")
        if include_nonavg_test and split == "test_trials":
            raise ConfigError(f"{self.name}: include_nonavg_test appends arr_1 to split 'test'; "
                              "split 'test_trials' already is arr_1")
        self.normalisation = check_normalisation(normalisation, self.name, renamed)
        paths = [npz_paths] if isinstance(npz_paths, (str, os.PathLike)) else list(npz_paths)
        if not paths:
            raise ConfigError(f"{self.name}: no subject npz given")
        self.split = split
        self.include_nonavg_test = include_nonavg_test
        self.image_transform = image_transform
        return paths

    def _rows_of(self, subj: Any, patch_size: int) -> tuple[np.ndarray, np.ndarray, ScalarNorm]:
        raise NotImplementedError

    def _check_blocks(self, blocks: list[np.ndarray]) -> None:
        """A dataset's last word on the subjects' blocks before they are joined (default: none)."""

    def _join_subjects(self, patch_size: int, padded_length: int | None) -> list[np.ndarray]:
        """Every subject's rows joined into `fmri`, with `norms`, `image_index`, `subject_index`; the blocks."""
        blocks, self.norms, image_index, subject_index = [], [], [], []
        for s_i, subj in enumerate(self.subjects):
            rows, idx, norm = self._rows_of(subj, patch_size)
            blocks.append(rows)
            self.norms.append(norm)
            image_index.append(idx)
            subject_index.append(np.full(idx.size, s_i, dtype=np.int64))
        self._check_blocks(blocks)
        self.fmri = join_blocks(blocks, padded_length, self.name)  # (n, L) float32
        self.padded_length = int(self.fmri.shape[1])
        self.num_voxels = self.padded_length  # the reference's name
        self.norm: ScalarNorm | None = self.norms[0] if len(self.norms) == 1 else None
        self.image_index = np.concatenate(image_index)
        self.subject_index = np.concatenate(subject_index)
        return blocks

    def _split_of(self, subj: Any) -> tuple[np.ndarray, np.ndarray]:
        """(rows, image of each row) of the split, as stored (before normalisation)."""
        if self.split == "train":
            return subj.train_fmri, subj.train_image_index
        if self.split == "test":
            rows, idx = subj.test_fmri, np.arange(subj.test_fmri.shape[0], dtype=np.int64)
            if self.include_nonavg_test:  # the reference appends the single trials after the averages
                rows = np.concatenate([rows, subj.test_fmri_trials], axis=0)
                idx = np.concatenate([idx, subj.test_trial_image_index()])
            return rows, idx
        return subj.test_fmri_trials, subj.test_trial_image_index()

    def _image(self, i: int) -> np.ndarray | None:
        return None

    def __len__(self) -> int:
        return int(self.fmri.shape[0])

    def __getitem__(self, i: int) -> dict[str, Any]:
        item: dict[str, Any] = {
            "fmri": torch.from_numpy(self.fmri[i][None, :].copy()),
            "image_index": int(self.image_index[i]),
            "subject": int(self.subject_index[i]),
        }
        image = self._image(i)
        if image is not None:
            item["image"] = self.image_transform(image) if self.image_transform else torch.from_numpy(image.copy())
        return item
