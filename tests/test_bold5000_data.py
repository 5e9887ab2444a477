"""mindvis.data.bold5000: npz reader checks and the Dataset's MinD-Vis conventions (wrap pad, scalar z-score)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mindvis.data.bold5000 import Bold5000FmriDataset, load_bold5000_npz
from mindvis.utils.atomic import save_npz
from mindvis.utils.errors import ConfigError, InputDataError


def make_npz(path, n_voxels: int, seed: int, n_train: int = 7, n_test: int = 3, repeats: int = 2, size: int = 4):
    rng = np.random.default_rng(seed)
    trials = rng.normal(1.0, 3.0, size=(n_test * repeats, n_voxels)).astype(np.float32)
    owner = np.repeat(np.arange(n_test), repeats)
    arrays = {
        "arr_0": rng.normal(0.5, 2.0, size=(n_train, n_voxels)).astype(np.float32),
        "arr_1": trials,
        "arr_2": np.stack([trials[owner == k].mean(0) for k in range(n_test)]).astype(np.float32),
        "arr_3": rng.integers(0, 5, size=n_train),
        "test_trial_image_index": owner,
        "train_images": rng.integers(0, 256, size=(5, size, size, 3), dtype=np.uint8),
        "test_images": rng.integers(0, 256, size=(n_test, size, size, 3), dtype=np.uint8),
        "subject": np.asarray(f"CSI{seed}"),
        "roi_order": np.asarray(["LHEarlyVis", "RHEarlyVis"]),
        "LHEarlyVis": np.arange(n_voxels) < n_voxels // 2,
        "RHEarlyVis": np.arange(n_voxels) >= n_voxels // 2,
        "EarlyVis": np.ones(n_voxels, dtype=bool),
    }
    save_npz(path, **arrays)
    return arrays


def _wrap(x, length):
    """Hand-written wrap padding: column j is column j mod V."""
    return x[:, np.arange(length) % x.shape[1]]


def test_loader_fields(tmp_path):
    arrays = make_npz(tmp_path / "CSI1.npz", 20, seed=1)
    data = load_bold5000_npz(tmp_path / "CSI1.npz")
    assert data.subject == "CSI1" and data.n_voxels == 20
    np.testing.assert_array_equal(data.train_fmri, arrays["arr_0"])
    np.testing.assert_array_equal(data.test_fmri, arrays["arr_2"])
    np.testing.assert_array_equal(data.test_fmri_trials, arrays["arr_1"])
    assert data.roi_order == ["LHEarlyVis", "RHEarlyVis"] and set(data.roi_masks) == {"EarlyVis", "LHEarlyVis", "RHEarlyVis"}
    assert data.test_labels is None
    np.testing.assert_array_equal(data.test_trial_image_index(), [0, 0, 1, 1, 2, 2])
    no_images = load_bold5000_npz(tmp_path / "CSI1.npz", with_images=False)
    assert no_images.train_images is None


def test_loader_rejects_inconsistent_files(tmp_path):
    arrays = make_npz(tmp_path / "a.npz", 20, seed=1)
    arrays["arr_2"] = arrays["arr_2"][:, :19]
    save_npz(tmp_path / "b.npz", **arrays)
    with pytest.raises(InputDataError, match=r"b\.npz: arr_2 has shape \(3, 19\), expected \(n, 20\)"):
        load_bold5000_npz(tmp_path / "b.npz")
    arrays = make_npz(tmp_path / "a.npz", 20, seed=1)
    del arrays["arr_3"]
    save_npz(tmp_path / "c.npz", **arrays)
    with pytest.raises(InputDataError, match=r"c\.npz: missing key 'arr_3'"):
        load_bold5000_npz(tmp_path / "c.npz")
    (tmp_path / "d.npz").write_bytes(b"garbage")
    with pytest.raises(InputDataError, match=r"d\.npz: cannot read npz"):
        load_bold5000_npz(tmp_path / "d.npz")


def test_train_split_wrap_pad_and_train_statistics(tmp_path):
    arrays = make_npz(tmp_path / "CSI1.npz", 20, seed=1)
    train = Bold5000FmriDataset(tmp_path / "CSI1.npz", split="train")
    padded = _wrap(arrays["arr_0"].astype(np.float64), 32)  # 20 voxels + (16 - 20 % 16) = 32
    mean, std = padded.mean(), padded.std()
    assert train.padded_length == train.num_voxels == 32 and len(train) == 7
    item = train[3]
    assert tuple(item["fmri"].shape) == (1, 32) and item["fmri"].dtype == torch.float32
    np.testing.assert_allclose(item["fmri"][0].numpy(), (padded[3] - mean) / std, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(item["image"].numpy(), arrays["train_images"][arrays["arr_3"][3]])
    assert item["image_index"] == arrays["arr_3"][3]

    test = Bold5000FmriDataset(tmp_path / "CSI1.npz", split="test")
    assert len(test) == 3
    expected = (_wrap(arrays["arr_2"].astype(np.float64), 32) - mean) / std  # TRAINING statistics
    np.testing.assert_allclose(test.fmri, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(test[2]["image"].numpy(), arrays["test_images"][2])
    trials = Bold5000FmriDataset(tmp_path / "CSI1.npz", split="test_trials")
    expected = (_wrap(arrays["arr_1"].astype(np.float64), 32) - mean) / std
    np.testing.assert_allclose(trials.fmri, expected, rtol=1e-5, atol=1e-6)
    assert [trials[k]["image_index"] for k in range(len(trials))] == [0, 0, 1, 1, 2, 2]


def test_sixteen_voxels_get_sixteen_more(tmp_path):
    make_npz(tmp_path / "CSI1.npz", 16, seed=1)
    assert Bold5000FmriDataset(tmp_path / "CSI1.npz").padded_length == 32


def test_two_subjects_padded_to_the_longest(tmp_path):
    a = make_npz(tmp_path / "CSI1.npz", 20, seed=1)  # pads to 32
    b = make_npz(tmp_path / "CSI2.npz", 40, seed=2, n_train=5)  # pads to 48
    ds = Bold5000FmriDataset([tmp_path / "CSI1.npz", tmp_path / "CSI2.npz"], split="train", with_images=False)
    assert ds.padded_length == 48 and len(ds) == 12
    # each subject z-scored on its own padded training rows, then subject 1 wrapped from 32 to 48
    first, second = (_wrap(m["arr_0"].astype(np.float64), w) for m, w in ((a, 32), (b, 48)))
    rows = np.concatenate([_wrap((first - first.mean()) / first.std(), 48), (second - second.mean()) / second.std()])
    np.testing.assert_allclose(ds.fmri, rows, rtol=1e-5, atol=1e-6)
    assert ds[8]["subject"] == 1 and "image" not in ds[8] and ds.norm is None and len(ds.norms) == 2


def test_old_normalisation_names_say_what_they_became(tmp_path):
    make_npz(tmp_path / "CSI1.npz", 20, seed=1)  # no chronological trial numbers
    with pytest.raises(ConfigError, match="'subject_all' is now called 'reference'"):
        Bold5000FmriDataset(tmp_path / "CSI1.npz", split="test", normalisation="subject_all")
    with pytest.raises(ConfigError, match="'train' is now called 'clean'"):
        Bold5000FmriDataset(tmp_path / "CSI1.npz", normalisation="train")
    with pytest.raises(InputDataError, match="CSI1.npz: normalisation 'reference' needs the keys train_trial_index"):
        Bold5000FmriDataset(tmp_path / "CSI1.npz", normalisation="reference")


def test_roi_selection_and_forced_length(tmp_path):
    arrays = make_npz(tmp_path / "CSI1.npz", 20, seed=1)
    ds = Bold5000FmriDataset(tmp_path / "CSI1.npz", roi="LHEarlyVis", padded_length=64, with_images=False)
    assert ds.padded_length == 64 and ds.subjects[0].n_voxels == 10
    rows = _wrap(_wrap(arrays["arr_0"][:, :10], 16), 64).astype(np.float64)
    np.testing.assert_allclose(ds.fmri, (rows - rows.mean()) / rows.std(), rtol=1e-5, atol=1e-6)
    assert ds.subjects[0].roi_order == ["LHEarlyVis"]
    with pytest.raises(ConfigError, match="padded_length 16 is shorter"):
        Bold5000FmriDataset(tmp_path / "CSI1.npz", padded_length=16)
    with pytest.raises(InputDataError, match="no ROI mask 'FFA'"):
        Bold5000FmriDataset(tmp_path / "CSI1.npz", roi="FFA")
    with pytest.raises(ConfigError, match="split must be one of"):
        Bold5000FmriDataset(tmp_path / "CSI1.npz", split="val")
