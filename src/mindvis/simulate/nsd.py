"""Simulate a small Natural Scenes Dataset release (Allen et al. 2022) in the real file formats
(docs/reference.md, NSD). One call writes the whole tree below `root`:

    nsddata/experiments/nsd/nsd_expdesign.mat          MATLAB v5: masterordering (1, n_trials) 1-based 10k
                                                       index per global trial (ONE order for all subjects);
                                                       subjectim (8, images_per_subject) 1-based 73k ids,
                                                       columns 0..n_shared-1 the shared images, equal in all
                                                       rows; sharedix (1, n_shared) 1-based 73k ids (sorted);
                                                       stimpattern (sessions, runs, slots) 1 = stimulus trial;
                                                       basiccnt (3, sessions) images shown 1st/2nd/3rd time
    nsddata/experiments/nsd/nsd_stim_info_merged.csv   unnamed 0.. index, cocoId, cocoSplit, cropBox, loss,
                                                       nsdId (0-based), flagged, BOLD5000, shared1000,
                                                       subject1..8 (0/1 in the subject's set),
                                                       subjectK_rep0..2 (1-based global trial, 0 = never)
    nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5       imgBrick uint8 (n_73k, S, S, 3), row = 0-based 73k id
                                                       (the stimulus images upscaled, S = brick_size = 425)
    nsddata/ppdata/subjXX/func1pt8mm/brainmask.nii.gz  int16 0/1
    nsddata/ppdata/subjXX/func1pt8mm/roi/nsdgeneral.nii.gz     int16 -1 outside the brain, 0, 1
    nsddata/ppdata/subjXX/func1pt8mm/roi/prf-visualrois.nii.gz int16 -1 outside, 0 none, 1..7 V1v V1d V2v
                                                       V2d V3v V3d hV4
    nsddata/ppdata/subjXX/func1pt8mm/roi/streams.nii.gz        int16 -1 outside, 0 none, 1 early, 5 ventral,
                                                       6 lateral (labels 2-4 and 7 exist but are unused)
    nsddata/freesurfer/subjXX/label/{prf-visualrois,streams,nsdgeneral}.mgz.ctab   "<int> <name>" lines
    nsddata/ppdata/subjXX/behav/responses.tsv          tab-separated, NSD's 19 columns, 1-based 73KID/10KID,
                                                       every trial of every session (missing ones included)
    nsddata_betas/ppdata/subjXX/func1pt8mm/betas_fithrf_GLMdenoise_RR/betas_sessionNN.nii.gz
                                                       int16 (X, Y, Z, trials_per_session) = round(% signal
                                                       change x 300), 0 outside the brain, no scl_slope
    .../betas_sessionNN.hdf5 (with hdf5: true)         /betas int16 (trials, Z, Y, X): the NIfTI transposed
    simulation_truth/subjXX.npz                        the ground truth (below); written last per subject

A session listed in `missing_sessions` ("SUBJ:SESS") has no betas files (its trials stay in
responses.tsv, as the design holds them) and no truth rows.

simulation_truth/subjXX.npz keys (T = trials with betas, in presentation order; V = voxels with
nsdgeneral == 1, in C order of the (X, Y, Z) grid, i.e. `volume[mask == 1]` of a nibabel array):
    subject ()                      the subject number
    nsd_id (T,) int64               0-based 73k id (= imgBrick row) shown at each trial
    global_trial (T,) int64         0-based index into masterordering ((session-1)*trials_per_session + i)
    session, run, trial (T,) int64  1-based session, run and trial within the run (responses.tsv)
    ten_k (T,) int64                1-based 10k index (masterordering value)
    shared (T,) bool                the trial shows a shared image (ten_k <= n_shared)
    betas (T, V) float32            betas_int16 / 300 (the exact values a reader gets after /300)
    betas_int16 (T, V) int16        the stored integers
    voxel_ijk (V, 3) int64          (x, y, z) grid index of each voxel
    prf_label, stream_label (V,)    the voxel's prf-visualrois and streams value
    image_label (n_73k,) int64      class of each 73k image (the stimulus set's labels)
    image_is_test (n_73k,) bool     the image is a stimulus-set test image
    image_row (n_73k,) int64        its row in the stimulus set's train or test images
    stimulus_id (n_73k,) float64    its stimulus id (cocoId in the csv = round(stimulus_id * 1e6))
    class_names (n_classes,) str
    shared_ids (n_shared,) int64    0-based 73k ids of the shared images (sharedix - 1)
    missing_sessions (k,) int64     this subject's sessions without betas
    n_sessions, trials_per_session ()   the design's size
    grid (3,) int64                 X, Y, Z

Responses: the project's voxel encoding model (simulate/voxels.py), one per subject (seed +
subject): V1..V3 retinotopic, split into ventral/dorsal parts by the RF's vertical position, hV4
retinotopic with larger RFs, `ventral` and `lateral` category-selective ROIs; all of them form
nsdgeneral. % signal change = gain x (baseline + evoked + noise + session shift) per voxel (noise
std 1/snr, a `correlated_noise` share of it the model's spontaneous activity over the trials of
a session); other in-brain voxels hold N(0, brain_noise) noise.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mindvis.simulate import nsd_design as nd
from mindvis.simulate import nsd_volume as nv
from mindvis.simulate.stimuli import StimulusSet, id_key
from mindvis.simulate.voxels import RoiSpec, build_voxel_model
from mindvis.utils.atomic import atomic_path, save_npz, write_text
from mindvis.utils.errors import ConfigError

log = logging.getLogger(__name__)

SCALE = 300  # NSD stores % signal change x 300 as int16
BETAS_DIR = "nsddata_betas/ppdata/subj{s:02d}/func1pt8mm/betas_fithrf_GLMdenoise_RR"
PPDATA = "nsddata/ppdata/subj{s:02d}"
EXPDESIGN = "nsddata/experiments/nsd/nsd_expdesign.mat"
STIM_INFO = "nsddata/experiments/nsd/nsd_stim_info_merged.csv"
STIMULI = "nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5"
TRUTH = "simulation_truth/subj{s:02d}.npz"
RF_SIZES = {"V1": 0.05, "V2": 0.08, "V3": 0.11, "hV4": 0.16}


def _default_roi_voxels() -> dict[str, int]:
    return {"V1": 120, "V2": 100, "V3": 80, "hV4": 50, "ventral": 100, "lateral": 80}


@dataclass
class NsdSimConfig:
    subjects: list[int] = field(default_factory=lambda: [1])  # 1..8 (NSD: 8 subjects)
    sessions: int = 3  # sessions of the design (NSD: 40)
    trials_per_session: int = 0  # NSD: 750; 0 = every presentation, shared out over the sessions
    runs_per_session: int = 12  # as in NSD (63/62 stimulus trials each at full size)
    shared_images: int = 0  # NSD: 1000 (shared1000); 0 = all test images of the stimulus set
    images_per_subject: int = 0  # NSD: 10000 (subjectim's columns); 0 = the shared ones + half the rest
    other_repeats: int = 3  # presentations of each non-shared image (NSD: 3, like the shared ones)
    grid: list[int] = field(default_factory=lambda: [24, 30, 24])  # 1.8 mm grid X Y Z (NSD subj01: 81 104 83)
    hdf5: bool = False  # also write betas_sessionNN.hdf5
    missing_sessions: list[str] = field(default_factory=list)  # "SUBJ:SESS" sessions whose betas are not written
    roi_voxels: dict[str, int] = field(default_factory=_default_roi_voxels)  # model voxels = nsdgeneral (NSD s1: 15724)
    snr: float = 1.0  # evoked std / noise std of one trial
    correlated_noise: float = 0.3  # share of noise variance that is spatially correlated spontaneous activity
    session_shift: float = 0.3  # std of a per-session, per-voxel offset (noise std units)
    brain_noise: float = 1.5  # std (% signal change) of in-brain voxels outside nsdgeneral
    brick_size: int = 425  # imgBrick image side (NSD: 425)
    chunk_trials: int = 50  # trials generated and written at a time (memory)
    seed: int = 0  # design and stimuli order: seed; subject N's brain and noise: seed + N


def validate(cfg: NsdSimConfig) -> None:
    if not cfg.subjects or any(not 1 <= s <= nd.N_SUBJECTS for s in cfg.subjects) or len(set(cfg.subjects)) != len(cfg.subjects):
        raise ConfigError(f"nsd simulate.subjects must be distinct numbers in 1..8, got {cfg.subjects}")
    if len(cfg.grid) != 3 or min(cfg.grid) < 8:
        raise ConfigError(f"nsd simulate.grid must be three sizes >= 8, got {cfg.grid}")
    if set(cfg.roi_voxels) != set(_default_roi_voxels()) or min(int(v) for v in cfg.roi_voxels.values()) < 4:
        raise ConfigError(f"nsd simulate.roi_voxels must give >= 4 voxels to each of {', '.join(_default_roi_voxels())}")
    if not cfg.snr > 0 or not 0 <= cfg.correlated_noise <= 1 or cfg.session_shift < 0 or cfg.brain_noise < 0:
        raise ConfigError("nsd simulate: snr > 0, correlated_noise in [0, 1], session_shift >= 0, brain_noise >= 0")
    if cfg.brick_size < 8 or cfg.chunk_trials < 1:
        raise ConfigError("nsd simulate: brick_size >= 8 and chunk_trials >= 1")
    missing_sessions(cfg)


def missing_sessions(cfg: NsdSimConfig) -> dict[int, set[int]]:
    """{subject: sessions without betas} from the "SUBJ:SESS" items."""
    out: dict[int, set[int]] = {}
    for item in cfg.missing_sessions:
        try:
            subj, sess = (int(p) for p in str(item).split(":"))
        except ValueError:
            raise ConfigError(f"nsd simulate.missing_sessions: {item!r} is not SUBJ:SESS (e.g. 1:3)") from None
        if subj not in cfg.subjects or not 1 <= sess <= cfg.sessions:
            raise ConfigError(f"nsd simulate.missing_sessions: {item!r} names no simulated subject/session "
                              f"(subjects {cfg.subjects}, sessions 1..{cfg.sessions})")
        out.setdefault(subj, set()).add(sess)
    return out


def _all_images(stim: StimulusSet) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    images = np.concatenate([stim.train_images, stim.test_images])
    labels = np.concatenate([stim.train_labels, stim.test_labels])
    ids = np.concatenate([stim.train_ids, stim.test_ids])
    is_test = np.r_[np.zeros(len(stim.train_ids), bool), np.ones(len(stim.test_ids), bool)]
    return images, labels, ids, is_test


def build_design(stim: StimulusSet, cfg: NsdSimConfig) -> nd.NsdDesign:
    n_train, n_test = len(stim.train_ids), len(stim.test_ids)
    shared = cfg.shared_images or n_test
    per_subject = cfg.images_per_subject or shared + (n_train + n_test - shared) // 2
    return nd.make_design(n_train, n_test, shared_images=shared, images_per_subject=per_subject,
                          other_repeats=cfg.other_repeats, sessions=cfg.sessions,
                          trials_per_session=cfg.trials_per_session, runs_per_session=cfg.runs_per_session,
                          seed=cfg.seed)


# --------------------------------------------------------------------------- shared files
def write_expdesign(path: Path, design: nd.NsdDesign, seed: int) -> None:
    import scipy.io

    rng = np.random.default_rng([seed, 7301])
    data = {
        "masterordering": design.masterordering[None, :].astype(np.float64),  # MATLAB doubles, as in NSD
        "subjectim": design.subjectim.astype(np.float64),
        "sharedix": design.shared_73k[None, :].astype(np.float64),
        "stimpattern": nd.stimpattern(design, rng).astype(np.float64),
        "basiccnt": nd.basiccnt(design).astype(np.float64),
    }
    with atomic_path(path) as tmp:
        scipy.io.savemat(tmp, data, format="5", do_compression=False, oned_as="row")


def write_stimuli_brick(path: Path, stim: StimulusSet, design: nd.NsdDesign, size: int) -> None:
    """imgBrick (n_73k, size, size, 3) uint8, one image (= one chunk) at a time."""
    import h5py
    from PIL import Image

    images = _all_images(stim)[0]
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        brick = f.create_dataset("imgBrick", shape=(design.n_73k, size, size, 3), dtype=np.uint8,
                                 chunks=(1, size, size, 3), compression="gzip", compression_opts=1)
        for i, row in enumerate(design.image_of_73k.tolist()):
            brick[i] = np.asarray(Image.fromarray(images[row]).resize((size, size), Image.Resampling.BICUBIC))


def write_shared(root: Path, stim: StimulusSet, design: nd.NsdDesign, cfg: NsdSimConfig) -> None:
    _, _, ids, is_test = _all_images(stim)
    coco = id_key(ids[design.image_of_73k])
    write_expdesign(root / EXPDESIGN, design, cfg.seed)
    write_text(root / STIM_INFO, nd.stim_info_csv(design, coco, is_test[design.image_of_73k]))
    write_stimuli_brick(root / STIMULI, stim, design, cfg.brick_size)


# --------------------------------------------------------------------------- one subject
def roi_specs(cfg: NsdSimConfig) -> list[RoiSpec]:
    return [RoiSpec(name, int(cfg.roi_voxels[name]), "retinotopic" if name in RF_SIZES else "category",
                    RF_SIZES.get(name, 0.1)) for name in _default_roi_voxels()]


def _quantise(pct: np.ndarray) -> np.ndarray:
    """% signal change -> NSD's int16 (x 300, rounded); float32 in, so a chunk's temporaries stay small."""
    scaled = np.rint(pct.astype(np.float32, copy=False) * np.float32(SCALE))
    return np.clip(scaled, -32768, 32767, out=scaled).astype(np.int16)


def write_subject(root: Path, stim: StimulusSet, design: nd.NsdDesign, subject: int, cfg: NsdSimConfig,
                  missing: set[int]) -> dict:
    grid = tuple(int(g) for g in cfg.grid)
    images, labels, ids, is_test = _all_images(stim)
    seed = cfg.seed + subject
    model = build_voxel_model(roi_specs(cfg), images.shape[1], stim.n_classes, seed)
    model.calibrate(images, labels)
    rng = np.random.default_rng([seed, 73])
    anatomy = nv.place(model, grid, rng)
    gain = (0.8 * np.exp(rng.normal(0.0, 0.3, size=model.n_voxels))).astype(np.float32)
    baseline = rng.uniform(0.0, 1.0, size=model.n_voxels).astype(np.float32)

    # Voxel order of the truth: nsdgeneral == 1 in C order of the grid.
    order = np.argsort(anatomy.voxel_flat)
    general_flat = anatomy.voxel_flat[order]
    nsd0 = design.nsd_ids(subject)
    shown = np.unique(nsd0)  # evoked rows only for the images this subject sees, not all n_73k
    rows = design.image_of_73k[shown]
    evoked_shown = model.evoked(images[rows], labels[rows])

    ppdata = root / PPDATA.format(s=subject)
    for name, vol in (("roi/nsdgeneral", anatomy.nsdgeneral), ("roi/prf-visualrois", anatomy.prf),
                      ("roi/streams", anatomy.streams), ("brainmask", anatomy.brain.astype(np.int16))):
        nv.write_label_volume(ppdata / "func1pt8mm" / f"{name}.nii.gz", vol, grid)
    label_dir = root / f"nsddata/freesurfer/subj{subject:02d}/label"
    write_text(label_dir / "prf-visualrois.mgz.ctab", nv.ctab_text(nv.PRF_LABELS))
    write_text(label_dir / "streams.mgz.ctab", nv.ctab_text(nv.STREAM_LABELS))
    write_text(label_dir / "nsdgeneral.mgz.ctab", nv.ctab_text(["nsdgeneral"]))
    sessions = list(range(1, design.n_sessions + 1))
    write_text(ppdata / "behav/responses.tsv",
               nd.responses_tsv(design, subject, sessions, np.random.default_rng([seed, 74])))

    betas_dir = root / BETAS_DIR.format(s=subject)
    _remove_stale(betas_dir, set(sessions) - missing, cfg.hdf5)
    run, within = design.run_and_trial()
    kept, truth_int = [], []
    brain_other = np.setdiff1d(np.flatnonzero(anatomy.brain.ravel()), general_flat)
    n_tps = design.trials_per_session
    for s in sessions:
        if s in missing:
            continue
        srng = np.random.default_rng([seed, 75, s])  # per session: a missing session changes no other
        trials = np.arange((s - 1) * n_tps, s * n_tps)
        # % signal change = gain * (baseline + evoked + noise + shift), built in place: (trials, V) float32
        pct = srng.standard_normal((n_tps, model.n_voxels), dtype=np.float32)
        pct *= np.float32(math.sqrt(1 - cfg.correlated_noise) / cfg.snr)
        spont = model.spontaneous(n_tps, srng, tr=nd.TRIAL_SECONDS)
        spont *= np.float32(math.sqrt(cfg.correlated_noise) / cfg.snr)
        pct += spont
        del spont
        shift = srng.normal(0.0, cfg.session_shift / cfg.snr, size=model.n_voxels).astype(np.float32)
        pct += evoked_shown[np.searchsorted(shown, nsd0[trials])]
        pct += baseline + shift
        pct *= gain
        roi_int = _quantise(pct)  # (n_tps, V) in model order
        del pct
        name = f"betas_session{s:02d}"
        with nv.BetasWriter(betas_dir / f"{name}.nii.gz", betas_dir / f"{name}.hdf5" if cfg.hdf5 else None,
                            grid, n_tps) as writer:
            for start in range(0, n_tps, cfg.chunk_trials):
                k = min(cfg.chunk_trials, n_tps - start)
                chunk = np.zeros((int(np.prod(grid)), k), dtype=np.int16)
                # drawn trial by trial, so the values do not depend on the chunk size
                noise_other = srng.standard_normal((k, brain_other.size), dtype=np.float32) * np.float32(cfg.brain_noise)
                chunk[brain_other] = _quantise(noise_other).T
                chunk[anatomy.voxel_flat] = roi_int[start : start + k].T
                writer.write(chunk.reshape(grid + (k,)))
        kept.append(trials)
        truth_int.append(roi_int[:, order])

    kept_t = np.concatenate(kept) if kept else np.zeros(0, np.int64)
    betas_int = np.concatenate(truth_int) if truth_int else np.zeros((0, model.n_voxels), np.int16)
    ijk = np.stack(np.unravel_index(general_flat, grid), axis=1).astype(np.int64)
    save_npz(
        root / TRUTH.format(s=subject),
        subject=np.int64(subject), nsd_id=nsd0[kept_t].astype(np.int64), global_trial=kept_t.astype(np.int64),
        session=(kept_t // n_tps + 1).astype(np.int64), run=run[kept_t].astype(np.int64),
        trial=within[kept_t].astype(np.int64), ten_k=design.masterordering[kept_t],
        shared=design.masterordering[kept_t] <= design.n_shared,
        betas=betas_int.astype(np.float32) / np.float32(SCALE), betas_int16=betas_int, voxel_ijk=ijk,
        prf_label=anatomy.prf.ravel()[general_flat], stream_label=anatomy.streams.ravel()[general_flat],
        image_label=labels[design.image_of_73k].astype(np.int64), image_is_test=is_test[design.image_of_73k],
        image_row=np.where(is_test, np.arange(len(ids)) - len(stim.train_ids), np.arange(len(ids)))[design.image_of_73k],
        stimulus_id=ids[design.image_of_73k], class_names=np.array(stim.class_names),
        shared_ids=design.shared_73k - 1, missing_sessions=np.array(sorted(missing), dtype=np.int64),
        n_sessions=np.int64(design.n_sessions), trials_per_session=np.int64(n_tps), grid=np.array(grid, np.int64),
    )
    return {
        "sessions_written": len(kept), "missing_sessions": sorted(missing), "trials": int(kept_t.size),
        "nsdgeneral_voxels": int(general_flat.size), "prf_voxels": int((anatomy.prf > 0).sum()),
        "brain_voxels": int(anatomy.brain.sum()),
    }


def _remove_stale(betas_dir: Path, sessions: set[int], hdf5: bool) -> None:
    """Betas of an earlier run (more sessions, a session now missing, hdf5 now off) would be read as data."""
    for path in betas_dir.glob("betas_session*"):
        stem = path.name.split(".")[0]
        try:
            s = int(stem.removeprefix("betas_session"))
        except ValueError:
            continue
        if s not in sessions or (path.suffix == ".hdf5" and not hdf5):
            path.unlink()


def simulate_nsd(stim: StimulusSet, root: str | Path, cfg: NsdSimConfig) -> dict:
    """Write the release tree below `root` for cfg.subjects; return a summary."""
    validate(cfg)
    root = Path(root)
    missing = missing_sessions(cfg)
    design = build_design(stim, cfg)
    write_shared(root, stim, design, cfg)
    subjects = {}
    for subject in cfg.subjects:
        subjects[f"subj{subject:02d}"] = write_subject(root, stim, design, subject, cfg, missing.get(subject, set()))
        log.info("nsd subj%02d: %s", subject, subjects[f"subj{subject:02d}"])
    summary = {
        "n_73k": design.n_73k, "shared_images": design.n_shared, "images_per_subject": int(design.subjectim.shape[1]),
        "sessions": design.n_sessions, "trials_per_session": design.trials_per_session,
        "runs": design.run_lengths, "grid": [int(g) for g in cfg.grid], "subjects": subjects,
    }
    log.info("nsd: %d images (%d shared, %d per subject), %d sessions x %d trials -> %s", design.n_73k,
             design.n_shared, design.subjectim.shape[1], design.n_sessions, design.trials_per_session, root)
    return summary
