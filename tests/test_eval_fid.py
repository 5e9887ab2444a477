"""FID through torchmetrics with our feature extractors: self ~ 0, equals the closed form by hand."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from mindvis.evaluation.fid import fid_over_sample_sets, frechet_distance
from mindvis.evaluation.feature_nets import JudgeFeatures, load_inception
from mindvis.evaluation.judges import SmallCNN, SmallCNNJudge
from mindvis.utils.errors import MissingWeightsError


class PooledColour(nn.Module):
    """A tiny deterministic extractor: 8 fixed random projections of 4x4-pooled pixels."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.proj = nn.Parameter(torch.randn(3 * 16, 8, generator=g), requires_grad=False)
        self.num_features = 8

    def forward(self, x):
        x = torch.nn.functional.adaptive_avg_pool2d(x.float() / 255.0, 4).flatten(1)
        return x @ self.proj


def _imgs(n, seed, shift=0):
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(120 + shift, 40, (n, 16, 16, 3)), 0, 255).astype(np.uint8)


def _fid_by_hand(f1: np.ndarray, f2: np.ndarray) -> float:
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def test_fid_of_a_set_with_itself_is_zero():
    x = _imgs(40, 0)
    assert frechet_distance(x, x.copy(), PooledColour()) == pytest.approx(0.0, abs=1e-6)


def test_fid_matches_closed_form_and_grows_with_shift():
    ext = PooledColour()
    a, b = _imgs(40, 1), _imgs(40, 2, shift=30)
    with torch.no_grad():
        fa = ext(torch.from_numpy(a).permute(0, 3, 1, 2)).double().numpy()
        fb = ext(torch.from_numpy(b).permute(0, 3, 1, 2)).double().numpy()
    assert frechet_distance(a, b, ext) == pytest.approx(_fid_by_hand(fa, fb), rel=1e-4)
    assert frechet_distance(a, _imgs(40, 3, shift=60), ext) > frechet_distance(a, b, ext) > 0


def test_judge_features_fid_self_zero_and_per_set_summary():
    torch.manual_seed(0)
    judge = SmallCNNJudge(SmallCNN(10, width=4), image_size=16, class_names=[str(i) for i in range(10)])
    gt = _imgs(12, 4)
    samples = np.stack([gt, _imgs(12, 5, shift=40)], axis=1)  # set 0 = the ground truth itself
    res = fid_over_sample_sets(gt, samples, JudgeFeatures(judge))
    assert res["per_set"][0] == pytest.approx(0.0, abs=1e-6)
    assert res["per_set"][1] == pytest.approx(frechet_distance(gt, samples[:, 1], JudgeFeatures(judge)), rel=1e-6)
    assert res["per_set"][1] > 0
    assert res["min"] == res["per_set"][0] and res["mean"] == pytest.approx(np.mean(res["per_set"]))


def test_inception_extractor_from_a_local_file(tmp_path):
    from torchvision.models import inception_v3

    # Random weights in the torchvision layout stand in for inception_v3_google-0cc3c7bd.pth.
    torch.manual_seed(0)
    path = tmp_path / "inception.pth"
    torch.save(inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(), path)
    ext64 = load_inception(path, "evaluate.inception_weights", dims=64)
    x = _imgs(4, 6)
    feats = ext64(torch.from_numpy(x).permute(0, 3, 1, 2))
    assert feats.shape == (4, 64)
    assert frechet_distance(x, x.copy(), ext64) == pytest.approx(0.0, abs=1e-6)


def test_missing_inception_weights_name_the_key(tmp_path):
    with pytest.raises(MissingWeightsError, match="evaluate.inception_weights.*inception_v3_google"):
        load_inception(tmp_path / "nope.pth", "evaluate.inception_weights")
