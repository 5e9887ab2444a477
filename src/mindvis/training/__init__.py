"""Training of every stage: SC-MBM (MinD-Vis stage A) and the latent diffusion model (stage B).

The one loop: engine (device and precision, DDP, resuming, SIGTERM, checkpoints, metrics),
with draws (the seeded random draws of a step), distributed (DDP plumbing and collectives),
checkpointing (resume files), input_identity (resume fingerprints by content) and job (the
shell of every training command). Each stage is a small module giving the engine its
config, its batch -> loss and its hooks:
  stage A   mbm (SC-MBM's keys, rows and loss; metrics in mbm_quality; optim, schedule),
            stage_a1 (pre-training) and stage_a2 (fine-tuning);
  stage B   ldm_common (what the three share), autoencoder and label2img (the demo's
            image prior), stage_b (DC-LDM fine-tuning).
Commands: cli_pretrain, cli_finetune, cli_autoencoder, cli_label2img, cli_finetune_ldm.
"""
