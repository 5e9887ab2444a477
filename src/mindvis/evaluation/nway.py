"""n-way top-1 classification: MinD-Vis's headline semantic metric.

The protocol (MinD-Vis's public code, reproduced exactly):
  * a judge classifier gives class probabilities for the ground-truth image
    and for each generated image;
  * the "ground-truth class" g is the judge's argmax on the ground-truth image
    (not a dataset label: the judge defines the classes);
  * one trial: draw n-1 distractor classes uniformly, without replacement, from
    the C-1 classes other than g; the trial is a hit when p(g) on the generated
    image is higher than the probability of every distractor;
  * the per-image score is the hit rate over `trials` trials; a sample set's
    score is the mean over test images; with K samples per test image the
    reference reports the mean over the K sample sets and the max over them.
  The public code uses n = 50, 1000 trials (the paper text says 100-way).

Besides the sampled estimate we compute its exact expectation. If r other
classes have a probability >= p(g), a trial is a hit exactly when none of those
r classes is among the n-1 distractors, so

    P(hit) = C(C-1-r, n-1) / C(C-1, n-1)

(0 when C-1-r < n-1). That number has no sampling noise. Ties count against the
ground-truth class (a hit needs a strictly higher probability); with softmax
outputs ties essentially never occur.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mindvis.utils.errors import ConfigError, InputDataError


def _check_probs(probs: np.ndarray, name: str) -> np.ndarray:
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2:
        raise InputDataError(None, f"{name} must be (n_images, n_classes), got shape {probs.shape}")
    if not np.all(np.isfinite(probs)):
        raise InputDataError(None, f"{name} holds NaN or Inf")
    return probs


def check_n_way(n: int, n_classes: int) -> None:
    """n must be in [2, C]: the ground-truth class plus n-1 distinct other classes."""
    if n < 2:
        raise ConfigError(f"n_way must be >= 2, got {n}")
    if n > n_classes:
        raise ConfigError(
            f"n_way = {n} exceeds the judge's {n_classes} classes: an n-way trial needs n-1 distractor "
            f"classes besides the ground-truth class; set n_way <= {n_classes}"
        )


def ground_truth_classes(gt_probs: np.ndarray) -> np.ndarray:
    """The judge's argmax on each ground-truth image: (n_images,) int."""
    return np.argmax(_check_probs(gt_probs, "ground-truth probabilities"), axis=1)


def competitor_counts(probs: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """r per image: how many classes other than `classes[i]` have probability >= probs[i, classes[i]]."""
    probs = _check_probs(probs, "probabilities")
    classes = np.asarray(classes, dtype=np.int64)
    p_true = probs[np.arange(len(probs)), classes]
    # ">=" counts the class itself once: subtract it.
    return (probs >= p_true[:, None]).sum(axis=1) - 1


def exact_hit_probability(ranks: np.ndarray, n_classes: int, n: int) -> np.ndarray:
    """P(hit) = C(C-1-r, n-1) / C(C-1, n-1) per image, as a product (no overflow for C = 1000).

    C(C-1-r, n-1)/C(C-1, n-1) = prod_{i=0}^{n-2} (C-1-r-i) / (C-1-i); a factor <= 0 means
    fewer non-competing classes than distractors: probability 0.
    """
    check_n_way(n, n_classes)
    r = np.asarray(ranks, dtype=np.float64)[:, None]
    i = np.arange(n - 1, dtype=np.float64)[None, :]
    factors = (n_classes - 1 - r - i) / (n_classes - 1 - i)
    return np.where((factors > 0).all(axis=1), np.clip(factors, 0.0, None).prod(axis=1), 0.0)


def sampled_hit_rate(
    probs: np.ndarray, classes: np.ndarray, n: int, trials: int, rng: np.random.Generator
) -> np.ndarray:
    """The reference's Monte-Carlo procedure: per image, the hit rate over `trials` random draws.

    Each trial draws n-1 distinct distractors uniformly from the C-1 other classes
    (the smallest n-1 of C-1 uniform keys is a uniform subset) and is a hit when
    p(true class) is strictly higher than every distractor's probability.
    """
    probs = _check_probs(probs, "probabilities")
    n_images, n_classes = probs.shape
    check_n_way(n, n_classes)
    if trials < 1:
        raise ConfigError(f"trials must be >= 1, got {trials}")
    classes = np.asarray(classes, dtype=np.int64)
    rates = np.empty(n_images)
    for idx in range(n_images):
        g = classes[idx]
        others = np.delete(probs[idx], g)  # (C-1,)
        keys = rng.random((trials, n_classes - 1))
        picked = np.argpartition(keys, n - 2, axis=1)[:, : n - 1] if n - 1 < n_classes - 1 else None
        best_distractor = others.max() if picked is None else others[picked].max(axis=1)
        rates[idx] = np.mean(probs[idx, g] > best_distractor)
    return rates


@dataclass
class NWayResult:
    """n-way top-1 over K sample sets; every per-set number is a mean over test images."""

    n: int
    trials: int
    n_classes: int
    sampled_per_set: np.ndarray  # (K,) Monte-Carlo estimate per sample set
    exact_per_set: np.ndarray  # (K,) exact expectation per sample set
    gt_classes: np.ndarray  # (n_images,) judge argmax on the ground truth
    per_image_exact: np.ndarray = field(repr=False)  # (n_images, K)
    per_image_sampled: np.ndarray | None = field(default=None, repr=False)  # (n_images, K) Monte-Carlo hit rates

    @property
    def chance(self) -> float:
        return 1.0 / self.n

    def summary(self) -> dict:
        return {
            "n": self.n,
            "trials": self.trials,
            "n_classes": self.n_classes,
            "chance": self.chance,
            "sampled_mean": float(self.sampled_per_set.mean()),
            "sampled_max": float(self.sampled_per_set.max()),
            "exact_mean": float(self.exact_per_set.mean()),
            "exact_max": float(self.exact_per_set.max()),
            "sampled_per_set": self.sampled_per_set.tolist(),
            "exact_per_set": self.exact_per_set.tolist(),
        }


def n_way_top1(
    gen_probs: np.ndarray, gt_probs: np.ndarray, n: int, trials: int, rng: np.random.Generator
) -> NWayResult:
    """n-way top-1 accuracy of generated images, the reference's way plus its exact expectation.

    gen_probs: (n_images, K, C) judge probabilities of the K generated images per test item.
    gt_probs:  (n_images, C) judge probabilities of the ground-truth images.
    Returns per sample set k: the mean over images of the sampled hit rate (`trials`
    draws each) and of the exact P(hit). Chance level is 1/n.
    """
    gen_probs = np.asarray(gen_probs, dtype=np.float64)
    if gen_probs.ndim == 2:
        gen_probs = gen_probs[:, None, :]
    if gen_probs.ndim != 3:
        raise InputDataError(None, f"generated probabilities must be (n_images, K, C), got {gen_probs.shape}")
    n_images, k_sets, n_classes = gen_probs.shape
    gt_probs = _check_probs(gt_probs, "ground-truth probabilities")
    if gt_probs.shape != (n_images, n_classes):
        raise InputDataError(None, f"ground-truth probabilities {gt_probs.shape} do not match {(n_images, n_classes)}")
    check_n_way(n, n_classes)
    gt_classes = ground_truth_classes(gt_probs)
    sampled = np.empty((n_images, k_sets))
    exact = np.empty((n_images, k_sets))
    for k in range(k_sets):
        probs_k = gen_probs[:, k, :]
        exact[:, k] = exact_hit_probability(competitor_counts(probs_k, gt_classes), n_classes, n)
        sampled[:, k] = sampled_hit_rate(probs_k, gt_classes, n, trials, rng)
    return NWayResult(n, trials, n_classes, sampled.mean(axis=0), exact.mean(axis=0), gt_classes, exact, sampled)
