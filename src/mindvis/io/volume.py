"""4-D NIfTI runs (e.g. HCP `rfMRI_*_hp2000_clean.nii.gz`): streamed voxel extraction,
ROI label images, grid checks, and a streaming atomic writer.

A 4-D NIfTI stores its data in Fortran order, so one frame (all X*Y*Z
voxels at one time point) is one contiguous block. We extract the voxels of
a mask frame-chunk by frame-chunk:

- uncompressed `.nii`: each chunk of frames is memory-mapped and only the
  pages that hold masked voxels are touched; the map is closed after the
  chunk, so resident memory stays at one chunk's pages;
- `.nii.gz`: the stream is decompressed once, sequentially, into one reused
  chunk buffer (gzip cannot seek backwards cheaply, and random access would
  decompress the same bytes many times). Inflating is the floor of this
  route; with the optional `isal` package (ISA-L) it runs ~2.5x faster than
  the standard library's zlib, which is used otherwise.

Either way peak memory is the (frames, masked voxels) output plus one chunk,
never the whole run (a 91x109x91x1200 float32 run is 4.3 GB), and never a
float64 copy.
"""

from __future__ import annotations

import logging
import os
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.fileholders import FileHolder
from nibabel.openers import ImageOpener

from mindvis.utils.atomic import atomic_path
from mindvis.utils.errors import InputDataError

log = logging.getLogger(__name__)

# The MNI152 2 mm grid of the HCP volumetric release (docs/reference.md §9.3).
MNI_2MM_SHAPE = (91, 109, 91)
MNI_2MM_AFFINE = np.array(
    [[-2.0, 0.0, 0.0, 90.0], [0.0, 2.0, 0.0, -126.0], [0.0, 0.0, 2.0, -72.0], [0.0, 0.0, 0.0, 1.0]]
)
NIFTI_XFORM_MNI_152 = 4
AFFINE_ATOL = 1e-3  # mm; header affines round-trip through float32

_READ_ERRORS = (OSError, ValueError, EOFError, zlib.error)


@dataclass(frozen=True)
class VolumeRun:
    """An opened, header-validated 4-D NIfTI; its data have not been read yet."""

    path: Path
    header: nib.Nifti1Header
    shape: tuple[int, int, int, int]  # (X, Y, Z, frames)
    affine: np.ndarray  # (4, 4) voxel -> mm
    dtype: np.dtype  # on-disk dtype, with byte order
    offset: int  # byte offset of the data
    slope: float
    inter: float

    @property
    def grid_shape(self) -> tuple[int, int, int]:
        return self.shape[:3]

    @property
    def n_frames(self) -> int:
        return self.shape[3]

    @property
    def n_voxels_per_frame(self) -> int:
        x, y, z = self.grid_shape
        return x * y * z

    @property
    def tr(self) -> float:
        return float(self.header.get_zooms()[3]) if len(self.header.get_zooms()) > 3 else float("nan")

    @property
    def compressed(self) -> bool:
        return self.path.name.endswith((".gz", ".bz2", ".zst"))


def read_nifti_image(path: str | os.PathLike, what: str = "NIfTI file"):
    """nibabel's image of a NIfTI-1/2 or CIFTI-2 file, header only (data stay on disk); a missing
    file or unreadable header is an InputDataError naming the file."""
    p = Path(path)
    if not p.is_file():
        raise InputDataError(p, f"{what} not found")
    try:
        return nib.load(p)
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types for a bad header
        first = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise InputDataError(p, f"not a readable {what} ({type(exc).__name__}: {first})") from None


def open_volume_run(path: str | os.PathLike) -> VolumeRun:
    """Open a 4-D NIfTI (1 or 2, optionally gzipped) and validate its header and length."""
    p = Path(path)
    if not p.is_file():
        raise InputDataError(p, "file not found")
    img = read_nifti_image(p)
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)) or isinstance(img, nib.Cifti2Image):
        raise InputDataError(p, f"expected a 4-D NIfTI volume, nibabel reads it as {type(img).__name__}")
    shape = tuple(int(s) for s in img.shape)
    if len(shape) != 4 or min(shape) < 1:
        raise InputDataError(p, f"expected a 4-D volume (X, Y, Z, frames), got shape {shape}")
    header = img.header
    # nibabel moves the scaling into the data proxy and blanks it in the loaded header
    slope, inter = getattr(img.dataobj, "slope", 1.0), getattr(img.dataobj, "inter", 0.0)
    run = VolumeRun(
        path=p,
        header=header,
        shape=shape,  # type: ignore[arg-type]
        affine=np.asarray(img.affine, dtype=np.float64),
        dtype=header.get_data_dtype(),
        offset=int(img.dataobj.offset),
        slope=1.0 if slope is None or not np.isfinite(slope) else float(slope),
        inter=0.0 if inter is None or not np.isfinite(inter) else float(inter),
    )
    if not run.compressed:
        needed = run.offset + int(np.prod(shape)) * run.dtype.itemsize
        have = p.stat().st_size
        if have < needed:
            raise InputDataError(
                p, f"file is truncated: the header promises shape {shape} ({needed} bytes with the header) "
                f"but the file holds {have} bytes"
            )
    return run


def fortran_indices(mask: np.ndarray) -> np.ndarray:
    """Flat voxel indices of a 3-D boolean mask in NIfTI (Fortran, x fastest) order, ascending."""
    return np.flatnonzero(np.asarray(mask, dtype=bool).ravel(order="F")).astype(np.int64)


def extract_voxels(
    run: VolumeRun,
    flat_indices: np.ndarray,
    chunk_frames: int = 100,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """(frames, n) float32 time series of the voxels at `flat_indices` (Fortran flat order).

    `progress(n_frames_done_in_chunk)` is called after each chunk (for a progress bar).
    """
    idx = np.asarray(flat_indices, dtype=np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= run.n_voxels_per_frame):
        raise ValueError("voxel indices outside the volume")
    chunk_frames = max(1, int(chunk_frames))
    out = np.empty((run.n_frames, idx.size), dtype=np.float32)
    reader = _read_chunks_gz if run.compressed else _read_chunks_mmap
    try:
        for t0, values in reader(run, idx, chunk_frames):
            out[t0 : t0 + values.shape[0]] = values
            if progress is not None:
                progress(values.shape[0])
    except _READ_ERRORS as exc:
        raise InputDataError(
            run.path, f"data could not be read (truncated or corrupt file?): {type(exc).__name__}: {exc}"
        ) from None
    if run.slope != 1.0 or run.inter != 0.0:
        out *= np.float32(run.slope)
        out += np.float32(run.inter)
    return out


def _read_chunks_mmap(run: VolumeRun, idx: np.ndarray, chunk: int) -> Iterable[tuple[int, np.ndarray]]:
    nvox = run.n_voxels_per_frame
    frame_bytes = nvox * run.dtype.itemsize
    for t0 in range(0, run.n_frames, chunk):
        n = min(chunk, run.n_frames - t0)
        # One map per chunk: its pages leave our resident set when it is dropped.
        mm = np.memmap(run.path, dtype=run.dtype, mode="r", offset=run.offset + t0 * frame_bytes, shape=(n, nvox))
        values = mm[:, idx].astype(np.float32)
        del mm  # the last reference: CPython unmaps it here, not at some later collection
        yield t0, values


def _read_chunks_gz(run: VolumeRun, idx: np.ndarray, chunk: int) -> Iterable[tuple[int, np.ndarray]]:
    nvox = run.n_voxels_per_frame
    buf = np.empty(chunk * nvox, dtype=run.dtype)
    opener = GzipStream if run.path.name.endswith(".gz") else ImageOpener  # .bz2 / .zst: nibabel's openers
    with opener(run.path, "rb") as fh:
        _skip(fh, run.offset)
        for t0 in range(0, run.n_frames, chunk):
            n = min(chunk, run.n_frames - t0)
            view = memoryview(buf[: n * nvox]).cast("B")
            _read_exactly(fh, view)
            yield t0, buf[: n * nvox].reshape(n, nvox)[:, idx].astype(np.float32)


def _skip(fh, n: int) -> None:
    scratch = bytearray(n)
    if n:
        _read_exactly(fh, memoryview(scratch))


def _read_exactly(fh, view: memoryview) -> None:
    got = 0
    while got < len(view):
        n = fh.readinto(view[got:])
        if not n:
            raise EOFError(f"data end after {got} of {len(view)} bytes of a chunk")
        got += n


def _inflate_module():
    """ISA-L's zlib-compatible inflate when the optional `isal` package is installed
    (~2.5x faster on gzipped NIfTI), else the standard library's zlib."""
    try:
        from isal import isal_zlib

        return isal_zlib
    except ImportError:
        return zlib


class GzipStream:
    """Sequential reader of a gzip file (all members) with `readinto`, decompressing large
    input blocks straight into the caller's buffer: no per-call buffering layer as in
    `gzip.GzipFile`, and ISA-L when available."""

    INPUT_BLOCK = 1 << 22
    OUTPUT_BLOCK = 1 << 22  # bounds the temporary bytes each inflate call returns

    def __init__(self, path: str | os.PathLike, mode: str = "rb"):
        if mode != "rb":
            raise ValueError("GzipStream only reads")
        self._zlib = _inflate_module()
        self._fh = open(path, "rb")
        self._inflater = self._zlib.decompressobj(31)  # 31: expect a gzip header
        self._input = b""  # compressed bytes not yet given to the inflater
        self._output = b""  # decompressed bytes not yet handed out
        self._done = False

    def __enter__(self) -> GzipStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._fh.close()

    def readinto(self, view) -> int:
        view = memoryview(view).cast("B")
        want = len(view)
        got = 0
        while got < want:
            if self._output:
                n = min(len(self._output), want - got)
                view[got : got + n] = self._output[:n]
                self._output = self._output[n:]
                got += n
                continue
            if self._done:
                break
            self._inflate(min(want - got, self.OUTPUT_BLOCK))
        return got

    def _inflate(self, max_out: int) -> None:
        if not self._input:
            self._input = self._fh.read(self.INPUT_BLOCK)
            if not self._input:
                if not self._inflater.eof:
                    raise EOFError("compressed file ended before the end-of-stream marker was reached")
                self._done = True
                return
        self._output = self._inflater.decompress(self._input, max_out)
        self._input = self._inflater.unconsumed_tail
        if self._inflater.eof:  # end of one gzip member: another may follow (concatenated gzip)
            rest = self._inflater.unused_data + self._input
            self._input = rest.lstrip(b"\x00")  # trailing zero padding is allowed after a member
            self._inflater = self._zlib.decompressobj(31)
            if not self._input:
                self._input = self._fh.read(self.INPUT_BLOCK).lstrip(b"\x00")
                if not self._input:
                    self._done = True
                    self._inflater = _Finished()


class _Finished:
    eof = True


# ----------------------------------------------------------------------------- ROI label images


@dataclass(frozen=True)
class LabelImage:
    """A 3-D integer label image (0 = background) and its grid."""

    path: Path
    labels: np.ndarray  # (X, Y, Z) int32
    affine: np.ndarray


def load_label_image(path: str | os.PathLike) -> LabelImage:
    """Read a 3-D label (or binary mask) NIfTI; values must be integers."""
    p = Path(path)
    if not p.is_file():
        raise InputDataError(p, "ROI label image not found")
    try:
        img = nib.load(p)
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # noqa: BLE001
        raise InputDataError(p, f"not a readable NIfTI label image ({type(exc).__name__}: {exc})") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputDataError(p, f"expected a 3-D label image, got shape {data.shape}")
    if not np.all(np.isfinite(data)) or not np.array_equal(data, np.round(data)):
        raise InputDataError(p, "label image holds non-integer values (expected integer ROI labels)")
    return LabelImage(path=p, labels=data.astype(np.int32), affine=np.asarray(img.affine, dtype=np.float64))


def same_grid(shape_a, affine_a, shape_b, affine_b, atol: float = AFFINE_ATOL) -> bool:
    return tuple(shape_a) == tuple(shape_b) and np.allclose(affine_a, affine_b, atol=atol)


def resample_labels(labels: LabelImage, shape: tuple[int, int, int], affine: np.ndarray) -> LabelImage:
    """Nearest-neighbour resampling of a label image onto another grid (nilearn)."""
    from nilearn.image import resample_img

    src = nib.Nifti1Image(labels.labels, labels.affine)
    out = resample_img(
        src, target_affine=affine, target_shape=shape, interpolation="nearest", force_resample=True, copy_header=True
    )
    return LabelImage(path=labels.path, labels=np.asarray(out.dataobj).astype(np.int32), affine=np.asarray(affine))


# ----------------------------------------------------------------------------- writing


def mni_header(shape: tuple[int, ...], affine: np.ndarray, tr: float | None, dtype) -> nib.Nifti1Header:
    """A NIfTI-1 header with every field HCP's volumes set: qform and sform (code 4, MNI152),
    units mm/s, and the TR in pixdim[4]."""
    header = nib.Nifti1Header()
    header.set_data_dtype(dtype)
    header.set_data_shape(shape)
    header.set_qform(affine, code=NIFTI_XFORM_MNI_152)
    header.set_sform(affine, code=NIFTI_XFORM_MNI_152)
    header.set_xyzt_units(xyz="mm", t="sec")
    if tr is not None and len(shape) > 3:
        zooms = list(header.get_zooms())
        zooms[3] = tr
        header.set_zooms(zooms)
    header.set_slope_inter(1.0, 0.0)
    return header


def write_volume_run(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    shape: tuple[int, int, int, int],
    affine: np.ndarray = MNI_2MM_AFFINE,
    tr: float = 0.72,
    dtype=np.float32,
) -> Path:
    """Stream frames ((X, Y, Z) or (k, X, Y, Z) chunks, in time order) into a 4-D NIfTI-1
    file (gzipped when the name ends in .gz), atomically; memory stays at one chunk."""
    target = Path(path)
    header = mni_header(shape, affine, tr, dtype)
    header.set_data_offset(352)  # single-file NIfTI-1 without extensions: data right after the header
    nvox = int(np.prod(shape[:3]))
    written = 0
    with atomic_path(target) as tmp, ImageOpener(str(tmp), "wb") as fh:
        header.write_to(fh)
        fh.write(b"\x00" * (352 - fh.tell()))
        for block in frames:
            block = np.asarray(block, dtype=dtype)
            if block.shape == tuple(shape[:3]):
                block = block[None]
            if block.shape[1:] != tuple(shape[:3]):
                raise ValueError(f"frame block shape {block.shape} does not match grid {shape[:3]}")
            # (k, X, Y, Z) C-order -> each frame in Fortran order: transpose the grid axes.
            fh.write(np.ascontiguousarray(block.transpose(0, 3, 2, 1)).tobytes())
            written += block.shape[0]
        if written != shape[3]:
            raise ValueError(f"wrote {written} frames, header says {shape[3]}")
    log.debug("wrote %s (%d frames of %d voxels)", target, written, nvox)
    return target


def write_label_image(path: str | os.PathLike, labels: np.ndarray, affine: np.ndarray = MNI_2MM_AFFINE) -> Path:
    """Write a 3-D int16 label image with MNI header codes, atomically."""
    data = np.asarray(labels).astype(np.int16)
    header = mni_header(data.shape, affine, None, np.int16)
    img = nib.Nifti1Image(data, affine, header)
    target = Path(path)
    with atomic_path(target) as tmp:  # temp name keeps ".gz": the opener compresses by name
        img.to_file_map({"image": FileHolder(filename=str(tmp))})
    return target
