"""The NSD papers' low- and high-level suite (MindEye 1/2, Brain-Diffuser), per sample set.

The protocol as MindEye's `final_evaluations` computes it (docs/reference.md section 8.3):

* PixCorr: mean over images of the Pearson correlation between the flattened RGB
  pixels of a reconstruction and of its own ground truth.
* SSIM: scikit-image `rgb2gray`, then `structural_similarity` with gaussian_weights=True,
  sigma=1.5, use_sample_covariance=False, data_range=1.0; mean over images.
* 2-way identification (chance 0.5) on a network's features: `r = corrcoef(real, pred)[:N, N:]`,
  `success = r < diag(r)` column by column, score = mean(success.sum(0)) / (N - 1). For the
  generated image j that is the share of the other ground truths i whose features correlate
  less with j's than j's own ground truth does; ties and undefined correlations (a constant
  feature vector: NaN in numpy) are never a success. `identification_rates` on the
  (generated x ground truth) correlation matrix is the same count; `feature_correlations`
  marks the undefined entries so that they lose as in numpy.
* Distances (lower is better): mean over images of scipy's correlation distance
  (1 - Pearson r) between the features of a reconstruction and of its own ground truth.

Resolutions (torchvision `Resize(size)`, bilinear, on the shorter side; network inputs
ImageNet- or CLIP-normalised, see nsd_networks.py):
  PixCorr, SSIM 425 | AlexNet(2) `features.4`, AlexNet(5) `features.11` 256 | InceptionV3
  avgpool 342 | CLIP ViT-L/14 image embedding 224 | EfficientNet-B1 avgpool 255 (distance) |
  SwAV ResNet-50 avgpool 224 (distance).
Every network runs only when its weights are configured as a local file.

Pixel resolution (`EvaluateConfig.nsd_pixels`): "mindeye" resizes reconstructions and
ground truth to 425 px (the ground truth may come as 425-px images of its own, as
`preprocess-nsd` writes them) before PixCorr and SSIM; "native" scores them at the images'
own resolution (the embedded demo's 64-px digits, where 425 px would only interpolate);
"auto" (default) is "mindeye" for dataset nsd and "native" for the others.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from mindvis.evaluation.identification import (  # noqa: F401 (two_way_identification: one home, re-exported)
    correlation_matrix,
    feature_correlations,
    identification_rates,
    two_way_identification,
)

FeatureFn = Callable[[np.ndarray], dict[str, np.ndarray]]

PIXEL_SIZE = 425  # MindEye's and Brain-Diffuser's side for PixCorr and SSIM
PIXEL_MODES = ("auto", "native", "mindeye")


def pixel_size_for(mode: str, dataset: str | None) -> int | None:
    """The side PixCorr/SSIM are computed at: 425 (the NSD papers) or None (the images' own)."""
    from mindvis.utils.errors import ConfigError

    if mode not in PIXEL_MODES:
        raise ConfigError(f"evaluate.nsd_pixels must be one of {list(PIXEL_MODES)}, got {mode!r}")
    if mode == "mindeye" or (mode == "auto" and str(dataset or "").lower() == "nsd"):
        return PIXEL_SIZE
    return None


def resize_short_side(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 (or 0..1 float) (n, H, W, 3) -> float64 in [0, 1], shorter side `size`: torchvision
    `Resize(size)` bilinear on float tensors (antialiased when shrinking), as MindEye applies it."""
    from torchvision.transforms.functional import InterpolationMode, resize

    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    x = x.double() / 255.0 if x.dtype == torch.uint8 else x.double()
    if min(x.shape[-2:]) != size:
        x = resize(x, size, interpolation=InterpolationMode.BILINEAR, antialias=True)
    return x.permute(0, 2, 3, 1).numpy()


def _at(images: np.ndarray, size: int | None) -> np.ndarray:
    return images if size is None else resize_short_side(images, size)


def pixcorr_per_item(preds: np.ndarray, gts: np.ndarray, size: int | None = None) -> np.ndarray:
    """Per image: Pearson r(flattened reconstruction pixels, flattened own ground-truth pixels),
    at `size` px (None: as given)."""
    preds, gts = _at(preds, size), _at(gts, size)
    return np.array([correlation_matrix(p[None], g[None])[0, 0] for p, g in zip(preds, gts)])


def pixcorr(preds: np.ndarray, gts: np.ndarray, size: int | None = None) -> float:
    """Mean over images of Pearson r(flattened reconstruction pixels, flattened own ground-truth pixels)."""
    return float(np.mean(pixcorr_per_item(preds, gts, size)))


def ssim_gray_per_item(preds: np.ndarray, gts: np.ndarray, size: int | None = None) -> np.ndarray:
    """Per image: grayscale SSIM (skimage rgb2gray; gaussian window sigma 1.5, population covariance,
    range 1), at `size` px (None: as given)."""
    from skimage.color import rgb2gray
    from skimage.metrics import structural_similarity

    preds, gts = _at(preds, size), _at(gts, size)
    return np.array([
        structural_similarity(
            rgb2gray(p), rgb2gray(g), gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0
        )
        for p, g in zip(preds, gts)
    ])


def ssim_gray(preds: np.ndarray, gts: np.ndarray, size: int | None = None) -> float:
    """Mean grayscale SSIM (skimage rgb2gray; gaussian window sigma 1.5, population covariance, range 1)."""
    return float(np.mean(ssim_gray_per_item(preds, gts, size)))


def correlation_distance_per_item(pred_features: np.ndarray, gt_features: np.ndarray) -> np.ndarray:
    """Per image: scipy's correlation distance 1 - r(own ground truth's features, reconstruction's)."""
    x = np.asarray(pred_features, np.float64).reshape(len(pred_features), -1)
    y = np.asarray(gt_features, np.float64).reshape(len(gt_features), -1)
    x = x - x.mean(axis=1, keepdims=True)
    y = y - y.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (x * y).sum(axis=1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))
    return 1.0 - r  # NaN for a constant vector, as scipy


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
    preds: np.ndarray,
    gts: np.ndarray,
    extractors: dict[str, FeatureFn],
    gt_features: dict[str, dict] | None = None,
    distances: dict[str, FeatureFn] | None = None,
    pixel_size: int | None = None,
    pixel_gts: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """What the suite's metrics are made of, for one sample set: "pixcorr" and "ssim_gray" (n,) per
    image, "two_way_<feature name>" (n, n) feature correlations (generated i vs ground truth j) and
    "distance_<feature name>" (n,) correlation distances.

    extractors / distances: name -> function(images) -> {feature name: (n, D) array}, scored by
    2-way identification / by correlation distance. gt_features caches the ground truth's features
    across sample sets (filled in place when given). pixel_size: PixCorr/SSIM side (None = native);
    pixel_gts: the ground truth at that size, when the dataset provides it (else `gts` resized).
    """
    pix_gts = pixel_gts if (pixel_gts is not None and pixel_size is not None) else gts
    pix_preds, pix_gts = _at(preds, pixel_size), _at(pix_gts, pixel_size)  # resized once for both metrics
    out = {"pixcorr": pixcorr_per_item(pix_preds, pix_gts), "ssim_gray": ssim_gray_per_item(pix_preds, pix_gts)}
    for kind, fns in (("two_way", extractors), ("distance", distances or {})):
        for name, fn in fns.items():
            if gt_features is not None and name in gt_features:
                real = gt_features[name]
            else:
                real = fn(gts)
                if gt_features is not None:
                    gt_features[name] = real
            fake = fn(preds)
            for feat_name, real_feats in real.items():
                if kind == "two_way":
                    out[f"two_way_{feat_name}"] = feature_correlations(fake[feat_name], real_feats)
                else:
                    out[f"distance_{feat_name}"] = correlation_distance_per_item(fake[feat_name], real_feats)
    return out


def nsd_metrics(
    preds: np.ndarray, gts: np.ndarray, extractors: dict[str, FeatureFn], gt_features: dict[str, dict] | None = None,
    distances: dict[str, FeatureFn] | None = None, pixel_size: int | None = None,
) -> dict[str, float]:
    """PixCorr, grayscale SSIM, one 2-way identification per feature space of `extractors` and one
    mean correlation distance per feature space of `distances`, for one sample set."""
    return summarise_nsd(nsd_item_scores(preds, gts, extractors, gt_features, distances, pixel_size))


def summarise_nsd(items: dict[str, np.ndarray]) -> dict[str, float]:
    """`nsd_item_scores` -> the suite's numbers: means of the per-image values, 2-way identification rates."""
    return {name: float(identification_rates(v, higher_is_better=True).mean() if v.ndim == 2 else np.mean(v))
            for name, v in items.items()}
