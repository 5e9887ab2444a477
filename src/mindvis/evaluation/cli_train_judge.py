"""Train the embedded default's judge: a small CNN classifier of the stimulus classes,
trained on the stimulus set's TRAINING images only and scored on its held-out test
images. It stands in for the reference's ImageNet judge (ViT-H/14) in n-way top-1,
and its penultimate features stand in for Inception in the demo's FID.

Writes --out (judge.pt: plain tensors and values, loaded with weights_only=True).
"""

from __future__ import annotations

import argparse
import logging

from mindvis.config import load_section
from mindvis.evaluation.judge_training import JudgeTrainConfig, save_judge, train_judge_on_stimuli
from mindvis.tracking import tracker_for

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stimuli", required=True, help="stimuli.npz written by `mindvis make-stimuli`")
    parser.add_argument("--out", required=True, help="judge weight file to write (e.g. results/judge/judge.pt)")


def run(args: argparse.Namespace) -> int:
    cfg = load_section(JudgeTrainConfig, args.config, args.overrides)
    with tracker_for(args, cfg, dataset="stimuli") as tracker:
        judge, summary = train_judge_on_stimuli(args.stimuli, cfg)
        save_judge(judge, cfg.width, args.out)
        for epoch, loss in enumerate(summary["loss_per_epoch"]):
            tracker.log_metrics({"loss": loss}, step=epoch)
        tracker.log_metrics({k: v for k, v in summary.items() if isinstance(v, (int, float))})
        tracker.log_dict(summary, "summary.json")
        tracker.log_file_reference(args.out, "judge")
    return 0
