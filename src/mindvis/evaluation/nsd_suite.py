"""The NSD papers' low- and high-level suite (MindEye, Brain-Diffuser), per sample set.

* PixCorr: mean over images of the Pearson correlation between the flattened
  pixels of a reconstruction and its own ground truth (a raw mean, not an
  identification rate). MindEye first resizes to 425 px; we correlate at the
  images' own resolution (the demo's 64 px), which the metric's definition
  allows but shifts the value slightly.
* SSIM (grayscale): scikit-image `rgb2gray`, then `structural_similarity` with
  MindEye's settings: gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=1.0; mean over images.
* 2-way identification (chance 0.5) on features of a network: for each
  reconstruction, the fraction of other ground-truth images whose features are
  LESS correlated with the reconstruction's features than its own ground
  truth's (`identification.two_way_identification`). Networks: AlexNet layer 2
  (`features.4`) and layer 5 (`features.11`), InceptionV3 global pool, CLIP
  ViT-L/14 image embedding; each only when its weights are configured.
  (EfficientNet-B1 and SwAV distances are not computed.)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from mindvis.evaluation.identification import correlation_matrix, identification_rates

FeatureFn = Callable[[np.ndarray], dict[str, np.ndarray]]


def pixcorr_per_item(preds: np.ndarray, gts: np.ndarray) -> np.ndarray:
    """Per image: Pearson r(flattened reconstruction pixels, flattened own ground-truth pixels)."""
    return np.array([correlation_matrix(p[None], g[None])[0, 0] for p, g in zip(preds, gts)])


def pixcorr(preds: np.ndarray, gts: np.ndarray) -> float:
    """Mean over images of Pearson r(flattened reconstruction pixels, flattened own ground-truth pixels)."""
    return float(np.mean(pixcorr_per_item(preds, gts)))


def ssim_gray_per_item(preds: np.ndarray, gts: np.ndarray) -> np.ndarray:
    """Per image: grayscale SSIM (skimage rgb2gray; gaussian window sigma 1.5, population covariance, range 1)."""
    from skimage.color import rgb2gray
    from skimage.metrics import structural_similarity

    return np.array([
        structural_similarity(
            rgb2gray(p), rgb2gray(g), gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0
        )
        for p, g in zip(preds, gts)
    ])


def ssim_gray(preds: np.ndarray, gts: np.ndarray) -> float:
    """Mean grayscale SSIM (skimage rgb2gray; gaussian window sigma 1.5, population covariance, range 1)."""
    return float(np.mean(ssim_gray_per_item(preds, gts)))


def batched_features(module: torch.nn.Module, images: np.ndarray, batch_size: int = 32) -> dict[str, np.ndarray]:
    """Run a feature module (uint8 NCHW in; a tensor or a dict of tensors out) over uint8 NHWC images."""
    device = next(module.parameters()).device
    chunks: dict[str, list[np.ndarray]] = {}
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).permute(0, 3, 1, 2)
            out = module(x.to(device))
            out = out if isinstance(out, dict) else {"features": out}
            for name, value in out.items():
                chunks.setdefault(name, []).append(value.flatten(1).double().cpu().numpy())
    return {name: np.concatenate(parts) for name, parts in chunks.items()}


def nsd_item_scores(
    preds: np.ndarray, gts: np.ndarray, extractors: dict[str, FeatureFn], gt_features: dict[str, dict] | None = None
) -> dict[str, np.ndarray]:
    """What the suite's metrics are made of, for one sample set: "pixcorr" and "ssim_gray" (n,) per image,
    and "two_way_<feature name>" (n, n) feature correlations, generated i vs ground truth j.

    extractors: name -> function(images) -> {feature name: (n, D) array}. gt_features caches the
    ground truth's features across sample sets (filled in place when given).
    """
    out = {"pixcorr": pixcorr_per_item(preds, gts), "ssim_gray": ssim_gray_per_item(preds, gts)}
    for name, fn in extractors.items():
        if gt_features is not None and name in gt_features:
            real = gt_features[name]
        else:
            real = fn(gts)
            if gt_features is not None:
                gt_features[name] = real
        fake = fn(preds)
        for feat_name, real_feats in real.items():
            out[f"two_way_{feat_name}"] = correlation_matrix(fake[feat_name], real_feats)
    return out


def nsd_metrics(
    preds: np.ndarray, gts: np.ndarray, extractors: dict[str, FeatureFn], gt_features: dict[str, dict] | None = None
) -> dict[str, float]:
    """PixCorr, grayscale SSIM and one 2-way identification per feature space, for one sample set.

    extractors: name -> function(images) -> {feature name: (n, D) array}; every feature
    name becomes `two_way_<feature name>`. gt_features caches the ground truth's features
    across sample sets (filled in place when given).
    """
    return summarise_nsd(nsd_item_scores(preds, gts, extractors, gt_features))


def summarise_nsd(items: dict[str, np.ndarray]) -> dict[str, float]:
    """`nsd_item_scores` -> the suite's numbers: means of the per-image values, 2-way identification rates."""
    return {name: float(identification_rates(v, higher_is_better=True).mean() if v.ndim == 2 else v.mean())
            for name, v in items.items()}
