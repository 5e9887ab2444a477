"""n-way top-1: hand-computed tables, exact expectation vs brute force, Monte-Carlo convergence, seeds."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from mindvis.evaluation.nway import (
    competitor_counts,
    exact_hit_probability,
    ground_truth_classes,
    n_way_top1,
    sampled_hit_rate,
)
from mindvis.utils.errors import ConfigError


def brute_force(probs_row: np.ndarray, g: int, n: int) -> float:
    """Enumerate every set of n-1 distractors; hit = p(g) strictly above all of them."""
    others = [c for c in range(len(probs_row)) if c != g]
    hits = total = 0
    for combo in itertools.combinations(others, n - 1):
        total += 1
        hits += probs_row[g] > max(probs_row[list(combo)])
    return hits / total


# C = 4 classes. The ground-truth images' argmax defines the class (not a label).
GT_PROBS = np.array(
    [
        [0.7, 0.1, 0.1, 0.1],  # class 0
        [0.1, 0.6, 0.2, 0.1],  # class 1
        [0.2, 0.2, 0.5, 0.1],  # class 2
    ]
)
GEN_PROBS = np.array(
    [
        [0.40, 0.30, 0.20, 0.10],  # p(class 0) is the highest: r = 0 -> always a hit
        [0.50, 0.25, 0.15, 0.10],  # p(class 1) second: r = 1
        [0.40, 0.30, 0.20, 0.10],  # p(class 2) third: r = 2
    ]
)


def test_crafted_table_known_accuracy():
    assert ground_truth_classes(GT_PROBS).tolist() == [0, 1, 2]
    assert competitor_counts(GEN_PROBS, [0, 1, 2]).tolist() == [0, 1, 2]
    # 2-way (1 distractor out of 3 others): P(hit) = (3 - r) / 3
    p2 = exact_hit_probability(np.array([0, 1, 2]), 4, 2)
    np.testing.assert_allclose(p2, [1.0, 2 / 3, 1 / 3])
    # 3-way (2 of 3 others): C(3-r, 2)/C(3, 2) = 1, 1/3, 0
    p3 = exact_hit_probability(np.array([0, 1, 2]), 4, 3)
    np.testing.assert_allclose(p3, [1.0, 1 / 3, 0.0])
    res = n_way_top1(GEN_PROBS[:, None, :], GT_PROBS, n=3, trials=4000, rng=np.random.default_rng(0))
    assert res.exact_per_set[0] == pytest.approx((1 + 1 / 3 + 0) / 3)
    assert res.sampled_per_set[0] == pytest.approx(4 / 9, abs=0.03)
    assert res.chance == pytest.approx(1 / 3)
    # 4-way = all classes: plain top-1 agreement, sampled and exact identical.
    full = n_way_top1(GEN_PROBS[:, None, :], GT_PROBS, n=4, trials=10, rng=np.random.default_rng(0))
    assert full.exact_per_set[0] == pytest.approx(1 / 3)
    assert full.sampled_per_set[0] == pytest.approx(1 / 3)


def test_mean_and_max_over_sample_sets():
    # Set 0: every image a hit; set 1: none (the true class is always last).
    gt = np.eye(5)[[0, 1, 2]] * 0.9 + 0.02
    good = gt.copy()
    bad = 1.0 - gt
    gen = np.stack([good, bad], axis=1)  # (3, K=2, 5)
    res = n_way_top1(gen, gt, n=3, trials=50, rng=np.random.default_rng(1)).summary()
    assert res["exact_per_set"] == [1.0, 0.0]
    assert res["exact_mean"] == 0.5 and res["exact_max"] == 1.0
    assert res["sampled_per_set"] == [1.0, 0.0]


def test_exact_matches_brute_force_enumeration_including_ties():
    rng = np.random.default_rng(3)
    n_classes = 7
    probs = rng.dirichlet(np.ones(n_classes), size=12)
    probs[0, 3] = probs[0, 1]  # a tie with the ground-truth class counts as a miss
    classes = np.array([1] + list(rng.integers(0, n_classes, 11)))
    ranks = competitor_counts(probs, classes)
    for n in (2, 3, 5, 7):
        exact = exact_hit_probability(ranks, n_classes, n)
        brute = [brute_force(probs[i], classes[i], n) for i in range(len(probs))]
        np.testing.assert_allclose(exact, brute, atol=1e-12)


def test_exact_formula_matches_binomials_at_reference_scale():
    # C = 1000 classes, n = 50 (the public protocol): product form vs exact integer binomials.
    ranks = np.array([0, 1, 10, 200, 950, 951, 999])
    got = exact_hit_probability(ranks, 1000, 50)
    want = [math.comb(999 - r, 49) / math.comb(999, 49) for r in ranks]
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-300)
    assert got[0] == 1.0 and got[-2] == 0.0 and got[-1] == 0.0  # 999 - 951 = 48 < 49 non-competitors


def test_sampled_estimate_converges_to_exact():
    rng = np.random.default_rng(7)
    probs = rng.dirichlet(np.ones(20) * 0.5, size=30)
    classes = rng.integers(0, 20, 30)
    exact = exact_hit_probability(competitor_counts(probs, classes), 20, 6)
    errors = []
    for trials in (100, 20000):
        sampled = sampled_hit_rate(probs, classes, 6, trials, np.random.default_rng(11))
        errors.append(np.abs(sampled - exact).max())
        # every image within 5 binomial standard errors
        se = np.sqrt(exact * (1 - exact) / trials) + 1e-12
        assert np.all(np.abs(sampled - exact) <= 5 * se + 1e-9)
    assert errors[1] < errors[0] / 4  # ~ 1/sqrt(trials): 14x fewer errors at 200x the trials
    assert np.abs(sampled.mean() - exact.mean()) < 0.005


def test_seed_determinism():
    rng = np.random.default_rng(5)
    gen = rng.dirichlet(np.ones(10), size=(15, 3))
    gt = rng.dirichlet(np.ones(10), size=15)
    a = n_way_top1(gen, gt, 5, 200, np.random.default_rng(42))
    b = n_way_top1(gen, gt, 5, 200, np.random.default_rng(42))
    c = n_way_top1(gen, gt, 5, 200, np.random.default_rng(43))
    np.testing.assert_array_equal(a.sampled_per_set, b.sampled_per_set)
    assert not np.array_equal(a.sampled_per_set, c.sampled_per_set)
    np.testing.assert_array_equal(a.exact_per_set, c.exact_per_set)  # no randomness in the exact value


def test_n_larger_than_classes_is_a_clear_error():
    with pytest.raises(ConfigError, match="n_way = 11 exceeds the judge's 10 classes"):
        n_way_top1(np.full((2, 1, 10), 0.1), np.eye(10)[:2], n=11, trials=10, rng=np.random.default_rng(0))
    with pytest.raises(ConfigError, match=">= 2"):
        exact_hit_probability(np.array([0]), 10, 1)
