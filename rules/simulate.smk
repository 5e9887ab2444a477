# Simulated raw releases for the embedded default: the same file formats as the
# real data, so the preprocessing that runs in the demo is the one that runs on
# real files. With `source: release` these rules are absent and the raw files
# must exist where the config points.


rule make_stimuli:
    priority: 90  # see PRIORITIES in Snakefile
    output:
        npz=f"{STIMULI}/stimuli.npz",
        train_list=f"{STIMULI}/imageID_training.csv",
        test_list=f"{STIMULI}/imageID_test.csv",
        images=directory(f"{STIMULI}/images"),
    params:
        cfg=section("stimuli"),
        out_dir=lambda wildcards, output: Path(output.npz).parent,
    conda:
        "../envs/data.yaml"
    log:
        f"{RESULTS}/logs/make_stimuli.log",
    shell:
        "python -m mindvis make-stimuli --out-dir {params.out_dir} --config {params.cfg:q} "
        "--rule {rule} > {log} 2>&1"


if simulated("god"):

    rule simulate_god:
        priority: 50  # see PRIORITIES in Snakefile
        input:
            stimuli=rules.make_stimuli.output.npz,
        output:
            god_bdata("{subject}"),
        params:
            cfg=section("god", "simulate"),
        conda:
            "../envs/data.yaml"
        log:
            f"{RESULTS}/logs/simulate_god/{{subject}}.log",
        shell:
            "python -m mindvis simulate-god --stimuli {input.stimuli} --subject {wildcards.subject} "
            "--out {output} --config {params.cfg:q} "
            "--rule {rule} --wildcard dataset=god --wildcard subject={wildcards.subject} > {log} 2>&1"


if simulated("bold5000"):

    rule simulate_bold5000:
        priority: 50  # see PRIORITIES in Snakefile
        input:
            stimuli=rules.make_stimuli.output.npz,
        output:
            # written last by the simulator: the subject's tree is complete
            bold5000_marker("{subject}"),
        params:
            cfg=section("bold5000", "simulate"),
            out_dir=config["bold5000"]["raw_dir"],
        conda:
            "../envs/data.yaml"
        log:
            f"{RESULTS}/logs/simulate_bold5000/{{subject}}.log",
        shell:
            "python -m mindvis simulate-bold5000 --stimuli {input.stimuli} --subject {wildcards.subject} "
            "--out-dir {params.out_dir} --config {params.cfg:q} "
            "--rule {rule} --wildcard dataset=bold5000 --wildcard subject={wildcards.subject} > {log} 2>&1"


if simulated("hcp"):

    rule simulate_hcp:
        priority: 80  # see PRIORITIES in Snakefile
        output:
            [f"{hcp_subject_dir('{subject}')}/{HCP_CIFTI.format(run=run)}" for run in config["hcp"]["runs"]],
        params:
            cfg=section_with(("hcp", "simulate"), runs=config["hcp"]["runs"]),
            out_dir=config["hcp"]["raw_dir"],
        conda:
            "../envs/data.yaml"
        log:
            f"{RESULTS}/logs/simulate_hcp/{{subject}}.log",
        shell:
            "python -m mindvis simulate-hcp --subject {wildcards.subject} --out-dir {params.out_dir} "
            "--config {params.cfg:q} "
            "--rule {rule} --wildcard dataset=hcp --wildcard subject={wildcards.subject} > {log} 2>&1"


if simulated("nsd"):

    rule simulate_nsd:
        # One job writes the shared files (design, imgBrick, stim info) and every configured subject.
        priority: 50  # see PRIORITIES in Snakefile
        input:
            stimuli=rules.make_stimuli.output.npz,
        output:
            design=f"{config['nsd']['raw_dir']}/{NSD_DESIGN}",
            truth=[nsd_truth(s) for s in subjects("nsd")],
        params:
            cfg=section("nsd", "simulate"),
            root=config["nsd"]["raw_dir"],
            subjects=" ".join(str(int(s)) for s in subjects("nsd")),
        conda:
            "../envs/data.yaml"
        log:
            f"{RESULTS}/logs/simulate_nsd.log",
        shell:
            "python -m mindvis simulate-nsd --root {params.root} --stimuli {input.stimuli} "
            "--subjects {params.subjects} --config {params.cfg:q} --rule {rule} --wildcard dataset=nsd > {log} 2>&1"
