"""`mindvis pretrain-mbm`: its arguments and the job around it; what it runs is mindvis.training.stage_a1."""

from __future__ import annotations

from pathlib import Path

from mindvis.training import stage_a1
from mindvis.training.stage_a1 import MbmTrainConfig, pretrain_mbm

__doc__ = stage_a1.__doc__  # the command's long help is the stage's own description


def add_arguments(parser) -> None:
    parser.add_argument("--hcp", nargs="+", type=Path, required=True, metavar="NPZ",
                        help="HCP_visual_voxel.npz files (one per HCP subject)")
    parser.add_argument("--god", nargs="*", type=Path, default=[], metavar="NPZ",
                        help="GOD sbj_N.npz files whose training fMRI join the pre-training data "
                             "(used when config include_god is true)")
    parser.add_argument("--out", type=Path, required=True,
                        help="output checkpoint, e.g. <dir>/fmri_encoder.pth (resume state: <out>.resume.pt)")


def run(args) -> int:
    from mindvis.config import load_section
    from mindvis.training.job import run_training_job

    cfg = load_section(MbmTrainConfig, args.config, args.overrides)
    return run_training_job(
        args, cfg, lambda env, tracker: pretrain_mbm(args.hcp, args.god, args.out, cfg, tracker=tracker, env=env),
        out=args.out, artifact="fmri_encoder", dataset="hcp")
