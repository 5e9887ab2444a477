"""The NSD evaluation protocol as MindEye computes it, and the report's NSD section.

Every expected value is derived here in numpy, following MindEye's steps: 2-way identification
`r = corrcoef(real, pred)[:N, N:]; success = r < diag(r); mean(success.sum(0)) / (N - 1)`,
torchvision's bilinear resize (half-pixel centres, edge clamp; upsampling only, where antialiasing
is a no-op) for PixCorr/SSIM at 425 px, scipy's correlation distance. Networks are tiny stand-ins
built here: only their input geometry is under test, never pretrained weights.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from mindvis.evaluation import EvaluateConfig, evaluate_samples, load_pixel_ground_truth, resolve_pixels
from mindvis.evaluation.feature_nets import ClipImageEmbedding
from mindvis.evaluation.judges import SmallCNN, SmallCNNJudge
from mindvis.evaluation.nsd_networks import SIZES, EffNetFeatures, ResNetPoolFeatures, load_swav
from mindvis.evaluation.nsd_suite import (
    correlation_distance_per_item,
    nsd_item_scores,
    pixcorr,
    pixel_size_for,
    ssim_gray,
    summarise_nsd,
    two_way_identification,
)
from mindvis.utils.errors import ConfigError, InputDataError

# ----------------------------------------------------------------------------- by hand


def mindeye_two_way(real: np.ndarray, pred: np.ndarray) -> float:
    """MindEye's `two_way_identification`, step by step (NaN comparisons are False, as in numpy)."""
    n = len(real)
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        r = np.corrcoef(real, pred)[:n, n:]
    success = r < np.diag(r)
    return float(np.mean(success.sum(0)) / (n - 1))


def bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of a half-pixel bilinear upsampling (align_corners=False)."""
    w = np.zeros((n_out, n_in))
    for o in range(n_out):
        src = max((o + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = min(int(np.floor(src)), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        lam = src - i0
        w[o, i0] += 1 - lam
        w[o, i1] += lam
    return w


def upsample(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 (n, h, w, 3) -> float64 in [0, 1] at size x size, by the bilinear weights above."""
    x = images.astype(np.float64) / 255.0
    wy, wx = bilinear_matrix(x.shape[1], size), bilinear_matrix(x.shape[2], size)
    return np.einsum("oh,nhwc,pw->nopc", wy, x, wx)


def images(n: int, side: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, side, side, 3)).astype(np.uint8)


# ----------------------------------------------------------------------------- 2-way identification


def test_two_way_matches_mindeye_formula_worked_by_hand():
    # Three ground truths, three reconstructions; correlations chosen so the counts are readable:
    # pred0 = real0 exactly, pred1 closer to real2 than to real1, pred2 = -real2 (worst of all).
    real = np.array([[1.0, 2.0, 3.0, 4.0], [4.0, 1.0, 3.0, 2.0], [1.0, 3.0, 2.0, 5.0]])
    pred = np.array([real[0], real[2] + [0.0, 0.0, 0.0, 0.5], -real[2]])
    # By hand: column j of r = corr(real_i, pred_j). pred0: own r = 1, beats both others -> 2.
    # pred1: own r(real1, pred1) is low, r(real0, pred1) and r(real2, pred1) are higher -> 0.
    # pred2: own r = -1, nothing is lower -> 0. Score = mean(2, 0, 0) / 2 = 1/3.
    assert mindeye_two_way(real, pred) == pytest.approx(1 / 3)
    assert two_way_identification(pred, real) == pytest.approx(1 / 3)


def test_two_way_ties_are_failures():
    a, b = np.array([1.0, 0.0, 2.0, 5.0]), np.array([3.0, 1.0, 0.0, 1.0])
    real = np.stack([a, a, b])  # two identical ground truths: r ties for pred0 and pred1
    pred = real.copy()
    # pred0: real1 ties (r = 1, not < 1), real2 lower -> 1; pred1 the same -> 1; pred2 -> 2.
    expected = (1 + 1 + 2) / 3 / 2
    assert mindeye_two_way(real, pred) == pytest.approx(expected)
    assert two_way_identification(pred, real) == pytest.approx(expected)


def test_two_way_random_features_and_undefined_correlations_match_numpy():
    rng = np.random.default_rng(3)
    real, pred = rng.normal(size=(9, 6)), rng.normal(size=(9, 6))
    assert two_way_identification(pred, real) == pytest.approx(mindeye_two_way(real, pred))
    # A constant ground-truth vector and a constant reconstruction: NaN in numpy, never a success.
    real[2] = 1.5
    pred[5] = -0.25
    assert two_way_identification(pred, real) == pytest.approx(mindeye_two_way(real, pred))


def test_correlation_distance_is_scipys():
    from scipy.spatial.distance import correlation

    rng = np.random.default_rng(4)
    real, pred = rng.normal(size=(5, 7)), rng.normal(size=(5, 7))
    expected = [correlation(real[i], pred[i]) for i in range(5)]
    np.testing.assert_allclose(correlation_distance_per_item(pred, real), expected, rtol=1e-12)


# ----------------------------------------------------------------------------- pixels at 425 px


def test_pixcorr_and_ssim_at_425_follow_mindeye_resize():
    from skimage.color import rgb2gray
    from skimage.metrics import structural_similarity

    preds, gts = images(3, 8, 0), images(3, 8, 1)
    p425, g425 = upsample(preds, 425), upsample(gts, 425)
    expected_pix = np.mean([np.corrcoef(p.ravel(), g.ravel())[0, 1] for p, g in zip(p425, g425)])
    assert pixcorr(preds, gts, 425) == pytest.approx(expected_pix, abs=1e-9)
    expected_ssim = np.mean([structural_similarity(rgb2gray(p), rgb2gray(g), gaussian_weights=True, sigma=1.5,
                                                   use_sample_covariance=False, data_range=1.0)
                             for p, g in zip(p425, g425)])
    assert ssim_gray(preds, gts, 425) == pytest.approx(expected_ssim, abs=1e-6)
    # At native size the number differs (interpolation smooths), so the switch matters.
    native = np.mean([np.corrcoef(p.ravel().astype(float), g.ravel())[0, 1] for p, g in zip(preds, gts)])
    assert pixcorr(preds, gts) == pytest.approx(native)


def test_pixel_ground_truth_at_425_is_used_as_given():
    preds, gts = images(3, 8, 5), images(3, 8, 6)
    gt425 = images(3, 425, 7)  # the dataset's own 425-px images (here unrelated to gts on purpose)
    items = nsd_item_scores(preds, gts, {}, pixel_size=425, pixel_gts=gt425)
    p425 = upsample(preds, 425)
    g = gt425.astype(np.float64) / 255.0
    expected = [np.corrcoef(p.ravel(), q.ravel())[0, 1] for p, q in zip(p425, g)]
    np.testing.assert_allclose(items["pixcorr"], expected, atol=1e-9)


def test_pixel_switch_auto_is_425_for_nsd_only():
    assert pixel_size_for("auto", "nsd") == 425 and pixel_size_for("auto", "NSD") == 425
    assert pixel_size_for("auto", "god") is None and pixel_size_for("auto", None) is None
    assert pixel_size_for("mindeye", "god") == 425 and pixel_size_for("native", "nsd") is None
    with pytest.raises(ConfigError, match="nsd_pixels"):
        pixel_size_for("425", "nsd")
    assert resolve_pixels(EvaluateConfig(), "nsd").nsd_pixels == "mindeye"
    assert resolve_pixels(EvaluateConfig(), "bold5000").nsd_pixels == "native"


# ----------------------------------------------------------------------------- networks' input geometry


class Recorder(nn.Module):
    """Identity that keeps the shape and channel means of what it receives."""

    def __init__(self):
        super().__init__()
        self.seen = []
        self.p = nn.Parameter(torch.zeros(1))  # batched_features reads the device from a parameter

    def forward(self, x):
        self.seen.append((tuple(x.shape), x.mean(dim=(0, 2, 3)).tolist()))
        return x


def test_effnet_and_swav_inputs_are_mindeye_sizes_and_imagenet_normalised():
    grey = torch.full((2, 3, 20, 20), 128, dtype=torch.uint8)
    rec = Recorder()
    stand_in = nn.Module()
    stand_in.features, stand_in.avgpool = rec, nn.AdaptiveAvgPool2d(1)
    eff = EffNetFeatures(stand_in, size=SIZES["effnet"])
    out = eff(grey)
    shape, means = rec.seen[-1]
    assert shape == (2, 3, 255, 255) and out.shape == (2, 3)
    expected = [(128 / 255 - m) / s for m, s in zip((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))]
    np.testing.assert_allclose(means, expected, atol=1e-5)

    from torchvision.models import resnet18

    net = resnet18(weights=None)
    rec = Recorder()
    net.conv1 = rec
    for name in ("bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
        setattr(net, name, nn.Identity())
    feats = ResNetPoolFeatures(net, size=SIZES["swav"])(grey)
    assert rec.seen[-1][0] == (2, 3, 224, 224) and feats.shape == (2, 3)


def test_size_table_is_the_papers():
    assert SIZES == {"alexnet": 256, "inception": 342, "clip": 224, "effnet": 255, "swav": 224}


def test_clip_for_nsd_resizes_bilinearly():
    rec = Recorder()
    clip = ClipImageEmbedding(rec, image_size=16, mode="bilinear")
    img = images(1, 8, 9)
    clip(torch.from_numpy(img).permute(0, 3, 1, 2))
    # What reached the network: the bilinear upsampling by hand, then CLIP's mean/std.
    mean, std = np.array((0.48145466, 0.4578275, 0.40821073)), np.array((0.26862954, 0.26130258, 0.27577711))
    expected = ((upsample(img, 16) - mean) / std).mean(axis=(0, 1, 2))
    assert rec.seen[-1][0] == (1, 3, 16, 16)
    np.testing.assert_allclose(rec.seen[-1][1], expected, atol=1e-5)


def test_swav_checkpoint_lacking_backbone_is_a_clean_error(tmp_path):
    path = tmp_path / "swav_800ep_pretrain.pth.tar"
    torch.save({"module.conv1.weight": torch.zeros(64, 3, 7, 7), "module.prototypes.weight": torch.zeros(3, 128)},
               path)
    with pytest.raises(InputDataError, match="swav_800ep_pretrain.pth.tar.*backbone tensors missing"):
        load_swav(path, "evaluate.swav_weights")


# ----------------------------------------------------------------------------- the protocol end to end


def _judge():
    torch.manual_seed(0)
    return SmallCNNJudge(SmallCNN(3, width=4), image_size=16, class_names=list("abc"))


def test_evaluate_nsd_run_reports_425_px_and_skips_unconfigured_networks():
    gt = images(4, 16, 10)
    samples = np.stack([images(4, 16, 11), images(4, 16, 12)], axis=1)  # K = 2
    cfg = EvaluateConfig(n_way=2, trials=10, bootstrap=0, permutations=0, ssim=False)
    doc = evaluate_samples(samples, gt, cfg, judge=_judge(), identity={"dataset": "nsd", "subject": "1"})
    rec = doc["metrics"]["nsd_pixcorr"]
    expected = np.mean([np.mean([np.corrcoef(p.ravel(), g.ravel())[0, 1]
                                 for p, g in zip(upsample(samples[:, k], 425), upsample(gt, 425))])
                        for k in range(2)])
    assert rec["pixel_size"] == 425 and rec["value"] == pytest.approx(expected, abs=1e-9)
    assert "425 px" in rec["definition"]
    for name in ("nsd_distance_effnet", "nsd_distance_swav", "nsd_two_way_clip"):
        assert name in doc["skipped"] and name not in doc["metrics"]
    # The same run on a demo dataset keeps the native-size numbers (pcc_raw_mean is the same value).
    god = evaluate_samples(samples, gt, cfg, judge=_judge(), identity={"dataset": "god", "subject": "1"})
    assert god["metrics"]["nsd_pixcorr"]["pixel_size"] is None
    assert god["metrics"]["nsd_pixcorr"]["value"] == pytest.approx(god["metrics"]["pcc_raw_mean"]["value"])


def test_pixel_ground_truth_file_is_checked(tmp_path):
    path = tmp_path / "subj01.npz"
    np.savez(path, test_images_pixel=images(3, 425, 1))
    assert load_pixel_ground_truth(path, 3).shape == (3, 425, 425, 3)
    with pytest.raises(InputDataError, match="subj01.npz.*for 4 test items"):
        load_pixel_ground_truth(path, 4)
    np.savez(tmp_path / "other.npz", arr_0=np.zeros(2))
    with pytest.raises(InputDataError, match="other.npz.*no test_images_pixel"):
        load_pixel_ground_truth(tmp_path / "other.npz", 3)


def test_summary_means_distances_and_rates():
    items = {"distance_x": np.array([0.2, 0.4]), "two_way_y": np.array([[1.0, 0.0], [0.5, 0.2]])}
    # two_way_y: item 0 beats its one distractor (0 < 1), item 1 does not (0.5 > 0.2): 0.5.
    assert summarise_nsd(items) == {"distance_x": pytest.approx(0.3), "two_way_y": 0.5}


# ----------------------------------------------------------------------------- report section


def _nsd_doc():
    def rec(v, ci=None, **extra):
        return {"value": v, "label": "x", "definition": "d", "chance": None, "higher_is_better": True,
                **({"ci95": list(ci)} if ci else {}), **extra}

    return {"format": "mindvis-metrics/2", "dataset": "nsd", "subject": "1", "protocol": "nsd-micro",
            "n_test": 4, "k_samples": 2, "metrics": {
                "nsd_pixcorr": rec(0.1234, (0.05, 0.2), pixel_size=425), "nsd_ssim_gray": rec(0.3),
                "pcc_raw_mean": rec(0.2222), "nsd_two_way_alexnet_2": rec(0.61)},
            "skipped": {"nsd_two_way_clip": "needs CLIP ViT-L/14 weights (evaluate.clip_weights): not configured"}}


def test_report_nsd_section_renders_ours_beside_quoted_mindeye2():
    from mindvis.evaluation.report import ReportInputs, render_report

    html = render_report(ReportInputs(metrics=[_nsd_doc()], metrics_paths=[]))
    section = html[html.index("NSD: the field's protocol"):]
    table = section[section.index('<table id="nsd">'):section.index("</table>")]
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", table, flags=re.S)
    ours, quoted = rows[1], rows[2]
    assert "NSD · subject 1 (mindvis)" in ours and "0.123" in ours and "PixCorr/SSIM at 425 px" in ours
    assert "not measured" in ours and "evaluate.clip_weights" in ours  # the skip reason, on hover
    assert "MindEye2 · subject 1" in quoted and "quoted, not measured here" in quoted
    for value in ("0.374", "0.439", "0.979", "0.991", "0.960", "0.937", "0.607", "0.336"):
        assert value in quoted
    assert "final_evaluations.ipynb" in quoted
    assert "Brain-Diffuser" in section and "not quoted" in section
    # PixCorr at 425 px is another number than pcc_raw_mean: both are shown.
    assert "PCC (raw mean)" in html


def test_report_has_no_nsd_section_without_nsd_runs():
    from mindvis.evaluation.report import ReportInputs, render_report

    doc = dict(_nsd_doc(), dataset="god")
    assert "NSD: the field's protocol" not in render_report(ReportInputs(metrics=[doc], metrics_paths=[]))
