"""Atomic writes, MinD-Vis padding/normalisation conventions, BData I/O basics."""

from __future__ import annotations

import numpy as np
import pytest

from mindvis.data.conventions import ScalarNorm, join_subjects, pad_to_length, wrap_pad, wrap_pad_amount
from mindvis.io.bdata import read_bdata, write_bdata
from mindvis.utils.atomic import atomic_path, save_npz
from mindvis.utils.errors import InputDataError


def test_atomic_path_leaves_nothing_when_the_writer_fails(tmp_path):
    target = tmp_path / "out.npz"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_save_npz_keeps_final_name_and_content(tmp_path):
    save_npz(tmp_path / "a.npz", x=np.arange(4))
    assert [p.name for p in tmp_path.iterdir()] == ["a.npz"]
    assert np.load(tmp_path / "a.npz")["x"].tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("n, extra", [(1, 15), (15, 1), (16, 16), (17, 15), (4183, 9), (1685, 11)])
def test_wrap_pad_amount_is_never_zero(n, extra):
    assert wrap_pad_amount(n) == extra


def test_wrap_pad_wraps_from_the_start():
    x = np.arange(20).reshape(1, 20)
    padded = wrap_pad(x)
    assert padded.shape == (1, 32)
    assert padded[0, 20:].tolist() == list(range(12))


def test_scalar_norm_uses_training_statistics_only():
    train = np.array([[0.0, 2.0], [4.0, 6.0]])
    norm = ScalarNorm.fit(train)
    assert norm.mean == 3.0 and norm.std == pytest.approx(np.sqrt(5.0))
    test = norm.apply(np.array([[3.0, 3.0 + np.sqrt(5.0)]]))
    np.testing.assert_allclose(test, [[0.0, 1.0]], atol=1e-6)


def test_join_subjects_pads_each_to_the_longest():
    a = np.ones((2, 3))
    b = np.arange(5, dtype=float).reshape(1, 5)
    joined = join_subjects([a, b])
    assert joined.shape == (3, 5)
    assert joined[0].tolist() == [1, 1, 1, 1, 1]
    assert pad_to_length(b, 3).tolist() == [[0, 1, 2]]


def test_bdata_roundtrip_and_label_columns(tmp_path):
    data = np.array([[1.0, 2.0, 1.0], [3.0, 4.0, 2.0]])
    values = np.array([[1, 1, np.nan], [np.nan, np.nan, 1], [1, 0, np.nan]])
    write_bdata(tmp_path / "s.h5", data, ["VoxelData", "DataType", "ROI_V1"], ["voxels", "type", "V1"], values)
    bd = read_bdata(tmp_path / "s.h5")
    assert bd.select("VoxelData").tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert bd.label("DataType").tolist() == [1.0, 2.0]
    assert bd.columns_flagged("ROI_V1").tolist() == [0]
    with pytest.raises(InputDataError, match="no key 'ROI_V9'"):
        bd.metadata("ROI_V9")
