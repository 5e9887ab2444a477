"""`pretrain-mbm` (A1: HCP + GOD) then `finetune-mbm` (A2: both protocols, both token policies)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mindvis.checkpoints import load_mbm_checkpoint
from mindvis.cli.main import main
from mindvis.data.conventions import ScalarNorm, wrap_pad
from mindvis.training.stage_a2 import FinetuneConfig, SubjectRows, finetune_from_rows

A1 = json.dumps({"epochs": 2, "batch_size": 8, "window": 4, "checkpoint_every_steps": 0, "device": "cpu"})
A2 = {"epochs": 2, "batch_size": 8, "checkpoint_every_steps": 0, "device": "cpu"}


# one intra-op thread: OpenMP threads spinning for a busy core make runs erratic on shared machines
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def write_hcp(path, frames, voxels=(20, 18, 14, 12), seed=0):
    """An HCP_visual_voxel.npz: V1..V4 (frames, voxels) and two runs."""
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((frames, 3))
    areas = {f"V{i + 1}": (latent @ rng.standard_normal((3, v))).astype(np.float32) for i, v in enumerate(voxels)}
    np.savez(path, run_lengths=np.array([frames // 2, frames - frames // 2]), **areas)


def write_god(path, n_train=60, n_test=10, voxels=90, seed=3):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((4, voxels))
    np.savez(path, arr_0=(rng.standard_normal((n_train, 4)) @ w).astype(np.float32),
             arr_1=(rng.standard_normal((2 * n_test, 4)) @ w).astype(np.float32),
             arr_2=(rng.standard_normal((n_test, 4)) @ w + 50.0).astype(np.float32),  # visibly different rows
             arr_3=np.arange(n_train) % 5, V1=np.arange(voxels) < 30,
             VC=np.ones(voxels, dtype=bool))  # like preprocess-god's VC-only files


@pytest.fixture(scope="module")
def stage_a1(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    write_hcp(tmp / "hcp1.npz", 120, seed=1)  # 64 voxels, 30 samples with window 4
    write_god(tmp / "sbj_3.npz")
    out = tmp / "a1" / "fmri_encoder.pth"
    code = main(["pretrain-mbm", "--hcp", str(tmp / "hcp1.npz"), "--god", str(tmp / "sbj_3.npz"),
                 "--out", str(out), "--config", A1, "--no-tracking"])
    assert code == 0
    return tmp, out


def test_pretrain_joins_hcp_and_god_and_writes_reference_layout(stage_a1):
    tmp, out = stage_a1
    ckpt = torch.load(out, weights_only=True)
    cfg = ckpt["config"]
    # HCP: 64 voxels, 2 runs of 60 frames / window 4 = 30 rows; GOD: 60 rows of 90 voxels -> joined at 90
    assert cfg["mindvis"]["hcp_rows"] == 30 and cfg["mindvis"]["god_rows"] == 60 and cfg["mindvis"]["rows"] == 90
    assert cfg["mindvis"]["raw_voxels"] == 90 and cfg["num_voxels"] == 96  # 90 + (16 - 90 % 16)
    assert ckpt["model"]["pos_embed"].shape == (1, 7, 64)
    assert {"model", "optimizer", "epoch", "scaler", "config"} == set(ckpt)
    assert cfg["embed_dim"] == 64 and cfg["num_heads"] == 4 and cfg["patch_size"] == 16


def test_finetune_clean_and_reference_protocols(stage_a1):
    tmp, a1 = stage_a1
    outs = {}
    for protocol in ("clean", "reference"):
        outs[protocol] = tmp / protocol / "fmri_encoder.pth"
        code = main(["finetune-mbm", "--pretrained", str(a1), "--npz", str(tmp / "sbj_3.npz"), "--dataset", "god",
                     "--out", str(outs[protocol]), "--config", json.dumps(dict(A2, protocol=protocol)),
                     "--no-tracking"])
        assert code == 0
    clean = torch.load(outs["clean"], weights_only=True)["config"]["mindvis"]
    ref = torch.load(outs["reference"], weights_only=True)["config"]["mindvis"]
    assert clean["protocol"] == "clean" and clean["test_set_exposed"] is False
    assert ref["protocol"] == "reference" and ref["test_set_exposed"] is True
    # both normalise with the subject's TRAINING fMRI statistics (after wrap padding)
    train = np.load(tmp / "sbj_3.npz")["arr_0"]
    expected = ScalarNorm.fit(wrap_pad(train))
    assert clean["norm_mean"] == pytest.approx(expected.mean) and ref["norm_std"] == pytest.approx(expected.std)
    loaded = load_mbm_checkpoint(outs["clean"])
    assert loaded.n_tokens == 6 and loaded.config["mindvis"]["stage"] == "A2"


def test_finetune_token_policies(stage_a1, tmp_path):
    _, a1 = stage_a1
    rng = np.random.default_rng(0)
    subject = SubjectRows(rng.standard_normal((40, 150)).astype(np.float32),
                          rng.standard_normal((5, 150)).astype(np.float32))
    keep = finetune_from_rows(a1, subject, tmp_path / "keep.pth", FinetuneConfig(**A2))
    assert keep["num_voxels"] == 96 and keep["padded_voxels"] == 160  # 160 padded voxels cut to N * 16 = 96
    data = finetune_from_rows(a1, subject, tmp_path / "data.pth", FinetuneConfig(**A2, token_policy="data"))
    assert data["num_voxels"] == 160 and data["n_tokens"] == 10 and data["checkpoint_tokens"] == 6
    scratch = finetune_from_rows(a1, subject, tmp_path / "scratch.pth", FinetuneConfig(**A2), from_scratch=True)
    assert scratch["from_scratch"] and scratch["n_tokens"] == 6


def test_cli_reports_bad_inputs_without_traceback(stage_a1, capsys):
    tmp, a1 = stage_a1
    code = main(["finetune-mbm", "--pretrained", str(tmp / "missing.pth"), "--npz", str(tmp / "sbj_3.npz"),
                 "--dataset", "god", "--out", str(tmp / "x.pth"), "--no-tracking"])
    assert code == 2 and "missing.pth: checkpoint file not found" in capsys.readouterr().err
    code = main(["finetune-mbm", "--pretrained", str(a1), "--npz", str(tmp / "sbj_3.npz"), "--dataset", "god",
                 "--out", str(tmp / "x.pth"), "--set", "protocol=leaky", "--no-tracking"])
    assert code == 2 and "protocol" in capsys.readouterr().err
