"""Stage B under DDP: 2 CPU processes (gloo) with batch b end with the weights of 1 process with batch 2b.

The spawned processes call `finetune_ldm` exactly as one process does (no env given): it joins the
group from RANK / WORLD_SIZE, as under torchrun. Only rank 0 may write files.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from ldm_factory import ENC, MICRO, N_CLASSES, N_TOKENS, write_tiny_god

from mindvis.checkpoints.compvis_ldm import export_compvis_state, save_compvis_checkpoint
from mindvis.checkpoints.mindvis_encoder import export_mbm_checkpoint, reference_config
from mindvis.checkpoints.mindvis_ldm import export_mindvis_state
from mindvis.checkpoints.safe_load import safe_load
from mindvis.models.ldm.dc_ldm import build_label_ldm
from mindvis.models.sc_mbm import ScMbm
from mindvis.training import distributed as ddp
from mindvis.training.draws import StepDraws
from mindvis.training.ldm_common import augment, step_diffusion_loss
from mindvis.training.stage_b import FinetuneLdmConfig, build_stage_b, finetune_ldm

B = 2  # per process; 10 training pairs (2 of 12 held out) -> 2 global batches of 4 per epoch


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as each DDP process
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ldm_ddp")
    write_tiny_god(root)
    torch.manual_seed(0)
    export_mbm_checkpoint(root / "fmri_encoder.pth", ScMbm(ENC, N_TOKENS), reference_config(ENC, N_TOKENS))
    prior = build_label_ldm(MICRO, N_CLASSES)
    save_compvis_checkpoint(root / "label2img.pt", export_compvis_state(prior),
                            {"format": "mindvis.label2img/1", "spec": MICRO.as_dict(), "n_classes": N_CLASSES})
    return root


def _cfg(batch: int) -> FinetuneLdmConfig:
    # every per-item draw in use: crops, noise, steps, condition dropout; selection every epoch
    return FinetuneLdmConfig(epochs=3, batch_size=batch, lr=1e-3, checkpoint_every_steps=2, select_every_epochs=1,
                             val_fraction=0.2, select_metric="loss", select_loss_draws=2, cond_drop_prob=0.3,
                             grid_every_epochs=0, threads=1, device="cpu")


def _finetune(files: Path, out: Path, batch: int, stop_after_steps: int | None = None) -> dict:
    return finetune_ldm(files / "sbj_1.npz", files / "images_256.npz", files / "fmri_encoder.pth",
                        files / "label2img.pt", out, _cfg(batch), stop_after_steps=stop_after_steps)


def _worker(rank: int, world: int, port: int, files: str, root: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    import mindvis.training.engine as engine
    import mindvis.training.stage_b as stage_b

    writes: list[str] = []  # every file this process asks to write
    for module, name in ((engine, "save_resume_state"), (stage_b, "save_finetuned")):
        real = getattr(module, name)

        def record(path, *args, _real=real, **kwargs):
            writes.append(Path(path).name)
            return _real(path, *args, **kwargs)

        setattr(module, name, record)
    files_p, root_p = Path(files), Path(root)
    try:
        full = _finetune(files_p, root_p / "full" / "finetuned.pt", B)
        killed = _finetune(files_p, root_p / "killed" / "finetuned.pt", B, stop_after_steps=3)
        resumed = _finetune(files_p, root_p / "killed" / "finetuned.pt", B)
        report = {"full": full, "killed": killed, "resumed": resumed, "writes": writes,
                  "in_group": torch.distributed.is_initialized()}
        (root_p / f"rank{rank}.json").write_text(json.dumps(report, default=str))
    finally:
        ddp.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _trainable(path: Path) -> dict[str, torch.Tensor]:
    """The stage B trainable tensors of a finetuned.pt (mappers, time branch, encoder, cross-attention)."""
    state = safe_load(path)["model_state_dict"]
    keys = [k for k in state if k.startswith(("cond_stage_model.", "model.diffusion_model.time_embed_condtion"))
            or ".attn2." in k or ".norm2." in k]
    assert len(keys) > 10
    return {k: state[k] for k in keys}


def _without_key_bias(name: str, value: torch.Tensor) -> torch.Tensor:
    """Drop the key part of the encoder's qkv biases: softmax ignores it, so its exact gradient is 0 and
    what it gets is float rounding noise, which Adam scales up to lr-sized steps in any two runs."""
    if not name.endswith("attn.qkv.bias"):
        return value
    width = value.shape[0] // 3
    return torch.cat([value[:width], value[2 * width:]])


def test_global_draws_are_split_not_redrawn():
    images = torch.randint(0, 256, (6, 3, 10, 10), dtype=torch.uint8)
    whole = StepDraws(seed=3, step=7, global_batch=6)
    halves = [StepDraws(seed=3, step=7, global_batch=6, rows=slice(3 * r, 3 * r + 3)) for r in range(2)]
    assert [h.n for h in halves] == [3, 3]
    assert torch.equal(torch.cat([h.randn("noise", 2, 2) for h in halves]), whole.randn("noise", 2, 2))
    assert torch.equal(torch.cat([h.randint("timestep", 1000) for h in halves]), whole.randint("timestep", 1000))
    crops = torch.cat([augment(images[3 * r:3 * r + 3], halves[r], 0.5, 0.8) for r in range(2)])
    assert torch.equal(crops, augment(images, whole, 0.5, 0.8))
    assert not torch.equal(crops, images.float() / 127.5 - 1)  # some images were cropped
    # kinds are separate streams, steps are separate draws
    assert not torch.equal(whole.rand("crop"), whole.rand("cond_drop"))
    assert not torch.equal(whole.rand("crop"), StepDraws(3, 8, 6).rand("crop"))


def test_evaluation_shards_cover_the_items_in_order():
    for n in (0, 1, 3, 8):
        parts = [ddp.shard(n, ddp.DistEnv(rank=r, world_size=2)) for r in range(2)]
        assert np.concatenate(parts).tolist() == list(range(n))  # gathered in rank order = item order
        assert abs(len(parts[0]) - len(parts[1])) <= 1
    assert ddp.shard(5, ddp.DistEnv()).tolist() == [0, 1, 2, 3, 4]


def test_loss_of_the_global_batch_is_the_mean_of_the_halves(files):
    model = build_stage_b(files / "label2img.pt", files / "fmri_encoder.pth", _cfg(B)).model
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(4, 3, 16, 16, generator=gen) * 2 - 1
    fmri = torch.randn(4, 1, model.conditioner.num_voxels, generator=gen)
    with torch.no_grad():
        whole = step_diffusion_loss(model, x, fmri, StepDraws(5, 2, 4), cond_drop_prob=0.5, snr_gamma=5.0)
        halves = [step_diffusion_loss(model, x[2 * r:2 * r + 2], fmri[2 * r:2 * r + 2],
                                      StepDraws(5, 2, 4, slice(2 * r, 2 * r + 2)), cond_drop_prob=0.5, snr_gamma=5.0)
                  for r in range(2)]
    torch.testing.assert_close((halves[0] + halves[1]) / 2, whole, rtol=1e-6, atol=1e-7)


def test_two_gloo_processes_match_one_process_with_double_batch(files, tmp_path):
    ddp_root = tmp_path / "ddp"
    for sub in ("full", "killed"):
        (ddp_root / sub).mkdir(parents=True)
    mp.spawn(_worker, args=(2, _free_port(), str(files), str(ddp_root)), nprocs=2, join=True)
    single = _finetune(files, tmp_path / "single" / "finetuned.pt", 2 * B)
    reports = [json.loads((ddp_root / f"rank{r}.json").read_text()) for r in range(2)]

    # the same steps: 2 global batches of 4 per epoch in both runs
    full = reports[0]["full"]
    assert reports[0]["in_group"] and full["world_size"] == 2 and full["global_batch"] == 2 * B
    assert full["steps"] == single["steps"] == 6 and single["world_size"] == 1
    a, b = _trainable(ddp_root / "full" / "finetuned.pt"), _trainable(tmp_path / "single" / "finetuned.pt")
    assert a.keys() == b.keys()
    worst = max(float((_without_key_bias(k, a[k]) - _without_key_bias(k, b[k])).abs().max()) for k in a)
    print(f"max |DDP - single| over the trainable weights: {worst:.3g}")
    assert worst < 1e-5, worst
    start = export_mindvis_state(build_stage_b(files / "label2img.pt", files / "fmri_encoder.pth", _cfg(B)).model)
    moved = max(float((b[k] - start[k].reshape(b[k].shape)).abs().max()) for k in b)
    assert moved > 100 * worst  # the runs did train: agreement is not trivial

    # the logged figures are the global batch's: per-epoch loss and selection loss agree, same chosen epoch
    for ours, theirs in zip(full["history"], single["history"], strict=True):
        assert ours["loss"] == pytest.approx(theirs["loss"], rel=1e-5)
        assert ours["val_loss"] == pytest.approx(theirs["val_loss"], rel=1e-5)
    assert full["selected_epoch"] == single["selected_epoch"]
    # every process returns the same summary
    for key in ("history", "selected_epoch", "selection_score", "steps"):
        assert reports[1]["full"][key] == full[key], key

    # only rank 0 writes: one output per run and its resume states, nothing left over
    assert reports[1]["writes"] == []
    assert reports[0]["writes"].count("finetuned.pt") == 2  # the full run and the resumed run
    assert reports[0]["writes"].count("finetuned.pt.resume.pt") > 0
    assert sorted(p.name for p in (ddp_root / "full").iterdir()) == ["finetuned.pt"]
    assert sorted(p.name for p in (ddp_root / "killed").iterdir()) == ["finetuned.pt"]

    # a DDP run killed after step 3 resumes from the step-2 state and ends exactly like the uninterrupted one
    assert reports[0]["killed"] == {"stopped_at_step": 3}
    assert reports[0]["resumed"]["resumed"] is True
    c = _trainable(ddp_root / "killed" / "finetuned.pt")
    assert all(torch.equal(c[k], a[k]) for k in a)
