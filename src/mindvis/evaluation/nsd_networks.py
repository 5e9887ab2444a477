"""The NSD suite's networks, each at the input size MindEye's evaluation gives it; local weights only.

MindEye (1 and 2) feeds every network a torchvision `Resize(size)` (bilinear, shorter side)
of the float image, then the network's normalisation (docs/reference.md section 8.3):

  network (torchvision / hub definition)              weights file                       size  score
  AlexNet `features.4` / `features.11`                alexnet-owt-7be5be79.pth           256   2-way
  Inception-v3 `avgpool`                              inception_v3_google-0cc3c7bd.pth   342   2-way
  CLIP ViT-L/14 `encode_image` (CLIP mean/std)        OpenAI weights via timm/open_clip  224   2-way
  EfficientNet-B1 `avgpool` (weights .DEFAULT = V2)   efficientnet_b1-c27df63c.pth       255   distance
  SwAV ResNet-50 `avgpool` (facebookresearch/swav)    swav_800ep_pretrain.pth.tar        224   distance

Our images are square, so `Resize(size)` is `size` x `size`. Antialiasing when shrinking follows
today's torchvision default (on); upsampling (the demo's 64 px) is the same either way. The
CLIP tower here interpolates bilinearly, as MindEye's preprocessing does (CLIP's own transform,
used elsewhere in the project, is bicubic).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from mindvis.evaluation.image_inputs import imagenet_input
from mindvis.evaluation.weight_files import TORCHVISION_SOURCE, load_strict, load_weight_file, require_file
from mindvis.utils.errors import InputDataError

SIZES = {"alexnet": 256, "inception": 342, "clip": 224, "effnet": 255, "swav": 224}
EFFNET_URL = "https://download.pytorch.org/models/efficientnet_b1-c27df63c.pth"
SWAV_SOURCE = ("download it once from https://dl.fbaipublicfiles.com/deepcluster/swav_800ep_pretrain.pth.tar "
               "(what torch.hub's facebookresearch/swav resnet50 loads) and copy it here.")


class EffNetFeatures(nn.Module):
    """torchvision EfficientNet-B1 global-pool features (1280-d) at 255 px."""

    def __init__(self, net: nn.Module, size: int = SIZES["effnet"]):
        super().__init__()
        self.features, self.avgpool, self.size = net.features.eval(), net.avgpool, size

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.avgpool(self.features(imagenet_input(x, self.size))).flatten(1)


class ResNetPoolFeatures(nn.Module):
    """A torchvision ResNet's global-pool features (2048-d for ResNet-50) at `size` px: SwAV's backbone."""

    def __init__(self, net: nn.Module, size: int = SIZES["swav"]):
        super().__init__()
        self.net, self.size = net.eval(), size

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        x = imagenet_input(x, self.size)
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        x = n.layer4(n.layer3(n.layer2(n.layer1(x))))
        return n.avgpool(x).flatten(1)


def load_effnet(path: str | Path | None, config_key: str) -> EffNetFeatures:
    """torchvision EfficientNet-B1 (IMAGENET1K_V2, MindEye's `.DEFAULT`) from a local file."""
    from torchvision.models import efficientnet_b1

    path = require_file(path, config_key, TORCHVISION_SOURCE.format(url=EFFNET_URL))
    net = efficientnet_b1(weights=None)
    load_strict(net, load_weight_file(path), path, "torchvision EfficientNet-B1")
    return EffNetFeatures(net)


def load_swav(path: str | Path | None, config_key: str) -> ResNetPoolFeatures:
    """SwAV's ResNet-50 from the released checkpoint: "module." stripped; the projection head and
    prototypes are not part of the backbone; every backbone tensor must be there (the `fc` layer,
    random in torch.hub's model too, is not used)."""
    from torchvision.models import resnet50

    path = require_file(path, config_key, SWAV_SOURCE)
    state = load_weight_file(path)
    state = state.get("state_dict", state)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    net = resnet50(weights=None)
    backbone = {k for k in net.state_dict() if not k.startswith("fc.")}
    missing = sorted(backbone - set(state))
    if missing:
        raise InputDataError(path, f"not SwAV ResNet-50 weights: {len(missing)} backbone tensors missing "
                                   f"(first: {missing[0]})")
    kept = {k: v for k, v in state.items() if k in backbone}
    kept.update({k: v for k, v in net.state_dict().items() if k.startswith("fc.")})
    load_strict(net, kept, path, "SwAV ResNet-50")
    return ResNetPoolFeatures(net)


def nsd_extractors(cfg, alexnet, inception):
    """(2-way extractors, distance extractors, skipped notes) for the configured networks.

    Each extractor maps uint8 (n, H, W, 3) images to {feature name: (n, D) array}; the feature
    name becomes the metric `nsd_two_way_<name>` or `nsd_distance_<name>`.
    """
    from mindvis.evaluation import feature_nets as nets
    from mindvis.evaluation.nsd_suite import batched_features

    def run(module, name=None):
        module = module.to(cfg.device)
        if name is None:
            return lambda imgs: batched_features(module, imgs, cfg.batch_size)
        return lambda imgs: {name: batched_features(module, imgs, cfg.batch_size)["features"]}

    two_way, distances, missing = {}, {}, {}
    if alexnet is not None:
        two_way["alexnet"] = run(nets.AlexNetLayers(alexnet))
    else:
        missing["nsd_two_way_alexnet_2"] = missing["nsd_two_way_alexnet_5"] = (
            "needs AlexNet weights (evaluate.alexnet_weights): not configured")
    if inception is not None:
        two_way["inception"] = run(nets.InceptionFeatures(inception, dims=2048, resize=SIZES["inception"]), "inception")
    else:
        missing["nsd_two_way_inception"] = "needs Inception-v3 weights (evaluate.inception_weights): not configured"
    if cfg.clip_weights:
        clip = nets.load_clip(cfg.clip_weights, "evaluate.clip_weights", arch=cfg.clip_arch)
        clip.mode = "bilinear"  # MindEye's Resize(224, bilinear), not CLIP's own bicubic
        two_way["clip"] = run(clip, "clip")
    else:
        missing["nsd_two_way_clip"] = "needs CLIP ViT-L/14 weights (evaluate.clip_weights): not configured"
    if cfg.effnet_weights:
        distances["effnet"] = run(load_effnet(cfg.effnet_weights, "evaluate.effnet_weights"), "effnet")
    else:
        missing["nsd_distance_effnet"] = ("needs EfficientNet-B1 weights (evaluate.effnet_weights, "
                                          "efficientnet_b1-c27df63c.pth): not configured")
    if cfg.swav_weights:
        distances["swav"] = run(load_swav(cfg.swav_weights, "evaluate.swav_weights"), "swav")
    else:
        missing["nsd_distance_swav"] = ("needs SwAV ResNet-50 weights (evaluate.swav_weights, "
                                        "swav_800ep_pretrain.pth.tar): not configured")
    return two_way, distances, missing


__all__ = ["EffNetFeatures", "ResNetPoolFeatures", "SIZES", "load_effnet", "load_swav", "nsd_extractors"]
