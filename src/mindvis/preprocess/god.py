"""GOD: one subject's BData release (`SubjectN.h5`) -> MinD-Vis's `sbj_N.npz`.

Input (docs/reference.md §9.1): a BData file whose per-sample columns
`DataType` (1 = training perception, 2 = test perception, 3 = imagery) and
`stimulus_id` label each trial, whose `ROI_*` metadata rows flag the voxel
columns, plus the two imageID CSV lists that fix the image order.

Output keys, exactly those MinD-Vis reads (plus its optional `arr_4`):
  arr_0  (n_train_trials, V) float32  training trials, in file (trial) order
  arr_1  (n_test_trials, V)  float32  test trials, not averaged, grouped image
         by image in imageID_test order, trial order within an image
  arr_2  (n_test_images, V)  float32  per-image mean of arr_1; row i is
         imageID_test row i (and `test_images[i]`)
  arr_3  (n_train_trials,)   int64    row of each training trial's image in
         imageID_training (and `train_images`)
  arr_4  (n_test_images,)             test labels: the BData `Label` of each
         test image when the file has a `Label` column (int64 when integral),
         otherwise the image's index 0..n_test_images-1 (int64)
  V1 V2 V3 V4 LOC FFA PPA LVC HVC VC  bool (V,) ROI masks over the kept voxels
         (a ROI the file does not define is left out and reported)

Choices, each logged and counted in the returned summary:
- imagery trials (DataType 3) are excluded: MinD-Vis decodes perception only;
- voxels with any NaN/Inf or zero variance over the kept (training + test)
  trials are dropped (`bad_voxels: drop`) and every mask is cut the same way,
  or rejected with an error (`bad_voxels: error`);
- training images listed but never shown are allowed (arr_3 just never points
  at them); a test image with no trial is an error (its average is undefined).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mindvis.io.bdata import BData, read_bdata
from mindvis.preprocess.stimulus_ids import ImageList, id_keys, key_to_id_text, read_image_list
from mindvis.utils.atomic import save_npz
from mindvis.utils.errors import ConfigError, InputDataError

log = logging.getLogger(__name__)

ROI_NAMES = ("V1", "V2", "V3", "V4", "LOC", "FFA", "PPA", "LVC", "HVC", "VC")
DATATYPE_TRAIN, DATATYPE_TEST, DATATYPE_IMAGERY = 1, 2, 3
BAD_VOXEL_POLICIES = ("drop", "error")


@dataclass
class GodPreprocessConfig:
    """`god: preprocess:` section."""

    # ROI whose voxels are kept (BData metadata row ROI_<roi>); MinD-Vis uses the visual cortex "VC".
    roi: str = "VC"
    # Voxels with NaN/Inf or zero variance over the kept trials: "drop" them (logged, counted) or "error".
    bad_voxels: str = "drop"


def check_config(cfg: GodPreprocessConfig) -> None:
    if cfg.bad_voxels not in BAD_VOXEL_POLICIES:
        raise ConfigError(f"god preprocess: bad_voxels must be one of {BAD_VOXEL_POLICIES}, got '{cfg.bad_voxels}'")
    if not cfg.roi or not str(cfg.roi).strip():
        raise ConfigError("god preprocess: roi must name a ROI such as VC")


def _examples(keys: np.ndarray, limit: int = 5) -> str:
    uniq = np.unique(keys)
    text = ", ".join(key_to_id_text(k) for k in uniq[:limit])
    return text + (f" and {uniq.size - limit} more" if uniq.size > limit else "")


def _require_keys(bdata: BData, keys: list[str]) -> None:
    missing = [k for k in keys if not bdata.has_key(k)]
    if missing:
        raise InputDataError(
            bdata.path,
            f"BData metadata lacks key(s) {', '.join(missing)} needed to select voxels and label trials "
            f"(keys present: {', '.join(bdata.keys)})",
        )


def _roi_columns(bdata: BData, roi: str, label_columns: list[int]) -> np.ndarray:
    """Column indices of the ROI's voxels, checked against VoxelData and the label columns."""
    cols = bdata.columns_flagged(f"ROI_{roi}")
    if cols.size == 0:
        raise InputDataError(bdata.path, f"ROI '{roi}' (metadata ROI_{roi}) flags no voxels")
    if bdata.has_key("VoxelData"):
        not_voxels = np.setdiff1d(cols, bdata.columns_flagged("VoxelData"))
        if not_voxels.size:
            raise InputDataError(
                bdata.path,
                f"ROI_{roi} flags {not_voxels.size} column(s) that VoxelData does not mark as voxels "
                f"(e.g. column {int(not_voxels[0])})",
            )
    clash = np.intersect1d(cols, label_columns)
    if clash.size:
        raise InputDataError(bdata.path, f"ROI_{roi} flags label column(s) {clash.tolist()} as voxels")
    return cols


def _trial_rows(bdata: BData) -> tuple[np.ndarray, np.ndarray, int]:
    """Rows of the training and test perception trials, and the number of imagery trials."""
    dtype = bdata.label("DataType")
    if not np.isfinite(dtype).all():
        raise InputDataError(bdata.path, f"DataType is NaN/Inf in {int((~np.isfinite(dtype)).sum())} sample(s)")
    known = np.isin(dtype, (DATATYPE_TRAIN, DATATYPE_TEST, DATATYPE_IMAGERY))
    if not known.all():
        values, counts = np.unique(dtype[~known], return_counts=True)
        found = ", ".join(f"{v:g} ({c} samples)" for v, c in zip(values, counts))
        raise InputDataError(bdata.path, f"DataType must be 1 (training), 2 (test) or 3 (imagery); found {found}")
    train_rows = np.flatnonzero(dtype == DATATYPE_TRAIN)
    test_rows = np.flatnonzero(dtype == DATATYPE_TEST)
    if train_rows.size == 0 or test_rows.size == 0:
        raise InputDataError(
            bdata.path,
            f"needs training (DataType 1) and test (DataType 2) trials; found {train_rows.size} and {test_rows.size}",
        )
    return train_rows, test_rows, int((dtype == DATATYPE_IMAGERY).sum())


def _match_trials(bdata: BData, rows: np.ndarray, images: ImageList, what: str) -> np.ndarray:
    """Index in `images` of the image each trial showed; every trial must match."""
    ids = bdata.label("stimulus_id")[rows]
    bad = ~np.isfinite(ids)
    if bad.any():
        raise InputDataError(bdata.path, f"stimulus_id is NaN/Inf in {int(bad.sum())} {what} trial(s)")
    keys = id_keys(ids)
    pos = images.positions(keys)
    missing = pos < 0
    if missing.any():
        raise InputDataError(
            bdata.path,
            f"{int(missing.sum())} of {rows.size} {what} trials show stimulus ids not listed in "
            f"{images.path}: {_examples(keys[missing])}",
        )
    return pos


def _bad_voxels(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(non-finite, constant) voxel flags over the rows of `x`. A value beyond float32's range
    counts as non-finite: the npz stores float32, where it would become Inf."""
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(x) & (np.abs(x) <= np.finfo(np.float32).max)
    nonfinite = ~finite.all(axis=0)
    safe = np.where(finite, x, 0.0)  # equals x on every voxel that can be called constant
    constant = (safe.max(axis=0) == safe.min(axis=0)) & ~nonfinite
    return nonfinite, constant


def _test_labels(bdata: BData, test_rows_grouped: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, str]:
    """arr_4: the Label of each test image if the file has one, else the image index."""
    n_images = starts.size
    if not bdata.has_key("Label"):
        return np.arange(n_images, dtype=np.int64), "image index"
    labels = bdata.label("Label")[test_rows_grouped]
    if not np.isfinite(labels).all():
        raise InputDataError(bdata.path, f"Label is NaN/Inf on {int((~np.isfinite(labels)).sum())} test trial(s)")
    bounds = np.append(starts, labels.size)
    per_image = np.empty(n_images, dtype=np.float64)
    for i in range(n_images):
        chunk = labels[bounds[i] : bounds[i + 1]]
        if not np.all(chunk == chunk[0]):
            raise InputDataError(
                bdata.path, f"test image {i} has trials with different Label values {np.unique(chunk).tolist()}"
            )
        per_image[i] = chunk[0]
    if np.all(per_image == np.round(per_image)):
        return per_image.astype(np.int64), "Label column"
    return per_image, "Label column"


def build_subject_arrays(
    bdata: BData, train_list: ImageList, test_list: ImageList, cfg: GodPreprocessConfig
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The npz arrays of one subject and a summary of what was kept, dropped and why."""
    check_config(cfg)
    roi = str(cfg.roi).strip()
    _require_keys(bdata, [f"ROI_{roi}", "DataType", "stimulus_id"])
    train_rows, test_rows, n_imagery = _trial_rows(bdata)
    bdata.label("stimulus_id")  # raises unless exactly one column holds it
    label_columns = [int(bdata.columns_flagged(k)[0]) for k in ("DataType", "stimulus_id")]
    cols = _roi_columns(bdata, roi, label_columns)

    train_pos = _match_trials(bdata, train_rows, train_list, "training (DataType 1)")
    test_pos = _match_trials(bdata, test_rows, test_list, "test (DataType 2)")
    repeats = np.bincount(test_pos, minlength=len(test_list))
    if (repeats == 0).any():
        unseen = test_list.keys[repeats == 0]
        raise InputDataError(
            bdata.path,
            f"{unseen.size} test image(s) listed in {test_list.path} have no test trial in this file: "
            f"{_examples(unseen)}",
        )
    # Stable sort: images in list order, trials of one image in file order.
    order = np.argsort(test_pos, kind="stable")
    test_rows_grouped = test_rows[order]

    x_train = bdata.dataset[np.ix_(train_rows, cols)]
    x_test = bdata.dataset[np.ix_(test_rows_grouped, cols)]
    nonfinite, constant = _bad_voxels(np.concatenate([x_train, x_test], axis=0))
    bad = nonfinite | constant
    if bad.any():
        what = (
            f"{int(nonfinite.sum())} voxel(s) hold NaN/Inf (or values beyond float32) and {int(constant.sum())} "
            f"are constant over the "
            f"{train_rows.size + test_rows.size} training+test trials (ROI_{roi} columns e.g. "
            f"{cols[bad][:5].tolist()})"
        )
        if cfg.bad_voxels == "error":
            raise InputDataError(bdata.path, what + "; set bad_voxels: drop to drop them")
        if bad.all():
            raise InputDataError(bdata.path, f"every ROI_{roi} voxel is unusable: {what}")
        log.warning("%s: dropping %s", bdata.path, what)
    keep = ~bad
    x_train = x_train[:, keep]
    x_test = x_test[:, keep]

    starts = np.concatenate([[0], np.cumsum(repeats)[:-1]]).astype(np.int64)
    test_mean = np.add.reduceat(x_test, starts, axis=0) / repeats[:, None]
    test_labels, labels_source = _test_labels(bdata, test_rows_grouped, starts)

    masks: dict[str, np.ndarray] = {}
    missing_rois: list[str] = []
    for name in dict.fromkeys((*ROI_NAMES, roi)):  # the selected ROI gets a mask even if non-standard
        if not bdata.has_key(f"ROI_{name}"):
            missing_rois.append(name)
            continue
        flagged = np.nan_to_num(bdata.metadata(f"ROI_{name}"), nan=0.0) == 1
        masks[name] = flagged[cols][keep]
    if missing_rois:
        log.warning("%s: no ROI_* metadata for %s; their masks are left out", bdata.path, ", ".join(missing_rois))
    empty = [n for n, m in masks.items() if not m.any()]
    if empty:
        log.warning("%s: ROI(s) %s hold no voxel inside ROI_%s", bdata.path, ", ".join(empty), roi)

    arrays = {
        "arr_0": x_train.astype(np.float32),
        "arr_1": x_test.astype(np.float32),
        "arr_2": test_mean.astype(np.float32),
        "arr_3": train_pos.astype(np.int64),
        "arr_4": test_labels,
        **masks,
    }
    summary: dict[str, Any] = {
        "roi": roi,
        "n_train_trials": int(train_rows.size),
        "n_train_images_listed": len(train_list),
        "n_train_images_shown": int(np.unique(train_pos).size),
        "n_test_trials": int(test_rows.size),
        "n_test_images": len(test_list),
        "test_repeats_min": int(repeats.min()),
        "test_repeats_max": int(repeats.max()),
        "imagery_trials_excluded": n_imagery,
        "n_voxels": int(keep.sum()),
        "dropped_voxels": int(bad.sum()),
        "dropped_voxels_nonfinite": int(nonfinite.sum()),
        "dropped_voxels_constant": int(constant.sum()),
        "voxels_per_roi": {name: int(m.sum()) for name, m in masks.items()},
        "rois_missing": missing_rois,
        "test_labels_source": labels_source,
    }
    return arrays, summary


def preprocess_god_subject(
    bdata_path: str | os.PathLike,
    train_list_path: str | os.PathLike,
    test_list_path: str | os.PathLike,
    out_path: str | os.PathLike,
    subject: str | int,
    cfg: GodPreprocessConfig | None = None,
) -> dict[str, Any]:
    """Read, check and convert one subject; write `out_path` atomically; return the summary."""
    start = time.perf_counter()
    cfg = cfg or GodPreprocessConfig()
    check_config(cfg)
    train_list = read_image_list(train_list_path)
    test_list = read_image_list(test_list_path)
    bdata = read_bdata(bdata_path)
    arrays, summary = build_subject_arrays(bdata, train_list, test_list, cfg)
    save_npz(out_path, **arrays)
    summary = {"subject": str(subject), **summary, "seconds": round(time.perf_counter() - start, 3)}
    log.info(
        "GOD subject %s: %d training trials, %d test trials of %d images (repeats %d-%d), "
        "%d imagery trials excluded, %d %s voxels kept, %d dropped -> %s",
        subject, summary["n_train_trials"], summary["n_test_trials"], summary["n_test_images"],
        summary["test_repeats_min"], summary["test_repeats_max"], summary["imagery_trials_excluded"],
        summary["n_voxels"], summary["roi"], summary["dropped_voxels"], Path(out_path),
    )
    log.info("voxels per ROI: %s", ", ".join(f"{k}={v}" for k, v in summary["voxels_per_roi"].items()))
    return summary
