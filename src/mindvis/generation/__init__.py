"""Generation: K samples per test fMRI from a stage B model, saved as an npz and a PNG grid.

`generate_samples` is the library function behind `mindvis generate`:
    model   finetuned.pt (ours) or MinD-Vis's finetuned.pth, loaded without running pickled code
            (a MinD-Vis file needs its encoder's head count: `encoder_checkpoint`, fmri_encoder.pth
            beside it, or `encoder_num_heads`; and reads the prior's config.yaml when found)
    data    the subject's TEST fMRI (averaged per image), with the dataset's conventions
            (wrap padding, scalar z-score) and fitted to the model's number of voxels; the
            ground-truth test images resized to the model's size. Test normalisation: a
            MinD-Vis checkpoint gets the reference's ("reference": what its released weights
            saw, docs/reference.md §2-3), ours the one its training run recorded (else "clean");
            the log, the summary and the MLflow tags say which
    output  npz: samples (n_test, K, H, W, 3) uint8, ground_truth (n_test, H, W, 3) uint8,
            image_index (n_test,) row of test_images, test_labels (n_test,) when the npz has them,
            and the sampler settings (sampler, steps, eta, guidance_scale, seed, n_samples);
            PNG: one row per test image, ground truth | K samples.

The summary's `pixel_identification` is `mindvis.metrics.identification.pairwise_identification`,
the measure stage B checkpoint selection uses; the grid is `mindvis.utils.images.sample_grid`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mindvis.checkpoints.mindvis_ldm import load_finetuned
from mindvis.data.pairs import load_pairs
from mindvis.metrics.identification import pairwise_identification
from mindvis.models.ldm.sampling import SamplerConfig, sample_images
from mindvis.utils.atomic import save_npz
from mindvis.utils.device import resolve_device, set_threads
from mindvis.utils.errors import ConfigError
from mindvis.utils.images import sample_grid, save_png

log = logging.getLogger(__name__)


@dataclass
class GenerateConfig:
    """`stage_b: generate:`. Defaults: the embedded demo; the reference in comments."""

    sampler: str = "dpmpp"  # plms (reference) | ddim | dpmpp (DPM-Solver++ 2M)
    steps: int = 25  # reference: 250 (PLMS)
    eta: float = 0.0  # DDIM only
    guidance_scale: float = 3.0  # classifier-free guidance (reference: 1 = none; > 1 needs cond_drop_prob > 0)
    n_samples: int = 5  # K samples per test fMRI (reference: 5)
    seed: int = 2022  # sample k of test item i starts from noise seeded by (seed, i, k)
    batch_size: int = 50  # samples denoised together
    quantize_decode: bool = True  # quantise latents before decoding, as CompVis's LDM
    roi: str | None = None  # ROI; null = the training run's (else the dataset's default: GOD VC, BOLD5000 all)
    max_items: int = 0  # first N test items only (0 = all)
    grid_rows: int = 0  # rows in the PNG grid (0 = all test items)
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 1  # torch CPU threads (0 = torch's default); 1 is fastest for tiny models when jobs share cores
    # a MinD-Vis finetuned.pth does not hold its encoder's head count: its stage A fmri_encoder.pth
    # (null: the one beside the file) or the number itself; and the prior's config.yaml for the latent
    # side (null: config.yaml beside the file or in ../ldm/label2img/, else img_size / down-sampling)
    encoder_checkpoint: str | None = None
    encoder_num_heads: int | None = None
    prior_config: str | None = None


def normalisation_for(loaded) -> str:
    """The test-fMRI normalisation a checkpoint needs: MinD-Vis's own for its files, else its training run's."""
    if loaded.from_reference:
        return "reference"
    return str(loaded.mindvis.get("normalisation") or "clean")


def check_guidance(loaded, guidance_scale: float, model_path: str | Path) -> None:
    """Refuse classifier-free guidance for a model that never learnt the unconditional prediction it mixes in:
    with guidance > 1 such a model would be steered by an untrained all-zero context."""
    if guidance_scale == 1.0:
        return
    ready = loaded.trained_for_guidance
    if ready is False:
        origin = "a MinD-Vis checkpoint: its training never drops the condition" if loaded.from_reference else \
            "trained with stage_b.finetune.cond_drop_prob 0"
        raise ConfigError(f"{model_path}: guidance_scale {guidance_scale:g} needs a model trained with condition "
                          f"dropout, and this one is {origin}; set stage_b.generate.guidance_scale: 1 "
                          "(the reference's setting), or retrain with cond_drop_prob > 0")
    if ready is None:
        log.warning("%s does not record whether it was trained with condition dropout: guidance %g assumes it was",
                    model_path, guidance_scale)


def load_model(model_path: str | Path, cfg: GenerateConfig, device):
    """The checkpoint (a mindvis or MinD-Vis finetuned file) and its model on `device`, in eval mode."""
    loaded = load_finetuned(model_path, encoder_checkpoint=cfg.encoder_checkpoint,
                            encoder_num_heads=cfg.encoder_num_heads, prior_config=cfg.prior_config)
    check_guidance(loaded, cfg.guidance_scale, model_path)
    return loaded, loaded.model.to(device).eval()


def sampler_config(cfg: GenerateConfig) -> SamplerConfig:
    return SamplerConfig(sampler=cfg.sampler, steps=cfg.steps, eta=cfg.eta, guidance_scale=cfg.guidance_scale,
                         n_samples=cfg.n_samples, seed=cfg.seed, batch_size=cfg.batch_size,
                         quantize_decode=cfg.quantize_decode)


def samples_record(pairs, n: int, cfg: GenerateConfig) -> dict[str, np.ndarray]:
    """What every samples.npz carries besides its samples: the first n items' ground truth and the settings."""
    record = {"ground_truth": pairs.images_hwc()[:n], "image_index": pairs.image_index[:n],
              "sampler": np.array(cfg.sampler), "steps": np.array(cfg.steps), "eta": np.array(cfg.eta),
              "guidance_scale": np.array(cfg.guidance_scale), "seed": np.array(cfg.seed),
              "n_samples": np.array(cfg.n_samples)}
    if pairs.labels is not None:
        record["test_labels"] = pairs.labels[:n]
    return record


def generate_samples(model_path: str | Path, npz: str | Path, out: str | Path, grid: str | Path | None,
                     cfg: GenerateConfig, images: str | Path | None = None, dataset: str = "god",
                     tracker=None) -> dict[str, Any]:
    """Sample the test set of one subject; write the npz (and grid); return a summary."""
    set_threads(cfg.threads)
    device = resolve_device(cfg.device)
    loaded, model = load_model(model_path, cfg, device)
    spec = model.spec
    roi = cfg.roi or loaded.mindvis.get("roi")  # the training run's ROI unless the config names one
    normalisation = normalisation_for(loaded)
    log.info("%s checkpoint: test fMRI normalised as %r%s", "MinD-Vis" if loaded.from_reference else "mindvis",
             normalisation, " (the reference's steps, what its released weights saw)"
             if normalisation == "reference" else "")
    pairs = load_pairs(npz, images, dataset, "test", num_voxels=model.conditioner.num_voxels,
                       image_size=spec.vq.resolution, roi=roi, normalisation=normalisation)
    n = pairs.fmri.shape[0] if cfg.max_items <= 0 else min(cfg.max_items, pairs.fmri.shape[0])
    sampler = sampler_config(cfg)
    fmri = torch.from_numpy(pairs.fmri[:n])[:, None, :]
    log.info("sampling %d test items x %d samples with %s-%d on %s", n, cfg.n_samples, cfg.sampler, cfg.steps,
             device)
    samples, timing = sample_images(model, fmri, sampler, device=device)
    record = samples_record(pairs, n, cfg)
    gt = record["ground_truth"]
    save_npz(out, samples=samples, **record)
    if grid is not None:
        picture = sample_grid(gt, samples, cfg.grid_rows or None)
        save_png(picture, grid)
        if tracker is not None:
            tracker.log_image(picture, "samples_grid.png")
    summary = {"n_test": int(n), "n_samples": cfg.n_samples, "sampler": cfg.sampler, "steps": cfg.steps,
               "guidance_scale": cfg.guidance_scale, "image_size": int(gt.shape[1]), "device": str(device),
               "seconds": timing["seconds"], "seconds_per_image": timing["seconds_per_image"],
               "pixel_identification": pairwise_identification(samples, gt) if n >= 2 else None,
               "model_config_class": loaded.config_class,
               "checkpoint_origin": "mindvis-reference" if loaded.from_reference else "mindvis",
               "test_normalisation": normalisation, "layout_sources": dict(loaded.layout.sources),
               "test_set_exposed": bool(loaded.mindvis.get("test_set_exposed", loaded.from_reference)),
               "dropped_keys": loaded.report.reasons()}
    return summary
