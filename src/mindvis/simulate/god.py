"""Simulate one GOD subject and write it as the real release does: a BData `SubjectN.h5`.

Brain: one `VoxelModel` per subject (seed = config seed + subject) with the
seven GOD ROIs (V1-V4 retinotopic with growing receptive fields; LOC, FFA,
PPA category-selective) plus voxels outside visual cortex (all ROI flags 0),
so that selecting ROI_VC matters. As in the real files the ROI flags overlap:
LVC = V1|V2|V3, HVC = LOC|FFA|PPA, VC = union of the seven, and a fraction
(`hvc_overlap`) of FFA and PPA voxels is also flagged LOC.

Session (MinD-Vis's public code):
- DataType 1, training perception: every training image once, over `n_runs` runs;
- DataType 2, test perception: every test image `test_repeats` times, one run
  per repeat (each run shows every test image once, as in GOD);
- DataType 3, imagery: `imagery_trials` trials cycling over the classes, one run
  per round of classes; stimulus_id is the category-level id (the WordNet number).
Trial order is shuffled within runs. Each trial's response is the model's
evoked (or imagery) pattern plus noise at `snr` (signal std / noise std per
voxel; a `correlated_noise` share of the noise variance is the model's
spatially correlated spontaneous activity, the rest white), plus per-run
drifts (an offset and a linear trend per voxel, std `drift`).

Columns: voxels (sorted in volume order z, y, x, so ROIs interleave as in a
real file), then the label columns DataType, Run, stimulus_id, Label. Metadata
follow bdpy: a flag key is 1 on its columns, 0 on other voxel columns where it
is a voxel property, NaN where it does not apply.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mindvis.io.bdata import write_bdata
from mindvis.simulate.stimuli import StimulusSet, load_stimuli
from mindvis.simulate.voxels import RoiSpec, build_voxel_model
from mindvis.utils.errors import ConfigError

log = logging.getLogger(__name__)

GOD_ROIS = ("V1", "V2", "V3", "V4", "LOC", "FFA", "PPA")
DERIVED_ROIS = {"LVC": ("V1", "V2", "V3"), "HVC": ("LOC", "FFA", "PPA"), "VC": GOD_ROIS}
# RF sigma as a fraction of the image side: grows along the hierarchy, as in cortex.
RF_SIZES = {"V1": 0.05, "V2": 0.08, "V3": 0.12, "V4": 0.18}
CATEGORY_ROIS = ("LOC", "FFA", "PPA")
TRIAL_SECONDS = 9.0  # GOD: 9 s stimulus blocks; the time step of the trial-level spontaneous noise
LABEL_KEYS = ("DataType", "Run", "stimulus_id", "Label")
DATATYPE_TRAIN, DATATYPE_TEST, DATATYPE_IMAGERY = 1, 2, 3


def _default_rois() -> dict[str, int]:
    return {"V1": 150, "V2": 120, "V3": 100, "V4": 80, "LOC": 100, "FFA": 60, "PPA": 60}


@dataclass
class GodSimConfig:
    rois: dict[str, int] = field(default_factory=_default_rois)  # voxels per GOD ROI (all seven required)
    n_other_voxels: int = 100  # voxels outside visual cortex (every ROI flag 0)
    hvc_overlap: float = 0.1  # share of FFA and PPA voxels also flagged LOC (real ROIs overlap)
    snr: float = 1.0  # per-voxel signal std / noise std of one trial (0.4 left stage B at chance)
    correlated_noise: float = 0.5  # share of the noise variance that is spatially correlated spontaneous activity
    test_repeats: int = 10  # presentations of each test image (GOD: 35)
    imagery_trials: int = 20  # imagery trials, cycling over the classes (GOD: 500)
    n_runs: int = 4  # runs the training trials are spread over (GOD: 24)
    drift: float = 0.3  # std of the per-run, per-voxel offset and linear-trend amplitude (signal std units)
    seed: int = 0  # subject N uses seed + N


def validate(cfg: GodSimConfig) -> None:
    if set(cfg.rois) != set(GOD_ROIS):
        raise ConfigError(
            f"god simulate.rois must name exactly the GOD ROIs {', '.join(GOD_ROIS)}; got {', '.join(cfg.rois)}"
        )
    bad = [k for k, v in cfg.rois.items() if int(v) < 1]
    if bad:
        raise ConfigError(f"god simulate.rois: every ROI needs >= 1 voxel ({', '.join(bad)})")
    if cfg.n_other_voxels < 0 or cfg.test_repeats < 1 or cfg.imagery_trials < 0 or cfg.n_runs < 1:
        raise ConfigError("god simulate: n_other_voxels >= 0, test_repeats >= 1, imagery_trials >= 0, n_runs >= 1")
    if not cfg.snr > 0:
        raise ConfigError(f"god simulate.snr must be > 0, got {cfg.snr}")
    if not 0.0 <= cfg.correlated_noise <= 1.0 or not 0.0 <= cfg.hvc_overlap <= 1.0 or cfg.drift < 0:
        raise ConfigError("god simulate: correlated_noise and hvc_overlap in [0, 1], drift >= 0")


@dataclass
class Trials:
    """The session's trial table, in presentation order."""

    datatype: np.ndarray  # (n,) int
    run: np.ndarray  # (n,) int, 1-based, unique over the session
    stimulus_id: np.ndarray  # (n,) float64
    label: np.ndarray  # (n,) int class index
    image: np.ndarray  # (n,) int: row in train (DataType 1) or test (DataType 2) images, -1 for imagery


def make_trials(stim: StimulusSet, cfg: GodSimConfig, rng: np.random.Generator) -> Trials:
    """Lay out runs and shuffle trial order within each run."""
    blocks: list[tuple[int, np.ndarray]] = []  # (datatype, image rows or class indices) per run
    n_train = len(stim.train_ids)
    for chunk in np.array_split(rng.permutation(n_train), min(cfg.n_runs, n_train)):
        blocks.append((DATATYPE_TRAIN, chunk))
    for _ in range(cfg.test_repeats):
        blocks.append((DATATYPE_TEST, rng.permutation(len(stim.test_ids))))
    if cfg.imagery_trials:
        classes = np.arange(cfg.imagery_trials) % stim.n_classes
        for start in range(0, cfg.imagery_trials, stim.n_classes):
            blocks.append((DATATYPE_IMAGERY, rng.permutation(classes[start : start + stim.n_classes])))
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("datatype", "run", "stimulus_id", "label", "image")}
    for run, (dtype, rows) in enumerate(blocks, start=1):
        if dtype == DATATYPE_TRAIN:
            ids, labels, image = stim.train_ids[rows], stim.train_labels[rows], rows
        elif dtype == DATATYPE_TEST:
            ids, labels, image = stim.test_ids[rows], stim.test_labels[rows], rows
        else:
            ids, labels, image = stim.class_wnids[rows].astype(np.float64), rows, np.full(rows.size, -1)
        cols["datatype"].append(np.full(rows.size, dtype))
        cols["run"].append(np.full(rows.size, run))
        cols["stimulus_id"].append(ids)
        cols["label"].append(labels)
        cols["image"].append(image)
    c = {k: np.concatenate(v) for k, v in cols.items()}
    return Trials(
        datatype=c["datatype"].astype(np.int64),
        run=c["run"].astype(np.int64),
        stimulus_id=c["stimulus_id"].astype(np.float64),
        label=c["label"].astype(np.int64),
        image=c["image"].astype(np.int64),
    )


def roi_specs(cfg: GodSimConfig) -> list[RoiSpec]:
    specs = [
        RoiSpec(name, int(cfg.rois[name]), "retinotopic" if name in RF_SIZES else "category", RF_SIZES.get(name, 0.1))
        for name in GOD_ROIS
    ]
    if cfg.n_other_voxels:
        specs.append(RoiSpec("other", int(cfg.n_other_voxels), "none"))
    return specs


def _roi_flags(model, cfg: GodSimConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """1/0 flags per GOD ROI key over the model's voxels, with the real files' overlaps."""
    flags = {name: model.roi_mask(name).copy() for name in GOD_ROIS}
    for name in ("FFA", "PPA"):
        members = np.flatnonzero(flags[name])
        extra = rng.choice(members, size=int(round(cfg.hvc_overlap * members.size)), replace=False)
        flags["LOC"][extra] = True
    for name, parts in DERIVED_ROIS.items():
        flags[name] = np.logical_or.reduce([flags[p] for p in parts])
    return flags


def _descriptions(flag_names: list[str]) -> dict[str, str]:
    d = {
        "VoxelData": "1 = voxel (fMRI data) column",
        "voxel_x": "voxel x coordinate (mm)",
        "voxel_y": "voxel y coordinate (mm)",
        "voxel_z": "voxel z coordinate (mm)",
        "DataType": "1 = DataType column: 1 = training perception, 2 = test perception, 3 = imagery",
        "Run": "1 = Run column: run number",
        "stimulus_id": "1 = stimulus_id column: WNID.IIIIII image id (category id for imagery)",
        "Label": "1 = Label column: class index of the stimulus",
    }
    for name in flag_names:
        roi = name[len("ROI_") :]
        parts = DERIVED_ROIS.get(roi)
        d[name] = f"1 = voxel in {roi}" + (f" ({' + '.join(parts)})" if parts else "")
    return d


def simulate_god_subject(stim: StimulusSet, subject: int, cfg: GodSimConfig) -> tuple[dict, dict]:
    """Simulate one subject. Returns (bdata dict: dataset, keys, descriptions, values) and a summary."""
    validate(cfg)
    seed = cfg.seed + subject
    model = build_voxel_model(roi_specs(cfg), stim.train_images.shape[1], stim.n_classes, seed)
    # Normalise evoked responses over this experiment's own images, so snr means what it says.
    all_images = np.concatenate([stim.train_images, stim.test_images])
    all_labels = np.concatenate([stim.train_labels, stim.test_labels])
    model.calibrate(all_images, all_labels)
    rng = np.random.default_rng([seed, 7])

    trials = make_trials(stim, cfg, rng)
    n = trials.datatype.size
    signal = np.zeros((n, model.n_voxels), dtype=np.float32)
    evoked_train = model.evoked(stim.train_images, stim.train_labels)
    evoked_test = model.evoked(stim.test_images, stim.test_labels)
    is_tr, is_te, is_im = (trials.datatype == d for d in (DATATYPE_TRAIN, DATATYPE_TEST, DATATYPE_IMAGERY))
    signal[is_tr] = evoked_train[trials.image[is_tr]]
    signal[is_te] = evoked_test[trials.image[is_te]]
    if is_im.any():
        signal[is_im] = model.imagery(trials.label[is_im])

    # Perception signals have unit std per voxel (calibration), so noise std 1/snr gives the
    # configured SNR; voxels without drive (outside VC) get the same noise level as the rest.
    noise_sd = 1.0 / cfg.snr
    white = rng.standard_normal(signal.shape).astype(np.float32)
    spont = np.concatenate(
        [model.spontaneous(int((trials.run == r).sum()), rng, tr=TRIAL_SECONDS) for r in np.unique(trials.run)]
    )
    noise = noise_sd * (math.sqrt(1.0 - cfg.correlated_noise) * white + math.sqrt(cfg.correlated_noise) * spont)
    drift = np.zeros_like(signal)
    for r in np.unique(trials.run):
        rows = np.flatnonzero(trials.run == r)
        t = np.linspace(-0.5, 0.5, rows.size, dtype=np.float32)[:, None]
        offset = rng.normal(0.0, cfg.drift, model.n_voxels).astype(np.float32)
        slope = rng.normal(0.0, cfg.drift, model.n_voxels).astype(np.float32)
        drift[rows] = offset + t * slope
    data = signal + noise + drift

    flags = _roi_flags(model, cfg, rng)
    # Volume order (z, then y, then x), as a real file lists voxels; ROIs interleave.
    order = np.lexsort((model.coords[:, 0], model.coords[:, 1], model.coords[:, 2]))
    data = data[:, order]
    coords = model.coords[order]
    flags = {k: v[order] for k, v in flags.items()}

    n_vox = model.n_voxels
    n_cols = n_vox + len(LABEL_KEYS)
    flag_names = [f"ROI_{r}" for r in (*GOD_ROIS, *DERIVED_ROIS)]
    keys = ["VoxelData", "voxel_x", "voxel_y", "voxel_z", *flag_names, *LABEL_KEYS]
    values = np.full((len(keys), n_cols), np.nan)
    values[0, :n_vox] = 1.0
    values[1:4, :n_vox] = coords.T
    for i, name in enumerate(flag_names):
        values[4 + i, :n_vox] = flags[name[len("ROI_") :]].astype(np.float64)
    for j, key in enumerate(LABEL_KEYS):
        values[keys.index(key), n_vox + j] = 1.0
    labels = np.column_stack([trials.datatype, trials.run, trials.stimulus_id, trials.label]).astype(np.float64)
    dataset = np.concatenate([data.astype(np.float64), labels], axis=1)
    desc = _descriptions(flag_names)

    summary = {
        "subject": int(subject),
        "n_voxels": int(n_vox),
        "n_trials": int(n),
        "n_runs": int(np.unique(trials.run).size),
        "trials_per_datatype": {str(d): int((trials.datatype == d).sum()) for d in (1, 2, 3)},
        "voxels_per_roi": {r: int(flags[r].sum()) for r in (*GOD_ROIS, *DERIVED_ROIS)},
        "n_other_voxels": int(cfg.n_other_voxels),
        "snr": float(cfg.snr),
    }
    bdata = {"dataset": dataset, "keys": keys, "descriptions": [desc[k] for k in keys], "values": values}
    return bdata, summary


def simulate_god(stimuli_npz: str | Path, subject: int, out_path: str | Path, cfg: GodSimConfig) -> dict:
    """Read stimuli.npz, simulate subject `subject`, write `out_path` (BData .h5); return the summary."""
    stim = load_stimuli(stimuli_npz)
    bdata, summary = simulate_god_subject(stim, subject, cfg)
    write_bdata(out_path, bdata["dataset"], bdata["keys"], bdata["descriptions"], bdata["values"])
    t = summary["trials_per_datatype"]
    log.info(
        "GOD subject %d: %d trials (training %s, test %s, imagery %s) in %d runs, %d voxels -> %s",
        subject, summary["n_trials"], t["1"], t["2"], t["3"], summary["n_runs"], summary["n_voxels"], out_path,
    )
    log.info("GOD subject %d voxels per ROI: %s", subject, summary["voxels_per_roi"])
    return summary
