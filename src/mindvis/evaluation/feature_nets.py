"""Feature extractors for the metrics (FID, identification, LPIPS), with weights from local files only.

What each network is and the preprocessing its weights expect
(verified against torchvision 0.29's `Weights.transforms()` and `meta`):

* Inception-v3, `Inception_V3_Weights.IMAGENET1K_V1`: file
  inception_v3_google-0cc3c7bd.pth from https://download.pytorch.org/models/. These are Google's weights,
  which expect pixels scaled to [-1, 1] (torchvision reaches that with
  `transform_input=True` from ImageNet-normalised input; we feed [-1, 1]
  directly, the same numbers). 2048-d = the global average pool; 64-d = the
  first max-pool block averaged over space (the block torchmetrics'
  `FrechetInceptionDistance(feature=64)`, which the reference used, reads).
  NOTE: pytorch-fid / torch-fidelity use a TF port of Inception ("FID
  Inception") with slightly different pooling; FID from torchvision's weights
  is close to, not identical with, published FID values.
* AlexNet, `AlexNet_Weights.IMAGENET1K_V1`: file alexnet-owt-7be5be79.pth.
  Layers 2 and 5 = `features.4` and `features.11` (ReLU after conv2 / conv5),
  as MindEye's evaluation; input resized to 256 px bilinear, ImageNet-normalised.
* CLIP ViT-L/14 image encoder: timm's `vit_large_patch14_clip_quickgelu_224`
  definition (OpenAI CLIP uses QuickGELU) filled from the OpenAI weights as
  timm or open_clip distribute them (hf.co/timm/vit_large_patch14_clip_224.openai:
  open_clip_pytorch_model.bin or model.safetensors). Output = the 768-d
  projected image embedding. Input: 224 px bicubic (CLIP's own transform; `mode`
  bilinear for MindEye's NSD evaluation), CLIP mean/std.

Each extractor takes uint8 (n, 3, H, W) tensors, as torchmetrics' FID hands them over, and
has `num_features` (torchmetrics reads it instead of probing with a dummy image).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mindvis.evaluation.image_inputs import (
    CLIP_MEAN,
    CLIP_STD,
    imagenet_input,
    normalise,
    resize_center_crop,
    to_unit_float,
)
from mindvis.evaluation.judges import Judge
from mindvis.evaluation.weight_files import TORCHVISION_SOURCE, load_strict, load_weight_file, require_file
from mindvis.utils.errors import InputDataError

INCEPTION_URL = "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth"
ALEXNET_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
CLIP_SOURCE = (
    "get the OpenAI CLIP ViT-L/14 weights as timm/open_clip distribute them (Hugging Face repo "
    "timm/vit_large_patch14_clip_224.openai: open_clip_pytorch_model.bin or model.safetensors)."
)


class JudgeFeatures(nn.Module):
    """A judge's penultimate features as a torchmetrics feature extractor (the demo's FID)."""

    def __init__(self, judge: Judge):
        super().__init__()
        self.judge = judge  # a plain attribute: the judge's network is not this module's parameter
        self.num_features = judge.feature_dim

    @property
    def device(self) -> torch.device:
        return self.judge.device

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.judge.preprocess(x.to(self.judge.device))
        return self.judge.features_and_logits(x)[0]


class InceptionFeatures(nn.Module):
    """Inception-v3 (torchvision, IMAGENET1K_V1) pool features: 2048-d (avgpool) or 64-d (first max-pool).

    `resize`: 299 for FID (bilinear, antialiased, square), 342 for MindEye's 2-way identification.
    """

    def __init__(self, net: nn.Module, dims: int = 2048, resize: int = 299):
        super().__init__()
        if dims not in (64, 2048):
            raise ValueError(f"Inception features are 64 or 2048 dims, got {dims}")
        self.net = net.eval()
        self.num_features = dims
        self.resize = resize

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = to_unit_float(x)
        x = F.interpolate(x, size=(self.resize, self.resize), mode="bilinear", align_corners=False, antialias=True)
        x = (x - 0.5) / 0.5  # the [-1, 1] range Google's Inception weights expect
        n = self.net
        x = n.maxpool1(n.Conv2d_2b_3x3(n.Conv2d_2a_3x3(n.Conv2d_1a_3x3(x))))
        if self.num_features == 64:
            return x.mean(dim=(2, 3))
        x = n.maxpool2(n.Conv2d_4a_3x3(n.Conv2d_3b_1x1(x)))
        for block in (n.Mixed_5b, n.Mixed_5c, n.Mixed_5d, n.Mixed_6a, n.Mixed_6b, n.Mixed_6c, n.Mixed_6d,
                      n.Mixed_6e, n.Mixed_7a, n.Mixed_7b, n.Mixed_7c):
            x = block(x)
        return n.avgpool(x).flatten(1)


def load_inception_net(path: str | Path | None, config_key: str) -> nn.Module:
    """torchvision Inception-v3 with IMAGENET1K_V1 weights from a local file (transform_input off: we scale)."""
    from torchvision.models import inception_v3

    path = require_file(path, config_key, TORCHVISION_SOURCE.format(url=INCEPTION_URL))
    net = inception_v3(weights=None, aux_logits=True, transform_input=False, init_weights=False)
    load_strict(net, load_weight_file(path), path, "torchvision Inception-v3 (IMAGENET1K_V1)")
    return net.eval()


def load_inception(path: str | Path | None, config_key: str, dims: int = 2048, resize: int = 299) -> InceptionFeatures:
    return InceptionFeatures(load_inception_net(path, config_key), dims=dims, resize=resize)


class AlexNetLayers(nn.Module):
    """AlexNet `features.4` (layer 2) and `features.11` (layer 5) activations, flattened."""

    LAYERS = {"alexnet_2": 4, "alexnet_5": 11}

    def __init__(self, net: nn.Module):
        super().__init__()
        self.features = net.features.eval()

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = imagenet_input(x, 256)
        out, wanted = {}, {v: k for k, v in self.LAYERS.items()}
        for idx, layer in enumerate(self.features):
            x = layer(x)
            if idx in wanted:
                out[wanted[idx]] = x.flatten(1)
        return out


def load_alexnet(path: str | Path | None, config_key: str) -> nn.Module:
    """torchvision AlexNet with IMAGENET1K_V1 weights from a local file."""
    from torchvision.models import alexnet

    path = require_file(path, config_key, TORCHVISION_SOURCE.format(url=ALEXNET_URL))
    net = alexnet(weights=None)
    load_strict(net, load_weight_file(path), path, "torchvision AlexNet (IMAGENET1K_V1)")
    return net.eval()


class ClipImageEmbedding(nn.Module):
    """CLIP image embedding (projected), from a timm ViT definition; 224 px bicubic, CLIP mean/std."""

    def __init__(self, net: nn.Module, image_size: int = 224, mode: str = "bicubic"):
        super().__init__()
        self.net = net.eval()
        self.image_size = image_size
        self.mode = mode  # CLIP's own transform: bicubic; MindEye's NSD evaluation: bilinear

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = to_unit_float(x)
        x = resize_center_crop(x, self.image_size, self.mode)
        return self.net(normalise(x, CLIP_MEAN, CLIP_STD))


def load_clip(
    path: str | Path | None, config_key: str, arch: str = "vit_large_patch14_clip_quickgelu_224", embed_dim: int = 768
) -> ClipImageEmbedding:
    """CLIP image tower: timm definition `arch` (head = CLIP's projection, `embed_dim` outputs)."""
    import timm
    from timm.models.vision_transformer import checkpoint_filter_fn

    path = require_file(path, config_key, CLIP_SOURCE)
    net = timm.create_model(arch, pretrained=False, num_classes=embed_dim)
    state = checkpoint_filter_fn(load_weight_file(path), net)  # converts OpenAI/open_clip key names
    load_strict(net, state, path, f"CLIP ({arch})")
    size = int(net.patch_embed.img_size[0])
    return ClipImageEmbedding(net, image_size=size)


# ----------------------------------------------------------------------------- LPIPS


class LpipsAlex(nn.Module):
    """LPIPS (AlexNet) distance, torchmetrics' implementation, built without any download.

    torchmetrics' public `LearnedPerceptualImagePatchSimilarity` fetches the AlexNet
    backbone from the internet; here its `_NoTrainLpips` is built with a random
    backbone (`pnet_rand=True`), the backbone is filled from the local AlexNet file,
    and the linear layers come from `lpips_path` or, when None, from the `alex.pth`
    that ships inside the torchmetrics package (the LPIPS v0.1 weights).
    """

    def __init__(self, alexnet: nn.Module, lpips_path: Path | None):
        super().__init__()
        try:
            from torchmetrics.functional.image.lpips import _NoTrainLpips
        except ImportError as exc:  # the private class moved: say so instead of a deep traceback
            raise InputDataError(None, f"this torchmetrics version has no _NoTrainLpips ({exc}); LPIPS unavailable")
        # `pretrained` here means "load LPIPS's linear layers" (from lpips_path or the file
        # inside torchmetrics: local either way); pnet_rand=True keeps the backbone from
        # being downloaded: it is filled from the local AlexNet file below.
        load_linear_layers = True
        self.net = _NoTrainLpips(
            net="alex",
            pretrained=load_linear_layers,
            pnet_rand=True,
            model_path=None if lpips_path is None else str(lpips_path),
        )
        # torchmetrics splits AlexNet's `features` into slice1..5 keeping the original indices.
        backbone = {}
        for name, tensor in alexnet.features.state_dict().items():
            idx = int(name.split(".")[0])
            slice_no = 1 + sum(idx >= b for b in (2, 5, 8, 10))
            backbone[f"slice{slice_no}.{name}"] = tensor
        self.net.net.load_state_dict(backbone, strict=True)
        self.net.eval()

    MIN_SIDE = 64  # AlexNet's smallest usable input (torchvision meta: min_size 63)

    @torch.no_grad()
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Distances (n,) between uint8 (n, 3, H, W) image batches a and b (native resolution;
        images smaller than 64 px are upsampled bilinearly to 64 px first)."""
        a, b = a.float() / 255.0, b.float() / 255.0
        if min(a.shape[-2:]) < self.MIN_SIDE:
            scale = self.MIN_SIDE / min(a.shape[-2:])
            size = (round(a.shape[-2] * scale), round(a.shape[-1] * scale))
            a = F.interpolate(a, size=size, mode="bilinear", align_corners=False)
            b = F.interpolate(b, size=size, mode="bilinear", align_corners=False)
        return self.net(a, b, normalize=True).flatten()


def load_lpips(
    alexnet_path: str | Path | None, lpips_path: str | Path | None, keys: tuple[str, str], alexnet: nn.Module = None
) -> LpipsAlex:
    """LPIPS from local files; `alexnet` (already loaded) saves reading the AlexNet file again."""
    net = alexnet if alexnet is not None else load_alexnet(alexnet_path, keys[0])
    lin = None
    if lpips_path not in (None, ""):
        lin = require_file(lpips_path, keys[1], "the LPIPS v0.1 `alex.pth` linear weights (as in the lpips package).")
    return LpipsAlex(net, lin)
