"""Stage B: fine-tune the double-conditioned LDM (DC-LDM) on one subject's (fMRI, image) pairs.

The prior's class embedder is replaced by the stage A encoder + mappers + time branch
(`build_stage_b`); the reference's parameter set trains (`trainable`) with the diffusion
loss of the step's draws (ldm_common). The loop, resuming and DDP: training.engine.

Checkpoint selection (`protocol`), every `select_every_epochs` epochs:
    clean      a seeded `val_fraction` of the training pairs is held out (not trained on) and
               scores the epoch; the best epoch is kept
    reference  MinD-Vis's choice: trains on all pairs and scores on the TEST set; the output
               config and the MLflow run are tagged test_set_exposed=true
The score (`select_metric`): the diffusion loss of the scoring pairs at fixed noise
(`loss`, cheap and deterministic), or pair-wise pixel-correlation identification
of K samples per pair (`pixel_identification`; the reference scores its test-set
samples with its classification metric). With several processes, selection runs in
every process on identical weights (sampling is split between them and gathered) and
rank 0's figures are kept.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mindvis.checkpoints.compvis_ldm import (
    ImportReport,
    read_compvis_ldm,
    read_vq_checkpoint,
    unet_from_compvis,
    vq_from_compvis,
)
from mindvis.checkpoints.mindvis_encoder import load_mbm_checkpoint
from mindvis.checkpoints.mindvis_ldm import finetuned_config, save_finetuned
from mindvis.data.conventions import PROTOCOLS, split_holdout
from mindvis.data.images import to_hwc
from mindvis.data.normalisation import resolve_normalisation
from mindvis.data.pairs import load_pairs
from mindvis.metrics.identification import pairwise_identification
from mindvis.models.ldm.conditioning import FmriConditioner
from mindvis.models.ldm.dc_ldm import STAGE_B_REFERENCE, DcLdm
from mindvis.models.ldm.presets import spec_to_dict
from mindvis.models.ldm.sampling import SamplerConfig, sample_images
from mindvis.training import distributed as ddp
from mindvis.training.draws import step_generator
from mindvis.training.engine import LoopHooks, digest, run_loop, start_process
from mindvis.training.input_identity import hash_cache_path_for, input_identity
from mindvis.training.ldm_common import LdmLoopConfig, augment, step_diffusion_loss
from mindvis.utils.errors import ConfigError, InputDataError
from mindvis.utils.images import sample_grid
from mindvis.utils.seeding import seed_everything

log = logging.getLogger(__name__)

SELECT_METRICS = ("loss", "pixel_identification")
CONDITIONER_INITS = ("random", "prior")


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



@dataclass
class StageBModel:
    model: DcLdm
    report: ImportReport
    trainable_counts: dict[str, int]


def build_stage_b(prior: str | Path, encoder: str | Path, cfg: FinetuneLdmConfig,
                  autoencoder: str | Path | None = None) -> StageBModel:
    """The prior's UNet and VQ + the stage A encoder and fresh mappers / time branch (class embedder dropped;
    with conditioner_init: prior its 'no class' row seeds the context first)."""
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
    x = images.float().to(device) / 127.5 - 1.0  # the same inputs for every draw: converted once
    cond = torch.from_numpy(fmri)[:, None, :].to(device)
    total = 0.0
    for d in range(draws):
        total += float(model.diffusion_loss(x, cond, step_generator(seed, d, stream=9), 0.0, snr_gamma))
    model.train(was_training)
    return total / max(draws, 1)


def finetune_ldm(npz: str | Path, images: str | Path | None, encoder: str | Path, prior: str | Path,
                 out: str | Path, cfg: FinetuneLdmConfig, dataset: str = "god", autoencoder: str | Path | None = None,
                 tracker=None, stop_after_steps: int | None = None, env: ddp.DistEnv | None = None) -> dict[str, Any]:
    """Stage B on one subject: write `out` (MinD-Vis finetuned.pth layout) and return a summary.

    `env` None: one process, or the DDP group when launched with WORLD_SIZE > 1 (see training.engine);
    every process returns the same summary.
    """
    if cfg.protocol not in PROTOCOLS:
        raise ConfigError(f"protocol must be one of {PROTOCOLS}, got {cfg.protocol!r}")
    if cfg.select_metric not in SELECT_METRICS:
        raise ConfigError(f"select_metric must be one of {SELECT_METRICS}, got {cfg.select_metric!r}")
    normalisation = resolve_normalisation(cfg.normalisation, cfg.protocol, "stage_b.finetune")
    env, device = start_process(cfg, env)
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
        mine = ddp.shard(sel_fmri.shape[0], env)
        parts = ddp.gather_objects(samples_of(mine) if mine.size else None, env)
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
        value, metrics = ddp.broadcast_object(score(epoch), env)  # every process keeps the epoch rank 0 chose
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

    def export(done):
        if best:
            model.load_state_dict(best["state"], strict=False)
            log.info("selected epoch %d (score %.4f, %s)", best["epoch"], best["score"],
                     "TEST set" if exposed else "held-out training pairs")
        extra = {"stage": "B", "protocol": cfg.protocol, "test_set_exposed": exposed,
                 "selected_epoch": best.get("epoch", cfg.epochs), "selection_score": best.get("score"),
                 "trainable": list(cfg.trainable), "dataset": dataset, "npz": str(npz), "prior_checkpoint": str(prior),
                 "encoder_checkpoint": str(encoder), "norm_mean": train.norm_mean, "norm_std": train.norm_std,
                 "raw_voxels": train.raw_voxels, "roi": cfg.roi, "normalisation": normalisation,
                 "cond_drop_prob": cfg.cond_drop_prob}  # > 0: the model can be sampled with guidance
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
    hooks = LoopHooks(step_loss, epoch_end, grid, best_state=lambda: dict(best), load_best=load_best,
                      grid_every_epochs=cfg.grid_every_epochs)
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


