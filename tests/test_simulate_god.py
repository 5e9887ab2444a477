"""The GOD simulator writes a real-format BData SubjectN.h5 whose labels, ROIs and ids are right."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from mindvis.cli.main import main
from mindvis.io.bdata import read_bdata
from mindvis.simulate.god import GOD_ROIS, GodSimConfig, simulate_god_subject
from mindvis.simulate.stimuli import StimuliConfig, build_stimuli, id_key, write_stimuli
from mindvis.utils.errors import ConfigError

ROIS = {"V1": 40, "V2": 30, "V3": 30, "V4": 20, "LOC": 30, "FFA": 20, "PPA": 20}
CFG = (
    "{rois: {V1: 40, V2: 30, V3: 30, V4: 20, LOC: 30, FFA: 20, PPA: 20}, n_other_voxels: 25, "
    "test_repeats: 3, imagery_trials: 12, n_runs: 2, seed: 11}"
)
EXPECTED_KEYS = [
    "VoxelData", "voxel_x", "voxel_y", "voxel_z",
    "ROI_V1", "ROI_V2", "ROI_V3", "ROI_V4", "ROI_LOC", "ROI_FFA", "ROI_PPA", "ROI_LVC", "ROI_HVC", "ROI_VC",
    "DataType", "Run", "stimulus_id", "Label",
]  # fmt: skip


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("god")
    stim = build_stimuli(StimuliConfig(image_size=24, train_per_class=4, test_per_class=2, seed=2))
    write_stimuli(stim, root / "stim")
    out = root / "raw" / "Subject1.h5"
    code = main(["simulate-god", "--stimuli", str(root / "stim" / "stimuli.npz"), "--subject", "1",
                 "--out", str(out), "--config", CFG, "--no-tracking"])  # fmt: skip
    assert code == 0
    return root, stim, out


def _csv_keys(path):
    return id_key([float(row[0]) for row in csv.reader(path.open())])


def test_keys_and_metadata_layout(files):
    _, _, out = files
    b = read_bdata(out)
    assert b.keys == EXPECTED_KEYS
    assert all(d for d in b.descriptions)
    n_vox = sum(ROIS.values()) + 25
    assert b.dataset.shape == (40 + 20 * 3 + 12, n_vox + 4)
    voxel = b.metadata("VoxelData") == 1
    assert voxel.sum() == n_vox and np.all(voxel[:n_vox]) and np.isnan(b.metadata("VoxelData")[n_vox:]).all()
    for key in EXPECTED_KEYS[1:14]:  # voxel properties: numbers on voxel columns, NaN on label columns
        row = b.metadata(key)
        assert np.isfinite(row[:n_vox]).all() and np.isnan(row[n_vox:]).all(), key
    for key in EXPECTED_KEYS[4:14]:
        assert set(np.unique(b.metadata(key)[:n_vox])) <= {0.0, 1.0}
    for j, key in enumerate(EXPECTED_KEYS[14:]):  # each label flags exactly its own column
        row = b.metadata(key)
        assert row[n_vox + j] == 1 and np.isnan(np.delete(row, n_vox + j)).all()
    xyz = np.stack([b.metadata(k)[:n_vox] for k in ("voxel_x", "voxel_y", "voxel_z")], 1)
    np.testing.assert_allclose(xyz / 2, np.round(xyz / 2))  # 2 mm grid


def test_roi_flags_and_unions(files):
    b = read_bdata(files[2])
    f = {r: np.nan_to_num(b.metadata(f"ROI_{r}"), nan=0) == 1 for r in (*GOD_ROIS, "LVC", "HVC", "VC")}
    np.testing.assert_array_equal(f["VC"], np.logical_or.reduce([f[r] for r in GOD_ROIS]))
    np.testing.assert_array_equal(f["LVC"], f["V1"] | f["V2"] | f["V3"])
    np.testing.assert_array_equal(f["HVC"], f["LOC"] | f["FFA"] | f["PPA"])
    for r in ("V1", "V2", "V3", "V4", "FFA", "PPA"):
        assert f[r].sum() == ROIS[r]
    # LOC overlaps FFA and PPA (hvc_overlap 0.1 of 20 voxels each), as real ROIs do.
    assert f["LOC"].sum() == 30 + 2 + 2 and (f["LOC"] & f["FFA"]).sum() == 2
    voxel = b.metadata("VoxelData") == 1
    assert (voxel & ~f["VC"]).sum() == 25  # voxels outside visual cortex
    # Columns are in volume order, so ROIs interleave rather than sit in blocks.
    v1_cols = np.flatnonzero(f["V1"])
    assert np.any(np.diff(v1_cols) > 1)


def test_trials_datatypes_ids_and_runs(files):
    root, stim, out = files
    b = read_bdata(out)
    dtype, run, sid, label = (b.label(k) for k in ("DataType", "Run", "stimulus_id", "Label"))
    assert np.bincount(dtype.astype(int)).tolist() == [0, 40, 60, 12]
    train_keys = _csv_keys(root / "stim" / "imageID_training.csv")
    test_keys = _csv_keys(root / "stim" / "imageID_test.csv")
    # Every training image exactly once; every test image exactly test_repeats times.
    assert sorted(id_key(sid[dtype == 1]).tolist()) == sorted(train_keys.tolist())
    keys, counts = np.unique(id_key(sid[dtype == 2]), return_counts=True)
    assert sorted(keys.tolist()) == sorted(test_keys.tolist()) and set(counts) == {3}
    # Imagery: category-level ids (the WNID number), classes cycled.
    np.testing.assert_array_equal(sid[dtype == 3], stim.class_wnids[label[dtype == 3].astype(int)])
    assert np.bincount(label[dtype == 3].astype(int), minlength=10).tolist() == [2, 2] + [1] * 8
    # Label = class of the stimulus (the WNID is the id's integer part).
    np.testing.assert_array_equal(stim.class_wnids[label.astype(int)], np.floor(sid).astype(int))
    # Runs: 2 training runs, 3 test runs each showing every test image once, 2 imagery runs.
    assert np.unique(run[dtype == 1]).size == 2 and np.unique(run[dtype == 3]).size == 2
    for r in np.unique(run[dtype == 2]):
        assert sorted(id_key(sid[run == r]).tolist()) == sorted(test_keys.tolist())
    # Order shuffled within runs (not the sorted CSV order).
    first_test_run = run == np.unique(run[dtype == 2])[0]
    assert not np.array_equal(id_key(sid[first_test_run]), np.sort(test_keys))


def test_deterministic_and_subject_specific(files):
    _, stim, _ = files
    cfg = GodSimConfig(rois=dict(ROIS), n_other_voxels=5, test_repeats=2, imagery_trials=0, n_runs=2, seed=4)
    a, sa = simulate_god_subject(stim, 1, cfg)
    b, _ = simulate_god_subject(stim, 1, cfg)
    c, _ = simulate_god_subject(stim, 2, cfg)
    np.testing.assert_array_equal(a["dataset"], b["dataset"])
    assert not np.allclose(a["dataset"], c["dataset"], equal_nan=True)
    assert sa["trials_per_datatype"] == {"1": 40, "2": 40, "3": 0}
    assert sa["voxels_per_roi"]["VC"] == sum(ROIS.values())


def test_test_images_decodable_from_averaged_hvc(files):
    """Noise at the configured SNR still leaves the category decodable from averaged test trials."""
    root, stim, out = files
    b = read_bdata(out)
    dtype, sid, label = b.label("DataType"), b.label("stimulus_id"), b.label("Label").astype(int)
    x = b.select("ROI_HVC")
    x = x - x[dtype != 3].mean(0)
    train_means = np.stack([x[(dtype == 1) & (label == k)].mean(0) for k in range(10)])
    test_keys = id_key(stim.test_ids)
    averaged = np.stack([x[(dtype == 2) & (id_key(sid) == k)].mean(0) for k in test_keys])
    corr = np.corrcoef(averaged, train_means)[: len(test_keys), len(test_keys) :]
    assert (corr.argmax(1) == stim.test_labels).mean() >= 0.6  # chance 0.1; 0.8-1.0 over seeds 0-4


def test_config_errors(files, capsys):
    _, stim, _ = files
    with pytest.raises(ConfigError, match="exactly the GOD ROIs"):
        simulate_god_subject(stim, 1, GodSimConfig(rois={"V1": 10}))
    with pytest.raises(ConfigError, match="snr"):
        simulate_god_subject(stim, 1, GodSimConfig(snr=0.0))
    root = files[0]
    code = main(["simulate-god", "--stimuli", str(root / "missing.npz"), "--subject", "1",
                 "--out", str(root / "x.h5"), "--no-tracking"])  # fmt: skip
    assert code == 2 and "missing.npz" in capsys.readouterr().err
    assert not (root / "x.h5").exists()


def test_bdpy_reads_simulated_file(files):
    bdpy = pytest.importorskip("bdpy")
    out = files[2]
    theirs = bdpy.BData(str(out))
    ours = read_bdata(out)
    np.testing.assert_array_equal(theirs.select("ROI_VC"), ours.select("ROI_VC"))
    np.testing.assert_array_equal(theirs.select("ROI_LVC"), ours.select("ROI_LVC"))
    np.testing.assert_array_equal(np.ravel(theirs.select("DataType")), ours.label("DataType"))
    np.testing.assert_array_equal(np.ravel(theirs.select("stimulus_id")), ours.label("stimulus_id"))
