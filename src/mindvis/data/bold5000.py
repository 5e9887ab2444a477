"""BOLD5000 inputs for the models: the per-subject npz and a torch Dataset with MinD-Vis conventions.

`load_bold5000_npz` reads `npz/CSI{n}.npz` written by `preprocess-bold5000` (key
list in `mindvis.preprocess.bold5000`) into the field names of the GOD reader
where a meaning is shared (train_fmri = arr_0, test_fmri_trials = arr_1,
test_fmri = arr_2, train_image_index = arr_3, roi_masks).

`load_roi_arrays` concatenates MinD-Vis's per-ROI `.npy` files the way its own
BOLD5000 loader does (EarlyVis, LOC, OPA, PPA, RSC; LH before RH), so a folder
made by someone else can be read the same way.

`Bold5000FmriDataset` mirrors the GOD dataset: each subject's matrix is
wrap-padded to a multiple of 16 voxels (then to the longest subject), and
z-scored with ONE scalar mean/std. By default the statistics come from the
training trials only (`normalisation="train"`); `"subject_all"` reproduces the
reference code, which z-scores each subject over all its trials, test included.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from mindvis.data.conventions import PATCH_SIZE, ScalarNorm, pad_to_length, wrap_pad
from mindvis.utils.errors import InputDataError

ROIS = ("EarlyVis", "LOC", "OPA", "PPA", "RSC")
HEMISPHERES = ("LH", "RH")
ROI_ARRAY_NAME = "CSI{subject}_GLMbetas-TYPED-FITHRF-GLMDENOISE-RR_allses_{label}.npy"
NORMALISATIONS = ("train", "subject_all")


@dataclass
class Bold5000SubjectData:
    subject: str
    train_fmri: np.ndarray  # (n_train, V) float32, arr_0
    test_fmri_trials: np.ndarray  # (n_test_trials, V), arr_1, grouped image by image
    test_fmri: np.ndarray  # (n_test, V) averaged, arr_2
    train_image_index: np.ndarray  # (n_train,) int64, arr_3
    test_trial_image_index: np.ndarray  # (n_test_trials,) row of test_fmri each arr_1 row belongs to
    roi_masks: dict[str, np.ndarray]  # EarlyVis.., LHEarlyVis.. -> bool (V,)
    roi_order: list[str] = field(default_factory=list)
    train_images: np.ndarray | None = None  # (n_train_images, S, S, 3) uint8
    test_images: np.ndarray | None = None  # (n_test, S, S, 3) uint8
    train_image_names: list[str] = field(default_factory=list)
    test_image_names: list[str] = field(default_factory=list)
    test_labels: np.ndarray | None = None  # BOLD5000 has no class labels (kept for GOD symmetry)

    @property
    def n_voxels(self) -> int:
        return int(self.train_fmri.shape[1])


def _require(data, path: Path, key: str) -> np.ndarray:
    if key not in data.files:
        raise InputDataError(path, f"missing key '{key}' (not a BOLD5000 npz from preprocess-bold5000?)")
    return data[key]


def load_bold5000_npz(path: str | Path, with_images: bool = True) -> Bold5000SubjectData:
    """Read one subject's npz, checking that every array agrees on V and on the row counts."""
    path = Path(path)
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputDataError(path, f"not a readable npz ({exc})") from None
    with data:
        train = _require(data, path, "arr_0").astype(np.float32, copy=False)
        trials = _require(data, path, "arr_1").astype(np.float32, copy=False)
        test = _require(data, path, "arr_2").astype(np.float32, copy=False)
        index = _require(data, path, "arr_3").astype(np.int64)
        owner = _require(data, path, "test_trial_image_index").astype(np.int64)
        v = train.shape[1] if train.ndim == 2 else -1
        for key, arr in (("arr_1", trials), ("arr_2", test)):
            if arr.ndim != 2 or arr.shape[1] != v:
                raise InputDataError(path, f"{key} has shape {arr.shape}, expected (n, {v}) like arr_0")
        if index.shape != (train.shape[0],):
            raise InputDataError(path, f"arr_3 has shape {index.shape}, expected ({train.shape[0]},)")
        if owner.shape != (trials.shape[0],) or (owner.size and owner.max() >= test.shape[0]):
            raise InputDataError(path, "test_trial_image_index does not match arr_1/arr_2")
        roi_order = [str(x) for x in data["roi_order"]] if "roi_order" in data.files else []
        mask_keys = [k for k in (*ROIS, *(h + r for r in ROIS for h in HEMISPHERES)) if k in data.files]
        masks = {}
        for key in mask_keys:
            m = data[key]
            if m.shape != (v,) or m.dtype != bool:
                raise InputDataError(path, f"ROI mask '{key}' has shape {m.shape} dtype {m.dtype}, expected bool ({v},)")
            masks[key] = m
        out = Bold5000SubjectData(
            subject=str(data["subject"]) if "subject" in data.files else path.stem,
            train_fmri=train,
            test_fmri_trials=trials,
            test_fmri=test,
            train_image_index=index,
            test_trial_image_index=owner,
            roi_masks=masks,
            roi_order=roi_order,
            train_image_names=[str(x) for x in data["train_image_names"]] if "train_image_names" in data.files else [],
            test_image_names=[str(x) for x in data["test_image_names"]] if "test_image_names" in data.files else [],
        )
        if with_images:
            out.train_images = _require(data, path, "train_images")
            out.test_images = _require(data, path, "test_images")
            if index.size and index.max() >= len(out.train_images):
                raise InputDataError(path, f"arr_3 points past the {len(out.train_images)} train_images")
            if len(out.test_images) != test.shape[0]:
                raise InputDataError(path, f"{len(out.test_images)} test_images for {test.shape[0]} arr_2 rows")
    return out


def load_roi_arrays(
    py_dir: str | Path, subject: int, rois: Sequence[str] = ROIS, hemispheres: Sequence[str] = HEMISPHERES
) -> tuple[np.ndarray, list[str]]:
    """(trials, V) from the per-ROI .npy files in MinD-Vis's order, and the labels used."""
    py_dir = Path(py_dir)
    labels = [f"{h}{r}" for r in rois for h in hemispheres]
    arrays = []
    for label in labels:
        path = py_dir / ROI_ARRAY_NAME.format(subject=subject, label=label)
        if not path.is_file():
            raise InputDataError(path, "per-ROI betas file not found")
        arr = np.load(path, allow_pickle=False)
        if arr.ndim != 2 or (arrays and arr.shape[0] != arrays[0].shape[0]):
            raise InputDataError(path, f"shape {arr.shape} disagrees with the other ROI files (trials, voxels)")
        arrays.append(arr)
    return np.concatenate(arrays, axis=1), labels


class Bold5000FmriDataset(Dataset):
    """torch Dataset over one or more subjects' npz files (MinD-Vis conventions).

    Items: {"fmri": float32 (1, V_padded), "image_index": int, "subject": int, "image": uint8 (S, S, 3)
    when `with_images`}. Train rows are arr_0 (one per trial); test rows are arr_2 (one per image,
    averaged over its presentations). `norm` passes statistics fitted elsewhere (e.g. the training
    split's `.norm`) and overrides `normalisation`.
    """

    def __init__(
        self,
        npz_paths: str | Path | Sequence[str | Path],
        split: str = "train",
        with_images: bool = True,
        norm: ScalarNorm | None = None,
        normalisation: str = "train",
        patch_size: int = PATCH_SIZE,
        length: int | None = None,
    ):
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if normalisation not in NORMALISATIONS:
            raise ValueError(f"normalisation must be one of {NORMALISATIONS}, got {normalisation!r}")
        paths = [npz_paths] if isinstance(npz_paths, (str, Path)) else list(npz_paths)
        if not paths:
            raise ValueError("no npz files given")
        self.split = split
        self.subjects = [load_bold5000_npz(p, with_images=with_images) for p in paths]
        padded_train = [wrap_pad(s.train_fmri, patch_size) for s in self.subjects]
        # Longest padded subject (or a checkpoint's length): every subject is wrap-padded to it.
        self.n_voxels = int(length or max(m.shape[1] for m in padded_train))

        rows, images, indices, owners, norms = [], [], [], [], []
        for k, subj in enumerate(self.subjects):
            if split == "train":
                x, idx, pool = subj.train_fmri, subj.train_image_index, subj.train_images
            else:
                x, idx, pool = subj.test_fmri, np.arange(len(subj.test_fmri)), subj.test_images
            if norm is None and normalisation == "subject_all":
                # The reference: each subject z-scored over every trial it has (train and test trials).
                everything = np.concatenate([subj.train_fmri, subj.test_fmri_trials], axis=0)
                norms.append(ScalarNorm.fit(pad_to_length(wrap_pad(everything, patch_size), self.n_voxels)))
            rows.append(pad_to_length(wrap_pad(x, patch_size), self.n_voxels))
            indices.append(np.asarray(idx, dtype=np.int64))
            owners.append(np.full(len(x), k, dtype=np.int64))
            images.append(pool)
        if norm is not None:
            self.norm: ScalarNorm | list[ScalarNorm] = norm
            fmri = [norm.apply(r) for r in rows]
        elif normalisation == "subject_all":
            self.norm = norms
            fmri = [n.apply(r) for n, r in zip(norms, rows)]
        else:
            train_rows = np.concatenate([pad_to_length(m, self.n_voxels) for m in padded_train], axis=0)
            self.norm = ScalarNorm.fit(train_rows)
            fmri = [self.norm.apply(r) for r in rows]
        self.fmri = np.concatenate(fmri, axis=0).astype(np.float32)
        self.image_index = np.concatenate(indices)
        self.subject_index = np.concatenate(owners)
        self._images = images if with_images else None

    def __len__(self) -> int:
        return int(self.fmri.shape[0])

    def __getitem__(self, i: int) -> dict:
        item = {
            "fmri": self.fmri[i][None, :],
            "image_index": int(self.image_index[i]),
            "subject": int(self.subject_index[i]),
        }
        if self._images is not None:
            item["image"] = self._images[self.subject_index[i]][self.image_index[i]]
        return item
