"""Stage B's image prior: the class-conditional LDM (CompVis's cin256 "label2img" structure; embedded demo only).

The VQ comes from the autoencoder checkpoint and stays frozen; the UNet and the class
embedder (one context token per class plus a 'no class' entry for classifier-free
guidance, `cond_drop_prob`) train on the images and their labels with the diffusion
loss (min-SNR weighting `snr_gamma`). The loop, resuming and DDP: training.engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mindvis.checkpoints.compvis_ldm import (
    export_compvis_state,
    read_vq_checkpoint,
    save_compvis_checkpoint,
    vq_from_compvis,
)
from mindvis.data.images import resize_images
from mindvis.models.ldm.dc_ldm import PRIOR_TRAINABLE, build_label_ldm
from mindvis.models.ldm.presets import LdmModelConfig, LdmSpec, VqSpec, resolve_ldm_spec, spec_to_dict
from mindvis.models.ldm.sampling import SamplerConfig, sample_images
from mindvis.training import distributed as ddp
from mindvis.training.engine import LoopHooks, digest, run_loop, start_process
from mindvis.training.input_identity import hash_cache_path_for, input_identity
from mindvis.training.ldm_common import LdmLoopConfig, augment, step_diffusion_loss
from mindvis.utils.images import tile
from mindvis.utils.seeding import seed_everything


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

    `env` None: one process, or the DDP group when launched with WORLD_SIZE > 1 (see training.engine).
    """
    env, device = start_process(cfg, env)
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

    def export(done):
        mindvis = {"format": "mindvis.label2img/1", "spec": spec_to_dict(spec), "n_classes": n_classes,
                   "class_names": list(class_names or []), "epochs": cfg.epochs, "seed": cfg.seed,
                   "autoencoder": str(autoencoder), "final": done.history[-1] if done.history else {}, **(info or {})}
        save_compvis_checkpoint(out, export_compvis_state(model), mindvis)

    fingerprint = {"stage": "label2img", "data": digest(data, y), "spec": str(spec_to_dict(spec)),
                   "autoencoder": input_identity(autoencoder, hash_cache_path_for(out)), "n_classes": n_classes,
                   **{k: getattr(cfg, k) for k in ("epochs", "lr", "weight_decay", "clip_grad",
                                                   "crop_p", "crop_ratio", "seed", "cond_drop_prob", "snr_gamma")}}
    hooks = LoopHooks(step_loss, grid=grid, grid_every_epochs=cfg.grid_every_epochs)
    result = run_loop(model, int(data.shape[0]), cfg, out, fingerprint, hooks, export, tracker=tracker,
                      stop_after_steps=stop_after_steps, desc="label2img", env=env)
    if "stopped_at_step" in result:
        return result
    result.update({"n_images": int(data.shape[0]), "n_classes": n_classes, "spec": spec_to_dict(spec),
                   "trainable_parameters": sum(p.numel() for _, p in model.trainable_named_parameters()),
                   "autoencoder_dropped": vq_report.reasons()})
    return result


