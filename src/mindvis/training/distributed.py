"""DDP plumbing: one code path for 1 process, torchrun, or spawned test processes.

Sharding is deterministic and independent of the world size: every process
draws the same global permutation of the rows for an epoch (seeded by
(seed, epoch)) and cuts the same global batches of `world * b` rows; process
r takes rows [r*b, (r+1)*b) of each. With DDP averaging gradients, 2
processes with batch b therefore take exactly the steps of 1 process with
batch 2b (up to float rounding), and so does the masking, whose noise is also
drawn per global batch.

The collectives the stages need (broadcast_object, gather_objects, gather_rows,
shard) are no-ops in one process, so a stage has one code path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from mindvis.utils.device import resolve_device


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def env_from_environment() -> DistEnv:
    """Rank and world size as torchrun (or our test launcher) sets them; 1 process otherwise."""
    return DistEnv(
        rank=int(os.environ.get("RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
    )


def init_distributed(device_type: str = "cpu") -> DistEnv:
    """Join the process group when launched with WORLD_SIZE > 1 (nccl on CUDA, gloo on CPU)."""
    env = env_from_environment()
    if env.distributed and not dist.is_initialized():
        if device_type == "cuda":
            torch.cuda.set_device(env.local_rank)
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return env


def join_processes(device_name: str, env: DistEnv | None = None) -> tuple[DistEnv, torch.device]:
    """This process's place in the job and its device.

    With no `env`, joins the process group when launched with WORLD_SIZE > 1 (torchrun,
    or spawned test processes) and runs as the only process otherwise.
    """
    if env is None:
        env = init_distributed(resolve_device(device_name, env_from_environment().local_rank).type)
    return env, resolve_device(device_name, env.local_rank)


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _seed_for(*parts: int) -> int:
    # SeedSequence mixes the parts well: consecutive steps/epochs get unrelated streams
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1, np.uint64)[0])


def epoch_order(seed: int, epoch: int, n_rows: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """The global row order of one epoch, the same in every process."""
    gen = generator if generator is not None else torch.Generator()
    gen.manual_seed(_seed_for(seed, 1, epoch))
    return torch.randperm(n_rows, generator=gen)


def global_mask_noise(seed: int, step: int, global_batch: int, n_tokens: int) -> torch.Tensor:
    """Masking noise of one global batch, from (seed, step) alone: identical across ranks and resumes."""
    gen = torch.Generator().manual_seed(_seed_for(seed, 2, step))
    return torch.rand(global_batch, n_tokens, generator=gen)


def local_rows(order: torch.Tensor, step_in_epoch: int, batch_per_rank: int, env: DistEnv) -> slice:
    """This process's slice of the global batch `step_in_epoch` (positions into `order`)."""
    start = step_in_epoch * batch_per_rank * env.world_size + env.rank * batch_per_rank
    return slice(start, start + batch_per_rank)


def all_reduce_sum(values: torch.Tensor, env: DistEnv) -> torch.Tensor:
    if env.distributed:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def any_rank(flag: bool, env: DistEnv, device: torch.device) -> bool:
    """True on every rank when any rank raised `flag` (all ranks stop at the same step)."""
    if not env.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def broadcast_object(obj: Any, env: DistEnv) -> Any:
    """Rank 0's `obj` in every process: figures and decisions that must not differ between processes."""
    if not env.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj: Any, env: DistEnv) -> list[Any]:
    """Every process's `obj`, in rank order, in every process."""
    if not env.distributed:
        return [obj]
    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def gather_rows(t: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """The processes' equally shaped tensors joined along dim 0 in rank order: the global batch's rows."""
    if not env.distributed:
        return t
    parts = [torch.empty_like(t) for _ in range(env.world_size)]
    dist.all_gather(parts, t.detach().contiguous())
    return torch.cat(parts)


def shard(n: int, env: DistEnv) -> np.ndarray:
    """This process's contiguous share of n items (rank order = item order, for gathering)."""
    return np.array_split(np.arange(n), env.world_size)[env.rank]
