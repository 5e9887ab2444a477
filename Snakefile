# mindvis: MinD-Vis from the raw HCP / GOD / BOLD5000 releases to a metrics table.
#
#   snakemake --cores all                              # embedded default (simulated data, tiny models)
#   snakemake --cores all --configfile config/god.yaml # real GOD release, paper-scale settings
#
# Every rule calls one `python -m mindvis <command>` and declares, as params,
# exactly the config section it depends on: Snakemake's params trigger then
# reruns that step (and what is downstream) only when that section changes.

from snakemake.utils import min_version, validate

# Snakemake 9.10-9.16 run more jobs at once than --cores allows (public Snakemake
# issue 3913, fixed in 9.17); pyproject.toml requires the same version.
min_version("9.17")


# PRIORITIES: among jobs ready at once, Snakemake starts the higher `priority:` first.
# Each rule's priority follows the longest chain of work still behind it, so the
# stimuli -> autoencoder -> label2img prior and the HCP -> stage A1 pre-training start
# first and the judge and the sampler comparison fill idle cores at the end: on
# 2 cores the DAG's wall time is then close to its total work / 2 (benchmarks/bench_embedded_dag.py).

configfile: "config/config.yaml"


validate(config, "workflow/schemas/config.schema.yaml", set_default=True)


include: "rules/common.smk"
include: "rules/simulate.smk"
include: "rules/preprocess.smk"
include: "rules/stage_a.smk"
include: "rules/stage_b.smk"
include: "rules/evaluate.smk"


rule all:
    input:
        all_targets(),
    default_target: True
