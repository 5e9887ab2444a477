"""Samplers for stage B in one run: PLMS-250 (the reference), DDIM-50, DPM-Solver++-25.

For a trained stage B model (finetuned.pt, ours or MinD-Vis's), sample the same
test items with each sampler and print, per sampler: seconds per image, the
speed-up over the first sampler, pair-wise identification by pixel correlation
(the reference's "pcc" metric, chance 0.5) and, when a judge is given
(`--judge`, the embedded default's small CNN from `train-judge`), the n-way
top-1 accuracy (exact expectation over distractor draws, chance 1/n).
All samplers start from the same seeded noise per (item, sample).

    python benchmarks/bench_samplers.py --model results/stage_b/god/1/finetuned.pt \
        --npz data/Kamitani/npz/sbj_1.npz --images data/Kamitani/npz/images_256.npz \
        --judge results/evaluation/judge.pt [--items 20 --k 2 --device cuda]

On a GPU machine pass --device cuda (the timing then includes CUDA synchronisation).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="finetuned.pt (ours) or MinD-Vis finetuned.pth")
    p.add_argument("--npz", type=Path, required=True, help="subject npz (GOD sbj_N.npz or BOLD5000 CSI{n}.npz)")
    p.add_argument("--images", type=Path, default=None, help="GOD images_256.npz")
    p.add_argument("--dataset", choices=("god", "bold5000"), default="god")
    p.add_argument("--roi", default="none", help="ROI used in training ('none' = the dataset's default)")
    p.add_argument("--samplers", default="plms:250,ddim:50,dpmpp:25", help="name:steps list; the first is the baseline")
    p.add_argument("--items", type=int, default=0, help="first N test items (0 = all)")
    p.add_argument("--k", type=int, default=2, help="samples per test item")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--seed", type=int, default=2022)
    p.add_argument("--judge", type=Path, default=None, help="small-CNN judge from `mindvis train-judge` (optional)")
    p.add_argument("--n-way", type=int, default=5, help="n of the n-way top-1 (<= the judge's classes)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--json", type=Path, default=None, help="also write the table as JSON here")
    return p.parse_args(argv)


def pixel_identification(samples: np.ndarray, gt: np.ndarray) -> tuple[float, str]:
    """Mean over sample sets of the PCC pair-wise identification (the evaluation module's when present)."""
    try:
        from mindvis.evaluation.identification import pairwise_pixel_identification

        rates = [pairwise_pixel_identification(samples[:, k], gt, with_ssim=False)["identification_pcc"]
                 for k in range(samples.shape[1])]
        return float(np.mean(rates)), "mindvis.evaluation"
    except ImportError:
        from mindvis.generation import pairwise_identification

        return pairwise_identification(samples, gt), "mindvis.generation"


def nway(judge, samples: np.ndarray, gt: np.ndarray, n: int) -> float:
    from mindvis.evaluation.nway import n_way_top1

    gt_probs, _ = judge.run(gt)
    flat, _ = judge.run(samples.reshape(-1, *samples.shape[2:]))
    gen_probs = flat.reshape(samples.shape[0], samples.shape[1], -1)
    return n_way_top1(gen_probs, gt_probs, n, 1, np.random.default_rng(0)).summary()["exact_mean"]


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(max(1, args.threads))
    from mindvis.checkpoints.mindvis_ldm import load_finetuned
    from mindvis.models.ldm.sampling import SamplerConfig, sample_images
    from mindvis.training.ldm_trainer import load_pairs, pick_device

    device = pick_device(args.device)
    model = load_finetuned(args.model).model.to(device).eval()
    roi = None if args.roi.lower() == "none" else args.roi
    pairs = load_pairs(args.npz, args.images, args.dataset, "test", model.conditioner.num_voxels,
                       model.spec.vq.resolution, roi)
    n = pairs.fmri.shape[0] if args.items <= 0 else min(args.items, pairs.fmri.shape[0])
    fmri = torch.from_numpy(pairs.fmri[:n])[:, None, :]
    gt = pairs.images_hwc()[:n]
    judge = None
    if args.judge is not None:
        from mindvis.evaluation.judges import load_small_cnn_judge

        judge = load_small_cnn_judge(args.judge).to(device)

    rows = []
    for spec in args.samplers.split(","):
        name, steps = spec.split(":")
        cfg = SamplerConfig(sampler=name, steps=int(steps), n_samples=args.k, seed=args.seed,
                            batch_size=args.batch_size)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        samples, _ = sample_images(model, fmri, cfg, device=device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        pcc, source = pixel_identification(samples, gt)
        row = {"sampler": name, "steps": int(steps), "images": int(n * args.k),
               "seconds_per_image": seconds / (n * args.k), "pcc_identification": pcc}
        if judge is not None:
            row[f"{args.n_way}way_top1"] = nway(judge, samples, gt, args.n_way)
        rows.append(row)
        print(f"done {name}-{steps}: {seconds:.1f} s", file=sys.stderr, flush=True)

    base = rows[0]["seconds_per_image"]
    header = f"{'sampler':<10}{'steps':>6}{'s/image':>10}{'speed-up':>10}{'pcc id.':>9}"
    if judge is not None:
        header += f"{str(args.n_way) + '-way top-1':>14}"
    print(f"\n{args.model} on {device} ({torch.get_num_threads()} threads), {n} test items x {args.k} samples; "
          f"pcc identification from {source}, chance 0.5" + (f"; {args.n_way}-way chance {1 / args.n_way:.2f}"
                                                             if judge is not None else ""))
    print(header)
    for row in rows:
        line = (f"{row['sampler']:<10}{row['steps']:>6}{row['seconds_per_image']:>10.4f}"
                f"{base / row['seconds_per_image']:>9.1f}x{row['pcc_identification']:>9.3f}")
        if judge is not None:
            line += f"{row[f'{args.n_way}way_top1']:>14.3f}"
        print(line)
    if args.json is not None:
        args.json.write_text(json.dumps({"device": str(device), "items": n, "k": args.k, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
