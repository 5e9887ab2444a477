# Stage A: SC-MBM. A1 pre-trains on HCP resting state (+ GOD training fMRI),
# A2 fine-tunes per dataset and subject. Training jobs resume from
# <out>.resume.pt when rerun after a kill or preemption.

STAGE_A = f"{RESULTS}/stage_a"


def pretrain_god_inputs(wildcards):
    if config["stage_a"]["pretrain"].get("include_god", True) and enabled("god"):
        return expand(f"{GOD_NPZ_DIR}/sbj_{{subject}}.npz", subject=subjects("god"))
    return []


def finetune_npz(wildcards):
    if wildcards.dataset == "god":
        return f"{GOD_NPZ_DIR}/sbj_{wildcards.subject}.npz"
    if wildcards.dataset == "nsd":
        return nsd_npz(wildcards.subject)
    return f"{B5_DIR}/npz/CSI{wildcards.subject}.npz"


rule pretrain_mbm:
    priority: 75  # see PRIORITIES in Snakefile
    input:
        hcp=expand(HCP_NPZ, subject=subjects("hcp")),
        god=pretrain_god_inputs,
    output:
        f"{STAGE_A}/pretrain/fmri_encoder.pth",
    params:
        cfg=json.dumps({**config["stage_a"]["pretrain"], "model": config["stage_a"]["model"]}, sort_keys=True),
        god=lambda wildcards, input: f"--god {' '.join(input.god)}" if input.god else "",
        launch=launcher,
    threads: torch_threads("stage_a", "pretrain")
    resources:
        gpu=1,
    conda:
        "../envs/torch.yaml"
    log:
        f"{RESULTS}/logs/pretrain_mbm.log",
    shell:
        "{params.launch} pretrain-mbm --hcp {input.hcp} {params.god} --out {output} "
        "--config {params.cfg:q} --rule {rule} > {log} 2>&1"


rule finetune_mbm:
    priority: 45  # see PRIORITIES in Snakefile
    input:
        pretrained=rules.pretrain_mbm.output[0],
        npz=finetune_npz,
    output:
        f"{STAGE_A}/{{dataset}}/{{subject}}/fmri_encoder.pth",
    wildcard_constraints:
        dataset=DECODED_PATTERN,
    params:
        cfg=section("stage_a", "finetune"),
        launch=launcher,
    threads: torch_threads("stage_a", "finetune")
    resources:
        gpu=1,
    conda:
        "../envs/torch.yaml"
    log:
        f"{RESULTS}/logs/finetune_mbm/{{dataset}}_{{subject}}.log",
    shell:
        "{params.launch} finetune-mbm --pretrained {input.pretrained} --npz {input.npz} "
        "--dataset {wildcards.dataset} --out {output} --config {params.cfg:q} "
        "--rule {rule} --wildcard dataset={wildcards.dataset} --wildcard subject={wildcards.subject} > {log} 2>&1"
