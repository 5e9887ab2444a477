"""Bold5000FmriDataset's two normalisations against hand-derived arrays (docs/reference.md section 3).

Each subject is made as MinD-Vis reads BOLD5000: per-ROI `.npy` files (trials in
presentation order), the image name of every trial, and the repeated (test)
image list, one of whose images this subject never saw (as CSI4). The npz the
dataset reads is then written by hand in preprocess-bold5000's layout.
`mindvis_bold5000` writes out, with numpy, the fMRI steps of MinD-Vis's
`create_BOLD5000_dataset` (code/dataset.py) on those files: ROI files picked in
the order EarlyVis, LOC, OPA, PPA, RSC from the sorted file list, concatenated,
wrap-padded, z-scored with ONE scalar mean/std over every trial, test repeats
included; test rows = the mean of each test image's normalised trials (list
order, trials in presentation order), optionally followed by those trials
(`include_nonavg_test`); training rows = every other trial in order; subjects'
rows stacked; torch.FloatTensor casts to float32.

Tolerance: none (assert_array_equal). The files hold float32, the reference
computes in float32, and "reference" mode performs the same numpy operations
in the same dtype and order (the statistics over the same chronological
matrix), so the floats must be identical; a different row order in the
mean/std or float64 statistics already changes the last bits.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from mindvis.data.bold5000 import Bold5000FmriDataset, load_roi_arrays
from mindvis.utils.errors import ConfigError

PATCH = 16
ROI_FILE = "CSI{n}_GLMbetas-TYPED-FITHRF-GLMDENOISE-RR_allses_{label}.npy"
REPEATED = ["rep_a.jpg", "never_shown.jpg", "rep_b.jpg", "rep_c.jpg"]  # the test list, in its order
# presentation order: test trials interleaved with training trials; rep_c shown once, rep_b three times
NAMES = ["t0.jpg", "rep_b.jpg", "t1.jpg", "rep_a.jpg", "t2.jpg", "t0.jpg", "rep_c.jpg", "rep_b.jpg",
         "t3.jpg", "rep_a.jpg", "t1.jpg", "rep_b.jpg", "t4.jpg"]


def write_subject(tmp_path, n, roi_voxels, seed, offset=1.5):
    """Per-ROI .npy files for CSI{n} (ROIs written in a scrambled order) and the matching npz; returns its path."""
    rng = np.random.default_rng(seed)
    py = tmp_path / "py"
    py.mkdir(exist_ok=True)
    is_test = np.array([name in REPEATED for name in NAMES])
    for label, v in roi_voxels.items():
        betas = rng.normal(0.3, 2.0, (len(NAMES), v)) + offset * is_test[:, None]
        np.save(py / ROI_FILE.format(n=n, label=label), betas.astype(np.float32))
    every, _ = load_roi_arrays(py, n, rois=("EarlyVis", "LOC"), hemispheres=("LH", "RH"))
    shown = [name for name in REPEATED if name in NAMES]
    groups = [[i for i, x in enumerate(NAMES) if x == name] for name in shown]
    test_trials = [i for g in groups for i in g]
    train_trials = [i for i in range(len(NAMES)) if i not in test_trials]
    train_names = list(dict.fromkeys(NAMES[i] for i in train_trials))
    size = 4
    path = tmp_path / f"CSI{n}.npz"
    np.savez(
        path,
        arr_0=every[train_trials], arr_1=every[test_trials],
        arr_2=np.stack([every[g].astype(np.float64).mean(axis=0) for g in groups]).astype(np.float32),
        arr_3=np.array([train_names.index(NAMES[i]) for i in train_trials]),
        test_trial_image_index=np.repeat(np.arange(len(groups)), [len(g) for g in groups]),
        train_trial_index=np.array(train_trials), test_trial_index=np.array(test_trials),
        train_images=rng.integers(0, 256, (len(train_names), size, size, 3), dtype=np.uint8),
        test_images=rng.integers(0, 256, (len(groups), size, size, 3), dtype=np.uint8),
        subject=np.asarray(f"CSI{n}"),
    )
    return path


def mindvis_bold5000(py_dir, subjects, include_nonavg_test=False):
    """The reference's (train, test) fMRI matrices from the per-ROI files, step by step."""
    files = sorted(f for f in os.listdir(py_dir) if f.endswith(".npy"))
    train_major, test_major = [], []
    for sub in subjects:
        parts = [np.load(py_dir / f) for roi in ("EarlyVis", "LOC", "OPA", "PPA", "RSC") for f in files
                 if sub in f and roi in f]
        fmri = np.concatenate(parts, axis=-1)
        fmri = np.pad(fmri, ((0, 0), (0, PATCH - fmri.shape[1] % PATCH)), mode="wrap")
        fmri = (fmri - np.mean(fmri)) / (np.std(fmri) * 1.0)
        test_idx = [[i for i, x in enumerate(NAMES) if x == name] for name in REPEATED]
        test_idx = [i for i in test_idx if len(i) > 0]
        test = np.stack([fmri[idx].mean(axis=0) for idx in test_idx])
        flat = [i for idx in test_idx for i in idx]
        if include_nonavg_test:
            test = np.concatenate([test, fmri[flat]], axis=0)
        train_major.append(fmri[[i for i in range(len(NAMES)) if i not in flat]])
        test_major.append(test)
    return np.concatenate(train_major).astype(np.float32), np.concatenate(test_major).astype(np.float32)


ROIS_1 = {"RHLOC": 4, "LHEarlyVis": 5, "RHEarlyVis": 6, "LHLOC": 3}  # 18 voxels -> 32 padded
ROIS_2 = {"LHEarlyVis": 7, "RHEarlyVis": 2, "LHLOC": 9, "RHLOC": 6}  # 24 voxels -> 32 padded


def test_roi_order_is_the_references(tmp_path):
    write_subject(tmp_path, 1, ROIS_1, seed=1)
    files = sorted(os.listdir(tmp_path / "py"))
    picked = [f for roi in ("EarlyVis", "LOC") for f in files if "CSI1" in f and roi in f]
    labels = [f.rsplit("_", 1)[1].removesuffix(".npy") for f in picked]
    assert labels == ["LHEarlyVis", "RHEarlyVis", "LHLOC", "RHLOC"]
    every, used = load_roi_arrays(tmp_path / "py", 1, rois=("EarlyVis", "LOC"))
    assert used == labels and every.shape == (len(NAMES), 18)


@pytest.mark.parametrize("include_nonavg_test", [False, True])
def test_reference_one_subject_both_splits(tmp_path, include_nonavg_test):
    path = write_subject(tmp_path, 1, ROIS_1, seed=1)
    train, test = mindvis_bold5000(tmp_path / "py", ["CSI1"], include_nonavg_test)
    ds_train = Bold5000FmriDataset(path, split="train", normalisation="reference")
    ds_test = Bold5000FmriDataset(path, split="test", normalisation="reference",
                                  include_nonavg_test=include_nonavg_test)
    np.testing.assert_array_equal(ds_train.fmri, train)
    np.testing.assert_array_equal(ds_test.fmri, test)
    # test images in the list's order (the unseen one dropped), then each single trial's own image
    expected = [0, 1, 2] + ([0, 0, 1, 1, 1, 2] if include_nonavg_test else [])
    np.testing.assert_array_equal(ds_test.image_index, expected)
    data = np.load(path)
    for i in range(len(ds_test)):
        np.testing.assert_array_equal(ds_test[i]["image"].numpy(), data["test_images"][expected[i]])
    np.testing.assert_array_equal(ds_train.image_index, data["arr_3"])


def test_reference_single_trials_split(tmp_path):
    path = write_subject(tmp_path, 1, ROIS_1, seed=1)
    _, test = mindvis_bold5000(tmp_path / "py", ["CSI1"], include_nonavg_test=True)
    trials = Bold5000FmriDataset(path, split="test_trials", normalisation="reference")
    np.testing.assert_array_equal(trials.fmri, test[3:])
    np.testing.assert_array_equal(trials.image_index, [0, 0, 1, 1, 1, 2])


@pytest.mark.parametrize("include_nonavg_test", [False, True])
def test_reference_two_subjects_with_different_voxel_counts(tmp_path, include_nonavg_test):
    paths = [write_subject(tmp_path, 1, ROIS_1, seed=1), write_subject(tmp_path, 2, ROIS_2, seed=2, offset=-1.0)]
    train, test = mindvis_bold5000(tmp_path / "py", ["CSI1", "CSI2"], include_nonavg_test)
    ds_train = Bold5000FmriDataset(paths, split="train", normalisation="reference", with_images=False)
    ds_test = Bold5000FmriDataset(paths, split="test", normalisation="reference", with_images=False,
                                  include_nonavg_test=include_nonavg_test)
    np.testing.assert_array_equal(ds_train.fmri, train)
    np.testing.assert_array_equal(ds_test.fmri, test)
    assert len(ds_train.norms) == 2 and ds_train.norms[0] != ds_train.norms[1]


def test_reference_cannot_join_different_padded_lengths(tmp_path):
    paths = [write_subject(tmp_path, 1, ROIS_1, seed=1),  # 32 padded voxels
             write_subject(tmp_path, 3, {"LHEarlyVis": 20, "RHEarlyVis": 5, "LHLOC": 3, "RHLOC": 8}, seed=3)]  # 48
    with pytest.raises(ConfigError, match=r"subjects of \[32, 48\] padded voxels"):
        Bold5000FmriDataset(paths, normalisation="reference", with_images=False)
    clean = Bold5000FmriDataset(paths, with_images=False)  # clean mode wraps the shorter one, as for GOD
    assert clean.padded_length == 48


def test_reference_statistics_include_the_test_trials(tmp_path):
    path = write_subject(tmp_path, 1, ROIS_1, seed=1, offset=4.0)
    every = np.load(path)
    rows = np.concatenate([every["arr_0"], every["arr_1"]]).astype(np.float64)
    padded = np.pad(rows, ((0, 0), (0, 14)), mode="wrap")
    ds = Bold5000FmriDataset(path, normalisation="reference", with_images=False)
    assert ds.norm.mean == pytest.approx(padded.mean(), rel=1e-5) and ds.norm.std == pytest.approx(padded.std(),
                                                                                                  rel=1e-5)


def test_clean_uses_each_subjects_training_statistics(tmp_path):
    paths = [write_subject(tmp_path, 1, ROIS_1, seed=1), write_subject(tmp_path, 2, ROIS_2, seed=2, offset=-1.0)]
    for split, key in (("train", "arr_0"), ("test", "arr_2"), ("test_trials", "arr_1")):
        ds = Bold5000FmriDataset(paths, split=split, with_images=False)
        assert ds.normalisation == "clean"
        blocks = []
        for path in paths:
            data = np.load(path)
            train = np.pad(data["arr_0"].astype(np.float64), ((0, 0), (0, 32 - data["arr_0"].shape[1])), "wrap")
            rows = np.pad(data[key].astype(np.float64), ((0, 0), (0, 32 - data[key].shape[1])), "wrap")
            blocks.append((rows - train.mean()) / train.std())
        np.testing.assert_allclose(ds.fmri, np.concatenate(blocks), rtol=1e-6, atol=1e-6)
    test = Bold5000FmriDataset(paths, split="test", with_images=False)
    assert test.fmri[test.subject_index == 0].mean() > 0.3 and test.fmri[test.subject_index == 1].mean() < -0.2


def test_stage_a2_reference_tunes_on_the_references_test_matrix(tmp_path):
    from mindvis.training.stage_a2 import FinetuneConfig, load_subject_for

    path = write_subject(tmp_path, 1, ROIS_1, seed=1)
    train, test = mindvis_bold5000(tmp_path / "py", ["CSI1"], include_nonavg_test=True)
    rows = load_subject_for(path, "bold5000", FinetuneConfig(protocol="reference"))
    np.testing.assert_array_equal(rows.test_fmri, test)
    np.testing.assert_array_equal(rows.train_fmri, train)
    assert rows.raw_voxels == 18
