"""Score one dataset/subject's generated samples: n-way top-1 (the reference's
Monte-Carlo value and its exact expectation), pair-wise identification (MSE, PCC,
colour SSIM, LPIPS when AlexNet weights are configured), raw means of PCC and SSIM,
FID (judge features in the demo; Inception 2048-d and the reference's 64-d variant
when Inception weights are configured) and the NSD-style suite.

--samples: npz with `samples` uint8 (n_test, K, H, W, 3), `ground_truth` uint8
(n_test, H, W, 3) and optionally `test_labels` (n_test,). --pixel-gt (NSD): the subject npz whose
`test_images_pixel` (425 px) are PixCorr's and SSIM's ground truth under the NSD protocol.
Writes --out (metrics.json: every metric with its definition, chance level, 95 % bootstrap
interval over test items `ci95`, a permutation p-value against chance for n-way and
identification, and the metrics skipped for want of weights) and, with --grid-out, a PNG
grid (ground truth | K samples).

Controls (files from `mindvis generate-controls`; each scored exactly as the model):
--shuffled-fmri, --prior-only, --train-retrieval, and --train-npz (+ --train-images for GOD)
for the nearest-training-image share; they fill metrics.json's `baselines`.
--seed-samples: the samples of other generation seeds; each metric gets `across_seeds`
(mean, sd, n).
"""

from __future__ import annotations

import argparse
import logging

from mindvis.config import load_section
from mindvis.evaluation import EvaluateConfig, flat_metrics, load_pixel_ground_truth, load_samples
from mindvis.evaluation.controls import CONTROLS, evaluate_with_controls, load_training_images, recorded_seed
from mindvis.tracking import tracker_for
from mindvis.tracking.job import parse_wildcards
from mindvis.utils.atomic import write_json
from mindvis.utils.images import grid_image, save_png

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--samples", required=True, help="samples.npz from the generate step")
    parser.add_argument("--out", required=True, help="metrics.json to write")
    parser.add_argument(
        "--judge", default=None, help="judge weight file (overrides the config's judge_weights), e.g. judge.pt"
    )
    parser.add_argument("--grid-out", default=None, help="also write the reconstruction grid PNG here")
    parser.add_argument("--dataset", default=None, help="dataset name for the report (default: the 'dataset' wildcard)")
    parser.add_argument("--subject", default=None, help="subject for the report (default: the 'subject' wildcard)")
    parser.add_argument("--pixel-gt", default=None,
                        help="NSD subject npz whose test_images_pixel (425 px) are the ground truth of PixCorr and "
                        "SSIM when evaluate.nsd_pixels resolves to mindeye")
    controls = parser.add_argument_group("controls (from `mindvis generate-controls`) and generation seeds")
    for name in CONTROLS:  # --shuffled-fmri samples_shuffled_fmri.npz, --prior-only ..., --train-retrieval ...
        controls.add_argument("--" + name.replace("_", "-"), dest=name, default=None, help=f"samples_{name}.npz")
    controls.add_argument("--train-npz", default=None,
                          help="the subject's npz (GOD sbj_N.npz, BOLD5000 CSI{n}.npz): training images for "
                          "the nearest-training-image share")
    controls.add_argument("--train-images", default=None, help="GOD images_256.npz (with --train-npz, GOD only)")
    controls.add_argument("--seed-samples", nargs="*", default=[],
                          help="samples.npz of other generation seeds: mean +- sd of every metric")


def run(args: argparse.Namespace) -> int:
    cfg = load_section(EvaluateConfig, args.config, args.overrides)
    if args.judge:
        cfg.judge_weights = args.judge
    wildcards = parse_wildcards(args.wildcards or [])
    dataset = args.dataset or wildcards.get("dataset")
    subject = args.subject or wildcards.get("subject")
    with tracker_for(args, cfg, dataset=dataset, subject=subject) as tracker:
        samples, gt, labels = load_samples(args.samples)
        identity = {"dataset": dataset, "subject": subject, "samples_file": str(args.samples)}
        controls = {name: (path, *load_samples(path)[:2]) for name in CONTROLS if (path := getattr(args, name))}
        train_images = None
        if args.train_npz:
            train_images = load_training_images(args.train_npz, args.train_images, dataset, samples.shape[2])
        seed_runs = [(path, recorded_seed(path), *load_samples(path)[:2]) for path in args.seed_samples]
        pixel_gt = load_pixel_ground_truth(args.pixel_gt, len(gt)) if args.pixel_gt else None
        doc = evaluate_with_controls(samples, gt, cfg, test_labels=labels, identity=identity,
                                     seed=recorded_seed(args.samples), controls=controls,
                                     train_images=train_images, seed_runs=seed_runs, pixel_ground_truth=pixel_gt)
        write_json(args.out, doc)
        tracker.set_tags({"protocol": cfg.protocol, "judge": cfg.judge})
        tracker.log_metrics(flat_metrics(doc))
        tracker.log_artifact(args.out)
        grid = grid_image(samples, gt, cfg.grid_rows, cell_max=cfg.grid_cell_max)
        if args.grid_out:
            save_png(grid, args.grid_out)
        tracker.log_image(grid, "reconstructions.png")
        for name, rec in doc["metrics"].items():
            chance = f" (chance {rec['chance']:.3g})" if rec.get("chance") is not None else ""
            ci = " [%.4f, %.4f]" % tuple(rec["ci95"]) if rec.get("ci95") else ""
            p = f" p={rec['p_value']:.3g}" if "p_value" in rec else ""
            log.info("%-28s %.4f%s%s%s", name, rec["value"], ci, p, chance)
        for control in CONTROLS:
            for name in ("nway_top1_exact", "identification_pcc"):
                rec = doc["baselines"].get(control, {}).get(name)
                if rec:
                    log.info("%-28s %.4f (%s)", f"{control}.{name}", rec["value"], control)
        for name, why in doc["skipped"].items():
            log.info("%-28s skipped: %s", name, why)
    return 0
