"""Ablation: does stage A1 pre-training help stage A2? A2 from the A1 checkpoint vs from scratch.

Both runs use the same architecture and tokens (those of the A1 checkpoint),
the same subject rows, config, seed and step budget; "scratch" only replaces
the pre-trained weights by a fresh initialisation. Printed: the held-out
masked-voxel quality before and after A2 for both, and the per-voxel-mean
baseline (definitions in mindvis.training.mbm_quality: masked_corr is the
pooled r beyond the per-voxel training mean, masked_r2 the share of the
baseline's squared error removed; a voxel counts only when all its
wrap-padding copies were masked, so copying a visible copy earns nothing).
Works on any GOD sbj_N.npz or BOLD5000 CSI{n}.npz:

    python benchmarks/ablation_stage_a2.py --pretrained results/.../fmri_encoder.pth \\
        --npz data/Kamitani/npz/sbj_3.npz --dataset god --set epochs=15 --json ablation.json
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

from mindvis.config import load_section
from mindvis.training.stage_a2 import DATASETS, FinetuneConfig, finetune_from_rows, load_subject_for


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrained", type=Path, required=True, help="stage A1 fmri_encoder.pth")
    parser.add_argument("--npz", type=Path, required=True, help="GOD sbj_N.npz or BOLD5000 CSI{n}.npz")
    parser.add_argument("--dataset", choices=DATASETS, required=True)
    parser.add_argument("--config", default=None, help="finetune config section (YAML/JSON string or file)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", type=Path, default=None, help="also write the two summaries here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    cfg = load_section(FinetuneConfig, args.config, args.overrides)
    subject = load_subject_for(args.npz, args.dataset, cfg)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, scratch in (("from_A1", False), ("from_scratch", True)):
            t0 = time.perf_counter()
            summary = finetune_from_rows(args.pretrained, subject, Path(tmp) / f"{name}.pth", cfg,
                                         from_scratch=scratch, info={"npz": str(args.npz)})
            summary["seconds"] = time.perf_counter() - t0
            results[name] = summary
    first = results["from_A1"]
    print(f"{args.npz} ({args.dataset}, protocol {cfg.protocol}, {cfg.epochs} epochs, "
          f"{first['steps']} steps, {first['n_train']} rows, {first['n_holdout']} held out, "
          f"{first['holdout_hidden_voxels']} hidden voxel entries scored)")
    print(f"per-voxel-mean baseline: masked_corr 0 and masked_r2 0 by definition, held-out loss "
          f"{first['voxel_mean_baseline_loss']:.4f}, per-sample r {first['voxel_mean_baseline_corr_per_sample']:.3f}")
    for name, s in results.items():
        print(f"{name:13s} held-out masked_corr: before A2 {s['initial_holdout_masked_corr']:.3f} -> after "
              f"{s['holdout_masked_corr']:.3f}; masked_r2 {s['initial_holdout_masked_r2']:.3f} -> "
              f"{s['holdout_masked_r2']:.3f}; per-sample r {s['holdout_masked_corr_per_sample']:.3f} "
              f"(held-out loss {s['holdout_loss']:.4f}, {s['seconds']:.1f} s)")
    gain = results["from_A1"]["holdout_masked_corr"] - results["from_scratch"]["holdout_masked_corr"]
    print(f"pre-training gain (A1 - scratch) in held-out masked_corr: {gain:+.3f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
