"""CIFTI-2 dtseries I/O and the CIFTI route of preprocess-hcp (values, order, bad inputs)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from mindvis.cli.main import main
from mindvis.io import cifti
from mindvis.io.cifti import CORTEX_LEFT, CORTEX_RIGHT
from mindvis.preprocess.hcp import CIFTI_TEMPLATE, HcpPreprocessConfig, preprocess_hcp_subject, zscore_columns
from mindvis.preprocess.hcp_atlas import load_mmp_atlas
from mindvis.utils.errors import InputDataError

AREAS = ("V1", "V2", "V3", "V4")


@pytest.fixture(scope="module")
def atlas():
    return load_mmp_atlas()


def visual_vertices(atlas, extra: int = 40, drop_area: str | None = None) -> dict[str, np.ndarray]:
    """V1..V4 vertices per hemisphere plus `extra` non-visual ones (so selection matters)."""
    out = {}
    for s in (CORTEX_LEFT, CORTEX_RIGHT):
        labels = atlas.labels[s]
        ids = [i for a in AREAS if a != drop_area for i in atlas.area_ids(a)[s]]
        vis = np.flatnonzero(np.isin(labels, ids))
        other = np.flatnonzero((labels > 0) & ~np.isin(labels, [i for a in AREAS for i in atlas.area_ids(a)[s]]))
        out[s] = np.sort(np.concatenate([vis, other[:extra]]))
    return out


def signal_of(structure: str, vertex: np.ndarray, n_frames: int, phase: float = 0.0) -> np.ndarray:
    """A distinct, known time series per (structure, vertex): (n_frames, n) float32 around 1e4."""
    t = np.arange(n_frames, dtype=np.float64)[:, None]
    v = np.asarray(vertex, dtype=np.float64)[None, :]
    hemi = 0.0 if structure == CORTEX_LEFT else 1.3
    freq = 0.2 + 0.8 * ((v * 7919) % 1000) / 1000.0  # 0.2-1.0 rad per frame: never near-constant
    return (1e4 + v + 50.0 * np.sin(freq * t + 0.001 * v + hemi + phase)).astype(np.float32)


def write_run(path, vertices: dict[str, np.ndarray], n_frames: int, phase: float = 0.0):
    axis = cifti.surface_brain_models(vertices)
    data = np.concatenate([signal_of(s, v, n_frames, phase) for s, v in vertices.items()], axis=1)
    cifti.write_dtseries(path, data, axis, tr=0.72)
    return axis, data


def run_path(subject_dir, run):
    return subject_dir / CIFTI_TEMPLATE.format(run=run)


def zscore_ref(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    sd = x.std(axis=0)
    return np.where(sd > 0, (x - x.mean(0)) / np.where(sd > 0, sd, 1), 0.0)


def expected_area(atlas, axis, data, area):
    """Columns of `area` found the plain way: look up every column's (structure, vertex)."""
    ids = atlas.area_ids(area)
    cols = [j for j, (name, vert) in enumerate(zip(axis.name, axis.vertex))
            if name in ids and atlas.labels[name][vert] in ids[name]]
    return zscore_ref(data[:, cols]), axis.name[cols], axis.vertex[cols]


# ----------------------------------------------------------------------------- I/O


def test_dtseries_roundtrip_header_and_lean_columns(tmp_path):
    verts = {CORTEX_LEFT: np.array([3, 7, 9, 100]), CORTEX_RIGHT: np.array([0, 5])}
    path = tmp_path / "r.dtseries.nii"
    axis, data = write_run(path, verts, 5)
    img = nib.load(path)
    assert isinstance(img, nib.Cifti2Image)
    assert isinstance(img.nifti_header, nib.Nifti2Header)
    assert int(img.nifti_header["intent_code"]) == 3002
    run = cifti.open_dtseries(path)
    assert (run.n_frames, run.n_grayordinates) == (5, 6)
    assert run.tr == pytest.approx(0.72)
    surf = run.surfaces()
    np.testing.assert_array_equal(surf[CORTEX_LEFT].vertices, [3, 7, 9, 100])
    np.testing.assert_array_equal(surf[CORTEX_RIGHT].columns, [4, 5])
    assert surf[CORTEX_RIGHT].n_mesh_vertices == 32492
    ref = cifti.surface_columns(run.brain_models)  # the same through nibabel's BrainModelAxis
    assert set(ref) == set(surf)
    for s in ref:
        np.testing.assert_array_equal(ref[s].columns, surf[s].columns)
        np.testing.assert_array_equal(ref[s].vertices, surf[s].vertices)
    cols = np.array([0, 2, 3, 5])  # three contiguous ranges
    assert cifti.contiguous_ranges(cols) == [(0, 1, 0), (2, 4, 1), (5, 6, 3)]
    out = run.read_columns(cols)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, data[:, cols])
    assert not list(tmp_path.glob(".*tmp*"))  # no temp files left behind


def test_zscore_columns_hand_values():
    rng = np.random.default_rng(1)
    x = (1e4 + 100 * rng.standard_normal((50, 6))).astype(np.float32)
    x[:, 2] = 1234.5  # constant
    x[:, 4] = 0.0  # constant zero
    x[7, 5] = np.nan  # non-finite
    z, constant, nonfinite = zscore_columns(x.copy())
    np.testing.assert_array_equal(constant, [False, False, True, False, True, False])
    np.testing.assert_array_equal(nonfinite, [False, False, False, False, False, True])
    assert np.isfinite(z).all()
    assert (z[:, [2, 4, 5]] == 0).all()
    ok = [0, 1, 3]
    np.testing.assert_allclose(z[:, ok], zscore_ref(x[:, ok]), atol=2e-5)
    np.testing.assert_allclose(z[:, ok].std(axis=0), 1.0, atol=1e-5)


# ----------------------------------------------------------------------------- preprocessing


def test_preprocess_matches_by_vertex_and_concatenates_runs(tmp_path, atlas):
    sub = tmp_path / "hcp" / "100206"
    verts = visual_vertices(atlas)
    # run 1: left then right, ascending vertices; run 2: right first and vertices shuffled
    # (same grayordinates, other positions), and fewer frames.
    axis1, data1 = write_run(run_path(sub, "rfMRI_REST1_LR"), verts, 16)
    rng = np.random.default_rng(3)
    shuffled = {CORTEX_RIGHT: rng.permutation(verts[CORTEX_RIGHT]), CORTEX_LEFT: rng.permutation(verts[CORTEX_LEFT])}
    axis2, data2 = write_run(run_path(sub, "rfMRI_REST1_RL"), shuffled, 11, phase=0.5)
    out = tmp_path / "HCP" / "npz" / "100206" / "HCP_visual_voxel.npz"
    summary = preprocess_hcp_subject(sub, out, HcpPreprocessConfig())
    got = np.load(out)
    assert set(got.files) == {"V1", "V2", "V3", "V4", "run_lengths"}
    np.testing.assert_array_equal(got["run_lengths"], [16, 11])
    assert summary["voxels"] == {"V1": 1618, "V2": 1220, "V3": 684, "V4": 661}
    assert summary["frames"] == 27 and summary["constant_grayordinates"] == 0
    for area in AREAS:
        arr = got[area]
        assert arr.dtype == np.float32 and arr.shape == (27, summary["voxels"][area])
        exp1, names1, verts1 = expected_area(atlas, axis1, data1, area)
        np.testing.assert_allclose(arr[:16], exp1, atol=2e-5)  # run 1 first, file order
        # run 2 holds the same grayordinates at other positions: same vertex identity per output
        # column is required, so its columns must be the run-1 order of (structure, vertex).
        pos2 = {(n, int(v)): j for j, (n, v) in enumerate(zip(axis2.name, axis2.vertex))}
        order2 = [pos2[(n, int(v))] for n, v in zip(names1, verts1)]
        np.testing.assert_allclose(arr[16:], zscore_ref(data2[:, order2]), atol=2e-5)


def test_constant_grayordinates_become_zeros_and_are_counted(tmp_path, atlas):
    sub = tmp_path / "s1"
    verts = visual_vertices(atlas, extra=0)
    path = run_path(sub, "rfMRI_REST1_LR")
    axis, data = write_run(path, verts, 12)
    v1_cols = atlas.area_columns_for_axis(axis, "V1")
    data[:, v1_cols[:4]] = 10000.0
    data[:, v1_cols[10]] = 0.0
    cifti.write_dtseries(path, data, axis, tr=0.72)
    out = tmp_path / "o.npz"
    summary = preprocess_hcp_subject(sub, out, HcpPreprocessConfig(runs=["rfMRI_REST1_LR"]))
    v1 = np.load(out)["V1"]
    assert summary["constant_grayordinates"] == 5
    assert summary["per_run"][0]["constant_grayordinates"] == 5
    assert np.isfinite(v1).all()
    assert (v1[:, [0, 1, 2, 3, 10]] == 0).all()
    np.testing.assert_allclose(v1[:, 4].std(), 1.0, atol=1e-5)


def test_truncated_cifti_is_rejected_and_nothing_is_written(tmp_path, atlas):
    sub = tmp_path / "s1"
    verts = visual_vertices(atlas, extra=0)
    write_run(run_path(sub, "rfMRI_REST1_LR"), verts, 12)
    bad = run_path(sub, "rfMRI_REST1_RL")
    write_run(bad, verts, 12)
    raw = bad.read_bytes()
    bad.write_bytes(raw[: len(raw) - 5000])  # download cut short inside the data block
    out = tmp_path / "o.npz"
    with pytest.raises(InputDataError, match=r"rfMRI_REST1_RL_Atlas.*truncated") as exc:
        preprocess_hcp_subject(sub, out, HcpPreprocessConfig())
    assert exc.value.path == bad
    assert not out.exists() and not list(tmp_path.glob("*.npz*"))
    bad.write_bytes(raw[:600])  # cut inside the header / CIFTI XML
    with pytest.raises(InputDataError, match="not a readable CIFTI-2 file"):
        cifti.open_dtseries(bad)


def test_axis_without_a_visual_area_is_rejected(tmp_path, atlas):
    sub = tmp_path / "s1"
    write_run(run_path(sub, "rfMRI_REST1_LR"), visual_vertices(atlas, drop_area="V4"), 8)
    with pytest.raises(InputDataError, match=r"rfMRI_REST1_LR_Atlas.*does not cover V4"):
        preprocess_hcp_subject(sub, tmp_path / "o.npz", HcpPreprocessConfig(runs=["rfMRI_REST1_LR"]))
    # asking only for the areas it has works
    cfg = HcpPreprocessConfig(runs=["rfMRI_REST1_LR"], areas=["V1", "V2"])
    summary = preprocess_hcp_subject(sub, tmp_path / "o.npz", cfg)
    assert summary["voxels"] == {"V1": 1618, "V2": 1220}


def test_runs_with_different_layouts_are_rejected(tmp_path, atlas):
    sub = tmp_path / "s1"
    verts = visual_vertices(atlas, extra=0)
    write_run(run_path(sub, "rfMRI_REST1_LR"), verts, 8)
    fewer = {s: v[1:] for s, v in verts.items()}
    write_run(run_path(sub, "rfMRI_REST1_RL"), fewer, 8)
    with pytest.raises(InputDataError, match="V1 is only partly in the file"):  # run 2 lacks a V1 vertex
        preprocess_hcp_subject(sub, tmp_path / "o.npz", HcpPreprocessConfig())
    with pytest.raises(InputDataError, match="share one layout"):  # accepted as partial, still not run 1's
        preprocess_hcp_subject(sub, tmp_path / "o.npz", HcpPreprocessConfig(allow_partial_areas=True))


def test_cli_ok_and_bad_input(tmp_path, atlas, capsys):
    sub = tmp_path / "raw" / "hcp" / "sim01"
    write_run(run_path(sub, "rfMRI_REST1_LR"), visual_vertices(atlas, extra=0), 10)
    out = tmp_path / "HCP" / "npz" / "sim01" / "HCP_visual_voxel.npz"
    code = main(["preprocess-hcp", "--subject-dir", str(sub), "--out", str(out), "--no-tracking",
                 "--config", "{runs: [rfMRI_REST1_LR]}"])
    assert code == 0 and np.load(out)["V3"].shape == (10, 684)
    code = main(["preprocess-hcp", "--subject-dir", str(sub), "--out", str(tmp_path / "x.npz"), "--no-tracking"])
    assert code == 2
    err = capsys.readouterr().err
    assert "rfMRI_REST1_RL_Atlas_MSMAll_hp2000_clean.dtseries.nii: file not found" in err
    assert "Traceback" not in err


def test_config_errors_are_reported(tmp_path, atlas, capsys):
    write_run(run_path(tmp_path, "rfMRI_REST1_LR"), visual_vertices(atlas, extra=0), 6)
    args = ["preprocess-hcp", "--subject-dir", str(tmp_path), "--out", str(tmp_path / "o.npz"), "--no-tracking",
            "--set", "runs=[rfMRI_REST1_LR]"]
    assert main([*args, "--set", "input=nifti"]) == 2
    assert "input must be one of ('cifti', 'volume')" in capsys.readouterr().err
    assert main([*args, "--set", "areas=[V1,V1]"]) == 2
    assert "without repeats" in capsys.readouterr().err
    assert main([*args, "--set", "no_such_key=1"]) == 2  # unknown keys are errors, not ignored
    assert "no_such_key" in capsys.readouterr().err
    assert main([*args, "--set", "areas=[V1,V99]"]) == 2
    assert "no area named 'V99'" in capsys.readouterr().err
    assert not (tmp_path / "o.npz").exists()
