"""Judges and feature extractors: local weights only, clear errors, exact preprocessing, demo judge."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mindvis.evaluation.judge_training import JudgeTrainConfig, save_judge, train_judge
from mindvis.evaluation.feature_nets import AlexNetLayers, LpipsAlex, load_clip, load_lpips
from mindvis.evaluation.judges import SmallCNN, ViTH14Judge, load_judge, load_small_cnn_judge
from mindvis.simulate.stimuli import StimuliConfig, build_stimuli
from mindvis.utils.errors import ConfigError, InputDataError, MissingWeightsError


def test_missing_weights_errors_name_key_and_source(tmp_path):
    with pytest.raises(MissingWeightsError, match="evaluate.judge_weights.*train-judge"):
        load_judge("small_cnn", tmp_path / "judge.pt", "evaluate.judge_weights")
    with pytest.raises(MissingWeightsError, match="judge_weights.*vit_h_14_swag-80465313.pth"):
        load_judge("vit_h_14_swag", None)
    with pytest.raises(MissingWeightsError, match="evaluate.alexnet_weights.*alexnet-owt"):
        load_lpips(tmp_path / "a.pth", None, ("evaluate.alexnet_weights", "evaluate.lpips_weights"))
    with pytest.raises(MissingWeightsError, match="evaluate.clip_weights.*vit_large_patch14_clip_224.openai"):
        load_clip("", "evaluate.clip_weights")
    with pytest.raises(ConfigError, match="judge must be one of"):
        load_judge("resnet", tmp_path / "x")


def test_vit_h14_preprocessing_is_the_swag_transform():
    from torchvision.models import ViT_H_14_Weights
    from torchvision.models.vision_transformer import VisionTransformer

    t = ViT_H_14_Weights.IMAGENET1K_SWAG_E2E_V1.transforms()
    assert (t.crop_size, t.resize_size, t.interpolation.value) == ([518], [518], "bicubic")
    assert t.mean == [0.485, 0.456, 0.406] and t.std == [0.229, 0.224, 0.225]
    # A tiny ViT with the real input geometry (518 px, 14 x 14 patches of 37 px) stands in for ViT-H/14.
    tiny = VisionTransformer(image_size=518, patch_size=37, num_layers=1, num_heads=1, hidden_dim=8, mlp_dim=8,
                             num_classes=1000)
    judge = ViTH14Judge(tiny)
    img = np.full((2, 64, 64, 3), 128, np.uint8)
    x = judge.preprocess(torch.from_numpy(img).permute(0, 3, 1, 2))
    assert x.shape == (2, 3, 518, 518)
    want = (128 / 255 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(x[0, :, 100, 100].numpy(), want, atol=1e-5)  # constant image stays constant
    probs, feats = judge.run(img)
    assert probs.shape == (2, 1000) and feats.shape == (2, 8)
    np.testing.assert_allclose(probs.sum(1), 1.0)


def test_ink_map_ignores_colours_and_polarity():
    yy, xx = np.mgrid[0:24, 0:24]
    ink = ((yy - 12) ** 2 + (xx - 10) ** 2 < 40).astype(float)  # a blob off-centre
    def render(fg, bg):
        return torch.from_numpy(bg + ink[..., None] * (np.array(fg) - np.array(bg))).permute(2, 0, 1)[None].float()

    a = SmallCNN.ink_map(render([0.9, 0.2, 0.1], [0.1, 0.3, 0.4]))
    b = SmallCNN.ink_map(render([0.05, 0.05, 0.3], [0.95, 0.9, 0.7]))  # dark on light: polarity flipped
    assert torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1] > 0.999
    assert a[0, 0, 12, 10] > 0 > a[0, 0, 0, 0]  # ink positive, background negative


def test_small_judge_learns_and_round_trips(tmp_path):
    stim = build_stimuli(StimuliConfig(image_size=32, train_per_class=8, test_per_class=3, seed=0))
    cfg = JudgeTrainConfig(epochs=12, batch_size=40, width=8, image_size=16, seed=0)
    judge, summary = train_judge(stim.train_images, stim.train_labels, stim.class_names, cfg,
                                 stim.test_images, stim.test_labels)
    assert summary["steps"] == 24 and len(summary["loss_per_epoch"]) == 12
    assert summary["loss_per_epoch"][-1] < summary["loss_per_epoch"][0]
    assert summary["heldout_accuracy"] > 0.3  # chance 0.1, after a few seconds of training
    path = tmp_path / "judge.pt"
    save_judge(judge, cfg.width, path)
    # A plain-tensor file: loads with weights_only=True (no pickled code).
    assert torch.load(path, weights_only=True)["format"] == "mindvis-small-cnn-judge/1"
    again = load_small_cnn_judge(path)
    p1, f1 = judge.run(stim.test_images)
    p2, f2 = again.run(stim.test_images)
    np.testing.assert_allclose(p1, p2, atol=1e-6)
    assert f1.shape == (30, 32) and again.image_size == 16 and again.class_names == stim.class_names
    torch.save({"format": "something-else"}, tmp_path / "bad.pt")
    with pytest.raises(InputDataError, match="not a small-CNN judge"):
        load_small_cnn_judge(tmp_path / "bad.pt")
    (tmp_path / "trunc.pt").write_bytes(path.read_bytes()[:100])
    with pytest.raises(InputDataError, match="trunc.pt: cannot read weight file"):
        load_small_cnn_judge(tmp_path / "trunc.pt")


def test_alexnet_layers_and_lpips_without_download():
    from torchvision.models import alexnet

    torch.manual_seed(0)
    net = alexnet(weights=None)
    x = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    out = AlexNetLayers(net)(x)
    # 256 px input: features.4 = ReLU after conv2 (192 x 31 x 31), features.11 = after conv5 (256 x 15 x 15)
    assert out["alexnet_2"].shape == (2, 192 * 31 * 31) and out["alexnet_5"].shape == (2, 256 * 15 * 15)
    lp = LpipsAlex(net, None)  # the LPIPS linear weights shipped inside torchmetrics
    d_same = lp(x, x)
    d_diff = lp(x, x.flip(0))
    assert torch.allclose(d_same, torch.zeros(2)) and (d_diff > 0).all()
    assert torch.allclose(d_diff, lp(x.flip(0), x))  # symmetric


def test_clip_loader_with_a_tiny_timm_tower(tmp_path):
    import timm

    net = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=16)
    path = tmp_path / "clip.pth"
    torch.save(net.state_dict(), path)
    clip = load_clip(path, "evaluate.clip_weights", arch="vit_tiny_patch16_224", embed_dim=16)
    emb = clip(torch.randint(0, 256, (3, 3, 40, 40), dtype=torch.uint8))
    assert emb.shape == (3, 16)
