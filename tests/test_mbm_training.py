"""SC-MBM training: schedule, optimizer groups, data preparation, learning, exact resume."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mindvis.checkpoints import load_mbm_checkpoint, safe_load
from mindvis.models import PRESETS, ScMbm
from mindvis.data.conventions import split_holdout
from mindvis.training.mbm import LoopConfig, prepare_rows, train_mbm
from mindvis.training.schedule import WarmupCosine
from mindvis.training.checkpointing import resume_path_for
from mindvis.training.stage_a1 import MbmTrainConfig, pretrain_from_matrix
from mindvis.training.optim import decay_groups
from mindvis.utils.errors import ConfigError, InputDataError


# one intra-op thread: OpenMP threads spinning for a busy core make runs erratic on shared machines
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def structured_rows(n: int, v: int, rank: int = 6, noise: float = 0.3, seed: int = 0,
                    smooth: float = 3.0) -> np.ndarray:
    """Low-rank data with spatially smooth loadings: masked voxels are predictable from visible ones."""
    from scipy.ndimage import gaussian_filter1d

    rng = np.random.default_rng(seed)
    loadings = gaussian_filter1d(rng.standard_normal((rank, v)), smooth, axis=1)
    x = rng.standard_normal((n, rank)) @ loadings
    return (x + noise * loadings.std() * rng.standard_normal((n, v)) + 2.0).astype(np.float32)


def test_schedule_warmup_then_half_cosine():
    s = WarmupCosine.from_epochs(base_lr=1.0, epochs=10, warmup_epochs=2, steps_per_epoch=5, min_lr=0.1)
    assert s.warmup_steps == 10 and s.total_steps == 50
    assert s.lr_at(0) == 0.0 and s.lr_at(5) == pytest.approx(0.5)
    assert s.lr_at(10) == pytest.approx(1.0)
    assert s.lr_at(30) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert s.lr_at(50) == pytest.approx(0.1)


def test_weight_decay_groups_follow_mae_rule():
    model = ScMbm(PRESETS["tiny"], 4)
    no_decay, decay = decay_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    nd = {names[id(p)] for p in no_decay["params"]}
    d = {names[id(p)] for p in decay["params"]}
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 0.05
    assert "blocks.0.attn.qkv.bias" in nd and "norm.weight" in nd and "patch_embed.proj.bias" in nd
    assert "blocks.0.attn.qkv.weight" in d and "patch_embed.proj.weight" in d
    assert "cls_token" in d and "mask_token" in d  # (1, 1, D): not 1-D, decayed as in MAE
    assert "pos_embed" not in nd | d and "decoder_pos_embed" not in nd | d  # frozen tables


def test_prepare_rows_pads_normalises_with_training_statistics_and_fits():
    train = np.arange(2 * 20, dtype=np.float32).reshape(2, 20)
    hold = np.full((1, 20), 100.0, dtype=np.float32)
    rows = prepare_rows(train, hold, num_voxels=48)
    padded = np.pad(train, ((0, 0), (0, 12)), mode="wrap")  # 20 -> 32 (16 - 20 % 16 = 12)
    assert rows.padded_voxels == 32 and rows.num_voxels == 48 and rows.raw_voxels == 20
    assert rows.norm.mean == pytest.approx(padded.mean()) and rows.norm.std == pytest.approx(padded.std())
    expected = (np.pad(padded, ((0, 0), (0, 16)), mode="wrap") - padded.mean()) / padded.std()
    assert np.allclose(rows.train, expected, atol=1e-5)
    assert np.allclose(rows.holdout, (100.0 - padded.mean()) / padded.std(), atol=1e-5)


def test_holdout_split_is_seeded_and_disjoint():
    a_train, a_hold = split_holdout(50, 0.2, seed=3)
    b_train, b_hold = split_holdout(50, 0.2, seed=3)
    assert np.array_equal(a_hold, b_hold) and a_hold.size == 10
    assert set(a_train).isdisjoint(a_hold) and len(set(a_train) | set(a_hold)) == 50
    with pytest.raises(ConfigError):
        split_holdout(5, 1.0, seed=0)


def test_bad_rows_are_named_errors(tmp_path):
    x = structured_rows(40, 64)
    x[3, 5] = np.nan
    with pytest.raises(InputDataError, match="NaN"):
        pretrain_from_matrix(x, tmp_path / "a.pth", MbmTrainConfig(epochs=1))
    with pytest.raises(ConfigError, match="batch_size"):
        pretrain_from_matrix(structured_rows(10, 64), tmp_path / "a.pth", MbmTrainConfig(epochs=1, batch_size=64))


def test_training_learns_masked_voxels(tmp_path):
    """Held-out masked-voxel correlation: far above an untrained model and a per-voxel-mean predictor."""
    x = structured_rows(440, 150, rank=3)
    cfg = MbmTrainConfig(epochs=25, batch_size=32, lr=2e-3, warmup_epochs=2, checkpoint_every_steps=0,
                         holdout_fraction=0.1)
    out = tmp_path / "fmri_encoder.pth"
    summary = pretrain_from_matrix(x, out, cfg)
    assert summary["n_holdout"] == 44 and summary["num_voxels"] == 160 and summary["n_tokens"] == 10
    assert abs(summary["initial_holdout_masked_corr"]) < 0.15
    assert summary["holdout_masked_corr"] > 0.4
    assert summary["holdout_masked_corr"] > summary["initial_holdout_masked_corr"] + 0.35
    assert summary["holdout_masked_corr"] > summary["voxel_mean_baseline_corr"] + 0.2
    assert summary["holdout_loss"] < summary["voxel_mean_baseline_loss"]
    losses = [h["loss"] for h in summary["history"][1:]]
    assert losses[-1] < 0.5 * losses[0]
    # the output is a MinD-Vis-layout checkpoint with a plain config, and the resume file is gone
    ckpt = torch.load(out, weights_only=True)
    assert ckpt["epoch"] == 24 and ckpt["config"]["mindvis"]["stage"] == "A1"
    assert ckpt["config"]["num_voxels"] == 160 and ckpt["config"]["lr"] == 2e-3
    assert not resume_path_for(out).exists()
    assert load_mbm_checkpoint(out).n_tokens == 10


def _run(tmp_path, name, stop_after=None, every=4, epochs=3):
    torch.manual_seed(0)
    x = structured_rows(100, 60, seed=1)
    rows = prepare_rows(x[:90], x[90:])
    model = ScMbm(PRESETS["tiny"], rows.num_voxels // 16)
    cfg = LoopConfig(epochs=epochs, batch_size=16, lr=1e-3, warmup_epochs=1, checkpoint_every_steps=every, seed=5)
    return model, train_mbm(model, rows.train, rows.holdout, cfg, tmp_path / name, {"n": 1},
                            stop_after_steps=stop_after)


@pytest.mark.parametrize("every", [4, 5])  # 5 steps per epoch: 5 checkpoints exactly at an epoch's end
def test_resume_after_interruption_gives_identical_weights(tmp_path, every):
    full_model, full = _run(tmp_path, "full.pth", every=every)
    _, partial = _run(tmp_path, "cut.pth", stop_after=7, every=every)  # "killed" at step 7
    assert partial == {"stopped_at_step": 7}
    state = safe_load(resume_path_for(tmp_path / "cut.pth"))
    assert state["step"] == every and state["epoch"] == every // 5 and state["step_in_epoch"] == every % 5
    assert len(state["history"]) == 1 + every // 5  # initial eval (+ the finished epoch)
    assert {"python", "numpy", "torch", "data_order"} <= set(state["rng"])
    resumed_model, resumed = _run(tmp_path, "cut.pth", every=every)
    assert resumed["resumed"] and not full["resumed"] and resumed["steps"] == full["steps"] == 15
    for key, value in full_model.state_dict().items():
        assert torch.equal(resumed_model.state_dict()[key], value), key
    a, b = torch.load(tmp_path / "full.pth", weights_only=True), torch.load(tmp_path / "cut.pth", weights_only=True)
    for idx, st in a["optimizer"]["state"].items():
        assert torch.equal(b["optimizer"]["state"][idx]["exp_avg_sq"], st["exp_avg_sq"])
    def no_timing(history):
        return [{k: v for k, v in h.items() if k != "samples_per_s"} for h in history]

    assert no_timing(resumed["history"]) == no_timing(full["history"])  # per-epoch metrics survive the kill


def test_stale_resume_file_of_another_run_is_ignored(tmp_path):
    _run(tmp_path, "x.pth", stop_after=5)
    assert resume_path_for(tmp_path / "x.pth").exists()
    _, other = _run(tmp_path, "x.pth", epochs=2)  # different epochs -> different fingerprint
    assert not other["resumed"] and other["steps"] == 10


def test_bf16_autocast_on_cpu_tracks_fp32_and_fp16_needs_cuda(tmp_path):
    x = structured_rows(80, 60, seed=2)
    rows = prepare_rows(x[:72], x[72:])
    finals = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = ScMbm(PRESETS["tiny"], rows.num_voxels // 16)
        cfg = LoopConfig(epochs=1, batch_size=8, lr=1e-3, warmup_epochs=0, checkpoint_every_steps=0,
                         precision=precision, device="cpu")
        finals[precision] = train_mbm(model, rows.train, rows.holdout, cfg, tmp_path / f"{precision}.pth", {})
    assert finals["bf16"]["precision"] == "bfloat16" and finals["fp32"]["precision"] == "fp32"
    assert finals["bf16"]["final_loss"] == pytest.approx(finals["fp32"]["final_loss"], rel=0.05)
    assert finals["bf16"]["final_loss"] != finals["fp32"]["final_loss"]  # really ran in reduced precision
    with pytest.raises(ConfigError, match="fp16 needs CUDA"):
        train_mbm(ScMbm(PRESETS["tiny"], rows.num_voxels // 16), rows.train, rows.holdout,
                  LoopConfig(precision="fp16", device="cpu"), tmp_path / "fp16.pth", {})


def test_config_sections_load_with_model_overrides():
    from mindvis.config import load_section
    from mindvis.training.stage_a2 import FinetuneConfig

    cfg = load_section(MbmTrainConfig, "{epochs: 3, model: {preset: paper, depth: 2}}", ["model.num_heads=8"])
    assert cfg.epochs == 3 and cfg.model.preset == "paper" and cfg.model.depth == 2 and cfg.model.num_heads == 8
    assert cfg.lr == MbmTrainConfig().lr and cfg.window == 10
    ft = load_section(FinetuneConfig, "{protocol: reference}", [])
    assert ft.protocol == "reference" and ft.epochs == 15
    with pytest.raises(ConfigError):
        load_section(FinetuneConfig, "{window: 3}", [])  # A1-only key: unknown to A2
