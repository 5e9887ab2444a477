"""`max_steps`: every training loop stops after exactly that many optimizer steps and still writes its outputs.

The expected counts are worked out by hand from the data sizes (rows // batch steps per
epoch, incomplete batches dropped; the judge keeps its last, smaller batch), and the
steps are counted independently of the loop's own counter: the optimizer's per-parameter
step count saved in the SC-MBM checkpoint, the calls of a stage B loss hook, the calls of
AdamW.step in the judge.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mindvis.checkpoints import safe_load
from mindvis.models import PRESETS, ScMbm
from mindvis.training.checkpointing import resume_path_for
from mindvis.training.engine import LoopHooks, run_loop
from mindvis.training.ldm_common import LdmLoopConfig
from mindvis.training.mbm import LoopConfig, train_mbm
from mindvis.utils.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _rows(n: int, v: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, v)).astype(np.float32)


def test_sc_mbm_capped_run_stops_at_max_steps_and_exports(tmp_path):
    # 50 rows, batch 8: 6 steps per epoch (the last 2 rows dropped), 3 epochs = 18 steps; cap 10
    # = 6 steps of epoch 1 and 4 of epoch 2
    out = tmp_path / "fmri_encoder.pth"
    cfg = LoopConfig(epochs=3, batch_size=8, warmup_epochs=1.0, lr=1e-3, checkpoint_every_steps=0,
                     holdout_fraction=0.0, device="cpu", max_steps=10)
    model = ScMbm(PRESETS["tiny"], 4)
    summary = train_mbm(model, _rows(50, 64), np.zeros((0, 64), np.float32), cfg, out, {"preset": "tiny"})
    assert summary["steps"] == 10 and summary["steps_per_epoch"] == 6
    assert out.is_file() and not resume_path_for(out).exists()
    saved = safe_load(out)
    optimizer_steps = {float(state["step"]) for state in saved["optimizer"]["state"].values()}
    assert optimizer_steps == {10.0}
    assert saved["epoch"] == 1  # 0-based epoch of the last step (step 10 lies in the second epoch)
    # the partial second epoch is closed like a full one: a history row for epochs 0 (initial), 1 and 2
    assert [row["epoch"] for row in summary["history"]] == [0, 1, 2]


def test_sc_mbm_cap_above_the_run_changes_nothing_and_zero_is_refused(tmp_path):
    cfg = LoopConfig(epochs=2, batch_size=8, checkpoint_every_steps=0, holdout_fraction=0.0, device="cpu",
                     max_steps=1000)
    summary = train_mbm(ScMbm(PRESETS["tiny"], 4), _rows(20, 64), np.zeros((0, 64), np.float32), cfg,
                        tmp_path / "a.pth", {})
    assert summary["steps"] == 2 * (20 // 8)
    with pytest.raises(ConfigError):
        train_mbm(ScMbm(PRESETS["tiny"], 4), _rows(20, 64), np.zeros((0, 64), np.float32),
                  LoopConfig(epochs=1, batch_size=8, device="cpu", max_steps=0), tmp_path / "b.pth", {})


def test_stage_b_loop_stops_at_max_steps_and_exports(tmp_path):
    # 22 items, batch 4: 5 steps per epoch, 3 epochs = 15 steps; cap 7 = epoch 1 whole + 2 steps of epoch 2
    model = torch.nn.Linear(3, 1)
    data = torch.from_numpy(_rows(22, 3))
    calls: list[int] = []
    epochs_closed: list[int] = []
    exported: list[list[dict]] = []
    out = tmp_path / "model.pt"

    def step_loss(idx, draws, step):
        calls.append(step)
        return (model(data[idx]) ** 2).mean()

    def epoch_end(epoch):
        epochs_closed.append(epoch)
        return {}

    def export(done):
        exported.append(done.history)
        out.write_text("done")

    cfg = LdmLoopConfig(epochs=3, batch_size=4, lr=1e-2, checkpoint_every_steps=0, device="cpu", threads=1,
                        max_steps=7)
    result = run_loop(model, 22, cfg, out, {"test": "max_steps"}, LoopHooks(step_loss, epoch_end), export)
    assert calls == list(range(7))  # global steps 0..6, one call each
    assert result["steps"] == 7 and result["max_steps"] == 7
    assert epochs_closed == [1, 2]  # the partial second epoch still ends like an epoch
    assert len(exported) == 1 and [row["epoch"] for row in exported[0]] == [1, 2]
    assert out.read_text() == "done" and not resume_path_for(out).exists()


def test_judge_stops_at_max_steps(monkeypatch):
    from mindvis.evaluation.judge_training import JudgeTrainConfig, train_judge

    counted: list[int] = []
    original = torch.optim.AdamW.step

    def counting_step(self, *args, **kwargs):
        counted.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", counting_step)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(25, 8, 8, 3), dtype=np.uint8)
    labels = np.arange(25) % 3
    # 25 images, batch 10: 2 steps per epoch (the engine drops the last 5), 3 epochs = 6 steps; cap 4
    cfg = JudgeTrainConfig(epochs=3, batch_size=10, width=4, image_size=8, augment=False, max_steps=4)
    _, summary = train_judge(images, labels, ["a", "b", "c"], cfg)
    assert len(counted) == 4 and summary["steps"] == 4
    assert len(summary["loss_per_epoch"]) == 2
