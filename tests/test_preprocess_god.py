"""GOD preprocessing: BData + imageID CSVs -> sbj_N.npz, and images -> images_256.npz.

Expected arrays are computed by hand (plain loops over the factory's per-row
records), never with the code under test.
"""

from __future__ import annotations

import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from god_factory import (  # noqa: E402
    HIGHER,
    LOWER,
    ROI_LAYOUT,
    build_god_raw,
    file_name,
    id_text,
    write_id_csv,
)

from mindvis.cli.main import main  # noqa: E402
from mindvis.preprocess.god import GodPreprocessConfig, preprocess_god_subject  # noqa: E402
from mindvis.preprocess.god_images import GodImagesConfig, preprocess_god_images  # noqa: E402
from mindvis.preprocess.stimulus_ids import id_keys, read_image_list  # noqa: E402

ROI_MEMBERS = {**{n: (n,) for n in ROI_LAYOUT}, "LVC": LOWER, "HVC": HIGHER, "VC": LOWER + HIGHER}


def _expected(raw, columns):
    """Hand-made arr_0..arr_3 for the given voxel columns."""
    rows = range(raw.row_key.size)
    train_rows = [r for r in rows if raw.row_datatype[r] == 1]
    train_list = [int(k) for k in raw.train_keys]
    arr_0 = np.array([[raw.dataset[r, c] for c in columns] for r in train_rows])
    arr_3 = np.array([train_list.index(int(raw.row_key[r])) for r in train_rows])
    arr_1, arr_2 = [], []
    for k in raw.test_keys:
        shown = [r for r in rows if raw.row_datatype[r] == 2 and raw.row_key[r] == k]
        trials = [[raw.dataset[r, c] for c in columns] for r in shown]
        arr_1 += trials
        arr_2.append([sum(t[j] for t in trials) / len(trials) for j in range(len(columns))])
    return np.array(arr_0), np.array(arr_1), np.array(arr_2), arr_3


def _run(raw, tmp_path, cfg=None, **csv_options):
    paths = raw.write(tmp_path / "raw", **csv_options)
    out = tmp_path / "npz" / "sbj_1.npz"
    summary = preprocess_god_subject(paths.bdata, paths.train_list, paths.test_list, out, 1, cfg)
    with np.load(out) as npz:
        return {k: npz[k] for k in npz.files}, summary


def test_round_trip_matches_hand_computation(tmp_path):
    raw = build_god_raw(seed=1)
    arrays, summary = _run(raw, tmp_path)
    vc = raw.vc_columns()
    arr_0, arr_1, arr_2, arr_3 = _expected(raw, vc)

    assert set(arrays) == {"arr_0", "arr_1", "arr_2", "arr_3", "arr_4", *ROI_MEMBERS}
    for key in ("arr_0", "arr_1", "arr_2"):
        assert arrays[key].dtype == np.float32
    np.testing.assert_array_equal(arrays["arr_0"], arr_0.astype(np.float32))
    np.testing.assert_array_equal(arrays["arr_1"], arr_1.astype(np.float32))
    np.testing.assert_allclose(arrays["arr_2"], arr_2, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(arrays["arr_3"], arr_3)
    assert arrays["arr_3"].dtype == np.int64
    np.testing.assert_array_equal(arrays["arr_4"], np.arange(3))  # no Label column: image index
    for name, members in ROI_MEMBERS.items():
        expected = np.array([raw.voxel_roi[c] in members for c in vc])
        assert arrays[name].dtype == bool
        np.testing.assert_array_equal(arrays[name], expected, err_msg=name)

    assert summary["n_train_trials"] == 8 and summary["n_test_trials"] == 9
    assert summary["n_test_images"] == 3
    assert (summary["test_repeats_min"], summary["test_repeats_max"]) == (3, 3)
    assert summary["imagery_trials_excluded"] == 2
    assert summary["n_voxels"] == 16 and summary["dropped_voxels"] == 0
    assert summary["voxels_per_roi"] == {**ROI_LAYOUT, "LVC": 10, "HVC": 6, "VC": 16}
    assert summary["subject"] == "1" and summary["seconds"] >= 0


def test_unequal_repeats_and_label_column(tmp_path):
    raw = build_god_raw(seed=2, unequal_repeats=True, with_label=True)
    arrays, summary = _run(raw, tmp_path)
    _, arr_1, arr_2, _ = _expected(raw, raw.vc_columns())
    np.testing.assert_array_equal(arrays["arr_1"], arr_1.astype(np.float32))
    np.testing.assert_allclose(arrays["arr_2"], arr_2, atol=1e-6)
    assert (summary["test_repeats_min"], summary["test_repeats_max"]) == (3, 4)
    assert arrays["arr_1"].shape[0] == 10
    np.testing.assert_array_equal(arrays["arr_4"], [raw.test_class[int(k)] for k in raw.test_keys])
    assert summary["test_labels_source"] == "Label column"


def test_roi_selection_gives_masks_relative_to_kept_voxels(tmp_path):
    raw = build_god_raw(seed=3)
    arrays, summary = _run(raw, tmp_path, GodPreprocessConfig(roi="V1"))
    v1 = raw.roi_columns("V1")
    np.testing.assert_array_equal(arrays["arr_0"], _expected(raw, v1)[0].astype(np.float32))
    assert arrays["V1"].all() and arrays["LVC"].all() and arrays["VC"].all()
    assert not arrays["V2"].any() and not arrays["HVC"].any()
    assert summary["n_voxels"] == 3


def test_bad_voxels_dropped_and_masks_cut_the_same_way(tmp_path):
    raw = build_god_raw(seed=4)
    vc = raw.vc_columns()
    train_row = int(np.flatnonzero(raw.row_datatype == 1)[0])
    test_row = int(np.flatnonzero(raw.row_datatype == 2)[0])
    imagery_row = int(np.flatnonzero(raw.row_datatype == 3)[0])
    raw.dataset[train_row, vc[0]] = np.nan
    raw.dataset[test_row, vc[5]] = np.inf
    raw.dataset[raw.row_datatype != 3, vc[9]] = 2.5  # constant over kept trials only
    raw.dataset[imagery_row, vc[12]] = np.nan  # imagery is excluded: this voxel stays
    arrays, summary = _run(raw, tmp_path)

    kept = np.delete(vc, [0, 5, 9])
    np.testing.assert_array_equal(arrays["arr_0"], _expected(raw, kept)[0].astype(np.float32))
    assert np.isfinite(arrays["arr_0"]).all() and np.isfinite(arrays["arr_1"]).all()
    assert summary["dropped_voxels"] == 3
    assert summary["dropped_voxels_nonfinite"] == 2 and summary["dropped_voxels_constant"] == 1
    assert summary["n_voxels"] == 13
    for name, members in ROI_MEMBERS.items():
        np.testing.assert_array_equal(arrays[name], [raw.voxel_roi[c] in members for c in kept], err_msg=name)
    assert summary["voxels_per_roi"]["VC"] == 13


def test_stimulus_id_float_drift_still_matches(tmp_path):
    raw = build_god_raw(seed=5)
    reference, _ = _run(raw, tmp_path / "a")
    col = raw.column("stimulus_id")
    raw.dataset[:, col] += 2e-7  # well below half the 1e-6 id resolution
    drifted, _ = _run(raw, tmp_path / "b", drift=True, quote=False, crlf=True, header=True, space=True)
    for key in ("arr_0", "arr_1", "arr_2", "arr_3"):
        np.testing.assert_array_equal(drifted[key], reference[key])


def test_legacy_bdata_layout_gives_identical_output(tmp_path):
    """dataSet/metaData group names, fixed-length byte strings and a /header group."""
    raw = build_god_raw(seed=6)
    reference, _ = _run(raw, tmp_path / "a")
    paths = raw.write(tmp_path / "b")
    legacy = tmp_path / "b" / "Legacy.h5"
    with h5py.File(legacy, "w") as fh:
        fh.create_dataset("dataSet", data=raw.dataset)
        meta = fh.create_group("metaData")
        meta.create_dataset("key", data=np.array([k.encode() for k in raw.keys], dtype="S32"))
        meta.create_dataset("description", data=np.array([b"x"] * len(raw.keys), dtype="S8"))
        meta.create_dataset("value", data=raw.values)
        fh.create_group("header").attrs["version"] = "legacy"
    out = tmp_path / "legacy.npz"
    preprocess_god_subject(legacy, paths.train_list, paths.test_list, out, 1)
    with np.load(out) as npz:
        for key in reference:
            np.testing.assert_array_equal(npz[key], reference[key])


def test_image_list_parsing_variants(tmp_path):
    keys = np.array([1518878010042, 1443537022563, 2084071000100], dtype=np.int64)
    variants = [
        {},
        {"quote": False},
        {"crlf": True, "header": True},
        {"space": True, "drift": True},
    ]
    for i, options in enumerate(variants):
        path = tmp_path / f"list{i}.csv"
        write_id_csv(path, keys, **options)
        parsed = read_image_list(path)
        np.testing.assert_array_equal(parsed.keys, keys, err_msg=str(options))
        assert parsed.filenames == [file_name(int(k)) for k in keys]
    bom = tmp_path / "bom_idonly.csv"
    bom.write_text("\ufeff1518878.010042\n\n1443537.022563\n")  # BOM, id-only rows, blank line
    parsed = read_image_list(bom)
    assert parsed.filenames == ["n01518878_10042.JPEG", "n01443537_22563.JPEG"]
    assert parsed.id_texts() == ["1518878.010042", "1443537.022563"]
    np.testing.assert_array_equal(id_keys([1518878.01004, 1.518878010042e6]), [1518878010040, 1518878010042])


def test_cli_writes_npz_and_logs_to_mlflow(tmp_path):
    raw = build_god_raw(seed=7)
    paths = raw.write(tmp_path / "raw")
    out = tmp_path / "Kamitani" / "npz" / "sbj_1.npz"
    code = main([
        "preprocess-god", "--bdata", str(paths.bdata), "--train-list", str(paths.train_list),
        "--test-list", str(paths.test_list), "--subject", "1", "--out", str(out),
        "--config", '{"roi": "VC", "bad_voxels": "drop"}', "--rule", "preprocess_god", "--wildcard", "subject=1",
    ])
    assert code == 0
    with np.load(out) as npz:
        assert npz["arr_0"].shape == (8, 16)

    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1
    metrics = runs[0].data.metrics
    assert metrics["n_train_trials"] == 8 and metrics["n_test_images"] == 3 and metrics["voxels_V1"] == 3
    assert runs[0].data.tags["subject"] == "1" and runs[0].data.params["roi"] == "VC"


# -- images --------------------------------------------------------------------------------------------


def _solid(color, size=(10, 7), mode="RGB"):
    return Image.new(mode, size, color)


def _write_images(raw, image_dir: Path, flat: bool):
    colors = {}
    for split, keys in (("training", raw.train_keys), ("test", raw.test_keys)):
        folder = image_dir if flat else image_dir / split
        folder.mkdir(parents=True, exist_ok=True)
        for i, k in enumerate(keys):
            color = (10 * i + 5, 200 - 10 * i, 77 if split == "test" else 33)
            colors[int(k)] = color
            # PNG bytes under the list's .JPEG name: lossless, and PIL reads by content.
            _solid(color).save(folder / file_name(int(k)), format="PNG")
    return colors


@pytest.mark.parametrize("flat", [False, True])
def test_images_npz_in_list_order(tmp_path, flat):
    raw = build_god_raw(seed=8)
    paths = raw.write(tmp_path / "raw")
    colors = _write_images(raw, tmp_path / "images", flat)
    out_dir = tmp_path / "Kamitani" / "npz"
    summary = preprocess_god_images(paths.train_list, paths.test_list, tmp_path / "images", out_dir,
                                    GodImagesConfig(size=6))
    with np.load(out_dir / "images_256.npz") as npz:
        train, test = npz["train_images"], npz["test_images"]
    assert train.shape == (8, 6, 6, 3) and test.shape == (3, 6, 6, 3)
    assert train.dtype == np.uint8 and test.dtype == np.uint8
    for images, keys in ((train, raw.train_keys), (test, raw.test_keys)):
        for img, k in zip(images, keys):
            assert (img == np.array(colors[int(k)], dtype=np.uint8)).all()  # a solid colour stays exact
    expected_rows = [f"{id_text(int(k))},{file_name(int(k))}" for k in raw.train_keys]
    assert (out_dir / "imagenet_training_label.csv").read_text().splitlines() == expected_rows
    assert (out_dir / "imagenet_testing_label.csv").read_text().splitlines()[0] == (
        f"{id_text(int(raw.test_keys[0]))},{file_name(int(raw.test_keys[0]))}"
    )
    assert summary["n_train_images"] == 8 and summary["converted_to_rgb"] == 0


def test_images_grey_and_case_insensitive_names_and_resize(tmp_path):
    raw = build_god_raw(seed=9)
    paths = raw.write(tmp_path / "raw")
    _write_images(raw, tmp_path / "images", flat=False)
    # One grey test image, stored with a lower-case extension.
    k = int(raw.test_keys[1])
    (tmp_path / "images" / "test" / file_name(k)).unlink()
    grey = np.arange(8 * 12, dtype=np.uint8).reshape(8, 12) * 2
    Image.fromarray(grey, mode="L").save(tmp_path / "images" / "test" / file_name(k).replace(".JPEG", ".jpeg"), "PNG")
    out_dir = tmp_path / "out"
    summary = preprocess_god_images(paths.train_list, paths.test_list, tmp_path / "images", out_dir,
                                    GodImagesConfig(size=5))
    with np.load(out_dir / "images_256.npz") as npz:
        img = npz["test_images"][1]
    assert summary["converted_to_rgb"] == 1
    assert (img[..., 0] == img[..., 1]).all() and (img[..., 1] == img[..., 2]).all()
    expected = np.asarray(Image.fromarray(grey, mode="L").resize((5, 5), Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(img[..., 0], expected)
    # Horizontal gradient survives the resize: columns increase left to right.
    assert (np.diff(img[..., 0].astype(int), axis=1) > 0).all()


def test_images_cli_logs_summary_and_montage(tmp_path):
    raw = build_god_raw(seed=10)
    paths = raw.write(tmp_path / "raw")
    _write_images(raw, tmp_path / "images", flat=False)
    out_dir = tmp_path / "npz"
    code = main([
        "preprocess-god-images", "--train-list", str(paths.train_list), "--test-list", str(paths.test_list),
        "--image-dir", str(tmp_path / "images"), "--out-dir", str(out_dir), "--set", "size=8",
    ])
    assert code == 0
    with np.load(out_dir / "images_256.npz") as npz:
        assert npz["train_images"].shape == (8, 8, 8, 3)

    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    run = client.search_runs([e.experiment_id for e in client.search_experiments()])[0]
    assert run.data.metrics["n_test_images"] == 3 and run.data.metrics["size"] == 8
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "summary.json" in artifacts and "images" in artifacts
    assert [a.path for a in client.list_artifacts(run.info.run_id, "images")] == ["images/test_images.png"]
