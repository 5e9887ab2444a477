"""Uncertainty of every metric: bootstrap intervals over test items and permutation p-values.

Each metric is kept in an "item view": the per-item numbers it is made of, enough to
recompute it on a resampled set of test items or under a shuffled pairing of generated
and ground-truth items.

  ItemMeans   metric = mean over items (and sample sets) of one number per item
              (n-way top-1, raw PCC / SSIM / MSE, PixCorr, judge accuracy on the ground truth)
  PairScores  pair-wise identification on a score matrix per sample set (generated i vs
              ground truth j): the item's own ground truth must beat the others
  NWayHits    n-way top-1 (exact) with the hit probability of every generated image for
              every possible ground-truth class, so a shuffled pairing needs no re-scoring
  Frechet     FID from features (the Fréchet distance is not a mean over items)

Bootstrap (percentile, 95 %): B resamples of the n test items with replacement; every
metric of one evaluation sees the same resamples. Identification is recomputed on the
resampled set, not averaged from the full set's per-item scores: an item's score depends on
the other items as distractors, and resampling only the targets would leave out that half of
the variance. Copies of the same item are not distractors for each other (a copy of the own
ground truth is not "another" image).

Permutation test: P random permutations pi of the test items; generated item i is scored
as if its ground truth were pi(i) (its K samples together, as they share the fMRI). The
p-value is one-sided, (1 + #{T(pi) >= T(observed)}) / (1 + P): small when the model beats
what any pairing gives.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mindvis.utils.errors import ConfigError, InputDataError

CONFIDENCE = 0.95


# ----------------------------------------------------------------------------- draws


def bootstrap_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n) item indices drawn with replacement, reproducible from `seed`."""
    if n < 2:
        raise InputDataError(None, f"a bootstrap over test items needs >= 2 items, got {n}")
    rng = np.random.default_rng([seed & 0xFFFFFFFF, 95])
    return rng.integers(0, n, size=(resamples, n))


def multiplicities(indices: np.ndarray, n: int) -> np.ndarray:
    """(B, n) how often each item was drawn in each resample."""
    counts = np.zeros((indices.shape[0], n), dtype=np.int64)
    np.add.at(counts, (np.arange(indices.shape[0])[:, None], indices), 1)
    return counts


def permutations(n: int, count: int, seed: int) -> np.ndarray:
    """(count, n) random permutations of the items, reproducible from `seed`."""
    rng = np.random.default_rng([seed & 0xFFFFFFFF, 17])
    return np.argsort(rng.random((count, n)), axis=1)


def percentile_interval(replicates: np.ndarray) -> list[float] | None:
    """The central 95 % of the finite replicates, or None when there are none."""
    reps = np.asarray(replicates, dtype=np.float64)
    reps = reps[np.isfinite(reps)]
    if reps.size == 0:
        return None
    tail = 100.0 * (1.0 - CONFIDENCE) / 2.0
    lo, hi = np.percentile(reps, [tail, 100.0 - tail])
    return [float(lo), float(hi)]


def permutation_p_value(observed: float, null: np.ndarray) -> float:
    """One-sided: (1 + #{null >= observed}) / (1 + len(null)); a tiny tolerance keeps exact ties as ties."""
    null = np.asarray(null, dtype=np.float64)
    return float((1 + np.sum(null >= observed - 1e-12)) / (1 + null.size))


# ----------------------------------------------------------------------------- item views


@dataclass
class ItemMeans:
    """values (n, K): the metric is values.mean()."""

    values: np.ndarray

    def replicates(self, counts: np.ndarray) -> np.ndarray:
        per_item = np.asarray(self.values, np.float64).reshape(len(self.values), -1).mean(axis=1)
        return counts @ per_item / counts.sum(axis=1)


@dataclass
class PairScores:
    """scores (K, n, n): generated image i of set k vs ground truth j; the metric is the mean over sets and
    items of the fraction of other ground truths j that score strictly worse than the item's own."""

    scores: np.ndarray
    higher_is_better: bool

    def _oriented(self) -> np.ndarray:
        s = np.asarray(self.scores, np.float64)
        if s.ndim == 2:
            s = s[None]
        return s if self.higher_is_better else -s

    def observed(self) -> float:
        s = self._oriented()
        n = s.shape[1]
        own = np.diagonal(s, axis1=1, axis2=2)[:, :, None]
        return float((s < own).sum(axis=2).mean() / (n - 1))

    def replicates(self, counts: np.ndarray) -> np.ndarray:
        s = self._oriented()
        n = s.shape[1]
        wins = (s < np.diagonal(s, axis1=1, axis2=2)[:, :, None]).astype(np.float64)  # (K, n, n); diagonal 0
        counts = counts.astype(np.float64)
        others = n - counts  # distractors seen by each copy of item i: the positions holding another item
        out = np.zeros(counts.shape[0])
        for w in wins:
            beaten = counts @ w.T  # (B, n): sum_j m_j * wins[i, j]
            with np.errstate(invalid="ignore", divide="ignore"):
                out += np.where(others > 0, counts * beaten / others, 0.0).sum(axis=1) / n
        out /= wins.shape[0]
        return np.where(counts.max(axis=1) < n, out, np.nan)  # a resample of one distinct item: undefined

    def null(self, perms: np.ndarray) -> np.ndarray:
        """The metric when generated item i is paired with ground truth perms[:, i]."""
        s = self._oriented()
        n = s.shape[1]
        ranks = np.stack([[np.searchsorted(np.sort(row), row, side="left") for row in sk] for sk in s])
        # ranks[k, i, j] = how many ground truths score strictly worse than j for generated i
        rows = np.arange(n)[None, :]
        return np.stack([ranks[k][rows, perms] for k in range(s.shape[0])]).mean(axis=(0, 2)) / (n - 1)


@dataclass
class NWayHits:
    """hits (K, n, C): exact n-way hit probability of generated (k, i) if its ground-truth class were c;
    gt_classes (n,): the judge's class of each ground truth. The metric is hits[k, i, gt_classes[i]].mean()."""

    hits: np.ndarray
    gt_classes: np.ndarray

    def own(self) -> np.ndarray:
        return self.hits[:, np.arange(self.hits.shape[1]), self.gt_classes].T  # (n, K)

    def replicates(self, counts: np.ndarray) -> np.ndarray:
        return ItemMeans(self.own()).replicates(counts)

    def null(self, perms: np.ndarray) -> np.ndarray:
        n = self.hits.shape[1]
        classes = self.gt_classes[perms]  # (P, n)
        return np.stack([hk[np.arange(n)[None, :], classes] for hk in self.hits]).mean(axis=(0, 2))


def hit_table(probs: np.ndarray, n_way: int) -> np.ndarray:
    """(n, C) exact n-way hit probability of each image for every candidate class (nway's formula)."""
    from mindvis.evaluation.nway import exact_hit_probability

    probs = np.asarray(probs, np.float64)
    n, c = probs.shape
    ordered = np.sort(probs, axis=1)
    # competitors of class c = classes other than c with probability >= p(c)
    ge = c - np.stack([np.searchsorted(ordered[i], probs[i], side="left") for i in range(n)])
    return exact_hit_probability((ge - 1).ravel(), c, n_way).reshape(n, c)


@dataclass
class Frechet:
    """real (n, D) and fake (K, n, D) features; the metric is the mean over sets of the Fréchet distance.

    A resample with replacement holds fewer distinct images, and FID grows as a set shrinks: the resampled
    values sit above the full set's. The interval is therefore shifted by that bias (the mean resampled
    value minus the full set's value), so it describes the spread around the value reported.
    """

    real: np.ndarray
    fake: np.ndarray
    bias_shifted = True

    def observed(self) -> float:
        n = self.real.shape[0]
        counts = np.ones((1, n), dtype=np.int64)
        return float(self.replicates(counts)[0])

    def replicates(self, counts: np.ndarray) -> np.ndarray:
        real = np.asarray(self.real, np.float64)
        out = np.zeros(counts.shape[0])
        grams = [(real @ real.T, real @ f.T, f @ f.T) for f in np.asarray(self.fake, np.float64)]
        for b, m in enumerate(counts):
            idx = np.repeat(np.arange(len(m)), m)
            out[b] = np.mean([frechet_from_grams(g_rr[np.ix_(idx, idx)], g_rf[np.ix_(idx, idx)],
                                                 g_ff[np.ix_(idx, idx)]) for g_rr, g_rf, g_ff in grams])
        return out


def frechet_from_grams(g_rr: np.ndarray, g_rf: np.ndarray, g_ff: np.ndarray) -> float:
    """Fréchet distance of two equal-size feature sets from their (m, m) Gram matrices.

    With centred feature rows A (real) and B (fake) and unbiased covariances A'A/(m-1), B'B/(m-1):
    |mu_r - mu_f|^2 + Tr S_r + Tr S_f - 2 Tr (S_r S_f)^(1/2); the non-zero eigenvalues of S_r S_f are
    the squared singular values of A B'/(m-1), so the trace term is a nuclear norm of an (m, m) matrix:
    exact in any feature dimension, and m x m work per resample.
    """
    m = g_rr.shape[0]
    centre = np.eye(m) - 1.0 / m
    ones = np.full(m, 1.0 / m)
    mean_gap = ones @ (g_rr - g_rf - g_rf.T + g_ff) @ ones
    c_rr, c_rf, c_ff = centre @ g_rr @ centre, centre @ g_rf @ centre, centre @ g_ff @ centre
    cross = np.linalg.svd(c_rf, compute_uv=False).sum()
    value = mean_gap + (np.trace(c_rr) + np.trace(c_ff) - 2.0 * cross) / (m - 1)
    return max(float(value), 0.0)


# ----------------------------------------------------------------------------- the records


@dataclass
class UncertaintyConfig:
    bootstrap: int = 1000
    permutations: int = 1000
    seed: int = 0  # fixed, not evaluate.seed: the model and its controls see the same resamples and pairings

    def check(self) -> None:
        if self.bootstrap < 0 or self.permutations < 0:
            raise ConfigError(f"bootstrap and permutations must be >= 0, got {self.bootstrap}, {self.permutations}")

    def describe(self) -> dict:
        return {"bootstrap": self.bootstrap, "permutations": self.permutations, "seed": self.seed,
                "confidence": CONFIDENCE, "unit": "test item"}


def attach_uncertainty(metrics: dict[str, dict], views: dict[str, object], n: int, cfg: UncertaintyConfig) -> None:
    """Add ci95 to every record and p_value to those whose view supports a permutation test (in place)."""
    cfg.check()
    counts = multiplicities(bootstrap_indices(n, cfg.bootstrap, cfg.seed), n) if cfg.bootstrap else None
    perms = permutations(n, cfg.permutations, cfg.seed) if cfg.permutations else None
    for name, rec in metrics.items():
        view = views.get(name)
        rec["ci95"] = None
        if view is not None and counts is not None:
            reps = view.replicates(counts)
            if getattr(view, "bias_shifted", False):
                reps = reps - (np.nanmean(reps) - view.observed())
            rec["ci95"] = percentile_interval(reps)
        if perms is not None and hasattr(view, "null"):
            rec["p_value"] = permutation_p_value(rec["value"], view.null(perms))
