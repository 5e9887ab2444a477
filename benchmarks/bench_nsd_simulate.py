"""Time and peak memory of simulate-nsd writing one full-size session.

One subject, one session of subj01's real shape (81 x 104 x 83 grid, 750 trials: 1.05 GB as int16)
with ~15,700 nsdgeneral voxels (subj01: 15,724), as `betas_session01.nii.gz` (and, with --hdf5, the
HDF5 variant). The job runs as a fresh child process; its peak RSS (ru_maxrss of the child) is
compared with one session's int16 size (goal: <= 2x). A second child that only imports what the
command imports gives the interpreter's share. The imgBrick is written at --brick-size (425 as in
NSD by default), the 250 embedded stimulus images; its time is part of the total.

Usage:
  python benchmarks/bench_nsd_simulate.py --work /tmp/nsd_bench                  # full size
  python benchmarks/bench_nsd_simulate.py --work /tmp/nsd_bench --grid 40 52 41 --trials 300   # smaller
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

CHILD = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
         "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
BASELINE = "import mindvis.simulate.nsd, mindvis.simulate.stimuli, mindvis.tracking, h5py, nibabel, scipy.io, scipy.optimize"
IMAGES = 250  # the embedded stimulus set (make-stimuli defaults)


def peak_rss_kib(argv: list[str]) -> tuple[int, float]:
    """(peak RSS in KiB, seconds) of `argv` run as a fresh child process."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD, *argv], check=True, capture_output=True, text=True)
    return int(out.stdout.strip().splitlines()[-1]), time.perf_counter() - start


def roi_voxels(total: int) -> str:
    """Per-area voxel counts (the simulator's ROIs) summing to about `total` nsdgeneral voxels."""
    share = {"V1": 0.19, "V2": 0.19, "V3": 0.16, "hV4": 0.1, "ventral": 0.19, "lateral": 0.17}
    return "{" + ", ".join(f"{k}: {max(4, int(total * v))}" for k, v in share.items()) + "}"


def session_parser(description: str, work_help: str) -> argparse.ArgumentParser:
    """The options of one simulated session (shared with bench_nsd_preprocess.py)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help=work_help)
    parser.add_argument("--grid", type=int, nargs=3, default=[81, 104, 83], help="X Y Z (NSD subj01: 81 104 83)")
    parser.add_argument("--trials", type=int, default=750, help="trials of the session (NSD: 750; at most 750)")
    parser.add_argument("--voxels", type=int, default=15724, help="nsdgeneral voxels (NSD subj01: 15724)")
    return parser


def main() -> int:
    parser = session_parser(__doc__, "folder for the simulated release (rewritten)")
    parser.add_argument("--brick-size", type=int, default=425, help="imgBrick image side (NSD: 425)")
    parser.add_argument("--hdf5", action="store_true", help="also write the HDF5 betas")
    args = parser.parse_args()
    repeats = -(-args.trials // IMAGES)  # every image shown up to 3 times fills the session
    if repeats > 3:
        raise SystemExit(f"--trials above {3 * IMAGES} need more than the simulator's {IMAGES} images")
    x, y, z = args.grid
    int16_bytes = x * y * z * args.trials * 2
    command = [sys.executable, "-m", "mindvis", "simulate-nsd", "--root", str(args.work / "raw"), "--subjects", "1",
               "--sessions", "1", "--trials-per-session", str(args.trials), "--images-per-subject", str(IMAGES),
               "--other-repeats", str(repeats), "--grid", *map(str, args.grid), "--no-tracking",
               "--set", f"roi_voxels={roi_voxels(args.voxels)}", "--set", f"brick_size={args.brick_size}"]
    if args.hdf5:
        command.append("--hdf5")
    baseline, _ = peak_rss_kib([sys.executable, "-c", BASELINE])
    rss, seconds = peak_rss_kib(command)
    result = {"grid": args.grid, "trials": args.trials, "voxels": args.voxels, "hdf5": args.hdf5,
              "brick_size": args.brick_size, "session_int16_MB": round(int16_bytes / 1e6, 1),
              "seconds": round(seconds, 1), "peak_rss_MB": round(rss * 1024 / 1e6, 1),
              "baseline_import_rss_MB": round(baseline * 1024 / 1e6, 1),
              "peak_over_int16": round(rss * 1024 / int16_bytes, 3)}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
