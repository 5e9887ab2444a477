"""Stage A1 samples from HCP npz files: block averaging within runs (joining subjects: test_stage_a1_rows.py)."""

from __future__ import annotations

import numpy as np
import pytest

from mindvis.data.hcp import DEFAULT_WINDOW, block_average, load_hcp_voxels
from mindvis.data.stage_a1 import hcp_source
from mindvis.utils.errors import InputDataError


def write_npz(path, frames: int, sizes=(3, 2, 2, 1), run_lengths=None, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {a: rng.standard_normal((frames, n)).astype(np.float32) for a, n in zip(("V1", "V2", "V3", "V4"), sizes)}
    if run_lengths is not None:
        arrays["run_lengths"] = np.asarray(run_lengths, dtype=np.int64)
    np.savez(path, **arrays)
    return np.concatenate([arrays[a] for a in ("V1", "V2", "V3", "V4")], axis=1)


def test_block_average_hand_case():
    x = np.arange(9, dtype=np.float32)[:, None] * np.array([[1.0, 10.0]], dtype=np.float32)
    # runs of 5 and 4 frames, window 2: blocks (0,1) (2,3) | (5,6) (7,8); frame 4 is a remainder
    got = block_average(x, 2, [5, 4])
    np.testing.assert_array_equal(got, [[0.5, 5.0], [2.5, 25.0], [5.5, 55.0], [7.5, 75.0]])
    # one run: frames 0..7 in blocks of 4, frame 8 dropped
    np.testing.assert_array_equal(block_average(x, 4), [[1.5, 15.0], [5.5, 55.0]])
    with pytest.raises(ValueError):
        block_average(x, 0)


def test_default_window_gives_reference_sample_count(tmp_path):
    assert DEFAULT_WINDOW == 10
    full = write_npz(tmp_path / "a.npz", 2400, run_lengths=[1200, 1200])
    m = hcp_source(tmp_path / "a.npz", DEFAULT_WINDOW).rows
    assert m.shape == (240, 8) and m.dtype == np.float32  # 120 samples per 1200-frame run
    np.testing.assert_allclose(m[7], full[70:80].mean(axis=0, dtype=np.float64), atol=1e-6)
    np.testing.assert_allclose(m[120], full[1200:1210].mean(axis=0, dtype=np.float64), atol=1e-6)


def test_nan_from_reference_files_becomes_zero(tmp_path):
    path = tmp_path / "ref.npz"
    arrays = {a: np.ones((4, 2), np.float32) for a in ("V1", "V2", "V3", "V4")}
    arrays["V2"][:, 1] = np.nan  # the reference leaves NaN where a grayordinate's std is 0
    np.savez(path, **arrays)
    voxels, lengths = load_hcp_voxels(path)
    assert np.isfinite(voxels).all() and (voxels[:, 3] == 0).all()
    np.testing.assert_array_equal(lengths, [4])


def test_bad_files(tmp_path):
    np.savez(tmp_path / "nov4.npz", V1=np.zeros((4, 2)), V2=np.zeros((4, 2)), V3=np.zeros((4, 2)))
    with pytest.raises(InputDataError, match=r"nov4\.npz: missing keys \['V4'\]"):
        hcp_source(tmp_path / "nov4.npz", 10)
    write_npz(tmp_path / "rl.npz", 10, run_lengths=[4, 4])
    with pytest.raises(InputDataError, match="do not add up"):
        hcp_source(tmp_path / "rl.npz", 10)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(InputDataError, match=r"junk\.npz: cannot read npz"):
        hcp_source(tmp_path / "junk.npz", 10)
    write_npz(tmp_path / "short.npz", 5)
    with pytest.raises(InputDataError, match="no samples"):
        hcp_source(tmp_path / "short.npz", 10)
