"""NSD inputs for the models: `data/NSD/npz/subjNN.npz` from `preprocess-nsd`.

The npz has the BOLD5000 npz layout (arr_0 train rows, arr_1 test trials, arr_2 test averaged
per image, arr_3 train image index, test_trial_image_index, train_images / test_images, ROI
masks listed in roi_order), so `mindvis.data.bold5000`'s reader and Dataset serve it; this
module adds only what NSD has beyond it: the 0-based 73k id and the repeat count of every
image, and the test images at 425 px for the pixel metrics (keys: mindvis.preprocess.nsd).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mindvis.data.bold5000 import Bold5000FmriDataset, Bold5000SubjectData, load_bold5000_npz
from mindvis.io.npz import open_npz
from mindvis.utils.errors import InputDataError

ID_KEYS = ("train_nsd_id", "test_nsd_id", "train_repeats", "test_repeats")


@dataclass(frozen=True)
class NsdImageInfo:
    train_nsd_id: np.ndarray  # (n_train_images,) 0-based 73k id of each train_images row
    test_nsd_id: np.ndarray  # (n_test,) the same for test_images / arr_2 rows
    train_repeats: np.ndarray  # (n_train_images,) trials per training image
    test_repeats: np.ndarray  # (n_test,) trials averaged into each arr_2 row
    zscore: str  # "session", "session_train" (MindEye2) or "train" (Brain-Diffuser)
    train_average: bool


def read_nsd_info(path: str | os.PathLike, subject: Bold5000SubjectData | None = None) -> NsdImageInfo:
    """The NSD-only keys of a subject npz, checked against its arrays."""
    path = Path(path)
    with open_npz(path, "NSD subject npz") as data:
        missing = [k for k in ID_KEYS if k not in data.files]
        if missing:
            raise InputDataError(path, f"missing {', '.join(missing)} (not an NSD npz from preprocess-nsd?)")
        arrays = {k: data[k] for k in ID_KEYS}
        zscore = str(data["zscore"]) if "zscore" in data.files else "unknown"
        average = bool(data["train_average"]) if "train_average" in data.files else False
    for key, arr in arrays.items():
        if arr.ndim != 1 or arr.dtype.kind not in "iu":
            raise InputDataError(path, f"{key} must be a 1-D integer array, got {arr.dtype} {arr.shape}")
    info = NsdImageInfo(*(arrays[k].astype(np.int64) for k in ID_KEYS), zscore=zscore, train_average=average)
    if info.train_nsd_id.shape != info.train_repeats.shape or info.test_nsd_id.shape != info.test_repeats.shape:
        raise InputDataError(path, "the 73k ids and repeat counts disagree in length")
    if subject is not None:
        n_train = int(subject.train_image_index.max()) + 1 if subject.train_image_index.size else 0
        if info.test_nsd_id.size != subject.test_fmri.shape[0] or info.train_nsd_id.size < n_train:
            raise InputDataError(path, f"{info.test_nsd_id.size} test / {info.train_nsd_id.size} train ids for "
                                       f"{subject.test_fmri.shape[0]} arr_2 rows / {n_train} training images")
        if int(info.test_repeats.sum()) != subject.test_fmri_trials.shape[0]:
            raise InputDataError(path, f"test_repeats sum to {int(info.test_repeats.sum())}, arr_1 has "
                                       f"{subject.test_fmri_trials.shape[0]} rows")
    return info


def load_nsd_npz(path: str | os.PathLike, with_images: bool = True) -> tuple[Bold5000SubjectData, NsdImageInfo]:
    """One NSD subject: the BOLD5000-layout arrays and the NSD image information."""
    subject = load_bold5000_npz(path, with_images=with_images)
    return subject, read_nsd_info(path, subject)


def read_pixel_images(path: str | os.PathLike) -> np.ndarray:
    """test_images_pixel: (n_test, P, P, 3) uint8 test images at the pixel metrics' size (425)."""
    path = Path(path)
    with open_npz(path, "NSD subject npz") as data:
        images = data["test_images_pixel"]
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise InputDataError(path, f"test_images_pixel must be (n, P, P, 3) uint8, got {images.dtype} {images.shape}")
    return images


class NsdFmriDataset(Bold5000FmriDataset):
    """`Bold5000FmriDataset` on NSD npz files (same splits, ROI selection and normalisations), with
    `nsd_info` (NsdImageInfo per subject) checked at load. roi None keeps every voxel of the npz
    (nsdgeneral by default); otherwise any key of the npz's roi_order (e.g. "V1v")."""

    def __init__(self, npz_paths, *args, **kwargs):
        super().__init__(npz_paths, *args, **kwargs)
        self.nsd_info = [read_nsd_info(s.path, s) for s in self.subjects]
