"""The commands, in pipeline order: name -> (module, one-line summary).

Modules are imported only when their command runs, so `--help` stays fast
and a command never pays for another's heavy imports (torch, mlflow).
Each module defines `add_arguments(parser)` and `run(args) -> int | None`;
its docstring is the command's long help.
"""

COMMANDS: dict[str, tuple[str, str]] = {
    "make-stimuli": ("mindvis.simulate.cli_stimuli", "build the embedded stimulus set (images + GOD-style id lists)"),
    "simulate-god": ("mindvis.simulate.cli_god", "simulate one GOD subject as a BData SubjectN.h5 file"),
    "simulate-hcp": ("mindvis.simulate.cli_hcp", "simulate one HCP subject's resting-state CIFTI runs"),
    "simulate-bold5000": ("mindvis.simulate.cli_bold5000", "simulate one BOLD5000 subject's GLMsingle release"),
    "simulate-nsd": ("mindvis.simulate.cli_nsd", "simulate a small NSD release (design, stimuli, ROIs, betas, behaviour)"),
    "preprocess-god-images": ("mindvis.preprocess.cli_god_images", "GOD stimulus images -> images_256.npz + label CSVs"),
    "preprocess-god": ("mindvis.preprocess.cli_god", "GOD SubjectN.h5 -> MinD-Vis sbj_N.npz"),
    "preprocess-hcp": ("mindvis.preprocess.cli_hcp", "HCP dtseries (or 4-D NIfTI) -> HCP_visual_voxel.npz"),
    "preprocess-bold5000": ("mindvis.preprocess.cli_bold5000", "BOLD5000 GLMsingle betas -> per-ROI arrays + npz"),
    "preprocess-nsd": ("mindvis.preprocess.cli_nsd", "NSD raw release (betas, design, ROIs, imgBrick) -> subjNN.npz"),
    "pretrain-mbm": ("mindvis.training.cli_pretrain", "stage A1: SC-MBM pre-training"),
    "finetune-mbm": ("mindvis.training.cli_finetune", "stage A2: SC-MBM fine-tuning on one dataset/subject"),
    "train-autoencoder": ("mindvis.training.cli_autoencoder", "embedded prior: train the VQ autoencoder on the stimuli"),
    "train-label2img": ("mindvis.training.cli_label2img", "embedded prior: train the class-conditional LDM (frozen VQ)"),
    "finetune-ldm": ("mindvis.training.cli_finetune_ldm", "stage B: fine-tune the DC-LDM on one dataset/subject"),
    "generate": ("mindvis.generation.cli_generate", "stage B: K images per test fMRI (+ a PNG grid)"),
    "generate-controls": ("mindvis.generation.cli_generate_controls", "the controls: shuffled fMRI, prior only, train retrieval"),
    "train-judge": ("mindvis.evaluation.cli_train_judge", "train the embedded default's judge (small CNN) on the stimulus set"),
    "evaluate": ("mindvis.evaluation.cli_evaluate", "score generated samples: n-way top-1, identification, FID, NSD suite"),
    "compare-samplers": ("mindvis.evaluation.cli_compare_samplers", "stage B samplers side by side on one subject: metric vs steps vs time"),
    "report": ("mindvis.evaluation.cli_report", "one self-contained HTML report across datasets and subjects"),
    "inspect": ("mindvis.cli.inspect_cmd", "print what an npz / h5 / checkpoint file holds"),
}

# One `--set KEY=VALUE` per command that reads a config section, shown in its --help and
# checked against its config by tests/test_cli_help_examples.py (keys differ per command).
SET_EXAMPLES: dict[str, str] = {
    "make-stimuli": "image_size=32",
    "simulate-god": "snr=0.5",
    "simulate-hcp": "n_frames=300",
    "simulate-bold5000": "n_sessions=3",
    "simulate-nsd": "snr=0.5",
    "preprocess-god-images": "size=128",
    "preprocess-god": "roi=HVC",
    "preprocess-hcp": "chunk_frames=10",
    "preprocess-bold5000": "image_size=128",
    "preprocess-nsd": "zscore=train",
    "pretrain-mbm": "epochs=5",
    "finetune-mbm": "epochs=5",
    "train-autoencoder": "epochs=5",
    "train-label2img": "epochs=5",
    "finetune-ldm": "epochs=5",
    "generate": "steps=50",
    "generate-controls": "n_samples=2",
    "train-judge": "epochs=10",
    "evaluate": "n_way=50",
    "compare-samplers": "n_samples=4",
    "report": "title=results",
}
