"""Convert one NSD subject of the raw release into a MinD-Vis npz (the BOLD5000 npz layout).

Reads the release at its own paths under --root (nsd_expdesign.mat, betas_sessionNN.nii.gz or
.hdf5, the ROI NIfTI and its .mgz.ctab, nsd_stimuli.hdf5, and responses.tsv when present):
betas / 300, the ROI's voxels, trial -> 73k id through masterordering / subjectim (checked
against responses.tsv), z-scored per voxel, test = the shared images averaged over their repeats,
training = every other trial. Sizes (images, trials, sessions) come from the files.
Key list: mindvis.preprocess.nsd; conventions: docs/reference.md section 9.4.

Every switch below is also a config key (`--config`, `--set zscore=train`); a switch given on
the command line wins over the config.

Example:
  mindvis preprocess-nsd --root data/NSD/raw --subject 1 --out data/NSD/npz/subj01.npz \\
      --roi prf-visualrois:V1v,V1d --zscore train --train-average
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mindvis.preprocess.nsd_zscore import ZSCORES

SWITCHES = ("sessions", "roi", "zscore", "train_average", "betas", "image_size", "pixel_image_size")


def _sessions(text: str) -> int:
    if text == "all":
        return 0
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is neither a number of sessions nor 'all'") from None
    if value < 1:
        raise argparse.ArgumentTypeError("--sessions must be >= 1 (or 'all')")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", required=True, type=Path,
                        help="the NSD release folder holding nsddata/, nsddata_betas/, nsddata_stimuli/")
    parser.add_argument("--subject", required=True, type=int, help="subject number (1-8: subj01..subj08)")
    parser.add_argument("--out", required=True, type=Path, help="output npz, e.g. data/NSD/npz/subj01.npz")
    parser.add_argument("--sessions", type=_sessions, default=None, metavar="N|all",
                        help="read sessions 1..N, every one required (a missing one is an error naming its "
                             "file); 'all' (config default): every session present on disk")
    parser.add_argument("--roi", default=None, metavar="SPEC",
                        help="voxels kept: 'nsdgeneral' (value 1, default; -1 marks no-brain voxels and is "
                             "never kept), '<atlas>' (all its labels > 0), or '<atlas>:<name>,...' named "
                             "through nsddata/freesurfer/subjXX/label/<atlas>.mgz.ctab, e.g. "
                             "'prf-visualrois:V1v,V1d' or 'streams:ventral'")
    parser.add_argument("--zscore", choices=ZSCORES, default=None,
                        help="'session' (default, MindEye2's notebook): each voxel z-scored over each session's "
                             "trials; 'session_train' (MindEye2's paper): each session's statistics from its "
                             "training trials only (shared1000 left out), applied to all its trials; "
                             "'train' (Brain-Diffuser): with the training rows' mean and std (ddof=1), "
                             "applied to training and test")
    parser.add_argument("--train-average", action=argparse.BooleanOptionalAction, default=None,
                        help="average the training trials per image (Brain-Diffuser) instead of one row per "
                             "trial (default, MindEye2); test images are always averaged over their repeats")
    parser.add_argument("--betas", choices=("nifti", "hdf5"), default=None,
                        help="read betas_sessionNN.nii.gz (default, trials last) or betas_sessionNN.hdf5 "
                             "(/betas, trials first); both give the same arrays")
    parser.add_argument("--image-size", type=int, default=None, metavar="S",
                        help="side of train_images / test_images (default 256)")
    parser.add_argument("--pixel-image-size", type=int, default=None, metavar="P",
                        help="side of test_images_pixel, the ground truth of PixCorr / SSIM (default 425, "
                             "imgBrick's native size)")


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from mindvis.config import load_section
    from mindvis.preprocess.nsd import NsdPreprocessConfig, preprocess_nsd_subject
    from mindvis.tracking import tracker_for

    cfg = load_section(NsdPreprocessConfig, args.config, args.overrides)
    given = {k: getattr(args, k) for k in SWITCHES if getattr(args, k, None) is not None}
    cfg = replace(cfg, **given)
    with tracker_for(args, cfg, dataset="nsd", subject=str(args.subject)) as tracker:
        summary = preprocess_nsd_subject(args.root, args.subject, args.out, cfg)
        metrics = {k: v for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        metrics.update({f"voxels.{k}": v for k, v in summary["voxels_per_roi"].items()})
        tracker.log_metrics(metrics)
        tracker.log_dict(summary, "summary.json")
        tracker.log_file_reference(summary["npz"], "npz")
    return 0
