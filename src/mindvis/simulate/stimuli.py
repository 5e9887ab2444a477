"""The embedded stimulus set, laid out like GOD's stimulus release.

Default source: scikit-learn's handwritten digits (`load_digits`, 10 classes,
8x8, shipped inside the installed package, so no download). Each digit is
upsampled smoothly (bicubic) to `image_size` and coloured with a random
foreground and background colour (hue, saturation and brightness drawn per
image from a seeded RNG; about half the images are dark-on-light), so
low-level features vary between images of a class while the class stays
recognisable.

Alternative source (`source: folder`): `folder/<class name>/<image files>`,
each image centre-cropped to a square and resized. A class folder named like
a WordNet id (`n01443537`) keeps that id.

Split, GOD-style: `train_per_class` training images and `test_per_class`
held-out test images per class. NOTE: in GOD the 50 test categories are
disjoint from the 150 training categories (zero-shot); with 10 classes we keep
the classes shared and hold out different IMAGES, so that semantic decoding
of the test set is measurable.

Ids: class k gets the fake WordNet id number 9000000 + k ("n0900000k"; only
a label in the WordNet format, not meant to name a real synset). Image i of the source set (the
digit's row in `load_digits`, 1-based; for a folder, the file's position in
its sorted class folder, 1-based) is `n0900000k_i.JPEG` with stimulus id
`9000000 + k + i / 1e6` (e.g. 9000003.000042 <-> n09000003_42.JPEG, as GOD's
1518878.010042 <-> n01518878_10042.JPEG). Compare ids as round(id * 1e6).

Outputs in `out_dir`:
  images/training/<name>.JPEG, images/test/<name>.JPEG   (JPEG quality 95)
  imageID_training.csv, imageID_test.csv                  (no header, GOD rows)
  stimuli.npz: train_images, test_images uint8 (n, H, W, 3) (the exact pixels,
    before JPEG), train_labels, test_labels int64, train_ids, test_ids float64,
    class_names str, class_wnids int64. Rows are in CSV order (sorted by id).
"""

from __future__ import annotations

import colorsys
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from mindvis.io.images import read_image
from mindvis.utils.atomic import atomic_dir, save_npz, write_text
from mindvis.utils.errors import ConfigError, InputDataError

log = logging.getLogger(__name__)

FAKE_WNID_BASE = 9_000_000
ID_SCALE = 1_000_000
JPEG_QUALITY = 95
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
_WNID_RE = re.compile(r"^n(\d{8})$")


@dataclass
class StimuliConfig:
    source: str = "digits"  # "digits" (scikit-learn's load_digits) or "folder" (your own images)
    folder: str = ""  # with source: folder, a directory holding one sub-folder of images per class
    image_size: int = 64  # side of the square RGB images, pixels
    train_per_class: int = 20  # training images per class (GOD: 8 per category); 200 training pairs per
    #                            subject: stage B needs them (80 left it at chance)
    test_per_class: int = 5  # held-out test images per class (GOD: 1 per test category)
    seed: int = 0  # selects the images and their colours


@dataclass
class StimulusSet:
    train_images: np.ndarray  # (n_train, S, S, 3) uint8
    test_images: np.ndarray  # (n_test, S, S, 3) uint8
    train_labels: np.ndarray  # (n_train,) int64 class index
    test_labels: np.ndarray
    train_ids: np.ndarray  # (n_train,) float64 GOD-style stimulus ids
    test_ids: np.ndarray
    class_names: list[str]
    class_wnids: np.ndarray  # (n_classes,) int64 WordNet id numbers

    @property
    def n_classes(self) -> int:
        return len(self.class_names)


# ----------------------------------------------------------------------------- ids


def stimulus_id(wnid: int, index: int) -> float:
    return wnid + index / ID_SCALE


def id_key(stim_id: float | np.ndarray) -> np.ndarray:
    """Integer key round(id * 1e6): the only safe way to compare GOD stimulus ids."""
    return np.rint(np.asarray(stim_id, dtype=np.float64) * ID_SCALE).astype(np.int64)


def id_text(stim_id: float) -> str:
    key = int(id_key(stim_id))
    return f"{key // ID_SCALE}.{key % ID_SCALE:06d}"


def id_filename(stim_id: float) -> str:
    """ImageNet-style file name, index without zero padding as in GOD: n01518878_10042.JPEG."""
    key = int(id_key(stim_id))
    return f"n{key // ID_SCALE:08d}_{key % ID_SCALE}.JPEG"


def image_list_csv(ids: np.ndarray) -> str:
    """GOD's imageID_*.csv text: no header, `1518878.010042,"n01518878_10042.JPEG"`."""
    return "".join(f'{id_text(i)},"{id_filename(i)}"\n' for i in ids)


# ----------------------------------------------------------------------------- sources


def _smooth_upsample(masks: np.ndarray, size: int) -> np.ndarray:
    """Bicubic upsampling of (n, h, w) masks in [0, 1] to (n, size, size)."""
    from skimage.transform import resize

    out = np.stack([resize(m, (size, size), order=3, mode="edge", anti_aliasing=False) for m in masks])
    return np.clip(out, 0.0, 1.0)


def _random_colours(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(n, 3) foreground and background RGB in [0, 1]: distinct hues, and a brightness
    difference of random sign so luminance polarity varies between images."""
    fg_h = rng.uniform(0.0, 1.0, n)
    bg_h = (fg_h + rng.uniform(0.25, 0.75, n)) % 1.0
    fg_s, bg_s = rng.uniform(0.4, 1.0, n), rng.uniform(0.1, 0.7, n)
    bright, dark = rng.uniform(0.75, 1.0, n), rng.uniform(0.1, 0.4, n)
    light_on_dark = rng.random(n) < 0.5
    fg_v = np.where(light_on_dark, bright, dark)
    bg_v = np.where(light_on_dark, dark, bright)
    fg = np.array([colorsys.hsv_to_rgb(h, s, v) for h, s, v in zip(fg_h, fg_s, fg_v)])
    bg = np.array([colorsys.hsv_to_rgb(h, s, v) for h, s, v in zip(bg_h, bg_s, bg_v)])
    return fg, bg


def _split_indices(
    labels: np.ndarray, n_classes: int, cfg: StimuliConfig, rng: np.random.Generator, where: str
) -> tuple[np.ndarray, np.ndarray]:
    need = cfg.train_per_class + cfg.test_per_class
    train, test = [], []
    for k in range(n_classes):
        members = np.flatnonzero(labels == k)
        if members.size < need:
            raise InputDataError(
                where if cfg.source == "folder" else None,
                f"class {k} has {members.size} images, fewer than train_per_class + test_per_class = {need}",
            )
        chosen = rng.permutation(members)[:need]
        train.append(chosen[: cfg.train_per_class])
        test.append(chosen[cfg.train_per_class :])
    return np.concatenate(train), np.concatenate(test)


def _digits_set(cfg: StimuliConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """All chosen digit images (uint8), their labels, source indices (1-based), class names."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    masks_all = digits.images.astype(np.float64) / 16.0  # (1797, 8, 8) ink in [0, 1]
    labels_all = digits.target.astype(np.int64)
    train, test = _split_indices(labels_all, 10, cfg, rng, "load_digits")
    chosen = np.concatenate([train, test])
    # A one-cell margin keeps the digit off the image border (the border defines the background).
    masks = np.pad(masks_all[chosen], ((0, 0), (1, 1), (1, 1)))
    ink = _smooth_upsample(masks, cfg.image_size)[..., None]
    fg, bg = _random_colours(len(chosen), rng)
    images = bg[:, None, None, :] * (1.0 - ink) + fg[:, None, None, :] * ink
    images_u8 = np.clip(np.rint(images * 255.0), 0, 255).astype(np.uint8)
    return images_u8, labels_all[chosen], chosen + 1, [f"digit_{k}" for k in range(10)]


def _folder_set(cfg: StimuliConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    if not cfg.folder:
        raise ConfigError("stimuli: source is 'folder' but no 'folder' path was given")
    root = Path(cfg.folder)
    if not root.is_dir():
        raise InputDataError(root, "stimulus folder not found (expected one sub-folder of images per class)")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    files_per_class = [
        sorted(f for f in d.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES) for d in class_dirs
    ]
    non_empty = [(d, fs) for d, fs in zip(class_dirs, files_per_class) if fs]
    if not non_empty:
        raise InputDataError(
            root, f"no class sub-folders with images ({', '.join(sorted(IMAGE_SUFFIXES))}) found"
        )
    empty = [d.name for d, fs in zip(class_dirs, files_per_class) if not fs]
    if empty:
        raise InputDataError(root, f"class folder(s) without images: {', '.join(empty)}")
    labels = np.concatenate([np.full(len(fs), k) for k, (_, fs) in enumerate(non_empty)])
    files = [f for _, fs in non_empty for f in fs]
    positions = np.concatenate([np.arange(1, len(fs) + 1) for _, fs in non_empty])
    train, test = _split_indices(labels, len(non_empty), cfg, rng, str(root))
    chosen = np.concatenate([train, test])
    images = np.stack([read_image(files[i], cfg.image_size)[0] for i in chosen])
    return images, labels[chosen], positions[chosen], [d.name for d, _ in non_empty]


def class_wnid(name: str, k: int) -> int:
    """A folder named like a WordNet id keeps it; everything else gets 9000000 + k."""
    match = _WNID_RE.match(name)
    return int(match.group(1)) if match else FAKE_WNID_BASE + k


def build_stimuli(cfg: StimuliConfig) -> StimulusSet:
    """Select, render and split the images; deterministic for a seed."""
    if cfg.image_size < 8:
        raise ConfigError(f"stimuli.image_size must be >= 8, got {cfg.image_size}")
    if cfg.train_per_class < 1 or cfg.test_per_class < 1:
        raise ConfigError("stimuli.train_per_class and stimuli.test_per_class must be >= 1")
    rng = np.random.default_rng(cfg.seed)
    if cfg.source == "digits":
        images, labels, indices, names = _digits_set(cfg, rng)
    elif cfg.source == "folder":
        images, labels, indices, names = _folder_set(cfg, rng)
    else:
        raise ConfigError(f"stimuli.source must be 'digits' or 'folder', got {cfg.source!r}")
    if indices.max() >= ID_SCALE:
        raise InputDataError(cfg.folder or None, f"a class holds {indices.max()} images; ids allow at most 999999")
    wnids = np.array([class_wnid(n, k) for k, n in enumerate(names)], dtype=np.int64)
    if len(set(wnids.tolist())) != len(wnids):
        raise InputDataError(cfg.folder or None, "two class folders map to the same WordNet id")
    ids = wnids[labels] + indices / ID_SCALE
    n_train = cfg.train_per_class * len(names)
    parts = []
    for sl in (slice(0, n_train), slice(n_train, None)):
        order = np.argsort(id_key(ids[sl]), kind="stable")  # CSV order = sorted ids, as GOD's lists
        parts.append((images[sl][order], labels[sl][order].astype(np.int64), ids[sl][order].astype(np.float64)))
    (tr_x, tr_y, tr_id), (te_x, te_y, te_id) = parts
    return StimulusSet(tr_x, te_x, tr_y, te_y, tr_id, te_id, list(names), wnids)


def write_stimuli(stim: StimulusSet, out_dir: str | Path) -> dict:
    """Write the GOD-style folder (images, id lists) and stimuli.npz; return a summary."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out / "images") as tmp:
        splits = (("training", stim.train_images, stim.train_ids), ("test", stim.test_images, stim.test_ids))
        for split, images, ids in splits:
            (tmp / split).mkdir()
            for img, i in zip(images, ids):
                Image.fromarray(img).save(tmp / split / id_filename(i), format="JPEG", quality=JPEG_QUALITY)
    write_text(out / "imageID_training.csv", image_list_csv(stim.train_ids))
    write_text(out / "imageID_test.csv", image_list_csv(stim.test_ids))
    # Written last: it is the file the simulators (and Snakemake) wait for.
    save_npz(
        out / "stimuli.npz",
        train_images=stim.train_images,
        test_images=stim.test_images,
        train_labels=stim.train_labels,
        test_labels=stim.test_labels,
        train_ids=stim.train_ids,
        test_ids=stim.test_ids,
        class_names=np.array(stim.class_names),
        class_wnids=stim.class_wnids,
    )
    summary = {
        "n_classes": stim.n_classes,
        "n_train": int(len(stim.train_ids)),
        "n_test": int(len(stim.test_ids)),
        "image_size": int(stim.train_images.shape[1]),
    }
    log.info(
        "stimuli: %d classes, %d training + %d test images of %d px -> %s",
        summary["n_classes"], summary["n_train"], summary["n_test"], summary["image_size"], out,
    )
    return summary


def load_stimuli(path: str | Path) -> StimulusSet:
    """Read stimuli.npz back; a missing file or key is an InputDataError naming it."""
    from mindvis.io.npz import read_npz

    path = Path(path)
    if not path.is_file():
        raise InputDataError(path, "stimulus file not found (run `mindvis make-stimuli` first)")
    keys = ("train_images", "test_images", "train_labels", "test_labels", "train_ids", "test_ids", "class_names")
    arrays = read_npz(path, "stimuli.npz", required=keys)

    def vector(key: str, kinds: str, what: str) -> np.ndarray:
        a = arrays[key]
        if a.ndim != 1 or a.dtype.kind not in kinds:
            raise InputDataError(path, f"{key} must be a 1-D array of {what}, got {a.dtype} {a.shape}")
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise InputDataError(path, f"{key} holds NaN/Inf")
        return a

    names = [str(n) for n in vector("class_names", "US", "class names")]
    wnids = vector("class_wnids", "iu", "integer WordNet ids") if "class_wnids" in arrays else None
    if wnids is None:
        wnids = np.array([class_wnid(n, k) for k, n in enumerate(names)], dtype=np.int64)
    elif len(wnids) != len(names):
        raise InputDataError(path, f"{len(wnids)} class_wnids for {len(names)} class_names")
    stim = StimulusSet(
        arrays["train_images"], arrays["test_images"],
        vector("train_labels", "iu", "integer labels").astype(np.int64),
        vector("test_labels", "iu", "integer labels").astype(np.int64),
        vector("train_ids", "fiu", "stimulus ids").astype(np.float64),
        vector("test_ids", "fiu", "stimulus ids").astype(np.float64),
        names, wnids.astype(np.int64),
    )
    for split, x, y, i in (("train", stim.train_images, stim.train_labels, stim.train_ids),
                           ("test", stim.test_images, stim.test_labels, stim.test_ids)):
        if x.ndim != 4 or x.shape[-1] != 3 or x.dtype != np.uint8 or x.shape[1] != x.shape[2]:
            raise InputDataError(path, f"{split}_images must be uint8 (n, S, S, 3), got {x.dtype} {x.shape}")
        if not (len(x) == len(y) == len(i)):
            raise InputDataError(path, f"{split}: {len(x)} images, {len(y)} labels, {len(i)} ids differ")
        if y.size and (y.min() < 0 or y.max() >= len(names)):
            raise InputDataError(path, f"{split}_labels outside [0, {len(names)})")
    return stim
