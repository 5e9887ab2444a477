"""Convert one BOLD5000 subject (release 2.0, GLMsingle TYPED-FITHRF-GLMDENOISE-RR betas) into
MinD-Vis's inputs.

Reads every session's betas, masks them with the ten ROI masks (EarlyVis, LOC, OPA, PPA, RSC x
LH, RH; misnamed masks such as LHLO / RHRRSC are repaired), drops voxels that are NaN/Inf (or
constant) in any trial, checks the trial order rebuilt from the presentation lists against
CSI{n}_imgnames.txt, and writes:

  <out-dir>/BOLD5000_GLMsingle_ROI_betas/py/CSI{n}_GLMbetas-TYPED-FITHRF-GLMDENOISE-RR_allses_{LH,RH}{ROI}.npy
  <out-dir>/npz/CSI{n}.npz   (train trials, test averaged over repeats, images at 256 px; see
                              mindvis.preprocess.bold5000 for every key)

Example:
  mindvis preprocess-bold5000 --raw-dir data/raw/bold5000 --subject 1 --out-dir data/processed/BOLD5000
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--raw-dir", required=True, type=Path,
                        help="folder holding the BOLD5000 release (betas, ROI masks, stimuli); searched recursively")
    parser.add_argument("--subject", required=True, type=int, help="subject number N of CSI{N} (1-4)")
    parser.add_argument("--out-dir", required=True, type=Path,
                        help="processed BOLD5000 folder (MinD-Vis's data/BOLD5000 layout)")


def run(args: argparse.Namespace) -> int:
    from mindvis.config import load_section
    from mindvis.preprocess.bold5000 import Bold5000PreprocessConfig, preprocess_bold5000_subject
    from mindvis.tracking import tracker_for

    cfg = load_section(Bold5000PreprocessConfig, args.config, args.overrides)
    with tracker_for(args, cfg, dataset="bold5000", subject=str(args.subject)) as tracker:
        summary = preprocess_bold5000_subject(args.raw_dir, args.subject, args.out_dir, cfg)
        metrics = {
            "sessions": summary["sessions"],
            "trials": summary["trials"],
            "voxels_total": summary["voxels_total"],
            "dropped_voxels": summary["dropped_voxels_total"],
            "alias_repairs": summary["n_alias_repairs"],
            "train_trials": summary["n_train_trials"],
            "train_images": summary["n_train_images"],
            "test_images": summary["n_test_images"],
            "test_trials": summary["n_test_trials"],
            "test_images_not_shown": len(summary["test_images_not_shown"]),
            "seconds": summary["seconds"],
        }
        metrics.update({f"voxels.{k}": v for k, v in summary["voxels_per_roi"].items()})
        tracker.log_metrics(metrics)
        tracker.log_dict(summary, "summary.json")
        tracker.log_file_reference(summary["npz"], "npz")
    return 0
