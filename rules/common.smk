# Shared helpers for every rule file: paths, config sections, tracking.

import json
import os
from pathlib import Path

# The source tree comes first on the path, so `--use-conda` environments (which
# list only third-party packages) and cluster jobs run this checkout's code.
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(Path(workflow.basedir) / "src"), os.environ.get("PYTHONPATH")) if p
)
# MLFLOW_TRACKING_URI in the environment wins; otherwise the config's URI is
# exported so every job (local or on a cluster) logs to the same store.
os.environ.setdefault("MLFLOW_TRACKING_URI", config["tracking"]["uri"])
os.environ.setdefault("MINDVIS_EXPERIMENT", config["tracking"]["experiment"])
# Empty artifact_root: results/mlartifacts for a local store, the server's own root for a server.
if config["tracking"].get("artifact_root"):
    os.environ.setdefault("MINDVIS_ARTIFACT_ROOT", config["tracking"]["artifact_root"])

RAW = config["paths"]["raw"]
PROCESSED = config["paths"]["processed"]
RESULTS = config["paths"]["results"]
STIMULI = f"{RAW}/stimuli"


def config_section(*keys):
    """config[keys[0]][keys[1]]..."""
    node = config
    for key in keys:
        node = node[key]
    return node


def section(*keys):
    """The JSON text of config[keys[0]][keys[1]]...: what a rule passes to --config.

    Declared as a rule param, so a change in this section (and only this one)
    reruns the rule.
    """
    return json.dumps(config_section(*keys), sort_keys=True)


def torch_threads(*keys):
    """Cores a job claims = the torch threads its config section asks for (`threads`;
    0 = torch's default, all cores). Claiming what the job uses lets Snakemake run
    another job beside a one-thread trainer instead of idling a core."""
    n = int(config_section(*keys).get("threads", 1))
    return n if n > 0 else (workflow.cores or 1)


def launcher(wildcards, resources):
    """`python -m mindvis`, or torchrun with one process per GPU when the job
    gets more than one (its `gpu` resource, e.g. from the SLURM profile) or
    `distributed.nproc_per_node` asks for more. Training code is DDP-aware."""
    n = max(int(getattr(resources, "gpu", 0) or 0), int(config["distributed"]["nproc_per_node"]))
    if n > 1:
        return f"torchrun --standalone --nproc-per-node {n} -m mindvis"
    return "python -m mindvis"


def subjects(dataset):
    return [str(s) for s in config[dataset]["subjects"]]


def enabled(dataset):
    return bool(config[dataset]["subjects"])


def simulated(dataset):
    return config[dataset]["source"] == "simulate"


# --- GOD paths (MinD-Vis's data/Kamitani/npz layout) -------------------------
GOD_NPZ_DIR = f"{PROCESSED}/Kamitani/npz"


def god_bdata(subject):
    return f"{config['god']['raw_dir']}/Subject{subject}.h5"


def all_targets():
    targets = []
    if enabled("god"):
        targets += expand(f"{GOD_NPZ_DIR}/sbj_{{subject}}.npz", subject=subjects("god"))
        targets.append(f"{GOD_NPZ_DIR}/images_256.npz")
    if enabled("bold5000"):
        for subject in subjects("bold5000"):
            targets += bold5000_outputs(subject)
    if enabled("hcp"):
        targets += expand(HCP_NPZ, subject=subjects("hcp"))
    if enabled("nsd"):
        targets += [nsd_npz(subject) for subject in subjects("nsd")]
    if config["stage_a"]["enabled"] and enabled("hcp"):
        for dataset in DECODED:
            if enabled(dataset):
                targets += expand(
                    f"{RESULTS}/stage_a/{dataset}/{{subject}}/fmri_encoder.pth", subject=subjects(dataset)
                )
    if config["stage_b"]["enabled"] and any(enabled(d) for d in DECODED):
        targets.append(f"{RESULTS}/report.html")
    return targets


# The datasets stage A2, stage B, generation and evaluation run on (HCP only pre-trains).
DECODED = ("god", "bold5000", "nsd")
DECODED_PATTERN = "|".join(DECODED)  # wildcard_constraints of the per-subject rules


# --- BOLD5000 paths (MinD-Vis's data/BOLD5000 layout) -------------------------
B5_DIR = f"{PROCESSED}/BOLD5000"
B5_ROI_NPY = (
    f"{B5_DIR}/BOLD5000_GLMsingle_ROI_betas/py/"
    "CSI{subject}_GLMbetas-TYPED-FITHRF-GLMDENOISE-RR_allses_{hemi}{roi}.npy"
)
B5_ROIS = ["EarlyVis", "LOC", "OPA", "PPA", "RSC"]


def bold5000_marker(subject):
    """The file a simulated subject writes last (its chronological image list)."""
    return f"{config['bold5000']['raw_dir']}/CSI{subject}_imgnames.txt"


def bold5000_raw_input(wildcards):
    # A simulated subject is complete when its imgnames file exists; a real
    # release is a folder searched recursively, so depend on the folder.
    if simulated("bold5000"):
        return bold5000_marker(wildcards.subject)
    return config["bold5000"]["raw_dir"]


def bold5000_outputs(subject):
    return [
        B5_ROI_NPY.format(subject=subject, hemi=hemi, roi=roi)
        for roi in config["bold5000"]["preprocess"]["rois"]
        for hemi in config["bold5000"]["preprocess"]["hemispheres"]
    ] + [f"{B5_DIR}/npz/CSI{subject}.npz"]


def section_with(keys, **extra):
    """Like `section`, with shared keys (e.g. the HCP run list) merged in."""
    node = config
    for key in keys:
        node = node[key]
    return json.dumps({**extra, **node}, sort_keys=True)


# --- NSD paths (the release tree under nsd.raw_dir; npz in the BOLD5000 layout) ----
NSD_NPZ_DIR = f"{PROCESSED}/NSD/npz"
NSD_DESIGN = "nsddata/experiments/nsd/nsd_expdesign.mat"


def nsd_npz(subject):
    """data/NSD/npz/subjNN.npz of subject N (the DAG's subject wildcard is the plain number)."""
    return f"{NSD_NPZ_DIR}/subj{int(subject):02d}.npz"


def nsd_truth(subject):
    """The simulator's per-subject ground truth: written once the subject's tree is complete."""
    return f"{config['nsd']['raw_dir']}/simulation_truth/subj{int(subject):02d}.npz"


def nsd_raw_input(wildcards):
    if simulated("nsd"):
        return [nsd_truth(wildcards.nn), f"{config['nsd']['raw_dir']}/{NSD_DESIGN}"]
    return config["nsd"]["raw_dir"]


# --- HCP paths (MinD-Vis's data/HCP/npz layout) --------------------------------
HCP_NPZ = f"{PROCESSED}/HCP/npz/{{subject}}/HCP_visual_voxel.npz"
HCP_CIFTI = "MNINonLinear/Results/{run}/{run}_Atlas_MSMAll_hp2000_clean.dtseries.nii"
HCP_VOLUME = "MNINonLinear/Results/{run}/{run}_hp2000_clean.nii.gz"


def hcp_subject_dir(subject):
    return f"{config['hcp']['raw_dir']}/{subject}"


def hcp_run_files(subject):
    """Every raw run file one subject's preprocessing reads (CIFTI or volumes)."""
    template = HCP_CIFTI if config["hcp"]["preprocess"].get("input", "cifti") == "cifti" else HCP_VOLUME
    return [f"{hcp_subject_dir(subject)}/{template.format(run=run)}" for run in config["hcp"]["runs"]]
