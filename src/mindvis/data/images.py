"""Stimulus images and their class labels, as the stage B steps read them.

    read_images    (n, H, W, 3) uint8 from images_256.npz (or stimuli.npz), checked
    resize_images  to the model's square size once (antialiased bilinear), as (n, 3, S, S) uint8
    to_hwc         (n, 3, S, S) tensor -> (n, S, S, 3) array
    read_labels    a class index per image from stimuli.npz or GOD's label CSV
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mindvis.io.npz import open_npz
from mindvis.utils.errors import InputDataError


# -- stimulus images ------------------------------------------------------------------------------------------
def read_images(path: str | Path, key: str = "train_images") -> np.ndarray:
    """(n, H, W, 3) uint8 from images_256.npz (or stimuli.npz)."""
    path = Path(path)
    if not path.is_file():
        raise InputDataError(path, "images npz not found")
    with open_npz(path, "images npz") as npz:  # a damaged archive or member: a clean error naming the file
        if key not in npz.files:
            raise InputDataError(path, f"has no '{key}' (keys: {', '.join(npz.files)})")
        images = npz[key]
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8 or images.shape[0] == 0:
        raise InputDataError(path, f"{key} must be a non-empty (n, H, W, 3) uint8 array, got "
                                   f"{images.dtype} {images.shape}")
    return images


def resize_images(images: np.ndarray, size: int) -> torch.Tensor:
    """(n, H, W, 3) uint8 -> (n, 3, size, size) uint8, antialiased bilinear (done once, not per step)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    if x.shape[-1] == size and x.shape[-2] == size:
        return x.contiguous()
    out = []
    for start in range(0, x.shape[0], 64):
        chunk = F.interpolate(x[start:start + 64].float(), size=(size, size), mode="bilinear", antialias=True,
                              align_corners=False)
        out.append(chunk.round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out)


def to_hwc(images: torch.Tensor) -> np.ndarray:
    return images.permute(0, 2, 3, 1).cpu().numpy()


# -- labels -------------------------------------------------------------------------------------------
MAX_CLASSES = 100_000  # unnamed class labels must be below this (ImageNet-21k has 21,841 classes)


def read_labels(path: str | Path, n_images: int, split: str = "train") -> tuple[np.ndarray, list[str]]:
    """Class index per image, in the images npz's row order, and the class names.

    Either `stimuli.npz` from `make-stimuli` (keys `{split}_labels`, `class_names`; its rows are in
    imageID order, like images_256.npz), or a GOD label CSV (`imagenet_training_label.csv`: rows
    `<wnid>.<index>,<file name>` in images_256.npz order): the class is the WordNet id, numbered in
    sorted order.
    """
    path = Path(path)
    if not path.is_file():
        raise InputDataError(path, "labels file not found")
    if path.suffix == ".npz":
        with open_npz(path, "labels npz") as npz:
            key = f"{split}_labels"
            if key not in npz.files:
                raise InputDataError(path, f"has no '{key}' (keys: {', '.join(npz.files)})")
            labels = npz[key]
            if labels.dtype.kind not in "iu" or labels.ndim != 1:
                raise InputDataError(path, f"{key} must be 1-D integers, got {labels.dtype} {labels.shape}")
            labels = labels.astype(np.int64)
            names = npz["class_names"] if "class_names" in npz.files else np.array([], dtype=str)
            if names.ndim != 1:
                raise InputDataError(path, f"class_names must be 1-D, got shape {names.shape}")
            names = [str(n) for n in names]
    else:
        wnids = []
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise InputDataError(path, f"not a text CSV file ({exc.reason} at byte {exc.start})") from None
        for line_no, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            first = line.split(",")[0].strip()
            try:
                wnids.append(int(float(first)))
            except (ValueError, OverflowError):  # OverflowError: 'inf'
                raise InputDataError(path, f"line {line_no}: '{first}' is not a stimulus id") from None
        classes = sorted(set(wnids))
        lookup = {w: i for i, w in enumerate(classes)}
        labels = np.array([lookup[w] for w in wnids], dtype=np.int64)
        names = [f"n{w:08d}" for w in classes]
    if labels.ndim != 1 or labels.shape[0] != n_images:
        raise InputDataError(path, f"{labels.shape[0]} labels for {n_images} images: the files do not match")
    if labels.min() < 0:
        raise InputDataError(path, "negative class labels")
    # a class index past the named classes (or, unnamed, past MAX_CLASSES) would size the class
    # embedding and the names list: a stray huge value must not allocate gigabytes
    limit = len(names) if names else MAX_CLASSES
    if labels.max() >= limit:
        raise InputDataError(path, f"class label {int(labels.max())} but only {limit} "
                                   f"{'class_names' if names else 'classes allowed (MAX_CLASSES)'}")
    n_classes = max(int(labels.max()) + 1, len(names))
    return labels, names or [str(i) for i in range(n_classes)]
