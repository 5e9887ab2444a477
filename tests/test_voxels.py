"""The shared voxel encoding model: geometry, receptive fields, category tuning, resting state."""

from __future__ import annotations

import numpy as np
import pytest

from mindvis.simulate.image_features import synthetic_calibration_images
from mindvis.simulate.stimuli import StimuliConfig, build_stimuli
from mindvis.simulate.voxels import GRID_MM, RoiSpec, add_measurement_noise, build_voxel_model

S = 32
ROIS = [
    RoiSpec("V1", 60, "retinotopic", 0.05),
    RoiSpec("V2", 50, "retinotopic", 0.1),
    RoiSpec("LOC", 50, "category"),
    RoiSpec("other", 10, "none"),
]


@pytest.fixture(scope="module")
def model():
    return build_voxel_model(ROIS, image_size=S, n_classes=10, seed=3)


@pytest.fixture(scope="module")
def digits():
    return build_stimuli(StimuliConfig(image_size=S, train_per_class=8, test_per_class=5, seed=0))


def _spot(cx: float, cy: float, radius: float = 0.08) -> np.ndarray:
    yy, xx = (np.mgrid[0:S, 0:S] + 0.5) / S
    img = np.full((S, S, 3), 0.5, np.float32)
    img[(xx - cx) ** 2 + (yy - cy) ** 2 < radius**2] = 1.0
    return img


def test_geometry_and_shapes(model):
    assert model.n_voxels == 170 and model.roi_names == ["V1", "V2", "LOC", "other"]
    assert np.bincount(model.roi_index).tolist() == [60, 50, 50, 10]
    assert model.coords.shape == (170, 3)
    # On a 2 mm grid, one voxel per grid point.
    np.testing.assert_allclose(model.coords / GRID_MM, np.round(model.coords / GRID_MM))
    assert len({tuple(c) for c in model.coords}) == 170
    # Each ROI has its own region: no voxel of another ROI inside an ROI's bounding box.
    for k in range(4):
        inside = model.roi_index == k
        lo, hi = model.coords[inside].min(0), model.coords[inside].max(0)
        others = model.coords[~inside]
        assert not np.all((others >= lo) & (others <= hi), axis=1).any()
    # RFs inside the image and growing V1 < V2; none for category voxels.
    v1, v2, loc = (model.roi_mask(n) for n in ("V1", "V2", "LOC"))
    assert np.all((model.rf_centres[v1 | v2] > 0) & (model.rf_centres[v1 | v2] < 1))
    assert np.nanmean(model.rf_sigmas[v1]) < np.nanmean(model.rf_sigmas[v2])
    assert np.isnan(model.rf_centres[loc]).all()


def test_retinotopic_map_neighbours_share_rf(model):
    v1 = np.flatnonzero(model.roi_mask("V1"))
    d_brain = np.linalg.norm(model.coords[v1, None] - model.coords[None, v1], axis=-1)
    d_rf = np.linalg.norm(model.rf_centres[v1, None] - model.rf_centres[None, v1], axis=-1)
    near, far = (d_brain > 0) & (d_brain <= GRID_MM * 1.01), d_brain >= 5 * GRID_MM
    assert d_rf[near].mean() < 0.5 * d_rf[far].mean()


def test_deterministic_for_seed(model, digits):
    again = build_voxel_model(ROIS, image_size=S, n_classes=10, seed=3)
    other = build_voxel_model(ROIS, image_size=S, n_classes=10, seed=4)
    x, y = digits.train_images[:12], digits.train_labels[:12]
    np.testing.assert_array_equal(model.evoked(x, y), again.evoked(x, y))
    assert not np.allclose(model.evoked(x, y), other.evoked(x, y))
    a = model.spontaneous(20, np.random.default_rng(1))
    b = again.spontaneous(20, np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)


def test_evoked_unit_std_after_calibration(digits):
    m = build_voxel_model(ROIS, image_size=S, n_classes=10, seed=3)
    images = np.concatenate([digits.train_images, digits.test_images])
    labels = np.concatenate([digits.train_labels, digits.test_labels])
    m.calibrate(images, labels)
    r = m.evoked(images, labels)
    assert r.shape == (130, 170) and r.dtype == np.float32
    driven = ~m.roi_mask("other")
    np.testing.assert_allclose(r[:, driven].std(0), 1.0, atol=1e-3)
    np.testing.assert_allclose(r[:, driven].mean(0), 0.0, atol=1e-3)
    assert np.all(r[:, ~driven] == 0)  # no stimulus drive outside visual cortex
    # uint8 input gives the same as float input in [0, 1].
    np.testing.assert_allclose(m.evoked(images[:4], labels[:4]), m.evoked(images[:4] / 255.0, labels[:4]), atol=1e-4)


def test_early_voxels_respond_to_spot_inside_rf(model):
    v1 = np.flatnonzero(model.roi_mask("V1"))
    blank = model.evoked(_spot(0, 0, 0)[None], [0])[0]
    inside, outside = [], []
    for v in v1[::3]:
        cx, cy = model.rf_centres[v]
        r = model.evoked(np.stack([_spot(cx, cy), _spot((cx + 0.5) % 1, (cy + 0.5) % 1)]), [0, 0])
        inside.append(abs(r[0, v] - blank[v]))
        outside.append(abs(r[1, v] - blank[v]))
    inside, outside = np.array(inside), np.array(outside)
    assert np.all(inside > 5 * outside)


def test_category_voxels_separate_classes(model, digits):
    loc = model.roi_mask("LOC")
    train = model.evoked(digits.train_images, digits.train_labels)[:, loc]
    test = model.evoked(digits.test_images, digits.test_labels)[:, loc]
    means = np.stack([train[digits.train_labels == k].mean(0) for k in range(10)])
    corr = np.corrcoef(test, means)[: len(test), len(test) :]
    accuracy = (corr.argmax(1) == digits.test_labels).mean()
    assert accuracy >= 0.8  # chance 0.1; unseen images of seen classes
    # Class tuning is colour-invariant: the same digit recoloured keeps its category voxels' pattern.
    img = digits.train_images[:1].astype(np.float32) / 255
    recoloured = 1.0 - img  # complementary colours, inverted luminance polarity
    a = model.evoked(img, digits.train_labels[:1])[0, loc]
    b = model.evoked(recoloured, digits.train_labels[:1])[0, loc]
    assert np.corrcoef(a, b)[0, 1] > 0.8


def test_imagery_is_class_pattern_in_category_voxels(model, digits):
    loc = model.roi_mask("LOC")
    evoked = model.evoked(digits.train_images, digits.train_labels)[:, loc]
    imag = model.imagery(np.arange(10))[:, loc]
    means = np.stack([evoked[digits.train_labels == k].mean(0) for k in range(10)])
    corr = np.corrcoef(imag, means)[:10, 10:]
    assert (corr.argmax(1) == np.arange(10)).mean() >= 0.8


def test_spontaneous_spatial_and_temporal_structure(model):
    tr = 0.72
    x = model.spontaneous(1500, np.random.default_rng(0), tr=tr)
    assert x.shape == (1500, 170) and x.dtype == np.float32
    assert 0.85 < x.std(0).mean() < 1.15
    # Temporally smooth: lag-1 autocorrelation near the AR(1) coefficients (0.84 local, 0.93 networks).
    lag1 = np.mean([np.corrcoef(x[:-1, v], x[1:, v])[0, 1] for v in range(0, 170, 10)])
    assert 0.75 < lag1 < 0.97
    # Spatially correlated: neighbouring retinotopic voxels more than distant ones.
    ret = np.flatnonzero(model.roi_mask("V1") | model.roi_mask("V2"))
    c = np.corrcoef(x[:, ret].T)
    d = np.linalg.norm(model.coords[ret, None] - model.coords[None, ret], axis=-1)
    near = c[(d > 0) & (d <= GRID_MM * 1.01)].mean()
    far = c[d >= 4 * GRID_MM].mean()
    assert near > far + 0.3
    # Same-RF voxels in different ROIs (V1 vs V2) co-fluctuate more than different-RF ones.
    v1, v2 = np.flatnonzero(model.roi_mask("V1")), np.flatnonzero(model.roi_mask("V2"))
    cc = np.corrcoef(x[:, v1].T, x[:, v2].T)[: v1.size, v1.size :]
    drf = np.linalg.norm(model.rf_centres[v1, None] - model.rf_centres[None, v2], axis=-1)
    assert cc[drf < 0.15].mean() > cc[drf > 0.6].mean() + 0.05


def test_add_measurement_noise_levels():
    rng = np.random.default_rng(0)
    signal = np.zeros((20000, 3), np.float32)
    signal[:, 0] = rng.standard_normal(20000) * 2.0
    signal[:, 1] = rng.standard_normal(20000) * 4.0
    noisy = add_measurement_noise(signal, snr=2.0, rng=np.random.default_rng(1))
    noise_sd = (noisy - signal).std(0)
    np.testing.assert_allclose(noise_sd[:2], [1.0, 2.0], rtol=0.03)  # signal std / snr
    np.testing.assert_allclose(noise_sd[2], 1.5, rtol=0.03)  # silent column: the others' mean level
    with pytest.raises(ValueError):
        add_measurement_noise(signal, snr=0.0, rng=rng)


def test_calibration_images_and_bad_inputs(model):
    imgs = synthetic_calibration_images(5, 16, np.random.default_rng(0))
    assert imgs.shape == (5, 16, 16, 3) and imgs.min() >= 0 and imgs.max() <= 1
    with pytest.raises(ValueError, match="labels"):
        model.evoked(np.zeros((2, S, S, 3), np.float32), [0, 10])
    with pytest.raises(ValueError, match="kind"):
        RoiSpec("X", 3, "visual")
