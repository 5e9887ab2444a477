"""Simulate one BOLD5000 subject (CSI{N}) from the stimulus set and write it as release 2.0
lays it out: per-session GLMsingle betas (CSI{N}_GLMbetas-TYPED-FITHRF-GLMDENOISE-RR_ses-XX.nii.gz),
the brain mask, ROI masks sub-CSI{N}_mask-{LH,RH}{EarlyVis,LOC,OPA,PPA,RSC}.nii.gz (with the real
naming defects LHLO/RHLO and RHRRSC for some subjects), the presentation lists
(BOLD5000_Stimuli/Stimuli_Presentation_Lists/CSI{N}/CSI{N}_sessXX/CSI_sessXX_runYY.txt),
CSI{N}_imgnames.txt, repeated_stimuli_113_list.txt and the image files. Subject 4 gets fewer
sessions and only partial repeats, as in the real release. Full layout: mindvis.simulate.bold5000.

Example:
  mindvis simulate-bold5000 --stimuli data/raw/stimuli/stimuli.npz --subject 1 --out-dir data/raw/bold5000
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stimuli", required=True, help="stimuli.npz written by `mindvis make-stimuli`")
    parser.add_argument("--subject", required=True, type=int, help="subject number N of CSI{N} (also varies the seed)")
    parser.add_argument("--out-dir", required=True,
                        help="the raw BOLD5000 folder, e.g. <raw>/bold5000 (shared by all subjects)")


def run(args: argparse.Namespace) -> int:
    from mindvis.config import load_section
    from mindvis.simulate.bold5000 import Bold5000SimConfig, simulate_bold5000
    from mindvis.tracking import tracker_for

    cfg = load_section(Bold5000SimConfig, args.config, args.overrides)
    with tracker_for(args, cfg, dataset="bold5000", subject=str(args.subject)) as tracker:
        summary = simulate_bold5000(args.stimuli, args.subject, args.out_dir, cfg)
        metrics = {k: summary[k] for k in ("sessions", "runs", "trials", "train_trials", "test_images", "test_images_shown")}
        metrics.update({f"voxels.{k}": v for k, v in summary["voxels_per_roi"].items()})
        tracker.log_metrics(metrics)
        tracker.log_dict(summary, "summary.json")
    return 0
