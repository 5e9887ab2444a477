"""Print what a pipeline file holds: keys, shapes, dtypes and value ranges.

Understands .npz / .npy (MinD-Vis inputs), BData .h5 (GOD releases), NIfTI
and CIFTI files (.nii, .nii.gz), and PyTorch checkpoints (.pth / .pt /
.ckpt, loaded with weights_only=True: no pickled code runs).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from mindvis.utils.errors import InputDataError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", type=Path, help="files to describe")


def _describe_array(name: str, arr: np.ndarray) -> str:
    line = f"  {name:<28} {str(arr.dtype):<8} {str(arr.shape):<22}"
    if arr.size and np.issubdtype(arr.dtype, np.number) and arr.dtype != bool:
        finite = np.isfinite(arr) if np.issubdtype(arr.dtype, np.floating) else np.ones(arr.shape, bool)
        if finite.any():
            vals = arr[finite]
            line += f" min {vals.min():.4g} max {vals.max():.4g} mean {vals.mean():.4g}"
        if not finite.all():
            line += f" non-finite {int((~finite).sum())}"
    elif arr.dtype == bool:
        line += f" true {int(arr.sum())}"
    return line


def describe(path: Path) -> str:
    if not path.exists():
        raise InputDataError(path, "file not found")
    name = path.name.lower()
    lines = [str(path)]
    if name.endswith(".npz"):
        with np.load(path, allow_pickle=False) as npz:
            lines += [_describe_array(k, npz[k]) for k in npz.files]
    elif name.endswith(".npy"):
        lines.append(_describe_array("array", np.load(path, mmap_mode="r", allow_pickle=False)))
    elif name.endswith((".h5", ".hdf5")):
        from mindvis.io.bdata import read_bdata

        bd = read_bdata(path)
        lines.append(f"  BData: {bd.dataset.shape[0]} samples x {bd.dataset.shape[1]} columns")
        for key in bd.keys:
            flagged = bd.columns_flagged(key).size
            lines.append(f"  {key:<28} flags {flagged} columns")
        if bd.has_key("DataType"):
            types, counts = np.unique(bd.label("DataType"), return_counts=True)
            lines.append("  DataType counts: " + ", ".join(f"{t:g}: {c}" for t, c in zip(types, counts)))
    elif name.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        img = nib.load(path)
        lines.append(f"  {type(img).__name__} shape {img.shape} dtype {img.get_data_dtype()}")
        if hasattr(img.header, "get_axis"):
            for i in range(len(img.shape)):
                lines.append(f"  axis {i}: {type(img.header.get_axis(i)).__name__}")
        else:
            lines.append(f"  zooms {img.header.get_zooms()}")
    elif name.endswith((".pth", ".pt", ".ckpt")):
        import torch

        obj = torch.load(path, map_location="cpu", weights_only=True)
        lines += _describe_checkpoint(obj)
    else:
        raise InputDataError(path, "unknown file type (expected .npz, .npy, .h5, .nii[.gz], .pth)")
    return "\n".join(lines)


def _describe_checkpoint(obj, prefix: str = "") -> list[str]:
    import torch

    lines: list[str] = []
    if isinstance(obj, dict):
        for key, value in obj.items():
            if isinstance(value, torch.Tensor):
                lines.append(f"  {prefix}{key:<40} {str(tuple(value.shape)):<20} {value.dtype}")
            elif isinstance(value, dict) and len(lines) < 400:
                lines += _describe_checkpoint(value, prefix=f"{prefix}{key}.")
            else:
                lines.append(f"  {prefix}{key:<40} {type(value).__name__}")
    return lines


def run(args: argparse.Namespace) -> int:
    for path in args.paths:
        print(describe(path))
    return 0
