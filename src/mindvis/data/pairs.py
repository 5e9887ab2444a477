"""One subject's (fMRI, image) pairs, fitted to a stage B model: what training, generation and
the controls all read.

`load_pairs` takes the subject's npz through its dataset class (GOD, BOLD5000 or NSD: MinD-Vis's
conventions, the ROI, the normalisation), fits the rows to the model's voxel count
(`fit_voxels`) and the images to its size (`resize_images`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mindvis.data.bold5000 import Bold5000FmriDataset
from mindvis.data.conventions import fit_voxels
from mindvis.data.god import GodFmriDataset
from mindvis.data.images import resize_images, to_hwc
from mindvis.data.nsd import NsdFmriDataset
from mindvis.utils.errors import ConfigError

log = logging.getLogger(__name__)

DATASETS = ("god", "bold5000", "nsd")


@dataclass
class Pairs:
    fmri: np.ndarray  # (n, num_voxels) float32, normalised and fitted to the model
    images: torch.Tensor  # (n, 3, S, S) uint8, one per row of fmri
    image_index: np.ndarray  # (n,) row of the split's image array
    labels: np.ndarray | None  # (n,) class labels when the data carry them (GOD test: arr_4)
    raw_voxels: int
    norm_mean: float
    norm_std: float

    def images_hwc(self) -> np.ndarray:
        return to_hwc(self.images)


def load_pairs(npz: str | Path, images: str | Path | None, dataset: str, split: str, num_voxels: int,
               image_size: int, roi: str | None = None, normalisation: str = "clean") -> Pairs:
    """One subject's fMRI rows (MinD-Vis conventions) with their images, fitted to the model's sizes.

    roi None: the dataset's default (GOD: VC, as MinD-Vis; BOLD5000: all five ROIs; NSD: every voxel of the npz).
    normalisation: "clean" (per-subject training statistics) or "reference" (MinD-Vis's own
    steps, bit for bit: what its released checkpoints saw; docs/reference.md sections 2-3).
    """
    ds, pictures = _split_with_pictures(npz, images, dataset, split, roi, normalisation)
    labels = ds.subjects[0].test_labels if dataset == "god" and split == "test" else None
    if labels is not None:
        labels = np.asarray(labels)
        if labels.ndim != 1 or labels.shape[0] != len(ds):
            labels = None  # a label array that does not describe these rows is not used
    raw = max(s.n_voxels for s in ds.subjects)
    if ds.fmri.shape[1] > num_voxels:
        log.warning("%s: %d voxels after padding but the encoder takes %d: the last %d are cut", npz,
                    ds.fmri.shape[1], num_voxels, ds.fmri.shape[1] - num_voxels)
    fmri = np.ascontiguousarray(fit_voxels(ds.fmri, num_voxels), dtype=np.float32)
    norm = ds.norms[0]  # one subject
    return Pairs(fmri=fmri, images=resize_images(pictures, image_size), image_index=np.asarray(ds.image_index),
                 labels=labels, raw_voxels=int(raw), norm_mean=float(norm.mean), norm_std=float(norm.std))


def split_images(npz: str | Path, images: str | Path | None, dataset: str, split: str,
                 image_size: int) -> np.ndarray:
    """The split's image of every fMRI row, resized as `load_pairs` resizes them: (n, S, S, 3) uint8."""
    _, pictures = _split_with_pictures(npz, images, dataset, split, None, "clean")
    return to_hwc(resize_images(pictures, image_size))


def _split_with_pictures(npz, images, dataset: str, split: str, roi: str | None, normalisation: str):
    """The subject's dataset for one split and the picture of each of its rows (native size)."""
    if dataset == "god":
        if images is None:
            raise ConfigError("GOD needs --images (images_256.npz)")
        ds = GodFmriDataset(npz, images_npz=images, split=split, roi=roi or "VC", normalisation=normalisation)
        return ds, ds.images[ds.image_index]
    if dataset in ("bold5000", "nsd"):  # NSD's npz has the BOLD5000 layout
        dataset_class = NsdFmriDataset if dataset == "nsd" else Bold5000FmriDataset
        ds = dataset_class(npz, split=split, roi=roi, with_images=True, normalisation=normalisation)
        return ds, np.stack([ds[i]["image"].numpy() for i in range(len(ds))])
    raise ConfigError(f"dataset must be one of {DATASETS}, got {dataset!r}")
