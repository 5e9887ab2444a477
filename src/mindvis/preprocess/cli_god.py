"""Convert one GOD subject's BData release (SubjectN.h5) into MinD-Vis's sbj_N.npz.

Keeps the voxels of the configured ROI (default VC), splits trials by
DataType (1 training, 2 test; 3 imagery is excluded and counted), matches
each trial to its image by stimulus id (compared as round(id * 1e6)), and
writes arr_0 (training trials), arr_1 (test trials grouped by image),
arr_2 (test average per image, row i = imageID_test row i), arr_3 (training
image index), arr_4 (test labels) and one boolean mask per ROI (V1 ... VC).
Voxels with NaN/Inf or no variance are dropped (config bad_voxels: drop) or
rejected (bad_voxels: error).

Example:
  mindvis preprocess-god --bdata raw/god/Subject1.h5 \\
      --train-list raw/god/imageID_training.csv --test-list raw/god/imageID_test.csv \\
      --subject 1 --out processed/Kamitani/npz/sbj_1.npz
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bdata", required=True, help="the subject's BData file, e.g. Subject1.h5")
    parser.add_argument("--train-list", required=True, help="imageID_training.csv (training image order)")
    parser.add_argument("--test-list", required=True, help="imageID_test.csv (test image order)")
    parser.add_argument("--subject", required=True, help="subject number N (tags the run; names nothing)")
    parser.add_argument("--out", required=True, help="output npz, e.g. <processed>/Kamitani/npz/sbj_N.npz")


def run(args: argparse.Namespace) -> int:
    from mindvis.config import load_section
    from mindvis.preprocess.god import GodPreprocessConfig, preprocess_god_subject
    from mindvis.tracking import tracker_for

    cfg = load_section(GodPreprocessConfig, args.config, args.overrides)
    with tracker_for(args, cfg, dataset="god", subject=str(args.subject)) as tracker:
        summary = preprocess_god_subject(args.bdata, args.train_list, args.test_list, args.out, args.subject, cfg)
        metrics = {k: v for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        metrics.update({f"voxels_{roi}": n for roi, n in summary["voxels_per_roi"].items()})
        tracker.log_metrics(metrics)
        tracker.log_dict(summary, "summary.json")
        tracker.log_file_reference(args.out, "sbj_npz")
    return 0
