"""GodFmriDataset's two normalisations against hand-derived arrays (docs/reference.md section 2).

`mindvis_kamitani` below writes out, with numpy, the fMRI steps of MinD-Vis's
`create_Kamitani_dataset` (code/dataset.py): per subject, ROI mask, optional
`include_nonavg_test` (arr_1 appended to arr_2), wrap padding, z-score of the
training rows with their own scalar mean/std, z-score of the test rows with the
mean/std of the ALREADY normalised training rows; then every subject wrap-padded
to the longest width and the rows stacked; torch.FloatTensor casts to float32.

Tolerance: none (assert_array_equal). The reference computes in the dtype the
npz holds, and "reference" mode performs the same numpy operations in the same
dtype and order, so the floats must be identical. One ulp of drift (statistics
taken in float64, or a float64 file cast to float32 first) fails these tests;
`test_float64_file_is_not_cast_first` shows that such drift is visible.
"""

from __future__ import annotations

import numpy as np
import pytest

from mindvis.data.god import GodFmriDataset
from mindvis.utils.errors import ConfigError

PATCH = 16


def write_subject(path, n_voxels, seed, dtype=np.float32, n_train=9, n_images=3, repeats=4, offset=2.0):
    """A MinD-Vis-layout sbj_N.npz: arr_1 grouped image by image, arr_2 its per-image means, a VC mask
    leaving out two voxels, and test trials that sit `offset` above the training trials."""
    rng = np.random.default_rng(seed)
    trials = (rng.normal(offset, 3.0, (n_images * repeats, n_voxels))).astype(dtype)
    arrays = {
        "arr_0": rng.normal(0.7, 2.5, (n_train, n_voxels)).astype(dtype),
        "arr_1": trials,
        "arr_2": trials.reshape(n_images, repeats, n_voxels).mean(axis=1).astype(dtype),
        "arr_3": rng.integers(0, 4, n_train),
        "VC": np.arange(n_voxels) >= 2,
        "V1": np.arange(n_voxels) < n_voxels // 2,
    }
    np.savez(path, **arrays)
    return arrays


def wrap_to(x, width):
    """numpy.pad(mode="wrap") on the last axis to `width` columns."""
    return np.pad(x, ((0, 0), (0, width - x.shape[1])), mode="wrap")


def mindvis_kamitani(paths, roi="VC", include_nonavg_test=False):
    """The reference's (train, test) fMRI matrices, step by step."""
    trains, tests = [], []
    for path in paths:
        npz = dict(np.load(path))
        mask = npz[roi]
        tr = npz["arr_0"][..., mask]
        tt = npz["arr_2"][..., mask]
        if include_nonavg_test:
            tt = np.concatenate([tt, npz["arr_1"][..., mask]], axis=0)
        tr = wrap_to(tr, tr.shape[1] + PATCH - tr.shape[1] % PATCH)
        tr = (tr - np.mean(tr)) / (np.std(tr) * 1.0)
        tt = wrap_to(tt, tt.shape[1] + PATCH - tt.shape[1] % PATCH)
        tt = (tt - np.mean(tr)) / (np.std(tr) * 1.0)
        trains.append(tr)
        tests.append(tt)
    width = max(t.shape[-1] for t in tests)
    train = np.concatenate([wrap_to(t, width) for t in trains])
    test = np.concatenate([wrap_to(t, width) for t in tests])
    return train.astype(np.float32), test.astype(np.float32)


def clean_expected(path, split_key, roi="VC"):
    """Clean mode for one subject: its padded training mean/std (float64) applied to `split_key`'s rows."""
    npz = dict(np.load(path))
    mask = npz[roi]
    train = npz["arr_0"][:, mask].astype(np.float64)
    rows = npz[split_key][:, mask].astype(np.float64)
    width = train.shape[1] + PATCH - train.shape[1] % PATCH
    train, rows = wrap_to(train, width), wrap_to(rows, width)
    return (rows - train.mean()) / train.std()


@pytest.mark.parametrize("include_nonavg_test", [False, True])
def test_reference_one_subject_both_splits(tmp_path, include_nonavg_test):
    path = tmp_path / "sbj_3.npz"
    arrays = write_subject(path, n_voxels=37, seed=3)
    train, test = mindvis_kamitani([path], include_nonavg_test=include_nonavg_test)
    ds_train = GodFmriDataset(path, split="train", normalisation="reference", include_nonavg_test=include_nonavg_test)
    ds_test = GodFmriDataset(path, split="test", normalisation="reference", include_nonavg_test=include_nonavg_test)
    np.testing.assert_array_equal(ds_train.fmri, train)
    np.testing.assert_array_equal(ds_test.fmri, test)
    assert ds_train.fmri.dtype == np.float32 and ds_test.padded_length == 48 == test.shape[1]
    n_extra = 12 if include_nonavg_test else 0
    assert len(ds_test) == 3 + n_extra
    expected_index = [0, 1, 2] + ([0] * 4 + [1] * 4 + [2] * 4 if include_nonavg_test else [])
    np.testing.assert_array_equal(ds_test.image_index, expected_index)  # the trial's own image
    np.testing.assert_array_equal(ds_train.image_index, arrays["arr_3"])
    # the test rows are in effect only padded: the statistics applied are those of normalised rows
    assert ds_test.norm.mean == pytest.approx(0.0, abs=1e-6) and ds_test.norm.std == pytest.approx(1.0, abs=1e-6)


def test_reference_single_trials_split_matches_the_appended_rows(tmp_path):
    path = tmp_path / "sbj_1.npz"
    write_subject(path, n_voxels=20, seed=1)
    _, test = mindvis_kamitani([path], include_nonavg_test=True)
    trials = GodFmriDataset(path, split="test_trials", normalisation="reference")
    np.testing.assert_array_equal(trials.fmri, test[3:])
    with pytest.raises(ConfigError, match="include_nonavg_test"):
        GodFmriDataset(path, split="test_trials", normalisation="reference", include_nonavg_test=True)


@pytest.mark.parametrize("include_nonavg_test", [False, True])
def test_reference_two_subjects_with_different_voxel_counts(tmp_path, include_nonavg_test):
    paths = [tmp_path / "sbj_1.npz", tmp_path / "sbj_2.npz"]
    write_subject(paths[0], n_voxels=22, seed=1, n_train=7)  # VC 20 voxels -> 32 padded
    write_subject(paths[1], n_voxels=45, seed=2, n_train=5, offset=-1.0)  # VC 43 -> 48
    train, test = mindvis_kamitani(paths, include_nonavg_test=include_nonavg_test)
    ds_train = GodFmriDataset(paths, split="train", normalisation="reference", include_nonavg_test=include_nonavg_test)
    ds_test = GodFmriDataset(paths, split="test", normalisation="reference", include_nonavg_test=include_nonavg_test)
    np.testing.assert_array_equal(ds_train.fmri, train)
    np.testing.assert_array_equal(ds_test.fmri, test)
    assert ds_train.padded_length == 48 and ds_train.norm is None and len(ds_train.norms) == 2
    np.testing.assert_array_equal(ds_test.subject_index, np.repeat([0, 1], len(test) // 2))


def test_reference_fitted_to_a_checkpoint_length_as_stage_a2(tmp_path):
    """Stage A2 wrap-pads the joined test matrix to the checkpoint's num_voxels after the join."""
    paths = [tmp_path / "sbj_1.npz", tmp_path / "sbj_2.npz"]
    write_subject(paths[0], n_voxels=22, seed=1)
    write_subject(paths[1], n_voxels=45, seed=2)
    _, test = mindvis_kamitani(paths, include_nonavg_test=True)
    ds = GodFmriDataset(paths, split="test", normalisation="reference", include_nonavg_test=True, padded_length=80)
    np.testing.assert_array_equal(ds.fmri, wrap_to(test, 80))


def test_float64_file_is_not_cast_first(tmp_path):
    path = tmp_path / "sbj_5.npz"
    arrays = write_subject(path, n_voxels=29, seed=5, dtype=np.float64)
    train, test = mindvis_kamitani([path])
    ds_train = GodFmriDataset(path, split="train", normalisation="reference")
    ds_test = GodFmriDataset(path, split="test", normalisation="reference")
    np.testing.assert_array_equal(ds_train.fmri, train)
    np.testing.assert_array_equal(ds_test.fmri, test)
    # the same steps on the file cast to float32 first land elsewhere: the equality above is not vacuous
    cast = tmp_path / "sbj_5_f32.npz"
    np.savez(cast, **{k: (v.astype(np.float32) if v.dtype == np.float64 else v) for k, v in arrays.items()})
    train32, _ = mindvis_kamitani([cast])
    assert not np.array_equal(train32, train)


def test_clean_uses_each_subjects_training_statistics(tmp_path):
    paths = [tmp_path / "sbj_1.npz", tmp_path / "sbj_2.npz"]
    write_subject(paths[0], n_voxels=22, seed=1, n_train=7)
    write_subject(paths[1], n_voxels=45, seed=2, n_train=5, offset=-1.0)
    for split, key in (("train", "arr_0"), ("test", "arr_2"), ("test_trials", "arr_1")):
        ds = GodFmriDataset(paths, split=split)  # clean is the default
        assert ds.normalisation == "clean"
        expected = np.concatenate([wrap_to(clean_expected(paths[0], key), 48), clean_expected(paths[1], key)])
        np.testing.assert_allclose(ds.fmri, expected, rtol=1e-6, atol=1e-6)
    # the test rows keep their offset from training (+2 for subject 1, -1 for subject 2, in raw units)
    test = GodFmriDataset(paths, split="test")
    first, second = test.fmri[test.subject_index == 0], test.fmri[test.subject_index == 1]
    assert first.mean() > 0.3 and second.mean() < -0.2


def test_clean_and_reference_differ_where_the_issue_says(tmp_path):
    path = tmp_path / "sbj_3.npz"
    write_subject(path, n_voxels=37, seed=3)
    ref = GodFmriDataset(path, split="test", normalisation="reference")
    clean = GodFmriDataset(path, split="test")
    # one subject: identical training rows up to float32 rounding, test rows far apart (raw vs z-scored)
    np.testing.assert_allclose(GodFmriDataset(path, normalisation="reference").fmri, GodFmriDataset(path).fmri,
                               atol=1e-5)
    assert np.abs(ref.fmri - clean.fmri).max() > 0.5
    with pytest.raises(ConfigError, match="normalisation must be one of"):
        GodFmriDataset(path, normalisation="joint")


def test_stage_a2_reference_tunes_on_the_references_test_matrix(tmp_path):
    """MinD-Vis's A2: the test matrix with include_nonavg_test, then wrap-padded or cut to the checkpoint."""
    from mindvis.training.stage_a2 import FinetuneConfig, _normalised_rows, load_subject_for

    path = tmp_path / "sbj_3.npz"
    write_subject(path, n_voxels=37, seed=3)
    train, test = mindvis_kamitani([path], include_nonavg_test=True)
    rows = load_subject_for(path, "god", FinetuneConfig(protocol="reference"))  # normalisation auto -> reference
    np.testing.assert_array_equal(rows.test_fmri, test)
    np.testing.assert_array_equal(rows.train_fmri, train)
    assert rows.raw_voxels == 35 and rows.normalised is not None
    longer = _normalised_rows(rows, rows.test_fmri, rows.train_fmri[:2], 96)
    np.testing.assert_array_equal(longer.train, wrap_to(test, 96))
    shorter = _normalised_rows(rows, rows.test_fmri, rows.train_fmri[:2], 32)
    np.testing.assert_array_equal(shorter.train, test[:, :32])
    assert load_subject_for(path, "god", FinetuneConfig()).normalised is None  # clean protocol: raw rows
    paper = load_subject_for(path, "god", FinetuneConfig(protocol="clean", normalisation="reference"))
    np.testing.assert_array_equal(paper.train_fmri, train)
