"""DDP: 2 CPU processes (gloo) with batch b end with the weights of 1 process with batch 2b."""

from __future__ import annotations

import os
import socket

import numpy as np
import torch
import torch.multiprocessing as mp

from mindvis.models import PRESETS, ScMbm
from mindvis.training.mbm import LoopConfig, prepare_rows, train_mbm
from mindvis.training import distributed as ddp

B = 8


def _rows():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((70, 5)) @ rng.standard_normal((5, 75)) + 0.1 * rng.standard_normal((70, 75))
    return prepare_rows(x[:64].astype(np.float32), x[64:].astype(np.float32))


def _train(out, batch, env=None):
    rows = _rows()
    torch.manual_seed(11)
    model = ScMbm(PRESETS["tiny"], rows.num_voxels // 16)
    cfg = LoopConfig(epochs=2, batch_size=batch, lr=2e-3, warmup_epochs=0.5, checkpoint_every_steps=3, seed=9,
                     device="cpu")
    return train_mbm(model, rows.train, rows.holdout, cfg, out, {"test": True}, env=env)


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    env = ddp.init_distributed("cpu")
    try:
        summary = _train(out, B, env)
        assert summary["world_size"] == world and summary["global_batch"] == B * world
    finally:
        ddp.shutdown()


def _without_key_bias(name: str, value: torch.Tensor) -> torch.Tensor:
    """Drop the key part of qkv biases: softmax ignores it, so its exact gradient is 0 and what
    it gets is float rounding noise, which Adam scales up to lr-sized random steps in any two runs."""
    if not name.endswith("attn.qkv.bias"):
        return value
    width = value.shape[0] // 3
    return torch.cat([value[:width], value[2 * width:]])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sharding_covers_each_global_batch_once():
    order = torch.randperm(40, generator=torch.Generator().manual_seed(0))
    envs = [ddp.DistEnv(rank=r, world_size=2) for r in range(2)]
    for step in range(5):
        parts = [order[ddp.local_rows(order, step, 4, e)] for e in envs]
        single = order[ddp.local_rows(order, step, 8, ddp.DistEnv())]
        assert torch.equal(torch.cat(parts), single)


def test_two_gloo_processes_match_one_process_with_double_batch(tmp_path):
    ddp_out = tmp_path / "ddp" / "fmri_encoder.pth"
    ddp_out.parent.mkdir()
    mp.spawn(_worker, args=(2, _free_port(), str(ddp_out)), nprocs=2, join=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each DDP process
    try:
        single = _train(tmp_path / "single.pth", 2 * B)
    finally:
        torch.set_num_threads(threads)
    assert single["steps"] == 2 * (64 // (2 * B))

    a = torch.load(ddp_out, weights_only=True)["model"]
    b = torch.load(tmp_path / "single.pth", weights_only=True)["model"]
    assert set(a) == set(b)
    worst = max(float((_without_key_bias(k, a[k]) - _without_key_bias(k, b[k])).abs().max()) for k in a)
    assert worst < 1e-5, worst
    torch.manual_seed(11)
    start = ScMbm(PRESETS["tiny"], b["pos_embed"].shape[1] - 1).state_dict()
    moved = max(float((b[k] - start[k]).abs().max()) for k in b)
    assert moved > 100 * worst  # the runs did train: agreement is not trivial
