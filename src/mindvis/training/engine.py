"""The one training loop of every stage (SC-MBM A1/A2, the VQ autoencoder, label2img, stage B).

A stage gives `run_loop` its model (the parameters that require grad are trained),
its items, the keys of `EngineConfig`, a resume fingerprint, and `LoopHooks`: the
loss of a batch, plus optional epoch-end metrics, a picture to log, best-state
keeping, an initial evaluation, its optimizer and learning-rate schedule. The
loop does the rest, the same way for every stage:

- device and precision: the model sits on its device; `precision` auto is fp32 on
  CPU and bf16 (fp16 with a GradScaler where bf16 is missing) on CUDA;
- several processes (DDP, training.distributed): `batch_size` is per process; every
  process draws the same global item order of an epoch from (seed, epoch) and takes
  its slice of each global batch; every random draw of step s comes from (seed, s,
  kind) for the whole global batch (training.draws), so a resume file is valid for
  any split of the same global batch; only rank 0 writes files and logs;
- gradient-norm clipping (`clip_grad`; 0 disables), a non-finite loss stops the run;
- every `checkpoint_every_steps` steps, on SIGTERM and at the end the trainable
  parameters, optimizer, scaler, history, running sums, the stage's best state and the
  RNG states go atomically to `<out>.resume.pt`; SIGTERM saves it and raises
  `TrainingInterrupted` (the command exits 143); rerunning the same command resumes
  and ends with exactly the weights of an uninterrupted run. The fingerprint names the
  inputs by content (training.input_identity), so a copied work folder resumes too;
- per-epoch metrics (mean loss and gradient norm, learning rate, throughput, the
  stage's own) go to the history and, on rank 0, to the tracker (MLflow);
- `max_steps` stops after that many steps (the first steps of the full run, schedules
  unchanged) and still exports; the output is written last, atomically, by `export`.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from mindvis.training import distributed as ddp
from mindvis.training.checkpointing import (
    capture_rng,
    load_resume_state,
    restore_rng,
    resume_path_for,
    save_resume_state,
)
from mindvis.training.draws import StepDraws
from mindvis.training.input_identity import hash_cache_path_for
from mindvis.utils.device import set_threads
from mindvis.utils.errors import ConfigError, MindVisError
from mindvis.utils.sigterm import SigtermHandler

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DRAWS_VERSION = "global-batch/1"  # in the resume fingerprint: a file written with other draws is not resumed


@dataclass
class EngineConfig:
    """The keys every training stage shares (each stage's config subclasses it with its own defaults)."""

    epochs: int = 10  # passes over the training items
    batch_size: int = 16  # items per optimizer step PER PROCESS: with N processes (torchrun / several GPUs) a
    #                        step takes N x batch_size items and follows the trajectory of 1 process with batch
    #                        N x batch_size; the incomplete last global batch of an epoch is dropped
    lr: float = 1e-4  # AdamW learning rate (the peak of the schedule where a stage has one)
    weight_decay: float = 0.01  # AdamW weight decay
    clip_grad: float = 0.5  # max gradient L2 norm; 0 disables
    seed: int = 2022  # seeds init, item order and every random draw of a step
    checkpoint_every_steps: int = 200  # resumable checkpoint period in steps (0: at the end only)
    precision: str = "auto"  # auto (CUDA: bf16 if supported else fp16; CPU: fp32) | fp32 | bf16 | fp16
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda
    threads: int = 1  # torch CPU threads (0 = torch's default); 1 is fastest for tiny models when jobs share cores
    keep_resume: bool = False  # keep <out>.resume.pt after a successful run
    max_steps: int | None = None  # stop after this many optimizer steps (None: no cap): the first max_steps
    #                               steps of the full run (schedules unchanged), then the normal outputs


class TrainingInterrupted(MindVisError):
    """SIGTERM (or an external stop) arrived; the state was saved to the resume file."""

    def __init__(self, step: int, resume_path: Path):
        self.step = step
        self.resume_path = resume_path
        super().__init__(f"training stopped at step {step}; state saved to {resume_path}; rerun to resume")


def resolve_precision(name: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, use GradScaler)."""
    if name not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, got {name!r}")
    if name == "auto":
        if device.type != "cuda":
            return None, False
        name = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if name == "fp32":
        return None, False
    if name == "bf16":
        return torch.bfloat16, False
    if device.type != "cuda":
        raise ConfigError("precision=fp16 needs CUDA (use bf16 or fp32 on CPU)")
    return torch.float16, True


def start_process(cfg: EngineConfig, env: ddp.DistEnv | None = None) -> tuple[ddp.DistEnv, torch.device]:
    """CPU threads, this process's place among the job's processes (joined under torchrun) and its device."""
    if cfg.threads < 0:
        raise ConfigError(f"threads must be >= 0, got {cfg.threads}")
    set_threads(cfg.threads)
    return ddp.join_processes(cfg.device, env)


def digest(*arrays: np.ndarray | torch.Tensor) -> str:
    """A short content hash of arrays (shapes included), for resume fingerprints."""
    sha = hashlib.sha256()
    for a in arrays:
        a = a.numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
        sha.update(str(a.shape).encode())
        sha.update(np.ascontiguousarray(a).tobytes())
    return sha.hexdigest()[:16]


class StopFlag(SigtermHandler):
    """Set by SIGTERM while training; the loop checks it after every step. Inside the loop (`with`)
    it replaces the job's handler (the tracker's, which would raise JobKilled mid-step) and gives
    it back afterwards."""

    def __init__(self):
        super().__init__(self._handle)
        self.raised = False

    def _handle(self, signum, frame):
        log.warning("SIGTERM: saving a resumable checkpoint after the current step")
        self.raised = True


@dataclass
class Finished:
    """What `export` gets at the end: the history and the optimizer's final state."""

    history: list[dict[str, Any]]
    step: int
    steps_per_epoch: int
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler


@dataclass
class LoopHooks:
    """What a stage plugs into the loop."""

    # (this process's batch, its share of the step's draws, global step) -> loss, a mean over the items.
    # The batch is what the stage's `items` dataset returns for this process's indices (the indices
    # themselves, a tensor, when `items` is a count)
    step_loss: Callable[[Any, StepDraws, int], torch.Tensor]
    epoch_end: Callable[[int], dict[str, float]] | None = None  # epoch (1-based) -> metrics (may update best);
    #                                                              runs in every process, rank 0's figures are kept
    grid: Callable[[int], np.ndarray | None] | None = None  # epoch -> uint8 picture to log (rank 0 only: no
    #                                                          collectives in it)
    grid_every_epochs: int = 0  # log the picture every K epochs (0: at the end only)
    best_state: Callable[[], dict[str, Any]] | None = None  # state to keep in the resume file
    load_best: Callable[[dict[str, Any]], None] | None = None
    initial: Callable[[], dict[str, float]] | None = None  # metrics before the first step: history row epoch 0
    optimizer: Callable[[], torch.optim.Optimizer] | None = None  # default: AdamW(trainable, lr, weight_decay)
    schedule: Callable[[int], Any] | None = None  # steps_per_epoch -> object whose apply(optimizer, step) sets
    #                                               and returns the learning rate of a step (default: constant lr)


class _StepModule(torch.nn.Module):
    """What DDP wraps: one step's loss. A stage calls several parts of its model per step
    (encoder, conditioner, UNet), not one forward; DDP syncs what runs inside its forward."""

    def __init__(self, model: torch.nn.Module, step_loss: Callable[[Any, StepDraws, int], torch.Tensor]):
        super().__init__()
        self.model = model
        self.step_loss = step_loss

    def forward(self, batch: Any, draws: StepDraws, step: int) -> torch.Tensor:
        return self.step_loss(batch, draws, step)


class _Indices(torch.utils.data.Dataset):
    """The items of a stage that indexes its own data: a batch is the tensor of its indices."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i

    def __getitems__(self, indices: list[int]) -> torch.Tensor:
        return torch.as_tensor(indices, dtype=torch.int64)


class _StepBatches(torch.utils.data.Sampler):
    """This process's item indices for steps `first..steps-1` of one epoch."""

    def __init__(self, order: torch.Tensor, first: int, steps: int, batch: int, env: ddp.DistEnv):
        self.order, self.first, self.steps, self.batch, self.env = order, first, steps, batch, env

    def __len__(self) -> int:
        return self.steps - self.first

    def __iter__(self):
        for i in range(self.first, self.steps):
            yield self.order[ddp.local_rows(self.order, i, self.batch, self.env)].tolist()


def _identity(batch):
    return batch


class _RunningSums:
    """The epoch's loss and gradient-norm sums: added up on the device, read every `read_every` steps
    (reading a CUDA value stalls the pipeline) into `accum`, which the resume file keeps."""

    def __init__(self, device: torch.device, read_every: int, accum: dict[str, float] | None = None):
        self.loss = torch.zeros((), device=device)
        self.gnorm = torch.zeros((), device=device)
        self.steps, self.read_every, self.last_loss = 0, max(int(read_every), 1), float("nan")
        self.accum = dict(accum) if accum else self.empty()

    @staticmethod
    def empty() -> dict[str, float]:
        return {"loss": 0.0, "grad_norm": 0.0, "steps": 0}

    def add(self, loss: torch.Tensor, gnorm: torch.Tensor) -> None:
        self.loss += loss.detach().float()
        self.gnorm += gnorm.detach().float()
        self.steps += 1

    def read(self, what: str) -> None:
        """Move the device sums into `accum`; stop on a non-finite loss."""
        if self.steps == 0:
            return
        total = float(self.loss)
        if not math.isfinite(total):
            raise MindVisError(f"{what}; lower lr or use precision=fp32")
        self.accum["loss"] += total
        self.accum["grad_norm"] += float(self.gnorm)
        self.accum["steps"] += self.steps
        self.last_loss = total / self.steps
        self.loss.zero_()
        self.gnorm.zero_()
        self.steps = 0

    def epoch_means(self, env: ddp.DistEnv) -> tuple[float, float]:
        """The epoch's mean loss and gradient norm over every process; the sums start again."""
        sums = ddp.all_reduce_sum(torch.tensor([self.accum["loss"], self.accum["grad_norm"]], dtype=torch.float64),
                                  env) / env.world_size
        n = max(self.accum["steps"], 1)
        self.accum = self.empty()
        return float(sums[0]) / n, float(sums[1]) / n


def run_loop(model: torch.nn.Module, items: int | torch.utils.data.Dataset, cfg: EngineConfig,
             out_path: str | Path, fingerprint: dict[str, Any], hooks: LoopHooks,
             export: Callable[[Finished], None], tracker=None, stop_after_steps: int | None = None,
             desc: str = "train", env: ddp.DistEnv | None = None, read_every_steps: int = 1,
             num_workers: int = 0) -> dict[str, Any]:
    """Train the parameters of `model` that require grad; resumable; `export(finished)` writes the output.

    `items`: the number of training items (each batch is then a tensor of item indices) or a
    dataset whose `__getitems__` returns a batch. `env`: this process among several DDP processes
    (None: the only one); `model` sits on this process's device; only rank 0 writes files and logs
    to `tracker`. `stop_after_steps` abandons the run after that many global steps without saving
    anything more (what a SIGKILL does): for tests of resuming. `read_every_steps`: how often the
    running loss is read from the device (and checked to be finite). `num_workers`: DataLoader
    worker processes fetching the batches.
    """
    env = env or ddp.DistEnv()
    main = env.is_main
    device = next(model.parameters()).device
    amp_dtype, use_scaler = resolve_precision(cfg.precision, device)
    out_path = Path(out_path)
    resume_path = resume_path_for(out_path)
    dataset = _Indices(items) if isinstance(items, int) else items
    n_items = len(dataset)
    global_batch = cfg.batch_size * env.world_size
    if cfg.batch_size < 1 or n_items // global_batch < 1:
        raise ConfigError(f"batch_size={cfg.batch_size} x {env.world_size} process(es) exceeds the {n_items} "
                          "training items: lower batch_size")
    steps_per_epoch = n_items // global_batch
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None and cfg.max_steps < 1:
        raise ConfigError(f"max_steps must be >= 1 or null, got {cfg.max_steps}")
    # a capped run is the prefix of the full run: schedules still span total_steps
    last_step = total_steps if cfg.max_steps is None else min(total_steps, int(cfg.max_steps))
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ConfigError("nothing to train: the trainable set is empty")
    params = [p for _, p in named]
    optimizer = hooks.optimizer() if hooks.optimizer is not None else \
        torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = hooks.schedule(steps_per_epoch) if hooks.schedule is not None else None
    scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
    order_gen = torch.Generator()
    # the global batch, not the split: a resume file is valid for any number of processes that
    # make the same global batch (they take the same steps)
    fingerprint = dict(fingerprint, n_items=n_items, global_batch=global_batch, draws=DRAWS_VERSION,
                       trainable=digest(np.array(sorted(n for n, _ in named))), precision=f"{amp_dtype}/{use_scaler}")

    step, history, accum = 0, [], None
    resumed = load_resume_state(resume_path, fingerprint)
    if resumed is not None:
        model.load_state_dict(resumed["trainable"], strict=False)
        optimizer.load_state_dict(resumed["optimizer"])
        scaler.load_state_dict(resumed["scaler"])
        restore_rng(resumed["rng"], order_gen)
        # (a stage B file written before the engine has no running sums: the epoch's mean starts there)
        step, history, accum = int(resumed["step"]), list(resumed["history"]), resumed.get("accum")
        if hooks.load_best is not None and resumed.get("best"):
            hooks.load_best(resumed["best"])
        log.info("resumed from %s at step %d/%d", resume_path, step, total_steps)
    sums = _RunningSums(device, read_every_steps, accum)

    net: torch.nn.Module = _StepModule(model, hooks.step_loss)
    if env.distributed:
        # device_ids None: DDP would move the inputs, CPU item indices included, onto the GPU.
        # find_unused_parameters: a trainable set can hold parameters the loss never reaches (the
        # stage A encoder's cls token in stage B); their gradients stay None, as in one process.
        net = torch.nn.parallel.DistributedDataParallel(net, device_ids=None, find_unused_parameters=True)

    def write_state() -> None:
        save_resume_state(resume_path, {
            "fingerprint": fingerprint, "step": step, "epoch": step // steps_per_epoch,
            "step_in_epoch": step % steps_per_epoch, "history": history, "accum": sums.accum,
            "trainable": {n: p.detach().cpu().clone() for n, p in named},
            "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "rng": capture_rng(order_gen),
            "best": hooks.best_state() if hooks.best_state is not None else {}, "world_size": env.world_size,
        })

    def save_state() -> None:
        if main:
            write_state()
        ddp.barrier(env)  # nobody runs ahead of (or exits before) a state that is still being written

    def read_sums() -> None:
        sums.read(f"{desc}: loss became non-finite before step {step} (lr {lr:.3g})")

    def save_or_stop(due: bool) -> None:
        """Save when due; then, when any process got SIGTERM (during that save too), stop with the state saved."""
        if due:
            read_sums()
            save_state()
        if ddp.any_rank(stop.raised, env, device):  # every process stops at the same step
            if not due:
                read_sums()
                save_state()
            raise TrainingInterrupted(step, resume_path)

    # rank 0 logs; a disabled tracker (--no-tracking) would only waste the grid's sampling
    log_to = tracker if main and tracker is not None and getattr(tracker, "enabled", True) else None
    if step == 0 and hooks.initial is not None:
        initial = ddp.broadcast_object(hooks.initial(), env)
        history.append({"epoch": 0, **initial})
        if log_to is not None and initial:
            log_to.log_metrics(initial, step=0)

    clip = cfg.clip_grad if cfg.clip_grad and cfg.clip_grad > 0 else math.inf
    mine = slice(env.rank * cfg.batch_size, (env.rank + 1) * cfg.batch_size)  # this process's rows of a global batch
    lr = schedule.lr_at(step) if schedule is not None else cfg.lr
    model.train()
    t_start = time.perf_counter()
    with StopFlag() as stop:
        for epoch in range(step // steps_per_epoch, cfg.epochs):
            if step >= last_step:
                break
            first = step - epoch * steps_per_epoch
            order = ddp.epoch_order(cfg.seed, epoch, n_items, order_gen)
            loader = DataLoader(dataset, batch_sampler=_StepBatches(order, first, steps_per_epoch, cfg.batch_size,
                                                                    env),
                                collate_fn=_identity, num_workers=num_workers, pin_memory=device.type == "cuda")
            t0, seen, save_after_epoch = time.perf_counter(), 0, False
            with tqdm(loader, total=steps_per_epoch, initial=first, disable=None if main else True, leave=False,
                      desc=f"{desc} epoch {epoch + 1}/{cfg.epochs}") as bar:
                for i, batch in enumerate(bar, start=first):
                    draws = StepDraws(cfg.seed, step, global_batch, mine)
                    if schedule is not None:
                        lr = schedule.apply(optimizer, step)
                    ctx = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else nullcontext()
                    with ctx:
                        loss = net(batch, draws, step)
                    scaler.scale(loss).backward()
                    scaler.unscale_(optimizer)
                    gnorm = torch.nn.utils.clip_grad_norm_(params, clip)
                    scaler.step(optimizer)
                    scaler.update()
                    optimizer.zero_grad(set_to_none=True)
                    step += 1
                    seen += global_batch
                    # stay on the device: reading a CUDA value every step would stall the pipeline
                    sums.add(loss, gnorm)
                    if step % sums.read_every == 0 or i == steps_per_epoch - 1:
                        read_sums()
                        bar.set_postfix(loss=f"{sums.last_loss:.4f}", lr=f"{lr:.2e}")
                    if stop_after_steps is not None and step >= stop_after_steps:
                        return {"stopped_at_step": step}
                    if step >= last_step:  # max_steps (or the last step): the epoch-end work below, then the end
                        break
                    due = cfg.checkpoint_every_steps > 0 and step % cfg.checkpoint_every_steps == 0
                    if i == steps_per_epoch - 1:
                        # at an epoch's last step the save waits for the epoch-end work (selection, history), so
                        # a resumed run never skips an epoch end
                        save_after_epoch = due
                        continue
                    save_or_stop(due)
            read_sums()
            elapsed = time.perf_counter() - t0
            mean_loss, mean_gnorm = sums.epoch_means(env)
            metrics = {"loss": mean_loss, "grad_norm": mean_gnorm, **({"lr": lr} if schedule is not None else {}),
                       "samples_per_s": seen / elapsed if elapsed > 0 else float("nan")}
            metrics = ddp.broadcast_object(metrics, env)  # one history in every process (the timing is rank 0's)
            if hooks.epoch_end is not None:
                metrics.update(ddp.broadcast_object(hooks.epoch_end(epoch + 1), env))
            history.append({"epoch": epoch + 1, **metrics})
            if main:
                log.info("%s epoch %d/%d: %s", desc, epoch + 1, cfg.epochs,
                         ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
            if log_to is not None:
                log_to.log_metrics(metrics, step=epoch + 1)
            last = epoch + 1 == cfg.epochs
            if hooks.grid is not None and log_to is not None and (
                    last or (hooks.grid_every_epochs > 0 and (epoch + 1) % hooks.grid_every_epochs == 0)):
                picture = hooks.grid(epoch + 1)
                if picture is not None:
                    log_to.log_image(picture, f"{desc}_epoch{epoch + 1:04d}.png")
            if last_step < total_steps and step >= last_step:
                break  # max_steps reached: saved and exported below
            if not last:  # (after the last epoch only the export is left: it runs)
                save_or_stop(save_after_epoch)

    if main:
        write_state()  # a crash while exporting still resumes at the end
        export(Finished(history=history, step=step, steps_per_epoch=steps_per_epoch, optimizer=optimizer,
                        scaler=scaler))
        if not cfg.keep_resume:
            resume_path.unlink(missing_ok=True)
            hash_cache_path_for(out_path).unlink(missing_ok=True)
    ddp.barrier(env)  # the output exists when any process returns
    return {"steps": step, "steps_per_epoch": steps_per_epoch, "epochs": cfg.epochs, "max_steps": cfg.max_steps,
            "resumed": resumed is not None,
            "seconds": time.perf_counter() - t_start, "device": str(device), "world_size": env.world_size,
            "batch_size": cfg.batch_size, "global_batch": global_batch,
            "precision": "fp32" if amp_dtype is None else str(amp_dtype).removeprefix("torch."),
            "final_loss": history[-1]["loss"] if history else None, "history": history}
