"""Round trip: simulate-nsd -> preprocess-nsd -> the npz equals the simulator's ground truth
(trial order, 73k ids, repeats, averaging, both z-score conventions; HDF5 == NIfTI betas).

The expected arrays are rebuilt here with numpy from <root>/simulation_truth/subj01.npz
(keys: mindvis.simulate.nsd): betas_int16 / 300 of every trial with betas, in
presentation order, nsdgeneral voxels in C order; session, nsd_id, global_trial, shared per trial.
Session 2 has no betas (a missing session) so the global trial numbering is checked too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mindvis.cli.main import main

SIM = ["--subjects", "1", "--sessions", "3", "--grid", "12", "14", "12", "--hdf5", "--missing-sessions", "1:2",
       "--no-tracking", "--set", "brick_size=32", "--set",
       "roi_voxels={V1: 8, V2: 8, V3: 6, hV4: 6, ventral: 10, lateral: 8}"]


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("nsd") / "raw"
    assert main(["simulate-nsd", "--root", str(root), *SIM]) == 0
    truth = dict(np.load(root / "simulation_truth" / "subj01.npz"))
    return root, truth


def preprocess(root: Path, out: Path, *switches: str) -> dict:
    assert main(["preprocess-nsd", "--root", str(root), "--subject", "1", "--out", str(out), "--image-size", "16",
                 "--pixel-image-size", "32", "--no-tracking", *switches]) == 0
    return dict(np.load(out))


def expected_from_truth(truth: dict, zscore: str, train_average: bool) -> dict:
    rows = truth["betas_int16"].astype(np.float64) / 300.0
    session, ids, shared = truth["session"], truth["nsd_id"], truth["shared"].astype(bool)
    if zscore == "session":
        for s in np.unique(session):
            block = rows[session == s]
            sd = block.std(axis=0)
            rows[session == s] = (block - block.mean(axis=0)) / np.where(sd > 0, sd, 1)
    test_ids = np.unique(ids[shared])
    groups = [np.flatnonzero(shared & (ids == i)) for i in test_ids]
    train_pos = np.flatnonzero(~shared)
    _, first = np.unique(ids[train_pos], return_index=True)
    train_ids = ids[train_pos][np.sort(first)]
    if train_average:
        train = np.stack([rows[train_pos[ids[train_pos] == i]].mean(axis=0) for i in train_ids])
    else:
        train = rows[train_pos]
    trials = rows[np.concatenate(groups)]
    if zscore == "train":
        mean, sd = train.mean(axis=0), train.std(axis=0, ddof=1)
        train, trials = (train - mean) / sd, (trials - mean) / sd
    sizes = [len(g) for g in groups]
    owner = np.repeat(np.arange(len(groups)), sizes)
    return {"arr_0": train, "arr_1": trials, "arr_2": np.stack([trials[owner == k].mean(axis=0) for k in range(len(groups))]),
            "test_nsd_id": test_ids, "train_nsd_id": train_ids, "test_repeats": np.array(sizes),
            "test_trial_image_index": owner, "test_trial_global": truth["global_trial"][np.concatenate(groups)],
            "voxel_ijk": truth["voxel_ijk"],
            "train_repeats": np.array([int((ids[train_pos] == i).sum()) for i in train_ids])}


@pytest.mark.parametrize("zscore,train_average", [("session", False), ("train", True), ("train", False)])
def test_npz_equals_the_ground_truth(release, tmp_path, zscore, train_average):
    root, truth = release
    got = preprocess(root, tmp_path / "s.npz", "--zscore", zscore,
                     "--train-average" if train_average else "--no-train-average")
    for key, value in expected_from_truth(truth, zscore, train_average).items():
        if value.dtype.kind == "f":
            np.testing.assert_allclose(got[key], value, rtol=1e-5, atol=1e-5, err_msg=key)
        else:
            np.testing.assert_array_equal(got[key], value, err_msg=key)
    assert got["sessions"].tolist() == [1, 3] and truth["missing_sessions"].tolist() == [2]
    if not train_average:  # arr_3 points every training trial at its own image
        np.testing.assert_array_equal(got["train_nsd_id"][got["arr_3"]], truth["nsd_id"][got["train_trial_index"]])


def test_hdf5_and_nifti_give_the_same_npz(release, tmp_path):
    root, _ = release
    a = preprocess(root, tmp_path / "n.npz")
    b = preprocess(root, tmp_path / "h.npz", "--betas", "hdf5")
    assert sorted(a) == sorted(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
