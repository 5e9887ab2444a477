"""Generate K images per test fMRI with a stage B model; write them as an npz and a PNG grid.

--model takes our finetuned.pt or MinD-Vis's released finetuned.pth (read
without executing pickled code; sizes from the file; for MinD-Vis's file the
encoder's head count from its stage A fmri_encoder.pth: put it beside the file
or set `encoder_checkpoint` / `encoder_num_heads`). A MinD-Vis checkpoint is fed
test fMRI normalised as the reference does (`normalisation="reference"`); the log
and the MLflow tag `test_normalisation` say which normalisation was used. Samplers (config
`sampler`): plms (the reference: 250 steps), ddim (with `eta`), dpmpp
(DPM-Solver++ 2M, 25 steps by default). Sample k of test item i starts from
noise seeded by (seed, i, k): reruns, batch sizes and subsets give the same
images. Images are written as the reference does: (x + 1) / 2 clamped, x255, uint8.

Output npz (--out): samples (n_test, K, H, W, 3) uint8, ground_truth
(n_test, H, W, 3) uint8 (test images resized to the model's size),
image_index (n_test,), test_labels (n_test,) when the subject npz has them, and the
sampler settings. PNG (--grid): one row per test image, ground truth | K samples.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


def add_model_and_subject_arguments(parser) -> None:
    """The options every command that samples a stage B model on one subject's test set needs."""
    parser.add_argument("--model", type=Path, required=True, help="finetuned.pt (ours) or MinD-Vis's finetuned.pth")
    parser.add_argument("--npz", type=Path, required=True, help="one subject: GOD sbj_N.npz or BOLD5000 CSI{n}.npz")
    parser.add_argument("--images", type=Path, default=None,
                        help="GOD images_256.npz (BOLD5000 keeps its images in the subject npz)")
    from mindvis.data.pairs import DATASETS

    parser.add_argument("--dataset", choices=DATASETS, default="god", help="which reader --npz needs")


def add_arguments(parser) -> None:
    add_model_and_subject_arguments(parser)
    parser.add_argument("--out", type=Path, required=True, help="output npz, e.g. <dir>/samples.npz")
    parser.add_argument("--grid", type=Path, default=None,
                        help="PNG grid (ground truth | samples), e.g. <dir>/grid.png")


def run(args) -> int:
    from mindvis.config import load_section
    from mindvis.generation import GenerateConfig, generate_samples
    from mindvis.tracking import tracker_for
    from mindvis.tracking.job import subject_of_npz

    cfg = load_section(GenerateConfig, args.config, args.overrides)
    subject = subject_of_npz(args.npz)
    with tracker_for(args, cfg, dataset=args.dataset, subject=subject) as tracker:
        summary = generate_samples(args.model, args.npz, args.out, args.grid, cfg, images=args.images,
                                   dataset=args.dataset, tracker=tracker)
        tracker.set_tags({"test_set_exposed": str(summary["test_set_exposed"]).lower(),
                          "test_normalisation": summary["test_normalisation"],
                          "checkpoint_origin": summary["checkpoint_origin"]})
        tracker.log_metrics({k: summary[k] for k in ("seconds", "seconds_per_image", "pixel_identification")
                             if summary.get(k) is not None})
        tracker.log_dict(summary, "summary.json")
        tracker.log_file_reference(args.out, "samples")
    log.info("generated %d x %d images (%s-%d) in %.1f s (%.3f s/image); pixel identification %.3f",
             summary["n_test"], summary["n_samples"], summary["sampler"], summary["steps"], summary["seconds"],
             summary["seconds_per_image"], summary["pixel_identification"] or float("nan"))
    return 0
