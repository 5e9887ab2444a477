"""Peak memory and time of preprocess-nsd on one full-size simulated NSD session.

One session of subj01's real shape (81 x 104 x 83 grid, 750 trials, int16: 1.05 GB) is simulated
with simulate-nsd (NIfTI and HDF5 betas, ~15,700 nsdgeneral voxels like subj01's 15,724), then
preprocess-nsd reads it once per betas format in a fresh process; the peak RSS of that process
(getrusage of the child) is compared with the session's int16 size (the issue's bound: 2x).
A baseline process that only imports what preprocess-nsd imports gives the interpreter's share.

    nice -n 19 python benchmarks/bench_nsd_preprocess.py --work /tmp/nsd_bench [--grid 81 104 83 --trials 750]

Smaller `--grid` / `--trials` for a busy machine (the figures then say so). Prints one JSON line.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

BASELINE = "import mindvis.preprocess.nsd, mindvis.data.images, h5py, nibabel, scipy.io"

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_nsd_simulate import peak_rss_kib, roi_voxels, session_parser  # noqa: E402  (one home for the child-process RSS probe)


def main() -> int:
    args = session_parser(__doc__, "folder for the simulated release and the npz").parse_args()
    root = args.work / "raw"
    images = 250
    repeats = -(-args.trials // images)  # every image shown up to 3 times fills the session
    if repeats > 3:
        raise SystemExit("--trials above 750 need more than the simulator's 250 images")
    sim_seconds = None
    if not (root / "simulation_truth" / "subj01.npz").is_file():
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "mindvis", "simulate-nsd", "--root", str(root), "--subjects", "1",
                        "--sessions", "1", "--trials-per-session", str(args.trials), "--images-per-subject",
                        str(images), "--other-repeats", str(repeats), "--grid", *map(str, args.grid), "--hdf5",
                        "--no-tracking", "--set", f"roi_voxels={roi_voxels(args.voxels)}"], check=True)
        sim_seconds = round(time.perf_counter() - start, 1)
    x, y, z = args.grid
    int16_bytes = x * y * z * args.trials * 2
    baseline, _ = peak_rss_kib([sys.executable, "-c", BASELINE])
    result = {"grid": args.grid, "trials": args.trials, "session_int16_MB": round(int16_bytes / 1e6, 1),
              "simulate_seconds": sim_seconds, "baseline_import_rss_MB": round(baseline * 1024 / 1e6, 1)}
    for kind in ("nifti", "hdf5"):
        out = args.work / f"subj01_{kind}.npz"
        rss, seconds = peak_rss_kib([sys.executable, "-m", "mindvis", "preprocess-nsd", "--root", str(root),
                                     "--subject", "1", "--out", str(out), "--betas", kind, "--no-tracking"])
        result[kind] = {"peak_rss_MB": round(rss * 1024 / 1e6, 1), "seconds": round(seconds, 1),
                        "peak_over_int16": round(rss * 1024 / int16_bytes, 3)}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
