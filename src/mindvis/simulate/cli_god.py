"""Simulate one GOD subject from the stimulus set and write it in the real
release format, a BData HDF5 file (`SubjectN.h5`, what bdpy reads): voxel
columns with coordinates and ROI flags (V1..V4, LOC, FFA, PPA, LVC, HVC, VC),
plus per-trial DataType (1 training, 2 test, 3 imagery), Run, stimulus_id and
Label columns.
"""

from __future__ import annotations

import argparse

from mindvis.config import load_section
from mindvis.simulate.god import GodSimConfig, simulate_god
from mindvis.tracking import tracker_for


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stimuli", required=True, help="stimuli.npz written by `mindvis make-stimuli`")
    parser.add_argument("--subject", required=True, type=int, help="subject number N (also varies the seed)")
    parser.add_argument("--out", required=True, help="output BData file, e.g. raw/god/SubjectN.h5")


def run(args: argparse.Namespace) -> int:
    cfg = load_section(GodSimConfig, args.config, args.overrides)
    with tracker_for(args, cfg, dataset="god", subject=str(args.subject)) as tracker:
        summary = simulate_god(args.stimuli, args.subject, args.out, cfg)
        metrics = {"n_voxels": summary["n_voxels"], "n_trials": summary["n_trials"], "n_runs": summary["n_runs"]}
        metrics.update({f"trials_datatype_{d}": n for d, n in summary["trials_per_datatype"].items()})
        metrics.update({f"voxels_{r}": n for r, n in summary["voxels_per_roi"].items()})
        tracker.log_metrics(metrics)
        tracker.log_dict(summary, "summary.json")
    return 0
