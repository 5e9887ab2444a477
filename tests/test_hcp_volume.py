"""4-D NIfTI streaming/masking and the volumetric route of preprocess-hcp (values, grids, bad inputs)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from mindvis.io import volume
from mindvis.preprocess.hcp import HcpPreprocessConfig, preprocess_hcp_subject
from mindvis.utils.errors import InputDataError

GRID = (7, 6, 5)
AFFINE = np.array([[-2.0, 0, 0, 6], [0, 2.0, 0, -5], [0, 0, 2.0, -4], [0, 0, 0, 1]])
LABEL_IDS = {"V1": [1, 181], "V2": [4, 184], "V3": [5, 185], "V4": [6, 186]}


def random_run(n_frames: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (1e4 + 100 * rng.standard_normal((n_frames, *GRID))).astype(np.float32)


def label_grid() -> np.ndarray:
    """Two voxels of each hemisphere label per area, plus background and an unrelated label."""
    flat = np.zeros(int(np.prod(GRID)), dtype=np.int16)  # indexed in Fortran (NIfTI) order
    ids = [i for pair in LABEL_IDS.values() for i in pair]
    for k, lab in enumerate(ids):
        flat[[3 * k + 1, 3 * k + 2]] = lab
    flat[-1] = 50  # another area, must be ignored
    return flat.reshape(GRID, order="F")


def zscore_ref(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    sd = x.std(axis=0)
    return np.where(sd > 0, (x - x.mean(0)) / np.where(sd > 0, sd, 1), 0.0)


def make_subject(root, runs: dict[str, np.ndarray], labels=None, label_affine=AFFINE, suffix=".nii.gz"):
    for run, data in runs.items():
        volume.write_volume_run(root / f"{run}{suffix}", data, (*GRID, data.shape[0]), affine=AFFINE, tr=0.72)
    volume.write_label_image(root / "labels.nii.gz", label_grid() if labels is None else labels, label_affine)
    return root


def cfg_for(runs, suffix=".nii.gz", **kw) -> HcpPreprocessConfig:
    return HcpPreprocessConfig(
        runs=list(runs), input="volume", volume_template="{run}" + suffix, roi_image="labels.nii.gz", **kw
    )


# ----------------------------------------------------------------------------- I/O


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_write_header_and_streamed_extraction(tmp_path, suffix):
    data = random_run(13)
    path = tmp_path / f"run{suffix}"
    volume.write_volume_run(path, (data[t : t + 4] for t in range(0, 13, 4)), (*GRID, 13), affine=AFFINE, tr=0.72)
    img = nib.load(path)
    assert img.shape == (*GRID, 13)
    np.testing.assert_allclose(img.affine, AFFINE)
    hdr = img.header
    assert int(hdr["qform_code"]) == 4 and int(hdr["sform_code"]) == 4
    assert hdr.get_xyzt_units() == ("mm", "sec")
    assert hdr["pixdim"][4] == pytest.approx(0.72)
    full = img.get_fdata()  # reference: nibabel's own full read
    np.testing.assert_array_equal(np.moveaxis(full, 3, 0), data)
    run = volume.open_volume_run(path)
    assert run.tr == pytest.approx(0.72) and run.compressed == suffix.endswith(".gz")
    mask = np.zeros(GRID, dtype=bool)
    mask[[0, 3, 6], [1, 5, 2], [4, 0, 2]] = True
    mask[2, :, 3] = True
    idx = volume.fortran_indices(mask)
    np.testing.assert_array_equal(idx, np.sort(np.ravel_multi_index(np.nonzero(mask), GRID, order="F")))
    calls = []
    got = volume.extract_voxels(run, idx, chunk_frames=5, progress=calls.append)  # 5 does not divide 13
    assert calls == [5, 5, 3] and got.dtype == np.float32
    i, j, k = np.unravel_index(idx, GRID, order="F")
    np.testing.assert_array_equal(got, data[:, i, j, k])


def test_mni_defaults_of_the_writer(tmp_path):
    path = volume.write_volume_run(
        tmp_path / "r.nii.gz", np.zeros((2, *volume.MNI_2MM_SHAPE), np.float32), (*volume.MNI_2MM_SHAPE, 2)
    )
    img = nib.load(path)
    np.testing.assert_array_equal(img.affine, volume.MNI_2MM_AFFINE)
    assert img.header["pixdim"][4] == pytest.approx(0.72) and img.header.get_data_dtype() == np.float32


def test_scaled_int16_data_are_rescaled(tmp_path):
    raw = np.arange(np.prod(GRID) * 3, dtype=np.int16).reshape(*GRID, 3)
    img = nib.Nifti1Image(raw, AFFINE)
    img.header.set_slope_inter(0.5, 100.0)
    path = tmp_path / "s.nii"
    nib.save(img, path)
    run = volume.open_volume_run(path)
    idx = np.array([0, 17, 100, 209])
    got = volume.extract_voxels(run, idx)
    expected = nib.load(path).get_fdata().reshape(-1, 3, order="F")[idx].T
    np.testing.assert_allclose(got, expected)


# ----------------------------------------------------------------------------- preprocessing


def test_volume_route_values_and_run_order(tmp_path):
    runs = {"rest1": random_run(9, seed=1), "rest2": random_run(6, seed=2)}
    runs["rest1"][:, 0, 0, 0] = 7.0  # label-free voxel: constant, ignored
    make_subject(tmp_path, runs)
    out = tmp_path / "o.npz"
    summary = preprocess_hcp_subject(tmp_path, out, cfg_for(runs))
    got = np.load(out)
    assert summary["voxels"] == {"V1": 4, "V2": 4, "V3": 4, "V4": 4}
    np.testing.assert_array_equal(got["run_lengths"], [9, 6])
    labels = label_grid().reshape(-1, order="F")
    for area, ids in LABEL_IDS.items():
        idx = np.flatnonzero(np.isin(labels, ids))  # Fortran order, ascending
        parts = [zscore_ref(r.transpose(0, 3, 2, 1).reshape(r.shape[0], -1)[:, idx]) for r in runs.values()]
        np.testing.assert_allclose(got[area], np.concatenate(parts), atol=2e-5)


def test_label_table_gives_ids_by_name(tmp_path):
    runs = {"rest1": random_run(8)}
    make_subject(tmp_path, runs)
    (tmp_path / "table.txt").write_text("# id name\n1 L_V1\n181 R_V1\n4 L_V2\n184 R_V2\n5 L_V3\n185 R_V3\n6 L_V4\n")
    summary = preprocess_hcp_subject(tmp_path, tmp_path / "o.npz", cfg_for(runs, roi_label_table="table.txt"))
    assert summary["voxels"] == {"V1": 4, "V2": 4, "V3": 4, "V4": 2}  # R_V4 not in the table


def test_mask_on_another_grid_errors_or_resamples(tmp_path):
    runs = {"rest1": random_run(8)}
    same = tmp_path / "same"
    same.mkdir()
    make_subject(same, runs)
    preprocess_hcp_subject(same, same / "o.npz", cfg_for(runs))
    # the same labels on a larger grid shifted by one voxel along x: label voxel i+1 is data voxel i
    shifted_affine = AFFINE.copy()
    shifted_affine[0, 3] += 2.0
    shifted_labels = np.zeros((GRID[0] + 2, *GRID[1:]), dtype=np.int16)
    shifted_labels[1 : GRID[0] + 1] = label_grid()
    other = tmp_path / "other"
    other.mkdir()
    make_subject(other, runs, labels=shifted_labels, label_affine=shifted_affine)
    with pytest.raises(InputDataError, match=r"labels\.nii\.gz: ROI label image grid .* differs from .*rest1\.nii\.gz"):
        preprocess_hcp_subject(other, other / "o.npz", cfg_for(runs))
    assert not (other / "o.npz").exists()
    preprocess_hcp_subject(other, other / "o.npz", cfg_for(runs, resample_mask=True))
    a, b = np.load(same / "o.npz"), np.load(other / "o.npz")
    for area in LABEL_IDS:
        np.testing.assert_array_equal(a[area], b[area])  # resampled labels hit the same voxels


def test_empty_roi_is_rejected(tmp_path):
    runs = {"rest1": random_run(8)}
    labels = label_grid()
    labels[np.isin(labels, LABEL_IDS["V3"])] = 0
    make_subject(tmp_path, runs, labels=labels)
    with pytest.raises(InputDataError, match=r"labels\.nii\.gz: ROI V3 \(label ids \[5, 185\]\) has no voxels"):
        preprocess_hcp_subject(tmp_path, tmp_path / "o.npz", cfg_for(runs))
    assert not (tmp_path / "o.npz").exists()


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_truncated_volume_is_rejected_and_nothing_is_written(tmp_path, suffix):
    runs = {"rest1": random_run(10, 1), "rest2": random_run(10, 2)}
    make_subject(tmp_path, runs, suffix=suffix)
    bad = tmp_path / f"rest2{suffix}"
    raw = bad.read_bytes()
    bad.write_bytes(raw[: len(raw) * 2 // 3])
    out = tmp_path / "o.npz"
    problem = "data could not be read" if suffix == ".nii.gz" else "file is truncated"
    with pytest.raises(InputDataError, match=rf"rest2{suffix.replace('.', '[.]')}: {problem}") as exc:
        preprocess_hcp_subject(tmp_path, out, cfg_for(runs, suffix=suffix))
    assert exc.value.path == bad
    assert not out.exists() and not list(tmp_path.glob(".o.npz*"))


@pytest.mark.parametrize("backend", ["zlib", "isal"])
def test_gzip_stream_members_padding_and_truncation(tmp_path, monkeypatch, backend):
    import gzip
    import zlib

    if backend == "isal":
        pytest.importorskip("isal")
    else:
        monkeypatch.setattr(volume, "_inflate_module", lambda: zlib)
    rng = np.random.default_rng(0)
    part1, part2 = rng.bytes(300_000), bytes(200_000) + rng.bytes(1000)
    path = tmp_path / "multi.gz"
    # two concatenated members and zero padding after the last, as gzip tools may write
    path.write_bytes(gzip.compress(part1, 1) + gzip.compress(part2, 6) + bytes(64))
    monkeypatch.setattr(volume.GzipStream, "INPUT_BLOCK", 4096)  # many small input blocks
    out = bytearray(len(part1) + len(part2))
    with volume.GzipStream(path) as fh:
        volume._read_exactly(fh, memoryview(out)[:1234])  # odd split points across members
        volume._read_exactly(fh, memoryview(out)[1234:])
        assert fh.readinto(bytearray(10)) == 0  # clean end
    assert bytes(out) == part1 + part2
    path.write_bytes(gzip.compress(part1, 1)[:-5000])
    with volume.GzipStream(path) as fh, pytest.raises(EOFError):
        volume._read_exactly(fh, memoryview(bytearray(len(part1))))
