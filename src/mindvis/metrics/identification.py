"""Pair-wise identification and raw pixel similarity (one implementation; see mindvis.metrics).

Pair-wise identification (what MinD-Vis logs as "mse/pcc/ssim/psm"): for each
generated image i, score it against every ground-truth image j; the image's
value is the fraction of the OTHER ground-truth images j != i for which its own
ground truth i scores strictly better (lower MSE / LPIPS, higher PCC / SSIM).
Chance is 0.5; identical images give 1.0 whenever the ground-truth images are
all distinct. The reference's values are means of this fraction over images.
The same rule on correlations of feature vectors is the NSD papers' "2-way
identification", so one function (`identification_rates`) serves both.

Raw means (mean over images of PCC or SSIM between an image and its own ground
truth) are different numbers and are named apart (`*_raw_mean`).

Implementation notes:
- MSE is computed in float64. The reference subtracts uint8 arrays, which wraps
  around (3 - 250 = 9 in uint8): a bug not to copy.
- Colour SSIM: scikit-image `structural_similarity(data_range=255,
  channel_axis=-1)` with its defaults (7x7 uniform window, sample covariance,
  K1 = 0.01, K2 = 0.03), on float64 pixel values 0..255, the settings of the
  reference's `ssim_metric`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mindvis.utils.errors import InputDataError


def _as_image_stack(images: np.ndarray, name: str) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise InputDataError(None, f"{name} must be (n, H, W, 3), got shape {images.shape}")
    return images


def _check_pair(preds: np.ndarray, gts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    preds, gts = _as_image_stack(preds, "generated images"), _as_image_stack(gts, "ground-truth images")
    if preds.shape != gts.shape:
        raise InputDataError(None, f"generated images {preds.shape} and ground truth {gts.shape} differ in shape")
    if len(preds) < 2:
        raise InputDataError(None, "pair-wise identification needs at least 2 test images")
    return preds, gts


# ----------------------------------------------------------------------------- the rule


def identification_rates(scores: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """Per generated image i: fraction of j != i with scores[i, i] strictly better than scores[i, j].

    scores[i, j] = similarity (or distance, `higher_is_better=False`) between generated
    image i and ground-truth image j. Ties count as failures, as in the reference.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[0] != scores.shape[1] or scores.shape[0] < 2:
        raise InputDataError(None, f"identification needs a square (n, n) score matrix, n >= 2; got {scores.shape}")
    own = np.diag(scores)[:, None]
    wins = scores < own if higher_is_better else scores > own  # diagonal is never a win
    return wins.sum(axis=1) / (scores.shape[0] - 1)


def score_matrix(preds: np.ndarray, gts: np.ndarray, metric: Callable[[np.ndarray, np.ndarray], float]) -> np.ndarray:
    """(n, n) matrix metric(preds[i], gts[j]) for any pair metric (used for SSIM and LPIPS)."""
    return np.array([[metric(p, g) for g in gts] for p in preds], dtype=np.float64)


# ----------------------------------------------------------------------------- pixel metrics


def mse_matrix(preds: np.ndarray, gts: np.ndarray) -> np.ndarray:
    """(n, n) mean squared pixel difference, in float64 (no uint8 wrap-around)."""
    p = preds.reshape(len(preds), -1).astype(np.float64)
    g = gts.reshape(len(gts), -1).astype(np.float64)
    # Row by row on explicit differences (not the |p|^2 + |g|^2 - 2pg expansion): exact
    # for identical images, and the memory stays at one (n, D) block.
    return np.stack([((row[None, :] - g) ** 2).mean(axis=1) for row in p])


def mse(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean squared pixel difference of one pair, in float64."""
    return float(np.mean((np.asarray(pred, np.float64) - np.asarray(gt, np.float64)) ** 2))


def correlation_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, m) Pearson correlation between the flattened rows of a and of b.

    A constant row has no defined correlation: its entries are 0 (never an identification win).
    """
    x = np.asarray(a, np.float64).reshape(len(a), -1)
    y = np.asarray(b, np.float64).reshape(len(b), -1)
    if x.shape[1] != y.shape[1]:
        raise InputDataError(None, f"cannot correlate vectors of length {x.shape[1]} and {y.shape[1]}")
    x = x - x.mean(axis=1, keepdims=True)
    y = y - y.mean(axis=1, keepdims=True)
    nx, ny = np.linalg.norm(x, axis=1), np.linalg.norm(y, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (x @ y.T) / (nx[:, None] * ny[None, :])
    return np.nan_to_num(r, nan=0.0, posinf=0.0, neginf=0.0)


def ssim_colour(pred: np.ndarray, gt: np.ndarray) -> float:
    """Colour SSIM, scikit-image, data_range=255, channel_axis=-1, default 7x7 uniform window."""
    from skimage.metrics import structural_similarity

    return float(
        structural_similarity(
            np.asarray(pred, np.float64), np.asarray(gt, np.float64), data_range=255.0, channel_axis=-1
        )
    )


def pixel_score_matrices(preds: np.ndarray, gts: np.ndarray, with_ssim: bool = True) -> dict[str, np.ndarray]:
    """(n, n) score matrices, generated i vs ground truth j: "mse" (lower is better), "pcc" and "ssim"."""
    preds, gts = _check_pair(preds, gts)
    out = {"mse": mse_matrix(preds, gts), "pcc": correlation_matrix(preds, gts)}
    if with_ssim:
        out["ssim"] = score_matrix(preds, gts, ssim_colour)
    return out


PIXEL_HIGHER_IS_BETTER = {"mse": False, "pcc": True, "ssim": True}


def pairwise_pixel_identification(preds: np.ndarray, gts: np.ndarray, with_ssim: bool = True,
                                  matrices: dict[str, np.ndarray] | None = None) -> dict:
    """Pair-wise identification by MSE, PCC and colour SSIM, and the raw means, for one sample set.

    preds, gts: (n, H, W, 3) uint8 (or float on the 0..255 scale). Returns per metric the
    mean identification rate over images (chance 0.5) and the raw means of the diagonal.
    `matrices`: the `pixel_score_matrices` of the same pair, when already computed.
    """
    matrices = matrices if matrices is not None else pixel_score_matrices(preds, gts, with_ssim)
    out = {}
    for name, m in matrices.items():
        out[f"identification_{name}"] = float(identification_rates(m, PIXEL_HIGHER_IS_BETTER[name]).mean())
        out[f"{name}_raw_mean"] = float(np.diag(m).mean())
    return out


def feature_correlations(pred_features: np.ndarray, gt_features: np.ndarray) -> np.ndarray:
    """(n, n) Pearson r of feature vectors, generated i vs ground truth j, for `identification_rates`.

    An undefined correlation (a constant feature vector; NaN in numpy) is -inf on the diagonal and
    +inf off it, so it is never a success: what NaN comparisons do in MindEye's and Brain-Diffuser's
    `r < diag(r)`.
    """
    x = np.asarray(pred_features, np.float64).reshape(len(pred_features), -1)
    y = np.asarray(gt_features, np.float64).reshape(len(gt_features), -1)
    if x.shape != y.shape:
        raise InputDataError(None, f"feature matrices differ in shape: {x.shape} vs {y.shape}")
    r = correlation_matrix(x, y)
    undefined = (np.ptp(x, axis=1) == 0)[:, None] | (np.ptp(y, axis=1) == 0)[None, :]
    if undefined.any():
        own_undefined = np.diag(undefined).copy()
        r[undefined] = np.inf
        idx = np.flatnonzero(own_undefined)
        r[idx, idx] = -np.inf
    return r


def two_way_identification(pred_features: np.ndarray, gt_features: np.ndarray) -> float:
    """NSD-style 2-way identification on any feature matrices (n, D), as MindEye / Brain-Diffuser
    compute it: r = corrcoef(real, pred)[:n, n:]; success = r < diag(r) column-wise;
    mean(success.sum(0)) / (n - 1). Per generated image: the share of other ground truths less
    correlated with its features than its own ground truth (ties and undefined r fail; chance 0.5)."""
    return float(identification_rates(feature_correlations(pred_features, gt_features), True).mean())


def pairwise_identification(samples: np.ndarray, ground_truth: np.ndarray) -> float:
    """Pair-wise identification by pixel correlation of K sample sets (chance 0.5).

    samples (n, K, H, W, 3), ground_truth (n, H, W, 3): for each k, `identification_rates` of
    the PCC matrix (sample i vs ground truth j), averaged over items, then over k. What stage B
    checkpoint selection, `generate`'s summary and the sampler comparison report; the PCC row
    of `pairwise_pixel_identification` for K = 1.
    """
    samples, ground_truth = np.asarray(samples), np.asarray(ground_truth)
    if samples.ndim != 5 or samples.shape[0] != ground_truth.shape[0]:
        raise InputDataError(None, f"samples must be (n, K, H, W, 3) for ground truth {ground_truth.shape}, "
                                   f"got {samples.shape}")
    ground_truth = _check_pair(samples[:, 0], ground_truth)[1]
    rates = [identification_rates(correlation_matrix(samples[:, k], ground_truth), True).mean()
             for k in range(samples.shape[1])]
    return float(np.mean(rates))
