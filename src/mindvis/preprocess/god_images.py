"""GOD stimulus images -> MinD-Vis's `images_256.npz` and its two label CSVs.

Outputs (in `out_dir`, names fixed by MinD-Vis's loader):
  images_256.npz  train_images (n_train, S, S, 3) uint8 in imageID_training
                  order, test_images (n_test, S, S, 3) uint8 in imageID_test
                  order; RGB, S = config `size` (256 for MinD-Vis)
  imagenet_training_label.csv / imagenet_testing_label.csv
                  rows `1518878.014910,n01518878_14910.JPEG` (no quotes, no
                  header) in npz row order

Images are looked up by the file name in the list, first in `training/`
(or `train/`) resp. `test/` under the image folder, then in the folder
itself; an exact name wins, else a case-insensitive match (`.JPEG` vs
`.jpeg`). Grey, palette, CMYK and RGBA images are converted to RGB.
Resizing is bicubic (PIL); `crop: none` squashes the whole picture to
S x S, `crop: center` first cuts the central square.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from mindvis.io.images import CROPS, read_image
from mindvis.preprocess.stimulus_ids import ImageList, key_to_id_text, read_image_list
from mindvis.utils.atomic import save_npz, write_text
from mindvis.utils.errors import ConfigError, InputDataError

log = logging.getLogger(__name__)

IMAGES_NPZ = "images_256.npz"  # MinD-Vis's loader opens this name whatever the size
TRAIN_LABEL_CSV = "imagenet_training_label.csv"
TEST_LABEL_CSV = "imagenet_testing_label.csv"


@dataclass
class GodImagesConfig:
    """`god: images:` section."""

    # Side length S of the square output images (MinD-Vis: 256).
    size: int = 256
    # "none": resize the whole image to S x S (aspect ratio not kept); "center": central square crop first.
    crop: str = "none"


def check_config(cfg: GodImagesConfig) -> None:
    if int(cfg.size) < 1:
        raise ConfigError(f"god images: size must be a positive number of pixels, got {cfg.size}")
    if cfg.crop not in CROPS:
        raise ConfigError(f"god images: crop must be one of {CROPS}, got '{cfg.crop}'")


class _Folder:
    """One image folder, with a lazily built case-insensitive index of its files."""

    def __init__(self, path: Path):
        self.path = path
        self._lower: dict[str, Path] | None = None

    def find(self, name: str) -> Path | None:
        exact = self.path / name
        if exact.is_file():
            return exact
        if self._lower is None:
            self._lower = {p.name.lower(): p for p in self.path.iterdir() if p.is_file()}
        return self._lower.get(Path(name).name.lower())


def _folders(image_dir: Path, split: str) -> list[_Folder]:
    subdirs = ("training", "train") if split == "train" else ("test",)
    candidates = [image_dir / s for s in subdirs] + [image_dir]
    return [_Folder(p) for p in candidates if p.is_dir()]


def locate_images(images: ImageList, image_dir: Path, split: str) -> list[Path]:
    """The file of every listed image; a missing one is an `InputDataError` naming it."""
    if not image_dir.is_dir():
        raise InputDataError(image_dir, "image folder not found")
    folders = _folders(image_dir, split)
    found: list[Path] = []
    missing: list[int] = []
    for i, name in enumerate(images.filenames):
        path = next((p for f in folders if (p := f.find(name)) is not None), None)
        if path is None:
            missing.append(i)
        else:
            found.append(path)
    if missing:
        first = missing[0]
        more = f" (and {len(missing) - 1} more listed images are missing)" if len(missing) > 1 else ""
        raise InputDataError(
            folders[0].path / images.filenames[first],
            f"image listed in {images.path} line {images.line_numbers[first]} not found in "
            f"{', '.join(str(f.path) for f in folders)}{more}",
        )
    return found


def _stack(paths: list[Path], cfg: GodImagesConfig, what: str) -> tuple[np.ndarray, int]:
    out = np.empty((len(paths), cfg.size, cfg.size, 3), dtype=np.uint8)
    n_converted = 0
    for i, path in enumerate(tqdm(paths, desc=f"{what} images", unit="img", disable=None)):
        out[i], converted = read_image(path, cfg.size, cfg.crop)
        n_converted += int(converted)
    return out, n_converted


def label_csv_text(images: ImageList) -> str:
    """MinD-Vis's label CSV: `1518878.014910,n01518878_14910.JPEG`, one row per image."""
    return "".join(f"{key_to_id_text(k)},{Path(name).name}\n" for k, name in zip(images.keys, images.filenames))


def preprocess_god_images(
    train_list_path: str | os.PathLike,
    test_list_path: str | os.PathLike,
    image_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    cfg: GodImagesConfig | None = None,
    images_name: str = IMAGES_NPZ,
) -> dict[str, Any]:
    """Write images_256.npz and the two label CSVs atomically; return a summary."""
    start = time.perf_counter()
    cfg = cfg or GodImagesConfig()
    check_config(cfg)
    image_dir, out_dir = Path(image_dir), Path(out_dir)
    train_list = read_image_list(train_list_path)
    test_list = read_image_list(test_list_path)
    overlap = np.intersect1d(train_list.keys, test_list.keys)
    if overlap.size:
        raise InputDataError(
            test_list.path,
            f"{overlap.size} test image(s) also appear in {train_list.path}, e.g. {key_to_id_text(overlap[0])}",
        )
    # Locate everything before decoding anything: a missing file fails in seconds.
    train_paths = locate_images(train_list, image_dir, "train")
    test_paths = locate_images(test_list, image_dir, "test")
    train_images, train_conv = _stack(train_paths, cfg, "training")
    test_images, test_conv = _stack(test_paths, cfg, "test")

    save_npz(out_dir / images_name, train_images=train_images, test_images=test_images)
    write_text(out_dir / TRAIN_LABEL_CSV, label_csv_text(train_list))
    write_text(out_dir / TEST_LABEL_CSV, label_csv_text(test_list))
    summary = {
        "n_train_images": len(train_list),
        "n_test_images": len(test_list),
        "size": int(cfg.size),
        "crop": cfg.crop,
        "converted_to_rgb": train_conv + test_conv,
        "seconds": round(time.perf_counter() - start, 3),
    }
    log.info(
        "GOD images: %d training + %d test images at %dx%d (%d converted to RGB) -> %s",
        summary["n_train_images"], summary["n_test_images"], cfg.size, cfg.size,
        summary["converted_to_rgb"], out_dir / images_name,
    )
    return summary


def montage(images: np.ndarray, limit: int = 8) -> np.ndarray:
    """The first `limit` images side by side (for a quick look in MLflow)."""
    return np.concatenate(list(images[:limit]), axis=1)
