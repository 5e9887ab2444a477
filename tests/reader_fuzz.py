"""Malformed inputs for every reader the project has, and the property each must keep.

Shared by tests/test_fuzz_readers.py (a bounded number of hypothesis examples) and
benchmarks/fuzz_readers.py (many more, with counts per reader).

A *target* is one reader fed from a small valid input set (written fresh by the
project's own writers); a *case* is one mutation of one file of that set. The
property, checked by `run_case`:
- the reader returns (a valid result) or raises the project's own clean error
  (`mindvis.utils.errors.MindVisError`); any other exception is a failure;
- a reader that writes an output leaves either the complete output (it loads) or
  nothing under the output name, and never a temporary file;
- no pickled payload runs (payload cases carry a pickle that would create a marker
  folder; the marker must never appear).
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import traceback
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mindvis.utils.errors import MindVisError

MARKER = "payload_ran"  # a payload pickle would create this folder beside the inputs
HANG_LIMIT_S = 5.0  # what a hostile file may cost a guarded read here (the project's default is longer)


def configure_for_fuzzing() -> None:
    """Short guard limits, so that a case that would hang costs seconds, not minutes."""
    import mindvis.io.bdata

    mindvis.io.bdata.METADATA_TIMEOUT_S = HANG_LIMIT_S


# ============================================================================= mutations
# Every mutation rewrites one file in place from its bytes (or, for format-aware ones, by
# reading and rewriting it with the format's own library) and takes a numpy Generator.


def _bytes_of(path: Path) -> bytearray:
    return bytearray(path.read_bytes())


def truncate(path: Path, rng) -> None:
    data = _bytes_of(path)
    path.write_bytes(bytes(data[: int(rng.integers(0, max(len(data), 1)))]))


def truncate_tail(path: Path, rng) -> None:
    """Cut a little off the end (a download that almost finished)."""
    data = _bytes_of(path)
    cut = int(rng.integers(1, min(len(data), 4096) + 1)) if data else 0
    path.write_bytes(bytes(data[: len(data) - cut]))


def flip_bits(path: Path, rng) -> None:
    data = _bytes_of(path)
    if not data:
        return
    for _ in range(int(rng.integers(1, 9))):
        i = int(rng.integers(0, len(data)))
        data[i] ^= 1 << int(rng.integers(0, 8))
    path.write_bytes(bytes(data))


def flip_header_bits(path: Path, rng) -> None:
    """Bit flips in the first 512 bytes, where headers, magic numbers and sizes live."""
    data = _bytes_of(path)
    if not data:
        return
    for _ in range(int(rng.integers(1, 5))):
        i = int(rng.integers(0, min(len(data), 512)))
        data[i] ^= 1 << int(rng.integers(0, 8))
    path.write_bytes(bytes(data))


def random_block(path: Path, rng) -> None:
    data = _bytes_of(path)
    if not data:
        return
    start = int(rng.integers(0, len(data)))
    n = int(rng.integers(1, 257))
    block = rng.integers(0, 256, size=n, dtype=np.uint8).tobytes()
    data[start : start + n] = block[: max(0, min(n, len(data) - start))]
    path.write_bytes(bytes(data))


def zero_block(path: Path, rng) -> None:
    data = _bytes_of(path)
    if not data:
        return
    start = int(rng.integers(0, len(data)))
    n = int(rng.integers(1, 1025))
    end = min(len(data), start + n)
    data[start:end] = bytes(end - start)
    path.write_bytes(bytes(data))


def delete_block(path: Path, rng) -> None:
    data = _bytes_of(path)
    if not data:
        return
    start = int(rng.integers(0, len(data)))
    del data[start : start + int(rng.integers(1, 513))]
    path.write_bytes(bytes(data))


def duplicate_block(path: Path, rng) -> None:
    data = _bytes_of(path)
    if not data:
        return
    start = int(rng.integers(0, len(data)))
    block = data[start : start + int(rng.integers(1, 513))]
    at = int(rng.integers(0, len(data)))
    data[at:at] = block
    path.write_bytes(bytes(data))


def append_garbage(path: Path, rng) -> None:
    with open(path, "ab") as fh:
        fh.write(rng.integers(0, 256, size=int(rng.integers(1, 2048)), dtype=np.uint8).tobytes())


def empty_file(path: Path, rng) -> None:
    path.write_bytes(b"")


def swap_for_other_format(path: Path, rng) -> None:
    """Another format's bytes under this name (an HDF5 where a zip is expected, text, a PNG...)."""
    heads = [b"\x89HDF\r\n\x1a\n", b"PK\x03\x04", b"\x93NUMPY", b"\x1f\x8b\x08\x00", b"\x80\x02}q\x00.",
             b"\x89PNG\r\n\x1a\n", b"n+1\x00", b"id,name\n1.5,a.JPEG\n", b"\x00" * 8]
    head = heads[int(rng.integers(0, len(heads)))]
    path.write_bytes(head + rng.integers(0, 256, size=int(rng.integers(0, 600)), dtype=np.uint8).tobytes())


BYTE_MUTATIONS: list[Callable] = [truncate, truncate_tail, flip_bits, flip_header_bits, random_block, zero_block,
                                  delete_block, duplicate_block, append_garbage, empty_file, swap_for_other_format]


# ----------------------------------------------------------------------------- text


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def _rewrite_lines(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(lines))


def drop_line(path: Path, rng) -> None:
    lines = _lines(path)
    if lines:
        del lines[int(rng.integers(0, len(lines)))]
    _rewrite_lines(path, lines)


def duplicate_line(path: Path, rng) -> None:
    lines = _lines(path)
    if lines:
        i = int(rng.integers(0, len(lines)))
        lines.insert(int(rng.integers(0, len(lines) + 1)), lines[i])
    _rewrite_lines(path, lines)


def swap_lines(path: Path, rng) -> None:
    lines = _lines(path)
    if len(lines) > 1:
        i, j = rng.choice(len(lines), size=2, replace=False)
        lines[i], lines[j] = lines[j], lines[i]
    _rewrite_lines(path, lines)


_JUNK_FIELDS = [b"", b"nan", b"inf", b"-inf", b"-1", b"0", b"1e400", b"1e300", b"0x1F", b"\"", b"\"\"\"",
                b"rep_", b"rep_rep_", b"\xff\xfe", b"\x00", b"\xe2\x80\x8b", b"a" * 5000, b" , , ,", b"1518878.010042",
                b"n01518878_10042.JPEG", b"../../etc/passwd", b"1.5,n00000001_500000.JPEG,extra"]


def replace_field(path: Path, rng) -> None:
    lines = _lines(path)
    if not lines:
        path.write_bytes(_JUNK_FIELDS[int(rng.integers(0, len(_JUNK_FIELDS)))])
        return
    i = int(rng.integers(0, len(lines)))
    ending = b"\r\n" if lines[i].endswith(b"\r\n") else (b"\n" if lines[i].endswith(b"\n") else b"")
    fields = lines[i].rstrip(b"\r\n").split(b",")
    fields[int(rng.integers(0, len(fields)))] = _JUNK_FIELDS[int(rng.integers(0, len(_JUNK_FIELDS)))]
    lines[i] = b",".join(fields) + ending
    _rewrite_lines(path, lines)


def insert_junk_line(path: Path, rng) -> None:
    lines = _lines(path)
    junk = _JUNK_FIELDS[int(rng.integers(0, len(_JUNK_FIELDS)))] + b"\n"
    lines.insert(int(rng.integers(0, len(lines) + 1)), junk)
    _rewrite_lines(path, lines)


def line_endings(path: Path, rng) -> None:
    """CRLF, lone CR, a BOM, or no final newline: what other tools write."""
    text = path.read_bytes().replace(b"\r\n", b"\n")
    choice = int(rng.integers(0, 4))
    if choice == 0:
        text = text.replace(b"\n", b"\r\n")
    elif choice == 1:
        text = text.replace(b"\n", b"\r")
    elif choice == 2:
        text = b"\xef\xbb\xbf" + text
    else:
        text = text.rstrip(b"\n")
    path.write_bytes(text)


def non_utf8(path: Path, rng) -> None:
    data = _bytes_of(path)
    at = int(rng.integers(0, len(data) + 1))
    data[at:at] = bytes([0xC3, 0x28, 0xFF][: int(rng.integers(1, 4))])
    path.write_bytes(bytes(data))


def nul_bytes(path: Path, rng) -> None:
    data = _bytes_of(path)
    at = int(rng.integers(0, len(data) + 1))
    data[at:at] = b"\x00" * int(rng.integers(1, 4))
    path.write_bytes(bytes(data))


TEXT_MUTATIONS: list[Callable] = [drop_line, duplicate_line, swap_lines, replace_field, insert_junk_line, line_endings,
                                  non_utf8, nul_bytes, truncate, flip_bits, random_block, empty_file, append_garbage]


# ----------------------------------------------------------------------------- npz


class _Payload:
    """Unpickling this creates the marker folder (harmless, and visible to the check)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _read_npz_arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def _write_npz(path: Path, arrays: dict[str, Any]) -> None:
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def _pick_key(arrays: dict, rng) -> str:
    keys = sorted(arrays)
    return keys[int(rng.integers(0, len(keys)))]


def npz_drop_key(path: Path, rng) -> None:
    arrays = _read_npz_arrays(path)
    arrays.pop(_pick_key(arrays, rng))
    _write_npz(path, arrays)


def npz_rename_key(path: Path, rng) -> None:
    arrays = _read_npz_arrays(path)
    key = _pick_key(arrays, rng)
    arrays[key.upper() + "_x" if rng.integers(0, 2) else " " + key] = arrays.pop(key)
    _write_npz(path, arrays)


def npz_reorder_keys(path: Path, rng) -> None:
    arrays = _read_npz_arrays(path)
    order = [sorted(arrays)[i] for i in rng.permutation(len(arrays))]
    _write_npz(path, {k: arrays[k] for k in order})


_DTYPES = ["float16", "float64", "int8", "uint8", "int64", "bool", "complex64", "<U4", "S3", "datetime64[s]", ">f4"]


def npz_wrong_dtype(path: Path, rng) -> None:
    arrays = _read_npz_arrays(path)
    key = _pick_key(arrays, rng)
    dtype = _DTYPES[int(rng.integers(0, len(_DTYPES)))]
    try:
        arrays[key] = arrays[key].astype(dtype)
    except (TypeError, ValueError, OverflowError):
        arrays[key] = np.zeros(arrays[key].shape, dtype=dtype)
    _write_npz(path, arrays)


def npz_wrong_shape(path: Path, rng) -> None:
    arrays = _read_npz_arrays(path)
    key = _pick_key(arrays, rng)
    a = arrays[key]
    choice = int(rng.integers(0, 7))
    if choice == 0:
        a = a.ravel()
    elif choice == 1:
        a = a.T if a.ndim > 1 else a[:, None]
    elif choice == 2:
        a = a[None]
    elif choice == 3:
        a = a[:0]
    elif choice == 4:
        a = a[..., :0] if a.ndim > 1 else a[:1]
    elif choice == 5:
        a = np.asarray(a.ravel()[0] if a.size else 0)  # 0-d
    else:
        a = a[: max(len(a) - 1, 0)] if a.ndim else a
    arrays[key] = a
    _write_npz(path, arrays)


def npz_nonfinite(path: Path, rng) -> None:
    arrays = _read_npz_arrays(path)
    floats = [k for k, a in arrays.items() if a.dtype.kind == "f" and a.size]
    key = floats[int(rng.integers(0, len(floats)))] if floats else _pick_key(arrays, rng)
    a = arrays[key].astype(np.float64 if arrays[key].dtype.kind != "f" else arrays[key].dtype, copy=True)
    if a.size:
        flat = a.reshape(-1)
        idx = rng.choice(flat.size, size=min(flat.size, int(rng.integers(1, 6))), replace=False)
        flat[idx] = [np.nan, np.inf, -np.inf][int(rng.integers(0, 3))]
    arrays[key] = a
    _write_npz(path, arrays)


def npz_out_of_range_values(path: Path, rng) -> None:
    """Indices / labels / sizes out of range: negative, huge, or all equal."""
    arrays = _read_npz_arrays(path)
    ints = [k for k, a in arrays.items() if a.dtype.kind in "iub" and a.size]
    key = ints[int(rng.integers(0, len(ints)))] if ints else _pick_key(arrays, rng)
    a = arrays[key].astype(np.int64)
    if a.size:
        a.reshape(-1)[int(rng.integers(0, a.size))] = [-1, 2**40, 10**6, -(2**62)][int(rng.integers(0, 4))]
    arrays[key] = a
    _write_npz(path, arrays)


def npz_pickled_payload(path: Path, rng) -> None:
    """An object array whose pickle would create the marker folder: must never be unpickled."""
    arrays = _read_npz_arrays(path)
    key = _pick_key(arrays, rng) if rng.integers(0, 2) else "extra_object"
    payload = np.empty(1, dtype=object)
    payload[0] = _Payload(path.parent / MARKER)
    arrays[key] = payload
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)  # np.savez pickles object arrays (allow_pickle is only a load option)


def npz_single_npy(path: Path, rng) -> None:
    """A bare .npy (np.save) under the npz's name."""
    arrays = _read_npz_arrays(path)
    buf = io.BytesIO()
    np.save(buf, arrays[_pick_key(arrays, rng)])
    path.write_bytes(buf.getvalue())


def npz_member_corrupt(path: Path, rng) -> None:
    """A zip whose one member's stored bytes are damaged (the central directory stays valid)."""
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    name = sorted(members)[int(rng.integers(0, len(members)))]
    data = bytearray(members[name])
    if data:
        data[int(rng.integers(0, len(data)))] ^= 0xFF
    with zipfile.ZipFile(path, "w") as zf:
        for n, blob in members.items():
            zf.writestr(n, bytes(data) if n == name else blob)
    # the CRC is recomputed by writestr: damage the stored member too, so reads fail the CRC
    raw = bytearray(path.read_bytes())
    at = raw.find(name.encode()) + len(name) + 64
    if 0 < at < len(raw):
        raw[at] ^= 0x01
        path.write_bytes(bytes(raw))


# ----------------------------------------------------------------------------- checkpoints (pickles)


def _pickle_record(path: Path) -> tuple[dict[str, bytes] | None, bytes]:
    """(every record of a torch zip, or None for a legacy file; the pickle bytes to mutate)."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            records = {n: zf.read(n) for n in zf.namelist()}
        return records, next(v for k, v in records.items() if k.endswith("/data.pkl"))
    return None, path.read_bytes()


def _put_pickle(path: Path, records: dict[str, bytes] | None, stream: bytes) -> None:
    """Write the pickle back (zip: as data.pkl with a valid CRC, so the damage reaches the unpickler)."""
    if records is None:
        path.write_bytes(stream)
        return
    with zipfile.ZipFile(path, "w") as zf:
        for name, blob in records.items():
            zf.writestr(name, stream if name.endswith("/data.pkl") else blob)


def pickle_flip(path: Path, rng) -> None:
    records, stream = _pickle_record(path)
    data = bytearray(stream)
    for _ in range(int(rng.integers(1, 5))):
        data[int(rng.integers(0, len(data)))] ^= 1 << int(rng.integers(0, 8))
    _put_pickle(path, records, bytes(data))


def pickle_truncate(path: Path, rng) -> None:
    records, stream = _pickle_record(path)
    _put_pickle(path, records, stream[: int(rng.integers(0, len(stream)))])


def pickle_splice(path: Path, rng) -> None:
    """Opcodes moved around: a block of the pickle repeated, deleted, or moved."""
    records, stream = _pickle_record(path)
    data = bytearray(stream)
    a = int(rng.integers(0, len(data)))
    block = data[a : a + int(rng.integers(1, 64))]
    if rng.integers(0, 2):
        del data[a : a + len(block)]
    data[int(rng.integers(0, len(data) + 1)):0] = block
    _put_pickle(path, records, bytes(data))


def _unicode(text: str) -> bytes:
    raw = text.encode()
    return b"\x8c" + bytes([len(raw)]) + raw


_CALLS = [("posix", "mkdir"), ("os", "mkdir"), ("builtins", "exec"), ("builtins", "eval"), ("subprocess", "call"),
          ("shutil", "rmtree"), ("torch", "load"), ("numpy", "load"), ("pickle", "loads"), ("config", "Helper"),
          ("__builtin__", "eval"), ("torch.serialization", "add_safe_globals"), ("importlib", "import_module")]


def pickle_payload(path: Path, rng) -> None:
    """The pickle replaced (or followed) by one whose call would create the marker folder: GLOBAL
    (protocol 2), STACK_GLOBAL (protocol 4) with or without decoy strings popped in between, or
    the payload hidden inside an otherwise valid checkpoint dict."""
    records, stream = _pickle_record(path)
    marker = str(path.parent / MARKER)
    module, name = _CALLS[int(rng.integers(0, len(_CALLS)))]
    arg = marker if name in ("mkdir", "rmtree", "load", "call", "import_module") else f"__import__('os').mkdir({marker!r})"
    style = int(rng.integers(0, 4))
    if style == 0:  # protocol 2 GLOBAL
        body = b"c" + module.encode() + b"\n" + name.encode() + b"\n"
    elif style == 1:  # protocol 4 STACK_GLOBAL
        body = _unicode(module) + _unicode(name) + b"\x93"
    else:  # decoys pushed and popped (the scan that this replaced was fooled by them)
        body = (_unicode(module) + _unicode(name) + _unicode("collections") + _unicode("OrderedDict")
                + b"00" + b"\x93")
    call = body + _unicode(arg) + b"\x85R"
    if style == 3 and stream.startswith(b"\x80\x02") and stream.endswith(b"."):
        payload = stream[:-1] + b"0" + call + b"."  # valid pickle, then the payload before STOP
    else:
        payload = b"\x80\x04" + call + b"."
    _put_pickle(path, records, payload)


CHECKPOINT_MUTATIONS: list[Callable] = [pickle_flip, pickle_truncate, pickle_splice, pickle_payload,
                                        pickle_payload, *BYTE_MUTATIONS]


NPZ_MUTATIONS: list[Callable] = [npz_drop_key, npz_rename_key, npz_reorder_keys, npz_wrong_dtype, npz_wrong_shape,
                                 npz_nonfinite, npz_out_of_range_values, npz_pickled_payload, npz_single_npy,
                                 npz_member_corrupt, *BYTE_MUTATIONS]


# ----------------------------------------------------------------------------- HDF5 (BData)


def _h5_datasets(path: Path) -> list[str]:
    import h5py

    names: list[str] = []
    with h5py.File(path, "r") as fh:
        fh.visititems(lambda n, obj: names.append(n) if isinstance(obj, h5py.Dataset) else None)
    return sorted(names)


def h5_delete(path: Path, rng) -> None:
    import h5py

    with h5py.File(path, "a") as fh:
        names = sorted(fh.keys()) + _h5_datasets(path)
        del fh[names[int(rng.integers(0, len(names)))]]


def h5_wrong_dtype(path: Path, rng) -> None:
    import h5py

    names = _h5_datasets(path)
    name = names[int(rng.integers(0, len(names)))]
    with h5py.File(path, "a") as fh:
        data = fh[name][()]
        del fh[name]
        choice = int(rng.integers(0, 4))
        if choice == 0:
            fh[name] = np.zeros(np.shape(data), dtype=np.int8)
        elif choice == 1:
            fh[name] = np.full(np.shape(data), b"x", dtype="S1")
        elif choice == 2:
            fh[name] = np.zeros(np.shape(data), dtype=np.complex64)
        else:
            fh.create_dataset(name, data=np.zeros(np.shape(data), dtype=[("a", "<f4"), ("b", "<i2")]))


def h5_wrong_shape(path: Path, rng) -> None:
    import h5py

    names = _h5_datasets(path)
    name = names[int(rng.integers(0, len(names)))]
    with h5py.File(path, "a") as fh:
        data = np.asarray(fh[name][()])
        del fh[name]
        choice = int(rng.integers(0, 4))
        if choice == 0:
            data = data.T if data.ndim > 1 else data[:, None]
        elif choice == 1:
            data = data.reshape(-1)
        elif choice == 2:
            data = data[:0]
        else:
            data = data[..., :-1] if data.ndim > 1 and data.shape[-1] > 1 else data[:-1]
        fh[name] = data


def h5_nonfinite(path: Path, rng) -> None:
    import h5py

    with h5py.File(path, "a") as fh:
        name = [n for n in ("dataset", "metadata/value") if n in fh][int(rng.integers(0, 2))]
        data = np.asarray(fh[name][()], dtype=np.float64)
        flat = data.reshape(-1)
        idx = rng.choice(flat.size, size=min(flat.size, int(rng.integers(1, 20))), replace=False)
        flat[idx] = [np.nan, np.inf, -np.inf][int(rng.integers(0, 3))]
        fh[name][...] = data


def h5_reorder_metadata(path: Path, rng) -> None:
    """Metadata rows in another order, keys and values permuted together: still valid BData."""
    import h5py

    with h5py.File(path, "a") as fh:
        keys = fh["metadata/key"][()]
        values = fh["metadata/value"][()]
        desc = fh["metadata/description"][()] if "metadata/description" in fh else None
        order = rng.permutation(len(keys))
        fh["metadata/key"][...] = keys[order]
        fh["metadata/value"][...] = values[order]
        if desc is not None:
            fh["metadata/description"][...] = desc[order]


def h5_duplicate_key(path: Path, rng) -> None:
    import h5py

    with h5py.File(path, "a") as fh:
        keys = fh["metadata/key"][()]
        i, j = rng.choice(len(keys), size=2, replace=False)
        keys[i] = keys[j]
        fh["metadata/key"][...] = keys


H5_MUTATIONS: list[Callable] = [h5_delete, h5_wrong_dtype, h5_wrong_shape, h5_nonfinite, h5_reorder_metadata,
                                h5_duplicate_key, *BYTE_MUTATIONS]


# ----------------------------------------------------------------------------- NIfTI / CIFTI


def nifti_nonfinite(path: Path, rng) -> None:
    import nibabel as nib

    img = nib.load(path)
    data = np.asanyarray(img.dataobj).astype(np.float32)
    flat = data.reshape(-1)
    idx = rng.choice(flat.size, size=min(flat.size, int(rng.integers(1, 30))), replace=False)
    flat[idx] = [np.nan, np.inf, -np.inf][int(rng.integers(0, 3))]
    _save_like(img, data, path)


def nifti_wrong_dtype(path: Path, rng) -> None:
    import nibabel as nib

    img = nib.load(path)
    data = np.asanyarray(img.dataobj)
    dtype = [np.int16, np.uint8, np.float64, np.int32, np.complex64][int(rng.integers(0, 5))]
    _save_like(img, (data * (100 if np.dtype(dtype).kind in "iu" else 1)).astype(dtype), path)


def nifti_wrong_shape(path: Path, rng) -> None:
    import nibabel as nib

    img = nib.load(path)
    data = np.asanyarray(img.dataobj)
    choice = int(rng.integers(0, 4))
    if choice == 0:
        data = data[..., :1] if data.ndim == 4 else data[..., None]
    elif choice == 1:
        data = data.reshape(data.shape[0], -1)
    elif choice == 2:
        data = data[:, :-1]
    else:
        data = data.reshape(-1)
    _save_like(img, data, path)


def nifti_header_field(path: Path, rng) -> None:
    """A header field set to nonsense: dims, pixdim, scaling, vox_offset, datatype code."""
    import nibabel as nib

    img = nib.load(path)
    header = img.header.copy()
    data = np.asanyarray(img.dataobj)
    field_name = ["pixdim", "scl_slope", "scl_inter", "qform_code", "sform_code", "intent_code"][int(rng.integers(0, 6))]
    value = [0, -1, np.nan, np.inf, 1e30, 2**15][int(rng.integers(0, 6))]
    try:
        if field_name == "pixdim":
            pix = header["pixdim"].copy()
            pix[int(rng.integers(1, 5))] = value
            header["pixdim"] = pix
        else:
            header[field_name] = value
    except (ValueError, OverflowError, TypeError):
        return
    _save_like(img, data, path, header=header)


def _save_like(img, data, path: Path, header=None) -> None:
    import nibabel as nib

    if isinstance(img, nib.Cifti2Image):
        if data.ndim != 2:
            data = data.reshape(data.shape[0], -1) if data.ndim else data.reshape(1, 1)
        new = nib.Cifti2Image(data, header=img.header, nifti_header=img.nifti_header)
        try:
            new.to_filename(str(path))
        except Exception:  # noqa: BLE001 - nibabel refuses some combinations: write raw bytes instead
            raw = bytearray(path.read_bytes())
            raw[-min(len(raw), data.nbytes):] = np.asarray(data).tobytes()[: min(len(raw), data.nbytes)]
            path.write_bytes(bytes(raw))
        return
    cls = type(img)
    new = cls(data, img.affine, header if header is not None else img.header)
    if header is not None:
        new.header.set_data_dtype(data.dtype)
    new.to_filename(str(path))


NIFTI_MUTATIONS: list[Callable] = [nifti_nonfinite, nifti_wrong_dtype, nifti_wrong_shape, nifti_header_field,
                                   *BYTE_MUTATIONS]
CIFTI_MUTATIONS: list[Callable] = [nifti_nonfinite, nifti_wrong_dtype, *BYTE_MUTATIONS]


# ============================================================================= targets


@dataclass
class Target:
    """One reader, its valid input set, the file of it that gets mutated, and its outputs."""

    name: str
    build: Callable[[Path], None]  # writes the valid input set into a folder
    mutated: str  # the file (relative to that folder) each case mutates
    run: Callable[[Path, Path], Any]  # (input folder, output folder) -> result
    mutations: list[Callable]
    outputs: tuple[str, ...] = ()  # output files (relative to the output folder) the run writes
    check_output: Callable[[Path], None] | None = None  # loads a complete output (raises if it is not)


# ----------------------------------------------------------------------------- GOD (BData + CSV)


def _build_god(folder: Path) -> None:
    from god_factory import build_god_raw

    build_god_raw().write(folder)


def _run_god(folder: Path, out: Path):
    from mindvis.preprocess.god import preprocess_god_subject

    return preprocess_god_subject(folder / "Subject1.h5", folder / "imageID_training.csv",
                                  folder / "imageID_test.csv", out / "sbj_1.npz", 1)


def _check_god_output(out: Path) -> None:
    from mindvis.data.god import load_god_npz

    load_god_npz(out / "sbj_1.npz")


# ----------------------------------------------------------------------------- HCP (CIFTI, NIfTI)

HCP_RUN = "rfMRI_REST1_LR"


def _hcp_vertices() -> dict[str, np.ndarray]:
    from mindvis.io.cifti import CORTEX_LEFT, CORTEX_RIGHT
    from mindvis.preprocess.hcp_atlas import load_mmp_atlas

    atlas = load_mmp_atlas()
    out = {}
    for s in (CORTEX_LEFT, CORTEX_RIGHT):
        ids = [i for a in ("V1", "V2", "V3", "V4") for i in atlas.area_ids(a)[s]]
        out[s] = np.flatnonzero(np.isin(atlas.labels[s], ids))
    return out


def _build_cifti(folder: Path) -> None:
    from mindvis.io import cifti
    from mindvis.preprocess.hcp import CIFTI_TEMPLATE

    verts = _hcp_vertices()
    axis = cifti.surface_brain_models(verts)
    rng = np.random.default_rng(0)
    data = (1e4 + 50 * rng.standard_normal((4, len(axis)))).astype(np.float32)
    path = folder / CIFTI_TEMPLATE.format(run=HCP_RUN)
    path.parent.mkdir(parents=True, exist_ok=True)
    cifti.write_dtseries(path, data, axis, tr=0.72)


def _run_hcp_cifti(folder: Path, out: Path):
    from mindvis.preprocess.hcp import HcpPreprocessConfig, preprocess_hcp_subject

    return preprocess_hcp_subject(folder, out / "HCP_visual_voxel.npz", HcpPreprocessConfig(runs=[HCP_RUN]))


_GRID = (5, 4, 3)
_VOLUME = "run.nii"
_LABELS = "labels.nii.gz"


def _build_volume(folder: Path, gz: bool) -> None:
    from mindvis.io.volume import write_label_image, write_volume_run

    rng = np.random.default_rng(1)
    frames = (1e3 + 20 * rng.standard_normal((6, *_GRID))).astype(np.float32)
    write_volume_run(folder / (_VOLUME + (".gz" if gz else "")), frames, (*_GRID, 6))
    labels = np.zeros(_GRID, dtype=np.int16)
    for k, ids in enumerate(([1, 181], [4, 184], [5, 185], [6, 186])):
        labels.reshape(-1)[3 * k : 3 * k + 3] = ids[k % 2]
    write_label_image(folder / _LABELS, labels)


def _run_hcp_volume(folder: Path, out: Path, gz: bool):
    from mindvis.preprocess.hcp import HcpPreprocessConfig, preprocess_hcp_subject

    cfg = HcpPreprocessConfig(runs=[HCP_RUN], input="volume", volume_template=_VOLUME + (".gz" if gz else ""),
                              roi_image=_LABELS, chunk_frames=2)
    return preprocess_hcp_subject(folder, out / "HCP_visual_voxel.npz", cfg)


def _check_hcp_output(out: Path) -> None:
    from mindvis.data.hcp import load_hcp_voxels

    load_hcp_voxels(out / "HCP_visual_voxel.npz")


# ----------------------------------------------------------------------------- npz loaders


def _build_god_npz(folder: Path) -> None:
    from god_factory import write_god_npz

    write_god_npz(folder / "sbj_1.npz", n_voxels=20)


def _run_god_npz(folder: Path, out: Path):
    from mindvis.data.god import load_god_npz

    return load_god_npz(folder / "sbj_1.npz")


def _build_hcp_npz(folder: Path) -> None:
    rng = np.random.default_rng(2)
    arrays = {a: rng.standard_normal((12, n)).astype(np.float32) for a, n in (("V1", 5), ("V2", 4), ("V3", 3),
                                                                               ("V4", 2))}
    np.savez(folder / "HCP_visual_voxel.npz", **arrays, run_lengths=np.array([7, 5]))


def _run_hcp_npz(folder: Path, out: Path):
    from mindvis.data.hcp import load_hcp_voxels

    return load_hcp_voxels(folder / "HCP_visual_voxel.npz")


def _build_bold5000_npz(folder: Path) -> None:
    rng = np.random.default_rng(3)
    v, n_train, n_test, reps = 8, 6, 3, 2
    arrays = {
        "arr_0": rng.standard_normal((n_train, v)).astype(np.float32),
        "arr_1": rng.standard_normal((n_test * reps, v)).astype(np.float32),
        "arr_2": rng.standard_normal((n_test, v)).astype(np.float32),
        "arr_3": np.arange(n_train, dtype=np.int64),
        "test_trial_image_index": np.repeat(np.arange(n_test), reps),
        "train_images": rng.integers(0, 256, (n_train, 8, 8, 3), dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 8, 8, 3), dtype=np.uint8),
        "LHPPA": np.arange(v) % 2 == 0,
        "RHPPA": np.arange(v) % 2 == 1,
        "train_trial_index": np.arange(n_train),
        "test_trial_index": np.arange(n_test * reps),
        "roi_order": np.array(["LHPPA", "RHPPA"]),
        "subject": np.array("CSI1"),
    }
    np.savez(folder / "CSI1.npz", **arrays)


def _run_bold5000_npz(folder: Path, out: Path):
    from mindvis.data.bold5000 import load_bold5000_npz

    return load_bold5000_npz(folder / "CSI1.npz")


# ----------------------------------------------------------------------------- BOLD5000 presentation lists

_LIST_NAMES = ["a.jpg", "b.JPEG", "rep_a.jpg", "COCO_train2014_000000000009.jpg", "scene01.jpg", "rep_b.JPEG"]


def _build_presentations(folder: Path) -> None:
    lists = folder / "CSI1"
    names = []
    for session, run in ((1, 1), (1, 2), (2, 1)):
        path = lists / f"CSI1_sess{session:02d}" / f"CSI_sess{session:02d}_run{run:02d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [_LIST_NAMES[(session * 3 + run + i) % len(_LIST_NAMES)] for i in range(4)]
        path.write_text("\n".join(lines) + "\n")
        names += [n.removeprefix("rep_") for n in lines]
    (folder / "CSI1_imgnames.txt").write_text("\n".join(names) + "\n")


def _run_presentations(folder: Path, out: Path):
    from mindvis.preprocess.bold5000_lists import (
        check_order,
        find_presentation_lists,
        read_name_list,
        read_presentations,
    )

    trials = read_presentations(find_presentation_lists(folder / "CSI1", 1))
    imgnames = folder / "CSI1_imgnames.txt"
    check_order(trials, read_name_list(imgnames), imgnames, folder / "CSI1")
    return trials


def _build_image_list(folder: Path) -> None:
    from god_factory import build_god_raw, write_id_csv

    write_id_csv(folder / "imageID_training.csv", build_god_raw().train_keys)


def _run_image_list(folder: Path, out: Path):
    from mindvis.preprocess.stimulus_ids import read_image_list

    return read_image_list(folder / "imageID_training.csv")


def _build_stimuli(folder: Path) -> None:
    from mindvis.simulate.stimuli import StimuliConfig, build_stimuli, write_stimuli

    write_stimuli(build_stimuli(StimuliConfig(image_size=8, train_per_class=1, test_per_class=1)), folder)


def _run_stimuli(folder: Path, out: Path):
    from mindvis.simulate.stimuli import load_stimuli

    return load_stimuli(folder / "stimuli.npz")


def _build_samples(folder: Path) -> None:
    rng = np.random.default_rng(4)
    np.savez(folder / "samples.npz", samples=rng.integers(0, 256, (3, 2, 8, 8, 3), dtype=np.uint8),
             ground_truth=rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8), test_labels=np.arange(3))


def _run_samples(folder: Path, out: Path):
    from mindvis.evaluation import load_samples

    return load_samples(folder / "samples.npz")


def _build_checkpoint(folder: Path, zip_format: bool) -> None:
    """A MinD-Vis-style checkpoint: tensors, an optimizer-like dict and a pickled config.Config_* object."""
    import sys
    import types

    import torch

    fake = types.ModuleType("config")

    class Config_MBM_fMRI:  # noqa: N801 - MinD-Vis's name
        def __init__(self):
            self.lr, self.patch_size, self.roi = 2.5e-4, 16, "VC"

    Config_MBM_fMRI.__module__, Config_MBM_fMRI.__qualname__ = "config", "Config_MBM_fMRI"
    fake.Config_MBM_fMRI = Config_MBM_fMRI
    sys.modules["config"] = fake
    try:
        torch.save({"model": {"w": torch.arange(6.0).reshape(2, 3), "b": torch.zeros(2, dtype=torch.int64)},
                    "epoch": 3, "config": Config_MBM_fMRI()}, folder / "fmri_encoder.pth",
                   _use_new_zipfile_serialization=zip_format)
    finally:
        del sys.modules["config"]


def _run_checkpoint(folder: Path, out: Path):
    from mindvis.checkpoints.safe_load import safe_load

    return safe_load(folder / "fmri_encoder.pth")


TARGETS: dict[str, Target] = {
    t.name: t
    for t in [
        Target("bdata-h5", _build_god, "Subject1.h5", _run_god, H5_MUTATIONS, ("sbj_1.npz",), _check_god_output),
        Target("god-csv-via-preprocess", _build_god, "imageID_test.csv", _run_god, TEXT_MUTATIONS, ("sbj_1.npz",),
               _check_god_output),
        Target("image-id-csv", _build_image_list, "imageID_training.csv", _run_image_list, TEXT_MUTATIONS),
        Target("cifti-dtseries", _build_cifti, "MNINonLinear/Results/rfMRI_REST1_LR/"
               "rfMRI_REST1_LR_Atlas_MSMAll_hp2000_clean.dtseries.nii", _run_hcp_cifti, CIFTI_MUTATIONS,
               ("HCP_visual_voxel.npz",), _check_hcp_output),
        Target("nifti-run", lambda f: _build_volume(f, False), _VOLUME, lambda f, o: _run_hcp_volume(f, o, False),
               NIFTI_MUTATIONS, ("HCP_visual_voxel.npz",), _check_hcp_output),
        Target("nifti-run-gz", lambda f: _build_volume(f, True), _VOLUME + ".gz",
               lambda f, o: _run_hcp_volume(f, o, True), NIFTI_MUTATIONS, ("HCP_visual_voxel.npz",),
               _check_hcp_output),
        Target("nifti-labels", lambda f: _build_volume(f, False), _LABELS, lambda f, o: _run_hcp_volume(f, o, False),
               NIFTI_MUTATIONS, ("HCP_visual_voxel.npz",), _check_hcp_output),
        Target("god-npz", _build_god_npz, "sbj_1.npz", _run_god_npz, NPZ_MUTATIONS),
        Target("hcp-npz", _build_hcp_npz, "HCP_visual_voxel.npz", _run_hcp_npz, NPZ_MUTATIONS),
        Target("bold5000-npz", _build_bold5000_npz, "CSI1.npz", _run_bold5000_npz, NPZ_MUTATIONS),
        Target("stimuli-npz", _build_stimuli, "stimuli.npz", _run_stimuli, NPZ_MUTATIONS),
        Target("samples-npz", _build_samples, "samples.npz", _run_samples, NPZ_MUTATIONS),
        Target("checkpoint-zip", lambda f: _build_checkpoint(f, True), "fmri_encoder.pth", _run_checkpoint,
               CHECKPOINT_MUTATIONS),
        Target("checkpoint-legacy", lambda f: _build_checkpoint(f, False), "fmri_encoder.pth", _run_checkpoint,
               CHECKPOINT_MUTATIONS),
        Target("bold5000-presentation-list", _build_presentations, "CSI1/CSI1_sess01/CSI_sess01_run02.txt",
               _run_presentations, TEXT_MUTATIONS),
        Target("bold5000-imgnames", _build_presentations, "CSI1_imgnames.txt", _run_presentations, TEXT_MUTATIONS),
    ]
}


# ============================================================================= one case


@dataclass
class Outcome:
    target: str
    mutation: str
    seed: int
    digest: str  # sha256 of the mutated file: distinct inputs are counted by it
    malformed: bool  # the mutation changed the file
    result: str  # "valid" | "clean-error" | "traceback" | "half-written" | "payload-ran"
    detail: str = ""


@dataclass
class Counts:
    cases: int = 0
    distinct: set = field(default_factory=set)
    valid: int = 0
    clean: int = 0
    failures: list = field(default_factory=list)

    def add(self, outcome: Outcome) -> None:
        self.cases += 1
        if outcome.malformed:
            self.distinct.add(outcome.digest)
        if outcome.result == "valid":
            self.valid += 1
        elif outcome.result == "clean-error":
            self.clean += 1
        else:
            self.failures.append(outcome)


_SEEDS: dict[tuple[str, str], Path] = {}


def seed_folder(target: Target, scratch: Path) -> Path:
    """The target's valid input set, written once per scratch folder and reused by every case."""
    key = (target.name, str(scratch))
    if key not in _SEEDS:
        folder = scratch / f"seed-{target.name}"
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        target.build(folder)
        _SEEDS[key] = folder
    return _SEEDS[key]


def _leftovers(folder: Path) -> list[str]:
    """Temporary files a writer left (atomic writers name them .<name>.*.tmp*)."""
    return sorted(p.name for p in folder.rglob("*") if ".tmp" in p.name)


def run_case(target: Target, mutation: Callable, seed: int, scratch: Path) -> Outcome:
    """Copy the valid set, mutate one file, run the reader, and classify what happened."""
    seed_dir = seed_folder(target, scratch)
    case = scratch / f"case-{target.name}"
    if case.exists():
        shutil.rmtree(case)
    inputs, out = case / "in", case / "out"
    shutil.copytree(seed_dir, inputs)
    out.mkdir()
    victim = inputs / target.mutated
    before = victim.read_bytes()
    rng = np.random.default_rng(seed)
    try:
        mutation(victim, rng)
    except Exception as exc:  # noqa: BLE001 - a mutation that cannot apply to this file leaves it as it was
        victim.write_bytes(before)
        return Outcome(target.name, mutation.__name__, seed, "", False, "valid", f"mutation not applicable: {exc}")
    after = victim.read_bytes()
    digest = hashlib.sha256(target.name.encode() + after).hexdigest()
    outcome = Outcome(target.name, mutation.__name__, seed, digest, after != before, "valid")
    try:
        target.run(inputs, out)
    except MindVisError as exc:
        outcome.result, outcome.detail = "clean-error", str(exc)
        if "\n" in str(exc).strip():
            outcome.result, outcome.detail = "traceback", f"multi-line message: {exc!r}"
        elif "weights_only" in str(exc) or "if you trust" in str(exc):
            outcome.result, outcome.detail = "traceback", f"message advises turning a check off: {exc}"
    except Exception as exc:  # noqa: BLE001 - exactly what the property forbids
        outcome.result = "traceback"
        outcome.detail = "".join(traceback.format_exception_only(type(exc), exc)).strip() + "\n" + "".join(
            traceback.format_tb(exc.__traceback__)[-3:])
    if (inputs / MARKER).exists() or (victim.parent / MARKER).exists():
        outcome.result, outcome.detail = "payload-ran", "the pickled payload created its marker folder"
    left = _leftovers(out) + _leftovers(inputs)
    if left and outcome.result in ("valid", "clean-error"):
        outcome.result, outcome.detail = "half-written", f"temporary files left: {left}"
    written = [name for name in target.outputs if (out / name).exists()]
    if outcome.result == "clean-error" and written:
        outcome.result, outcome.detail = "half-written", f"output {written} written by a run that failed"
    if outcome.result == "valid" and target.check_output is not None and written:
        try:
            target.check_output(out)
        except MindVisError as exc:
            outcome.result, outcome.detail = "half-written", f"output does not load: {exc}"
    return outcome


def _inspect_variant(base: Target) -> Target:
    """`mindvis inspect` on the same malformed file: the same readers, the same clean errors."""

    def run(folder: Path, out: Path):
        from mindvis.cli.inspect_cmd import describe

        return describe(folder / base.mutated)

    return Target(f"inspect-{base.name}", base.build, base.mutated, run, base.mutations)


for _name in ("bdata-h5", "image-id-csv", "cifti-dtseries", "nifti-run-gz", "god-npz", "checkpoint-zip",
              "checkpoint-legacy", "bold5000-imgnames"):
    _variant = _inspect_variant(TARGETS[_name])
    TARGETS[_variant.name] = _variant
