"""Simulate one BOLD5000 subject as release 2.0 lays it out (GLMsingle betas, ROI masks, lists).

Tree written under `out_dir` (the `<raw>/bold5000` folder; names as in the real release,
which spreads them over figshare, OpenNeuro ds001499 derivatives/spm and the stimulus zip):

    CSI{n}_GLMbetas-TYPED-FITHRF-GLMDENOISE-RR_ses-{01..}.nii.gz   float32 (X, Y, Z, trials_in_session),
                                                               2 mm affine; NaN/Inf outside the brain
                                                               and at a few voxels inside it
    CSI{n}_brainmask.nii.gz                                    uint8 (X, Y, Z)
    CSI{n}_imgnames.txt                                        one image name per trial, chronological,
                                                               `rep_` stripped; WRITTEN LAST (the
                                                               subject is complete when it exists)
    sub-CSI{n}/sub-CSI{n}_mask-{LH,RH}{EarlyVis,LOC,OPA,PPA,RSC}.nii.gz   uint8 ROI masks on the betas'
                                                               grid, with the real naming defects:
                                                               `LHLO`/`RHLO` for LOC (CSI2, CSI3) and
                                                               `RHRRSC` for RSC (CSI2) by default
    BOLD5000_Stimuli/Stimuli_Presentation_Lists/CSI{n}/CSI{n}_sessXX/CSI_sessXX_runYY.txt
                                                               one name per line, a repeat presentation
                                                               prefixed `rep_` (note `CSI_`: no number)
    BOLD5000_Stimuli/Scene_Stimuli/repeated_stimuli_113_list.txt    the test images (scaled down; shared)
    BOLD5000_Stimuli/Scene_Stimuli/Presented_Stimuli/ImageNet/n0900000k_i.JPEG   the images (shared)

Design (scaled down from 15 sessions x 9-10 runs x 37 trials): session s has
`runs_per_session[s % len]` runs of `trials_per_run` trials. The test images
(`n_test_images` of the stimulus test set) are each shown `test_repeats`
times; every other trial shows a training image (the stimulus training set,
cycled when there are more trials than images). Trial order is shuffled per
subject. Subject `partial_subject` (CSI4) has only `partial_sessions` sessions
and partial repeats, as in the real release: test image 0 is never shown,
image 1 once, the others alternately `test_repeats` and `test_repeats - 1` times.

Responses: a `VoxelModel` per subject (seed + subject) with EarlyVis
retinotopic (split into hemispheres by receptive-field side: the left
hemisphere sees the right visual field) and LOC/OPA/PPA/RSC category-selective,
calibrated on the stimulus set. Each ROI is a compact blob inside an
ellipsoidal brain mask, its model voxels matched to grid voxels by position.
Betas (percent signal change) = gain * (baseline + evoked + noise + a
per-session shift), per voxel; noise std = 1/snr, a `correlated_noise` share of it
spatially correlated spontaneous activity. In-brain voxels outside the ROIs
hold noise only.
"""

from __future__ import annotations

import gzip
import logging
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from mindvis.simulate.stimuli import StimulusSet, id_filename, load_stimuli
from mindvis.simulate.voxels import RoiSpec, build_voxel_model
from mindvis.utils.atomic import atomic_path, write_text
from mindvis.utils.errors import ConfigError

log = logging.getLogger(__name__)

ROIS = ("EarlyVis", "LOC", "OPA", "PPA", "RSC")
HEMISPHERES = ("LH", "RH")
BETAS_NAME = "CSI{subject}_GLMbetas-TYPED-FITHRF-GLMDENOISE-RR_ses-{session:02d}.nii.gz"
TRIAL_SECONDS = 10.0  # BOLD5000: 1 s image + 9 s fixation; the time step of the spontaneous noise
GRID_MM = 2.0
# Blob centres as grid fractions (x: left->right, y: posterior->anterior, z: inferior->superior) for LH;
# RH mirrors x. Rough anatomy: EarlyVis at the occipital pole, LOC lateral, OPA dorsal, PPA ventral-medial,
# RSC medial and anterior.
ROI_CENTRES = {
    "EarlyVis": (0.40, 0.12, 0.45),
    "LOC": (0.18, 0.25, 0.38),
    "OPA": (0.25, 0.28, 0.68),
    "PPA": (0.33, 0.42, 0.25),
    "RSC": (0.44, 0.50, 0.60),
}


def _default_roi_voxels() -> dict[str, int]:
    return {"EarlyVis": 160, "LOC": 100, "OPA": 50, "PPA": 70, "RSC": 40}


@dataclass
class Bold5000SimConfig:
    # Voxels per ROI, both hemispheres together (real CSI1: 1685 over the five ROIs).
    roi_voxels: dict[str, int] = field(default_factory=_default_roi_voxels)
    early_rf_size: float = 0.08  # EarlyVis receptive-field sigma, fraction of the image side
    grid: list[int] = field(default_factory=lambda: [20, 24, 18])  # betas grid (X, Y, Z), 2 mm voxels
    n_sessions: int = 5  # sessions of a full subject (real: 15)
    runs_per_session: list[int] = field(default_factory=lambda: [3, 2])  # session s gets entry s % len (real: 9 or 10)
    trials_per_run: int = 37  # as in the real release
    n_test_images: int = 0  # test images (repeated list); 0 = the whole stimulus test set (real: 113); more than
    #                         the stimulus test set holds moves training images to the test set (`borrow_test_images`)
    test_repeats: int = 4  # presentations of each test image (real: 4)
    partial_subject: int = 4  # the subject with fewer sessions and partial repeats (real: CSI4); 0 = none
    partial_sessions: int = 3  # its sessions (real: 9)
    misnamed_loc_subjects: list[int] = field(default_factory=lambda: [1])  # LOC masks named LHLO / RHLO
    misnamed_rsc_subjects: list[int] = field(default_factory=lambda: [4])  # RH RSC mask named RHRRSC
    snr: float = 1.0  # per-voxel evoked std / noise std of one trial (0.5 left stage B near chance)
    correlated_noise: float = 0.3  # share of noise variance that is spatially correlated spontaneous activity
    session_shift: float = 0.2  # std of a per-session, per-voxel offset (noise std units)
    nan_roi_voxels: int = 3  # ROI voxels that are NaN in every session (GLMsingle failures)
    inf_roi_voxels: int = 1  # ROI voxels that are +Inf in one session only
    nan_brain_voxels: int = 5  # other in-brain voxels that are NaN everywhere
    seed: int = 0  # subject N uses seed + N; the image design uses seed alone (shared by subjects)


def validate(cfg: Bold5000SimConfig) -> None:
    # >= 8 per ROI so that each hemisphere gets voxels (EarlyVis splits by receptive-field side).
    if set(cfg.roi_voxels) != set(ROIS) or any(int(v) < 8 for v in cfg.roi_voxels.values()):
        raise ConfigError(f"bold5000 simulate.roi_voxels must give >= 8 voxels for each of {', '.join(ROIS)}")
    if len(cfg.grid) != 3 or min(cfg.grid) < 8:
        raise ConfigError(f"bold5000 simulate.grid must be three sizes >= 8, got {cfg.grid}")
    if cfg.n_sessions < 1 or not cfg.runs_per_session or min(cfg.runs_per_session) < 1 or cfg.trials_per_run < 1:
        raise ConfigError("bold5000 simulate: n_sessions, runs_per_session entries and trials_per_run must be >= 1")
    if cfg.test_repeats < 2 or cfg.n_test_images < 0:
        raise ConfigError("bold5000 simulate: test_repeats >= 2 (they are the repeats), n_test_images >= 0")
    if not 1 <= cfg.partial_sessions <= cfg.n_sessions:
        raise ConfigError("bold5000 simulate: partial_sessions must be in 1..n_sessions")
    if not cfg.snr > 0 or not 0.0 <= cfg.correlated_noise <= 1.0 or cfg.session_shift < 0:
        raise ConfigError("bold5000 simulate: snr > 0, correlated_noise in [0, 1], session_shift >= 0")
    if min(cfg.nan_roi_voxels, cfg.inf_roi_voxels, cfg.nan_brain_voxels) < 0:
        raise ConfigError("bold5000 simulate: NaN/Inf voxel counts must be >= 0")
    if cfg.nan_roi_voxels + cfg.inf_roi_voxels > len(ROIS) * len(HEMISPHERES):
        raise ConfigError("bold5000 simulate: at most one NaN/Inf voxel per ROI mask (nan_roi_voxels + inf_roi_voxels <= 10)")


def mask_label(subject: int, label: str, cfg: Bold5000SimConfig) -> str:
    """The label in the mask's file name, with the real release's naming defects."""
    if subject in cfg.misnamed_loc_subjects and label in ("LHLOC", "RHLOC"):
        return label[:-1]  # LHLO, RHLO
    if subject in cfg.misnamed_rsc_subjects and label == "RHRSC":
        return "RHRRSC"
    return label


# --------------------------------------------------------------------------- the trial design
@dataclass
class Design:
    """One subject's trials: which image each shows, split into sessions and runs."""

    runs: list[list[int]]  # per session, trials per run
    is_test: np.ndarray  # (T,) bool
    image: np.ndarray  # (T,) row in the stimulus train or test images
    test_rows: np.ndarray  # the stimulus test rows in the repeated list (shared by subjects)

    @property
    def n_trials(self) -> int:
        return int(self.image.size)


def session_runs(n_sessions: int, cfg: Bold5000SimConfig) -> list[list[int]]:
    return [[cfg.trials_per_run] * cfg.runs_per_session[s % len(cfg.runs_per_session)] for s in range(n_sessions)]


def test_counts(n_test: int, subject: int, cfg: Bold5000SimConfig) -> np.ndarray:
    """Presentations per test image: all `test_repeats`, or the partial subject's pattern."""
    counts = np.full(n_test, cfg.test_repeats, dtype=np.int64)
    if subject == cfg.partial_subject:
        counts[1::2] = cfg.test_repeats - 1
        counts[: min(2, n_test)] = [0, 1][: min(2, n_test)]  # one never shown, one shown once
    return counts


def borrow_test_images(stim: StimulusSet, n_test: int, seed: int) -> StimulusSet:
    """The stimulus set with at least `n_test` test images.

    BOLD5000 repeats 113 test images; a stimulus set of 10 digit classes holds fewer
    held-out images. The missing ones move from the training images to the test
    images (a seeded choice, the same for every subject), so they are never shown
    as training trials and the repeated list stays disjoint from the training set.
    """
    extra = n_test - len(stim.test_images)
    if extra <= 0:
        return stim
    if extra >= len(stim.train_images):
        raise ConfigError(f"bold5000 simulate.n_test_images={n_test} needs {extra} training images as test "
                          f"images, but the stimulus set has only {len(stim.train_images)}")
    moved = np.sort(np.random.default_rng([seed, 5001]).choice(len(stim.train_images), size=extra, replace=False))
    kept = np.setdiff1d(np.arange(len(stim.train_images)), moved)
    log.info("bold5000: %d test images wanted, the stimulus test set has %d: %d training images become test images",
             n_test, len(stim.test_images), extra)
    return replace(stim, train_images=stim.train_images[kept], train_labels=stim.train_labels[kept],
                   train_ids=stim.train_ids[kept],
                   test_images=np.concatenate([stim.test_images, stim.train_images[moved]]),
                   test_labels=np.concatenate([stim.test_labels, stim.train_labels[moved]]),
                   test_ids=np.concatenate([stim.test_ids, stim.train_ids[moved]]))


def make_design(stim: StimulusSet, subject: int, cfg: Bold5000SimConfig) -> Design:
    shared = np.random.default_rng([cfg.seed, 5000])  # the same image set for every subject
    n_test_avail = len(stim.test_images)
    n_test = cfg.n_test_images or n_test_avail
    if n_test > n_test_avail:
        raise ConfigError(f"bold5000 simulate.n_test_images={n_test} but the stimulus set has {n_test_avail} test images")
    test_rows = np.sort(shared.choice(n_test_avail, size=n_test, replace=False))
    train_order = shared.permutation(len(stim.train_images))

    n_sessions = cfg.partial_sessions if subject == cfg.partial_subject else cfg.n_sessions
    runs = session_runs(n_sessions, cfg)
    total = sum(sum(r) for r in runs)
    counts = test_counts(n_test, subject, cfg)
    n_test_trials = int(counts.sum())
    n_train_trials = total - n_test_trials
    if n_train_trials < 1:
        raise ConfigError(
            f"bold5000 simulate: {total} trials for CSI{subject} cannot hold {n_test_trials} test presentations "
            "and any training trial; add sessions/runs or lower n_test_images / test_repeats"
        )
    if n_train_trials > len(train_order):
        log.info("CSI%d: %d training trials over %d training images: images repeat", subject, n_train_trials, len(train_order))
    train_images = train_order[np.arange(n_train_trials) % len(train_order)]
    is_test = np.concatenate([np.zeros(n_train_trials, bool), np.ones(n_test_trials, bool)])
    image = np.concatenate([train_images, np.repeat(test_rows, counts)])
    order = np.random.default_rng([cfg.seed, subject, 1]).permutation(total)
    return Design(runs=runs, is_test=is_test[order], image=image[order], test_rows=test_rows)


def image_names(stim: StimulusSet, design: Design) -> list[str]:
    return [
        id_filename((stim.test_ids if test else stim.train_ids)[row])
        for test, row in zip(design.is_test.tolist(), design.image.tolist())
    ]


# --------------------------------------------------------------------------- anatomy
@dataclass
class Anatomy:
    brain: np.ndarray  # (X, Y, Z) bool
    roi_masks: dict[str, np.ndarray]  # label -> (X, Y, Z) bool
    voxel_ijk: np.ndarray  # (V, 3) grid index of each model voxel
    voxel_label: list[str]  # label of each model voxel


def brain_mask(grid: tuple[int, int, int]) -> np.ndarray:
    """An ellipsoid filling most of the grid (the rest is outside the head)."""
    axes = [(np.arange(n) + 0.5) / n - 0.5 for n in grid]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    return (x / 0.46) ** 2 + (y / 0.47) ** 2 + (z / 0.45) ** 2 <= 1.0


def split_hemispheres(model, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Model voxel indices per label. EarlyVis by RF side (contralateral), other ROIs at random."""
    out = {}
    for roi in ROIS:
        idx = np.flatnonzero(model.roi_mask(roi))
        if roi == "EarlyVis":
            right_field = model.rf_centres[idx, 0] >= 0.5
        else:
            right_field = np.zeros(idx.size, bool)
            right_field[rng.permutation(idx.size)[: idx.size // 2]] = True
        out[f"LH{roi}"] = idx[right_field]
        out[f"RH{roi}"] = idx[~right_field]
    return out


def _standardise(x: np.ndarray) -> np.ndarray:
    sd = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


def place_rois(model, grid: tuple[int, int, int], rng: np.random.Generator) -> Anatomy:
    """Each label becomes a blob of in-brain voxels near its centre; model voxels are matched to
    blob voxels by (standardised) position, so neighbours in the model stay neighbours on the grid."""
    from scipy.optimize import linear_sum_assignment

    brain = brain_mask(grid)
    free = brain.copy()
    ijk_all = np.argwhere(brain)
    members = split_hemispheres(model, rng)
    voxel_ijk = np.zeros((model.n_voxels, 3), dtype=np.int64)
    voxel_label = [""] * model.n_voxels
    masks = {}
    for roi in ROIS:
        for hemi in HEMISPHERES:
            label = f"{hemi}{roi}"
            idx = members[label]
            cx, cy, cz = ROI_CENTRES[roi]
            centre = np.array([cx if hemi == "LH" else 1.0 - cx, cy, cz]) * np.asarray(grid)
            centre = centre + rng.uniform(-1.0, 1.0, size=3)  # subjects differ a little
            candidates = ijk_all[free[tuple(ijk_all.T)]]
            d = ((candidates + 0.5 - centre) ** 2).sum(axis=1)
            if candidates.shape[0] < idx.size:
                raise ConfigError(f"bold5000 simulate.grid {list(grid)} has no room for {label} ({idx.size} voxels)")
            blob = candidates[np.argsort(d, kind="stable")[: idx.size]]
            cost = ((_standardise(model.coords[idx])[:, None, :] - _standardise(blob.astype(float))[None]) ** 2).sum(-1)
            rows, cols = linear_sum_assignment(cost)
            voxel_ijk[idx[rows]] = blob[cols]
            for i in idx:
                voxel_label[i] = label
            mask = np.zeros(grid, dtype=bool)
            mask[tuple(blob.T)] = True
            free &= ~mask
            masks[label] = mask
    return Anatomy(brain, masks, voxel_ijk, voxel_label)


# --------------------------------------------------------------------------- responses
def roi_specs(cfg: Bold5000SimConfig) -> list[RoiSpec]:
    return [
        RoiSpec(roi, int(cfg.roi_voxels[roi]), "retinotopic" if roi == "EarlyVis" else "category", cfg.early_rf_size)
        for roi in ROIS
    ]


def trial_responses(model, stim: StimulusSet, design: Design, cfg: Bold5000SimConfig, rng) -> np.ndarray:
    """(T, V) noisy responses in signal-std units (evoked has unit std per voxel after calibration)."""
    signal = np.empty((design.n_trials, model.n_voxels), dtype=np.float32)
    for is_test, images, labels in ((False, stim.train_images, stim.train_labels), (True, stim.test_images, stim.test_labels)):
        sel = design.is_test == is_test
        rows = np.unique(design.image[sel])
        if rows.size:
            evoked = model.evoked(images[rows], labels[rows])
            signal[sel] = evoked[np.searchsorted(rows, design.image[sel])]
    white = rng.standard_normal(signal.shape).astype(np.float32)
    spont = np.concatenate([model.spontaneous(sum(r), rng, tr=TRIAL_SECONDS) for r in design.runs])
    noise = (math.sqrt(1.0 - cfg.correlated_noise) * white + math.sqrt(cfg.correlated_noise) * spont) / cfg.snr
    return signal + noise


# --------------------------------------------------------------------------- writing
def save_nifti_gz(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    """Atomic, byte-deterministic .nii.gz (no time stamp or temp name in the gzip header)."""
    import nibabel as nib

    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    payload = img.to_bytes()
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz:
            gz.write(payload)


def grid_affine(grid: tuple[int, int, int]) -> np.ndarray:
    """2 mm RAS affine with the grid centred on the origin."""
    affine = np.diag([GRID_MM, GRID_MM, GRID_MM, 1.0])
    affine[:3, 3] = -GRID_MM * (np.asarray(grid) - 1) / 2.0
    return affine


def _write_image(path: Path, pixels: np.ndarray) -> None:
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(pixels).save(tmp, format="JPEG", quality=95)


def _remove_stale(out: Path, subject: int, n_sessions: int, keep_masks: set[str]) -> None:
    """Files of an earlier run with more sessions or other mask names would confuse the preprocessing."""
    for path in out.glob(f"CSI{subject}_GLMbetas-TYPED-FITHRF-GLMDENOISE-RR_ses-*.nii.gz"):
        if int(path.name.split("_ses-")[1].split(".")[0]) > n_sessions:
            path.unlink()
    for path in (out / f"sub-CSI{subject}").glob(f"sub-CSI{subject}_mask-*.nii.gz"):
        if path.name not in keep_masks:
            path.unlink()
    lists = out / "BOLD5000_Stimuli" / "Stimuli_Presentation_Lists" / f"CSI{subject}"
    for folder in lists.glob(f"CSI{subject}_sess*"):
        if folder.is_dir() and int(folder.name.split("_sess")[1]) > n_sessions:
            for f in folder.iterdir():
                f.unlink()
            folder.rmdir()


def simulate_bold5000_subject(stim: StimulusSet, subject: int, out_dir: str | Path, cfg: Bold5000SimConfig) -> dict:
    """Simulate subject CSI{subject} and write its release files; return a summary."""
    validate(cfg)
    stim = borrow_test_images(stim, cfg.n_test_images, cfg.seed)
    out = Path(out_dir)
    grid = tuple(int(g) for g in cfg.grid)
    seed = cfg.seed + subject
    model = build_voxel_model(roi_specs(cfg), stim.train_images.shape[1], stim.n_classes, seed)
    model.calibrate(np.concatenate([stim.train_images, stim.test_images]), np.concatenate([stim.train_labels, stim.test_labels]))
    rng = np.random.default_rng([seed, 5])
    design = make_design(stim, subject, cfg)
    names = image_names(stim, design)
    anatomy = place_rois(model, grid, rng)
    responses = trial_responses(model, stim, design, cfg, rng)

    # Percent signal change: a positive mean response and a gain per voxel, plus per-session shifts.
    n_brain = int(anatomy.brain.sum())
    gain = np.exp(rng.normal(0.0, 0.3, size=model.n_voxels)).astype(np.float32) * 0.8
    baseline = rng.uniform(0.5, 2.0, size=model.n_voxels).astype(np.float32)
    affine = grid_affine(grid)
    bounds = np.cumsum([0] + [sum(r) for r in design.runs])

    roi_ijk = anatomy.voxel_ijk
    roi_flat = np.ravel_multi_index(tuple(roi_ijk.T), grid)
    # At most one bad voxel per ROI mask, so no ROI loses a large share of its voxels.
    labels = sorted(anatomy.roi_masks)
    picked = rng.permutation(len(labels))[: cfg.nan_roi_voxels + cfg.inf_roi_voxels]
    voxel_label = np.asarray(anatomy.voxel_label)
    bad = np.asarray([rng.choice(np.flatnonzero(voxel_label == labels[k])) for k in picked], dtype=np.int64)
    nan_roi, inf_roi = bad[: cfg.nan_roi_voxels], bad[cfg.nan_roi_voxels :]
    inf_session = rng.integers(0, len(design.runs), size=inf_roi.size)
    other_brain = np.setdiff1d(np.flatnonzero(anatomy.brain.ravel()), roi_flat)
    nan_other = rng.choice(other_brain, size=min(cfg.nan_brain_voxels, other_brain.size), replace=False)
    outside = np.flatnonzero(~anatomy.brain.ravel())
    inf_outside = outside[rng.random(outside.size) < 0.01]

    mask_files = {
        label: f"sub-CSI{subject}_mask-{mask_label(subject, label, cfg)}.nii.gz" for label in anatomy.roi_masks
    }
    _remove_stale(out, subject, len(design.runs), set(mask_files.values()))

    # Shared files first (identical for every subject), then this subject's, imgnames last.
    scene = out / "BOLD5000_Stimuli" / "Scene_Stimuli"
    test_names = [id_filename(i) for i in stim.test_ids[design.test_rows]]
    write_text(scene / "repeated_stimuli_113_list.txt", "".join(n + "\n" for n in test_names))
    used = set(zip(design.is_test.tolist(), design.image.tolist())) | {(True, int(r)) for r in design.test_rows}
    for is_test, row in sorted(used):
        pixels, ids = (stim.test_images, stim.test_ids) if is_test else (stim.train_images, stim.train_ids)
        _write_image(scene / "Presented_Stimuli" / "ImageNet" / id_filename(ids[row]), pixels[row])

    for label, mask in anatomy.roi_masks.items():
        save_nifti_gz(out / f"sub-CSI{subject}" / mask_files[label], mask.astype(np.uint8), affine)
    save_nifti_gz(out / f"CSI{subject}_brainmask.nii.gz", anatomy.brain.astype(np.uint8), affine)

    for s, runs in enumerate(design.runs):
        rows = slice(bounds[s], bounds[s + 1])
        n = bounds[s + 1] - bounds[s]
        vol = np.full((int(np.prod(grid)), n), np.nan, dtype=np.float32)
        vol[np.flatnonzero(anatomy.brain.ravel())] = rng.normal(0.0, 1.5, size=(n_brain, n)).astype(np.float32)
        shift = rng.normal(0.0, cfg.session_shift / cfg.snr, size=model.n_voxels).astype(np.float32)
        vol[roi_flat] = (gain * (baseline + responses[rows] + shift)).T
        vol[roi_flat[nan_roi]] = np.nan
        vol[roi_flat[inf_roi[inf_session == s]]] = np.inf
        vol[nan_other] = np.nan
        vol[inf_outside] = np.inf
        save_nifti_gz(out / BETAS_NAME.format(subject=subject, session=s + 1), vol.reshape(grid + (n,)), affine)

    lists = out / "BOLD5000_Stimuli" / "Stimuli_Presentation_Lists" / f"CSI{subject}"
    seen: set[str] = set()
    trial = 0
    for s, runs in enumerate(design.runs, start=1):
        for r, n in enumerate(runs, start=1):
            lines = []
            for name in names[trial : trial + n]:
                lines.append(("rep_" if name in seen else "") + name)
                seen.add(name)
            trial += n
            write_text(lists / f"CSI{subject}_sess{s:02d}" / f"CSI_sess{s:02d}_run{r:02d}.txt", "\n".join(lines) + "\n")
    write_text(out / f"CSI{subject}_imgnames.txt", "".join(n + "\n" for n in names))

    shown = {name: names.count(name) for name in test_names}
    summary = {
        "subject": f"CSI{subject}",
        "sessions": len(design.runs),
        "runs": sum(len(r) for r in design.runs),
        "trials": design.n_trials,
        "train_trials": int((~design.is_test).sum()),
        "test_images": len(test_names),
        "test_images_shown": int(sum(1 for c in shown.values() if c)),
        "test_presentations": shown,
        "voxels_per_roi": {label: int(m.sum()) for label, m in anatomy.roi_masks.items()},
        "mask_files": mask_files,
        "bad_voxels_per_roi": {label: int(np.isin(bad, np.flatnonzero(voxel_label == label)).sum()) for label in labels},
        "nan_roi_voxels": int(nan_roi.size),
        "inf_roi_voxels": int(inf_roi.size),
        "grid": list(grid),
        "snr": float(cfg.snr),
    }
    log.info(
        "CSI%d: %d sessions, %d trials (%d train, %d test images shown of %d), voxels per ROI %s -> %s",
        subject, summary["sessions"], summary["trials"], summary["train_trials"], summary["test_images_shown"],
        summary["test_images"], summary["voxels_per_roi"], out,
    )
    return summary


def simulate_bold5000(stimuli_npz: str | Path, subject: int, out_dir: str | Path, cfg: Bold5000SimConfig) -> dict:
    """Read stimuli.npz and write subject CSI{subject}'s release files under `out_dir`."""
    return simulate_bold5000_subject(load_stimuli(stimuli_npz), subject, out_dir, cfg)
