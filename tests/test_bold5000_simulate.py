"""simulate-bold5000: the release layout and naming (defects included), determinism, partial repeats,
and that preprocess-bold5000 reads it back."""

from __future__ import annotations

import hashlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mindvis.preprocess.bold5000 import Bold5000PreprocessConfig, preprocess_bold5000_subject
from mindvis.preprocess.bold5000_lists import read_name_list
from mindvis.simulate.bold5000 import Bold5000SimConfig, simulate_bold5000
from mindvis.utils.atomic import save_npz

ROIS = ["EarlyVis", "LOC", "OPA", "PPA", "RSC"]
LABELS = [f"{h}{r}" for r in ROIS for h in ("LH", "RH")]
BETAS = "CSI{n}_GLMbetas-TYPED-FITHRF-GLMDENOISE-RR_ses-{s:02d}.nii.gz"


def tiny_cfg(**kw) -> Bold5000SimConfig:
    base = dict(
        roi_voxels=dict.fromkeys(ROIS, 8), grid=[10, 12, 10], n_sessions=2, runs_per_session=[2, 1],
        trials_per_run=5, n_test_images=3, test_repeats=2, partial_sessions=1, seed=3,
        misnamed_loc_subjects=[2, 3], misnamed_rsc_subjects=[2],  # subject 1 named right, subject 2 not
    )
    base.update(kw)
    return Bold5000SimConfig(**base)


@pytest.fixture(scope="module")
def stimuli(tmp_path_factory) -> Path:
    """A tiny stimuli.npz as `make-stimuli` writes it: 12 training + 4 test images of 16 px, 3 classes."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("stim") / "stimuli.npz"
    train_y, test_y = np.arange(12) % 3, np.arange(4) % 3
    save_npz(
        path,
        train_images=rng.integers(0, 256, size=(12, 16, 16, 3), dtype=np.uint8),
        test_images=rng.integers(0, 256, size=(4, 16, 16, 3), dtype=np.uint8),
        train_labels=train_y,
        test_labels=test_y,
        train_ids=9_000_000 + train_y + (np.arange(12) + 1) / 1e6,
        test_ids=9_000_000 + test_y + (np.arange(4) + 101) / 1e6,
        class_names=np.array(["zero", "one", "two"]),
    )
    return path


@pytest.fixture(scope="module")
def release(stimuli, tmp_path_factory):
    out = tmp_path_factory.mktemp("raw") / "bold5000"
    summaries = {n: simulate_bold5000(stimuli, n, out, tiny_cfg()) for n in (1, 2, 4)}
    return out, summaries


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_file_names_mirror_the_release(release):
    out, summaries = release
    assert summaries[1]["sessions"] == 2 and summaries[4]["sessions"] == 1
    for n, sessions in ((1, 2), (2, 2), (4, 1)):
        assert sorted(p.name for p in out.glob(f"CSI{n}_GLMbetas-*")) == [BETAS.format(n=n, s=s) for s in range(1, sessions + 1)]
        assert (out / f"CSI{n}_brainmask.nii.gz").is_file() and (out / f"CSI{n}_imgnames.txt").is_file()
        lists = out / "BOLD5000_Stimuli" / "Stimuli_Presentation_Lists" / f"CSI{n}"
        assert sorted(p.name for p in lists.iterdir()) == [f"CSI{n}_sess{s:02d}" for s in range(1, sessions + 1)]
        # `CSI_` without the subject number; session 1 has 2 runs, session 2 one.
        assert sorted(p.name for p in (lists / f"CSI{n}_sess01").iterdir()) == ["CSI_sess01_run01.txt", "CSI_sess01_run02.txt"]
    masks = {n: sorted(p.name for p in (out / f"sub-CSI{n}").iterdir()) for n in (1, 2)}
    assert masks[1] == sorted(f"sub-CSI1_mask-{label}.nii.gz" for label in LABELS)
    defects = {"LHLOC": "LHLO", "RHLOC": "RHLO", "RHRSC": "RHRRSC"}
    assert masks[2] == sorted(f"sub-CSI2_mask-{defects.get(label, label)}.nii.gz" for label in LABELS)
    scene = out / "BOLD5000_Stimuli" / "Scene_Stimuli"
    repeated = read_name_list(scene / "repeated_stimuli_113_list.txt")
    assert len(repeated) == 3 and all((scene / "Presented_Stimuli" / "ImageNet" / name).is_file() for name in repeated)
    assert not list(out.rglob(".*.tmp*"))  # no temporary file left behind


def test_volumes_grid_nan_and_masks(release):
    out, summaries = release
    brain = np.asarray(nib.load(str(out / "CSI1_brainmask.nii.gz")).dataobj).astype(bool)
    betas = nib.load(str(out / BETAS.format(n=1, s=1)))
    data = np.asarray(betas.dataobj)
    assert data.dtype == np.float32 and data.shape == (10, 12, 10, 10)  # session 1: 2 runs x 5 trials
    np.testing.assert_allclose(np.diag(betas.affine)[:3], [2.0, 2.0, 2.0])
    outside = data[~brain]
    assert np.isnan(outside).any() and np.isinf(outside).any() and not np.isfinite(outside).any()
    inside_bad = (~np.isfinite(data[brain])).any(axis=1).sum()
    assert inside_bad >= 5  # the in-brain NaN voxels (5 outside ROIs + the ROI ones of this session)
    union = np.zeros_like(brain)
    for label in LABELS:
        img = nib.load(str(out / "sub-CSI1" / f"sub-CSI1_mask-{label}.nii.gz"))
        mask = np.asarray(img.dataobj).astype(bool)
        assert img.shape == brain.shape and np.allclose(img.affine, betas.affine)
        assert mask.sum() == summaries[1]["voxels_per_roi"][label] > 0
        assert not (mask & ~brain).any() and not (mask & union).any()  # inside the brain, disjoint
        union |= mask
    assert sum(summaries[1]["voxels_per_roi"][f"{h}EarlyVis"] for h in ("LH", "RH")) == 8


def test_lists_imgnames_and_repeats_agree(release):
    out, _ = release
    lists = out / "BOLD5000_Stimuli" / "Stimuli_Presentation_Lists" / "CSI1"
    entries = []
    for s, runs in ((1, (1, 2)), (2, (1,))):
        for r in runs:
            run = read_name_list(lists / f"CSI1_sess{s:02d}" / f"CSI_sess{s:02d}_run{r:02d}.txt")
            assert len(run) == 5
            entries += run
    names = [e.removeprefix("rep_") for e in entries]
    assert names == read_name_list(out / "CSI1_imgnames.txt")
    for k, entry in enumerate(entries):  # rep_ exactly on the second and later presentations
        assert entry.startswith("rep_") == (names[k] in names[:k])
    repeated = read_name_list(out / "BOLD5000_Stimuli" / "Scene_Stimuli" / "repeated_stimuli_113_list.txt")
    assert [names.count(n) for n in repeated] == [2, 2, 2]


def test_partial_subject_has_partial_repeats(release):
    out, summaries = release
    names = read_name_list(out / "CSI4_imgnames.txt")
    repeated = read_name_list(out / "BOLD5000_Stimuli" / "Scene_Stimuli" / "repeated_stimuli_113_list.txt")
    assert [names.count(n) for n in repeated] == [0, 1, 2]
    assert len(names) == 10 and summaries[4]["test_images_shown"] == 2


def test_deterministic_and_subject_specific(stimuli, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    simulate_bold5000(stimuli, 1, a, tiny_cfg())
    simulate_bold5000(stimuli, 1, b, tiny_cfg())
    da, db = _digests(a), _digests(b)
    assert da == db and len(da) > 20
    simulate_bold5000(stimuli, 3, a, tiny_cfg())
    x = np.asarray(nib.load(str(a / BETAS.format(n=1, s=1))).dataobj)
    y = np.asarray(nib.load(str(a / BETAS.format(n=3, s=1))).dataobj)
    assert not np.array_equal(np.nan_to_num(x), np.nan_to_num(y))


def test_rerun_with_fewer_sessions_leaves_no_stale_files(stimuli, tmp_path):
    simulate_bold5000(stimuli, 1, tmp_path, tiny_cfg(n_sessions=2))
    simulate_bold5000(stimuli, 1, tmp_path, tiny_cfg(n_sessions=1, partial_sessions=1, misnamed_loc_subjects=[1]))
    assert sorted(p.name for p in tmp_path.glob("CSI1_GLMbetas-*")) == [BETAS.format(n=1, s=1)]
    assert not (tmp_path / "BOLD5000_Stimuli" / "Stimuli_Presentation_Lists" / "CSI1" / "CSI1_sess02").exists()
    assert not (tmp_path / "sub-CSI1" / "sub-CSI1_mask-LHLOC.nii.gz").exists()
    assert (tmp_path / "sub-CSI1" / "sub-CSI1_mask-LHLO.nii.gz").exists()


def test_preprocessing_reads_the_simulated_release(release, tmp_path):
    out, summaries = release
    cfg = Bold5000PreprocessConfig(image_size=16)
    s2 = preprocess_bold5000_subject(out, 2, tmp_path, cfg)
    assert s2["n_alias_repairs"] == 3 and s2["trials"] == 15
    assert s2["dropped_nonfinite_voxels"] == {k: summaries[2]["bad_voxels_per_roi"][k] for k in LABELS}
    assert s2["voxels_total"] == 40 - sum(summaries[2]["bad_voxels_per_roi"].values())
    s4 = preprocess_bold5000_subject(out, 4, tmp_path, cfg)
    repeated = read_name_list(out / "BOLD5000_Stimuli" / "Scene_Stimuli" / "repeated_stimuli_113_list.txt")
    assert s4["test_images_not_shown"] == [repeated[0]]
    assert s4["n_test_images"] == 2 and s4["n_test_trials"] == 3 and s4["n_train_trials"] == 7
    with np.load(tmp_path / "npz" / "CSI4.npz") as z:
        assert list(z["test_image_names"]) == repeated[1:]
        np.testing.assert_array_equal(z["test_trial_image_index"], [0, 1, 1])


def test_responses_carry_the_image(stimuli, tmp_path):
    """At high SNR, two presentations of one image correlate far more than two different images."""
    raw = tmp_path / "raw"
    simulate_bold5000(stimuli, 1, raw, tiny_cfg(snr=8.0, test_repeats=3, trials_per_run=8))
    preprocess_bold5000_subject(raw, 1, tmp_path / "out", Bold5000PreprocessConfig(image_size=16))
    with np.load(tmp_path / "out" / "npz" / "CSI1.npz") as z:
        trials, owner, train = z["arr_1"], z["test_trial_image_index"], z["arr_0"]
    x = trials - train.mean(axis=0)  # remove each voxel's baseline response
    c = np.corrcoef(x)
    same = owner[:, None] == owner[None, :]
    off = ~np.eye(len(owner), dtype=bool)
    assert c[same & off].mean() > c[~same].mean() + 0.3


def test_cli(stimuli, tmp_path):
    from mindvis.cli.main import main

    code = main([
        "simulate-bold5000", "--stimuli", str(stimuli), "--subject", "2", "--out-dir", str(tmp_path),
        "--no-tracking", "--config", "{grid: [10, 12, 10], n_sessions: 1, runs_per_session: [2], trials_per_run: 5, "
        "n_test_images: 2, test_repeats: 2, partial_sessions: 1, misnamed_rsc_subjects: [2]}", "--set", "roi_voxels.RSC=9",
    ])
    assert code == 0
    assert (tmp_path / "sub-CSI2" / "sub-CSI2_mask-RHRRSC.nii.gz").is_file()
    assert len(read_name_list(tmp_path / "CSI2_imgnames.txt")) == 10
