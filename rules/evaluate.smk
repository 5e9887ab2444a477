# Evaluation: the judge (embedded default), metrics per dataset/subject, the
# sampler comparison on one subject, and one HTML report across everything.

from types import SimpleNamespace

METRICS = f"{RESULTS}/metrics/{{dataset}}/{{subject}}"
JUDGE = f"{RESULTS}/judge/judge.pt"


def judge_trained_here():
    ev = config["evaluate"]
    return ev.get("judge", "small_cnn") == "small_cnn" and not ev.get("judge_weights")


def judge_input(wildcards):
    """The DAG's small CNN, or the configured judge weights (a local file)."""
    if judge_trained_here():
        return JUDGE
    return config["evaluate"].get("judge_weights") or []


def judge_option(wildcards, input):
    return f"--judge {input.judge}" if input.judge else ""


rule train_judge:
    priority: 10  # see PRIORITIES in Snakefile
    input:
        f"{STIMULI}/stimuli.npz",
    output:
        JUDGE,
    params:
        cfg=section("judge"),
    threads: torch_threads("judge")
    conda:
        "../envs/torch.yaml"
    log:
        f"{RESULTS}/logs/train_judge.log",
    shell:
        "python -m mindvis train-judge --stimuli {input} --out {output} --config {params.cfg:q} "
        "--rule {rule} > {log} 2>&1"


def controls_on():
    return bool(config["evaluate"].get("controls", True))


def evaluate_extra_inputs(wildcards):
    """The controls (and the subject's training images for the nearest-copy share) and the other seeds."""
    where = SAMPLES.format(dataset=wildcards.dataset, subject=wildcards.subject)
    inputs = {"seed_samples": [f"{where}/samples_seed{s}.npz" for s in extra_generation_seeds()]}
    if wildcards.dataset == "nsd":  # the 425-px test images: PixCorr / SSIM ground truth (evaluate.nsd_pixels)
        inputs["pixel_gt"] = finetune_npz(wildcards)
    if controls_on():
        inputs.update(shuffled=f"{where}/samples_shuffled_fmri.npz", prior=f"{where}/samples_prior_only.npz",
                      retrieval=f"{where}/samples_train_retrieval.npz", npz=finetune_npz(wildcards),
                      images=god_images_input(wildcards))
    return inputs


def controls_options(wildcards, input):
    if not controls_on():
        return ""
    images = f" --train-images {input.images}" if input.images else ""
    return (f"--shuffled-fmri {input.shuffled} --prior-only {input.prior} --train-retrieval {input.retrieval} "
            f"--train-npz {input.npz}{images}")


def pixel_gt_option(wildcards, input):
    return f"--pixel-gt {input.pixel_gt}" if "pixel_gt" in input.keys() else ""


def seed_options(wildcards, input):
    return f"--seed-samples {' '.join(input.seed_samples)}" if input.seed_samples else ""


rule evaluate:
    priority: 30  # see PRIORITIES in Snakefile
    input:
        unpack(evaluate_extra_inputs),
        samples=f"{SAMPLES}/samples.npz",
        judge=judge_input,
    output:
        metrics=f"{METRICS}/metrics.json",
        grid=report(
            f"{METRICS}/grid.png",
            caption="../workflow/report/grid.rst",
            category="Reconstructions",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "subject": "{subject}"},
        ),
    wildcard_constraints:
        dataset=DECODED_PATTERN,
    params:
        cfg=section("evaluate"),
        judge=judge_option,
        controls=controls_options,
        seeds=seed_options,
        pixel_gt=pixel_gt_option,
    threads: torch_threads("evaluate")
    conda:
        "../envs/torch.yaml"
    log:
        f"{RESULTS}/logs/evaluate/{{dataset}}_{{subject}}.log",
    shell:
        "python -m mindvis evaluate --samples {input.samples} {params.judge} {params.controls} {params.seeds} "
        "{params.pixel_gt} "
        "--out {output.metrics} --grid-out {output.grid} --config {params.cfg:q} --rule {rule} "
        "--wildcard dataset={wildcards.dataset} --wildcard subject={wildcards.subject} > {log} 2>&1"


SAMPLER_TABLE = f"{RESULTS}/samplers/sampler_comparison.json"


def sampler_comparison_enabled():
    cmp = config["report"]["samplers"]
    return bool(cmp.get("enabled")) and str(cmp.get("subject")) in subjects(cmp.get("dataset", "god"))


def sampler_subject():
    cmp = config["report"]["samplers"]
    return {"dataset": cmp.get("dataset", "god"), "subject": str(cmp.get("subject"))}


def sampler_comparison_inputs(wildcards):
    where = SimpleNamespace(**sampler_subject())
    return {"model": stage_b_model(where), "npz": finetune_npz(where), "images": god_images_input(where)}


rule compare_samplers:
    priority: 5  # see PRIORITIES in Snakefile
    input:
        unpack(sampler_comparison_inputs),
        judge=judge_input,
    output:
        SAMPLER_TABLE,
    params:
        cfg=json.dumps(
            {
                **{k: v for k, v in config["report"]["samplers"].items() if k not in ("enabled", "dataset", "subject")},
                "judge": config["evaluate"].get("judge", "small_cnn"),
                "guidance_scale": config["stage_b"]["generate"]["guidance_scale"],
            },
            sort_keys=True,
        ),
        images=images_option,
        judge=judge_option,
        dataset=sampler_subject()["dataset"],
        subject=sampler_subject()["subject"],
    threads: torch_threads("report", "samplers")
    resources:
        gpu=1,
    conda:
        "../envs/torch.yaml"
    log:
        f"{RESULTS}/logs/compare_samplers.log",
    shell:
        "python -m mindvis compare-samplers --model {input.model} --npz {input.npz} {params.images} "
        "--dataset {params.dataset} {params.judge} --out {output} --config {params.cfg:q} --rule {rule} "
        "--wildcard dataset={params.dataset} --wildcard subject={params.subject} > {log} 2>&1"


def evaluated_subjects():
    return [(d, s) for d in DECODED if enabled(d) for s in subjects(d)]


def report_inputs(wildcards):
    done = evaluated_subjects()
    inputs = {
        "metrics": [f"{RESULTS}/metrics/{d}/{s}/metrics.json" for d, s in done],
        "grids": [f"{RESULTS}/metrics/{d}/{s}/grid.png" for d, s in done],
    }
    if sampler_comparison_enabled():
        inputs["samplers"] = SAMPLER_TABLE
    return inputs


rule report:
    input:
        unpack(report_inputs),
    output:
        report(f"{RESULTS}/report.html", caption="../workflow/report/report.rst", category="Report"),
    params:
        cfg=json.dumps({"title": config["report"]["title"]}),
        samplers=lambda wildcards, input: f"--samplers {input.samplers}" if "samplers" in input.keys() else "",
    threads: 1
    conda:
        "../envs/torch.yaml"
    log:
        f"{RESULTS}/logs/report.log",
    shell:
        "python -m mindvis report --metrics {input.metrics} --grids {input.grids} {params.samplers} "
        "--out {output} --config {params.cfg:q} --rule {rule} > {log} 2>&1"
