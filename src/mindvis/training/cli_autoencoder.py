"""Train the VQ autoencoder of the image prior on the stimulus images (embedded default only).

The real run never needs this step: CompVis's label2img checkpoint carries its
VQ-f4 first stage. The embedded default cannot download it, so it trains the
same structure (a diffusers VQModel in CompVis's VQ layout) at tiny size on
the TRAINING images of images_256.npz (resized to `model.image_size`).
Loss: L1 reconstruction + the VQ codebook/commitment term; unused codes are
moved onto current latents early in training (`restart_every_steps`), and the
model trains on random patches (`patch_size`) to save time.

Output: <out> = {"state_dict": CompVis/taming VQ keys (encoder.*, decoder.*,
quantize.embedding.weight, quant_conv.*, post_quant_conv.*), "mindvis": sizes
and training summary (plain data)}; resumable through <out>.resume.pt.
The test images are only used for a report-only reconstruction PSNR.
"""

from __future__ import annotations

from pathlib import Path

from mindvis.data.images import read_images
from mindvis.training.autoencoder import AutoencoderConfig, train_autoencoder
from mindvis.training.job import add_out_argument, run_command


def add_arguments(parser) -> None:
    parser.add_argument("--images", type=Path, required=True,
                        help="images_256.npz (train_images used for training, test_images only for a report metric)")
    add_out_argument(parser, "autoencoder.pt")


def run(args) -> int:
    def train(cfg, env, tracker):
        return train_autoencoder(read_images(args.images, "train_images"), cfg, args.out, tracker=tracker,
                                 eval_images=read_images(args.images, "test_images"),
                                 info={"images": str(args.images)}, env=env)

    return run_command(
        args, AutoencoderConfig, train, out=args.out, artifact="autoencoder", dataset="stimuli",
        describe=lambda s: f"autoencoder: {s['n_images']} images, PSNR {s['train_psnr'] or float('nan'):.2f} dB "
                           f"(train), {s['codes_used'] or 0:.0f} codes used, {s['seconds']:.0f} s")
