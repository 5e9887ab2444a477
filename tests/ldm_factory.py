"""Micro stage B sizes and a tiny GOD subject, shared by the stage B tests.

MICRO / ENC / N_TOKENS: the smallest fMRI-conditioned LDM that still has every
part (16 px images, 4x4 latents, a one-block encoder of 6 tokens = 96 voxels).
write_tiny_god: images_256.npz, stimuli.npz (labels) and sbj_1.npz whose fMRI
rows are a class pattern plus noise, the class being a bar's position in the image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mindvis.models.ldm.presets import LdmSpec, ScheduleSpec, UnetSpec, VqSpec
from mindvis.models.presets import ArchSpec

MICRO = LdmSpec(
    unet=UnetSpec(sample_size=4, in_channels=3, out_channels=3, model_channels=8, channel_mult=(1, 2),
                  num_res_blocks=1, attention_resolutions=(2,), num_heads=1, transformer_depth=1, context_dim=8,
                  time_embed_dim=16, norm_num_groups=4),
    vq=VqSpec(resolution=16, in_channels=3, out_ch=3, ch=8, ch_mult=(1, 2, 2), num_res_blocks=1, z_channels=3,
              embed_dim=3, n_embed=16, norm_num_groups=4),
    schedule=ScheduleSpec(),
)
ENC = ArchSpec(patch_size=16, embed_dim=16, depth=1, num_heads=2, mlp_ratio=1.0, decoder_embed_dim=8,
               decoder_depth=1, decoder_num_heads=2)
N_TOKENS = 6

N_TRAIN, N_TEST, N_VOXELS, N_CLASSES = 12, 4, 90, 3


def bar_images(n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """n 32-px images of class i % N_CLASSES: a bright bar whose vertical position is the class."""
    labels = np.arange(n) % N_CLASSES
    img = np.zeros((n, 32, 32, 3), np.uint8)
    for i, c in enumerate(labels):
        img[i] = rng.integers(0, 60, 3)
        img[i, 4 + 8 * c:12 + 8 * c, 6:26] = rng.integers(150, 256, 3)  # a bar whose position is the class
    return img, labels


def write_tiny_god(root: Path, seed: int = 0) -> None:
    """images_256.npz, stimuli.npz and sbj_1.npz (MinD-Vis arr_0..arr_4 layout, no ROI masks) under root."""
    rng = np.random.default_rng(seed)
    train_img, train_lab = bar_images(N_TRAIN, rng)
    test_img, test_lab = bar_images(N_TEST, rng)
    np.savez(root / "images_256.npz", train_images=train_img, test_images=test_img)
    np.savez(root / "stimuli.npz", train_labels=train_lab, test_labels=test_lab,
             class_names=np.array(["a", "b", "c"]))
    w = rng.standard_normal((N_CLASSES, N_VOXELS))
    train = (w[train_lab] + 0.3 * rng.standard_normal((N_TRAIN, N_VOXELS))).astype(np.float32)
    test = (w[test_lab] + 0.3 * rng.standard_normal((N_TEST, N_VOXELS))).astype(np.float32)
    np.savez(root / "sbj_1.npz", arr_0=train, arr_1=np.repeat(test, 2, axis=0), arr_2=test,
             arr_3=np.arange(N_TRAIN), arr_4=test_lab)
