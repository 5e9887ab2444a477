# Raw releases -> MinD-Vis's own input files (one job per subject).


rule preprocess_god_images:
    priority: 50  # see PRIORITIES in Snakefile
    input:
        train_list=config["god"]["train_list"],
        test_list=config["god"]["test_list"],
        image_dir=config["god"]["image_dir"],
    output:
        images=f"{GOD_NPZ_DIR}/images_256.npz",
        train_labels=f"{GOD_NPZ_DIR}/imagenet_training_label.csv",
        test_labels=f"{GOD_NPZ_DIR}/imagenet_testing_label.csv",
    params:
        cfg=section("god", "images"),
        out_dir=lambda wildcards, output: Path(output.images).parent,
    conda:
        "../envs/data.yaml"
    log:
        f"{RESULTS}/logs/preprocess_god_images.log",
    shell:
        "python -m mindvis preprocess-god-images --train-list {input.train_list} "
        "--test-list {input.test_list} --image-dir {input.image_dir} --out-dir {params.out_dir} "
        "--config {params.cfg:q} --rule {rule} --wildcard dataset=god > {log} 2>&1"


rule preprocess_god:
    priority: 50  # see PRIORITIES in Snakefile
    input:
        bdata=god_bdata("{subject}"),
        train_list=config["god"]["train_list"],
        test_list=config["god"]["test_list"],
    output:
        f"{GOD_NPZ_DIR}/sbj_{{subject}}.npz",
    params:
        cfg=section("god", "preprocess"),
    conda:
        "../envs/data.yaml"
    log:
        f"{RESULTS}/logs/preprocess_god/{{subject}}.log",
    shell:
        "python -m mindvis preprocess-god --bdata {input.bdata} --train-list {input.train_list} "
        "--test-list {input.test_list} --subject {wildcards.subject} --out {output} "
        "--config {params.cfg:q} "
        "--rule {rule} --wildcard dataset=god --wildcard subject={wildcards.subject} > {log} 2>&1"


rule preprocess_bold5000:
    priority: 50  # see PRIORITIES in Snakefile
    input:
        bold5000_raw_input,
    output:
        roi_npy=expand(
            B5_ROI_NPY,
            roi=config["bold5000"]["preprocess"]["rois"],
            hemi=config["bold5000"]["preprocess"]["hemispheres"],
            allow_missing=True,
        ),
        npz=f"{B5_DIR}/npz/CSI{{subject}}.npz",
    params:
        cfg=section("bold5000", "preprocess"),
        raw_dir=config["bold5000"]["raw_dir"],
        out_dir=lambda wildcards, output: Path(output.npz).parent.parent,  # the BOLD5000 root above npz/
    conda:
        "../envs/data.yaml"
    log:
        f"{RESULTS}/logs/preprocess_bold5000/{{subject}}.log",
    shell:
        "python -m mindvis preprocess-bold5000 --raw-dir {params.raw_dir} --subject {wildcards.subject} "
        "--out-dir {params.out_dir} --config {params.cfg:q} "
        "--rule {rule} --wildcard dataset=bold5000 --wildcard subject={wildcards.subject} > {log} 2>&1"


rule preprocess_hcp:
    priority: 80  # see PRIORITIES in Snakefile
    input:
        lambda wildcards: hcp_run_files(wildcards.subject),
    output:
        HCP_NPZ,
    params:
        # a function, so Snakemake does not expand the {run} templates inside
        cfg=lambda wildcards: section_with(("hcp", "preprocess"), runs=config["hcp"]["runs"]),
        subject_dir=lambda wildcards: hcp_subject_dir(wildcards.subject),
    conda:
        "../envs/data.yaml"
    log:
        f"{RESULTS}/logs/preprocess_hcp/{{subject}}.log",
    shell:
        "python -m mindvis preprocess-hcp --subject-dir {params.subject_dir} --subject {wildcards.subject} "
        "--out {output} --config {params.cfg:q} "
        "--rule {rule} --wildcard dataset=hcp --wildcard subject={wildcards.subject} > {log} 2>&1"


rule preprocess_nsd:
    priority: 50  # see PRIORITIES in Snakefile
    input:
        nsd_raw_input,
    output:
        f"{NSD_NPZ_DIR}/subj{{nn}}.npz",
    wildcard_constraints:
        nn=r"\d\d",
    params:
        cfg=section("nsd", "preprocess"),
        root=config["nsd"]["raw_dir"],
        subject=lambda wildcards: int(wildcards.nn),
    conda:
        "../envs/data.yaml"
    log:
        f"{RESULTS}/logs/preprocess_nsd/subj{{nn}}.log",
    shell:
        "python -m mindvis preprocess-nsd --root {params.root} --subject {params.subject} --out {output} "
        "--config {params.cfg:q} "
        "--rule {rule} --wildcard dataset=nsd --wildcard subject={params.subject} > {log} 2>&1"
