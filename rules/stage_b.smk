# Stage B: the double-conditioned LDM. The image prior is trained here at tiny
# scale (embedded default) or read from CompVis's cin256-v2 checkpoint; each
# dataset/subject then fine-tunes it with its stage A2 encoder, and generates
# K images per test fMRI. Training jobs resume from <out>.resume.pt.

STAGE_B = f"{RESULTS}/stage_b"
SAMPLES = f"{RESULTS}/samples/{{dataset}}/{{subject}}"


def prior_training_images():
    """The prior learns the stimulus set: stimuli.npz when the DAG simulates
    data, else the real GOD training images with their WordNet labels."""
    if any(enabled(d) and simulated(d) for d in DECODED):
        return {"images": f"{STIMULI}/stimuli.npz", "labels": f"{STIMULI}/stimuli.npz"}
    return {"images": f"{GOD_NPZ_DIR}/images_256.npz", "labels": f"{GOD_NPZ_DIR}/imagenet_training_label.csv"}


def prior_checkpoint():
    prior = config["stage_b"]["prior"]
    if prior["source"] == "compvis":
        if not prior["checkpoint"]:
            raise ValueError("stage_b.prior.source is compvis: set stage_b.prior.checkpoint to model.ckpt")
        return prior["checkpoint"]
    return f"{STAGE_B}/prior/label2img.pt"


def stage_b_model(wildcards):
    """finetune_ldm's output, or a released MinD-Vis finetuned.pth when configured."""
    template = config["stage_b"]["checkpoint"]
    if template:
        return template.format(dataset=wildcards.dataset, subject=wildcards.subject)
    return f"{STAGE_B}/{wildcards.dataset}/{wildcards.subject}/finetuned.pt"


def god_images_input(wildcards):
    # GOD keeps its images in images_256.npz; BOLD5000 and NSD keep them in the subject npz.
    return f"{GOD_NPZ_DIR}/images_256.npz" if wildcards.dataset == "god" else []


def images_option(wildcards, input):
    return f"--images {input.images}" if input.images else ""


def with_model(name):
    """A stage B section with the shared `model:` sizes merged in."""
    return json.dumps({**config["stage_b"][name], "model": config["stage_b"]["model"]}, sort_keys=True)


rule train_autoencoder:
    priority: 85  # see PRIORITIES in Snakefile
    input:
        images=prior_training_images()["images"],
    output:
        f"{STAGE_B}/prior/autoencoder.pt",
    params:
        cfg=with_model("autoencoder"),
        launch=launcher,
    threads: torch_threads("stage_b", "autoencoder")
    resources:
        gpu=1,
    conda:
        "../envs/torch.yaml"
    log:
        f"{RESULTS}/logs/train_autoencoder.log",
    shell:
        "{params.launch} train-autoencoder --images {input.images} --out {output} "
        "--config {params.cfg:q} --rule {rule} > {log} 2>&1"


rule train_label2img:
    priority: 70  # see PRIORITIES in Snakefile
    input:
        **prior_training_images(),
        autoencoder=rules.train_autoencoder.output[0],
    output:
        f"{STAGE_B}/prior/label2img.pt",
    params:
        cfg=with_model("label2img"),
        launch=launcher,
    threads: torch_threads("stage_b", "label2img")
    resources:
        gpu=1,
    conda:
        "../envs/torch.yaml"
    log:
        f"{RESULTS}/logs/train_label2img.log",
    shell:
        "{params.launch} train-label2img --images {input.images} --labels {input.labels} "
        "--autoencoder {input.autoencoder} --out {output} --config {params.cfg:q} --rule {rule} > {log} 2>&1"


rule finetune_ldm:
    priority: 40  # see PRIORITIES in Snakefile
    input:
        npz=finetune_npz,
        images=god_images_input,
        encoder=f"{STAGE_A}/{{dataset}}/{{subject}}/fmri_encoder.pth",
        prior=prior_checkpoint(),
    output:
        f"{STAGE_B}/{{dataset}}/{{subject}}/finetuned.pt",
    wildcard_constraints:
        dataset=DECODED_PATTERN,
    params:
        cfg=section("stage_b", "finetune"),
        images=images_option,
        launch=launcher,
    threads: torch_threads("stage_b", "finetune")
    resources:
        gpu=1,
    conda:
        "../envs/torch.yaml"
    log:
        f"{RESULTS}/logs/finetune_ldm/{{dataset}}_{{subject}}.log",
    shell:
        "{params.launch} finetune-ldm --npz {input.npz} {params.images} --dataset {wildcards.dataset} "
        "--encoder {input.encoder} --prior {input.prior} --out {output} --config {params.cfg:q} "
        "--rule {rule} --wildcard dataset={wildcards.dataset} --wildcard subject={wildcards.subject} > {log} 2>&1"


rule generate:
    priority: 30  # see PRIORITIES in Snakefile
    input:
        model=stage_b_model,
        npz=finetune_npz,
        images=god_images_input,
    output:
        samples=f"{SAMPLES}/samples.npz",
        grid=f"{SAMPLES}/grid.png",
    wildcard_constraints:
        dataset=DECODED_PATTERN,
    params:
        cfg=section("stage_b", "generate"),
        images=images_option,
    threads: torch_threads("stage_b", "generate")
    resources:
        gpu=1,
    conda:
        "../envs/torch.yaml"
    log:
        f"{RESULTS}/logs/generate/{{dataset}}_{{subject}}.log",
    shell:
        "python -m mindvis generate --model {input.model} --npz {input.npz} {params.images} "
        "--dataset {wildcards.dataset} --out {output.samples} --grid {output.grid} --config {params.cfg:q} "
        "--rule {rule} --wildcard dataset={wildcards.dataset} --wildcard subject={wildcards.subject} > {log} 2>&1"


def controls_config():
    """generate's section with the controls' sample count (evaluate.controls_n_samples)."""
    n = config["evaluate"].get("controls_n_samples", 1)
    return json.dumps({**config["stage_b"]["generate"], "n_samples": n}, sort_keys=True)


rule generate_controls:
    # The controls metrics.json's baselines are scored on: the model conditioned on another test
    # item's fMRI, the model with the condition dropped, and the best-correlated training image.
    priority: 30  # see PRIORITIES in Snakefile
    input:
        model=stage_b_model,
        npz=finetune_npz,
        images=god_images_input,
    output:
        shuffled=f"{SAMPLES}/samples_shuffled_fmri.npz",
        prior=f"{SAMPLES}/samples_prior_only.npz",
        retrieval=f"{SAMPLES}/samples_train_retrieval.npz",
    wildcard_constraints:
        dataset=DECODED_PATTERN,
    params:
        cfg=controls_config(),
        images=images_option,
    threads: torch_threads("stage_b", "generate")
    resources:
        gpu=1,
    conda:
        "../envs/torch.yaml"
    log:
        f"{RESULTS}/logs/generate_controls/{{dataset}}_{{subject}}.log",
    shell:
        "python -m mindvis generate-controls --model {input.model} --npz {input.npz} {params.images} "
        "--dataset {wildcards.dataset} --shuffled-out {output.shuffled} --prior-out {output.prior} "
        "--retrieval-out {output.retrieval} --config {params.cfg:q} --rule {rule} "
        "--wildcard dataset={wildcards.dataset} --wildcard subject={wildcards.subject} > {log} 2>&1"


def extra_generation_seeds():
    """evaluate.seeds without stage_b.generate.seed (samples.npz has that one), in order, once each."""
    main = int(config["stage_b"]["generate"]["seed"])
    seeds = []
    for seed in config["evaluate"].get("seeds", []):
        if int(seed) != main and int(seed) not in seeds:
            seeds.append(int(seed))
    return seeds


def seed_config(wildcards):
    return json.dumps({**config["stage_b"]["generate"], "seed": int(wildcards.seed)}, sort_keys=True)


rule generate_seed:
    # The same generation with another seed (evaluate.seeds): metrics.json's across_seeds.
    priority: 30  # see PRIORITIES in Snakefile
    input:
        model=stage_b_model,
        npz=finetune_npz,
        images=god_images_input,
    output:
        f"{SAMPLES}/samples_seed{{seed}}.npz",
    wildcard_constraints:
        dataset=DECODED_PATTERN,
        seed=r"\d+",
    params:
        cfg=seed_config,
        images=images_option,
    threads: torch_threads("stage_b", "generate")
    resources:
        gpu=1,
    conda:
        "../envs/torch.yaml"
    log:
        f"{RESULTS}/logs/generate_seed/{{dataset}}_{{subject}}_{{seed}}.log",
    shell:
        "python -m mindvis generate --model {input.model} --npz {input.npz} {params.images} "
        "--dataset {wildcards.dataset} --out {output} --config {params.cfg:q} --rule {rule} "
        "--wildcard dataset={wildcards.dataset} --wildcard subject={wildcards.subject} > {log} 2>&1"
