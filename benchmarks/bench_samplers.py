r"""Samplers for stage B in one run: PLMS-250 (the reference), DDIM-50, DPM-Solver++-25.

A thin wrapper around `mindvis.evaluation.sampler_comparison.compare_samplers`
(the library function behind `mindvis compare-samplers`, which the workflow
runs for the report). For a trained stage B model (finetuned.pt, ours or
MinD-Vis's), sample the same test items with each sampler and print, per
sampler: seconds per image, the speed-up over the first sampler, pair-wise
identification by pixel correlation (chance 0.5) and, when a judge is given
(`--judge`, the embedded default's small CNN from `train-judge`), the n-way
top-1 accuracy (exact expectation over distractor draws, chance 1/n).
All samplers start from the same seeded noise per (item, sample).

    python benchmarks/bench_samplers.py --model results/stage_b/god/1/finetuned.pt \
        --npz data/Kamitani/npz/sbj_1.npz --images data/Kamitani/npz/images_256.npz \
        --judge results/judge/judge.pt --guidance 3 [--repeats 3 --items 20 --k 2 --device cuda]

On a GPU machine pass --device cuda (the timing then includes CUDA synchronisation).
--repeats R runs the whole comparison R times and reports the median seconds per image
(and the speed-ups of those medians); the images, hence the metrics, are the same each time.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP

import argparse  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="finetuned.pt (ours) or MinD-Vis finetuned.pth")
    p.add_argument("--npz", type=Path, required=True, help="subject npz (GOD sbj_N.npz or BOLD5000 CSI{n}.npz)")
    p.add_argument("--images", type=Path, default=None, help="GOD images_256.npz")
    p.add_argument("--dataset", choices=("god", "bold5000"), default="god")
    p.add_argument("--roi", default="none", help="ROI ('none' = the training run's, else the dataset's default)")
    p.add_argument("--samplers", default="plms:250,ddim:50,dpmpp:25", help="name:steps list; the first is the baseline")
    p.add_argument("--items", type=int, default=0, help="first N test items (0 = all)")
    p.add_argument("--k", type=int, default=2, help="samples per test item")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--seed", type=int, default=2022)
    p.add_argument("--judge", type=Path, default=None, help="small-CNN judge from `mindvis train-judge` (optional)")
    p.add_argument("--judge-kind", default="small_cnn", help="small_cnn | vit_h_14_swag")
    p.add_argument("--n-way", type=int, default=5, help="n of the n-way top-1 (clipped to the judge's classes)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--guidance", type=float, default=1.0,
                   help="classifier-free guidance scale for every sampler (the embedded default generates with 3)")
    p.add_argument("--repeats", type=int, default=1, help="runs; the table shows the median time per image")
    p.add_argument("--json", type=Path, default=None, help="also write the table as JSON here")
    return p.parse_args(argv)


def median_times(runs: list[dict]) -> dict:
    """The first run's table with each row's seconds per image replaced by the median over the runs."""
    import statistics

    result = runs[0]
    for i, row in enumerate(result["rows"]):
        times = [run["rows"][i]["seconds_per_image"] for run in runs]
        row["seconds_per_image"] = statistics.median(times)
        row["seconds_per_image_runs"] = times
    base = result["rows"][0]["seconds_per_image"]
    for row in result["rows"]:
        row["speedup"] = base / row["seconds_per_image"]
    result["repeats"] = len(runs)
    return result


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from mindvis.evaluation.sampler_comparison import SamplerComparisonConfig, compare_samplers, format_table
    from mindvis.utils.atomic import write_json
    from mindvis.utils.errors import MindVisError

    cfg = SamplerComparisonConfig(
        samplers=[s for s in args.samplers.split(",") if s.strip()], items=args.items, n_samples=args.k,
        seed=args.seed, batch_size=args.batch_size, judge=args.judge_kind, n_way=args.n_way,
        roi=None if args.roi.lower() == "none" else args.roi, device=args.device, threads=args.threads,
        guidance_scale=args.guidance)
    try:
        runs = [compare_samplers(args.model, args.npz, args.images, args.dataset, cfg, judge_path=args.judge)
                for _ in range(max(1, args.repeats))]
    except MindVisError as exc:
        print(f"bench_samplers: error: {exc}", file=sys.stderr)
        return 2
    result = median_times(runs)
    print(f"\n{args.model} on {result['device']} ({result['threads']} threads), "
          f"median of {result['repeats']} run(s)")
    print(format_table(result))
    if args.json is not None:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
