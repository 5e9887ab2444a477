"""Simulate a small Natural Scenes Dataset release in the real formats: the design file
(nsd_expdesign.mat), the stimuli (nsd_stimuli.hdf5, imgBrick), nsd_stim_info_merged.csv, and per
subject the ROI volumes (nsdgeneral, prf-visualrois, streams, brainmask) with their .mgz.ctab label
tables, behav/responses.tsv and the single-trial betas betas_sessionNN.nii.gz (int16, % signal
change x 300, trials last; with --hdf5 also betas_sessionNN.hdf5, /betas trials first). The ground
truth goes to <root>/simulation_truth/subjXX.npz. Full layout and truth keys: mindvis.simulate.nsd.

Scaled down from the real release (every size below is an option or a --set key):
  73k image space   the embedded stimulus set (250 images by default), not 73,000 COCO images
  shared images     --shared-images (0 = the stimulus test images: 50), not 1,000 (shared1000)
  images/subject    --images-per-subject (0 = shared + half the rest: 150), not 10,000; subjectim is
                    (8, images_per_subject)
  repeats           shared images 3 times, others --other-repeats times (NSD: 3), so
                    masterordering holds shared x 3 + others x other_repeats trials at most
  sessions          --sessions (3), not 40; trials per session --trials-per-session
                    (0 = all presentations shared out over the sessions), not 750; 12 runs each
  grid              --grid X Y Z (24 30 24), not 81 104 83; nsdgeneral 530 voxels, not 15,724
  imgBrick          425 px as in NSD (--set brick_size=64 for a smaller file)

Examples:
  mindvis simulate-nsd --root data/NSD/raw --subjects 1 2 --sessions 3
  mindvis simulate-nsd --root data/NSD/raw --subjects 1 --hdf5 --missing-sessions 1:2 --set snr=0.5
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", required=True,
                        help="the release folder (e.g. data/NSD/raw): nsddata/, nsddata_betas/, nsddata_stimuli/ "
                             "and simulation_truth/ go below it")
    parser.add_argument("--stimuli", default=None,
                        help="stimuli.npz written by `mindvis make-stimuli`; default: build the embedded "
                             "stimulus set (scikit-learn digits, make-stimuli's defaults) in memory")
    parser.add_argument("--subjects", type=int, nargs="+", default=None, metavar="N",
                        help="subjects to write, 1..8 (config key subjects; default 1). The design file always "
                             "has 8 rows, as in NSD")
    parser.add_argument("--sessions", type=int, default=None,
                        help="sessions per subject (config key sessions; default 3; NSD: 40)")
    parser.add_argument("--trials-per-session", type=int, default=None,
                        help="trials per session (config key trials_per_session; NSD: 750); default 0 = every "
                             "presentation of the design shared out over the sessions")
    parser.add_argument("--grid", type=int, nargs=3, default=None, metavar=("X", "Y", "Z"),
                        help="the 1.8 mm functional grid (config key grid; default 24 30 24; NSD subj01: 81 104 83)")
    parser.add_argument("--shared-images", type=int, default=None,
                        help="number of shared images (sharedix, the first columns of subjectim; NSD: 1000); "
                             "default 0 = all test images of the stimulus set")
    parser.add_argument("--images-per-subject", type=int, default=None,
                        help="columns of subjectim, shared ones included (NSD: 10000); default 0 = the shared "
                             "images plus half of the others")
    parser.add_argument("--other-repeats", type=int, default=None, choices=(1, 2, 3),
                        help="presentations of each non-shared image (NSD: 3, like the shared images; default 3)")
    parser.add_argument("--hdf5", action="store_true", default=None,
                        help="also write betas_sessionNN.hdf5 (/betas int16 (trials, Z, Y, X))")
    parser.add_argument("--missing-sessions", nargs="+", default=None, metavar="SUBJ:SESS",
                        help="sessions whose betas files are not written, e.g. 1:3 2:1 (their trials stay in "
                             "responses.tsv and leave the truth)")
    parser.add_argument("--seed", type=int, default=None,
                        help="design and image order use the seed, subject N's brain and noise seed + N (default 0)")


# command-line option -> config key (an option left out keeps the config's value)
OPTIONS = {"subjects": "subjects", "sessions": "sessions", "trials_per_session": "trials_per_session",
           "grid": "grid", "shared_images": "shared_images", "images_per_subject": "images_per_subject",
           "other_repeats": "other_repeats", "hdf5": "hdf5", "missing_sessions": "missing_sessions", "seed": "seed"}


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from mindvis.config import load_section
    from mindvis.simulate.nsd import NsdSimConfig, simulate_nsd
    from mindvis.simulate.stimuli import StimuliConfig, build_stimuli, load_stimuli
    from mindvis.tracking import tracker_for

    cfg = load_section(NsdSimConfig, args.config, args.overrides)
    given = {key: getattr(args, opt) for opt, key in OPTIONS.items() if getattr(args, opt) is not None}
    cfg = replace(cfg, **given)
    stim = load_stimuli(args.stimuli) if args.stimuli else build_stimuli(StimuliConfig())
    with tracker_for(args, cfg, dataset="nsd", subject=",".join(str(s) for s in cfg.subjects)) as tracker:
        summary = simulate_nsd(stim, args.root, cfg)
        metrics = {k: summary[k] for k in ("n_73k", "shared_images", "images_per_subject", "sessions", "trials_per_session")}
        for name, sub in summary["subjects"].items():
            metrics.update({f"{name}.{k}": v for k, v in sub.items() if isinstance(v, int)})
        tracker.log_metrics(metrics)
        tracker.log_dict(summary, "summary.json")
    return 0
