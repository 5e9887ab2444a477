"""Judges: the classifiers that score reconstructions, with weights from local files only.

What each judge is and the preprocessing its weights expect
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
* The embedded default's judge: a small CNN trained on the stimulus set by
  `mindvis train-judge` (see judge_training.py); its penultimate layer is the
  feature space of the demo's "judge-features FID".

The feature extractors (Inception, AlexNet, CLIP, LPIPS) are in `feature_nets`; weight
files are read through `weight_files`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mindvis.evaluation.image_inputs import nhwc_to_tensor
from mindvis.evaluation.weight_files import TORCHVISION_SOURCE, load_strict, load_weight_file, require_file
from mindvis.utils.errors import InputDataError

log = logging.getLogger(__name__)

VIT_H14_URL = "https://download.pytorch.org/models/vit_h_14_swag-80465313.pth"
JUDGE_SOURCE = "train it with `mindvis train-judge --stimuli stimuli.npz --out judge.pt` (the `train_judge` rule)."

SMALL_CNN_FORMAT = "mindvis-small-cnn-judge/1"


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
    load_strict(model, ckpt["state_dict"], path, "small-CNN judge")
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
    load_strict(model, load_weight_file(path), path, "ViT-H/14 (IMAGENET1K_SWAG_E2E_V1)")
    return ViTH14Judge(model)


JUDGE_KINDS = {"small_cnn": load_small_cnn_judge, "vit_h_14_swag": load_vit_h14_judge}


def load_judge(kind: str, path: str | Path | None, config_key: str = "judge_weights") -> Judge:
    from mindvis.utils.errors import ConfigError

    if kind not in JUDGE_KINDS:
        raise ConfigError(f"judge must be one of {sorted(JUDGE_KINDS)}, got {kind!r}")
    return JUDGE_KINDS[kind](path, config_key)
