"""Print what a pipeline file holds: keys, shapes, dtypes and value ranges.

Understands .npz / .npy (MinD-Vis inputs), BData .h5 (GOD releases), NIfTI and
CIFTI files (.nii, .nii.gz), PyTorch checkpoints (.pth / .pt / .ckpt: read through
the project's checkpoint gate, so no pickled code runs and MinD-Vis's own files,
with their pickled `config.Config_*`, are shown as data), GOD imageID .csv lists
and BOLD5000 .txt name lists. Each file is read by the same function the pipeline
uses for it (mindvis.io.readers): a damaged or hostile file is one error line
naming it, and the other files are still described (exit code 2 if any failed).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from mindvis.utils.errors import InputDataError, MindVisError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", type=Path, help="files to describe")


def _describe_array(name: str, arr: np.ndarray) -> str:
    line = f"  {name:<28} {str(arr.dtype):<8} {str(arr.shape):<22}"
    if arr.size and np.issubdtype(arr.dtype, np.number) and arr.dtype != bool:
        finite = np.isfinite(arr) if np.issubdtype(arr.dtype, np.inexact) else np.ones(arr.shape, bool)
        if finite.any():
            vals = arr[finite]
            line += f" min {vals.min():.4g} max {vals.max():.4g} mean {vals.mean():.4g}"
        if not finite.all():
            line += f" non-finite {int((~finite).sum())}"
    elif arr.dtype == bool:
        line += f" true {int(arr.sum())}"
    return line


def _npz(path: Path) -> list[str]:
    from mindvis.io.npz import open_npz

    with open_npz(path) as npz:
        return [_describe_array(k, npz[k]) for k in npz.files]


def _npy(path: Path) -> list[str]:
    from mindvis.io.npz import read_npy

    return [_describe_array("array", read_npy(path, mmap=True))]


def _bdata(path: Path) -> list[str]:
    from mindvis.io.bdata import read_bdata

    bd = read_bdata(path)
    lines = [f"  BData: {bd.dataset.shape[0]} samples x {bd.dataset.shape[1]} columns"]
    for key in bd.keys:
        lines.append(f"  {key:<28} flags {bd.columns_flagged(key).size} columns")
    if bd.has_key("DataType"):
        types, counts = np.unique(bd.label("DataType"), return_counts=True)
        lines.append("  DataType counts: " + ", ".join(f"{t:g}: {c}" for t, c in zip(types, counts)))
    return lines


def _cifti(path: Path) -> list[str]:
    from mindvis.io.cifti import open_dtseries

    run = open_dtseries(path)
    lines = [f"  CIFTI-2 dense time series: {run.n_frames} frames x {run.n_grayordinates} grayordinates, "
             f"TR {run.tr:g} s"]
    lines += [f"  {s:<40} {c.columns.size} grayordinates (mesh of {c.n_mesh_vertices})"
              for s, c in run.surfaces().items()]
    return lines


def _nifti(path: Path) -> list[str]:
    from mindvis.io.volume import read_nifti_image

    img = read_nifti_image(path)
    try:
        lines = [f"  {type(img).__name__} shape {img.shape} dtype {img.get_data_dtype()}"]
        if hasattr(img.header, "get_axis"):  # CIFTI-2
            lines += [f"  axis {i}: {type(img.header.get_axis(i)).__name__}" for i in range(len(img.shape))]
        else:
            lines.append(f"  zooms {img.header.get_zooms()}")
    except Exception as exc:  # noqa: BLE001 - header fields nibabel cannot interpret
        raise InputDataError(path, f"NIfTI header unreadable ({type(exc).__name__}: {exc})") from None
    return lines


def _checkpoint(path: Path) -> list[str]:
    from mindvis.checkpoints.safe_load import safe_load

    return _describe_checkpoint(safe_load(path, mmap=True))


def _csv(path: Path) -> list[str]:
    from mindvis.preprocess.stimulus_ids import read_image_list

    images = read_image_list(path)
    lines = [f"  image id list: {len(images)} images"]
    lines += [f"  {t:<20} {n}" for t, n in zip(images.id_texts()[:5], images.filenames[:5])]
    return lines + (["  ..."] if len(images) > 5 else [])


def _text(path: Path) -> list[str]:
    from mindvis.preprocess.bold5000_lists import read_name_list

    names = read_name_list(path)
    return [f"  name list: {len(names)} lines"] + [f"  {n}" for n in names[:5]] + (["  ..."] if len(names) > 5 else [])


_DESCRIBE = {"npz": _npz, "npy": _npy, "bdata": _bdata, "cifti": _cifti, "nifti": _nifti,
             "checkpoint": _checkpoint, "csv": _csv, "text": _text}


def describe(path: Path) -> str:
    from mindvis.io.readers import kind_of

    if not path.exists():
        raise InputDataError(path, "file not found")
    kind = kind_of(path)
    if kind is None:
        raise InputDataError(path, "unknown file type (expected .npz, .npy, .h5, .nii[.gz], .pth/.pt/.ckpt, "
                                   ".csv, .txt)")
    return "\n".join([str(path), *_DESCRIBE[kind](path)])


def _describe_checkpoint(obj, prefix: str = "") -> list[str]:
    import torch

    from mindvis.checkpoints.safe_load import ForeignConfig

    lines: list[str] = []
    if isinstance(obj, ForeignConfig):
        return [f"  {prefix.rstrip('.') or 'object':<40} {obj.class_name} (read as data: {len(obj.fields)} fields)"]
    if isinstance(obj, dict):
        for key, value in obj.items():
            if isinstance(value, torch.Tensor):
                lines.append(f"  {prefix}{key!s:<40} {str(tuple(value.shape)):<20} {value.dtype}")
            elif isinstance(value, ForeignConfig):
                lines.append(f"  {prefix}{key!s:<40} {value.class_name} (read as data: {len(value.fields)} fields)")
            elif isinstance(value, dict) and len(lines) < 400:
                lines += _describe_checkpoint(value, prefix=f"{prefix}{key}.")
            else:
                lines.append(f"  {prefix}{key!s:<40} {type(value).__name__}")
    else:
        lines.append(f"  {type(obj).__name__}")
    return lines


def run(args: argparse.Namespace) -> int:
    failed = 0
    for path in args.paths:
        try:
            print(describe(path))
        except MindVisError as exc:  # one line per bad file; the others are still described
            print(f"mindvis inspect: error: {exc}", file=sys.stderr)
            failed += 1
    return 2 if failed else 0
