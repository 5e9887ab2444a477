"""The stage A1 matrix equals the reference's construction (docs/reference.md §4).

Every expected matrix is derived here with plain numpy, following the reference's
steps (`hcp_dataset`, `process_voxel_ts`, `create_Kamitani_dataset`, `pad_to_length`
of zjc062/mind-vis `code/dataset.py`) as written in docs/reference.md §4:
  HCP subject: V1..V4 joined -> np.array_split into frames // 10 blocks, block means
               -> wrap-pad by 16 - V % 16 -> (x - x.mean()) / x.std() over the whole matrix;
               subjects' rows concatenated (the reference needs equal padded lengths);
  GOD subject: arr_0[:, VC] -> wrap-pad -> the same scalar z-score; each subject
               wrap-padded to the longest GOD length, rows concatenated;
  joint:       both blocks wrap-padded to the longer of the two, HCP rows first.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mindvis.cli.main import main
from mindvis.data import stage_a1_rows
from mindvis.utils.errors import ConfigError, InputDataError

AREAS = ("V1", "V2", "V3", "V4")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ----------------------------------------------------------------------------- files
def write_hcp(path, area_voxels, frames=200, seed=0, run_lengths=None):
    """An HCP_visual_voxel.npz; without run_lengths, like the reference's own files."""
    rng = np.random.default_rng(seed)
    extra = {} if run_lengths is None else {"run_lengths": np.asarray(run_lengths)}
    areas = {a: (rng.normal(0.3, 1.5, (frames, v)) + rng.normal(0, 0.5, v)).astype(np.float32)
             for a, v in zip(AREAS, area_voxels)}
    np.savez(path, **areas, **extra)


def write_god(path, vc_voxels, other_voxels=0, n_train=24, seed=0):
    """A GOD sbj_N.npz. other_voxels > 0: a released-style file, all voxels plus a VC mask."""
    rng = np.random.default_rng(seed)
    total = vc_voxels + other_voxels
    vc = np.zeros(total, dtype=bool)
    vc[np.sort(rng.choice(total, vc_voxels, replace=False))] = True
    scale = rng.uniform(0.5, 4.0, total)

    def rows(n):
        return (rng.normal(2.0, 1.0, (n, total)) * scale).astype(np.float32)

    np.savez(path, arr_0=rows(n_train), arr_1=rows(10), arr_2=rows(5), arr_3=np.arange(n_train) % 7,
             VC=vc, V1=vc & (np.arange(total) % 3 == 0))
    return vc


# ----------------------------------------------------------------------------- the reference, by hand
def ref_pad_to_patch(x, p=16):
    return np.pad(x, ((0, 0), (0, p - x.shape[1] % p)), mode="wrap")


def ref_normalize(x):
    return (x - np.mean(x)) / np.std(x)


def ref_hcp_subject(path, window=10):
    npz = np.load(path)
    v = np.concatenate([npz[a] for a in AREAS], axis=-1).astype(np.float64)
    blocks = np.array_split(v, len(v) // window, axis=0)
    v = np.concatenate([b.mean(axis=0).reshape(1, -1) for b in blocks], axis=0)
    return ref_normalize(ref_pad_to_patch(v))


def ref_hcp(paths):
    return np.concatenate([ref_hcp_subject(p) for p in paths], axis=0)  # fails on unequal padded lengths


def ref_god_train(paths):
    subjects = []
    for path in paths:
        npz = np.load(path)
        tr = npz["arr_0"][..., npz["VC"]].astype(np.float64)
        subjects.append(ref_normalize(ref_pad_to_patch(tr)))
    len_max = max(s.shape[-1] for s in subjects)
    return np.concatenate([np.pad(s, ((0, 0), (0, len_max - s.shape[-1])), mode="wrap") for s in subjects])


def ref_join(hcp, god):
    length = max(hcp.shape[-1], god.shape[-1])
    return np.concatenate([np.pad(m, ((0, 0), (0, length - m.shape[-1])), mode="wrap") for m in (hcp, god)])


# ----------------------------------------------------------------------------- reference mode
def test_one_hcp_subject_is_the_reference(tmp_path):
    write_hcp(tmp_path / "a.npz", (20, 18, 14, 12))  # 64 voxels: a full extra patch of wrap padding
    data = stage_a1_rows([tmp_path / "a.npz"], normalisation="reference")
    expected = ref_hcp([tmp_path / "a.npz"])
    assert data.matrix.dtype == np.float32 and data.matrix.shape == (20, 80)
    np.testing.assert_allclose(data.matrix, expected, atol=2e-5)
    assert not data.holdout.any()


def test_two_hcp_subjects_of_different_voxel_counts_pad_then_wrap(tmp_path):
    write_hcp(tmp_path / "a.npz", (300, 250, 170, 150), seed=1)  # 870 voxels
    write_hcp(tmp_path / "b.npz", (300, 250, 175, 150), seed=2, run_lengths=[100, 100])  # 875
    paths = [tmp_path / "a.npz", tmp_path / "b.npz"]
    data = stage_a1_rows(paths, normalisation="reference")
    expected = ref_hcp(paths)
    assert data.matrix.shape == expected.shape == (40, 880)
    np.testing.assert_allclose(data.matrix, expected, atol=2e-5)
    # per-subject z-scoring: each subject's block has mean 0 and std 1 on its own
    for rows in (data.matrix[:20], data.matrix[20:]):
        assert abs(rows.mean()) < 1e-5 and rows.std() == pytest.approx(1.0, abs=1e-5)


def test_hcp_plus_five_released_style_god_subjects(tmp_path):
    hcp = [tmp_path / "hcp_a.npz", tmp_path / "hcp_b.npz"]
    write_hcp(hcp[0], (300, 250, 170, 150), seed=1)  # 870 -> 880
    write_hcp(hcp[1], (300, 250, 175, 150), seed=2)  # 875 -> 880
    god = [tmp_path / f"sbj_{i + 1}.npz" for i in range(5)]
    for i, (path, vc) in enumerate(zip(god, (733, 651, 905, 700, 690))):  # 905 -> 912 is wider than HCP
        write_god(path, vc, other_voxels=150 + 10 * i, seed=10 + i)
    data = stage_a1_rows(hcp, god, normalisation="reference")
    expected = ref_join(ref_hcp(hcp), ref_god_train(god))
    assert data.matrix.shape == expected.shape == (40 + 5 * 24, 912)
    np.testing.assert_allclose(data.matrix, expected, atol=2e-5)
    s = data.summary()
    assert s["hcp_rows"] == 40 and s["god_rows"] == 120 and s["god_voxels"] == 905
    assert [x["raw_voxels"] for x in s["subjects"]] == [870, 875, 733, 651, 905, 700, 690]

    # every position holds the ROI voxel the reference's padding chain puts there
    def ref_positions(raw, group):
        ids = ref_pad_to_patch(np.arange(raw, dtype=np.float64)[None])
        ids = np.pad(ids, ((0, 0), (0, group - ids.shape[1])), mode="wrap")
        return np.pad(ids, ((0, 0), (0, 912 - group)), mode="wrap")[0].astype(np.int64)

    sources = data.voxel_sources(np.arange(data.matrix.shape[0]))
    np.testing.assert_array_equal(sources[0], ref_positions(870, 880))
    np.testing.assert_array_equal(sources[40 + 24], ref_positions(651, 912))  # GOD subject 2: 656 -> 912


def test_roi_selection_is_the_same_for_released_and_vc_only_files(tmp_path):
    write_hcp(tmp_path / "h.npz", (20, 18, 14, 12))
    vc = write_god(tmp_path / "all.npz", 100, other_voxels=60, seed=5)
    full = np.load(tmp_path / "all.npz")
    cut = {k: full[k][..., vc] for k in ("arr_0", "arr_1", "arr_2")}
    np.savez(tmp_path / "vc_mask.npz", **cut, arr_3=full["arr_3"], VC=np.ones(100, dtype=bool))  # ours
    np.savez(tmp_path / "no_mask.npz", **cut, arr_3=full["arr_3"])  # VC-only, no masks
    built = [stage_a1_rows([tmp_path / "h.npz"], [tmp_path / name], normalisation="reference").matrix
             for name in ("all.npz", "vc_mask.npz", "no_mask.npz")]
    assert built[0].shape == (20 + 24, 112)  # 100 VC voxels -> 112, not 160 -> 176
    for other in built[1:]:
        np.testing.assert_array_equal(built[0], other)
    # another roi: the HCP key and the GOD mask of that name
    v1 = stage_a1_rows([tmp_path / "h.npz"], [tmp_path / "all.npz"], roi="V1", normalisation="reference")
    hcp_v1 = ref_normalize(ref_pad_to_patch(np.load(tmp_path / "h.npz")["V1"].reshape(20, 10, 20).mean(1)))
    god_v1 = ref_normalize(ref_pad_to_patch(full["arr_0"][:, full["V1"]].astype(np.float64)))
    np.testing.assert_allclose(v1.matrix, ref_join(hcp_v1, god_v1), atol=2e-5)


def test_reference_statistics_include_held_out_rows(tmp_path):
    write_hcp(tmp_path / "h.npz", (20, 18, 14, 12))
    write_god(tmp_path / "g.npz", 90, other_voxels=20, seed=4)
    whole = stage_a1_rows([tmp_path / "h.npz"], [tmp_path / "g.npz"], normalisation="reference")
    split = stage_a1_rows([tmp_path / "h.npz"], [tmp_path / "g.npz"], normalisation="reference",
                          holdout_fraction=0.25, seed=3)
    np.testing.assert_array_equal(whole.matrix, split.matrix)
    assert split.holdout.sum() == 11  # round(44 * 0.25)


# ----------------------------------------------------------------------------- clean mode
def test_clean_statistics_come_from_each_subjects_training_rows(tmp_path):
    write_hcp(tmp_path / "h.npz", (20, 18, 14, 12))
    write_god(tmp_path / "g.npz", 90, other_voxels=20, seed=4)
    data = stage_a1_rows([tmp_path / "h.npz"], [tmp_path / "g.npz"], normalisation="clean",
                         holdout_fraction=0.25, seed=3)
    hold = data.holdout
    assert hold.sum() == 11 and data.holdout_rows().shape == (11, 96) and data.train_rows().shape == (33, 96)
    # by hand: pad each subject, statistics from its rows that are not held out, then the joint wrap
    npz = np.load(tmp_path / "h.npz")
    hcp = np.concatenate([npz[a] for a in AREAS], axis=1).astype(np.float64).reshape(20, 10, 64).mean(1)
    g = np.load(tmp_path / "g.npz")
    god = g["arr_0"][:, g["VC"]].astype(np.float64)
    parts = []
    for rows, held in ((hcp, hold[:20]), (god, hold[20:])):
        padded = ref_pad_to_patch(rows)
        train = padded[~held]
        parts.append((padded - train.mean()) / train.std())
    np.testing.assert_allclose(data.matrix, ref_join(*parts), atol=2e-5)
    # the held-out rows never feed the statistics: change them and the training rows stay put
    g_arr0 = g["arr_0"].copy()
    g_arr0[hold[20:]] *= 100.0
    np.savez(tmp_path / "g2.npz", **{k: g[k] for k in g.files if k != "arr_0"}, arr_0=g_arr0)
    again = stage_a1_rows([tmp_path / "h.npz"], [tmp_path / "g2.npz"], normalisation="clean",
                          holdout_fraction=0.25, seed=3)
    np.testing.assert_array_equal(again.holdout, hold)
    np.testing.assert_array_equal(again.train_rows(), data.train_rows())
    ref_again = stage_a1_rows([tmp_path / "h.npz"], [tmp_path / "g2.npz"], normalisation="reference",
                              holdout_fraction=0.25, seed=3)
    god_train = ~hold[20:]  # "reference" lets them in: its GOD training rows move
    assert not np.allclose(ref_again.matrix[20:][god_train], data.matrix[20:][god_train], atol=1e-3)


def test_bad_settings_and_files_are_named_errors(tmp_path):
    write_hcp(tmp_path / "h.npz", (20, 18, 14, 12))
    np.savez(tmp_path / "v4only.npz", arr_0=np.ones((4, 8)), arr_1=np.ones((4, 8)), arr_2=np.ones((2, 8)),
             arr_3=np.arange(4), V4=np.ones(8, dtype=bool))
    with pytest.raises(ConfigError, match="normalisation"):
        stage_a1_rows([tmp_path / "h.npz"], normalisation="global")
    with pytest.raises(InputDataError, match="no ROI mask 'VC'"):
        stage_a1_rows([tmp_path / "h.npz"], [tmp_path / "v4only.npz"])
    with pytest.raises(InputDataError, match="missing keys"):
        stage_a1_rows([tmp_path / "h.npz"], roi="LOC")


# ----------------------------------------------------------------------------- A1 on a released-style file
def test_pretrain_on_released_style_god_file_uses_its_vc_voxels(tmp_path):
    write_hcp(tmp_path / "hcp.npz", (20, 18, 14, 12), frames=120, run_lengths=[60, 60])  # 64 voxels, 30 rows
    write_god(tmp_path / "sbj_1.npz", 150, other_voxels=250, n_train=40, seed=7)  # 400 voxels, 150 VC
    out = tmp_path / "a1" / "fmri_encoder.pth"
    cfg = {"epochs": 1, "batch_size": 8, "window": 4, "checkpoint_every_steps": 0, "device": "cpu",
           "normalisation": "reference"}
    code = main(["pretrain-mbm", "--hcp", str(tmp_path / "hcp.npz"), "--god", str(tmp_path / "sbj_1.npz"),
                 "--out", str(out), "--config", json.dumps(cfg), "--no-tracking"])
    assert code == 0
    ckpt = torch.load(out, weights_only=True)
    info = ckpt["config"]["mindvis"]
    # VC: 150 -> 160 voxels, 10 tokens (all 400 voxels would give 416 and 26)
    assert ckpt["config"]["num_voxels"] == 160 and ckpt["model"]["pos_embed"].shape[1] == 10 + 1
    assert info["god_voxels"] == 150 and info["hcp_voxels"] == 64 and info["joined_voxels"] == 160
    assert info["normalisation"] == "reference" and info["roi"] == "VC" and info["rows"] == 70
    assert info["n_holdout"] == 7  # the default holdout_fraction 0.1
    god_rows = np.load(tmp_path / "sbj_1.npz")
    padded = ref_pad_to_patch(god_rows["arr_0"][:, god_rows["VC"]].astype(np.float64))
    assert info["subjects"][1]["mean"] == pytest.approx(padded.mean()) and \
        info["subjects"][1]["std"] == pytest.approx(padded.std())
