"""BOLD5000 release 2.0 (GLMsingle betas) -> MinD-Vis's per-ROI arrays + a per-subject npz.

Inputs, found by file name anywhere under the raw folder (the release is spread
over figshare, OpenNeuro and a stimulus zip, and users unpack it differently):

- `CSI{n}_GLMbetas-TYPED-FITHRF-GLMDENOISE-RR_ses-XX.nii.gz`: (X, Y, Z, trials)
  per session; non-finite values mark voxels GLMsingle could not fit;
- `sub-CSI{n}_mask-{LH,RH}{EarlyVis,LOC,OPA,PPA,RSC}.nii.gz`: ROI masks on the
  betas' grid; known misnamed files (`LHLO`, `RHLO`, `RHRRSC`) are repaired by
  `roi_aliases` and reported;
- `CSI{n}_brainmask.nii.gz` (optional; used only to report ROI voxels outside it);
- `Stimuli_Presentation_Lists/CSI{n}/...` and `CSI{n}_imgnames.txt` (trial order,
  see `bold5000_lists`), `repeated_stimuli_113_list.txt` (the test images);
- the image files themselves (preferring copies under `Presented_Stimuli/`).

Outputs under `<out>` (MinD-Vis's own data/BOLD5000 layout):

- `BOLD5000_GLMsingle_ROI_betas/py/CSI{n}_GLMbetas-TYPED-FITHRF-GLMDENOISE-RR_allses_{LH,RH}{ROI}.npy`:
  float32 (trials, roi_voxels), every trial in chronological order, voxels in
  the mask's C order (numpy `volume[mask]`), non-finite/constant voxels dropped;
- `npz/CSI{n}.npz` (written last; its presence means the subject is complete).
  Keys follow the GOD `sbj_N.npz` where a meaning exists there:
    arr_0  (n_train, V) float32  training trials (every trial whose image is not a test image), chronological
    arr_1  (n_test_trials, V)    test trials, not averaged, grouped image by image (chronological within)
    arr_2  (n_test, V) float32   test fMRI averaged over each image's presentations; row i <-> test_images[i]
    arr_3  (n_train,) int64      index of each training trial's image in train_images
    test_trial_image_index (n_test_trials,) int64  row of arr_2 / test_images each arr_1 row belongs to
    train_trial_index, test_trial_index            0-based chronological trial numbers of arr_0 / arr_1 rows
    train_images (n_train_images, S, S, 3) uint8   unique training images, order of first presentation
    test_images  (n_test, S, S, 3) uint8           repeated-list images actually shown, in that list's order
    train_image_names, test_image_names            file names (str)
    EarlyVis LOC OPA PPA RSC                       bool (V,): ROI over both hemispheres
    LHEarlyVis RHEarlyVis ... RHRSC                bool (V,): one per per-ROI array
    roi_order  (10,) str   the per-ROI arrays in concatenation order (EarlyVis, LOC, OPA, PPA, RSC; LH before RH)
    voxel_ijk  (V, 3) int32 grid index of each column; affine (4, 4): the betas' voxel-to-mm matrix
    subject    () str      e.g. "CSI1"
  V is the per-ROI arrays concatenated in `roi_order`, so arr_0/arr_1 are
  exactly MinD-Vis's concatenation of the .npy files split into train/test.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mindvis.preprocess.bold5000_betas import extract_roi_betas, load_mask
from mindvis.preprocess.bold5000_files import ImageFinder, RawIndex, check_sessions, find_subject_files, load_images
from mindvis.preprocess.bold5000_lists import (
    Presentation,
    check_order,
    find_presentation_lists,
    read_name_list,
    read_presentations,
    strip_repeat,
    trials_per_session,
)
from mindvis.utils.atomic import save_npy, save_npz
from mindvis.utils.errors import ConfigError, InputDataError

log = logging.getLogger(__name__)

ROI_ARRAY_NAME = "CSI{subject}_GLMbetas-TYPED-FITHRF-GLMDENOISE-RR_allses_{label}.npy"
ROI_ARRAY_DIR = Path("BOLD5000_GLMsingle_ROI_betas") / "py"


def _default_aliases() -> dict[str, str]:
    # Misnamed masks in the real OpenNeuro ds001499 derivatives (CSI2, CSI3).
    return {"LHLO": "LHLOC", "RHLO": "RHLOC", "RHRRSC": "RHRSC"}


@dataclass
class Bold5000PreprocessConfig:
    # ROIs in MinD-Vis's concatenation order; each is read for every hemisphere below.
    rois: list[str] = field(default_factory=lambda: ["EarlyVis", "LOC", "OPA", "PPA", "RSC"])
    # Hemisphere prefixes of the mask names, in concatenation order within an ROI.
    hemispheres: list[str] = field(default_factory=lambda: ["LH", "RH"])
    # Misnamed mask label -> correct label (repairs are logged and counted).
    roi_aliases: dict[str, str] = field(default_factory=_default_aliases)
    # A mask voxel is in the ROI when its value exceeds this (masks are 0/1).
    mask_threshold: float = 0.5
    # Largest difference allowed between a mask's affine and the betas' affine (mm).
    affine_atol: float = 1e-3
    # Also drop voxels whose betas never vary (they carry no signal and break z-scoring).
    drop_constant_voxels: bool = True
    # File name of the test-image list (the images shown repeatedly).
    repeated_list: str = "repeated_stimuli_113_list.txt"
    # Folder name preferred when an image name exists in several places (the release
    # also ships uncropped Original_Images).
    presented_dir: str = "Presented_Stimuli"
    # Side of the square images stored in the npz (centre crop, bicubic resize).
    image_size: int = 256
    # np.savez_compressed for the npz (smaller, slower to load; real subjects hold ~5000 images).
    compress_npz: bool = False

    def roi_labels(self) -> list[str]:
        """Concatenation order: ROI by ROI, hemispheres in order within each."""
        return [f"{hemi}{roi}" for roi in self.rois for hemi in self.hemispheres]


def validate(cfg: Bold5000PreprocessConfig) -> None:
    if not cfg.rois or not cfg.hemispheres:
        raise ConfigError("bold5000 preprocess: rois and hemispheres must not be empty")
    labels = cfg.roi_labels()
    if len(set(labels)) != len(labels):
        raise ConfigError(f"bold5000 preprocess: repeated ROI/hemisphere names in {cfg.rois} x {cfg.hemispheres}")
    if cfg.image_size < 8:
        raise ConfigError(f"bold5000 preprocess: image_size must be >= 8, got {cfg.image_size}")
    if cfg.affine_atol < 0:
        raise ConfigError("bold5000 preprocess: affine_atol must be >= 0")




@dataclass
class TrialSplit:
    test_names: list[str]  # repeated-list images actually shown, in the list's order
    test_groups: list[np.ndarray]  # chronological trial indices of each test image
    not_shown: list[str]
    train_trials: np.ndarray
    train_names: list[str]  # unique, order of first presentation
    train_image_index: np.ndarray


def split_trials(names: Sequence[str], repeated: Sequence[str]) -> TrialSplit:
    """Test = repeated-list images that were shown (averaged later); train = every other trial."""
    where: dict[str, list[int]] = {}
    for trial, name in enumerate(names):
        where.setdefault(name, []).append(trial)
    test_names, groups, not_shown, seen = [], [], [], set()
    for name in repeated:
        if name in seen:
            continue
        seen.add(name)
        if name in where:
            test_names.append(name)
            groups.append(np.asarray(where[name], dtype=np.int64))
        else:
            not_shown.append(name)
    test_set = set(test_names)
    train_trials = np.asarray([t for t, n in enumerate(names) if n not in test_set], dtype=np.int64)
    train_names: list[str] = []
    position: dict[str, int] = {}
    image_index = np.empty(len(train_trials), dtype=np.int64)
    for row, trial in enumerate(train_trials):
        name = names[trial]
        if name not in position:
            position[name] = len(train_names)
            train_names.append(name)
        image_index[row] = position[name]
    return TrialSplit(test_names, groups, not_shown, train_trials, train_names, image_index)



def roi_masks_over_columns(labels: Sequence[str], widths: Sequence[int], cfg) -> dict[str, np.ndarray]:
    total = int(sum(widths))
    masks: dict[str, np.ndarray] = {}
    start = 0
    for label, width in zip(labels, widths):
        m = np.zeros(total, dtype=bool)
        m[start : start + width] = True
        masks[label] = m
        start += width
    for roi in cfg.rois:
        masks[roi] = np.any([masks[f"{h}{roi}"] for h in cfg.hemispheres], axis=0)
    return masks


def preprocess_bold5000_subject(
    raw_dir: str | Path, subject: int, out_dir: str | Path, cfg: Bold5000PreprocessConfig | None = None
) -> dict:
    """Convert one subject; return the summary (counts for logs and MLflow)."""
    cfg = cfg or Bold5000PreprocessConfig()
    validate(cfg)
    started = time.perf_counter()
    out_dir = Path(out_dir)
    index = RawIndex(raw_dir)
    files = find_subject_files(index, subject, cfg)
    if files.alias_repairs:
        log.info("repaired %d misnamed ROI mask(s): %s", len(files.alias_repairs), "; ".join(files.alias_repairs))

    trials: list[Presentation] = read_presentations(find_presentation_lists(files.lists_dir, subject))
    imgnames = read_name_list(files.imgnames)
    check_order(trials, imgnames, files.imgnames, files.lists_dir)
    per_session = trials_per_session(trials)
    check_sessions(files, per_session, subject)
    log.info("CSI%d: %d trials in %d sessions; order matches %s", subject, len(trials), len(per_session), files.imgnames.name)

    roi = extract_roi_betas(files, per_session, cfg)
    outside_brain = {}
    if files.brainmask is not None:
        first = files.betas[min(files.betas)]
        brain = load_mask(files.brainmask, roi.grid, roi.affine, first, cfg)
        outside_brain = {label: int((~brain[tuple(ijk.T)]).sum()) for label, ijk in roi.ijk.items()}
    else:
        log.warning("CSI%d_brainmask.nii.gz not found; skipping the ROI-inside-brain report", subject)

    names = [t.name for t in trials]
    repeated = [strip_repeat(n)[0] for n in read_name_list(files.repeated_list)]
    split = split_trials(names, repeated)
    if not split.test_names:
        raise InputDataError(files.repeated_list, f"none of its {len(repeated)} images was shown to CSI{subject}")
    if split.not_shown:
        log.info("CSI%d: %d test image(s) of %s never shown; test set has %d images",
                 subject, len(split.not_shown), files.repeated_list.name, len(split.test_names))

    fmri = np.concatenate([roi.arrays[label] for label in roi.labels], axis=1)
    test_trials = np.concatenate(split.test_groups)
    test_owner = np.concatenate([np.full(len(g), i, dtype=np.int64) for i, g in enumerate(split.test_groups)])
    test_avg = np.stack([fmri[g].astype(np.float64).mean(axis=0) for g in split.test_groups]).astype(np.float32)
    finder = ImageFinder(index, cfg.presented_dir)
    train_images = load_images(finder, split.train_names, cfg.image_size)
    test_images = load_images(finder, split.test_names, cfg.image_size)
    if finder.repaired:
        log.info("matched %d image name(s) by case or extension: %s", len(finder.repaired), "; ".join(finder.repaired[:5]))

    # Per-ROI arrays first, the npz last: the npz is the job's completion marker.
    py_dir = out_dir / ROI_ARRAY_DIR
    for label in roi.labels:
        save_npy(py_dir / ROI_ARRAY_NAME.format(subject=subject, label=label), roi.arrays[label])
    widths = [roi.arrays[label].shape[1] for label in roi.labels]
    masks = roi_masks_over_columns(roi.labels, widths, cfg)
    npz_path = out_dir / "npz" / f"CSI{subject}.npz"
    save_npz(
        npz_path,
        compressed=cfg.compress_npz,
        arr_0=fmri[split.train_trials],
        arr_1=fmri[test_trials],
        arr_2=test_avg,
        arr_3=split.train_image_index,
        test_trial_image_index=test_owner,
        train_trial_index=split.train_trials,
        test_trial_index=test_trials,
        train_images=train_images,
        test_images=test_images,
        train_image_names=np.asarray(split.train_names, dtype=str),
        test_image_names=np.asarray(split.test_names, dtype=str),
        roi_order=np.asarray(roi.labels, dtype=str),
        voxel_ijk=np.concatenate([roi.ijk[label] for label in roi.labels], axis=0),
        affine=roi.affine,
        subject=np.asarray(f"CSI{subject}"),
        **masks,
    )

    summary = {
        "subject": f"CSI{subject}",
        "sessions": len(per_session),
        "trials": len(trials),
        "trials_per_session": {str(k): v for k, v in sorted(per_session.items())},
        "voxels_per_roi": dict(zip(roi.labels, widths)),
        "voxels_total": int(sum(widths)),
        "dropped_nonfinite_voxels": roi.dropped_nonfinite,
        "dropped_constant_voxels": roi.dropped_constant,
        "dropped_voxels_total": int(sum(roi.dropped_nonfinite.values()) + sum(roi.dropped_constant.values())),
        "roi_voxels_outside_brainmask": outside_brain,
        "alias_repairs": files.alias_repairs,
        "n_alias_repairs": len(files.alias_repairs),
        "image_name_repairs": finder.repaired,
        "n_train_trials": int(len(split.train_trials)),
        "n_train_images": len(split.train_names),
        "n_test_images": len(split.test_names),
        "n_test_trials": int(len(test_trials)),
        "test_images_not_shown": split.not_shown,
        "npz": str(npz_path),
        "seconds": round(time.perf_counter() - started, 3),
    }
    log.info(
        "CSI%d: voxels per ROI %s (total %d); dropped %d non-finite, %d constant; train %d trials / %d images; "
        "test %d images from %d trials",
        subject, summary["voxels_per_roi"], summary["voxels_total"], sum(roi.dropped_nonfinite.values()),
        sum(roi.dropped_constant.values()), summary["n_train_trials"], summary["n_train_images"],
        summary["n_test_images"], summary["n_test_trials"],
    )
    return summary
