"""`mindvis finetune-mbm`: its arguments and the job around it; what it runs is mindvis.training.stage_a2."""

from __future__ import annotations

from pathlib import Path

from mindvis.training import stage_a2
from mindvis.tracking.job import subject_of_npz
from mindvis.training.job import add_out_argument, run_command
from mindvis.training.stage_a2 import DATASETS, FinetuneConfig, finetune_mbm

__doc__ = stage_a2.__doc__  # the command's long help is the stage's own description


def add_arguments(parser) -> None:
    parser.add_argument("--pretrained", type=Path, required=True,
                        help="stage A1 checkpoint (fmri_encoder.pth: ours or MinD-Vis's released one)")
    parser.add_argument("--npz", type=Path, required=True, help="one subject: GOD sbj_N.npz, BOLD5000 CSI{n}.npz or NSD subjNN.npz")
    parser.add_argument("--dataset", choices=DATASETS, required=True, help="which reader --npz needs")
    add_out_argument(parser, "fmri_encoder.pth")


def run(args) -> int:
    def train(cfg, env, tracker):
        return finetune_mbm(args.pretrained, args.npz, args.dataset, args.out, cfg, tracker=tracker, env=env)

    return run_command(args, FinetuneConfig, train, out=args.out, artifact="fmri_encoder", dataset=args.dataset,
                       subject=subject_of_npz(args.npz))
