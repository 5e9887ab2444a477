"""Small hand-made GOD inputs for the tests: BData files, imageID CSVs, sbj_N.npz.

`build_god_raw` makes a subject whose every value is known: the tests compute
the expected npz by hand from `GodRaw`'s per-row records and compare.
Rows (training, test and imagery trials) are shuffled and the voxel columns
of the ROIs interleaved with voxels outside VC, so ordering and masking bugs
show up. Tests import it as `from god_factory import ...`: pytest's default
(prepend) import mode puts tests/ on sys.path, and each test file also adds
its own folder, so no conftest.py is needed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mindvis.io.bdata import write_bdata

ID_SCALE = 1_000_000
# Voxels per elementary ROI; LVC = V1..V4, HVC = LOC+FFA+PPA, VC = all of them.
ROI_LAYOUT = {"V1": 3, "V2": 3, "V3": 2, "V4": 2, "LOC": 2, "FFA": 2, "PPA": 2}
LOWER = ("V1", "V2", "V3", "V4")
HIGHER = ("LOC", "FFA", "PPA")
N_OUTSIDE_VC = 2
TRAIN_WNIDS = (1518878, 1443537, 2084071, 1531178)
TEST_WNIDS = (1858441, 2139199, 3345487, 4254680)


def id_text(key: int) -> str:
    return f"{key // ID_SCALE}.{key % ID_SCALE:06d}"


def file_name(key: int) -> str:
    return f"n{key // ID_SCALE:08d}_{key % ID_SCALE}.JPEG"


@dataclass
class GodPaths:
    bdata: Path
    train_list: Path
    test_list: Path


@dataclass
class GodRaw:
    """A BData subject being built; edit `dataset`/`values`/`keys` before `write`."""

    dataset: np.ndarray  # (n_rows, n_columns) float64
    keys: list[str]
    values: np.ndarray  # (n_keys, n_columns)
    train_keys: np.ndarray  # imageID_training order (int64 id keys)
    test_keys: np.ndarray  # imageID_test order
    row_datatype: np.ndarray  # (n_rows,) 1/2/3
    row_key: np.ndarray  # (n_rows,) int64 stimulus key of each row
    voxel_roi: list[str]  # (n_voxels,) elementary ROI of each voxel column ("out" = outside VC)
    test_class: dict[int, int] = field(default_factory=dict)  # test key -> class label

    @property
    def n_voxels(self) -> int:
        return len(self.voxel_roi)

    def column(self, key: str) -> int:
        """The single column flagged by a per-sample label key."""
        return int(np.flatnonzero(self.values[self.keys.index(key)] == 1)[0])

    def vc_columns(self) -> np.ndarray:
        return np.array([i for i, r in enumerate(self.voxel_roi) if r != "out"])

    def roi_columns(self, name: str) -> np.ndarray:
        members = {"LVC": LOWER, "HVC": HIGHER, "VC": LOWER + HIGHER}.get(name, (name,))
        return np.array([i for i, r in enumerate(self.voxel_roi) if r in members])

    def drop_key(self, key: str) -> None:
        i = self.keys.index(key)
        self.keys.pop(i)
        self.values = np.delete(self.values, i, axis=0)

    def write(self, directory: Path, name: str = "Subject1.h5", **csv_options) -> GodPaths:
        directory.mkdir(parents=True, exist_ok=True)
        paths = GodPaths(directory / name, directory / "imageID_training.csv", directory / "imageID_test.csv")
        write_bdata(paths.bdata, self.dataset, self.keys, [f"{k} (test)" for k in self.keys], self.values)
        write_id_csv(paths.train_list, self.train_keys, **csv_options)
        write_id_csv(paths.test_list, self.test_keys, **csv_options)
        return paths


def write_id_csv(
    path: Path,
    keys: np.ndarray,
    quote: bool = True,
    crlf: bool = False,
    header: bool = False,
    space: bool = False,
    drift: bool = False,
) -> None:
    """An imageID CSV like GOD's: `1518878.010042,"n01518878_10042.JPEG"` (variants for robustness tests)."""
    lines = ["image_id,file_name"] if header else []
    for k in keys:
        ident = repr(int(k) / ID_SCALE) if drift else id_text(int(k))  # drift: float repr, trailing zeros cut
        name = f'"{file_name(int(k))}"' if quote else file_name(int(k))
        lines.append(f"{ident},{' ' if space else ''}{name}")
    end = "\r\n" if crlf else "\n"
    path.write_text(end.join(lines) + end, newline="")


def build_god_raw(
    seed: int = 0,
    n_train_per_class: int = 2,
    n_test_images: int = 3,
    test_repeats: int = 3,
    n_imagery: int = 2,
    with_label: bool = False,
    unequal_repeats: bool = False,
) -> GodRaw:
    """A tiny GOD subject: 8 training images, `n_test_images` test images x repeats, imagery trials."""
    rng = np.random.default_rng(seed)
    train_keys = np.array(
        [w * ID_SCALE + 10000 + 7 * i + 3 * j for j, w in enumerate(TRAIN_WNIDS) for i in range(n_train_per_class)],
        dtype=np.int64,
    )
    test_keys = np.array([w * ID_SCALE + 20042 + i for i, w in enumerate(TEST_WNIDS[:n_test_images])], dtype=np.int64)

    # Trials: each training image once; each test image `test_repeats` times (one more for image 0 if unequal).
    row_dtype = [1] * train_keys.size
    row_key = list(train_keys[rng.permutation(train_keys.size)])
    for r in range(test_repeats + (1 if unequal_repeats else 0)):
        shown = test_keys if r < test_repeats else test_keys[:1]
        row_dtype += [2] * shown.size
        row_key += list(shown[rng.permutation(shown.size)])
    row_dtype += [3] * n_imagery
    row_key += [TEST_WNIDS[i % n_test_images] * ID_SCALE for i in range(n_imagery)]  # category ids, in no list
    perm = rng.permutation(len(row_key))
    row_dtype = np.asarray(row_dtype)[perm]
    row_key = np.asarray(row_key, dtype=np.int64)[perm]

    voxel_roi = [name for name, n in ROI_LAYOUT.items() for _ in range(n)] + ["out"] * N_OUTSIDE_VC
    voxel_roi = [voxel_roi[i] for i in rng.permutation(len(voxel_roi))]
    n_vox = len(voxel_roi)
    label_keys = ["DataType", "Run", "stimulus_id"] + (["Label"] if with_label else [])
    n_cols = n_vox + len(label_keys)

    data = np.empty((row_key.size, n_cols))
    data[:, :n_vox] = 5.0 + rng.normal(size=(row_key.size, n_vox))  # offset: z-scoring must matter
    data[:, n_vox] = row_dtype
    data[:, n_vox + 1] = np.arange(row_key.size) // 4 + 1
    data[:, n_vox + 2] = row_key / ID_SCALE  # float ids, as the release stores them
    test_class = {int(k): 100 + i for i, k in enumerate(test_keys)}
    if with_label:
        data[:, n_vox + 3] = [test_class.get(int(k), 0) for k in row_key]

    keys = ["VoxelData", "voxel_x", "voxel_y", "voxel_z"]
    keys += [f"ROI_{n}" for n in ROI_LAYOUT] + ["ROI_LVC", "ROI_HVC", "ROI_VC"] + label_keys
    values = np.full((len(keys), n_cols), np.nan)
    values[0, :n_vox] = 1
    values[1:4, :n_vox] = rng.uniform(-60, 60, size=(3, n_vox))
    groups = {**{n: (n,) for n in ROI_LAYOUT}, "LVC": LOWER, "HVC": HIGHER, "VC": LOWER + HIGHER}
    for name, members in groups.items():
        values[keys.index(f"ROI_{name}"), :n_vox] = [1.0 if r in members else 0.0 for r in voxel_roi]
    for j, key in enumerate(label_keys):
        values[keys.index(key), n_vox + j] = 1
    return GodRaw(
        dataset=data,
        keys=keys,
        values=values,
        train_keys=train_keys,
        test_keys=test_keys,
        row_datatype=row_dtype,
        row_key=row_key,
        voxel_roi=voxel_roi,
        test_class=test_class,
    )


def write_god_npz(
    path: Path,
    n_voxels: int,
    seed: int = 0,
    n_train: int = 12,
    n_train_images: int = 6,
    n_test_images: int = 3,
    repeats: int = 2,
    masks: bool = True,
    offset: float = 3.0,
) -> dict[str, np.ndarray]:
    """An sbj_N.npz in MinD-Vis's layout written with plain np.savez (float64, as a third party might)."""
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {
        "arr_0": offset + rng.normal(size=(n_train, n_voxels)),
        "arr_1": offset + 0.5 + rng.normal(size=(n_test_images * repeats, n_voxels)),
        "arr_3": rng.integers(0, n_train_images, size=n_train),
    }
    arrays["arr_2"] = arrays["arr_1"].reshape(n_test_images, repeats, n_voxels).mean(axis=1)
    if masks:
        vc = np.ones(n_voxels, dtype=bool)
        vc[0] = False  # one voxel outside VC so ROI selection is visible
        arrays["VC"] = vc
        arrays["V1"] = np.arange(n_voxels) < n_voxels // 2
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return arrays
