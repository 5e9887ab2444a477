"""BData (bdpy's HDF5 layout), read and written with h5py directly.

Layout (docs/reference.md §9.1, GOD):
  /dataset                 float64 (n_samples, n_columns)
  /metadata/key            (n_keys,) strings, fixed bytes or variable length
  /metadata/description    (n_keys,) strings
  /metadata/value          float64 (n_keys, n_columns); NaN = not applicable
Legacy files spell the groups `dataSet` / `metaData`; some carry a `/header`
group that we ignore. A per-sample label such as `DataType` is the column
whose metadata row `DataType` holds 1.

bdpy itself needs Python < 3.12, so it is only a test-time cross-check.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from mindvis.utils.atomic import atomic_path
from mindvis.utils.errors import InputDataError

_DATASET_NAMES = ("dataset", "dataSet")
_METADATA_NAMES = ("metadata", "metaData")


def _as_str(item: object) -> str:
    if isinstance(item, bytes):
        return item.decode("utf-8", errors="replace").strip("\x00").strip()
    if isinstance(item, np.ndarray):  # MATLAB-style char arrays
        return "".join(_as_str(x) for x in item.ravel())
    return str(item).strip()


@dataclass
class BData:
    """An in-memory BData file: the data matrix plus its column metadata."""

    dataset: np.ndarray  # (n_samples, n_columns)
    keys: list[str]
    descriptions: list[str]
    values: np.ndarray  # (n_keys, n_columns)
    path: Path | None = None

    def has_key(self, key: str) -> bool:
        return key in self.keys

    def metadata(self, key: str) -> np.ndarray:
        """The (n_columns,) metadata row named `key`."""
        if key not in self.keys:
            raise InputDataError(self.path, f"BData metadata has no key '{key}' (keys: {', '.join(self.keys)})")
        return self.values[self.keys.index(key)]

    def columns_flagged(self, key: str) -> np.ndarray:
        """Indices of the columns whose metadata `key` equals 1 (e.g. VoxelData, ROI_V1)."""
        row = self.metadata(key)
        return np.flatnonzero(np.nan_to_num(row, nan=0.0) == 1)

    def select(self, key: str) -> np.ndarray:
        """The data columns flagged by `key` (bdpy's `BData.select(key)`)."""
        return self.dataset[:, self.columns_flagged(key)]

    def label(self, key: str) -> np.ndarray:
        """A per-sample label (DataType, Run, stimulus_id, ...) as a (n_samples,) vector."""
        cols = self.columns_flagged(key)
        if cols.size != 1:
            raise InputDataError(
                self.path, f"per-sample label '{key}' must flag exactly one column, found {cols.size}"
            )
        return self.dataset[:, cols[0]]


# What h5py raises for a damaged file: OSError for most, RuntimeError for a broken link table or
# local heap, TypeError / ValueError for a member of an unexpected type or shape.
_READ_ERRORS = (OSError, KeyError, ValueError, RuntimeError, TypeError, IndexError, AttributeError, MemoryError)

# Seconds the metadata (names and descriptions, a few kB) may take to read. HDF5 loops forever,
# in C, on some damaged heaps of variable-length strings; the read runs in a forked child that is
# stopped after this long, so a hostile file gives an error instead of a hung job.
METADATA_TIMEOUT_S = 120.0


def _locate(fh: h5py.File, path: Path) -> tuple[str, str]:
    data_name = next((n for n in _DATASET_NAMES if n in fh), None)
    meta_name = next((n for n in _METADATA_NAMES if n in fh), None)
    if data_name is None or meta_name is None:
        missing = "a '/dataset' (or '/dataSet')" if data_name is None else "a '/metadata' (or '/metaData') group"
        raise InputDataError(path, f"not a BData file: it has no {missing}; top-level entries: {sorted(fh.keys())}")
    meta = fh[meta_name]
    if not isinstance(meta, h5py.Group) or not isinstance(fh[data_name], h5py.Dataset):
        raise InputDataError(path, f"not a BData file: '/{meta_name}' must be a group and '/{data_name}' a dataset")
    for part in ("key", "value"):
        if part not in meta or not isinstance(meta[part], h5py.Dataset):
            raise InputDataError(path, f"BData metadata group '/{meta_name}' has no '{part}' dataset")
    return data_name, meta_name


def _read_metadata(path: Path) -> tuple[str, str, list[str], list[str], np.ndarray]:
    """(data name, metadata name, keys, descriptions, values); InputDataError for any defect."""
    try:
        with h5py.File(path, "r") as fh:
            data_name, meta_name = _locate(fh, path)
            meta = fh[meta_name]
            keys = [_as_str(k) for k in np.atleast_1d(meta["key"][()])]
            descriptions = ([_as_str(d) for d in np.atleast_1d(meta["description"][()])]
                            if "description" in meta else [""] * len(keys))
            values = _real_array(meta["value"], f"/{meta_name}/value", path)
    except InputDataError:
        raise
    except _READ_ERRORS as exc:
        raise InputDataError(path, f"cannot read BData metadata (truncated or corrupt?): {_first_line(exc)}") from None
    return data_name, meta_name, keys, descriptions, values


def _real_array(dataset: h5py.Dataset, name: str, path: Path) -> np.ndarray:
    """A numeric dataset as float64; complex, string or compound data is an error, not a cast."""
    if dataset.dtype.kind not in "fiub":
        raise InputDataError(path, f"'{name}' must hold real numbers, got HDF5 type {dataset.dtype}")
    return np.asarray(dataset[()], dtype=np.float64)


def _first_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"


def _metadata_child(conn, path: Path) -> None:
    try:
        conn.send(("ok", _read_metadata(path)))
    except InputDataError as exc:
        conn.send(("error", exc.problem))
    except BaseException as exc:  # noqa: BLE001 - reported by the parent as a damaged file
        conn.send(("error", f"cannot read BData metadata: {_first_line(exc)}"))
    finally:
        conn.close()


def _read_metadata_guarded(path: Path) -> tuple[str, str, list[str], list[str], np.ndarray]:
    """`_read_metadata` in a forked child, stopped after METADATA_TIMEOUT_S (where fork exists)."""
    import multiprocessing as mp

    if "fork" not in mp.get_all_start_methods():
        return _read_metadata(path)
    ctx = mp.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_metadata_child, args=(send, path), daemon=True)
    child.start()
    send.close()
    try:
        if not receive.poll(METADATA_TIMEOUT_S):
            raise InputDataError(
                path, f"reading its metadata did not finish in {METADATA_TIMEOUT_S:g} s: the file's HDF5 "
                "structure is damaged (HDF5 loops on it)"
            )
        try:
            status, payload = receive.recv()  # sent by our own child: plain lists and an array
        except (EOFError, OSError):
            raise InputDataError(path, "reading its metadata crashed the HDF5 library: the file is damaged") from None
    finally:
        if child.is_alive():
            child.kill()
        child.join()
        receive.close()
    if status != "ok":
        raise InputDataError(path, payload)
    return payload


def read_bdata(path: str | os.PathLike) -> BData:
    """Read a BData HDF5 file; every defect becomes an `InputDataError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise InputDataError(path, "file not found")
    try:
        with h5py.File(path, "r"):
            pass
    except _READ_ERRORS as exc:
        raise InputDataError(path, f"not a readable HDF5 file (truncated or corrupt?): {_first_line(exc)}") from None
    data_name, meta_name, keys, descriptions, values = _read_metadata_guarded(path)
    try:
        with h5py.File(path, "r") as fh:
            dataset = _real_array(fh[data_name], f"/{data_name}", path)
    except InputDataError:
        raise
    except _READ_ERRORS as exc:
        raise InputDataError(path, f"cannot read BData contents (truncated or corrupt?): {_first_line(exc)}") from None
    if dataset.ndim != 2:
        raise InputDataError(path, f"'/{data_name}' must be 2-D (samples x columns), got shape {dataset.shape}")
    if len(descriptions) != len(keys):
        raise InputDataError(path, f"{len(descriptions)} metadata descriptions for {len(keys)} keys")
    # MATLAB-written files may store metadata transposed; accept both orientations.
    if values.ndim == 2 and values.shape == (dataset.shape[1], len(keys)) and values.shape[0] != len(keys):
        values = values.T
    if values.shape != (len(keys), dataset.shape[1]):
        raise InputDataError(
            path,
            f"metadata values have shape {values.shape}, expected (n_keys={len(keys)}, "
            f"n_columns={dataset.shape[1]})",
        )
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        raise InputDataError(path, f"duplicated metadata keys: {dup}")
    return BData(dataset=dataset, keys=keys, descriptions=descriptions, values=values, path=path)


def write_bdata(
    path: str | os.PathLike,
    dataset: np.ndarray,
    keys: Sequence[str],
    descriptions: Sequence[str],
    values: np.ndarray,
) -> None:
    """Write BData as bdpy does (variable-length UTF-8 strings), atomically."""
    dataset = np.asarray(dataset, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (len(keys), dataset.shape[1]):
        raise ValueError(f"values shape {values.shape} != ({len(keys)}, {dataset.shape[1]})")
    str_dtype = h5py.string_dtype("utf-8")
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as fh:
            fh.create_dataset("dataset", data=dataset)
            meta = fh.create_group("metadata")
            meta.create_dataset("key", data=np.array(list(keys), dtype=object), dtype=str_dtype)
            meta.create_dataset("description", data=np.array(list(descriptions), dtype=object), dtype=str_dtype)
            meta.create_dataset("value", data=values)
