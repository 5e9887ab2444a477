"""simulate -> preprocess on GOD: the npz equals a hand computation from the raw BData trials."""

from __future__ import annotations

import numpy as np

from mindvis.io.bdata import read_bdata
from mindvis.preprocess.god import GodPreprocessConfig, preprocess_god_subject
from mindvis.simulate.god import GodSimConfig, simulate_god
from mindvis.simulate.stimuli import StimuliConfig, build_stimuli, write_stimuli


def test_simulated_subject_preprocesses_to_hand_computed_arrays(tmp_path):
    stim = build_stimuli(StimuliConfig(image_size=16, train_per_class=2, test_per_class=1))
    write_stimuli(stim, tmp_path)
    sim = GodSimConfig(
        rois={"V1": 12, "V2": 10, "V3": 8, "V4": 8, "LOC": 10, "FFA": 6, "PPA": 6},
        n_other_voxels=5, test_repeats=3, imagery_trials=4, n_runs=2,
    )
    simulate_god(tmp_path / "stimuli.npz", 1, tmp_path / "Subject1.h5", sim)
    out = tmp_path / "sbj_1.npz"
    preprocess_god_subject(
        tmp_path / "Subject1.h5", tmp_path / "imageID_training.csv", tmp_path / "imageID_test.csv", out,
        subject=1, cfg=GodPreprocessConfig(),
    )

    # The hand computation, straight from the raw file.
    raw = read_bdata(tmp_path / "Subject1.h5")
    vc = raw.select("ROI_VC")
    dtype = raw.label("DataType")
    key = np.round(raw.label("stimulus_id") * 1e6).astype(np.int64)
    train_keys = np.round(stim.train_ids * 1e6).astype(np.int64)
    test_keys = np.round(stim.test_ids * 1e6).astype(np.int64)
    expected_avg = np.stack([vc[(dtype == 2) & (key == k)].mean(axis=0) for k in test_keys])
    train_rows = np.flatnonzero(dtype == 1)
    expected_index = np.array([np.flatnonzero(train_keys == key[r])[0] for r in train_rows])

    with np.load(out) as npz:
        np.testing.assert_allclose(npz["arr_2"], expected_avg, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(npz["arr_0"], vc[train_rows], rtol=1e-6, atol=1e-6)
        assert npz["arr_3"].tolist() == expected_index.tolist()
        assert npz["arr_1"].shape == (3 * len(test_keys), vc.shape[1])
        assert npz["VC"].all() and npz["VC"].sum() == vc.shape[1]
        assert (dtype == 3).sum() == 4  # imagery trials exist in the raw file ...
        assert npz["arr_0"].shape[0] + npz["arr_1"].shape[0] == (dtype != 3).sum()  # ... and are excluded
