"""CIFTI-2 dense time series (`*.dtseries.nii`): validated opening, lean reads, atomic writes.

A dtseries is a NIfTI-2 file (intent 3002, "ConnDenseSeries") whose CIFTI-2
XML extension names two axes: a SeriesAxis (time, step = TR) and a
BrainModelAxis (grayordinates: surface vertices per hemisphere, then voxels
of subcortical structures). nibabel exposes the data as a (frames,
grayordinates) array, stored on disk in NIfTI (Fortran) order: each
grayordinate's whole time series is one contiguous block. So the columns we
need (a few thousand visual grayordinates out of 91,282) are read as a few
contiguous byte ranges and the rest of the file is never touched; no float64
copy of a run is ever made.

Structure names are kept exactly as the file spells them
(`CIFTI_STRUCTURE_CORTEX_LEFT`, ...): atlases match grayordinates by
(structure, vertex), never by column position.
"""

from __future__ import annotations

import functools
import logging
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.cifti2 import cifti2_axes

from mindvis.utils.atomic import atomic_path
from mindvis.utils.errors import InputDataError

log = logging.getLogger(__name__)

DENSE_SERIES_INTENT = "ConnDenseSeries"  # NIfTI intent code 3002
CORTEX_LEFT = "CIFTI_STRUCTURE_CORTEX_LEFT"
CORTEX_RIGHT = "CIFTI_STRUCTURE_CORTEX_RIGHT"
MESH_32K_VERTICES = 32492  # vertices per hemisphere of the fs_LR 32k mesh

# What a short or corrupt data block raises from inside nibabel / numpy / gzip.
_READ_ERRORS = (OSError, ValueError, EOFError, zlib.error, MemoryError)


@dataclass(frozen=True)
class SurfaceColumns:
    """The grayordinates of one surface structure in one file."""

    structure: str
    columns: np.ndarray  # (n,) int64 column index in the file's data matrix
    vertices: np.ndarray  # (n,) int64 vertex index on the structure's mesh
    n_mesh_vertices: int  # size of the mesh those vertex indices refer to


class DtseriesRun:
    """An opened, header-validated dtseries; its data have not been read yet."""

    def __init__(self, path: Path, image: nib.Cifti2Image, series: cifti2_axes.SeriesAxis):
        self.path = path
        self.image = image
        self.series = series

    @property
    def n_frames(self) -> int:
        return int(self.series.size)

    @property
    def n_grayordinates(self) -> int:
        return int(self.image.shape[1])

    @property
    def tr(self) -> float:
        return float(self.series.step)

    @functools.cached_property
    def brain_models(self) -> cifti2_axes.BrainModelAxis:
        """nibabel's full BrainModelAxis (built on first use: ~0.1 s for 91,282 grayordinates)."""
        return self.image.header.get_axis(1)

    def surfaces(self) -> dict[str, SurfaceColumns]:
        """Surface structures straight from the header's brain models (a BrainModelAxis
        walk costs ~0.15 s on the 91,282 layout; this costs ~5 ms)."""
        out: dict[str, SurfaceColumns] = {}
        for bm in self.image.header.matrix.get_index_map(1).brain_models:
            if bm.model_type != "CIFTI_MODEL_TYPE_SURFACE":
                continue
            start, count = int(bm.index_offset), int(bm.index_count)
            vertices = np.asarray(bm.vertex_indices, dtype=np.int64)
            if vertices.size != count or start + count > self.n_grayordinates:
                raise InputDataError(
                    self.path, f"{bm.brain_structure}: {vertices.size} vertex indices for {count} "
                    f"grayordinates at offset {start} of {self.n_grayordinates}"
                )
            out[str(bm.brain_structure)] = SurfaceColumns(
                structure=str(bm.brain_structure),
                columns=np.arange(start, start + count, dtype=np.int64),
                vertices=vertices,
                n_mesh_vertices=int(bm.surface_number_of_vertices),
            )
        return out

    def read_columns(self, columns: np.ndarray) -> np.ndarray:
        return read_columns(self, columns)


def open_dtseries(path: str | os.PathLike) -> DtseriesRun:
    """Open a dtseries and check everything short of reading the data.

    Checks: the file exists and parses as CIFTI-2; axis 0 is a SeriesAxis and
    axis 1 a BrainModelAxis whose lengths match the data shape; for an
    uncompressed file, that it is long enough to hold the data the header
    promises (a truncated download otherwise parses fine and fails later).
    """
    p = Path(path)
    if not p.is_file():
        raise InputDataError(p, "file not found")
    try:
        img = nib.load(p)
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types for a bad header
        raise InputDataError(p, f"not a readable CIFTI-2 file ({type(exc).__name__}: {exc})") from None
    if not isinstance(img, nib.Cifti2Image):
        raise InputDataError(p, f"not a CIFTI-2 file (nibabel reads it as {type(img).__name__})")
    try:
        series = img.header.get_axis(0)
        models_map = img.header.matrix.get_index_map(1)
    except Exception as exc:  # noqa: BLE001
        raise InputDataError(p, f"CIFTI-2 header has no usable axes ({exc})") from None
    kind = models_map.indices_map_to_data_type
    if not isinstance(series, cifti2_axes.SeriesAxis) or kind != "CIFTI_INDEX_TYPE_BRAIN_MODELS":
        raise InputDataError(
            p, f"expected a dense time series (series x brain models), got {type(series).__name__} x {kind}"
        )
    n_models = sum(int(bm.index_count) for bm in models_map.brain_models)
    if tuple(img.shape) != (series.size, n_models):
        raise InputDataError(
            p,
            f"data shape {tuple(img.shape)} disagrees with its axes "
            f"({series.size} frames x {n_models} grayordinates)",
        )
    intent = img.nifti_header.get_intent()[0]
    if intent != DENSE_SERIES_INTENT:
        log.warning("%s: NIfTI intent is %r, not %r; reading it as a dense time series", p, intent, DENSE_SERIES_INTENT)
    run = DtseriesRun(path=p, image=img, series=series)
    _check_data_length(run)
    return run


def _check_data_length(run: DtseriesRun) -> None:
    proxy = run.image.dataobj
    if _is_compressed(run.path):
        return  # a gzip stream's length says nothing about its content; reads check it
    offset = int(getattr(proxy, "offset", 0))
    needed = offset + run.n_frames * run.n_grayordinates * np.dtype(proxy.dtype).itemsize
    have = run.path.stat().st_size
    if have < needed:
        raise InputDataError(
            run.path,
            f"file is truncated: the header promises {run.n_frames} frames x {run.n_grayordinates} "
            f"grayordinates ({needed} bytes with the header) but the file holds {have} bytes",
        )


def _is_compressed(path: Path) -> bool:
    return path.name.endswith((".gz", ".bz2", ".zst"))


def surface_columns(models: cifti2_axes.BrainModelAxis) -> dict[str, SurfaceColumns]:
    """Surface structures of a BrainModelAxis: which columns hold which mesh vertices."""
    out: dict[str, SurfaceColumns] = {}
    for name, sl, sub in models.iter_structures():
        if not sub.surface_mask.all():
            continue  # a volume structure (subcortical voxels): no vertices
        start, stop, _ = sl.indices(len(models))
        out[str(name)] = SurfaceColumns(
            structure=str(name),
            columns=np.arange(start, stop, dtype=np.int64),
            vertices=np.asarray(sub.vertex, dtype=np.int64),
            n_mesh_vertices=int(sub.nvertices[str(name)]),
        )
    return out


def contiguous_ranges(columns: np.ndarray) -> list[tuple[int, int, int]]:
    """Split sorted column indices into runs of consecutive values.

    Returns (first_column, stop_column, position_in_input) triples, so a run
    is one contiguous read from disk.
    """
    cols = np.asarray(columns, dtype=np.int64)
    if cols.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(cols) != 1) + 1
    starts = np.concatenate([[0], breaks])
    stops = np.concatenate([breaks, [cols.size]])
    return [(int(cols[a]), int(cols[b - 1]) + 1, int(a)) for a, b in zip(starts, stops)]


def iter_column_reads(run: DtseriesRun, columns: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (position, block) for each contiguous range of `columns` (sorted, unique):
    block is (frames, k) float32 holding columns[position:position + k]."""
    proxy = run.image.dataobj
    for first, stop, pos in contiguous_ranges(columns):
        try:
            block = proxy[:, first:stop]
        except _READ_ERRORS as exc:
            raise InputDataError(
                run.path, f"data could not be read (truncated or corrupt file?): {type(exc).__name__}: {exc}"
            ) from None
        yield pos, np.asarray(block, dtype=np.float32)


def read_columns(run: DtseriesRun, columns: np.ndarray) -> np.ndarray:
    """(frames, len(columns)) float32: the given grayordinate columns of the run.

    `columns` must be sorted and unique (the order of the file); only their
    bytes are read.
    """
    cols = np.asarray(columns, dtype=np.int64)
    if cols.size and (np.any(np.diff(cols) <= 0) or cols[0] < 0 or cols[-1] >= run.n_grayordinates):
        raise ValueError("columns must be sorted, unique and inside the file")
    out = np.empty((run.n_frames, cols.size), dtype=np.float32)
    for pos, block in iter_column_reads(run, cols):
        out[:, pos : pos + block.shape[1]] = block
    return out


def surface_brain_models(
    vertices: dict[str, np.ndarray], n_mesh_vertices: int = MESH_32K_VERTICES
) -> cifti2_axes.BrainModelAxis:
    """A BrainModelAxis of surface structures only, in the given order (e.g. left, right)."""
    axis = None
    for structure, verts in vertices.items():
        verts = np.asarray(verts, dtype=np.int64)
        part = cifti2_axes.BrainModelAxis(
            name=[structure] * verts.size, vertex=verts, nvertices={structure: n_mesh_vertices}
        )
        axis = part if axis is None else axis + part
    if axis is None:
        raise ValueError("no structures given")
    return axis


def write_dtseries(
    path: str | os.PathLike,
    data: np.ndarray,
    brain_models: cifti2_axes.BrainModelAxis,
    tr: float,
    start: float = 0.0,
) -> Path:
    """Write a (frames, grayordinates) array as a real CIFTI-2 dtseries, atomically.

    NIfTI-2 header, intent 3002, SeriesAxis in seconds with step `tr`.
    """
    data = np.asarray(data, dtype=np.float32)
    if data.ndim != 2 or data.shape[1] != len(brain_models):
        raise ValueError(f"data {data.shape} does not match {len(brain_models)} grayordinates")
    series = cifti2_axes.SeriesAxis(start=start, step=tr, size=data.shape[0], unit="SECOND")
    img = nib.Cifti2Image(data, header=(series, brain_models))
    img.nifti_header.set_intent(DENSE_SERIES_INTENT)
    target = Path(path)
    with atomic_path(target) as tmp:  # temp name ends in ".nii", which nibabel needs
        img.to_filename(str(tmp))
    return target
