"""Simulate one HCP subject's resting-state runs in the real release layout:
<out-dir>/<subject>/MNINonLinear/Results/<run>/<run>_Atlas_MSMAll_hp2000_clean.dtseries.nii
(CIFTI-2 dense time series, TR 0.72 s, fs_LR 32k cortex: the HCP-MMP1 visual
areas plus a margin, or the full standard cortex; optional subcortical voxels)
and, with `write_volume: true`, <run>_hp2000_clean.nii.gz on the MNI 2 mm grid
plus MNINonLinear/ROIs/HCP-MMP1_visual.2.nii.gz and HCP-MMP1_visual.txt.
V1..V4 carry the shared voxel model's resting-state fluctuations.

Example:
  mindvis simulate-hcp --subject sim01 --out-dir raw/hcp --set n_frames=300
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--subject", required=True, help="subject id, the folder name (e.g. 100206 or sim01); also varies the seed"
    )
    parser.add_argument(
        "--out-dir", required=True, help="the raw HCP folder, e.g. <raw>/hcp; the subject goes in <out-dir>/<subject>"
    )


def run(args: argparse.Namespace) -> int:
    from mindvis.config import load_section
    from mindvis.simulate.hcp import HcpSimConfig, simulate_hcp
    from mindvis.tracking import tracker_for

    cfg = load_section(HcpSimConfig, args.config, args.overrides)
    with tracker_for(args, cfg, dataset="hcp", subject=str(args.subject)) as tracker:
        summary = simulate_hcp(str(args.subject), args.out_dir, cfg)
        metrics = {
            "grayordinates": summary["grayordinates"],
            "frames_per_run": summary["frames_per_run"],
            "runs": len(summary["runs"]),
            "constant_grayordinates": summary["constant_grayordinates"],
        }
        metrics.update({f"voxels_{a}": n for a, n in summary["voxels_per_area"].items()})
        tracker.log_metrics(metrics)
        tracker.log_dict(summary, "summary.json")
    return 0
