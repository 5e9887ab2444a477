"""Stage B training loops: the VQ autoencoder, the class-conditional prior, and DC-LDM fine-tuning.

    train_autoencoder  VQ first stage on the stimulus images (embedded demo only; the real run
                       uses CompVis's VQ-f4 inside the downloaded label2img checkpoint)
    train_label2img    class-conditional LDM (the cin256 "label2img" structure) on images + labels,
                       VQ frozen (embedded demo only; the real run downloads it)
    finetune_ldm       stage B: the prior's class embedder is replaced by the stage A encoder +
                       mappers + time branch; trains the reference's parameter set on (fMRI, image) pairs

Shared recipe (MinD-Vis's public code): images to [-1, 1]; with probability
`crop_p` (0.5) a random crop of `crop_ratio` (0.8) of the side, resized back;
AdamW (torch defaults, weight decay 0.01 as the reference); gradient-norm
clipping; fp32 on CPU, mixed precision on GPU.

Determinism and resuming (as stage A): the item order of epoch e comes from
(seed, e), every random draw of step s (crops, noise, diffusion steps,
condition dropout, codebook restarts) from generators seeded by (seed, s, kind).
Every `checkpoint_every_steps` steps, on SIGTERM and at the end, the
trainable parameters, optimizer, scaler, history, the best
checkpoint so far and the RNG states go atomically to `<out>.resume.pt`;
rerunning the same command resumes and ends with exactly the weights of an
uninterrupted run. The output file is written last, atomically.

Several processes (DDP; as stage A, mindvis.training.distributed): launched
with WORLD_SIZE > 1 (torchrun) the loop joins the process group and wraps the
model in DistributedDataParallel; `batch_size` is per process, the global
batch is batch_size x processes. Every process draws the same global item
order and takes its slice of each global batch, and every per-item random
draw of a step is drawn for the GLOBAL batch and sliced (`StepDraws`), so 2
processes with batch b take the steps of 1 process with batch 2b (up to float
rounding) and a resume file is valid for any split of the same global batch.
Selection and evaluation run in every process on identical weights (sampling
is split between them and gathered) and rank 0's figures are broadcast;
only rank 0 writes the resume file and the output and logs to the tracker.

Checkpoint selection in stage B (`protocol`), every `select_every_epochs` epochs:
    clean      a seeded `val_fraction` of the training pairs is held out (not trained on) and
               scores the epoch; the best epoch is kept
    reference  MinD-Vis's choice: trains on all pairs and scores on the TEST set; the output
               config and the MLflow run are tagged test_set_exposed=true
The score (`select_metric`): the diffusion loss of the scoring pairs at fixed noise
(`loss`, cheap and deterministic), or pair-wise pixel-correlation identification
of K samples per pair (`pixel_identification`; the reference scores its test-set
samples with its classification metric).
"""

from __future__ import annotations

import hashlib
import logging
import math
import signal
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torch.distributed as dist
from tqdm import tqdm

from mindvis.checkpoints.compvis_ldm import (
    ImportReport,
    export_compvis_state,
    read_compvis_ldm,
    read_vq_checkpoint,
    save_compvis_checkpoint,
    unet_from_compvis,
    vq_from_compvis,
    vq_to_compvis,
)
from mindvis.checkpoints.mindvis_ldm import finetuned_config, save_finetuned
from mindvis.data.images import resize_images, to_hwc
from mindvis.data.normalisation import resolve_normalisation
from mindvis.data.pairs import load_pairs
from mindvis.metrics.identification import pairwise_identification
from mindvis.models.ldm.autoencoder import build_vq, codebook_usage, restart_dead_codes
from mindvis.models.ldm.conditioning import FmriConditioner
from mindvis.models.ldm.dc_ldm import PRIOR_TRAINABLE, STAGE_B_REFERENCE, DcLdm, build_label_ldm
from mindvis.models.ldm.presets import LdmModelConfig, LdmSpec, VqSpec, resolve_ldm_spec, spec_to_dict
from mindvis.models.ldm.sampling import SamplerConfig, sample_images
from mindvis.training.checkpointing import (
    capture_rng,
    load_resume_state,
    restore_rng,
    resume_path_for,
    save_resume_state,
)
from mindvis.training import distributed as ddp
from mindvis.training.input_identity import hash_cache_path_for, input_identity
from mindvis.data.conventions import PROTOCOLS, split_holdout
from mindvis.training.mbm_trainer import TrainingInterrupted, resolve_precision
from mindvis.utils.device import resolve_device, set_threads
from mindvis.utils.errors import ConfigError, InputDataError, MindVisError
from mindvis.utils.images import sample_grid, tile
from mindvis.utils.seeding import seed_everything

log = logging.getLogger(__name__)

SELECT_METRICS = ("loss", "pixel_identification")
CONDITIONER_INITS = ("random", "prior")


# -- configs ------------------------------------------------------------------------------------------
@dataclass
class LdmLoopConfig:
    """Keys every stage B loop shares."""

    epochs: int = 10  # passes over the training items
    batch_size: int = 16  # items per optimizer step PER PROCESS (as stage A): with N processes (torchrun / several
    #                        GPUs) a step takes N x batch_size items and follows the trajectory of 1 process with
    #                        batch N x batch_size; the incomplete last global batch of an epoch is dropped
    lr: float = 1e-4  # AdamW learning rate (constant, as the reference)
    weight_decay: float = 0.01  # AdamW weight decay (torch's default, as the reference)
    clip_grad: float = 0.5  # max gradient L2 norm; 0 disables
    crop_p: float = 0.5  # probability of the random-crop augmentation
    crop_ratio: float = 0.8  # crop side / image side (reference: 205 of 256 px)
    seed: int = 2022  # seeds init, item order and every random draw of a step
    checkpoint_every_steps: int = 200  # resumable checkpoint period in steps (0: at the end only)
    grid_every_epochs: int = 0  # log a sample grid to MLflow every K epochs (0: at the end only)
    precision: str = "auto"  # auto (CUDA: bf16 if supported else fp16; CPU: fp32) | fp32 | bf16 | fp16
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 1  # torch CPU threads (0 = torch's default); 1 is fastest for tiny models when jobs share cores
    keep_resume: bool = False  # keep <out>.resume.pt after a successful run
    max_steps: int | None = None  # stop after this many optimizer steps (None: no cap): the first max_steps
    #                               steps of the full run (schedules unchanged), then the normal outputs


@dataclass
class AutoencoderConfig(LdmLoopConfig):
    """`stage_b: autoencoder:` (embedded demo only). Loss: L1 + mse_weight x MSE + VQ codebook/commitment."""

    model: LdmModelConfig = field(default_factory=LdmModelConfig)  # only the vq_* keys and image_size matter
    epochs: int = 40
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 0.0
    clip_grad: float = 1.0
    mse_weight: float = 1.0  # weight of the squared error next to the L1 error (large colour errors learn faster)
    restart_every_steps: int = 25  # move unused codes onto batch latents every N steps (0: never)
    restart_until: float = 0.75  # ... during this first fraction of training
    patch_size: int = 0  # train on random square patches of this side (0: whole images); convolutional, so
    #                       the model then works on whole images, at a fraction of the cost per step
    eval_every_epochs: int = 10  # reconstruction PSNR and codebook use every N epochs (and at the end)


@dataclass
class Label2ImgConfig(LdmLoopConfig):
    """`stage_b: label2img:` (embedded demo only): the class-conditional prior, VQ frozen."""

    model: LdmModelConfig = field(default_factory=LdmModelConfig)  # UNet sizes; the VQ comes from --autoencoder
    epochs: int = 120
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.0
    clip_grad: float = 1.0
    cond_drop_prob: float = 0.1  # labels replaced by the 'no class' entry (classifier-free guidance)
    crop_p: float = 0.0  # no random crops: a crop of 0.8 of the side cuts the digits (the prior then drew the
    #                      right digit for 54% of labels instead of 86%, guidance 3)
    snr_gamma: float = 5.0  # min-SNR loss weighting (0 = plain MSE); speeds up training the prior from scratch
    grid_every_epochs: int = 100
    grid_sampler: SamplerConfig = field(default_factory=lambda: SamplerConfig(n_samples=2))


@dataclass
class FinetuneLdmConfig(LdmLoopConfig):
    """`stage_b: finetune:` (stage B). Defaults: the embedded demo; the paper's values in comments."""

    epochs: int = 100  # paper: 500; 60 saved ~1/3 of the DAG's work but cost 0.03-0.15 identification PCC
    batch_size: int = 16  # paper: 5 (GOD) / 25 (BOLD5000)
    lr: float = 1e-3  # paper: 5.3e-5 (the demo's tiny model from a prior trained in minutes needs more)
    weight_decay: float = 0.01  # paper: 0.01 (torch AdamW default)
    clip_grad: float = 0.5  # paper: 0.5
    crop_p: float = 0.0  # paper: 0.5 (crop 0.8 of the side); on the digits crops took 5-way from 0.80 to 0.22
    trainable: list[str] = field(default_factory=lambda: list(STAGE_B_REFERENCE))  # + "unet" to unfreeze more
    use_time_cond: bool = True  # the time-conditioning branch (paper: on)
    conditioner_init: str = "random"  # random (paper) | prior: context starts at the prior's 'no class'
    #                                   embedding, the time branch at zero (FmriConditioner.start_from_prior)
    init_fmri_scale: float = 0.1  # with conditioner_init prior: the dim mapper's weight scale
    cond_drop_prob: float = 0.1  # paper: 0; trains the unconditional model classifier-free guidance needs
    snr_gamma: float = 5.0  # min-SNR loss weighting (paper: 0 = plain MSE); the conditioning's share of the
    #                         loss is small at low noise, so weighting those steps down speeds up stage B
    protocol: str = "clean"  # clean: select on held-out training pairs | reference: on the test set (leaks)
    normalisation: str = "auto"  # fMRI z-score: auto (as protocol) | clean (per-subject training statistics)
    #                              | reference (MinD-Vis's steps bit for bit; docs/reference.md sections 2-3)
    val_fraction: float = 0.1  # training pairs held out for selection (clean protocol)
    select_every_epochs: int = 10  # score and keep the best epoch every N epochs (0: keep the last)
    select_metric: str = "loss"  # loss: diffusion loss of the selection pairs at fixed noise (lower is better)
    #                              | pixel_identification: pair-wise pixel-correlation identification of samples
    select_loss_draws: int = 8  # fixed (noise, step) draws per pair for the selection loss
    select_sampler: SamplerConfig = field(default_factory=lambda: SamplerConfig(n_samples=2))  # samples for
    #                              pixel_identification selection and for the grids
    roi: str | None = None  # ROI of the fMRI; null = the dataset's default (GOD: VC, BOLD5000: all five ROIs)
    grid_every_epochs: int = 100


# -- small helpers -------------------------------------------------------------------------------------
def step_generator(seed: int, step: int, stream: int = 3) -> torch.Generator:
    """The generator of every random draw of one step: a function of (seed, step) only."""
    mixed = np.random.SeedSequence([seed & 0xFFFFFFFF, stream, step & 0xFFFFFFFF]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(mixed % (2**63)))


# Each kind of draw has its own stream, so a stage that skips one kind (no crops, no condition
# dropout) leaves the others unchanged.
DRAW_STREAMS = {"crop": 21, "crop_offset": 22, "patch_offset": 23, "noise": 24, "timestep": 25, "cond_drop": 26,
                "restart": 27}


class StepDraws:
    """Every random draw of one optimizer step, for this process's items.

    Per-item draws (`rand`, `randint`, `randn`: leading dimension = items) are
    made for the whole GLOBAL batch from a generator seeded by (seed, step,
    kind) and cut to this process's rows `rows` of it: every process sees the
    draws one process with the global batch would, whatever the split.
    `shared(kind)` is a generator for draws that belong to no item (codebook
    restarts): the same in every process.
    """

    def __init__(self, seed: int, step: int, global_batch: int, rows: slice | None = None):
        self.seed, self.step, self.global_batch = int(seed), int(step), int(global_batch)
        self.rows = rows if rows is not None else slice(0, self.global_batch)
        self.n = len(range(self.global_batch)[self.rows])

    def shared(self, kind: str) -> torch.Generator:
        if kind not in DRAW_STREAMS:
            raise KeyError(f"unknown kind of draw {kind!r} (known: {', '.join(DRAW_STREAMS)})")
        return step_generator(self.seed, self.step, DRAW_STREAMS[kind])

    def rand(self, kind: str, *shape: int) -> torch.Tensor:
        return torch.rand(self.global_batch, *shape, generator=self.shared(kind))[self.rows]

    def randint(self, kind: str, high: int, *shape: int) -> torch.Tensor:
        return torch.randint(0, high, (self.global_batch, *shape), generator=self.shared(kind))[self.rows]

    def randn(self, kind: str, *shape: int) -> torch.Tensor:
        return torch.randn(self.global_batch, *shape, generator=self.shared(kind))[self.rows]


class _GeneratorDraws:
    """StepDraws' interface over one plain generator for `n` items (draws in call order, kinds ignored)."""

    def __init__(self, generator: torch.Generator, n: int):
        self.generator, self.n = generator, n

    def shared(self, kind: str) -> torch.Generator:
        return self.generator

    def rand(self, kind: str, *shape: int) -> torch.Tensor:
        return torch.rand(self.n, *shape, generator=self.generator)

    def randint(self, kind: str, high: int, *shape: int) -> torch.Tensor:
        return torch.randint(0, high, (self.n, *shape), generator=self.generator)

    def randn(self, kind: str, *shape: int) -> torch.Tensor:
        return torch.randn(self.n, *shape, generator=self.generator)


def _draws_for(rng: torch.Generator | StepDraws | _GeneratorDraws, n: int) -> StepDraws | _GeneratorDraws:
    draws = _GeneratorDraws(rng, n) if isinstance(rng, torch.Generator) else rng
    if draws.n != n:
        raise ValueError(f"draws for {draws.n} items given for a batch of {n}")
    return draws


def digest(*arrays: np.ndarray | torch.Tensor) -> str:
    sha = hashlib.sha256()
    for a in arrays:
        a = a.numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
        sha.update(str(a.shape).encode())
        sha.update(np.ascontiguousarray(a).tobytes())
    return sha.hexdigest()[:16]


def augment(batch: torch.Tensor, generator: torch.Generator | StepDraws, crop_p: float,
            crop_ratio: float) -> torch.Tensor:
    """uint8 (B, 3, S, S) -> float in [-1, 1]; each image with probability crop_p is randomly cropped and resized.

    `generator`: a torch generator (draws for these B images) or the step's StepDraws (this
    process's share of the global batch's draws).
    """
    x = batch.float() / 127.5 - 1.0
    size = x.shape[-1]
    crop = max(1, int(round(crop_ratio * size)))
    draws = _draws_for(generator, x.shape[0])
    do_crop = draws.rand("crop") < crop_p
    offsets = draws.randint("crop_offset", size - crop + 1, 2)
    if crop >= size or not bool(do_crop.any()):
        return x
    out = x.clone()
    for i in torch.nonzero(do_crop).flatten().tolist():
        top, left = offsets[i].tolist()
        patch = x[i:i + 1, :, top:top + crop, left:left + crop]
        out[i] = F.interpolate(patch, size=(size, size), mode="bilinear", align_corners=False)[0]
    return out


def random_patches(x: torch.Tensor, size: int, generator: torch.Generator | StepDraws) -> torch.Tensor:
    """One random size x size patch per image (whole images when size is 0 or not smaller)."""
    side = x.shape[-1]
    if size <= 0 or size >= side:
        return x
    offsets = _draws_for(generator, x.shape[0]).randint("patch_offset", side - size + 1, 2).tolist()
    return torch.stack([img[:, t:t + size, l:l + size] for img, (t, l) in zip(x, offsets)])


# -- the training loss of a step -------------------------------------------------------------------------
def step_diffusion_loss(model: DcLdm, images: torch.Tensor, cond_input: torch.Tensor, draws: StepDraws,
                        cond_drop_prob: float = 0.0, snr_gamma: float = 0.0) -> torch.Tensor:
    """DcLdm's diffusion loss with its noise, steps and condition dropout taken from `draws`:
    each item's draws are its rows of the GLOBAL batch's draws, so the loss of a process's
    slice does not depend on how the global batch was split."""
    latents = model.encode_images(images)
    noise = draws.randn("noise", *latents.shape[1:])
    t = draws.randint("timestep", model.noise_scheduler.config.num_train_timesteps)
    drop = draws.rand("cond_drop") < cond_drop_prob if cond_drop_prob > 0 else None
    return model.loss_at(latents, cond_input, noise, t, drop, snr_gamma)


# -- the shared loop -------------------------------------------------------------------------------------
class _StopFlag:
    """Set by SIGTERM; checked after every step."""

    def __init__(self):
        self.raised = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame):
        log.warning("SIGTERM: saving a resumable checkpoint after the current step")
        self.raised = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


@dataclass
class LoopHooks:
    """What a stage plugs into the loop."""

    # (this process's items, this process's share of the step's draws, global step) -> loss, a mean over the items
    step_loss: Callable[[torch.Tensor, StepDraws, int], torch.Tensor]
    epoch_end: Callable[[int], dict[str, float]] | None = None  # epoch (1-based) -> metrics (may update best);
    #                                                              runs in every process, rank 0's figures are kept
    grid: Callable[[int], np.ndarray | None] | None = None  # epoch -> uint8 picture to log (rank 0 only: no
    #                                                          collectives in it)
    best_state: Callable[[], dict[str, Any]] | None = None  # state to keep in the resume file
    load_best: Callable[[dict[str, Any]], None] | None = None


# -- several processes ---------------------------------------------------------------------------------
DRAWS_VERSION = "global-batch/1"  # in the resume fingerprint: a file written with other draws is not resumed


def join_processes(device_name: str, env: ddp.DistEnv | None = None) -> tuple[ddp.DistEnv, torch.device]:
    """This process's place in the job and its device.

    With no `env`, joins the process group when launched with WORLD_SIZE > 1 (torchrun,
    or spawned test processes) and runs as the only process otherwise.
    """
    if env is None:
        env = ddp.init_distributed(resolve_device(device_name, ddp.env_from_environment().local_rank).type)
    return env, resolve_device(device_name, env.local_rank)


def broadcast_object(obj: Any, env: ddp.DistEnv) -> Any:
    """Rank 0's `obj` in every process: figures and decisions that must not differ between processes."""
    if not env.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj: Any, env: ddp.DistEnv) -> list[Any]:
    """Every process's `obj`, in rank order, in every process."""
    if not env.distributed:
        return [obj]
    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def gather_rows(t: torch.Tensor, env: ddp.DistEnv) -> torch.Tensor:
    """The processes' equally shaped tensors joined along dim 0 in rank order: the global batch's rows."""
    if not env.distributed:
        return t
    parts = [torch.empty_like(t) for _ in range(env.world_size)]
    dist.all_gather(parts, t.detach().contiguous())
    return torch.cat(parts)


def shard(n: int, env: ddp.DistEnv) -> np.ndarray:
    """This process's contiguous share of n items (rank order = item order, for gathering)."""
    return np.array_split(np.arange(n), env.world_size)[env.rank]


def _global_step_figures(loss: torch.Tensor, stop_raised: bool, env: ddp.DistEnv) -> tuple[float, bool]:
    """The global batch's loss (mean of the processes' means) and whether any process got SIGTERM.

    One small collective per step: every process sees the same loss (a non-finite one stops
    all of them at the same step) and stops at the same step.
    """
    if not env.distributed:
        return float(loss.detach()), stop_raised
    t = torch.stack([loss.detach().float().reshape(()), torch.tensor(float(stop_raised), device=loss.device)])
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t[0]) / env.world_size, bool(t[1] > 0)


class _StepModule(torch.nn.Module):
    """What DDP wraps: one step's loss. A stage calls several parts of its model per step
    (encoder, conditioner, UNet), not one forward; DDP syncs what runs inside its forward."""

    def __init__(self, model: torch.nn.Module, step_loss: Callable[[torch.Tensor, StepDraws, int], torch.Tensor]):
        super().__init__()
        self.model = model
        self.step_loss = step_loss

    def forward(self, idx: torch.Tensor, draws: StepDraws, step: int) -> torch.Tensor:
        return self.step_loss(idx, draws, step)


# -- the loop -------------------------------------------------------------------------------------------
def run_loop(model: torch.nn.Module, n_items: int, cfg: LdmLoopConfig, out_path: str | Path,
             fingerprint: dict[str, Any], hooks: LoopHooks, export: Callable[[list[dict]], None],
             tracker=None, stop_after_steps: int | None = None, desc: str = "train",
             env: ddp.DistEnv | None = None) -> dict[str, Any]:
    """Train the parameters of `model` that require grad; resumable; `export(history)` writes the output.

    `env`: this process among several DDP processes (None: the only one). With several, the
    process group is joined (`join_processes`) and `model` sits on this process's device;
    `cfg.batch_size` is per process. Only rank 0 writes files and logs to `tracker`.
    """
    env = env or ddp.DistEnv()
    main = env.is_main
    device = next(model.parameters()).device
    amp_dtype, use_scaler = resolve_precision(cfg.precision, device)
    out_path = Path(out_path)
    resume_path = resume_path_for(out_path)
    global_batch = cfg.batch_size * env.world_size
    if cfg.batch_size < 1 or n_items // global_batch < 1:
        raise ConfigError(f"batch_size={cfg.batch_size} x {env.world_size} process(es) exceeds the {n_items} "
                          "training items: lower batch_size")
    steps_per_epoch = n_items // global_batch
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None and cfg.max_steps < 1:
        raise ConfigError(f"max_steps must be >= 1 or null, got {cfg.max_steps}")
    last_step = total_steps if cfg.max_steps is None else min(total_steps, int(cfg.max_steps))
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ConfigError("nothing to train: the trainable set is empty")
    params = [p for _, p in named]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
    order_gen = torch.Generator()
    # the global batch, not the split: a resume file is valid for any number of processes that
    # make the same global batch (they take the same steps)
    fingerprint = dict(fingerprint, n_items=n_items, global_batch=global_batch, draws=DRAWS_VERSION,
                       trainable=digest(np.array(sorted(n for n, _ in named))), precision=f"{amp_dtype}/{use_scaler}")

    step, history = 0, []
    resumed = load_resume_state(resume_path, fingerprint)
    if resumed is not None:
        model.load_state_dict(resumed["trainable"], strict=False)
        optimizer.load_state_dict(resumed["optimizer"])
        scaler.load_state_dict(resumed["scaler"])
        restore_rng(resumed["rng"], order_gen)
        step, history = int(resumed["step"]), list(resumed["history"])
        if hooks.load_best is not None and resumed.get("best"):
            hooks.load_best(resumed["best"])
        log.info("resumed from %s at step %d/%d", resume_path, step, total_steps)

    net: torch.nn.Module = _StepModule(model, hooks.step_loss)
    if env.distributed:
        # device_ids None: DDP would move the inputs, CPU item indices included, onto the GPU.
        # find_unused_parameters: a trainable set can hold parameters the loss never reaches (the
        # stage A encoder's cls token in stage B); their gradients stay None, as in one process.
        net = torch.nn.parallel.DistributedDataParallel(net, device_ids=None, find_unused_parameters=True)

    def write_state() -> None:
        save_resume_state(resume_path, {
            "fingerprint": fingerprint, "step": step, "history": history,
            "trainable": {n: p.detach().cpu().clone() for n, p in named},
            "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "rng": capture_rng(order_gen),
            "best": hooks.best_state() if hooks.best_state is not None else {}, "world_size": env.world_size,
        })

    def save_state() -> None:
        if main:
            write_state()
        ddp.barrier(env)  # nobody runs ahead of (or exits before) a state that is still being written

    clip = cfg.clip_grad if cfg.clip_grad and cfg.clip_grad > 0 else math.inf
    # rank 0 logs; a disabled tracker (--no-tracking) would only waste the grid's sampling
    log_to = tracker if main and tracker is not None and getattr(tracker, "enabled", True) else None
    mine = slice(env.rank * cfg.batch_size, (env.rank + 1) * cfg.batch_size)  # this process's rows of a global batch
    model.train()
    t_start = time.perf_counter()
    with _StopFlag() as stop:
        for epoch in range(step // steps_per_epoch, cfg.epochs):
            if step >= last_step:
                break
            first = step - epoch * steps_per_epoch
            order = ddp.epoch_order(cfg.seed, epoch, n_items, order_gen)
            t0, seen, loss_sum, gnorm_sum, n_steps = time.perf_counter(), 0, 0.0, 0.0, 0
            save_after_epoch = False
            bar = tqdm(range(first, steps_per_epoch), disable=None if main else True, leave=False,
                       desc=f"{desc} epoch {epoch + 1}/{cfg.epochs}")
            for i in bar:
                idx = order[ddp.local_rows(order, i, cfg.batch_size, env)]
                draws = StepDraws(cfg.seed, step, global_batch, mine)
                ctx = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else nullcontext()
                with ctx:
                    loss = net(idx, draws, step)
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                gnorm = torch.nn.utils.clip_grad_norm_(params, clip)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                seen += global_batch
                value, stopping = _global_step_figures(loss, stop.raised, env)
                if not math.isfinite(value):
                    raise MindVisError(f"{desc}: loss became non-finite at step {step}; lower lr or use fp32")
                loss_sum += value
                gnorm_sum += float(gnorm)
                n_steps += 1
                bar.set_postfix(loss=f"{value:.4f}")
                if stop_after_steps is not None and step >= stop_after_steps:
                    bar.close()
                    return {"stopped_at_step": step}
                if step >= last_step:  # max_steps (or the last step): the epoch-end work below, then the end
                    break
                due = cfg.checkpoint_every_steps > 0 and step % cfg.checkpoint_every_steps == 0 and step < total_steps
                if i == steps_per_epoch - 1:
                    # at an epoch's last step the save waits for the epoch-end work (selection, history), so
                    # a resumed run never skips an epoch end
                    save_after_epoch = due
                    continue
                if due or stopping:
                    save_state()
                if stopping:
                    bar.close()
                    raise TrainingInterrupted(step, resume_path)
            bar.close()
            elapsed = time.perf_counter() - t0
            metrics = {"loss": loss_sum / max(n_steps, 1), "grad_norm": gnorm_sum / max(n_steps, 1),
                       "samples_per_s": seen / elapsed if elapsed > 0 else float("nan")}
            metrics = broadcast_object(metrics, env)  # one history in every process (the timing is rank 0's)
            if hooks.epoch_end is not None:
                metrics.update(broadcast_object(hooks.epoch_end(epoch + 1), env))
            history.append({"epoch": epoch + 1, **metrics})
            if main:
                log.info("%s epoch %d/%d: %s", desc, epoch + 1, cfg.epochs,
                         ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
            if log_to is not None:
                log_to.log_metrics(metrics, step=epoch + 1)
            last = epoch + 1 == cfg.epochs
            if hooks.grid is not None and log_to is not None and (
                    last or (cfg.grid_every_epochs > 0 and (epoch + 1) % cfg.grid_every_epochs == 0)):
                picture = hooks.grid(epoch + 1)
                if picture is not None:
                    log_to.log_image(picture, f"{desc}_epoch{epoch + 1:04d}.png")
            if last_step < total_steps and step >= last_step:
                break  # max_steps reached: saved and exported below
            stopping = ddp.any_rank(stop.raised, env, device)
            if (save_after_epoch or stopping) and not last:
                save_state()
            if stopping and not last:
                raise TrainingInterrupted(step, resume_path)

    if main:
        write_state()  # a crash while exporting still resumes at the end
        export(history)
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


# -- stage: VQ autoencoder ---------------------------------------------------------------------------------
def _psnr(vq, images: torch.Tensor, device) -> float:
    vq.eval()
    errs = []
    with torch.no_grad():
        for start in range(0, images.shape[0], 32):
            x = images[start:start + 32].to(device).float() / 127.5 - 1.0
            rec = vq(x).sample.clamp(-1, 1)
            errs.append(((rec - x) ** 2).mean(dim=(1, 2, 3)).cpu())
    vq.train()
    mse = torch.cat(errs) / 4.0  # [-1, 1] -> [0, 1] scale
    return float((10 * torch.log10(1.0 / mse.clamp_min(1e-10))).mean())


def train_autoencoder(images: np.ndarray, cfg: AutoencoderConfig, out: str | Path, tracker=None,
                      eval_images: np.ndarray | None = None, stop_after_steps: int | None = None,
                      info: dict[str, Any] | None = None, env: ddp.DistEnv | None = None) -> dict[str, Any]:
    """Train the VQ first stage on uint8 (n, H, W, 3) images; write `out` in CompVis VQ layout.

    `env` None: one process, or the DDP group when launched with WORLD_SIZE > 1 (see run_loop).
    """
    set_threads(cfg.threads)
    env, device = join_processes(cfg.device, env)
    spec: VqSpec = resolve_ldm_spec(cfg.model).vq
    if cfg.patch_size % spec.downsampling:
        raise ConfigError(f"patch_size {cfg.patch_size} must be a multiple of the VQ's downsampling "
                          f"{spec.downsampling}")
    data = resize_images(images, spec.resolution)
    held = resize_images(eval_images, spec.resolution) if eval_images is not None else None
    seed_everything(cfg.seed)
    vq = build_vq(spec).to(device)
    total_steps = cfg.epochs * max(data.shape[0] // max(cfg.batch_size * env.world_size, 1), 1)
    restart_until = int(cfg.restart_until * total_steps)
    counters = {"restarted": 0}

    def step_loss(idx, draws, step):
        x = random_patches(augment(data[idx], draws, cfg.crop_p, cfg.crop_ratio), cfg.patch_size, draws).to(device)
        h = vq.encode(x).latents
        if cfg.restart_every_steps > 0 and step % cfg.restart_every_steps == 0 and step < restart_until:
            # on the global batch's latents with a shared generator: the same codebook in every process
            counters["restarted"] += restart_dead_codes(vq, gather_rows(h, env), draws.shared("restart"))
        rec = vq.decode(h)
        err = rec.sample - x
        return err.abs().mean() + cfg.mse_weight * (err**2).mean() + rec.commit_loss.mean()

    def epoch_end(epoch):
        if epoch % max(cfg.eval_every_epochs, 1) and epoch != cfg.epochs:
            return {}
        with torch.no_grad():
            sample = data[: min(64, data.shape[0])].to(device).float() / 127.5 - 1.0
            usage = codebook_usage(vq, vq.encode(sample).latents)
        metrics = {"train_psnr": _psnr(vq, data, device), **usage}
        if held is not None:
            metrics["test_psnr_report_only"] = _psnr(vq, held, device)
        return metrics

    def grid(epoch):
        x = data[:8].to(device)
        with torch.no_grad():
            rec = vq(x.float() / 127.5 - 1.0).sample
        rec_u8 = ((rec.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return tile([list(to_hwc(x)), list(to_hwc(rec_u8))])

    summary: dict[str, Any] = {}

    def export(history):
        mindvis = {"format": "mindvis.vq/1", "vq": spec_to_dict(spec), "epochs": cfg.epochs, "seed": cfg.seed,
                   "final": history[-1] if history else {}, **(info or {})}
        save_compvis_checkpoint(out, vq_to_compvis(vq.state_dict(), spec), mindvis)

    fingerprint = {"stage": "autoencoder", "data": digest(data), "spec": str(spec_to_dict(spec)),
                   **{k: getattr(cfg, k) for k in ("epochs", "lr", "weight_decay", "clip_grad", "crop_p",
                                                   "crop_ratio", "seed", "restart_every_steps", "restart_until",
                                                   "patch_size", "mse_weight")}}

    result = run_loop(vq, int(data.shape[0]), cfg, out, fingerprint, LoopHooks(step_loss, epoch_end, grid), export,
                      tracker=tracker, stop_after_steps=stop_after_steps, desc="autoencoder", env=env)
    if "stopped_at_step" in result:
        return result
    summary.update(result)
    summary.update({"n_images": int(data.shape[0]), "image_size": spec.resolution, "latent_size": spec.latent_size,
                    "codes_restarted": counters["restarted"], "vq": spec_to_dict(spec)})
    final = summary["history"][-1] if summary.get("history") else {}
    summary.update({k: final.get(k) for k in ("train_psnr", "test_psnr_report_only", "codes_used", "perplexity")})
    return summary


# -- stage: class-conditional prior ----------------------------------------------------------------------------
def spec_with_vq(model_cfg: LdmModelConfig, vq: VqSpec) -> LdmSpec:
    """The config's UNet sizes around a given VQ (the latent size and channels follow the VQ)."""
    base = resolve_ldm_spec(replace(model_cfg, image_size=vq.resolution))
    unet = replace(base.unet, sample_size=vq.latent_size, in_channels=vq.embed_dim, out_channels=vq.embed_dim)
    return LdmSpec(unet=unet, vq=vq, schedule=base.schedule, context_len=base.context_len).validate()


def train_label2img(images: np.ndarray, labels: np.ndarray, autoencoder: str | Path, cfg: Label2ImgConfig,
                    out: str | Path, tracker=None, class_names: list[str] | None = None,
                    stop_after_steps: int | None = None, info: dict[str, Any] | None = None,
                    env: ddp.DistEnv | None = None) -> dict[str, Any]:
    """Train the class-conditional LDM (frozen VQ); write `out` as a CompVis label2img checkpoint.

    `env` None: one process, or the DDP group when launched with WORLD_SIZE > 1 (see run_loop).
    """
    set_threads(cfg.threads)
    env, device = join_processes(cfg.device, env)
    vq_spec, vq_state, vq_report, _ = read_vq_checkpoint(autoencoder)
    spec = spec_with_vq(cfg.model, vq_spec)
    n_classes = int(max(int(labels.max()) + 1, len(class_names or [])))
    seed_everything(cfg.seed)
    model = build_label_ldm(spec, n_classes)
    model.vq.load_state_dict(vq_from_compvis(vq_state, model.vq.state_dict(), vq_spec, path=autoencoder))
    model.set_trainable(PRIOR_TRAINABLE)
    model.to(device)
    data = resize_images(images, spec.vq.resolution)
    y = torch.as_tensor(labels, dtype=torch.long)

    def step_loss(idx, draws, step):
        x = augment(data[idx], draws, cfg.crop_p, cfg.crop_ratio).to(device)
        return step_diffusion_loss(model, x, y[idx].to(device), draws, cfg.cond_drop_prob, cfg.snr_gamma)

    def grid(epoch):
        shown = torch.arange(min(n_classes, 16))
        samples, _ = sample_images(model, shown, cfg.grid_sampler, device=device)
        model.train()
        return tile([list(samples[:, k]) for k in range(samples.shape[1])])

    def export(history):
        mindvis = {"format": "mindvis.label2img/1", "spec": spec_to_dict(spec), "n_classes": n_classes,
                   "class_names": list(class_names or []), "epochs": cfg.epochs, "seed": cfg.seed,
                   "autoencoder": str(autoencoder), "final": history[-1] if history else {}, **(info or {})}
        save_compvis_checkpoint(out, export_compvis_state(model), mindvis)

    fingerprint = {"stage": "label2img", "data": digest(data, y), "spec": str(spec_to_dict(spec)),
                   "autoencoder": input_identity(autoencoder, hash_cache_path_for(out)), "n_classes": n_classes,
                   **{k: getattr(cfg, k) for k in ("epochs", "lr", "weight_decay", "clip_grad",
                                                   "crop_p", "crop_ratio", "seed", "cond_drop_prob", "snr_gamma")}}
    result = run_loop(model, int(data.shape[0]), cfg, out, fingerprint, LoopHooks(step_loss, grid=grid), export,
                      tracker=tracker, stop_after_steps=stop_after_steps, desc="label2img", env=env)
    if "stopped_at_step" in result:
        return result
    result.update({"n_images": int(data.shape[0]), "n_classes": n_classes, "spec": spec_to_dict(spec),
                   "trainable_parameters": sum(p.numel() for _, p in model.trainable_named_parameters()),
                   "autoencoder_dropped": vq_report.reasons()})
    return result


# -- stage B: DC-LDM fine-tuning ----------------------------------------------------------------------------------
@dataclass
class StageBModel:
    model: DcLdm
    report: ImportReport
    trainable_counts: dict[str, int]


def build_stage_b(prior: str | Path, encoder: str | Path, cfg: FinetuneLdmConfig,
                  autoencoder: str | Path | None = None) -> StageBModel:
    """The prior's UNet and VQ + the stage A encoder and fresh mappers / time branch (class embedder dropped;
    with conditioner_init: prior its 'no class' row seeds the context first)."""
    from mindvis.checkpoints.mindvis_encoder import load_mbm_checkpoint

    if cfg.conditioner_init not in CONDITIONER_INITS:
        raise ConfigError(f"conditioner_init must be one of {CONDITIONER_INITS}, got {cfg.conditioner_init!r}")
    from_prior = cfg.conditioner_init == "prior"
    loaded = read_compvis_ldm(prior, keep_class_embedder=from_prior)
    if from_prior and loaded.class_embedding is None:
        raise InputDataError(prior, "conditioner_init: prior needs the prior's class embedder "
                                    "(cond_stage_model.embedding.weight), which this checkpoint lacks")
    spec = loaded.spec
    vq_state = loaded.vq
    if autoencoder is not None:
        vq_spec, vq_state, _, _ = read_vq_checkpoint(autoencoder)
        if vq_spec != spec.vq:
            raise InputDataError(autoencoder, f"this VQ {spec_to_dict(vq_spec)} differs from the prior's "
                                              f"{spec_to_dict(spec.vq)}")
    enc = load_mbm_checkpoint(encoder, with_decoder=False)
    seed_everything(cfg.seed)  # mappers and the time branch start from seeded random weights
    conditioner = FmriConditioner(enc.model, spec.context_len, spec.unet.context_dim, spec.unet.time_embed_dim,
                                  use_time_cond=cfg.use_time_cond)
    if from_prior:
        conditioner.start_from_prior(loaded.class_embedding, cfg.init_fmri_scale)
    model = DcLdm(spec, conditioner)
    model.unet.load_state_dict(unet_from_compvis(loaded.unet, model.unet.state_dict(), spec.unet, path=prior))
    model.vq.load_state_dict(vq_from_compvis(vq_state, model.vq.state_dict(), spec.vq, path=autoencoder or prior))
    counts = model.set_trainable(cfg.trainable)
    log.info("stage B from %s + %s: trainable %s; prior keys dropped: %s", prior, encoder, counts,
             loaded.report.reasons())
    return StageBModel(model=model, report=loaded.report, trainable_counts=counts)


@torch.no_grad()
def heldout_loss(model: DcLdm, fmri: np.ndarray, images: torch.Tensor, draws: int, seed: int, snr_gamma: float,
                 device) -> float:
    """Diffusion loss of (fMRI, image) pairs at fixed noise and steps (no augmentation): comparable across epochs."""
    was_training = model.training
    model.eval()
    total = 0.0
    for d in range(draws):
        gen = step_generator(seed, d, stream=9)
        x = images.float().to(device) / 127.5 - 1.0
        total += float(model.diffusion_loss(x, torch.from_numpy(fmri)[:, None, :].to(device), gen, 0.0, snr_gamma))
    model.train(was_training)
    return total / max(draws, 1)


def finetune_ldm(npz: str | Path, images: str | Path | None, encoder: str | Path, prior: str | Path,
                 out: str | Path, cfg: FinetuneLdmConfig, dataset: str = "god", autoencoder: str | Path | None = None,
                 tracker=None, stop_after_steps: int | None = None, env: ddp.DistEnv | None = None) -> dict[str, Any]:
    """Stage B on one subject: write `out` (MinD-Vis finetuned.pth layout) and return a summary.

    `env` None: one process, or the DDP group when launched with WORLD_SIZE > 1 (see run_loop);
    every process returns the same summary.
    """
    if cfg.protocol not in PROTOCOLS:
        raise ConfigError(f"protocol must be one of {PROTOCOLS}, got {cfg.protocol!r}")
    if cfg.select_metric not in SELECT_METRICS:
        raise ConfigError(f"select_metric must be one of {SELECT_METRICS}, got {cfg.select_metric!r}")
    normalisation = resolve_normalisation(cfg.normalisation, cfg.protocol, "stage_b.finetune")
    set_threads(cfg.threads)
    env, device = join_processes(cfg.device, env)
    built = build_stage_b(prior, encoder, cfg, autoencoder)
    model = built.model.to(device)
    spec = model.spec
    num_voxels = model.conditioner.num_voxels
    train = load_pairs(npz, images, dataset, "train", num_voxels, spec.vq.resolution, cfg.roi, normalisation)
    exposed = cfg.protocol == "reference" and cfg.select_every_epochs > 0  # the test set chooses the epoch
    if cfg.protocol == "reference":
        fit_rows = np.arange(train.fmri.shape[0])
        sel = load_pairs(npz, images, dataset, "test", num_voxels, spec.vq.resolution, cfg.roi, normalisation)
        sel_fmri, sel_images = sel.fmri, sel.images
    else:
        fit_rows, held = split_holdout(train.fmri.shape[0], cfg.val_fraction if cfg.select_every_epochs else 0.0,
                                       cfg.seed)
        sel_fmri, sel_images = train.fmri[held], train.images[held]
    fmri = torch.from_numpy(train.fmri[fit_rows])[:, None, :]
    pictures = train.images[fit_rows]
    selecting = cfg.select_every_epochs > 0 and sel_fmri.shape[0] >= 2
    sel_gt = to_hwc(sel_images)
    best: dict[str, Any] = {}
    trainable_names = [n for n, _ in model.trainable_named_parameters()]

    def step_loss(idx, draws, step):
        x = augment(pictures[idx], draws, cfg.crop_p, cfg.crop_ratio).to(device)
        return step_diffusion_loss(model, x, fmri[idx].to(device), draws, cfg.cond_drop_prob, cfg.snr_gamma)

    def samples_of(rows: np.ndarray) -> np.ndarray:
        # per-item seeds (item_ids): a pair's samples do not depend on which others are sampled with it
        samples, _ = sample_images(model, torch.from_numpy(sel_fmri[rows])[:, None, :], cfg.select_sampler,
                                   item_ids=rows.tolist(), device=device)
        model.train()
        return samples

    def samples_of_selection_pairs() -> np.ndarray:
        """Every process samples its share of the pairs; all get the gathered samples (identical scores)."""
        mine = shard(sel_fmri.shape[0], env)
        parts = gather_objects(samples_of(mine) if mine.size else None, env)
        return np.concatenate([part for part in parts if part is not None])

    def score(epoch) -> tuple[float, dict[str, float]]:
        """Higher is better; and the metrics to log."""
        where = "test" if exposed else "val"
        if cfg.select_metric == "loss":
            value = heldout_loss(model, sel_fmri, sel_images, cfg.select_loss_draws, cfg.seed, cfg.snr_gamma, device)
            return -value, {f"{where}_loss": value}
        samples = samples_of_selection_pairs()
        last_samples["x"] = samples
        value = pairwise_identification(samples, sel_gt)
        return value, {f"{where}_pixel_identification": value}

    last_samples: dict[str, np.ndarray] = {}

    def epoch_end(epoch):
        if not selecting or (epoch % cfg.select_every_epochs and epoch != cfg.epochs):
            return {}
        value, metrics = broadcast_object(score(epoch), env)  # every process keeps the epoch rank 0 chose
        if not best or value > best["score"]:
            best.update(epoch=epoch, score=value, state={n: p.detach().cpu().clone()
                                                         for n, p in model.named_parameters() if n in trainable_names})
        return {**metrics, "best_epoch": float(best["epoch"])}

    def grid(epoch):
        if sel_fmri.shape[0] == 0:
            return None
        shown = min(8, sel_fmri.shape[0])
        samples = last_samples.pop("x", None)
        if samples is None:
            samples = samples_of(np.arange(shown))  # rank 0 alone: no collectives; only the shown rows
        return sample_grid(sel_gt[:shown], samples[:shown])

    def load_best(state):
        best.clear()
        best.update(state)

    def export(history):
        if best:
            model.load_state_dict(best["state"], strict=False)
            log.info("selected epoch %d (score %.4f, %s)", best["epoch"], best["score"],
                     "TEST set" if exposed else "held-out training pairs")
        extra = {"stage": "B", "protocol": cfg.protocol, "test_set_exposed": exposed,
                 "selected_epoch": best.get("epoch", cfg.epochs), "selection_score": best.get("score"),
                 "trainable": list(cfg.trainable), "dataset": dataset, "npz": str(npz), "prior_checkpoint": str(prior),
                 "encoder_checkpoint": str(encoder), "norm_mean": train.norm_mean, "norm_std": train.norm_std,
                 "raw_voxels": train.raw_voxels, "roi": cfg.roi, "normalisation": normalisation}
        config = finetuned_config(model, extra, lr=cfg.lr, num_epoch=cfg.epochs, batch_size=cfg.batch_size,
                                  crop_ratio=round(1.0 - cfg.crop_ratio, 6), clip_grad=cfg.clip_grad, seed=cfg.seed,
                                  num_samples=cfg.select_sampler.n_samples, ddim_steps=cfg.select_sampler.steps,
                                  dataset="GOD" if dataset == "god" else "BOLD5000")
        save_finetuned(out, model, config)

    if tracker is not None and env.is_main:
        tracker.set_tags({"test_set_exposed": str(exposed).lower(), "protocol": cfg.protocol})
    fingerprint = {"stage": "finetune_ldm", "data": digest(fmri, pictures), "selection": digest(sel_fmri),
                   **{name: input_identity(path, hash_cache_path_for(out))  # content, not place: a copy resumes
                      for name, path in (("prior", prior), ("encoder", encoder), ("autoencoder", autoencoder))},
                   "trainable_groups": ",".join(cfg.trainable),
                   "use_time_cond": cfg.use_time_cond, "protocol": cfg.protocol,
                   **{k: getattr(cfg, k) for k in ("epochs", "lr", "weight_decay", "clip_grad", "crop_p",
                                                   "crop_ratio", "seed", "cond_drop_prob", "select_every_epochs",
                                                   "val_fraction", "snr_gamma", "select_metric",
                                                   "select_loss_draws", "conditioner_init", "init_fmri_scale")},
                   "select_sampler": str(cfg.select_sampler)}
    hooks = LoopHooks(step_loss, epoch_end, grid, best_state=lambda: dict(best), load_best=load_best)
    result = run_loop(model, int(fmri.shape[0]), cfg, out, fingerprint, hooks, export, tracker=tracker,
                      stop_after_steps=stop_after_steps, desc="stage B", env=env)
    if "stopped_at_step" in result:
        return result
    result.update({"n_train_pairs": int(fmri.shape[0]), "n_selection_pairs": int(sel_fmri.shape[0]),
                   "protocol": cfg.protocol, "normalisation": normalisation, "test_set_exposed": exposed,
                   "selected_epoch": best.get("epoch"),
                   "selection_score": best.get("score"), "trainable_parameters": built.trainable_counts,
                   "prior_dropped": built.report.reasons(), "num_voxels": num_voxels, "raw_voxels": train.raw_voxels,
                   "n_tokens": model.conditioner.encoder.n_tokens})
    return result

