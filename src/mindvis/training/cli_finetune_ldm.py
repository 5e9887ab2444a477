"""Stage B: fine-tune the double-conditioned LDM on one subject's (fMRI, image) pairs.

Starts from the image prior (--prior: CompVis's label2img/model.ckpt, with its
config.yaml beside it when present, or the demo's label2img.pt) and the stage
A2 encoder (--encoder: fmri_encoder.pth, ours or MinD-Vis's). The prior's
class embedder is dropped and replaced by the fMRI conditioner: encoder ->
Conv1d(N -> N//2) -> Conv1d(N//2 -> 77) -> Linear(D -> context_dim) as the
cross-attention context, and the time branch Conv1d(77 -> 38) -> Conv1d(38 ->
1) -> Linear(context_dim -> time_embed_dim) added to the time embedding. The
VQ comes from the prior (--autoencoder replaces it; it must have the same sizes).

Trained (config `trainable`, default as the reference): the encoder, the two
mappers, the time branch and the UNet's cross-attention (attn2) with the
LayerNorm in front of it (norm2); everything else is frozen. The fMRI follows
MinD-Vis's conventions (ROI, wrap padding, one scalar z-score from the
training fMRI) and is wrap-padded or cut to the encoder's N x 16 voxels.

Protocols (config `protocol`), scored every `select_every_epochs` epochs by
`select_metric` (the diffusion loss at fixed noise, or pair-wise pixel-correlation
identification of samples):
  clean      (default) hold out `val_fraction` of the training pairs and keep the epoch
             that scores best on them;
  reference  MinD-Vis's choice: train on all pairs and keep the epoch that scores best on
             the TEST set (the run and the output are tagged test_set_exposed=true).

Output: <out> in MinD-Vis's finetuned.pth layout (model_state_dict with its key
names, a plain-dict config, an RNG state), loadable by `generate` and by
MinD-Vis's own code; resumable through <out>.resume.pt (SIGTERM: exit 143).
"""

from __future__ import annotations

from pathlib import Path

from mindvis.tracking.job import subject_of_npz
from mindvis.training.job import add_out_argument, run_command
from mindvis.training.stage_b import FinetuneLdmConfig, finetune_ldm


def add_arguments(parser) -> None:
    parser.add_argument("--npz", type=Path, required=True, help="one subject: GOD sbj_N.npz, BOLD5000 CSI{n}.npz or NSD subjNN.npz")
    parser.add_argument("--images", type=Path, default=None,
                        help="GOD images_256.npz (BOLD5000 keeps its images in the subject npz)")
    from mindvis.data.pairs import DATASETS

    parser.add_argument("--dataset", choices=DATASETS, default="god", help="which reader --npz needs")
    parser.add_argument("--encoder", type=Path, required=True, help="stage A2 checkpoint (fmri_encoder.pth)")
    parser.add_argument("--prior", type=Path, required=True,
                        help="the image prior: CompVis label2img/model.ckpt or the demo's label2img.pt")
    parser.add_argument("--autoencoder", type=Path, default=None,
                        help="VQ checkpoint replacing the prior's first stage (optional; same sizes required)")
    add_out_argument(parser, "finetuned.pt")


def run(args) -> int:
    def train(cfg, env, tracker):
        return finetune_ldm(args.npz, args.images, args.encoder, args.prior, args.out, cfg, dataset=args.dataset,
                            autoencoder=args.autoencoder, tracker=tracker, env=env)

    return run_command(
        args, FinetuneLdmConfig, train, out=args.out, artifact="finetuned", dataset=args.dataset,
        subject=subject_of_npz(args.npz),
        describe=lambda s: f"stage B: {s['n_train_pairs']} training pairs, selected epoch {s['selected_epoch']} "
                           f"(score {s['selection_score']}, {s['protocol']} protocol), {s['seconds']:.0f} s")
