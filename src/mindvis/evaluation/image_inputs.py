"""Image batches -> what the pretrained networks take: uint8 NHWC -> tensors, resize, crop, normalise.

torchvision's `ImageClassification` geometry (shorter side resized with antialiasing, then
a centre crop) and the ImageNet / CLIP channel statistics the networks were trained with.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from mindvis.utils.errors import InputDataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def nhwc_to_tensor(images: np.ndarray) -> torch.Tensor:
    """(n, H, W, 3) uint8 array -> (n, 3, H, W) uint8 tensor."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise InputDataError(None, f"images must be uint8 (n, H, W, 3), got {images.dtype} {images.shape}")
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)


def to_unit_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 0..255 -> float 0..1; a float tensor is taken as already on that scale."""
    return x.float() / 255.0 if x.dtype == torch.uint8 else x.float()


def normalise(x: torch.Tensor, mean: tuple, std: tuple) -> torch.Tensor:
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


def resize_center_crop(x: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """torchvision's `ImageClassification` geometry: shorter side -> size (antialiased), centre crop."""
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    if (new_h, new_w) != (h, w):
        x = F.interpolate(x, size=(new_h, new_w), mode=mode, align_corners=False, antialias=True)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return x[..., top : top + size, left : left + size]


def imagenet_input(x: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (or 0..1 float) NCHW -> a torchvision ImageNet network's input: `size` px bilinear, ImageNet mean/std."""
    return normalise(resize_center_crop(to_unit_float(x), size, "bilinear"), IMAGENET_MEAN, IMAGENET_STD)
