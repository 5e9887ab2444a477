"""The whole protocol with every optional network configured (random weights in the real file layouts)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mindvis.evaluation import EvaluateConfig, evaluate_samples
from mindvis.evaluation.judges import SmallCNN, SmallCNNJudge
from mindvis.utils.errors import MissingWeightsError


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
    """torchvision AlexNet / Inception-v3 / EfficientNet-B1, a tiny timm ViT (for CLIP) and a SwAV-style
    ResNet-50 checkpoint ("module." keys, projection head), randomly initialised."""
    import timm
    from torchvision.models import alexnet, efficientnet_b1, inception_v3, resnet50

    d = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    torch.save(alexnet(weights=None).state_dict(), d / "alexnet.pth")
    torch.save(inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(), d / "inception.pth")
    torch.save(timm.create_model("vit_tiny_patch16_224", num_classes=768).state_dict(), d / "clip.pth")
    torch.save(efficientnet_b1(weights=None).state_dict(), d / "effnet.pth")
    swav = {f"module.{k}": v for k, v in resnet50(weights=None).state_dict().items() if not k.startswith("fc.")}
    swav["module.projection_head.0.weight"] = torch.zeros(4, 2048)
    torch.save(swav, d / "swav_800ep_pretrain.pth.tar")
    return d


def _images(n, seed):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (n, 1, 1, 3))  # a distinct colour per image plus texture
    return np.clip(base + rng.normal(0, 40, (n, 24, 24, 3)), 0, 255).astype(np.uint8)


def test_every_metric_computed_when_weights_are_given(weight_files):
    gt = _images(4, 0)
    samples = gt[:, None]  # one sample set that reproduces the ground truth
    cfg = EvaluateConfig(
        n_way=3, trials=50, alexnet_weights=str(weight_files / "alexnet.pth"),
        inception_weights=str(weight_files / "inception.pth"), clip_weights=str(weight_files / "clip.pth"),
        clip_arch="vit_tiny_patch16_224", effnet_weights=str(weight_files / "effnet.pth"),
        swav_weights=str(weight_files / "swav_800ep_pretrain.pth.tar"),
    )
    torch.manual_seed(0)
    judge = SmallCNNJudge(SmallCNN(4, width=4), image_size=16, class_names=list("abcd"))
    doc = evaluate_samples(samples, gt, cfg, judge=judge)
    m = doc["metrics"]
    assert doc["skipped"] == {}
    expected = {
        "identification_lpips", "fid_inception_2048", "fid_inception_64_reference", "nsd_two_way_alexnet_2",
        "nsd_two_way_alexnet_5", "nsd_two_way_inception", "nsd_two_way_clip", "nsd_pixcorr", "nsd_ssim_gray",
        "nsd_distance_effnet", "nsd_distance_swav",
    }
    assert expected <= set(m)
    # The samples are the ground truth: perfect identification in every pixel and network space.
    for name in ("identification_lpips", "identification_ssim", "nsd_two_way_alexnet_2", "nsd_two_way_alexnet_5",
                 "nsd_two_way_clip"):
        assert m[name]["per_set"][0] == 1.0, name
    assert m["nsd_pixcorr"]["per_set"][0] == pytest.approx(1.0) and m["nsd_ssim_gray"]["per_set"][0] == pytest.approx(1.0)
    for name in ("nsd_distance_effnet", "nsd_distance_swav"):  # identical features: distance 0, lower is better
        assert m[name]["per_set"][0] == pytest.approx(0.0, abs=1e-9) and not m[name]["higher_is_better"], name
    assert m["fid_inception_2048"]["per_set"][0] == pytest.approx(0.0, abs=1e-4)
    assert m["fid_inception_64_reference"]["features"] == 64 and m["fid_inception_2048"]["features"] == 2048
    assert "NOT comparable with standard FID" in m["fid_inception_64_reference"]["definition"]


def test_configured_but_missing_file_is_an_error_not_a_skip(tmp_path):
    gt = _images(3, 2)
    cfg = EvaluateConfig(alexnet_weights=str(tmp_path / "alexnet.pth"), n_way=2, trials=5)
    judge = SmallCNNJudge(SmallCNN(2, width=4), image_size=16, class_names=["a", "b"])
    with pytest.raises(MissingWeightsError, match="evaluate.alexnet_weights"):
        evaluate_samples(gt[:, None], gt, cfg, judge=judge)
