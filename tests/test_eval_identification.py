"""Pair-wise identification, raw means, 2-way identification on features, NSD pixel metrics."""

from __future__ import annotations

import numpy as np
import pytest

from mindvis.evaluation.identification import (
    correlation_matrix,
    identification_rates,
    mse,
    mse_matrix,
    pairwise_pixel_identification,
    ssim_colour,
    two_way_identification,
)
from mindvis.evaluation.nsd_suite import pixcorr, ssim_gray
from mindvis.utils.errors import InputDataError


def _images(n=6, size=16, seed=0):
    rng = np.random.default_rng(seed)
    # Smooth random images (sums of a few blobs), distinct from each other.
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        img = np.zeros((size, size, 3))
        for _ in range(3):
            cy, cx = rng.random(2)
            img += rng.random(3) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2)[..., None] / 0.05)
        out[i] = np.clip(img / img.max() * 255, 0, 255).astype(np.uint8)
    return out


def test_identical_images_identify_perfectly():
    x = _images()
    r = pairwise_pixel_identification(x, x.copy())
    assert r["identification_mse"] == 1.0
    assert r["identification_pcc"] == 1.0
    assert r["identification_ssim"] == 1.0
    assert r["pcc_raw_mean"] == pytest.approx(1.0, abs=1e-12)
    assert r["ssim_raw_mean"] == pytest.approx(1.0)
    assert r["mse_raw_mean"] == 0.0


def test_mse_near_0_and_255_is_computed_in_float():
    a = np.full((2, 4, 4, 3), 3, np.uint8)
    b = np.full((2, 4, 4, 3), 250, np.uint8)
    b[1] = 100
    assert mse(a[0], b[0]) == pytest.approx(247.0**2)  # uint8 arithmetic: (3 - 250) % 256 = 9 -> 81
    assert mse(b[0], a[0]) == pytest.approx(247.0**2)
    assert mse(np.zeros((2, 2, 3), np.uint8), np.full((2, 2, 3), 255, np.uint8)) == 255.0**2
    m = mse_matrix(a, b)
    np.testing.assert_allclose(m, [[247.0**2, 97.0**2], [247.0**2, 97.0**2]])
    # The reference's uint8 bug ranks 250 CLOSER to 3 than 100 is (9^2 = 81 < 159^2 mod 256 = 193);
    # float MSE does not.
    wrapped = [((a[0] - b[j]) ** 2).mean() for j in (0, 1)]  # uint8 arithmetic on purpose
    assert wrapped[0] < wrapped[1] and m[0, 0] > m[0, 1]
    # Identification follows the float ranking: prediction 0 (value 3) is nearer ground truth 1 (100).
    np.testing.assert_allclose(identification_rates(m, higher_is_better=False), [0.0, 1.0])


def test_identification_rule_on_a_crafted_matrix():
    # Row i = generated image i; column j = ground truth j; similarity (higher = better).
    s = np.array(
        [
            [0.9, 0.1, 0.5],  # own 0.9 beats both others -> 1.0
            [0.8, 0.3, 0.3],  # own 0.3 beats none; the tie with 0.3 is a failure -> 0.0
            [0.2, 0.6, 0.4],  # own 0.4 beats 0.2 only -> 0.5
        ]
    )
    np.testing.assert_allclose(identification_rates(s, higher_is_better=True), [1.0, 0.0, 0.5])
    # As distances (lower = better) the same matrix gives the mirror result.
    np.testing.assert_allclose(identification_rates(s, higher_is_better=False), [0.0, 0.5, 0.5])
    with pytest.raises(InputDataError):
        identification_rates(np.ones((2, 3)), True)


def test_correlation_matrix_matches_numpy_and_handles_constants():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(4, 30)), rng.normal(size=(3, 30))
    want = np.corrcoef(np.vstack([a, b]))[:4, 4:]
    np.testing.assert_allclose(correlation_matrix(a, b), want, atol=1e-12)
    c = np.vstack([np.ones(30), b[0]])
    assert correlation_matrix(c, b)[0].tolist() == [0.0, 0.0, 0.0]


def test_pixel_identification_degrades_with_shuffling():
    x = _images(8)
    shifted = np.roll(x, 1, axis=0)  # every prediction is ANOTHER image's ground truth
    r = pairwise_pixel_identification(shifted, x)
    assert r["identification_mse"] < 0.5 and r["identification_pcc"] < 0.5
    noisy = np.clip(x.astype(int) + np.random.default_rng(2).integers(-20, 21, x.shape), 0, 255).astype(np.uint8)
    r2 = pairwise_pixel_identification(noisy, x)
    assert r2["identification_mse"] == 1.0 and 0.5 < r2["pcc_raw_mean"] < 1.0


def test_two_way_identification_generic_over_features():
    rng = np.random.default_rng(4)
    real = rng.normal(size=(40, 64))
    assert two_way_identification(real + 0.1 * rng.normal(size=real.shape), real) == 1.0
    # Unrelated features: chance (0.5) within sampling error.
    assert abs(two_way_identification(rng.normal(size=(40, 64)), real) - 0.5) < 0.08
    # Hand case, 3 items in 2-d: pred 0 matches real 0, pred 1 anti-correlates with its own real.
    real3 = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    pred3 = np.array([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]])
    # pred 0: 1.0, pred 1: own r = -1 beats nothing -> 0, pred 2: 1.0  -> mean 2/3
    assert two_way_identification(pred3, real3) == pytest.approx(2 / 3)


def test_ssim_and_nsd_pixel_metrics():
    x = _images(4)
    assert ssim_colour(x[0], x[0]) == pytest.approx(1.0)
    assert ssim_colour(x[0], 255 - x[0]) < 0  # a negative image is anti-similar
    assert pixcorr(x, x) == pytest.approx(1.0)
    assert ssim_gray(x, x) == pytest.approx(1.0)
    y = np.roll(x, 1, axis=0)
    by_hand = np.mean([np.corrcoef(y[i].ravel().astype(float), x[i].ravel().astype(float))[0, 1] for i in range(4)])
    assert pixcorr(y, x) == pytest.approx(by_hand)


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(InputDataError, match="differ in shape"):
        pairwise_pixel_identification(_images(3, 16), _images(3, 8))
