"""Generate the controls a decoding result is judged against, for one dataset/subject, in the
samples.npz format that `mindvis evaluate` reads (its --shuffled-fmri, --prior-only and
--train-retrieval):

  --shuffled-out   the stage B model conditioned on another test item's fMRI (a fixed derangement,
                   seeded by `seed`); same sampler and starting noise per (item, sample) as `generate`
  --prior-out      the model's unconditional branch (the condition dropped), same noise
  --retrieval-out  per test fMRI, the training image whose training fMRI correlates best (Pearson):
                   no generative model at all

The config is `generate`'s (the DAG passes stage_b.generate with n_samples = evaluate.controls_n_samples).
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


def add_arguments(parser) -> None:
    from mindvis.generation.cli_generate import add_model_and_subject_arguments

    add_model_and_subject_arguments(parser)
    parser.add_argument("--shuffled-out", type=Path, required=True, help="npz: samples from a deranged fMRI order")
    parser.add_argument("--prior-out", type=Path, required=True, help="npz: samples with the condition dropped")
    parser.add_argument("--retrieval-out", type=Path, required=True, help="npz: the retrieved training images")


def run(args) -> int:
    from mindvis.config import load_section
    from mindvis.generation import GenerateConfig
    from mindvis.generation.controls import generate_controls
    from mindvis.tracking import tracker_for
    from mindvis.tracking.job import subject_of_npz

    cfg = load_section(GenerateConfig, args.config, args.overrides)
    subject = subject_of_npz(args.npz)
    outs = {"shuffled_fmri": args.shuffled_out, "prior_only": args.prior_out, "train_retrieval": args.retrieval_out}
    with tracker_for(args, cfg, dataset=args.dataset, subject=subject) as tracker:
        summary = generate_controls(args.model, args.npz, outs, cfg, images=args.images, dataset=args.dataset)
        tracker.log_metrics({"mean_retrieval_r": summary["mean_retrieval_r"]})
        tracker.log_dict(summary, "controls_summary.json")
    log.info("controls for %d test items x %d samples; train retrieval: mean r %.3f, %d distinct training images "
             "of %d", summary["n_test"], summary["n_samples"], summary["mean_retrieval_r"],
             summary["retrieved_distinct"], summary["n_train"])
    return 0
