"""GOD bad inputs: each gets one InputDataError naming the file and the problem, and no output file.

(The documented repair, dropping NaN/Inf/constant voxels, is checked value by
value in test_preprocess_god.py; here the "error" policy and every defect
that cannot be repaired.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from god_factory import build_god_raw, file_name, write_id_csv  # noqa: E402

from mindvis.preprocess.god import GodPreprocessConfig, preprocess_god_subject  # noqa: E402
from mindvis.preprocess.god_images import GodImagesConfig, preprocess_god_images  # noqa: E402
from mindvis.utils.errors import ConfigError, InputDataError  # noqa: E402


def _fails(paths, tmp_path, cfg=None, bdata=None) -> InputDataError:
    """Run preprocessing expecting an InputDataError; check nothing was written."""
    out_dir = tmp_path / "npz"
    out = out_dir / "sbj_1.npz"
    with pytest.raises(InputDataError) as info:
        preprocess_god_subject(bdata or paths.bdata, paths.train_list, paths.test_list, out, 1, cfg)
    assert not out.exists()
    assert not out_dir.exists() or list(out_dir.iterdir()) == []  # no temp file left either
    return info.value


def test_truncated_h5(tmp_path):
    paths = build_god_raw().write(tmp_path)
    data = paths.bdata.read_bytes()
    paths.bdata.write_bytes(data[: len(data) // 2])
    err = _fails(paths, tmp_path)
    assert err.path == paths.bdata and "truncated or corrupt" in str(err)


def test_no_metadata_group(tmp_path):
    paths = build_god_raw().write(tmp_path)
    bad = tmp_path / "NoMeta.h5"
    with h5py.File(bad, "w") as fh:
        fh.create_dataset("dataset", data=np.zeros((3, 4)))
    err = _fails(paths, tmp_path, bdata=bad)
    assert err.path == bad and "metadata" in err.problem


def test_hdf5_that_is_not_bdata(tmp_path):
    paths = build_god_raw().write(tmp_path)
    other = tmp_path / "images.h5"
    with h5py.File(other, "w") as fh:
        fh.create_dataset("images", data=np.zeros((2, 4, 4)))
    err = _fails(paths, tmp_path, bdata=other)
    assert err.path == other and "not a BData file" in err.problem and "images" in err.problem


def test_file_that_is_not_hdf5(tmp_path):
    paths = build_god_raw().write(tmp_path)
    text = tmp_path / "Subject1.h5"
    text.write_text("this is a README, not a BData file\n")
    err = _fails(paths, tmp_path, bdata=text)
    assert err.path == text and "not a readable HDF5" in err.problem


def test_roi_with_no_voxels(tmp_path):
    raw = build_god_raw()
    raw.values[raw.keys.index("ROI_VC"), : raw.n_voxels] = 0
    err = _fails(raw.write(tmp_path), tmp_path)
    assert "ROI 'VC'" in err.problem and "no voxels" in err.problem


def test_roi_key_missing(tmp_path):
    paths = build_god_raw().write(tmp_path)
    err = _fails(paths, tmp_path, GodPreprocessConfig(roi="V5"))
    assert "ROI_V5" in err.problem and err.path == paths.bdata


@pytest.mark.parametrize("key", ["DataType", "stimulus_id"])
def test_label_column_missing(tmp_path, key):
    raw = build_god_raw()
    raw.drop_key(key)
    paths = raw.write(tmp_path)
    err = _fails(paths, tmp_path)
    assert err.path == paths.bdata and key in err.problem and "lacks key" in err.problem


def test_unknown_datatype_value(tmp_path):
    raw = build_god_raw()
    raw.dataset[0, raw.column("DataType")] = 4
    err = _fails(raw.write(tmp_path), tmp_path)
    assert "DataType" in err.problem and "4 (1 samples)" in err.problem


def test_nan_inf_voxels_with_error_policy(tmp_path):
    raw = build_god_raw()
    vc = raw.vc_columns()
    raw.dataset[np.flatnonzero(raw.row_datatype == 1)[0], vc[2]] = np.nan
    raw.dataset[np.flatnonzero(raw.row_datatype == 2)[0], vc[3]] = -np.inf
    err = _fails(raw.write(tmp_path), tmp_path, GodPreprocessConfig(bad_voxels="error"))
    assert "2 voxel(s) hold NaN/Inf" in err.problem and "bad_voxels: drop" in err.problem


def test_constant_voxels_with_error_policy(tmp_path):
    raw = build_god_raw()
    raw.dataset[:, raw.vc_columns()[4]] = 1.0
    err = _fails(raw.write(tmp_path), tmp_path, GodPreprocessConfig(bad_voxels="error"))
    assert "1 are constant" in err.problem


def test_all_voxels_unusable_even_when_dropping(tmp_path):
    raw = build_god_raw()
    raw.dataset[:, raw.vc_columns()] = 0.0
    err = _fails(raw.write(tmp_path), tmp_path)
    assert "every ROI_VC voxel is unusable" in err.problem


def test_fmri_ids_missing_from_image_list(tmp_path):
    raw = build_god_raw()
    paths = raw.write(tmp_path)
    write_id_csv(paths.train_list, raw.train_keys[1:])  # the first training image is no longer listed
    err = _fails(paths, tmp_path)
    assert err.path == paths.bdata
    assert str(paths.train_list) in err.problem and "1 of 8 training" in err.problem
    missing = int(raw.train_keys[0])
    assert f"{missing // 10**6}.{missing % 10**6:06d}" in err.problem


def test_test_image_without_trials(tmp_path):
    raw = build_god_raw()
    paths = raw.write(tmp_path)
    write_id_csv(paths.test_list, np.append(raw.test_keys, 9999999000001))
    err = _fails(paths, tmp_path)
    assert "no test trial" in err.problem and "9999999.000001" in err.problem


def test_duplicated_ids_in_csv(tmp_path):
    raw = build_god_raw()
    paths = raw.write(tmp_path)
    write_id_csv(paths.train_list, np.append(raw.train_keys, raw.train_keys[2]))
    err = _fails(paths, tmp_path)
    assert err.path == paths.train_list and "more than once" in err.problem and "lines 3, 9" in err.problem


def test_csv_id_and_name_disagree(tmp_path):
    raw = build_god_raw()
    paths = raw.write(tmp_path)
    paths.test_list.write_text('1858441.020042,"n01858441_20042.JPEG"\n1858441.020043,"n02139199_20043.JPEG"\n')
    err = _fails(paths, tmp_path)
    assert err.path == paths.test_list and "line 2" in err.problem and "disagree" in err.problem


def test_csv_garbage_line(tmp_path):
    raw = build_god_raw()
    paths = raw.write(tmp_path)
    paths.test_list.write_text("1858441.020042\nnot-an-id,foo.JPEG\n")
    err = _fails(paths, tmp_path)
    assert err.path == paths.test_list and "line 2" in err.problem


def test_bad_config_value():
    with pytest.raises(ConfigError, match="bad_voxels"):
        preprocess_god_subject("a.h5", "b.csv", "c.csv", "d.npz", 1, GodPreprocessConfig(bad_voxels="impute"))


def test_missing_image_file_named(tmp_path):
    raw = build_god_raw()
    paths = raw.write(tmp_path / "raw")
    for split, keys in (("training", raw.train_keys), ("test", raw.test_keys)):
        (tmp_path / "images" / split).mkdir(parents=True)
        for k in keys:
            Image.new("RGB", (4, 4)).save(tmp_path / "images" / split / file_name(int(k)), format="PNG")
    gone = file_name(int(raw.test_keys[2]))
    (tmp_path / "images" / "test" / gone).unlink()
    out_dir = tmp_path / "out"
    with pytest.raises(InputDataError) as info:
        preprocess_god_images(paths.train_list, paths.test_list, tmp_path / "images", out_dir, GodImagesConfig(size=4))
    assert info.value.path.name == gone and "not found" in info.value.problem
    assert str(paths.test_list) in info.value.problem
    assert not out_dir.exists() or list(out_dir.iterdir()) == []


def test_corrupt_image_file_named(tmp_path):
    raw = build_god_raw()
    paths = raw.write(tmp_path / "raw")
    (tmp_path / "images").mkdir()
    for k in np.concatenate([raw.train_keys, raw.test_keys]):  # flat folder layout
        Image.new("RGB", (4, 4)).save(tmp_path / "images" / file_name(int(k)), format="PNG")
    broken = tmp_path / "images" / file_name(int(raw.train_keys[0]))
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(InputDataError) as info:
        preprocess_god_images(paths.train_list, paths.test_list, tmp_path / "images", tmp_path / "out")
    assert info.value.path == broken and "cannot read image" in info.value.problem
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("defect", ["not_hdf5", "missing_ids"])
def test_cli_exit_code_and_message(tmp_path, defect):
    raw = build_god_raw()
    paths = raw.write(tmp_path)
    if defect == "not_hdf5":
        paths.bdata.write_bytes(b"\x00\x01garbage" * 10)
    else:
        write_id_csv(paths.test_list, raw.test_keys[:-1])
    out = tmp_path / "npz" / "sbj_1.npz"
    env = {**os.environ, "MINDVIS_GIT_COMMIT": "test"}
    proc = subprocess.run(
        [sys.executable, "-m", "mindvis", "preprocess-god", "--bdata", str(paths.bdata),
         "--train-list", str(paths.train_list), "--test-list", str(paths.test_list),
         "--subject", "1", "--out", str(out), "--no-tracking"],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert proc.returncode == 2
    assert str(paths.bdata) in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()
