"""`mindvis pretrain-mbm`: its arguments and the job around it; what it runs is mindvis.training.stage_a1."""

from __future__ import annotations

from pathlib import Path

from mindvis.training import stage_a1
from mindvis.training.job import add_out_argument, run_command
from mindvis.training.stage_a1 import MbmTrainConfig, pretrain_mbm

__doc__ = stage_a1.__doc__  # the command's long help is the stage's own description


def add_arguments(parser) -> None:
    parser.add_argument("--hcp", nargs="+", type=Path, required=True, metavar="NPZ",
                        help="HCP_visual_voxel.npz files (one per HCP subject)")
    parser.add_argument("--god", nargs="*", type=Path, default=[], metavar="NPZ",
                        help="GOD sbj_N.npz files whose training fMRI join the pre-training data "
                             "(used when config include_god is true)")
    add_out_argument(parser, "fmri_encoder.pth")


def run(args) -> int:
    def train(cfg, env, tracker):
        return pretrain_mbm(args.hcp, args.god, args.out, cfg, tracker=tracker, env=env)

    return run_command(args, MbmTrainConfig, train, out=args.out, artifact="fmri_encoder", dataset="hcp")
