"""Train the class-conditional image prior (CompVis cin256 "label2img" structure; embedded default only).

The real run downloads CompVis's cin256-v2 checkpoint instead. Here the same
structure (VQ first stage from --autoencoder, frozen; UNet with
cross-attention; a class embedder giving one context token per class, plus a
'no class' entry for classifier-free guidance) is trained on the TRAINING
images of images_256.npz with their class labels.

Labels (--labels), in the row order of images_256.npz's train_images:
  stimuli.npz from `make-stimuli`   key train_labels (rows in imageID_training.csv order, the
                                    order images_256.npz uses) and class_names;
  imagenet_training_label.csv       GOD's label list beside images_256.npz: the class is the
                                    WordNet id of each row (numbered in sorted order).
The number of labels must equal the number of images.

Output: <out> = {"state_dict": CompVis LatentDiffusion keys (model.diffusion_model.*,
first_stage_model.*, cond_stage_model.embedding.weight, schedule buffers), "mindvis": sizes,
classes and summary}: the layout of label2img/model.ckpt, so stage B reads the demo's prior and
CompVis's through the same converter. Resumable through <out>.resume.pt.
"""

from __future__ import annotations

from pathlib import Path

from mindvis.data.images import read_images, read_labels
from mindvis.training.job import add_out_argument, run_command
from mindvis.training.label2img import Label2ImgConfig, train_label2img


def add_arguments(parser) -> None:
    parser.add_argument("--images", type=Path, required=True, help="images_256.npz (train_images are used)")
    parser.add_argument("--labels", type=Path, required=True,
                        help="stimuli.npz (train_labels) or imagenet_training_label.csv, in train_images order")
    parser.add_argument("--autoencoder", type=Path, required=True, help="autoencoder.pt from train-autoencoder")
    add_out_argument(parser, "label2img.pt")


def run(args) -> int:
    def train(cfg, env, tracker):
        images = read_images(args.images, "train_images")
        labels, names = read_labels(args.labels, images.shape[0], "train")
        return train_label2img(images, labels, args.autoencoder, cfg, args.out, tracker=tracker, class_names=names,
                               info={"images": str(args.images), "labels": str(args.labels)}, env=env)

    return run_command(
        args, Label2ImgConfig, train, out=args.out, artifact="label2img", dataset="stimuli",
        describe=lambda s: f"label2img: {s['n_images']} images, {s['n_classes']} classes, "
                           f"final loss {s['final_loss']:.4f}, {s['seconds']:.0f} s")
