"""preprocess-nsd on a tiny hand-written NSD release (5x4x3 grid, 3 sessions of 8 trials, 20 images).

`make_release` writes every file with nibabel / scipy.io.savemat / h5py directly (no simulator)
at the release's own paths, and returns what went in, so that each test derives the expected
arrays itself with numpy, following NSD.md's formulas.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
import scipy.io

from mindvis.cli.main import main
from mindvis.data.nsd import NsdFmriDataset, load_nsd_npz, read_pixel_images
from mindvis.data.pairs import load_pairs, split_images
from mindvis.preprocess.nsd import NsdPreprocessConfig, preprocess_nsd_subject
from mindvis.utils.errors import InputDataError

GRID = (5, 4, 3)
AFFINE = np.array([[1.8, 0, 0, -4.5], [0, 1.8, 0, -3.6], [0, 0, 1.8, -2.7], [0, 0, 0, 1]])
T = 8  # trials per session
N_IMAGES, SIDE = 20, 16  # imgBrick (20, 16, 16, 3)
SHAREDIX = np.array([12, 3, 7])  # 1-based 73k ids of the shared images (deliberately unsorted)
# subject 1's 10k images (1-based 73k ids): the 3 shared first, then 5 of its own
SUBJECTIM = np.array([[12, 3, 7, 1, 5, 9, 15, 20],
                      [3, 7, 12, 2, 4, 6, 8, 10]])
# 1-based 10k index of every global trial (3 sessions x 8): shared columns 1..3 shown 5, 3, 1 times;
# own images 4..8 once or twice
MASTERORDERING = np.array([4, 1, 5, 2, 6, 1, 7, 8,
                           3, 4, 1, 5, 2, 6, 7, 8,
                           1, 1, 4, 8, 5, 6, 7, 2])
PRF = {"V1v": 1, "V1d": 2, "V2v": 3}


def _save_nii(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))


def sub_dir(root: Path, part: str) -> Path:
    return {"betas": root / "nsddata_betas/ppdata/subj01/func1pt8mm/betas_fithrf_GLMdenoise_RR",
            "roi": root / "nsddata/ppdata/subj01/func1pt8mm/roi",
            "label": root / "nsddata/freesurfer/subj01/label",
            "design": root / "nsddata/experiments/nsd/nsd_expdesign.mat",
            "stimuli": root / "nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5",
            "responses": root / "nsddata/ppdata/subj01/behav/responses.tsv"}[part]


def write_design(path: Path, **override) -> None:
    variables = {"masterordering": MASTERORDERING[None, :], "subjectim": SUBJECTIM, "sharedix": SHAREDIX[None, :],
                 "basiccnt": np.zeros((3, 3))}
    variables.update(override)
    variables = {k: v for k, v in variables.items() if v is not None}
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, variables)


def make_release(root: Path, sessions=(1, 2, 3), hdf5: bool = True) -> dict:
    rng = np.random.default_rng(0)
    brain = np.zeros(GRID, dtype=bool)
    brain[1:4, 1:4, :] = True
    general = np.where(brain, 0, -1).astype(np.int16)
    general[brain & (rng.random(GRID) < 0.7)] = 1
    prf = np.where(brain, 0, -1).astype(np.int16)
    prf[brain] = rng.integers(0, 4, size=int(brain.sum()))
    _save_nii(sub_dir(root, "roi") / "nsdgeneral.nii.gz", general)
    _save_nii(sub_dir(root, "roi") / "prf-visualrois.nii.gz", prf)
    sub_dir(root, "label").mkdir(parents=True)
    (sub_dir(root, "label") / "prf-visualrois.mgz.ctab").write_text(
        "0 Unknown\n" + "".join(f"{v} {n}\n" for n, v in PRF.items()))
    betas = {}
    for s in sessions:
        data = rng.integers(-3000, 3000, size=GRID + (T,)).astype(np.int16)
        data[~brain] = 0
        betas[s] = data
        _save_nii(sub_dir(root, "betas") / f"betas_session{s:02d}.nii.gz", data)
        if hdf5:
            with h5py.File(sub_dir(root, "betas") / f"betas_session{s:02d}.hdf5", "w") as f:
                f.create_dataset("betas", data=data.transpose(3, 2, 1, 0), chunks=(T, 1, 1, 1))
    write_design(sub_dir(root, "design"))
    brick = rng.integers(0, 256, size=(N_IMAGES, SIDE, SIDE, 3), dtype=np.uint8)
    sub_dir(root, "stimuli").parent.mkdir(parents=True)
    with h5py.File(sub_dir(root, "stimuli"), "w") as f:
        f.create_dataset("imgBrick", data=brick)
    write_responses(sub_dir(root, "responses"), sessions)
    return {"brain": brain, "general": general, "prf": prf, "betas": betas, "brick": brick, "sessions": list(sessions)}


def write_responses(path: Path, sessions, change: tuple[int, int] | None = None) -> None:
    lines = ["SUBJECT\tSESSION\tRUN\tTRIAL\t73KID\t10KID\tTIME"]
    for s in sessions:
        for i in range(T):
            ten = MASTERORDERING[(s - 1) * T + i]
            k73 = SUBJECTIM[0, ten - 1]
            if change == (s, i):
                k73 += 1
            lines.append(f"1\t{s}\t{i // 4 + 1}\t{i % 4 + 1}\t{k73}\t{ten}\t0.0")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


# ------------------------------------------------------------------ expected values, by hand
def expected(release: dict, mask: np.ndarray, zscore: str, train_average: bool) -> dict:
    """The npz's arrays computed straight from the written files' contents and NSD.md's formulas."""
    per_session = []
    glob, ids = [], []
    for s in release["sessions"]:
        x = release["betas"][s][mask].T.astype(np.float64) / 300.0  # (T, V), voxels in C order
        if zscore == "session":
            sd = x.std(axis=0)
            x = (x - x.mean(axis=0)) / np.where(sd > 0, sd, 1)
        if zscore == "session_train":  # statistics of the session's non-shared trials, applied to all
            fit = x[MASTERORDERING[(s - 1) * T + np.arange(T)] > len(SHAREDIX)]
            sd = fit.std(axis=0)
            x = (x - fit.mean(axis=0)) / np.where(sd > 0, sd, 1)
        per_session.append(x)
        for i in range(T):
            g = (s - 1) * T + i
            glob.append(g)
            ids.append(SUBJECTIM[0, MASTERORDERING[g] - 1] - 1)
    rows, glob, ids = np.concatenate(per_session), np.array(glob), np.array(ids)
    shared = MASTERORDERING[glob] <= len(SHAREDIX)
    test_ids = sorted(set(ids[shared].tolist()))
    groups = [np.flatnonzero(shared & (ids == i)) for i in test_ids]
    train_pos = np.flatnonzero(~shared)
    train_ids = []
    for i in ids[train_pos]:
        if i not in train_ids:
            train_ids.append(int(i))
    if train_average:
        train = np.stack([rows[train_pos[ids[train_pos] == i]].mean(axis=0) for i in train_ids])
        index = np.arange(len(train_ids))
    else:
        train = rows[train_pos]
        index = np.array([train_ids.index(int(i)) for i in ids[train_pos]])
    trials = rows[np.concatenate(groups)]
    if zscore == "train":
        mean, sd = train.mean(axis=0), train.std(axis=0, ddof=1)
        train, trials = (train - mean) / sd, (trials - mean) / sd
    owner = np.repeat(np.arange(len(groups)), [len(g) for g in groups])
    avg = np.stack([trials[owner == k].mean(axis=0) for k in range(len(groups))])
    return {"arr_0": train, "arr_1": trials, "arr_2": avg, "arr_3": index, "test_trial_image_index": owner,
            "test_nsd_id": np.array(test_ids), "train_nsd_id": np.array(train_ids),
            "test_repeats": np.array([len(g) for g in groups]),
            "train_repeats": np.array([int((ids[train_pos] == i).sum()) for i in train_ids]),
            "test_trial_global": glob[np.concatenate(groups)]}


def check(npz: Path, want: dict) -> dict:
    got = dict(np.load(npz))
    for key, value in want.items():
        if value.dtype.kind == "f":
            np.testing.assert_allclose(got[key], value, rtol=1e-5, atol=1e-5, err_msg=key)
            assert got[key].dtype == np.float32, key
        else:
            np.testing.assert_array_equal(got[key], value, err_msg=key)
    return got


@pytest.fixture()
def release(tmp_path):
    return tmp_path / "raw", make_release(tmp_path / "raw")


CFG = dict(image_size=8, pixel_image_size=SIDE)


# ------------------------------------------------------------------ conventions
def test_mindeye2_convention_trial_order_ids_scale_and_averaging(release, tmp_path):
    root, rel = release
    summary = preprocess_nsd_subject(root, 1, tmp_path / "s.npz", NsdPreprocessConfig(**CFG))
    got = check(tmp_path / "s.npz", expected(rel, rel["general"] == 1, "session", False))
    # shared ids 12, 3, 7 (1-based) -> test ids ascending 0-based; 10k columns 1, 2, 3 shown 5, 3, 1 times
    assert got["test_nsd_id"].tolist() == [2, 6, 11]
    assert dict(zip(got["test_nsd_id"].tolist(), got["test_repeats"].tolist())) == {11: 5, 2: 3, 6: 1}
    assert got["train_trial_index"].size + got["test_trial_index"].size == 3 * T
    np.testing.assert_array_equal(got["test_images_pixel"], rel["brick"][got["test_nsd_id"]])
    assert got["train_images"].shape == (got["train_nsd_id"].size, 8, 8, 3)
    assert got["nsdgeneral"].all() and got["roi_order"].tolist() == ["nsdgeneral"]
    assert got["sessions"].tolist() == [1, 2, 3] and int(got["trials_per_session"]) == T
    assert str(got["zscore"]) == "session" and summary["n_repairs"] == 0


@pytest.mark.parametrize("train_average", [False, True])
def test_brain_diffuser_convention_train_statistics_ddof1(release, tmp_path, train_average):
    root, rel = release
    cfg = NsdPreprocessConfig(zscore="train", train_average=train_average, **CFG)
    preprocess_nsd_subject(root, 1, tmp_path / "s.npz", cfg)
    got = check(tmp_path / "s.npz", expected(rel, rel["general"] == 1, "train", train_average))
    assert "zscore_mean" in got and ("train_trial_index" in got) == (not train_average)


def test_session_zscore_with_train_average(release, tmp_path):
    root, rel = release
    preprocess_nsd_subject(root, 1, tmp_path / "s.npz", NsdPreprocessConfig(train_average=True, **CFG))
    got = check(tmp_path / "s.npz", expected(rel, rel["general"] == 1, "session", True))
    assert got["arr_0"].shape[0] == got["train_nsd_id"].size == 5


def test_session_train_zscore_fits_each_session_without_its_shared_trials(release, tmp_path):
    root, rel = release
    preprocess_nsd_subject(root, 1, tmp_path / "s.npz", NsdPreprocessConfig(zscore="session_train", **CFG))
    got = check(tmp_path / "s.npz", expected(rel, rel["general"] == 1, "session_train", False))
    # every session's training rows have mean 0 and std 1 per voxel; its shared trials generally do not
    owner = got["train_trial_global"] // T
    for k in range(3):
        rows = got["arr_0"][owner == k].astype(np.float64)
        np.testing.assert_allclose(rows.mean(axis=0), 0, atol=1e-5)
        np.testing.assert_allclose(rows.std(axis=0), 1, atol=1e-5)
    session = dict(np.load(preprocess_nsd_subject(root, 1, tmp_path / "m.npz",
                                                  NsdPreprocessConfig(**CFG))["npz"]))
    assert not np.allclose(got["arr_1"], session["arr_1"], atol=1e-3)
    assert str(got["zscore"]) == "session_train"


def test_session_train_needs_two_training_trials_per_session(release, tmp_path):
    root, _ = release
    order = MASTERORDERING.copy()
    order[8:15] = 1  # session 2: one training trial left (its last)
    write_design(sub_dir(root, "design"), masterordering=order[None, :])
    (sub_dir(root, "responses")).unlink()
    with pytest.raises(InputDataError, match="session_train needs at least 2 training trials.*has 1"):
        preprocess_nsd_subject(root, 1, tmp_path / "s.npz", NsdPreprocessConfig(zscore="session_train", **CFG))


def test_hdf5_betas_give_the_nifti_arrays(release, tmp_path):
    root, _ = release
    preprocess_nsd_subject(root, 1, tmp_path / "n.npz", NsdPreprocessConfig(**CFG))
    preprocess_nsd_subject(root, 1, tmp_path / "h.npz", NsdPreprocessConfig(betas="hdf5", **CFG))
    a, b = np.load(tmp_path / "n.npz"), np.load(tmp_path / "h.npz")
    assert sorted(a.files) == sorted(b.files)
    for key in a.files:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_roi_by_label_name(release, tmp_path):
    root, rel = release
    cfg = NsdPreprocessConfig(roi="prf-visualrois:V1v,V2v", **CFG)
    preprocess_nsd_subject(root, 1, tmp_path / "s.npz", cfg)
    mask = np.isin(rel["prf"], [1, 3])
    got = check(tmp_path / "s.npz", expected(rel, mask, "session", False))
    values = rel["prf"][mask]  # C order, as the columns
    np.testing.assert_array_equal(got["V1v"], values == 1)
    np.testing.assert_array_equal(got["V2v"], values == 3)
    assert got["roi_order"].tolist() == ["V1v", "V2v", "prf-visualrois"]
    np.testing.assert_array_equal(got["voxel_ijk"], np.argwhere(mask))


def test_ctab_absent_uses_documented_labels_and_logs_it(release, tmp_path):
    root, rel = release
    (sub_dir(root, "label") / "prf-visualrois.mgz.ctab").unlink()
    summary = preprocess_nsd_subject(root, 1, tmp_path / "s.npz", NsdPreprocessConfig(roi="prf-visualrois:V1d", **CFG))
    check(tmp_path / "s.npz", expected(rel, rel["prf"] == 2, "session", False))
    assert any("ctab absent" in r for r in summary["repairs"])


def test_design_vectors_read_in_either_shape(release, tmp_path):
    root, rel = release
    write_design(sub_dir(root, "design"), masterordering=MASTERORDERING[:, None], sharedix=SHAREDIX)
    preprocess_nsd_subject(root, 1, tmp_path / "s.npz", NsdPreprocessConfig(**CFG))
    check(tmp_path / "s.npz", expected(rel, rel["general"] == 1, "session", False))


def test_sessions_option_and_a_missing_session(tmp_path):
    root = tmp_path / "raw"
    rel = make_release(root, sessions=(1, 3), hdf5=False)
    summary = preprocess_nsd_subject(root, 1, tmp_path / "s.npz", NsdPreprocessConfig(**CFG))
    got = check(tmp_path / "s.npz", expected(rel, rel["general"] == 1, "session", False))
    assert got["sessions"].tolist() == [1, 3] and summary["n_repairs"] == 1  # the gap is logged and tracked
    with pytest.raises(InputDataError) as err:
        preprocess_nsd_subject(root, 1, tmp_path / "x.npz", NsdPreprocessConfig(sessions=3, **CFG))
    assert "betas_session02.nii.gz" in str(err.value) and "sessions: 3" in str(err.value)
    preprocess_nsd_subject(root, 1, tmp_path / "one.npz", NsdPreprocessConfig(sessions=1, **CFG))
    assert np.load(tmp_path / "one.npz")["sessions"].tolist() == [1]


# ------------------------------------------------------------------ bad inputs
def _fails(root: Path, tmp_path: Path, **cfg) -> str:
    with pytest.raises(InputDataError) as err:
        preprocess_nsd_subject(root, 1, tmp_path / "bad.npz", NsdPreprocessConfig(**{**CFG, **cfg}))
    assert not (tmp_path / "bad.npz").exists()
    message = str(err.value)
    assert "\n" not in message
    return message


def test_session_on_another_grid(release, tmp_path):
    root, rel = release
    path = sub_dir(root, "betas") / "betas_session02.nii.gz"
    _save_nii(path, rel["betas"][2], affine=AFFINE + np.diag([0.2, 0.2, 0.2, 0]))  # 2 mm voxels, same shape
    assert "betas_session02.nii.gz" in _fails(root, tmp_path)
    _save_nii(path, np.zeros((4, 4, 3, T), dtype=np.int16))
    message = _fails(root, tmp_path)
    assert "betas_session02.nii.gz" in message and "nsdgeneral.nii.gz" in message
    with h5py.File(sub_dir(root, "betas") / "betas_session03.hdf5", "w") as f:
        f.create_dataset("betas", data=np.zeros((T, 3, 4, 6), dtype=np.int16))
    assert "betas_session03.hdf5" in _fails(root, tmp_path, betas="hdf5")


def test_truncated_nii_gz(release, tmp_path):
    root, _ = release
    path = sub_dir(root, "betas") / "betas_session03.nii.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw)[: len(gzip.compress(raw)) // 2])
    message = _fails(root, tmp_path)
    assert "betas_session03.nii.gz" in message and "truncated" in message
    h5 = sub_dir(root, "betas") / "betas_session02.hdf5"
    h5.write_bytes(h5.read_bytes()[: h5.stat().st_size // 2])
    assert "betas_session02.hdf5" in _fails(root, tmp_path, betas="hdf5")


def test_design_lacking_a_variable(release, tmp_path):
    root, _ = release
    write_design(sub_dir(root, "design"), sharedix=None)
    message = _fails(root, tmp_path)
    assert "nsd_expdesign.mat" in message and "'sharedix'" in message


def test_id_outside_imgbrick(release, tmp_path):
    root, _ = release
    write_design(sub_dir(root, "design"), subjectim=np.array([[12, 3, 7, 1, 5, 9, 15, 25], [3, 7, 12, 2, 4, 6, 8, 10]]))
    message = _fails(root, tmp_path, check_responses=False)
    assert "nsd_stimuli.hdf5" in message and "73k id 24" in message and "nsd_expdesign.mat" in message


def test_responses_mismatch_names_both_files_and_the_trial(release, tmp_path):
    root, _ = release
    write_responses(sub_dir(root, "responses"), (1, 2, 3), change=(2, 5))
    message = _fails(root, tmp_path)
    assert "responses.tsv" in message and "nsd_expdesign.mat" in message and "session 2 trial 6" in message


def test_design_and_roi_defects(release, tmp_path):
    root, _ = release
    assert "no label V9" in _fails(root, tmp_path, roi="prf-visualrois:V9")
    write_design(sub_dir(root, "design"), masterordering=MASTERORDERING[None, :] - 1)
    assert "is it 1-based" in _fails(root, tmp_path)
    sub_dir(root, "design").write_bytes(b"MATLAB 5.0 garbage")
    assert "nsd_expdesign.mat" in _fails(root, tmp_path)


# ------------------------------------------------------------------ readers downstream and the CLI
def test_dataset_and_pairs_read_the_npz(release, tmp_path):
    root, _ = release
    out = tmp_path / "npz" / "subj01.npz"
    assert main(["preprocess-nsd", "--root", str(root), "--subject", "1", "--out", str(out), "--image-size", "8",
                 "--pixel-image-size", str(SIDE), "--no-tracking"]) == 0
    subject, info = load_nsd_npz(out)
    assert info.test_nsd_id.tolist() == [2, 6, 11] and info.zscore == "session"
    assert set(subject.roi_masks) == {"nsdgeneral"}
    train = NsdFmriDataset(out, split="train")
    test = NsdFmriDataset(out, split="test")
    assert len(train) == subject.train_fmri.shape[0] and len(test) == 3
    pairs = load_pairs(out, None, "nsd", "test", num_voxels=train.padded_length, image_size=8)
    assert pairs.fmri.shape == (3, train.padded_length) and pairs.images.shape == (3, 3, 8, 8)
    assert split_images(out, None, "nsd", "train", 8).shape[0] == len(train)
    assert read_pixel_images(out).shape == (3, SIDE, SIDE, 3)


def test_cli_bad_input_is_one_line(release, tmp_path, capsys):
    root, _ = release
    shutil.rmtree(sub_dir(root, "betas"))
    code = main(["preprocess-nsd", "--root", str(root), "--subject", "1", "--out", str(tmp_path / "o.npz"),
                 "--sessions", "2", "--no-tracking"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "betas_session01.nii.gz" in err
