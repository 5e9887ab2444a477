"""The shared voxel encoding model behind every simulated dataset (README, "What the embedded default does").

One `VoxelModel` stands for one simulated brain: a set of ROIs whose voxels sit
on a 2 mm grid and respond to images.

- Retinotopic ROIs (V1..V4, EarlyVis): each voxel pools local image features
  (luminance, two colour-opponent channels, horizontal/vertical edge energy and
  chromatic edge energy) through a Gaussian receptive field (RF), with random
  feature weights. The RF centre follows the voxel's position on the grid, so
  neighbouring voxels see neighbouring parts of the image (a retinotopic map).
- Category ROIs (LOC, FFA, PPA, ...): each voxel mixes a class tuning curve
  (sparse-ish, spatially smooth across the ROI) with a shape term, a random
  projection of a low-resolution, colour-invariant figure/edge map.
- Kind "none": voxels outside visual cortex, no stimulus drive (evoked = 0),
  only spontaneous fluctuations; simulators use them so ROI selection matters.

Evoked responses are normalised per voxel (mean 0, std 1) over a calibration
image set: at build time a seeded synthetic set (smooth colour fields plus a
random ellipse); simulators call `calibrate(images, labels)` with their real
stimulus set, so "~unit std across a typical image set" holds exactly there. The image
features themselves are computed in `image_features`.

`spontaneous()` draws resting-state fluctuations: a local part (white noise
smoothed over space by a Gaussian of inter-voxel distance, then AR(1) in
time) plus latent networks (visual-field patches shared by all retinotopic
ROIs, so same-RF voxels in V1 and V2 co-fluctuate; one network per ROI kind;
a global signal), each AR(1) with a time constant of several seconds.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
from scipy import signal as sp_signal
from scipy import sparse
from scipy.spatial import cKDTree

from mindvis.simulate.image_features import (
    N_RETINO_CHANNELS,
    RETINO_GRID,
    SHAPE_GRID,
    as_float_images,
    retinotopic_features,
    shape_features,
    synthetic_calibration_images,
)

log = logging.getLogger(__name__)

KINDS = ("retinotopic", "category", "none")
GRID_MM = 2.0  # voxel spacing, as in the real releases (GOD, BOLD5000, HCP MNI)
N_CALIBRATION = 96
ROI_GAP_MM = 6.0  # space between ROI blocks, so local smoothing barely crosses ROIs
LOCAL_SIGMA_MM = 2.5  # spatial correlation length of local spontaneous noise
LOCAL_TAU_S = 4.0  # time constant of local fluctuations
NETWORK_TAU_S = 10.0  # infra-slow network fluctuations
LOCAL_VARIANCE = 0.6  # share of spontaneous variance from the local part (rest: networks)


@dataclass
class RoiSpec:
    """One ROI: its name, size, kind and (retinotopic ROIs) RF size as a fraction of the image side."""

    name: str
    n_voxels: int
    kind: str = "retinotopic"  # "retinotopic" | "category" | "none"
    rf_size: float = 0.1

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"ROI {self.name}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.n_voxels < 1:
            raise ValueError(f"ROI {self.name}: n_voxels must be >= 1, got {self.n_voxels}")
        if not self.rf_size > 0:
            raise ValueError(f"ROI {self.name}: rf_size must be > 0, got {self.rf_size}")



# ----------------------------------------------------------------------------- geometry


def _block_cells(n: int, kind: str) -> tuple[int, int, int]:
    """Grid block (nx, ny, nz) for an ROI: a thin 2-layer sheet for retinotopic maps
    (x and z encode the visual field), a cube otherwise."""
    if kind == "retinotopic":
        side = math.ceil(math.sqrt(n / 2))
        return side, 2, side
    side = math.ceil(n ** (1 / 3))
    return side, side, side


def _gaussian_kernel(coords: np.ndarray, sigma_mm: float) -> sparse.csr_matrix:
    """Sparse (V, V) Gaussian of inter-voxel distance, cut at 2.5 sigma (memory stays
    O(V * neighbours), so ROIs of thousands of voxels are fine)."""
    tree = cKDTree(coords)
    dist = tree.sparse_distance_matrix(tree, max_distance=2.5 * sigma_mm, output_type="coo_matrix")
    # sparse_distance_matrix leaves the zero self-distances out; add the diagonal explicitly.
    n = len(coords)
    rows = np.concatenate([dist.row, np.arange(n)])
    cols = np.concatenate([dist.col, np.arange(n)])
    d = np.concatenate([dist.data, np.zeros(n)])
    w = np.exp(-(d**2) / (2 * sigma_mm**2)).astype(np.float32)
    return sparse.csr_matrix((w, (rows, cols)), shape=(n, n))


def _spatially_smooth(values: np.ndarray, coords: np.ndarray, sigma_mm: float) -> np.ndarray:
    """Gaussian-of-distance smoothing (weighted mean of neighbours) of per-voxel values (V, k)."""
    kernel = _gaussian_kernel(coords, sigma_mm)
    row_sums = np.asarray(kernel.sum(axis=1)).ravel()
    return np.asarray(sparse.diags(1.0 / row_sums) @ (kernel @ values))


def _gaussian_rf_matrix(centres: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """(V, G*G) Gaussian RF weights on the retinotopic grid, each summing to 1.
    Centres are (x, y) in image fractions; sigmas are in grid cells."""
    grid = (np.arange(RETINO_GRID, dtype=np.float32) + 0.5) / RETINO_GRID
    cx = centres[:, 0:1].astype(np.float32)
    cy = centres[:, 1:2].astype(np.float32)
    s = (sigmas[:, None] / RETINO_GRID).astype(np.float32)
    gx = np.exp(-((grid[None, :] - cx) ** 2) / (2 * s**2))  # (V, G)
    gy = np.exp(-((grid[None, :] - cy) ** 2) / (2 * s**2))
    rf = (gy[:, :, None] * gx[:, None, :]).reshape(len(centres), -1)
    # Cut the far tails: they carry nothing, and their float32 denormals slow BLAS ~50x.
    rf[rf < 1e-4 * rf.max(axis=1, keepdims=True)] = 0.0
    return rf / rf.sum(axis=1, keepdims=True)


# ----------------------------------------------------------------------------- temporal helpers


def _ar1(n_frames: int, n_series: int, phi: float, rng: np.random.Generator) -> np.ndarray:
    """(n_frames, n_series) stationary AR(1) with unit variance (first frame drawn from the stationary law)."""
    e = rng.standard_normal((n_frames, n_series)).astype(np.float32)
    b = math.sqrt(1.0 - phi**2)
    e[0] /= b  # so y[0] = e[0] ~ N(0, 1), the stationary distribution
    return sp_signal.lfilter([b], [1.0, -phi], e, axis=0).astype(np.float32)


# ----------------------------------------------------------------------------- the model


@dataclass
class VoxelModel:
    """A simulated brain: voxel positions, ROI membership, and the maps images -> responses."""

    roi_names: list[str]
    roi_kinds: list[str]
    roi_index: np.ndarray  # (V,) int, index into roi_names
    coords: np.ndarray  # (V, 3) float mm
    image_size: int
    n_classes: int
    rf_centres: np.ndarray  # (V, 2) (x, y) image fractions, NaN for non-retinotopic voxels
    rf_sigmas: np.ndarray  # (V,) RF sigma as a fraction of the image side, NaN for others
    # retinotopic part
    _retino_idx: np.ndarray = field(repr=False)
    _rf: np.ndarray = field(repr=False)  # (V_ret, G*G)
    _feature_weights: np.ndarray = field(repr=False)  # (V_ret, 6)
    # category part
    _cat_idx: np.ndarray = field(repr=False)
    _tuning: np.ndarray = field(repr=False)  # (V_cat, n_classes), per voxel mean 0 std 1 over classes
    _shape_weights: np.ndarray = field(repr=False)  # (V_cat, 2*S*S)
    _category_share: np.ndarray = field(repr=False)  # (V_cat,) variance share of the class term
    # spontaneous part
    _local_kernel: sparse.csr_matrix = field(repr=False)  # (V, V), rows have unit sum of squares
    _network_loadings: np.ndarray = field(repr=False)  # (V, K), rows have unit sum of squares
    # normalisation, set by calibrate()
    _channel_scale: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]
    _shape_mean: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]
    _shape_scale: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]
    _mean: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]
    _std: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]
    _class_means: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]

    @property
    def n_voxels(self) -> int:
        return int(self.roi_index.shape[0])

    def roi_mask(self, name: str) -> np.ndarray:
        """(V,) bool mask of one ROI."""
        return self.roi_index == self.roi_names.index(name)

    @property
    def kinds(self) -> np.ndarray:
        """(V,) kind of each voxel ("retinotopic" | "category" | "none")."""
        return np.asarray(self.roi_kinds, dtype=object)[self.roi_index]

    # -- evoked ---------------------------------------------------------------------------

    def _features(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Retinotopic feature maps flattened to (n, 6, G*G), and shape features (n, 2*S*S)."""
        feats = retinotopic_features(images)
        return feats.reshape(feats.shape[0], N_RETINO_CHANNELS, -1), shape_features(images)

    def _retino_response(self, feats: np.ndarray) -> np.ndarray:
        # Pool each channel through every RF, then weight channels per voxel; one channel at a
        # time keeps memory at (n, V) instead of (n, V, 6).
        out = np.zeros((feats.shape[0], self._rf.shape[0]), dtype=np.float32)
        for c in range(N_RETINO_CHANNELS):
            pooled = (feats[:, c, :] / self._channel_scale[c]) @ self._rf.T
            out += pooled * self._feature_weights[:, c]
        return out

    def _shape_response(self, shape: np.ndarray) -> np.ndarray:
        return shape @ self._shape_weights.T

    def _category_response(self, shape_resp: np.ndarray, labels: np.ndarray) -> np.ndarray:
        z_shape = (shape_resp - self._shape_mean) / self._shape_scale
        share = self._category_share
        return np.sqrt(share) * self._tuning[:, labels].T + np.sqrt(1.0 - share) * z_shape

    def _raw(self, images: np.ndarray, labels: np.ndarray, chunk: int = 256) -> np.ndarray:
        images = np.asarray(images)
        labels = self._check_labels(labels, images.shape[0])
        out = np.zeros((images.shape[0], self.n_voxels), dtype=np.float32)
        for start in range(0, images.shape[0], chunk):
            sl = slice(start, start + chunk)
            feats, shape = self._features(images[sl])
            if self._retino_idx.size:
                out[sl, self._retino_idx] = self._retino_response(feats)
            if self._cat_idx.size:
                out[sl, self._cat_idx] = self._category_response(self._shape_response(shape), labels[sl])
        return out

    def _check_labels(self, labels: np.ndarray, n: int) -> np.ndarray:
        labels = np.asarray(labels).astype(np.int64).ravel()
        if labels.shape[0] != n:
            raise ValueError(f"got {n} images but {labels.shape[0]} labels")
        if labels.size and (labels.min() < 0 or labels.max() >= self.n_classes):
            raise ValueError(f"labels must be in [0, {self.n_classes}), got range [{labels.min()}, {labels.max()}]")
        return labels

    def calibrate(self, images: np.ndarray, labels: np.ndarray) -> VoxelModel:
        """Fit every normalisation constant on an image set (deterministic given the set):
        feature channel scales, the shape-term scale of category voxels, then each voxel's
        mean and std, so evoked responses over this set have mean 0 and std 1 per voxel.
        Also stores per-class mean responses (used by `imagery`). Returns self."""
        images = as_float_images(images)
        labels = self._check_labels(labels, images.shape[0])
        if images.shape[0] < 2:
            raise ValueError("calibration needs at least 2 images")
        feats = retinotopic_features(images).reshape(images.shape[0], N_RETINO_CHANNELS, -1)
        scale = feats.std(axis=(0, 2))
        self._channel_scale = np.where(scale > 1e-8, scale, 1.0).astype(np.float32)
        shape_resp = self._shape_response(shape_features(images))
        self._shape_mean = shape_resp.mean(axis=0)
        sd = shape_resp.std(axis=0)
        self._shape_scale = np.where(sd > 1e-8, sd, 1.0).astype(np.float32)
        self._mean = np.zeros(self.n_voxels, dtype=np.float32)
        self._std = np.ones(self.n_voxels, dtype=np.float32)
        raw = self._raw(images, labels)
        self._mean = raw.mean(axis=0)
        sd = raw.std(axis=0)
        driven = sd > 1e-8  # "none" voxels have no drive: keep them at exactly 0
        self._std = np.where(driven, sd, 1.0).astype(np.float32)
        norm = (raw - self._mean) / self._std
        self._class_means = np.zeros((self.n_classes, self.n_voxels), dtype=np.float32)
        for k in range(self.n_classes):
            sel = labels == k
            if sel.any():
                self._class_means[k] = norm[sel].mean(axis=0)
            elif self._cat_idx.size:  # an unseen class: only the tuning term is known
                self._class_means[k, self._cat_idx] = (
                    np.sqrt(self._category_share) * self._tuning[:, k] - self._mean[self._cat_idx]
                ) / self._std[self._cat_idx]
        return self

    def evoked(self, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """(n, V) float32 noise-free responses to images (n, H, W, 3) in [0, 1] of classes `labels`."""
        raw = self._raw(images, labels)
        return ((raw - self._mean) / self._std).astype(np.float32)

    def imagery(self, labels: np.ndarray, retinotopic_gain: float = 0.2, category_gain: float = 0.8) -> np.ndarray:
        """(n, V) responses when a class is imagined, not seen: the class-mean evoked pattern,
        weak in retinotopic ROIs and stronger in category ROIs (imagery decoding works best in HVC)."""
        labels = self._check_labels(labels, np.asarray(labels).size)
        gain = np.zeros(self.n_voxels, dtype=np.float32)
        gain[self._retino_idx] = retinotopic_gain
        gain[self._cat_idx] = category_gain
        return (self._class_means[labels] * gain).astype(np.float32)

    # -- spontaneous ----------------------------------------------------------------------

    def spontaneous(self, n_frames: int, rng: np.random.Generator, tr: float = 0.72) -> np.ndarray:
        """(n_frames, V) float32 resting-state fluctuations, ~unit std per voxel, spatially
        correlated (local smoothing + shared networks) and AR(1)-smooth in time."""
        if n_frames < 1:
            raise ValueError(f"n_frames must be >= 1, got {n_frames}")
        phi_local = math.exp(-tr / LOCAL_TAU_S)
        phi_net = math.exp(-tr / NETWORK_TAU_S)
        # Smoothing space and time are both linear, so filter white noise in time, then in space.
        local = _ar1(n_frames, self.n_voxels, phi_local, rng)
        local = np.asarray((self._local_kernel @ local.T).T, dtype=np.float32)
        nets = _ar1(n_frames, self._network_loadings.shape[1], phi_net, rng)
        net = nets @ self._network_loadings.T
        out = math.sqrt(LOCAL_VARIANCE) * local + math.sqrt(1.0 - LOCAL_VARIANCE) * net
        return out.astype(np.float32)


def build_voxel_model(rois: list[RoiSpec], image_size: int, n_classes: int, seed: int) -> VoxelModel:
    """Place the ROIs on a 2 mm grid, draw receptive fields, tunings and weights, and calibrate
    on a seeded synthetic image set. Same arguments -> identical model."""
    if not rois:
        raise ValueError("need at least one ROI")
    names = [r.name for r in rois]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicated ROI names: {names}")
    if image_size < 4 or n_classes < 1:
        raise ValueError(f"image_size must be >= 4 and n_classes >= 1, got {image_size}, {n_classes}")
    rng = np.random.default_rng(seed)

    coords_list, roi_idx_list, centres_list, sigmas_list = [], [], [], []
    y_offset = -100.0  # posterior to anterior, like the ventral stream
    for k, roi in enumerate(rois):
        nx, ny, nz = _block_cells(roi.n_voxels, roi.kind)
        cells = np.stack(np.meshgrid(np.arange(nx), np.arange(ny), np.arange(nz), indexing="ij"), -1).reshape(-1, 3)
        chosen = np.sort(rng.choice(cells.shape[0], size=roi.n_voxels, replace=False))
        cells = cells[chosen]
        coords_list.append(
            np.column_stack([20.0 + GRID_MM * cells[:, 0], y_offset + GRID_MM * cells[:, 1], GRID_MM * cells[:, 2]])
        )
        y_offset += GRID_MM * ny + ROI_GAP_MM
        roi_idx_list.append(np.full(roi.n_voxels, k))
        if roi.kind == "retinotopic":
            # The map: grid x -> image x, grid z -> image y (upside down, as in V1), small jitter.
            jitter = rng.uniform(-0.35, 0.35, size=(roi.n_voxels, 2))
            fx = (cells[:, 0] + 0.5 + jitter[:, 0]) / nx
            fy = 1.0 - (cells[:, 2] + 0.5 + jitter[:, 1]) / nz
            centres_list.append(np.column_stack([0.05 + 0.9 * fx, 0.05 + 0.9 * fy]))
            sigmas_list.append(roi.rf_size * rng.uniform(0.8, 1.25, size=roi.n_voxels))
        else:
            centres_list.append(np.full((roi.n_voxels, 2), np.nan))
            sigmas_list.append(np.full(roi.n_voxels, np.nan))
    coords = np.concatenate(coords_list).astype(np.float64)
    roi_index = np.concatenate(roi_idx_list).astype(np.int64)
    rf_centres = np.concatenate(centres_list)
    rf_sigmas = np.concatenate(sigmas_list)
    kinds = np.asarray([r.kind for r in rois], dtype=object)[roi_index]
    retino_idx = np.flatnonzero(kinds == "retinotopic")
    cat_idx = np.flatnonzero(kinds == "category")

    # Retinotopic: RFs never narrower than ~0.6 grid cell, or a small RF falls between samples.
    rf_cells = np.maximum(rf_sigmas[retino_idx] * RETINO_GRID, 0.6)
    rf = _gaussian_rf_matrix(rf_centres[retino_idx], rf_cells)
    weights = np.empty((retino_idx.size, N_RETINO_CHANNELS), dtype=np.float32)
    weights[:, :3] = 0.6 * rng.standard_normal((retino_idx.size, 3))  # signed luminance/colour
    weights[:, 3:] = np.abs(rng.standard_normal((retino_idx.size, 3))) + 0.3  # energy: positive

    # Category: spatially smooth tunings within each ROI, made sparse-ish by an exponential.
    tuning = np.zeros((cat_idx.size, n_classes), dtype=np.float32)
    shape_w = rng.standard_normal((cat_idx.size, 2 * SHAPE_GRID * SHAPE_GRID)).astype(np.float32)
    shape_w /= math.sqrt(shape_w.shape[1])
    share = rng.uniform(0.5, 0.85, size=cat_idx.size).astype(np.float32)
    for k, roi in enumerate(rois):
        if roi.kind != "category":
            continue
        local = np.flatnonzero(roi_index[cat_idx] == k)
        raw = rng.standard_normal((local.size, n_classes))
        smooth = _spatially_smooth(raw, coords[cat_idx[local]], sigma_mm=2.5)
        smooth = (smooth - smooth.mean(0)) / (smooth.std(0) + 1e-8)
        t = np.exp(1.2 * smooth)  # heavy right tail: a few strongly preferred classes per voxel
        t = t - t.mean(axis=1, keepdims=True)
        tuning[local] = t / (t.std(axis=1, keepdims=True) + 1e-8)

    local_kernel = _local_kernel(coords)
    loadings = _network_loadings(kinds, rf_centres, rng)

    model = VoxelModel(
        roi_names=names,
        roi_kinds=[r.kind for r in rois],
        roi_index=roi_index,
        coords=coords,
        image_size=int(image_size),
        n_classes=int(n_classes),
        rf_centres=rf_centres,
        rf_sigmas=rf_sigmas,
        _retino_idx=retino_idx,
        _rf=rf.astype(np.float32),
        _feature_weights=weights,
        _cat_idx=cat_idx,
        _tuning=tuning,
        _shape_weights=shape_w,
        _category_share=share,
        _local_kernel=local_kernel,
        _network_loadings=loadings,
    )
    calib_rng = np.random.default_rng([seed, 1])
    calib = synthetic_calibration_images(N_CALIBRATION, image_size, calib_rng)
    model.calibrate(calib, np.arange(N_CALIBRATION) % n_classes)
    log.debug("voxel model: %d voxels in %s", model.n_voxels, dict(zip(names, [r.n_voxels for r in rois])))
    return model


def _local_kernel(coords: np.ndarray) -> sparse.csr_matrix:
    """Gaussian-of-distance kernel with rows scaled to unit sum of squares, so white
    unit-variance input gives unit-variance output per voxel."""
    kernel = _gaussian_kernel(coords, LOCAL_SIGMA_MM)
    norms = np.sqrt(np.asarray(kernel.multiply(kernel).sum(axis=1)).ravel())
    return (sparse.diags(1.0 / norms).astype(np.float32) @ kernel).tocsr()


def _network_loadings(kinds: np.ndarray, rf_centres: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(V, K) loadings on latent networks: 3x3 visual-field patches (retinotopic voxels, by RF
    centre, shared across ROIs), one network per voxel kind, and a global signal."""
    n = len(kinds)
    patch_centres = (np.stack(np.meshgrid([1 / 6, 3 / 6, 5 / 6], [1 / 6, 3 / 6, 5 / 6]), -1)).reshape(-1, 2)
    patches = np.zeros((n, len(patch_centres)), dtype=np.float32)
    retino = kinds == "retinotopic"
    if retino.any():
        d2 = ((rf_centres[retino, None, :] - patch_centres[None, :, :]) ** 2).sum(-1)
        patches[retino] = np.exp(-d2 / (2 * 0.2**2))
    groups = np.stack([(kinds == k).astype(np.float32) for k in KINDS], axis=1)
    groups *= rng.uniform(0.4, 0.8, size=(n, 1)).astype(np.float32)
    global_ = rng.uniform(0.2, 0.5, size=(n, 1)).astype(np.float32)
    loadings = np.concatenate([patches, groups, global_], axis=1)
    return loadings / np.linalg.norm(loadings, axis=1, keepdims=True)


def add_measurement_noise(signal: np.ndarray, snr: float, rng: np.random.Generator) -> np.ndarray:
    """`signal` plus white Gaussian noise whose std is the signal's std / snr, per voxel
    (column, over samples). Columns without signal variance (e.g. voxels with no stimulus
    drive) get the average noise level of the others, so they are noisy, not silent."""
    if not snr > 0:
        raise ValueError(f"snr must be > 0, got {snr}")
    x = np.asarray(signal, dtype=np.float32)
    if x.ndim == 1:
        return add_measurement_noise(x[:, None], snr, rng)[:, 0]
    sd = x.std(axis=0) if x.shape[0] > 1 else np.abs(x).mean(axis=0)
    positive = sd > 1e-8
    fallback = float(sd[positive].mean()) if positive.any() else 1.0
    noise_sd = np.where(positive, sd, fallback) / snr
    return (x + rng.standard_normal(x.shape).astype(np.float32) * noise_sd.astype(np.float32)).astype(np.float32)
