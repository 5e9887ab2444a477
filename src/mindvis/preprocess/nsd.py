"""NSD raw release -> one subject's npz in the BOLD5000 npz layout (docs/reference.md section 9.4).

Inputs, at the release's own paths under <root> (XX subject, NN session, zero-padded):
  nsddata/experiments/nsd/nsd_expdesign.mat                       masterordering, subjectim, sharedix
  nsddata_betas/ppdata/subjXX/<space>/<betas_type>/betas_sessionNN.nii.gz   (X, Y, Z, trials) int16
      or betas_sessionNN.hdf5 dataset /betas (trials, Z, Y, X)       (config betas: nifti | hdf5)
  nsddata/ppdata/subjXX/<space>/roi/<atlas>.nii.gz                 -1 outside brain, 0 none, >0 labels
  nsddata/freesurfer/subjXX/label/<atlas>.mgz.ctab                 label names (not needed for nsdgeneral)
  nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5                     imgBrick (images, H, W, 3) uint8
  nsddata/ppdata/subjXX/behav/responses.tsv                        optional cross-check of the trial order

Steps: betas / beta_scale (300); the ROI's voxels (C order of the grid, as numpy `volume[mask]`);
global trial t = (session-1)*T + i (T = trials per session, from the files) -> 0-based 73k id
subjectim[s-1, masterordering[t]-1]-1; test trials: masterordering[t] <= n_shared (n_shared =
len(sharedix)); z-score per voxel within each session (zscore: session, MindEye2; ddof 0, a
constant voxel gives 0; session_train: fitted on the session's training trials only) or with the
training rows' mean and std ddof=1 (zscore: train, Brain-Diffuser; applied to train and test);
test = shared images shown, ascending 73k id, averaged over their repeats; training = every other
trial, chronological (or averaged per image, train_average, images in order of first presentation).

Output keys (one subject, V voxels):
  arr_0 (n_train, V) float32       training rows: single trials (chronological) or per-image averages
  arr_1 (n_test_trials, V) float32 test trials, image by image, chronological within an image
  arr_2 (n_test, V) float32        test trials averaged per image; row i <-> test_images[i]
  arr_3 (n_train,) int64           row of train_images of each arr_0 row
  test_trial_image_index (n_test_trials,) int64   row of arr_2 of each arr_1 row
  train_trial_index, test_trial_index  int64      position of each arr_0 / arr_1 row among the trials read
                                                  (chronological, 0..n-1; train_trial_index only for single trials)
  train_trial_global, test_trial_global int64     0-based NSD global trial (index into masterordering) of the same rows
  train_nsd_id (n_train_images,), test_nsd_id (n_test,) int64   0-based 73k id (imgBrick row) of each image
  train_repeats (n_train_images,), test_repeats (n_test,) int64  trials read per image
  train_images (n_train_images, S, S, 3), test_images (n_test, S, S, 3) uint8   at image_size (S)
  test_images_pixel (n_test, P, P, 3) uint8       at pixel_image_size (P, 425 = native: the pixel metrics)
  roi_order (k,) str                ROI mask keys; each key: bool (V,) e.g. nsdgeneral, or V1v V1d ... + the atlas
  voxel_ijk (V, 3) int32, affine (4, 4)           grid index of each column; the ROI image's affine
  sessions (n_sessions,) int64, trials_per_session () int64, subject () str "subjXX"
  zscore () str, train_average () bool, beta_scale () float64
  zscore_mean, zscore_std (V,) float64            only with zscore: train (the statistics applied)
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mindvis.io.nsd import (
    BetasSession,
    NsdDesign,
    StimulusBrick,
    read_ctab,
    read_design,
    read_responses,
    read_roi_image,
    roi_mask,
)
from mindvis.preprocess.nsd_zscore import SESSION_ZSCORES, ZSCORES, apply_statistics, train_statistics, zscore_session
from mindvis.utils.atomic import save_npz
from mindvis.utils.errors import ConfigError, InputDataError

log = logging.getLogger(__name__)

BETAS_KINDS = {"nifti": (".nii.gz", ".nii"), "hdf5": (".hdf5",)}
# Label tables used when an atlas's .mgz.ctab is absent (a logged repair; docs/reference.md §9.4).
KNOWN_LABELS = {
    "nsdgeneral": {"nsdgeneral": 1},
    "prf-visualrois": {"V1v": 1, "V1d": 2, "V2v": 3, "V2d": 4, "V3v": 5, "V3d": 6, "hV4": 7},
    "streams": {"early": 1, "midventral": 2, "midlateral": 3, "midparietal": 4, "ventral": 5, "lateral": 6,
                "parietal": 7},
}
_RESERVED = re.compile(r"^(arr_\d+|.*_images.*|.*_index|.*_global|.*_nsd_id|.*_repeats|roi_order|voxel_ijk|affine|"
                       r"sessions|trials_per_session|subject|zscore.*|train_average|beta_scale)$")


@dataclass
class NsdPreprocessConfig:
    # Sessions 1..N must all be present (fewer is an error); 0: every session found on disk.
    sessions: int = 0
    # "nsdgeneral" (value 1), "<atlas>" (every label > 0) or "<atlas>:<name>,<name>" (labels by name
    # through the atlas's .mgz.ctab), e.g. "prf-visualrois:V1v,V1d" or "streams:ventral".
    roi: str = "nsdgeneral"
    # "session": per voxel within each session (MindEye2); "session_train": the same statistics from each
    # session's training trials only; "train": training rows' mean/std ddof=1 (Brain-Diffuser). See nsd_zscore.
    zscore: str = "session"
    # Training rows: false = one per trial (MindEye2), true = averaged per image (Brain-Diffuser).
    train_average: bool = False
    # Which betas files to read: "nifti" (betas_sessionNN.nii.gz) or "hdf5" (betas_sessionNN.hdf5).
    betas: str = "nifti"
    # Side of train_images / test_images (the model's input).
    image_size: int = 256
    # Side of test_images_pixel (PixCorr / SSIM are computed at 425 px in the field).
    pixel_image_size: int = 425
    # Release sub-folders: the betas' space and GLM version.
    space: str = "func1pt8mm"
    betas_type: str = "betas_fithrf_GLMdenoise_RR"
    # The stored betas are percent signal change times this.
    beta_scale: float = 300.0
    # Cross-check the design's trial order against behav/responses.tsv when the file exists.
    check_responses: bool = True
    # Trials read at a time from a NIfTI (memory: this many whole volumes of int16).
    trials_per_chunk: int = 50
    # np.savez_compressed for the npz.
    compress_npz: bool = False


def validate(cfg: NsdPreprocessConfig) -> None:
    for key, choices in (("zscore", ZSCORES), ("betas", tuple(BETAS_KINDS))):
        if getattr(cfg, key) not in choices:
            raise ConfigError(f"nsd preprocess: {key} must be one of {choices}, got {getattr(cfg, key)!r}")
    if cfg.image_size < 8 or cfg.pixel_image_size < 8:
        raise ConfigError("nsd preprocess: image_size and pixel_image_size must be >= 8")
    if cfg.sessions < 0 or cfg.trials_per_chunk < 1 or not cfg.beta_scale > 0:
        raise ConfigError("nsd preprocess: sessions >= 0, trials_per_chunk >= 1 and beta_scale > 0 are required")
    parse_roi(cfg.roi)


def parse_roi(spec: str) -> tuple[str, list[str]]:
    """"atlas" or "atlas:name,name" -> (atlas, names)."""
    atlas, _, names = spec.partition(":")
    labels = [n.strip() for n in names.split(",") if n.strip()]
    if not atlas.strip() or (":" in spec and not labels):
        raise ConfigError(f"nsd preprocess: roi must be '<atlas>' or '<atlas>:<label>,<label>', got {spec!r}")
    return atlas.strip(), labels


@dataclass(frozen=True)
class NsdPaths:
    root: Path
    subject: int
    cfg: NsdPreprocessConfig

    @property
    def sub(self) -> str:
        return f"subj{self.subject:02d}"

    @property
    def design(self) -> Path:
        return self.root / "nsddata" / "experiments" / "nsd" / "nsd_expdesign.mat"

    @property
    def betas_dir(self) -> Path:
        return self.root / "nsddata_betas" / "ppdata" / self.sub / self.cfg.space / self.cfg.betas_type

    def betas(self, session: int) -> Path:
        return self.betas_dir / f"betas_session{session:02d}{BETAS_KINDS[self.cfg.betas][0]}"

    def roi(self, atlas: str) -> Path:
        return self.root / "nsddata" / "ppdata" / self.sub / self.cfg.space / "roi" / f"{atlas}.nii.gz"

    def ctab(self, atlas: str) -> Path:
        return self.root / "nsddata" / "freesurfer" / self.sub / "label" / f"{atlas}.mgz.ctab"

    @property
    def stimuli(self) -> Path:
        return self.root / "nsddata_stimuli" / "stimuli" / "nsd" / "nsd_stimuli.hdf5"

    @property
    def responses(self) -> Path:
        return self.root / "nsddata" / "ppdata" / self.sub / "behav" / "responses.tsv"


# --------------------------------------------------------------------------- sessions and ROI
def find_sessions(paths: NsdPaths, repairs: list[str]) -> dict[int, Path]:
    """Session number -> betas file: 1..sessions (all required) or every one present."""
    pattern = re.compile(r"^betas_session(\d+)(" + "|".join(re.escape(s) for s in BETAS_KINDS[paths.cfg.betas]) + ")$")
    found: dict[int, Path] = {}
    if paths.betas_dir.is_dir():
        for p in sorted(paths.betas_dir.iterdir()):
            match = pattern.match(p.name)
            if match and int(match.group(1)) >= 1:
                found.setdefault(int(match.group(1)), p)  # .nii.gz sorts before .nii: the release's name wins
    wanted = paths.cfg.sessions
    if wanted:
        missing = [s for s in range(1, wanted + 1) if s not in found]
        if missing:
            raise InputDataError(paths.betas(missing[0]), f"{paths.sub} has {len(found)} session(s) of betas "
                                 f"({_ranges(sorted(found))}) but sessions: {wanted} was configured; missing "
                                 f"session(s) {_ranges(missing)}")
        return {s: found[s] for s in range(1, wanted + 1)}
    if not found:
        raise InputDataError(paths.betas(1), f"no betas_sessionNN{BETAS_KINDS[paths.cfg.betas][0]} files for {paths.sub}")
    gaps = [s for s in range(1, max(found) + 1) if s not in found]
    if gaps:
        repairs.append(f"sessions {_ranges(gaps)} absent: read the {len(found)} present, each at its own global trials")
        log.warning("%s: betas of session(s) %s absent under %s; reading the %d present", paths.sub, _ranges(gaps),
                    paths.betas_dir, len(found))
    return found


def _ranges(values: list[int]) -> str:
    return ", ".join(str(v) for v in values[:10]) + (" ..." if len(values) > 10 else "")


@dataclass
class RoiSelection:
    path: Path
    ijk: np.ndarray  # (V, 3) grid indices in C order
    masks: dict[str, np.ndarray]  # key -> bool (V,)
    grid: tuple[int, int, int]
    affine: np.ndarray


def select_roi(paths: NsdPaths, repairs: list[str]) -> RoiSelection:
    """The voxels of config roi and one mask per selected label (plus the atlas) over them."""
    atlas, names = parse_roi(paths.cfg.roi)
    image = read_roi_image(paths.roi(atlas))
    if names or atlas != "nsdgeneral":
        table = _label_table(paths, atlas, repairs)
        unknown = [n for n in names if n not in table]
        if unknown:
            raise InputDataError(paths.ctab(atlas), f"no label {', '.join(unknown)} in {atlas} "
                                                    f"(labels: {', '.join(table) or 'none'})")
        chosen = {n: table[n] for n in names} if names else {n: v for n, v in table.items() if v > 0}
        bad = [n for n, v in chosen.items() if v <= 0]
        if bad:
            raise InputDataError(paths.ctab(atlas), f"label(s) {', '.join(bad)} have value <= 0 (not an ROI)")
    else:
        chosen = {"nsdgeneral": 1}
    union = roi_mask(image, sorted(set(chosen.values())))
    if not union.any():
        raise InputDataError(image.path, f"ROI {paths.cfg.roi} selects no voxel (values {sorted(set(chosen.values()))})")
    ijk = np.argwhere(union)  # C order: numpy's volume[mask] order, as Brain-Diffuser's beta[mask > 0]
    values = image.values[tuple(ijk.T)]
    masks = {}
    for name, value in chosen.items():
        key = name if not _RESERVED.match(name) else f"roi_{name}"
        masks[key] = values == value
    masks.setdefault(atlas, np.ones(len(ijk), dtype=bool))
    empty = [k for k, m in masks.items() if not m.any()]
    if empty:
        log.warning("%s: label(s) %s select no voxel", image.path, ", ".join(empty))
    return RoiSelection(image.path, ijk.astype(np.int64), masks, tuple(image.values.shape), image.affine)


def _label_table(paths: NsdPaths, atlas: str, repairs: list[str]) -> dict[str, int]:
    ctab = paths.ctab(atlas)
    if ctab.is_file():
        return read_ctab(ctab)
    if atlas in KNOWN_LABELS:
        repairs.append(f"{ctab.name} absent: used the release's documented {atlas} labels")
        log.warning("%s not found: using NSD's documented %s labels %s", ctab, atlas, KNOWN_LABELS[atlas])
        return dict(KNOWN_LABELS[atlas])
    raise InputDataError(ctab, f"ROI label table not found: labels of {atlas} cannot be named")


# --------------------------------------------------------------------------- trials
@dataclass
class TrialTable:
    sessions: list[int]
    per_session: int  # T, trials per session
    global_trial: np.ndarray  # (n,) 0-based NSD global trial of each trial read
    nsd_id: np.ndarray  # (n,) 0-based 73k id
    shared: np.ndarray  # (n,) bool: a shared (test) image


def trial_table(design: NsdDesign, subject: int, sessions: list[int], per_session: int) -> TrialTable:
    g = np.concatenate([(s - 1) * per_session + np.arange(per_session, dtype=np.int64) for s in sessions])
    ids = design.trial_ids(subject, g)
    return TrialTable(sessions, per_session, g, ids, design.masterordering[g] < design.n_shared)


def check_responses(path: Path, design_path: Path, table: TrialTable) -> None:
    """responses.tsv's 73KID of every trial read must be the design's: else an error naming both files."""
    sessions, ids = read_responses(path)
    for k, session in enumerate(table.sessions):
        expected = table.nsd_id[k * table.per_session:(k + 1) * table.per_session]
        got = ids[sessions == session]
        if got.size != expected.size:
            raise InputDataError(path, f"{got.size} rows for session {session} but its betas hold {expected.size} "
                                       f"trials (design {design_path})")
        diff = np.flatnonzero(got != expected)
        if diff.size:
            i = int(diff[0])
            raise InputDataError(path, f"disagrees with {design_path} at session {session} trial {i + 1} (global trial "
                                       f"{(session - 1) * table.per_session + i + 1}, 1-based): responses.tsv 73KID "
                                       f"{int(got[i]) + 1}, design {int(expected[i]) + 1} ({diff.size} trials differ)")


@dataclass
class Split:
    test_ids: np.ndarray  # (n_test,) ascending 73k ids
    test_groups: list[np.ndarray]  # positions (among trials read) of each test image's trials
    train_trials: np.ndarray  # positions of the training trials, chronological
    train_ids: np.ndarray  # (n_train_images,) first-presentation order
    train_image_index: np.ndarray  # (n_train_trials,) row of train_ids


def group_positions(positions: np.ndarray, owner: np.ndarray, n_groups: int) -> list[np.ndarray]:
    """`positions` split by `owner` (0..n_groups-1, one per position), each group in its original order."""
    if not n_groups:
        return []
    counts = np.bincount(owner, minlength=n_groups)
    return np.split(positions[np.argsort(owner, kind="stable")], np.cumsum(counts)[:-1])


def split_trials(table: TrialTable) -> Split:
    test_pos = np.flatnonzero(table.shared)
    test_ids, test_owner = np.unique(table.nsd_id[test_pos], return_inverse=True)
    groups = group_positions(test_pos, test_owner.reshape(-1), test_ids.size)
    train = np.flatnonzero(~table.shared)
    uniq, first, inverse = np.unique(table.nsd_id[train], return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")  # ascending id -> first-presentation order
    train_ids = uniq[order]
    row_of = np.empty(order.size, dtype=np.int64)
    row_of[order] = np.arange(order.size)
    index = row_of[inverse.reshape(-1)]
    return Split(test_ids, groups, train, train_ids, index)


# --------------------------------------------------------------------------- betas
def read_betas(files: dict[int, Path], roi: RoiSelection, cfg: NsdPreprocessConfig, repairs: list[str],
               shared: np.ndarray) -> tuple[np.ndarray, int]:
    """(n_sessions*T, V) float32: every session's ROI voxels / beta_scale, z-scored per session if configured
    (session_train: statistics of the trials that are not `shared`, the test images)."""
    sessions = sorted(files)
    opened = {s: BetasSession(files[s], cfg.betas) for s in sessions}
    per_session = opened[sessions[0]].n_trials
    for s in sessions:
        opened[s].check_grid(roi.grid, roi.affine, roi.path)
        if opened[s].n_trials != per_session:
            raise InputDataError(files[s], f"{opened[s].n_trials} trials, but {files[sessions[0]].name} has "
                                           f"{per_session}: every session must hold the same number")
    out = np.empty((len(sessions) * per_session, len(roi.ijk)), dtype=np.float32)
    constant = 0
    for k, s in enumerate(sessions):
        x = opened[s].read_voxels(roi.ijk, trials_per_chunk=cfg.trials_per_chunk).astype(np.float64)
        x /= cfg.beta_scale
        if cfg.zscore in SESSION_ZSCORES:
            fit = ~shared[k * per_session:(k + 1) * per_session] if cfg.zscore == "session_train" else None
            constant += zscore_session(x, fit, files[s])
        out[k * per_session:(k + 1) * per_session] = x
        del x
        log.info("session %d: %d trials x %d voxels read from %s", s, per_session, len(roi.ijk), files[s].name)
    if constant:
        repairs.append(f"{constant} (session, voxel) pairs constant over the fitted trials of a session: std 1")
    return out, per_session


def average_groups(rows: np.ndarray, groups: list[np.ndarray]) -> np.ndarray:
    return np.stack([rows[g].astype(np.float64).mean(axis=0) for g in groups]).astype(np.float32) if groups \
        else np.zeros((0, rows.shape[1]), dtype=np.float32)


# --------------------------------------------------------------------------- images
def load_images(brick: StimulusBrick, ids: np.ndarray, size: int) -> np.ndarray:
    """imgBrick rows of `ids` at size x size (antialiased bilinear as data.images, native size untouched)."""
    from mindvis.data.images import resize_images, to_hwc

    out = np.empty((len(ids), size, size, 3), dtype=np.uint8)
    row = 0
    for batch in brick.batches(ids):
        if batch.shape[1:3] != (size, size):
            batch = to_hwc(resize_images(batch, size))
        out[row:row + len(batch)] = batch
        row += len(batch)
    return out


# --------------------------------------------------------------------------- the job
def preprocess_nsd_subject(root: str | Path, subject: int, out: str | Path,
                           cfg: NsdPreprocessConfig | None = None) -> dict:
    """Convert one subject; return the summary (counts for logs and MLflow)."""
    cfg = cfg or NsdPreprocessConfig()
    validate(cfg)
    started = time.perf_counter()
    root, out = Path(root), Path(out)
    if not root.is_dir():
        raise InputDataError(root, "NSD release folder not found")
    paths = NsdPaths(root, subject, cfg)
    repairs: list[str] = []
    design = read_design(paths.design)
    design.subject_ids(subject)  # the subject exists in the design
    files = find_sessions(paths, repairs)
    roi = select_roi(paths, repairs)
    brick = StimulusBrick(paths.stimuli)

    # Headers first (cheap), so every bad-input check runs before the betas are read.
    per_session = BetasSession(files[min(files)], cfg.betas).n_trials
    table = trial_table(design, subject, sorted(files), per_session)
    brick.check_ids(table.nsd_id, paths.design)
    if cfg.check_responses and paths.responses.is_file():
        check_responses(paths.responses, paths.design, table)
        log.info("%s: trial order matches %s", paths.sub, paths.responses)
    elif cfg.check_responses:
        log.info("%s not found: trial order not cross-checked", paths.responses)
    split = split_trials(table)
    if not split.test_groups or not split.train_trials.size:
        raise InputDataError(paths.design, f"{paths.sub}: {len(split.test_groups)} shared and "
                                           f"{split.train_trials.size} training trials in the sessions read: "
                                           "both splits need some")

    betas, per_session = read_betas(files, roi, cfg, repairs, table.shared)
    test_trials = np.concatenate(split.test_groups)
    test_owner = np.repeat(np.arange(len(split.test_groups), dtype=np.int64), [g.size for g in split.test_groups])
    test_repeats = np.asarray([g.size for g in split.test_groups], dtype=np.int64)
    train_repeats = np.bincount(split.train_image_index, minlength=split.train_ids.size).astype(np.int64)
    if cfg.train_average:
        train_rows = average_groups(betas, group_positions(split.train_trials, split.train_image_index,
                                                           split.train_ids.size))
        train_index = np.arange(split.train_ids.size, dtype=np.int64)
    else:
        train_rows = betas[split.train_trials]
        train_index = split.train_image_index
    test_rows = betas[test_trials]
    del betas
    extra: dict[str, np.ndarray] = {}
    if cfg.zscore == "train":  # Brain-Diffuser: statistics of the training rows as written, ddof=1
        mean, std = train_statistics(train_rows, paths.design)
        zero = std == 0
        if zero.any():
            repairs.append(f"{int(zero.sum())} voxel(s) constant over the training rows: std taken as 1")
            log.warning("%d voxel(s) constant over the training rows: their std is taken as 1", int(zero.sum()))
            std = np.where(zero, 1.0, std)
        apply_statistics(train_rows, mean, std)
        apply_statistics(test_rows, mean, std)
        extra.update(zscore_mean=mean, zscore_std=std)
    test_avg = average_groups(test_rows, group_positions(np.arange(test_owner.size), test_owner, len(split.test_groups)))
    if not cfg.train_average:
        extra.update(train_trial_index=split.train_trials, train_trial_global=table.global_trial[split.train_trials])

    train_images = load_images(brick, split.train_ids, cfg.image_size)
    test_images = load_images(brick, split.test_ids, cfg.image_size)
    test_pixel = load_images(brick, split.test_ids, cfg.pixel_image_size)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_npz(
        out,
        compressed=cfg.compress_npz,
        # the MinD-Vis (BOLD5000) layout, then the key groups of the module docstring, in its order
        arr_0=train_rows, arr_1=test_rows, arr_2=test_avg, arr_3=train_index,
        test_trial_image_index=test_owner,
        test_trial_index=test_trials, test_trial_global=table.global_trial[test_trials],
        train_nsd_id=split.train_ids, test_nsd_id=split.test_ids,
        train_repeats=train_repeats, test_repeats=test_repeats,
        train_images=train_images, test_images=test_images, test_images_pixel=test_pixel,
        roi_order=np.asarray(list(roi.masks), dtype=str), voxel_ijk=roi.ijk.astype(np.int32), affine=roi.affine,
        sessions=np.asarray(sorted(files), dtype=np.int64),
        trials_per_session=np.asarray(per_session, dtype=np.int64), subject=np.asarray(paths.sub),
        zscore=np.asarray(cfg.zscore), train_average=np.asarray(cfg.train_average),
        beta_scale=np.asarray(float(cfg.beta_scale)),
        **extra,
        **roi.masks,
    )
    summary = {
        "subject": paths.sub,
        "sessions": len(files),
        "trials_per_session": per_session,
        "trials": int(table.global_trial.size),
        "voxels": int(len(roi.ijk)),
        "voxels_per_roi": {k: int(m.sum()) for k, m in roi.masks.items()},
        "n_train_rows": int(train_rows.shape[0]),
        "n_train_images": int(split.train_ids.size),
        "n_test_images": int(split.test_ids.size),
        "n_test_trials": int(test_trials.size),
        "n_shared_in_design": design.n_shared,
        "test_images_not_shown": int(design.n_shared - split.test_ids.size),
        "test_repeat_counts": {str(k): int((test_repeats == k).sum()) for k in np.unique(test_repeats)},
        "zscore": cfg.zscore,
        "train_average": cfg.train_average,
        "repairs": repairs,
        "n_repairs": len(repairs),
        "npz": str(out),
        "seconds": round(time.perf_counter() - started, 3),
    }
    log.info("%s: %d sessions x %d trials, %d voxels; train %d rows / %d images; test %d images from %d trials "
             "(zscore %s)", paths.sub, len(files), per_session, len(roi.ijk), train_rows.shape[0],
             split.train_ids.size, split.test_ids.size, test_trials.size, cfg.zscore)
    return summary
