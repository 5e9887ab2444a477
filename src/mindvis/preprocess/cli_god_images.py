"""Pack the GOD stimulus images into MinD-Vis's images_256.npz and label CSVs.

Reads the images named in imageID_training.csv and imageID_test.csv from
--image-dir (its training/ and test/ subfolders, or the folder itself),
converts them to RGB, resizes them to size x size (config `size`, 256 for
MinD-Vis) and writes, in the CSV orders:
  <out-dir>/images_256.npz                 train_images, test_images (uint8)
  <out-dir>/imagenet_training_label.csv    rows 1518878.014910,n01518878_14910.JPEG
  <out-dir>/imagenet_testing_label.csv
A listed image that cannot be found or read stops the job with its name.

Example:
  mindvis preprocess-god-images --train-list raw/god/imageID_training.csv \\
      --test-list raw/god/imageID_test.csv --image-dir raw/god/images \\
      --out-dir processed/Kamitani/npz
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--train-list", required=True, help="imageID_training.csv (training image order)")
    parser.add_argument("--test-list", required=True, help="imageID_test.csv (test image order)")
    parser.add_argument(
        "--image-dir", required=True, help="folder with training/ and test/ subfolders (or all images flat)"
    )
    parser.add_argument("--out-dir", required=True, help="output folder, e.g. <processed>/Kamitani/npz")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np

    from mindvis.config import load_section
    from mindvis.preprocess.god_images import IMAGES_NPZ, GodImagesConfig, montage, preprocess_god_images
    from mindvis.tracking import tracker_for

    cfg = load_section(GodImagesConfig, args.config, args.overrides)
    with tracker_for(args, cfg, dataset="god") as tracker:
        summary = preprocess_god_images(args.train_list, args.test_list, args.image_dir, args.out_dir, cfg)
        tracker.log_metrics({k: v for k, v in summary.items() if isinstance(v, (int, float))})
        tracker.log_dict(summary, "summary.json")
        out = Path(args.out_dir) / IMAGES_NPZ
        tracker.log_file_reference(out, "images_npz")
        if tracker.enabled:
            with np.load(out) as npz:
                tracker.log_image(montage(npz["test_images"]), "test_images.png")
    return 0
