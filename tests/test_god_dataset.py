"""mindvis.data.god: reading sbj_N.npz (ours and MinD-Vis's layout) and the conventions of GodFmriDataset."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from god_factory import build_god_raw, write_god_npz  # noqa: E402

from mindvis.data.god import GodFmriDataset, load_god_npz  # noqa: E402
from mindvis.preprocess.god import preprocess_god_subject  # noqa: E402
from mindvis.utils.errors import ConfigError, InputDataError  # noqa: E402


def _wrap(x: np.ndarray, extra: int) -> np.ndarray:
    """Hand-written wrap padding: append the first `extra` columns, cycling."""
    cols = [x[:, j % x.shape[1]] for j in range(x.shape[1] + extra)]
    return np.stack(cols, axis=1)


def test_load_mindvis_layout_without_optional_keys(tmp_path):
    arrays = write_god_npz(tmp_path / "sbj_1.npz", n_voxels=20, masks=False)
    data = load_god_npz(tmp_path / "sbj_1.npz")
    assert data.train_fmri.dtype == np.float32 and data.test_fmri.dtype == np.float32
    np.testing.assert_allclose(data.train_fmri, arrays["arr_0"], rtol=1e-6)
    np.testing.assert_allclose(data.test_fmri_trials, arrays["arr_1"], rtol=1e-6)
    np.testing.assert_array_equal(data.train_image_index, arrays["arr_3"])
    assert data.train_image_index.dtype == np.int64
    assert data.test_labels is None and data.roi_masks == {}
    assert data.n_voxels == 20
    np.testing.assert_array_equal(data.roi_mask("VC"), np.ones(20, bool))  # no masks: file is already VC
    with pytest.raises(InputDataError, match="no ROI mask 'V1'"):
        data.roi_mask("V1")


@pytest.mark.parametrize("n_voxels", [20, 32, 37])
def test_padding_length_and_wrap_values(tmp_path, n_voxels):
    arrays = write_god_npz(tmp_path / "s.npz", n_voxels=n_voxels, masks=False)
    ds = GodFmriDataset(tmp_path / "s.npz", split="train")
    length = n_voxels + 16 - n_voxels % 16
    assert ds.padded_length == length == ds.num_voxels and length % 16 == 0
    item = ds[0]
    assert item["fmri"].dtype == torch.float32 and tuple(item["fmri"].shape) == (1, length)
    raw = _wrap(arrays["arr_0"], length - n_voxels)
    expected = (raw - raw.mean()) / raw.std()
    np.testing.assert_allclose(ds.fmri, expected, atol=1e-5)
    # The padded tail repeats the first voxels.
    np.testing.assert_array_equal(item["fmri"][0, n_voxels:], item["fmri"][0, : length - n_voxels])


def test_test_split_uses_training_statistics(tmp_path):
    arrays = write_god_npz(tmp_path / "s.npz", n_voxels=20, masks=False, offset=3.0)
    train = GodFmriDataset(tmp_path / "s.npz", split="train")
    test = GodFmriDataset(tmp_path / "s.npz", split="test")
    padded_train = _wrap(arrays["arr_0"], 12)
    mean, std = padded_train.mean(), padded_train.std()
    assert test.norm == train.norm
    assert test.norm.mean == pytest.approx(mean) and test.norm.std == pytest.approx(std)
    np.testing.assert_allclose(test.fmri, (_wrap(arrays["arr_2"], 12) - mean) / std, atol=1e-5)
    assert abs(train.fmri.mean()) < 1e-5 and train.fmri.std() == pytest.approx(1.0, abs=1e-5)
    assert test.fmri.mean() > 0.1  # the test trials sit 0.5 above training: not re-centred
    assert len(test) == 3 and [test[i]["image_index"] for i in range(3)] == [0, 1, 2]


def test_roi_mask_selects_voxels_before_padding(tmp_path):
    arrays = write_god_npz(tmp_path / "s.npz", n_voxels=21)  # VC mask leaves out voxel 0
    ds = GodFmriDataset(tmp_path / "s.npz", split="train", roi="VC")
    assert ds.subjects[0].n_voxels == 20 and ds.padded_length == 32
    raw = _wrap(arrays["arr_0"][:, 1:], 12)
    np.testing.assert_allclose(ds.fmri, (raw - raw.mean()) / raw.std(), atol=1e-5)
    v1 = GodFmriDataset(tmp_path / "s.npz", split="train", roi="V1")
    assert v1.subjects[0].n_voxels == 10 and v1.padded_length == 16


def test_several_subjects_padded_to_the_longest(tmp_path):
    a = write_god_npz(tmp_path / "sbj_1.npz", n_voxels=20, seed=1, masks=False, n_train=5)
    b = write_god_npz(tmp_path / "sbj_2.npz", n_voxels=37, seed=2, masks=False, n_train=7)
    ds = GodFmriDataset([tmp_path / "sbj_1.npz", tmp_path / "sbj_2.npz"], split="train")
    assert ds.padded_length == 48 and len(ds) == 12
    # Each subject z-scored on its own padded training rows; subject 1 (32 padded voxels)
    # then wrapped to 48, as MinD-Vis does.
    first = _wrap(a["arr_0"], 12)
    second = _wrap(b["arr_0"], 11)
    first_z = _wrap((first - first.mean()) / first.std(), 16)
    joined = np.concatenate([first_z, (second - second.mean()) / second.std()])
    np.testing.assert_allclose(ds.fmri, joined, atol=1e-5)
    assert [ds[i]["subject"] for i in (0, 4, 5, 11)] == [0, 0, 1, 1]
    np.testing.assert_array_equal(ds.image_index, np.concatenate([a["arr_3"], b["arr_3"]]))
    test = GodFmriDataset([tmp_path / "sbj_1.npz", tmp_path / "sbj_2.npz"], split="test")
    assert test.norms == ds.norms and ds.norm is None and len(test) == 6 and test.padded_length == 48


def test_images_follow_image_index(tmp_path):
    arrays = write_god_npz(tmp_path / "s.npz", n_voxels=20, masks=False, n_train_images=6)
    train_images = np.arange(6 * 4 * 4 * 3, dtype=np.uint8).reshape(6, 4, 4, 3)
    test_images = 200 + np.arange(3, dtype=np.uint8)[:, None, None, None] * np.ones((3, 4, 4, 3), np.uint8)
    np.savez(tmp_path / "images_256.npz", train_images=train_images, test_images=test_images)
    train = GodFmriDataset(tmp_path / "s.npz", images_npz=tmp_path / "images_256.npz", split="train")
    for i in range(len(train)):
        item = train[i]
        assert item["image_index"] == arrays["arr_3"][i]
        np.testing.assert_array_equal(item["image"].numpy(), train_images[arrays["arr_3"][i]])
        assert item["image"].dtype == torch.uint8 and tuple(item["image"].shape) == (4, 4, 3)
    test = GodFmriDataset(tmp_path / "s.npz", images_npz=tmp_path / "images_256.npz", split="test",
                          image_transform=lambda img: img.astype(np.float32) / 255)
    assert test[2]["image"][0, 0, 0] == pytest.approx(202 / 255)
    batch = next(iter(torch.utils.data.DataLoader(train, batch_size=4)))
    assert tuple(batch["fmri"].shape) == (4, 1, 32) and tuple(batch["image"].shape) == (4, 4, 4, 3)


def test_image_index_out_of_range(tmp_path):
    write_god_npz(tmp_path / "s.npz", n_voxels=20, masks=False, n_train_images=6)
    np.savez(tmp_path / "img.npz", train_images=np.zeros((2, 4, 4, 3), np.uint8),
             test_images=np.zeros((3, 4, 4, 3), np.uint8))
    with pytest.raises(InputDataError, match="refers to image"):
        GodFmriDataset(tmp_path / "s.npz", images_npz=tmp_path / "img.npz", split="train")


def test_padded_length_override_and_test_trials(tmp_path):
    write_god_npz(tmp_path / "s.npz", n_voxels=20, masks=False, repeats=2)
    ds = GodFmriDataset(tmp_path / "s.npz", split="test_trials", padded_length=64)
    assert tuple(ds[0]["fmri"].shape) == (1, 64) and len(ds) == 6
    np.testing.assert_array_equal(ds.image_index, [0, 0, 1, 1, 2, 2])
    with pytest.raises(ConfigError, match="shorter"):
        GodFmriDataset(tmp_path / "s.npz", padded_length=16)
    with pytest.raises(ConfigError, match="split"):
        GodFmriDataset(tmp_path / "s.npz", split="val")


def test_bad_npz_files(tmp_path):
    arrays = write_god_npz(tmp_path / "good.npz", n_voxels=20)
    np.savez(tmp_path / "no_arr3.npz", **{k: v for k, v in arrays.items() if k != "arr_3"})
    with pytest.raises(InputDataError, match="missing key.*arr_3"):
        load_god_npz(tmp_path / "no_arr3.npz")
    np.savez(tmp_path / "bad_mask.npz", **{**arrays, "VC": np.ones(19, bool)})
    with pytest.raises(InputDataError, match="ROI mask 'VC' has shape"):
        load_god_npz(tmp_path / "bad_mask.npz")
    np.savez(tmp_path / "nan.npz", **{**arrays, "arr_2": np.full((3, 20), np.nan)})
    with pytest.raises(InputDataError, match="NaN"):
        load_god_npz(tmp_path / "nan.npz")
    data = (tmp_path / "good.npz").read_bytes()
    (tmp_path / "trunc.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputDataError, match="trunc.npz"):
        load_god_npz(tmp_path / "trunc.npz")
    np.save(tmp_path / "single.npy", arrays["arr_0"])
    with pytest.raises(InputDataError, match="single .npy"):
        load_god_npz(tmp_path / "single.npy")
    with pytest.raises(InputDataError, match="not found"):
        load_god_npz(tmp_path / "absent.npz")


def test_reads_preprocess_output(tmp_path):
    raw = build_god_raw(seed=11, with_label=True)
    paths = raw.write(tmp_path / "raw")
    out = tmp_path / "sbj_1.npz"
    preprocess_god_subject(paths.bdata, paths.train_list, paths.test_list, out, 1)
    data = load_god_npz(out)
    assert data.n_voxels == 16 and data.roi_masks["VC"].all() and data.roi_masks["V1"].sum() == 3
    np.testing.assert_array_equal(data.test_labels, [100, 101, 102])
    np.testing.assert_array_equal(data.test_trial_image_index(), np.repeat([0, 1, 2], 3))
    ds = GodFmriDataset(out, split="train")
    assert ds.padded_length == 32 and len(ds) == 8
