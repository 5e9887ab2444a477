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
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

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

BETAS_NAME = "CSI{subject}_GLMbetas-TYPED-FITHRF-GLMDENOISE-RR_ses-{session:02d}.nii.gz"
ROI_ARRAY_NAME = "CSI{subject}_GLMbetas-TYPED-FITHRF-GLMDENOISE-RR_allses_{label}.npy"
ROI_ARRAY_DIR = Path("BOLD5000_GLMsingle_ROI_betas") / "py"
_BETAS_RE = re.compile(r"^CSI(\d+)_GLMbetas-TYPED-FITHRF-GLMDENOISE-RR_ses-(\d+)\.nii(?:\.gz)?$")


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


def validate(cfg: Bold5000PreprocessConfig) -> None:
    if not cfg.rois or not cfg.hemispheres:
        raise ConfigError("bold5000 preprocess: rois and hemispheres must not be empty")
    labels = roi_labels(cfg)
    if len(set(labels)) != len(labels):
        raise ConfigError(f"bold5000 preprocess: repeated ROI/hemisphere names in {cfg.rois} x {cfg.hemispheres}")
    if cfg.image_size < 8:
        raise ConfigError(f"bold5000 preprocess: image_size must be >= 8, got {cfg.image_size}")
    if cfg.affine_atol < 0:
        raise ConfigError("bold5000 preprocess: affine_atol must be >= 0")


# --------------------------------------------------------------------------- locating files
class RawIndex:
    """Every file and folder under the raw root, by name (one directory walk)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise InputDataError(self.root, "raw BOLD5000 folder not found")
        self.files: dict[str, list[Path]] = {}
        self.dirs: dict[str, list[Path]] = {}
        for current, dirnames, filenames in os.walk(self.root, followlinks=True):
            dirnames.sort()
            for name in dirnames:
                self.dirs.setdefault(name, []).append(Path(current) / name)
            for name in sorted(filenames):
                if not name.startswith("._"):  # macOS resource forks from zip archives
                    self.files.setdefault(name, []).append(Path(current) / name)

    def unique_file(self, name: str, what: str, required: bool = True) -> Path | None:
        found = self.files.get(name, [])
        if len(found) > 1:
            raise InputDataError(self.root, f"{what} '{name}' exists {len(found)} times: {', '.join(map(str, found))}")
        if not found:
            if required:
                raise InputDataError(self.root / name, f"{what} not found anywhere under {self.root}")
            return None
        return found[0]

    def matching(self, pattern: re.Pattern[str]) -> list[tuple[re.Match[str], Path]]:
        hits = []
        for name, paths in sorted(self.files.items()):
            match = pattern.match(name)
            if match:
                hits.extend((match, p) for p in paths)
        return hits


@dataclass
class SubjectFiles:
    betas: dict[int, Path]
    masks: dict[str, Path]  # label (e.g. "LHLOC") -> file
    alias_repairs: list[str]  # "sub-CSI2_mask-LHLO.nii.gz -> LHLOC"
    brainmask: Path | None
    imgnames: Path
    lists_dir: Path
    repeated_list: Path


def roi_labels(cfg: Bold5000PreprocessConfig) -> list[str]:
    """Concatenation order: ROI by ROI, hemispheres in order within each."""
    return [f"{hemi}{roi}" for roi in cfg.rois for hemi in cfg.hemispheres]


def find_roi_masks(index: RawIndex, subject: int, cfg: Bold5000PreprocessConfig) -> tuple[dict[str, Path], list[str]]:
    pattern = re.compile(rf"^sub-CSI{subject}_mask-(.+?)\.nii(?:\.gz)?$")
    wanted = roi_labels(cfg)
    masks: dict[str, Path] = {}
    repairs: list[str] = []
    for match, path in index.matching(pattern):
        label = match.group(1)
        fixed = cfg.roi_aliases.get(label, label)
        if fixed not in wanted:
            log.debug("ignoring mask %s (label %s not among %s)", path, label, wanted)
            continue
        if fixed in masks:
            raise InputDataError(path, f"a second mask for {fixed}: {masks[fixed]} (after alias repair); keep one")
        if fixed != label:
            repairs.append(f"{path.name} -> {fixed}")
        masks[fixed] = path
    missing = [label for label in wanted if label not in masks]
    if missing:
        found = sorted(p.name for _, p in index.matching(pattern))
        raise InputDataError(
            index.root / f"sub-CSI{subject}_mask-{missing[0]}.nii.gz",
            f"ROI mask(s) {', '.join(missing)} not found under {index.root}; masks present for CSI{subject}: "
            f"{', '.join(found) if found else 'none'} (misnamed files can be mapped with roi_aliases)",
        )
    if repairs:
        log.info("repaired %d misnamed ROI mask(s): %s", len(repairs), "; ".join(repairs))
    return masks, repairs


def find_subject_files(index: RawIndex, subject: int, cfg: Bold5000PreprocessConfig) -> SubjectFiles:
    betas: dict[int, Path] = {}
    for match, path in index.matching(_BETAS_RE):
        if int(match.group(1)) != subject:
            continue
        session = int(match.group(2))
        if session in betas:
            raise InputDataError(path, f"a second betas file for session {session}: {betas[session]}")
        betas[session] = path
    if not betas:
        raise InputDataError(index.root / BETAS_NAME.format(subject=subject, session=1), "no betas files for this subject")
    masks, repairs = find_roi_masks(index, subject, cfg)
    list_roots = [p / f"CSI{subject}" for p in index.dirs.get("Stimuli_Presentation_Lists", []) if (p / f"CSI{subject}").is_dir()]
    if len(list_roots) != 1:
        raise InputDataError(
            index.root,
            f"expected one Stimuli_Presentation_Lists/CSI{subject} folder, found {len(list_roots)}"
            + (f": {', '.join(map(str, list_roots))}" if list_roots else ""),
        )
    return SubjectFiles(
        betas=betas,
        masks=masks,
        alias_repairs=repairs,
        brainmask=index.unique_file(f"CSI{subject}_brainmask.nii.gz", "brain mask", required=False),
        imgnames=index.unique_file(f"CSI{subject}_imgnames.txt", "trial image list"),
        lists_dir=list_roots[0],
        repeated_list=index.unique_file(cfg.repeated_list, "repeated (test) image list"),
    )


# --------------------------------------------------------------------------- NIfTI reading
def open_nifti(path: Path):
    import nibabel as nib

    try:
        return nib.load(str(path))
    except Exception as exc:  # noqa: BLE001 - any header failure is a bad file for the user
        raise InputDataError(path, f"not a readable NIfTI file ({type(exc).__name__}: {exc})") from None


def read_nifti_data(img, path: Path) -> np.ndarray:
    """The voxel data as float32; a truncated .nii.gz fails only here, so it is checked here."""
    try:
        return np.asarray(img.get_fdata(caching="unchanged", dtype=np.float32))
    except Exception as exc:  # noqa: BLE001 - EOFError, zlib.error, OSError, ValueError...
        raise InputDataError(
            path, f"cannot read the voxel data ({type(exc).__name__}: {exc}); the file is truncated or corrupt"
        ) from None


def load_mask(path: Path, ref_shape: tuple[int, ...], ref_affine: np.ndarray, ref_path: Path, cfg) -> np.ndarray:
    img = open_nifti(path)
    shape = tuple(int(s) for s in img.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if shape != tuple(ref_shape):
        raise InputDataError(path, f"mask grid {shape} differs from the betas grid {tuple(ref_shape)} of {ref_path}")
    if not np.allclose(img.affine, ref_affine, atol=cfg.affine_atol):
        raise InputDataError(
            path,
            f"mask affine differs from the betas affine of {ref_path} (largest difference "
            f"{float(np.abs(img.affine - ref_affine).max()):.4g} mm): the mask is on another grid; resample it first",
        )
    data = read_nifti_data(img, path).reshape(shape)
    mask = np.nan_to_num(data, nan=0.0) > cfg.mask_threshold
    if not mask.any():
        raise InputDataError(path, f"ROI mask is empty (no value above {cfg.mask_threshold})")
    return mask


# --------------------------------------------------------------------------- the work
@dataclass
class RoiBetas:
    """All trials of every ROI after dropping unusable voxels."""

    labels: list[str]
    arrays: dict[str, np.ndarray]  # label -> (trials, kept voxels) float32
    ijk: dict[str, np.ndarray]  # label -> (kept voxels, 3) grid indices
    dropped_nonfinite: dict[str, int]
    dropped_constant: dict[str, int]
    trials_per_session: dict[int, int]
    grid: tuple[int, int, int]
    affine: np.ndarray


def extract_roi_betas(files: SubjectFiles, sessions_expected: dict[int, int], cfg: Bold5000PreprocessConfig) -> RoiBetas:
    """Mask every session with every ROI, concatenate sessions, drop voxels unusable in any trial."""
    from tqdm import tqdm

    labels = roi_labels(cfg)
    sessions = sorted(sessions_expected)
    first = files.betas[sessions[0]]
    ref = open_nifti(first)
    if len(ref.shape) != 4:
        raise InputDataError(first, f"betas must be 4-D (X, Y, Z, trials), got shape {tuple(ref.shape)}")
    grid, affine = tuple(int(s) for s in ref.shape[:3]), np.asarray(ref.affine, dtype=np.float64)
    masks = {label: load_mask(files.masks[label], grid, affine, first, cfg) for label in labels}
    union = np.zeros(grid, dtype=bool)
    for mask in masks.values():
        union |= mask
    # Columns of each ROI inside the union's C-ordered voxel list (numpy boolean-index order).
    columns = {label: np.flatnonzero(mask[union]) for label, mask in masks.items()}
    union_ijk = np.argwhere(union)

    chunks: list[np.ndarray] = []
    for session in tqdm(sessions, desc="BOLD5000 sessions", unit="session", disable=None):
        path = files.betas[session]
        img = ref if session == sessions[0] else open_nifti(path)
        if len(img.shape) != 4 or tuple(img.shape[:3]) != grid:
            raise InputDataError(path, f"betas shape {tuple(img.shape)} differs from {first.name} {grid + ('trials',)}")
        if not np.allclose(img.affine, affine, atol=cfg.affine_atol):
            raise InputDataError(path, f"betas affine differs from the one of {first}")
        if img.shape[3] != sessions_expected[session]:
            raise InputDataError(
                path,
                f"{img.shape[3]} trials in the betas but {sessions_expected[session]} in the presentation lists "
                f"of session {session} under {files.lists_dir}",
            )
        data = read_nifti_data(img, path)
        chunks.append(np.ascontiguousarray(data[union].T))  # (trials, union voxels)
        del data
    betas = np.concatenate(chunks, axis=0)
    del chunks

    # A voxel unusable in any trial of any session is dropped everywhere, so every
    # session (and train and test) keeps the same columns.
    nonfinite = ~np.isfinite(betas).all(axis=0)
    constant = np.zeros_like(nonfinite)
    if cfg.drop_constant_voxels:
        finite = betas[:, ~nonfinite]
        constant[~nonfinite] = finite.max(axis=0) == finite.min(axis=0)

    arrays, ijk, dropped_nf, dropped_const = {}, {}, {}, {}
    for label in labels:
        cols = columns[label]
        keep = cols[~nonfinite[cols] & ~constant[cols]]
        dropped_nf[label] = int(nonfinite[cols].sum())
        dropped_const[label] = int(constant[cols].sum())
        if keep.size == 0:
            raise InputDataError(
                files.masks[label],
                f"all {cols.size} voxels of {label} are NaN/Inf or constant in the betas: nothing left to use",
            )
        arrays[label] = betas[:, keep].astype(np.float32)
        ijk[label] = union_ijk[keep].astype(np.int32)
    return RoiBetas(labels, arrays, ijk, dropped_nf, dropped_const, dict(sessions_expected), grid, affine)


def check_sessions(files: SubjectFiles, per_session: dict[int, int], subject: int) -> None:
    """Every session 1..last must have both its betas file and its presentation lists."""
    last = max(max(files.betas), max(per_session))
    for session in range(1, last + 1):
        if session not in files.betas:
            where = next(iter(files.betas.values())).parent
            raise InputDataError(
                where / BETAS_NAME.format(subject=subject, session=session),
                f"betas file of session {session} is missing (sessions found: {sorted(files.betas)})",
            )
        if session not in per_session:
            raise InputDataError(
                files.lists_dir / f"CSI{subject}_sess{session:02d}",
                f"presentation lists of session {session} are missing (betas exist for sessions {sorted(files.betas)})",
            )


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


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}


class ImageFinder:
    """Image name -> file: exact name, else case-insensitive name, else same stem with an image suffix
    (a list saying `x.jpg` for a file `x.JPEG`); copies under `presented_dir` win over others."""

    def __init__(self, index: RawIndex, presented_dir: str):
        self.index = index
        self.presented_dir = presented_dir
        self.by_lower: dict[str, list[Path]] = {}
        self.by_stem: dict[str, list[Path]] = {}
        for name, paths in index.files.items():
            self.by_lower.setdefault(name.lower(), []).extend(paths)
            if Path(name).suffix.lower() in IMAGE_SUFFIXES:
                self.by_stem.setdefault(Path(name).stem.lower(), []).extend(paths)
        self.repaired: list[str] = []

    def find(self, name: str) -> Path | None:
        candidates = self.index.files.get(name, [])
        if not candidates:
            candidates = self.by_lower.get(name.lower()) or self.by_stem.get(Path(name).stem.lower(), [])
            if candidates:
                self.repaired.append(f"{name} -> {candidates[0].name}")
        if len(candidates) > 1:
            preferred = [p for p in candidates if self.presented_dir in p.parts]
            candidates = preferred or candidates
        return candidates[0] if candidates else None


def load_square_image(path: Path, size: int) -> np.ndarray:
    """RGB, centre-cropped to a square, resized to size x size, uint8."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            side = min(w, h)
            left, top = (w - side) // 2, (h - side) // 2
            im = im.crop((left, top, left + side, top + side))
            if side != size:
                im = im.resize((size, size), Image.BICUBIC)
            return np.asarray(im, dtype=np.uint8)
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad files
        raise InputDataError(path, f"cannot read image ({type(exc).__name__}: {exc})") from None


def load_images(finder: ImageFinder, names: Sequence[str], size: int) -> np.ndarray:
    paths = [finder.find(name) for name in names]
    missing = [n for n, p in zip(names, paths) if p is None]
    if missing:
        raise InputDataError(
            finder.index.root,
            f"{len(missing)} stimulus image(s) not found under this folder, e.g. {', '.join(missing[:5])}",
        )
    out = np.empty((len(names), size, size, 3), dtype=np.uint8)
    for row, path in enumerate(paths):
        out[row] = load_square_image(path, size)
    return out


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
