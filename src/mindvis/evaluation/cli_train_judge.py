"""Train the embedded default's judge: a small CNN classifier of the stimulus classes,
trained on the stimulus set's TRAINING images only and scored on its held-out test
images. It stands in for the reference's ImageNet judge (ViT-H/14) in n-way top-1,
and its penultimate features stand in for Inception in the demo's FID.

Writes --out (judge.pt: plain tensors and values, loaded with weights_only=True).
Resumable through <out>.resume.pt; SIGTERM saves it and exits 143 (training.job).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mindvis.evaluation.judge_training import JudgeTrainConfig, train_judge_on_stimuli
from mindvis.training.job import run_command

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stimuli", required=True, help="stimuli.npz written by `mindvis make-stimuli`")
    parser.add_argument("--out", type=Path, required=True,
                        help="judge weight file to write (e.g. results/judge/judge.pt; resume state: <out>.resume.pt)")


def run(args: argparse.Namespace) -> int:
    def train(cfg, env, tracker):
        _, summary = train_judge_on_stimuli(args.stimuli, cfg, out=args.out, tracker=tracker, env=env)
        if env.is_main:  # the final figures (held-out accuracy, ...) beside the engine's per-epoch metrics
            tracker.log_metrics({k: v for k, v in summary.items()
                                 if isinstance(v, (int, float)) and not isinstance(v, bool)})
        return summary

    return run_command(args, JudgeTrainConfig, train, out=args.out, artifact="judge", dataset="stimuli")
