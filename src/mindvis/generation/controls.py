"""The controls a decoding result is judged against (Shirakawa et al. 2024, "Spurious reconstruction
from brain activity"): samples that must score at chance if the model reads the brain, and a
decoder with no generative model at all. Each is written in the samples.npz format, so
`mindvis evaluate` scores it with exactly the code that scores the model.

  shuffled_fmri    the stage B model conditioned on ANOTHER test item's fMRI: item i gets the fMRI of
                   item order[i], order a fixed derangement (no fixed point, seeded by `seed`); the
                   sampler, steps, guidance and starting noise of sample k of item i are the model's own
  prior_only       the condition dropped: every sample from the model's unconditional branch (the
                   all-zero context that classifier-free guidance uses, trained through cond_drop_prob),
                   same starting noise per (item, k) as the model's samples
  train_retrieval  for each test fMRI, the training image whose training fMRI correlates best with it
                   (Pearson over voxels, the model's view of the fMRI: ROI, normalisation, voxel count)
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from mindvis.data.pairs import load_pairs
from mindvis.metrics.identification import correlation_matrix
from mindvis.utils.device import resolve_device, set_threads
from mindvis.utils.seeding import derangement

log = logging.getLogger(__name__)


class Unconditioned:
    """The model with every fMRI condition replaced by its unconditional one; all else delegated."""

    def __init__(self, model):
        self._model = model

    def __getattr__(self, name):
        return getattr(self._model, name)

    def condition(self, fmri):
        return self._model.null_condition(fmri.shape[0], fmri.device)


def retrieve_training_items(test_fmri: np.ndarray, train_fmri: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index of the best-correlated training row per test row, that Pearson r)."""
    r = correlation_matrix(test_fmri, train_fmri)  # (n_test, n_train)
    best = r.argmax(axis=1)
    return best, r[np.arange(len(best)), best]


def control_samples(model, fmri, sampler, order: np.ndarray, device) -> dict[str, np.ndarray]:
    """The two generated controls for fMRI (n, 1, V): {"shuffled_fmri", "prior_only"} -> (n, K, H, W, 3) uint8.

    item_ids are the items' own positions, so sample k of item i starts from the noise of the model's
    sample k of item i: only the condition differs.
    """
    from mindvis.models.ldm.sampling import sample_images

    items = list(range(int(fmri.shape[0])))
    shuffled, _ = sample_images(model, fmri[np.asarray(order)], sampler, item_ids=items, device=device)
    # Guidance mixes the conditional and unconditional predictions, uncond + s * (cond - uncond): with the
    # condition dropped both are the unconditional one, so one UNet pass per step (scale 1) gives the same.
    prior, _ = sample_images(Unconditioned(model), fmri, replace(sampler, guidance_scale=1.0), item_ids=items,
                             device=device)
    return {"shuffled_fmri": shuffled, "prior_only": prior}


def generate_controls(model_path: str | Path, npz: str | Path, outs: dict[str, str | Path], cfg,
                      images: str | Path | None = None, dataset: str = "god") -> dict[str, Any]:
    """Write the three control sample files (`outs`: shuffled_fmri, prior_only, train_retrieval -> path)."""
    import torch

    from mindvis.generation import load_model, normalisation_for, sampler_config, samples_record
    from mindvis.utils.atomic import save_npz

    set_threads(cfg.threads)
    device = resolve_device(cfg.device)
    loaded, model = load_model(model_path, cfg, device)
    roi = cfg.roi or loaded.mindvis.get("roi")
    view = dict(num_voxels=model.conditioner.num_voxels, image_size=model.spec.vq.resolution, roi=roi,
                normalisation=normalisation_for(loaded))
    test = load_pairs(npz, images, dataset, "test", **view)
    train = load_pairs(npz, images, dataset, "train", **view)
    n = test.fmri.shape[0] if cfg.max_items <= 0 else min(cfg.max_items, test.fmri.shape[0])
    order = derangement(n, cfg.seed)
    sampler = sampler_config(cfg)
    log.info("controls: %d test items x %d samples (%s-%d), shuffled fMRI and prior only", n, cfg.n_samples,
             cfg.sampler, cfg.steps)
    generated = control_samples(model, torch.from_numpy(test.fmri[:n])[:, None, :], sampler, order, device)
    common = samples_record(test, n, cfg)
    save_npz(outs["shuffled_fmri"], samples=generated["shuffled_fmri"], fmri_order=order, **common)
    save_npz(outs["prior_only"], samples=generated["prior_only"], **common)
    best, r = retrieve_training_items(test.fmri[:n], train.fmri)
    retrieved = train.images_hwc()[best][:, None]  # (n, 1, H, W, 3): one "sample" per test item
    save_npz(outs["train_retrieval"], samples=retrieved, train_index=best, retrieval_r=r,
             train_image_index=train.image_index[best], **{**common, "n_samples": np.array(1)})
    return {"n_test": int(n), "n_samples": cfg.n_samples, "n_train": int(train.fmri.shape[0]),
            "fmri_order": order.tolist(), "mean_retrieval_r": float(r.mean()),
            "retrieved_distinct": int(len(np.unique(best)))}
