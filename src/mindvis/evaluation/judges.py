"""Judges (classifiers) and feature extractors, with weights from LOCAL files only.

Nothing here downloads: every pretrained network is a torchvision (or timm)
model DEFINITION built with random weights, then filled from a file the user
points at in the config. A missing file raises `MissingWeightsError` naming
the config key and where the file comes from.

What each network is and the preprocessing its weights expect
(verified against torchvision 0.29's `Weights.transforms()` and `meta`):

* ViT-H/14, `ViT_H_14_Weights.IMAGENET1K_SWAG_E2E_V1` (the reference's judge):
  file vit_h_14_swag-80465313.pth from https://download.pytorch.org/models/;
  the model is built with image_size=518 (meta["min_size"] = (518, 518)),
  1000 ImageNet classes; preprocessing = the weights' own transform object,
  `ViT_H_14_Weights.IMAGENET1K_SWAG_E2E_V1.transforms()` =
  `ImageClassification(crop_size=518, resize_size=518, interpolation=BICUBIC,
  antialias=True)`: on the uint8 image, resize (shorter side) to 518 px bicubic
  with antialiasing (torchvision clamps and rounds the result back to uint8),
  centre crop 518, scale to [0, 1], normalise with ImageNet mean
  (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225). ImageNet-1k acc@1
  88.552 per torchvision's metadata. We call that object, so the numbers
  match the reference's `weights.transforms()` exactly.
* Inception-v3, `Inception_V3_Weights.IMAGENET1K_V1`: file
  inception_v3_google-0cc3c7bd.pth (same site). These are Google's weights,
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
  projected image embedding. Input: 224 px bicubic, CLIP mean/std.
* The embedded default's judge: a small CNN trained on the stimulus set by
  `mindvis train-judge` (see judge_training.py); its penultimate layer is the
  feature space of the demo's "judge-features FID".
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mindvis.utils.errors import InputDataError, MissingWeightsError

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

TORCHVISION_SOURCE = "download it once on a machine with network access from {url} and copy it here."
VIT_H14_URL = "https://download.pytorch.org/models/vit_h_14_swag-80465313.pth"
INCEPTION_URL = "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth"
ALEXNET_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
CLIP_SOURCE = (
    "get the OpenAI CLIP ViT-L/14 weights as timm/open_clip distribute them (Hugging Face repo "
    "timm/vit_large_patch14_clip_224.openai: open_clip_pytorch_model.bin or model.safetensors)."
)
JUDGE_SOURCE = "train it with `mindvis train-judge --stimuli stimuli.npz --out judge.pt` (the `train_judge` rule)."

SMALL_CNN_FORMAT = "mindvis-small-cnn-judge/1"


# ----------------------------------------------------------------------------- weight files


def require_file(path: str | Path | None, config_key: str, source: str) -> Path:
    """The path as a Path when the file exists, else MissingWeightsError naming the key and the source."""
    if path is None or str(path).strip() == "" or not Path(path).is_file():
        raise MissingWeightsError(config_key, path if path not in (None, "") else "(not set)", source)
    return Path(path)


def load_weight_file(path: Path) -> dict[str, Any]:
    """A state dict (or checkpoint dict) from .pth/.bin/.safetensors without running pickled code."""
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file

            return load_file(str(path))
        except Exception as exc:  # noqa: BLE001 - any unreadable weight file is the user's to fix
            raise InputDataError(path, f"cannot read safetensors file (truncated or corrupt?): {exc}") from None
    from mindvis.checkpoints.safe_load import UnsafeCheckpointError, safe_load

    try:
        obj = safe_load(path)  # the project's one checkpoint gate: refuses (naming it) what would run code
    except UnsafeCheckpointError:
        raise
    except InputDataError as exc:
        raise InputDataError(path, f"cannot read weight file: {exc.problem}") from None
    if not isinstance(obj, dict):
        raise InputDataError(path, f"expected a state dict, found {type(obj).__name__}")
    return obj


def _load_strict(model: nn.Module, state: dict[str, torch.Tensor], path: Path, what: str) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(line.strip() for line in str(exc).splitlines()[1:3])  # line 0 is a generic header
        raise InputDataError(path, f"not {what} weights: {detail[:400]}") from None


def nhwc_to_tensor(images: np.ndarray) -> torch.Tensor:
    """(n, H, W, 3) uint8 array -> (n, 3, H, W) uint8 tensor."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise InputDataError(None, f"images must be uint8 (n, H, W, 3), got {images.dtype} {images.shape}")
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)


def _normalise(x: torch.Tensor, mean: tuple, std: tuple) -> torch.Tensor:
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


def _resize_center_crop(x: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """torchvision's `ImageClassification` geometry: shorter side -> size (antialiased), centre crop."""
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    if (new_h, new_w) != (h, w):
        x = F.interpolate(x, size=(new_h, new_w), mode=mode, align_corners=False, antialias=True)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return x[..., top : top + size, left : left + size]


# ----------------------------------------------------------------------------- judges


class Judge:
    """A classifier that scores images: class probabilities and penultimate features."""

    name: str = "judge"
    n_classes: int
    feature_dim: int
    model: nn.Module

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (n, 3, H, W) -> the network's input, exactly as its weights expect."""
        raise NotImplementedError

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Preprocessed input -> (penultimate features, logits)."""
        raise NotImplementedError

    @torch.no_grad()
    def run(self, images: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities (n, C), penultimate features (n, D)) for uint8 (n, H, W, 3) images."""
        self.model.eval()
        probs, feats = [], []
        for start in range(0, len(images), batch_size):
            x = self.preprocess(nhwc_to_tensor(images[start : start + batch_size]).to(self.device))
            f, logits = self.features_and_logits(x)
            probs.append(torch.softmax(logits.double(), dim=1).cpu().numpy())
            feats.append(f.double().cpu().numpy())
        if not probs:
            return np.zeros((0, self.n_classes)), np.zeros((0, self.feature_dim))
        return np.concatenate(probs), np.concatenate(feats)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> Judge:
        self.model.to(device)
        return self

    def describe(self) -> dict:
        return {"name": self.name, "n_classes": self.n_classes, "feature_dim": self.feature_dim}


class SmallCNN(nn.Module):
    """The demo judge: an "ink map" input, three conv blocks, global average pool (the
    penultimate features), a linear head.

    The ink map makes the judge see SHAPE, not the random colours of the embedded
    stimuli (each digit is a blend of a random foreground and background colour):
    per image, the pixels are projected on their first principal colour axis,
    standardised, and signed so that the border (the background) is negative.
    Any two-colour rendering of a digit then gives the same map; on natural
    images (a `folder` stimulus set) it is the dominant colour-contrast image.
    """

    def __init__(self, n_classes: int, width: int = 16, dropout: float = 0.2):
        super().__init__()

        def block(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
                nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            )

        self.blocks = nn.Sequential(block(1, width), block(width, 2 * width), block(2 * width, 4 * width))
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(4 * width, n_classes)
        self.feature_dim = 4 * width

    @staticmethod
    def ink_map(x: torch.Tensor) -> torch.Tensor:
        """(n, 3, H, W) in [0, 1] -> (n, 1, H, W): first principal colour component, unit std, border < 0."""
        n, c, h, w = x.shape
        flat = x.reshape(n, c, h * w)
        flat = flat - flat.mean(dim=2, keepdim=True)
        cov = flat @ flat.transpose(1, 2) / (h * w)  # (n, 3, 3)
        axis = torch.linalg.eigh(cov + 1e-8 * torch.eye(c, dtype=x.dtype, device=x.device))[1][:, :, -1]  # top PC
        proj = (axis[:, :, None] * flat).sum(dim=1).reshape(n, 1, h, w)
        proj = proj / (proj.flatten(1).std(dim=1).view(n, 1, 1, 1) + 1e-3)
        border = torch.cat([proj[..., 0, :], proj[..., -1, :], proj[..., :, 0], proj[..., :, -1]], dim=-1).mean(-1)
        sign = torch.where(border > 0, -1.0, 1.0).to(x.dtype).view(n, 1, 1, 1)
        return proj * sign

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.ink_map(x)).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))


class SmallCNNJudge(Judge):
    """A `SmallCNN` plus the input size it was trained at (inputs are resized to it)."""

    name = "small_cnn"

    def __init__(self, model: SmallCNN, image_size: int, class_names: list[str], info: dict | None = None):
        self.model = model.eval()
        self.image_size = image_size
        self.class_names = class_names
        self.n_classes = model.head.out_features
        self.feature_dim = model.feature_dim
        self.info = info or {}

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() / 255.0
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size,) * 2, mode="bilinear", align_corners=False, antialias=True)
        return x

    def features_and_logits(self, x):
        f = self.model.features(x)
        return f, self.model.head(f)

    def describe(self) -> dict:
        return {**super().describe(), "image_size": self.image_size, "class_names": self.class_names, **self.info}


def small_cnn_checkpoint(model: SmallCNN, width: int, image_size: int, class_names: list[str], info: dict) -> dict:
    """The judge file's content: plain tensors and Python values, loadable with weights_only=True."""
    return {
        "format": SMALL_CNN_FORMAT,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "arch": {"n_classes": model.head.out_features, "width": width, "image_size": image_size},
        "class_names": list(class_names),
        "info": info,
    }


def load_small_cnn_judge(path: str | Path | None, config_key: str = "judge_weights") -> SmallCNNJudge:
    path = require_file(path, config_key, JUDGE_SOURCE)
    ckpt = load_weight_file(path)
    if ckpt.get("format") != SMALL_CNN_FORMAT:
        found = ckpt.get("format")
        raise InputDataError(path, f"not a small-CNN judge file (format {found!r}, want {SMALL_CNN_FORMAT!r})")
    arch = ckpt["arch"]
    model = SmallCNN(int(arch["n_classes"]), int(arch["width"]))
    _load_strict(model, ckpt["state_dict"], path, "small-CNN judge")
    return SmallCNNJudge(model, int(arch["image_size"]), list(ckpt["class_names"]), dict(ckpt.get("info", {})))


class ViTH14Judge(Judge):
    """The reference's judge: torchvision ViT-H/14 with IMAGENET1K_SWAG_E2E_V1 weights (518 px)."""

    name = "vit_h_14_swag_e2e_v1"
    image_size = 518

    def __init__(self, model: nn.Module):
        from torchvision.models import ViT_H_14_Weights

        # torchvision's own transform object for these weights (resize on the uint8 image,
        # bicubic + antialias, clamp/round back to uint8, centre crop, /255, ImageNet mean/std).
        self.transform = ViT_H_14_Weights.IMAGENET1K_SWAG_E2E_V1.transforms()
        self.head = model.heads
        model.heads = nn.Identity()  # the backbone then returns the class token: the penultimate features
        self.model = model.eval()
        self.n_classes = self.head.head.out_features
        self.feature_dim = self.head.head.in_features

    def to(self, device: str | torch.device) -> ViTH14Judge:
        self.model.to(device)
        self.head.to(device)
        return self

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        return self.transform(x)

    def features_and_logits(self, x):
        f = self.model(x)
        return f, self.head(f)

    def describe(self) -> dict:
        return {**super().describe(), "weights": "IMAGENET1K_SWAG_E2E_V1", "input": "518 px bicubic, ImageNet mean/std"}


def load_vit_h14_judge(path: str | Path | None, config_key: str = "judge_weights") -> ViTH14Judge:
    from torchvision.models import vit_h_14

    path = require_file(path, config_key, TORCHVISION_SOURCE.format(url=VIT_H14_URL))
    model = vit_h_14(weights=None, image_size=518, num_classes=1000)
    _load_strict(model, load_weight_file(path), path, "ViT-H/14 (IMAGENET1K_SWAG_E2E_V1)")
    return ViTH14Judge(model)


JUDGE_KINDS = {"small_cnn": load_small_cnn_judge, "vit_h_14_swag": load_vit_h14_judge}


def load_judge(kind: str, path: str | Path | None, config_key: str = "judge_weights") -> Judge:
    from mindvis.utils.errors import ConfigError

    if kind not in JUDGE_KINDS:
        raise ConfigError(f"judge must be one of {sorted(JUDGE_KINDS)}, got {kind!r}")
    return JUDGE_KINDS[kind](path, config_key)


# ----------------------------------------------------------------------------- feature extractors
# Each takes uint8 (n, 3, H, W) tensors, as torchmetrics' FID hands them over, and
# has `num_features` (torchmetrics reads it instead of probing with a dummy image).


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
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
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
    _load_strict(net, load_weight_file(path), path, "torchvision Inception-v3 (IMAGENET1K_V1)")
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
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        x = _resize_center_crop(x, 256, "bilinear")
        x = _normalise(x, IMAGENET_MEAN, IMAGENET_STD)
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
    _load_strict(net, load_weight_file(path), path, "torchvision AlexNet (IMAGENET1K_V1)")
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
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        x = _resize_center_crop(x, self.image_size, self.mode)
        return self.net(_normalise(x, CLIP_MEAN, CLIP_STD))


def load_clip(
    path: str | Path | None, config_key: str, arch: str = "vit_large_patch14_clip_quickgelu_224", embed_dim: int = 768
) -> ClipImageEmbedding:
    """CLIP image tower: timm definition `arch` (head = CLIP's projection, `embed_dim` outputs)."""
    import timm
    from timm.models.vision_transformer import checkpoint_filter_fn

    path = require_file(path, config_key, CLIP_SOURCE)
    net = timm.create_model(arch, pretrained=False, num_classes=embed_dim)
    state = checkpoint_filter_fn(load_weight_file(path), net)  # converts OpenAI/open_clip key names
    _load_strict(net, state, path, f"CLIP ({arch})")
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
