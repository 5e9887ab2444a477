"""Stage B's first part: the VQ autoencoder of the image prior (embedded demo only).

The real run uses CompVis's VQ-f4 inside the downloaded label2img checkpoint. Here the
same structure is trained on the stimulus images: loss L1 + mse_weight x MSE + the VQ
codebook/commitment term, on random patches (`patch_size`); unused codes are moved onto
batch latents early in training (`restart_every_steps`, on the global batch's latents so
every process keeps the same codebook). The loop, resuming and DDP: training.engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mindvis.checkpoints.compvis_ldm import save_compvis_checkpoint, vq_to_compvis
from mindvis.data.images import resize_images, to_hwc
from mindvis.models.ldm.autoencoder import build_vq, codebook_usage, restart_dead_codes
from mindvis.models.ldm.presets import LdmModelConfig, VqSpec, resolve_ldm_spec, spec_to_dict
from mindvis.training import distributed as ddp
from mindvis.training.engine import LoopHooks, digest, run_loop, start_process
from mindvis.training.ldm_common import LdmLoopConfig, augment, random_patches
from mindvis.utils.errors import ConfigError
from mindvis.utils.images import tile
from mindvis.utils.seeding import seed_everything


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

    `env` None: one process, or the DDP group when launched with WORLD_SIZE > 1 (see training.engine).
    """
    env, device = start_process(cfg, env)
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
            counters["restarted"] += restart_dead_codes(vq, ddp.gather_rows(h, env), draws.shared("restart"))
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

    def export(done):
        mindvis = {"format": "mindvis.vq/1", "vq": spec_to_dict(spec), "epochs": cfg.epochs, "seed": cfg.seed,
                   "final": done.history[-1] if done.history else {}, **(info or {})}
        save_compvis_checkpoint(out, vq_to_compvis(vq.state_dict(), spec), mindvis)

    fingerprint = {"stage": "autoencoder", "data": digest(data), "spec": str(spec_to_dict(spec)),
                   **{k: getattr(cfg, k) for k in ("epochs", "lr", "weight_decay", "clip_grad", "crop_p",
                                                   "crop_ratio", "seed", "restart_every_steps", "restart_until",
                                                   "patch_size", "mse_weight")}}

    hooks = LoopHooks(step_loss, epoch_end, grid, grid_every_epochs=cfg.grid_every_epochs)
    result = run_loop(vq, int(data.shape[0]), cfg, out, fingerprint, hooks, export, tracker=tracker,
                      stop_after_steps=stop_after_steps, desc="autoencoder", env=env)
    if "stopped_at_step" in result:
        return result
    final = result["history"][-1] if result["history"] else {}
    result.update({"n_images": int(data.shape[0]), "image_size": spec.resolution, "latent_size": spec.latent_size,
                   "codes_restarted": counters["restarted"], "vq": spec_to_dict(spec),
                   **{k: final.get(k) for k in ("train_psnr", "test_psnr_report_only", "codes_used", "perplexity")}})
    return result


