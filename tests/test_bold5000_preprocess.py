"""preprocess-bold5000 on a tiny hand-made release (6x5x4 grid, 2 sessions, 14 trials).

`make_raw_tree` writes every file of the release by hand (no simulator), and
returns what went in, so each test can compute the expected output itself.
"""

from __future__ import annotations

import gzip
import logging
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from mindvis.data.bold5000 import load_bold5000_npz, load_roi_arrays
from mindvis.preprocess.bold5000 import Bold5000PreprocessConfig, preprocess_bold5000_subject
from mindvis.utils.errors import InputDataError

GRID = (6, 5, 4)
AFFINE = np.array([[2.0, 0, 0, -6], [0, 2.0, 0, -5], [0, 0, 2.0, -4], [0, 0, 0, 1]])
ROIS = ["EarlyVis", "LOC", "OPA", "PPA", "RSC"]
LABELS = [f"{h}{r}" for r in ROIS for h in ("LH", "RH")]
# Chronological trials: 8 training images once, t0 x3, t1 x2, t2 x1; t3 is in the repeated list but never shown.
NAMES = ["a0", "t0", "a1", "t1", "a2", "t0", "a3", "t2", "a4", "t0", "a5", "t1", "a6", "a7"]
NAMES = [n + ".png" for n in NAMES]
RUNS = {1: {1: NAMES[0:4], 2: NAMES[4:7]}, 2: {1: NAMES[7:11], 2: NAMES[11:14]}}
REPEATED = ["t0.png", "t3.png", "t1.png", "t2.png"]
NAN_VOXEL = ("LHLOC", 0)  # NaN in one trial of session 2 only
INF_VOXEL = ("RHPPA", 1)  # +Inf in every trial of session 1
IMAGE_HW = (12, 10)  # non-square: the preprocessing centre-crops to 10x10


def _save_nii(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))


def roi_masks() -> dict[str, np.ndarray]:
    """Disjoint scattered masks of 2..4 voxels each (sizes differ so order mistakes show)."""
    order = np.random.default_rng(7).permutation(np.prod(GRID))
    masks, start = {}, 0
    for k, label in enumerate(LABELS):
        size = 2 + k % 3
        m = np.zeros(np.prod(GRID), dtype=bool)
        m[order[start : start + size]] = True
        masks[label] = m.reshape(GRID)
        start += size
    return masks


def make_raw_tree(root: Path, subject: int = 1, crlf: bool = False) -> dict:
    """Write a complete tiny BOLD5000 release for one subject; return its ingredients."""
    rng = np.random.default_rng(subject)
    masks = roi_masks()
    brain = np.zeros(GRID, dtype=bool)
    for m in masks.values():
        brain |= m
    brain[1:5, 1:4, 1:3] = True
    betas = {}
    for session, runs in RUNS.items():
        n = sum(len(v) for v in runs.values())
        data = rng.normal(0.0, 2.0, size=GRID + (n,)).astype(np.float32)
        data[~brain] = np.nan  # outside the brain GLMsingle leaves NaN
        betas[session] = data
    nan_ijk = tuple(np.argwhere(masks[NAN_VOXEL[0]])[NAN_VOXEL[1]])
    inf_ijk = tuple(np.argwhere(masks[INF_VOXEL[0]])[INF_VOXEL[1]])
    betas[2][nan_ijk + (1,)] = np.nan
    betas[1][inf_ijk] = np.inf
    for session, data in betas.items():
        _save_nii(root / f"CSI{subject}_GLMbetas-TYPED-FITHRF-GLMDENOISE-RR_ses-{session:02d}.nii.gz", data)
    _save_nii(root / f"CSI{subject}_brainmask.nii.gz", brain.astype(np.uint8))
    for label, m in masks.items():
        _save_nii(root / f"sub-CSI{subject}" / f"sub-CSI{subject}_mask-{label}.nii.gz", m.astype(np.float32))

    eol = "\r\n" if crlf else "\n"
    lists = root / "BOLD5000_Stimuli" / "Stimuli_Presentation_Lists" / f"CSI{subject}"
    seen: set[str] = set()
    for session, runs in RUNS.items():
        for run, names in runs.items():
            lines = []
            for name in names:
                lines.append(("rep_" if name in seen else "") + name)
                seen.add(name)
            path = lists / f"CSI{subject}_sess{session:02d}" / f"CSI_sess{session:02d}_run{run:02d}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes((eol.join(lines) + eol).encode())
    (root / f"CSI{subject}_imgnames.txt").write_text("\n".join(NAMES) + "\n")
    scene = root / "BOLD5000_Stimuli" / "Scene_Stimuli"
    scene.mkdir(parents=True, exist_ok=True)
    (scene / "repeated_stimuli_113_list.txt").write_text("\n".join(REPEATED) + "\n")
    images = {}
    for k, name in enumerate(sorted(set(NAMES) | set(REPEATED))):
        img = np.random.default_rng(100 + k).integers(0, 256, size=IMAGE_HW + (3,), dtype=np.uint8)
        path = scene / "Presented_Stimuli" / ("ImageNet" if k % 2 else "Scene") / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(path)
        images[name] = img
    return {"masks": masks, "betas": betas, "images": images, "nan_ijk": nan_ijk, "inf_ijk": inf_ijk}


def small_cfg(**kw) -> Bold5000PreprocessConfig:
    return Bold5000PreprocessConfig(image_size=10, **kw)


def expected_matrix(tree: dict) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(trials, V) by hand: each ROI's voxels in C order, minus the two bad voxels."""
    bad = {tree["nan_ijk"], tree["inf_ijk"]}
    columns, kept = [], {}
    for label in LABELS:
        ijk = [tuple(v) for v in np.argwhere(tree["masks"][label]) if tuple(v) not in bad]
        kept[label] = np.asarray(ijk)
        for v in ijk:
            columns.append(np.concatenate([tree["betas"][s][v] for s in sorted(tree["betas"])]))
    return np.stack(columns, axis=1), kept


@pytest.fixture
def raw(tmp_path):
    root = tmp_path / "raw" / "bold5000"
    return root, make_raw_tree(root)


def test_outputs_equal_hand_computation(raw, tmp_path):
    root, tree = raw
    out = tmp_path / "out"
    summary = preprocess_bold5000_subject(root, 1, out, small_cfg())
    data = load_bold5000_npz(out / "npz" / "CSI1.npz")
    full, kept = expected_matrix(tree)

    test_rows = {name: [t for t, n in enumerate(NAMES) if n == name] for name in ("t0.png", "t1.png", "t2.png")}
    assert data.test_image_names == ["t0.png", "t1.png", "t2.png"]  # repeated-list order, t3 never shown
    for row, name in enumerate(data.test_image_names):
        np.testing.assert_allclose(data.test_fmri[row], full[test_rows[name]].mean(axis=0), rtol=1e-6)
    np.testing.assert_array_equal(data.test_fmri_trials, full[[t for n in data.test_image_names for t in test_rows[n]]])
    np.testing.assert_array_equal(data.test_trial_image_index(), [0, 0, 0, 1, 1, 2])

    train_trials = [t for t, n in enumerate(NAMES) if n.startswith("a")]
    np.testing.assert_array_equal(data.train_fmri, full[train_trials])
    assert [data.train_image_names[i] for i in data.train_image_index] == [NAMES[t] for t in train_trials]
    # Images: the 12x10 PNG centre-cropped to 10x10 (image_size 10: no resampling).
    for i, name in enumerate(data.train_image_names):
        np.testing.assert_array_equal(data.train_images[i], tree["images"][name][1:11])
    np.testing.assert_array_equal(data.test_images[2], tree["images"]["t2.png"][1:11])

    # ROI masks over the concatenated columns, LH before RH, ROI by ROI.
    widths = [len(kept[label]) for label in LABELS]
    assert summary["voxels_per_roi"] == dict(zip(LABELS, widths))
    assert data.roi_order == LABELS
    starts = np.cumsum([0] + widths)
    for k, label in enumerate(LABELS):
        assert np.flatnonzero(data.roi_masks[label]).tolist() == list(range(starts[k], starts[k + 1]))
    np.testing.assert_array_equal(data.roi_masks["LOC"], data.roi_masks["LHLOC"] | data.roi_masks["RHLOC"])
    with np.load(out / "npz" / "CSI1.npz") as z:
        np.testing.assert_array_equal(z["voxel_ijk"], np.concatenate([kept[label] for label in LABELS]))
    assert summary["trials"] == 14 and summary["sessions"] == 2
    assert summary["n_train_trials"] == 8 and summary["n_test_trials"] == 6


def test_per_roi_npy_concatenation_equals_npz(raw, tmp_path):
    root, _ = raw
    out = tmp_path / "out"
    preprocess_bold5000_subject(root, 1, out, small_cfg())
    py = out / "BOLD5000_GLMsingle_ROI_betas" / "py"
    assert sorted(p.name for p in py.iterdir()) == sorted(
        f"CSI1_GLMbetas-TYPED-FITHRF-GLMDENOISE-RR_allses_{label}.npy" for label in LABELS
    )
    full, labels = load_roi_arrays(py, 1)
    assert labels == LABELS and full.dtype == np.float32 and full.shape[0] == 14
    with np.load(out / "npz" / "CSI1.npz") as z:
        np.testing.assert_array_equal(full[z["train_trial_index"]], z["arr_0"])
        np.testing.assert_array_equal(full[z["test_trial_index"]], z["arr_1"])
        assert z["arr_0"].dtype == np.float32 and z["arr_2"].dtype == np.float32


def test_nonfinite_voxels_dropped_in_every_session(raw, tmp_path):
    root, tree = raw
    summary = preprocess_bold5000_subject(root, 1, tmp_path / "out", small_cfg())
    assert summary["dropped_nonfinite_voxels"]["LHLOC"] == 1
    assert summary["dropped_nonfinite_voxels"]["RHPPA"] == 1
    assert summary["dropped_voxels_total"] == 2
    sizes = {label: int(m.sum()) for label, m in tree["masks"].items()}
    assert summary["voxels_per_roi"]["LHLOC"] == sizes["LHLOC"] - 1
    assert summary["voxels_per_roi"]["RHPPA"] == sizes["RHPPA"] - 1
    with np.load(tmp_path / "out" / "npz" / "CSI1.npz") as z:
        for key in ("arr_0", "arr_1", "arr_2"):
            assert np.isfinite(z[key]).all()
        ijk = {tuple(v) for v in z["voxel_ijk"]}
    assert tree["nan_ijk"] not in ijk and tree["inf_ijk"] not in ijk
    assert summary["roi_voxels_outside_brainmask"] == dict.fromkeys(LABELS, 0)


def test_misnamed_masks_repaired(raw, tmp_path, caplog):
    root, _ = raw
    preprocess_bold5000_subject(root, 1, tmp_path / "ok", small_cfg())
    sub = root / "sub-CSI1"
    for good, bad in (("LHLOC", "LHLO"), ("RHLOC", "RHLO"), ("RHRSC", "RHRRSC")):
        (sub / f"sub-CSI1_mask-{good}.nii.gz").rename(sub / f"sub-CSI1_mask-{bad}.nii.gz")
    with caplog.at_level(logging.INFO, logger="mindvis.preprocess.bold5000"):
        summary = preprocess_bold5000_subject(root, 1, tmp_path / "fixed", small_cfg())
    assert summary["n_alias_repairs"] == 3
    assert "sub-CSI1_mask-RHRRSC.nii.gz -> RHRSC" in summary["alias_repairs"]
    assert "repaired 3 misnamed ROI mask(s)" in caplog.text
    with np.load(tmp_path / "ok" / "npz" / "CSI1.npz") as a, np.load(tmp_path / "fixed" / "npz" / "CSI1.npz") as b:
        np.testing.assert_array_equal(a["arr_0"], b["arr_0"])
        np.testing.assert_array_equal(a["LOC"], b["LOC"])
    # Without the alias table the misnamed mask is simply missing, and the error says what exists.
    with pytest.raises(InputDataError, match=r"LHLOC.*not found.*sub-CSI1_mask-LHLO\.nii\.gz"):
        preprocess_bold5000_subject(root, 1, tmp_path / "x", small_cfg(roi_aliases={}))


def test_truncated_betas_named(raw, tmp_path):
    root, _ = raw
    path = root / "CSI1_GLMbetas-TYPED-FITHRF-GLMDENOISE-RR_ses-02.nii.gz"
    payload = path.read_bytes()
    path.write_bytes(payload[: len(payload) * 2 // 3])
    assert nib.load(str(path)).shape[:3] == GRID  # the header still reads: only the data read fails
    with pytest.raises(InputDataError, match=r"ses-02\.nii\.gz: cannot read the voxel data.*truncated"):
        preprocess_bold5000_subject(root, 1, tmp_path / "out", small_cfg())
    assert not (tmp_path / "out" / "npz" / "CSI1.npz").exists()


def test_mask_on_another_grid_or_affine(raw, tmp_path):
    root, tree = raw
    path = root / "sub-CSI1" / "sub-CSI1_mask-RHOPA.nii.gz"
    _save_nii(path, np.ones((7, 5, 4), dtype=np.float32))
    with pytest.raises(InputDataError, match=r"mask-RHOPA\.nii\.gz: mask grid \(7, 5, 4\) differs from the betas grid"):
        preprocess_bold5000_subject(root, 1, tmp_path / "out", small_cfg())
    shifted = AFFINE.copy()
    shifted[0, 3] += 2.0
    _save_nii(path, tree["masks"]["RHOPA"].astype(np.float32), shifted)
    with pytest.raises(InputDataError, match=r"mask-RHOPA\.nii\.gz: mask affine differs.*2 mm"):
        preprocess_bold5000_subject(root, 1, tmp_path / "out", small_cfg())


def test_empty_roi(raw, tmp_path):
    root, tree = raw
    _save_nii(root / "sub-CSI1" / "sub-CSI1_mask-LHPPA.nii.gz", np.zeros(GRID, dtype=np.float32))
    with pytest.raises(InputDataError, match=r"mask-LHPPA\.nii\.gz: ROI mask is empty"):
        preprocess_bold5000_subject(root, 1, tmp_path / "out", small_cfg())
    # A mask whose voxels are all NaN in the betas is empty after dropping: also an error.
    bad = np.zeros(GRID, dtype=np.float32)
    bad[0, 0, 0] = 1  # outside the brain: NaN everywhere
    assert not np.isfinite(tree["betas"][1][0, 0, 0]).any()
    _save_nii(root / "sub-CSI1" / "sub-CSI1_mask-LHPPA.nii.gz", bad)
    with pytest.raises(InputDataError, match=r"mask-LHPPA\.nii\.gz: all 1 voxels of LHPPA are NaN/Inf"):
        preprocess_bold5000_subject(root, 1, tmp_path / "out", small_cfg())


def test_missing_session_betas(raw, tmp_path):
    root, _ = raw
    (root / "CSI1_GLMbetas-TYPED-FITHRF-GLMDENOISE-RR_ses-01.nii.gz").unlink()
    with pytest.raises(InputDataError, match=r"ses-01\.nii\.gz: betas file of session 1 is missing"):
        preprocess_bold5000_subject(root, 1, tmp_path / "out", small_cfg())


def test_betas_trials_disagree_with_lists(raw, tmp_path):
    root, tree = raw
    _save_nii(root / "CSI1_GLMbetas-TYPED-FITHRF-GLMDENOISE-RR_ses-02.nii.gz", tree["betas"][2][..., :6])
    with pytest.raises(InputDataError, match=r"ses-02\.nii\.gz: 6 trials in the betas but 7 in the presentation lists"):
        preprocess_bold5000_subject(root, 1, tmp_path / "out", small_cfg())


def test_order_mismatch_names_both_files(raw, tmp_path):
    root, _ = raw
    swapped = list(NAMES)
    swapped[4], swapped[5] = swapped[5], swapped[4]
    (root / "CSI1_imgnames.txt").write_text("\n".join(swapped) + "\n")
    with pytest.raises(InputDataError) as err:
        preprocess_bold5000_subject(root, 1, tmp_path / "out", small_cfg())
    text = str(err.value)
    assert "CSI1_imgnames.txt: trial 5 is 't0.png' here but 'a2.png'" in text
    assert "CSI_sess01_run02.txt, line 1" in text and "Stimuli_Presentation_Lists/CSI1" in text


def test_crlf_lists_give_same_result(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    make_raw_tree(a)
    make_raw_tree(b, crlf=True)
    preprocess_bold5000_subject(a, 1, tmp_path / "oa", small_cfg())
    preprocess_bold5000_subject(b, 1, tmp_path / "ob", small_cfg())
    with np.load(tmp_path / "oa" / "npz" / "CSI1.npz") as x, np.load(tmp_path / "ob" / "npz" / "CSI1.npz") as y:
        for key in ("arr_0", "arr_2", "arr_3", "train_image_names"):
            np.testing.assert_array_equal(x[key], y[key])


def test_cli_success_and_clear_error(raw, tmp_path, capsys):
    from mindvis.cli.main import main

    root, _ = raw
    out = tmp_path / "out"
    args = ["preprocess-bold5000", "--raw-dir", str(root), "--subject", "1", "--out-dir", str(out), "--no-tracking"]
    assert main(args + ["--set", "image_size=10"]) == 0
    assert (out / "npz" / "CSI1.npz").is_file()
    shutil.rmtree(root / "sub-CSI1")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "sub-CSI1_mask-LHEarlyVis.nii.gz" in err and "Traceback" not in err


def test_gzip_is_detected_by_content_not_only_name(raw, tmp_path):
    """A betas file that is gzip-valid but holds garbage is reported, not crashed on."""
    root, _ = raw
    path = root / "CSI1_GLMbetas-TYPED-FITHRF-GLMDENOISE-RR_ses-02.nii.gz"
    path.write_bytes(gzip.compress(b"not a nifti header at all" * 20))
    with pytest.raises(InputDataError, match=r"ses-02\.nii\.gz: not a readable NIfTI"):
        preprocess_bold5000_subject(root, 1, tmp_path / "out", small_cfg())


def test_image_names_matched_by_case_or_extension_presented_copy_preferred(raw, tmp_path):
    root, tree = raw
    folder = next((root / "BOLD5000_Stimuli").rglob("a3.png")).parent
    (folder / "a3.png").rename(folder / "A3.PNG")  # other case
    other = next((root / "BOLD5000_Stimuli").rglob("a4.png"))
    other.rename(other.with_suffix(".jpeg"))  # other extension (the content stays PNG)
    # An uncropped "original" with the same name elsewhere must not be used.
    decoy = root / "BOLD5000_Stimuli" / "Scene_Stimuli" / "Original_Images" / "a5.png"
    decoy.parent.mkdir(parents=True)
    Image.fromarray(np.zeros(IMAGE_HW + (3,), dtype=np.uint8)).save(decoy)
    summary = preprocess_bold5000_subject(root, 1, tmp_path / "out", small_cfg())
    assert sorted(summary["image_name_repairs"]) == ["a3.png -> A3.PNG", "a4.png -> a4.jpeg"]
    data = load_bold5000_npz(tmp_path / "out" / "npz" / "CSI1.npz")
    for name in ("a3.png", "a4.png", "a5.png"):
        np.testing.assert_array_equal(data.train_images[data.train_image_names.index(name)], tree["images"][name][1:11])
