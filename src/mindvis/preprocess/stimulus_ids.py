"""GOD stimulus ids: read the imageID CSV lists and match fMRI trials to them.

A GOD stimulus id is a float `WNID.IIIIII`: 1518878.010042 is the image
n01518878_10042.JPEG. Its text form drifts between files (trailing zeros cut,
scientific notation, float32 round-off), so ids are never compared as floats
or strings but as integer keys `round(id * 1e6)`.

The lists (`imageID_training.csv`, `imageID_test.csv`) have no header and
rows like `1518878.010042,"n01518878_10042.JPEG"`. We also accept unquoted
names, spaces after the comma, CRLF line ends, a UTF-8 byte-order mark, blank
lines, one header line, and id-only rows (the file name is then derived from
the id).
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mindvis.utils.errors import InputDataError

ID_SCALE = 1_000_000  # six decimal digits hold the image number
_NAME_RE = re.compile(r"^n(\d{8})_(\d+)\.[A-Za-z]+$")


def id_keys(ids: np.ndarray | list[float] | float) -> np.ndarray:
    """Integer keys round(id * 1e6) of finite float ids (int64, same shape)."""
    values = np.asarray(ids, dtype=np.float64)
    return np.rint(values * ID_SCALE).astype(np.int64)


def key_to_id_text(key: int) -> str:
    """The canonical text of an id key: 1518878014910 -> '1518878.014910'."""
    key = int(key)
    return f"{key // ID_SCALE}.{key % ID_SCALE:06d}"


def key_to_filename(key: int) -> str:
    """The ImageNet file name of an id key: 1518878014910 -> 'n01518878_14910.JPEG'."""
    key = int(key)
    return f"n{key // ID_SCALE:08d}_{key % ID_SCALE}.JPEG"


def filename_key(name: str) -> int | None:
    """The id key an ImageNet-style file name encodes, or None for other names."""
    match = _NAME_RE.match(Path(name).name)
    if match is None:
        return None
    return int(match.group(1)) * ID_SCALE + int(match.group(2))


@dataclass(frozen=True)
class ImageList:
    """One imageID CSV: row i is image i of the matching image array."""

    path: Path
    keys: np.ndarray  # (n,) int64 id keys, in file order
    filenames: list[str]  # (n,) image file names, in file order
    line_numbers: list[int]  # 1-based line of each row, for messages

    def __len__(self) -> int:
        return int(self.keys.size)

    def id_texts(self) -> list[str]:
        return [key_to_id_text(k) for k in self.keys]

    def positions(self, keys: np.ndarray) -> np.ndarray:
        """Row index of each key in this list, -1 where the key is not listed."""
        keys = np.asarray(keys, dtype=np.int64)
        order = np.argsort(self.keys, kind="stable")
        sorted_keys = self.keys[order]
        where = np.searchsorted(sorted_keys, keys)
        where = np.clip(where, 0, max(sorted_keys.size - 1, 0))
        found = sorted_keys[where] == keys if sorted_keys.size else np.zeros(keys.shape, bool)
        return np.where(found, order[where], -1).astype(np.int64)


def _clean(field: str) -> str:
    # csv already removed well-formed quotes; this catches stray ones and spaces.
    return field.strip().strip("\"'").strip()


def _parse_id(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value


def read_image_list(path: str | os.PathLike) -> ImageList:
    """Parse an imageID CSV; any defect is an `InputDataError` naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise InputDataError(path, "image id list not found")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh, skipinitialspace=True))
    except UnicodeDecodeError as exc:
        raise InputDataError(path, f"not a text CSV file ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise InputDataError(path, f"malformed CSV: {exc}") from None

    keys: list[int] = []
    names: list[str] = []
    lines: list[int] = []
    seen_content = False
    for lineno, row in enumerate(rows, start=1):
        fields = [_clean(f) for f in row]
        while fields and fields[-1] == "":
            fields.pop()
        if not fields:
            continue  # blank line
        value = _parse_id(fields[0])
        if value is None:
            if not seen_content:  # one header line is tolerated
                seen_content = True
                continue
            raise InputDataError(
                path, f"line {lineno}: '{fields[0]}' is not a stimulus id (expected e.g. 1518878.010042)"
            )
        seen_content = True
        if not np.isfinite(value) or value <= 0:
            raise InputDataError(path, f"line {lineno}: stimulus id {fields[0]!r} is not a positive number")
        key = int(id_keys(value))
        name = fields[1] if len(fields) > 1 else key_to_filename(key)
        name_key = filename_key(name)
        if name_key is not None and name_key != key:
            raise InputDataError(
                path,
                f"line {lineno}: id {fields[0]} and file name {name} disagree "
                f"(the name encodes id {key_to_id_text(name_key)})",
            )
        keys.append(key)
        names.append(name)
        lines.append(lineno)

    if not keys:
        raise InputDataError(path, "image id list holds no stimulus ids")
    key_array = np.asarray(keys, dtype=np.int64)
    uniq, counts = np.unique(key_array, return_counts=True)
    if (counts > 1).any():
        dup = uniq[counts > 1]
        details = []
        for k in dup[:5]:
            at = [lines[i] for i in np.flatnonzero(key_array == k)]
            details.append(f"{key_to_id_text(k)} (lines {', '.join(map(str, at))})")
        more = f" and {dup.size - 5} more" if dup.size > 5 else ""
        raise InputDataError(
            path, f"{dup.size} stimulus id(s) listed more than once: {'; '.join(details)}{more}"
        )
    return ImageList(path=path, keys=key_array, filenames=names, line_numbers=lines)
