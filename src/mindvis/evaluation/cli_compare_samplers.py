"""Compare stage B samplers on one subject: time per image, speed-up, identification, n-way top-1.

For a trained stage B model (--model: our finetuned.pt or MinD-Vis's
finetuned.pth), sample the same first N test items K times with each sampler of
the config's `samplers` list ("name:steps", e.g. plms:250, ddim:50, dpmpp:25;
the first is the baseline of the speed-up). Every sampler starts from the same
noise, seeded by (seed, item, k) as `generate` does, so the rows differ only by
the sampler. Per sampler: seconds per image (CUDA synchronised on a GPU; a
one-step warm-up runs first, untimed), speed-up over the first row, pair-wise
identification by pixel correlation (chance 0.5, mean over the K sample sets)
and, with --judge, the n-way top-1 accuracy as its exact expectation
(n = config n_way, clipped to the judge's class count; chance 1/n).

Output (--out): JSON {"device", "items", "n_samples", ..., "rows": [{"sampler",
"steps", "images", "seconds_per_image", "speedup", "identification_pcc",
"nway_top1_exact"}, ...]}: the sampler table `mindvis report --samplers` reads.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP: spinning threads stall shared CPUs

import logging  # noqa: E402
from pathlib import Path  # noqa: E402

log = logging.getLogger(__name__)

METRICS = ("seconds_per_image", "speedup", "identification_pcc", "nway_top1_exact")


def add_arguments(parser) -> None:
    from mindvis.generation.cli_generate import add_model_and_subject_arguments

    add_model_and_subject_arguments(parser)
    parser.add_argument("--judge", type=Path, default=None,
                        help="judge file for the n-way top-1 column (optional; kind = config `judge`, "
                             "small_cnn: the file from `mindvis train-judge`)")
    parser.add_argument("--out", type=Path, required=True, help="sampler table JSON, e.g. <dir>/samplers.json")


def run(args) -> int:
    from mindvis.config import load_section
    from mindvis.evaluation.sampler_comparison import (SamplerComparisonConfig, compare_samplers, format_table,
                                                        metric_names)
    from mindvis.tracking import tracker_for
    from mindvis.tracking.job import subject_of_npz
    from mindvis.utils.atomic import write_json

    cfg = load_section(SamplerComparisonConfig, args.config, args.overrides)
    subject = subject_of_npz(args.npz)
    with tracker_for(args, cfg, dataset=args.dataset, subject=subject) as tracker:
        result = compare_samplers(args.model, args.npz, args.images, args.dataset, cfg, judge_path=args.judge)
        result = {"dataset": args.dataset, "subject": subject, "model": str(args.model), **result}
        write_json(args.out, result)
        for name, row in zip(metric_names(result["rows"]), result["rows"]):
            tracker.log_metrics({f"{name}/{m}": row[m] for m in METRICS if m in row})
        tracker.log_dict(result, "samplers.json")
        tracker.log_file_reference(args.out, "samplers")
    log.info("sampler comparison (%s) -> %s\n%s", args.model, args.out, format_table(result))
    return 0
