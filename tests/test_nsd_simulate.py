"""simulate-nsd: every file read back with nibabel / scipy / h5py / pandas directly (not with our
readers) and checked against the release's conventions (docs/reference.md, NSD): shapes, dtypes,
1-based ids, shared images, repeats, responses.tsv and the stim-info repeat columns against the
design, HDF5 == NIfTI transposed, zeros outside the brain, missing sessions, and the ground truth."""

from __future__ import annotations

import hashlib
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import scipy.io

from mindvis.cli.main import main
from mindvis.simulate.nsd import NsdSimConfig, simulate_nsd
from mindvis.simulate.stimuli import StimulusSet
from mindvis.utils.atomic import save_npz
from mindvis.utils.errors import ConfigError

N_SHARED, PER_SUBJECT, SESSIONS = 4, 10, 2
BETAS = "nsddata_betas/ppdata/subj{s:02d}/func1pt8mm/betas_fithrf_GLMdenoise_RR/betas_session{n:02d}.{ext}"
ROI = "nsddata/ppdata/subj{s:02d}/func1pt8mm/roi/{name}.nii.gz"


def tiny_stimuli() -> StimulusSet:
    """12 training + 6 test images of 16 px in 3 classes: each class a flat colour plus noise, so the
    class is visible in the pixels (and the brick rows can be told apart by their mean colour)."""
    rng = np.random.default_rng(0)
    colours = np.array([[220, 40, 40], [40, 220, 40], [40, 40, 220]])

    def images(labels):
        base = colours[labels][:, None, None, :] + rng.integers(-30, 30, size=(len(labels), 16, 16, 3))
        return np.clip(base, 0, 255).astype(np.uint8)

    tr_y, te_y = np.arange(12) % 3, np.arange(6) % 3
    return StimulusSet(images(tr_y), images(te_y), tr_y, te_y, 9_000_000 + tr_y + (np.arange(12) + 1) / 1e6,
                       9_000_000 + te_y + (np.arange(6) + 101) / 1e6, ["r", "g", "b"], 9_000_000 + np.arange(3))


def tiny_cfg(**kw) -> NsdSimConfig:
    base = dict(subjects=[1, 2], sessions=SESSIONS, shared_images=N_SHARED, images_per_subject=PER_SUBJECT,
                grid=[12, 14, 12], roi_voxels={"V1": 8, "V2": 8, "V3": 8, "hV4": 6, "ventral": 8, "lateral": 6},
                brick_size=20, chunk_trials=4, hdf5=True, missing_sessions=["2:2"], seed=5)
    base.update(kw)
    return NsdSimConfig(**base)


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("nsd") / "raw"
    summary = simulate_nsd(tiny_stimuli(), root, tiny_cfg())
    return root, summary


@pytest.fixture(scope="module")
def design(release):
    root, _ = release
    return scipy.io.loadmat(root / "nsddata/experiments/nsd/nsd_expdesign.mat")


def nsd_ids(design, subject: int) -> np.ndarray:
    """0-based 73k id per global trial, NSD's formula written out here."""
    mo = design["masterordering"][0].astype(int)
    return design["subjectim"][subject - 1, mo - 1].astype(int) - 1


def test_expdesign_shapes_and_one_based_ids(design):
    mo, si, sx = design["masterordering"], design["subjectim"], design["sharedix"]
    n_trials = N_SHARED * 3 + (PER_SUBJECT - N_SHARED) * 3  # every presentation, shared out over the sessions
    assert mo.shape == (1, n_trials // SESSIONS * SESSIONS) and si.shape == (8, PER_SUBJECT) and sx.shape == (1, N_SHARED)
    assert mo.min() >= 1 and mo.max() <= PER_SUBJECT
    assert si.min() >= 1 and si.max() <= 18 and sx.min() >= 1 and sx.max() <= 18
    assert (si[:, :N_SHARED] == si[0, :N_SHARED]).all()  # the shared images: identical for all subjects
    assert np.array_equal(si[0, :N_SHARED], sx[0])
    for row in si:  # a subject sees each image once in its set; its own images are not shared ones
        assert len(set(row.tolist())) == PER_SUBJECT
    counts = np.bincount(mo[0].astype(int), minlength=PER_SUBJECT + 1)[1:]
    assert counts.max() <= 3
    assert design["stimpattern"].shape[:2] == (SESSIONS, 12) and set(np.unique(design["stimpattern"])) <= {0, 1}
    # stimpattern: one stimulus slot per trial of the session, summed over runs
    assert (design["stimpattern"].sum(axis=(1, 2)) == mo.shape[1] // SESSIONS).all()


def test_basiccnt_counts_first_second_third_showings(design):
    mo = design["masterordering"][0].astype(int)
    per = mo.size // SESSIONS
    expect = np.zeros((3, SESSIONS))
    for t in range(mo.size):
        k = int((mo[:t] == mo[t]).sum())  # earlier showings of the same image
        expect[k, t // per] += 1
    assert np.array_equal(design["basiccnt"], expect)


def test_other_repeats_one_keeps_shared_three(tmp_path):
    root = tmp_path / "raw"
    simulate_nsd(tiny_stimuli(), root, tiny_cfg(subjects=[1], missing_sessions=[], other_repeats=1, hdf5=False))
    mo = scipy.io.loadmat(root / "nsddata/experiments/nsd/nsd_expdesign.mat")["masterordering"][0].astype(int)
    counts = np.bincount(mo, minlength=PER_SUBJECT + 1)[1:]
    assert (counts[:N_SHARED] <= 3).all() and (counts[N_SHARED:] <= 1).all()
    assert mo.size == (N_SHARED * 3 + PER_SUBJECT - N_SHARED) // SESSIONS * SESSIONS


def test_betas_nifti_int16_zero_outside_brain(release, design):
    root, _ = release
    brain = np.asarray(nib.load(root / "nsddata/ppdata/subj01/func1pt8mm/brainmask.nii.gz").dataobj)
    general = np.asarray(nib.load(root / ROI.format(s=1, name="nsdgeneral")).dataobj)
    per = design["masterordering"].size // SESSIONS
    for n in range(1, SESSIONS + 1):
        img = nib.load(root / BETAS.format(s=1, n=n, ext="nii.gz"))
        assert img.shape == (12, 14, 12, per) and img.get_data_dtype() == np.int16
        slope, inter = img.header.get_slope_inter()
        assert slope is None and inter is None  # no active scaling: the ints are % signal change x 300
        assert np.allclose(np.diag(img.affine)[:3], 1.8)
        raw = np.asarray(img.dataobj)
        assert raw.dtype == np.int16
        assert (raw[brain == 0] == 0).all() and (raw[brain == 1] != 0).mean() > 0.9
        pct = raw[general == 1] / 300.0
        assert 0.3 < pct.std() < 3.0  # NSD's scale: ~1-2 % signal change
    assert set(np.unique(general)) == {-1, 0, 1} and np.array_equal(general == -1, brain == 0)


def test_hdf5_is_the_nifti_transposed(release):
    root, _ = release
    for n in (1, 2):
        vol = np.asarray(nib.load(root / BETAS.format(s=1, n=n, ext="nii.gz")).dataobj)
        with h5py.File(root / BETAS.format(s=1, n=n, ext="hdf5"), "r") as f:
            betas = f["betas"]
            assert betas.dtype == np.int16 and betas.shape == vol.shape[::-1]
            assert np.array_equal(betas[()], vol.transpose(3, 2, 1, 0))


def test_missing_session_absent_and_left_out_of_truth(release):
    root, summary = release
    assert not (root / BETAS.format(s=2, n=2, ext="nii.gz")).exists()
    assert not (root / BETAS.format(s=2, n=2, ext="hdf5")).exists()
    assert (root / BETAS.format(s=2, n=1, ext="nii.gz")).exists()
    truth = np.load(root / "simulation_truth/subj02.npz")
    assert set(truth["session"].tolist()) == {1} and truth["missing_sessions"].tolist() == [2]
    assert summary["subjects"]["subj02"]["missing_sessions"] == [2]
    assert not list(root.rglob(".*.tmp*"))  # no temp files left behind


def test_rois_and_label_tables(release):
    root, _ = release
    general = np.asarray(nib.load(root / ROI.format(s=1, name="nsdgeneral")).dataobj)
    prf = np.asarray(nib.load(root / ROI.format(s=1, name="prf-visualrois")).dataobj)
    streams = np.asarray(nib.load(root / ROI.format(s=1, name="streams")).dataobj)
    assert set(np.unique(prf)) == set(range(-1, 8)) and np.array_equal(prf == -1, general == -1)
    assert (general[prf > 0] == 1).all()  # the early visual ROIs lie inside nsdgeneral
    assert set(np.unique(streams[general == 1])) == {1, 5, 6}
    ctab = (root / "nsddata/freesurfer/subj01/label/prf-visualrois.mgz.ctab").read_text().splitlines()
    assert ctab == ["0 Unknown", "1 V1v", "2 V1d", "3 V2v", "4 V2d", "5 V3v", "6 V3d", "7 hV4"]
    table = pd.read_csv(root / "nsddata/freesurfer/subj01/label/streams.mgz.ctab", delimiter=" ", header=None, index_col=0)
    assert table.loc[5, 1] == "ventral" and table.loc[0, 1] == "Unknown"


def test_truth_equals_the_stored_betas_at_nsdgeneral(release, design):
    root, _ = release
    for s in (1, 2):
        truth = np.load(root / f"simulation_truth/subj{s:02d}.npz")
        general = np.asarray(nib.load(root / ROI.format(s=s, name="nsdgeneral")).dataobj)
        rows = []
        for n in sorted(set(truth["session"].tolist())):
            vol = np.asarray(nib.load(root / BETAS.format(s=s, n=n, ext="nii.gz")).dataobj)
            rows.append(vol[general == 1].T)  # (trials, V), C order of the grid
        stored = np.concatenate(rows)
        assert np.array_equal(truth["betas_int16"], stored)
        assert np.array_equal(truth["betas"], stored.astype(np.float32) / np.float32(300))
        assert np.array_equal(truth["voxel_ijk"], np.argwhere(general == 1))
        assert np.array_equal(truth["nsd_id"], nsd_ids(design, s)[truth["global_trial"]])
        per = design["masterordering"].size // SESSIONS
        assert np.array_equal(truth["session"], truth["global_trial"] // per + 1)
        assert np.array_equal(truth["shared"], design["masterordering"][0, truth["global_trial"]] <= N_SHARED)


def test_images_are_decodable_from_the_betas(release):
    """The class of the image (via the truth's per-image labels) is readable from the ROI betas:
    each trial against class centroids of the OTHER images' trials, well above chance (1/3)."""
    root, _ = release
    truth = np.load(root / "simulation_truth/subj01.npz")
    x = truth["betas"] - truth["betas"].mean(0)
    y = truth["image_label"][truth["nsd_id"]]
    hits = []
    for t in range(len(y)):
        other = truth["nsd_id"] != truth["nsd_id"][t]
        centroids = np.stack([x[other & (y == k)].mean(0) for k in range(3)])
        hits.append(np.argmin(((x[t] - centroids) ** 2).sum(-1)) == y[t])
    assert np.mean(hits) > 0.6


def test_stimuli_brick_rows_are_73k_ids(release):
    root, _ = release
    stim = tiny_stimuli()
    truth = np.load(root / "simulation_truth/subj01.npz")
    with h5py.File(root / "nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5", "r") as f:
        brick = f["imgBrick"][()]
    assert brick.dtype == np.uint8 and brick.shape == (18, 20, 20, 3)
    for i in range(18):
        source = (stim.test_images if truth["image_is_test"][i] else stim.train_images)[truth["image_row"][i]]
        assert np.abs(brick[i].mean((0, 1)) - source.mean((0, 1))).max() < 4  # the same picture, upscaled


def test_responses_tsv_follows_the_design(release, design):
    root, _ = release
    tsv = pd.read_csv(root / "nsddata/ppdata/subj02/behav/responses.tsv", sep="\t")
    assert list(tsv.columns[:6]) == ["SUBJECT", "SESSION", "RUN", "TRIAL", "73KID", "10KID"]
    assert "MISSINGDATA" in tsv.columns and "ISOLDCURRENT" in tsv.columns
    mo = design["masterordering"][0].astype(int)
    per = mo.size // SESSIONS
    assert len(tsv) == mo.size  # every trial of every session, the missing-betas session included
    assert (tsv["SUBJECT"] == 2).all()
    assert np.array_equal(tsv["SESSION"], np.arange(mo.size) // per + 1)
    assert np.array_equal(tsv["73KID"], nsd_ids(design, 2) + 1) and np.array_equal(tsv["10KID"], mo)
    # within a session: runs in order, trials 1.. within each run
    first = tsv[tsv["SESSION"] == 1]
    assert first["RUN"].is_monotonic_increasing and first["RUN"].min() == 1
    for _, run in first.groupby("RUN"):
        assert list(run["TRIAL"]) == list(range(1, len(run) + 1))
    assert np.array_equal(tsv["ISOLD"], [int(k in set(tsv["73KID"][:t])) for t, k in enumerate(tsv["73KID"])])


def test_stim_info_rep_columns_point_at_the_trials(release, design):
    root, _ = release
    info = pd.read_csv(root / "nsddata/experiments/nsd/nsd_stim_info_merged.csv", index_col=0)
    assert len(info) == 18 and list(info.index) == list(range(18)) and np.array_equal(info["nsdId"], np.arange(18))
    assert list(info.columns[:8]) == ["cocoId", "cocoSplit", "cropBox", "loss", "nsdId", "flagged", "BOLD5000", "shared1000"]
    assert set(info.index[info["shared1000"]]) == set((design["sharedix"][0] - 1).astype(int).tolist())
    for s in range(1, 9):
        ids = nsd_ids(design, s)
        assert set(info.index[info[f"subject{s}"] == 1]) == set((design["subjectim"][s - 1] - 1).astype(int).tolist())
        for i in range(18):
            reps = [int(info.loc[i, f"subject{s}_rep{r}"]) for r in range(3)]
            shown = [t + 1 for t in np.flatnonzero(ids == i)]  # 1-based global trials
            assert [r for r in reps if r] == shown


def test_chunk_size_and_missing_sessions_do_not_change_the_data(release, tmp_path):
    root, _ = release
    other = tmp_path / "raw"
    simulate_nsd(tiny_stimuli(), other, tiny_cfg(chunk_trials=100, missing_sessions=[], hdf5=False))

    def digest(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    for s, n in ((1, 1), (1, 2), (2, 1)):
        assert digest(root / BETAS.format(s=s, n=n, ext="nii.gz")) == digest(other / BETAS.format(s=s, n=n, ext="nii.gz"))
    assert not list(other.rglob("*.hdf5"))[1:]  # only the stimuli brick
    a, b = (scipy.io.loadmat(r / "nsddata/experiments/nsd/nsd_expdesign.mat") for r in (root, other))
    for key in ("masterordering", "subjectim", "sharedix", "stimpattern", "basiccnt"):  # the header holds a time
        assert np.array_equal(a[key], b[key])


def test_cli_writes_the_tree_and_rejects_bad_options(tmp_path, capsys):
    stim = tiny_stimuli()
    npz = tmp_path / "stimuli.npz"
    save_npz(npz, train_images=stim.train_images, test_images=stim.test_images, train_labels=stim.train_labels,
             test_labels=stim.test_labels, train_ids=stim.train_ids, test_ids=stim.test_ids,
             class_names=np.array(stim.class_names))
    roi = "{V1: 8, V2: 8, V3: 8, hV4: 6, ventral: 8, lateral: 6}"
    common = ["simulate-nsd", "--root", str(tmp_path / "raw"), "--stimuli", str(npz), "--no-tracking",
              "--set", "brick_size=16", "--set", f"roi_voxels={roi}", "--grid", "12", "14", "12"]
    assert main([*common, "--subjects", "3", "--sessions", "1", "--shared-images", "3", "--images-per-subject", "8"]) == 0
    mat = scipy.io.loadmat(tmp_path / "raw/nsddata/experiments/nsd/nsd_expdesign.mat")
    assert mat["subjectim"].shape == (8, 8) and mat["masterordering"].shape == (1, 24)
    assert (tmp_path / "raw" / BETAS.format(s=3, n=1, ext="nii.gz")).exists()
    assert (tmp_path / "raw/simulation_truth/subj03.npz").exists()
    assert main([*common, "--missing-sessions", "1-2"]) == 2
    assert "SUBJ:SESS" in capsys.readouterr().err
    assert main([*common, "--sessions", "2", "--trials-per-session", "500"]) == 2
    assert "presentations" in capsys.readouterr().err


def test_design_errors_are_config_errors():
    with pytest.raises(ConfigError, match="images_per_subject"):
        simulate_nsd(tiny_stimuli(), "/nonexistent", tiny_cfg(images_per_subject=3))
    with pytest.raises(ConfigError, match="subjects"):
        simulate_nsd(tiny_stimuli(), "/nonexistent", tiny_cfg(subjects=[9]))
