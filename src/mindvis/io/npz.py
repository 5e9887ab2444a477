""".npz / .npy files, read one way everywhere: plain arrays only, every defect a clean error.

`np.load` on a damaged archive raises whatever its layers raise (zipfile's
BadZipFile for a bad CRC, zlib.error, EOFError, ValueError, OSError), and only
when a member is read, not when the archive is opened. `open_npz` wraps the
archive so that opening *and* every member read turn those into one
`InputDataError` naming the file and the member. Object arrays (pickled Python
objects, which can run code when loaded) are never unpickled: `allow_pickle` is
always False and such a member is refused by name.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from mindvis.utils.errors import InputDataError

# What numpy, zipfile and zlib raise for a damaged archive or member.
READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, KeyError, TypeError, MemoryError,
               NotImplementedError, OverflowError, UnicodeDecodeError)


def _problem(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    if isinstance(exc, ValueError) and "allow_pickle" in text:
        return "it holds a pickled object array, which is never loaded (only plain arrays are read)"
    return f"truncated or corrupt? ({type(exc).__name__}: {text[:200]})"


class NpzArchive:
    """An open .npz whose member reads raise InputDataError (naming file and member) on any defect."""

    def __init__(self, path: Path, npz: np.lib.npyio.NpzFile, what: str):
        self.path = path
        self._npz = npz
        self.what = what
        self.files: list[str] = list(npz.files)

    def __contains__(self, key: object) -> bool:
        return key in self.files

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self.files:
            raise InputDataError(self.path, f"{self.what}: no member '{key}' (has {', '.join(self.files) or 'none'})")
        try:
            return self._npz[key]
        except READ_ERRORS as exc:
            raise InputDataError(self.path, f"cannot read npz member '{key}' ({self.what}): {_problem(exc)}") from None

    def get(self, key: str, default=None):
        return self[key] if key in self.files else default

    def close(self) -> None:
        self._npz.close()

    def __enter__(self) -> NpzArchive:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_npz(path: str | os.PathLike, what: str = "npz file") -> NpzArchive:
    """Open an .npz for reading (its members are read on access, each read guarded)."""
    path = Path(path)
    if not path.is_file():
        raise InputDataError(path, f"{what} not found")
    try:
        obj = np.load(path, allow_pickle=False)
    except READ_ERRORS as exc:
        raise InputDataError(path, f"cannot read npz ({what}): {_problem(exc)}") from None
    if not isinstance(obj, np.lib.npyio.NpzFile):
        raise InputDataError(path, f"is a single .npy array, not an npz archive ({what})")
    return NpzArchive(path, obj, what)


def read_npz(path: str | os.PathLike, what: str = "npz file", required: Iterable[str] = ()) -> dict[str, np.ndarray]:
    """Every member of an .npz as arrays; `required` keys missing is an error listing what it has."""
    with open_npz(path, what) as npz:
        missing = [k for k in required if k not in npz]
        if missing:
            raise InputDataError(
                npz.path, f"not a {what}: missing {', '.join(missing)} (has {', '.join(npz.files) or 'nothing'})"
            )
        return {key: npz[key] for key in npz.files}


def read_npy(path: str | os.PathLike, what: str = "npy file", mmap: bool = False) -> np.ndarray:
    """One .npy array (memory-mapped when `mmap`); never unpickles."""
    path = Path(path)
    if not path.is_file():
        raise InputDataError(path, f"{what} not found")
    try:
        arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except READ_ERRORS as exc:
        raise InputDataError(path, f"cannot read npy ({what}): {_problem(exc)}") from None
    if not isinstance(arr, np.ndarray):
        raise InputDataError(path, f"is an npz archive, not a single .npy array ({what})")
    return arr
