"""Build the embedded stimulus set: scikit-learn's digits (or a folder of your
own images, `--set source=folder --set folder=PATH`), coloured and upsampled,
split GOD-style into training and held-out test images.

Writes into --out-dir: images/training/*.JPEG, images/test/*.JPEG,
imageID_training.csv, imageID_test.csv (GOD's format) and stimuli.npz (the
arrays the simulators read).
"""

from __future__ import annotations

import argparse
import logging

import numpy as np

from mindvis.config import load_section
from mindvis.simulate.stimuli import StimuliConfig, build_stimuli, write_stimuli
from mindvis.tracking import tracker_for

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out-dir", required=True, help="output folder (gets images/, imageID_*.csv and stimuli.npz)"
    )


def run(args: argparse.Namespace) -> int:
    cfg = load_section(StimuliConfig, args.config, args.overrides)
    with tracker_for(args, cfg, dataset="stimuli") as tracker:
        stim = build_stimuli(cfg)
        summary = write_stimuli(stim, args.out_dir)
        summary["class_names"] = stim.class_names
        tracker.log_metrics({k: v for k, v in summary.items() if isinstance(v, int)})
        tracker.log_dict(summary, "summary.json")
        n = min(10, len(stim.train_images))
        # One example per class when possible: a quick visual check of the colouring.
        first = [int((stim.train_labels == k).argmax()) for k in range(stim.n_classes)][:n]
        tracker.log_image(np.concatenate([stim.train_images[i] for i in first], axis=1), "examples.png")
    return 0
