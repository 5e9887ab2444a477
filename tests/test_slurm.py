"""The SLURM profile (workflow/profiles/slurm) on a real single-node SLURM cluster.

The cluster is Debian's munge + slurmctld + slurmd, started on 127.0.0.1 by
scripts/slurm/start_cluster.sh (with one fake GPU, so the profile's GPU
requests are scheduled as on a GPU cluster; the jobs run on the CPU) and
stopped by scripts/slurm/stop_cluster.sh. Snakemake submits with the executor
plugin through `--profile workflow/profiles/slurm --profile tests/data/slurm_ci.yaml`
(the CI override: test partition, small memory and runtime, squeue status).

Only the data and stage A part of the micro DAG runs (TARGETS: the GOD
preprocessing outputs, the HCP npz and the pre-trained encoder, 9 jobs), so
the test does not depend on the later stages; each wave of SLURM jobs costs
~20 s of status polling. The three Snakemake runs (SLURM, local reference,
deliberately failing) run at the same time, because the SLURM runs mostly
wait: ~2 minutes in all on 2 busy cores.

Needs Linux, root, the SLURM/MUNGE binaries and snakemake-executor-plugin-slurm;
skipped with the reason otherwise. The profile-structure test needs none of it.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import timeouts
from workflow_runner import REPO_ROOT, copy_workflow, snakemake

SCRIPTS = REPO_ROOT / "scripts" / "slurm"
PROFILE = REPO_ROOT / "workflow" / "profiles" / "slurm" / "config.yaml"
CI_PROFILE = Path(__file__).resolve().parent / "data" / "slurm_ci.yaml"
PARTITION = "mindvis"  # the partition named in tests/data/slurm_ci.yaml
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")

TARGETS = (
    "data/Kamitani/npz/sbj_1.npz",
    "data/Kamitani/npz/sbj_2.npz",
    "data/Kamitani/npz/images_256.npz",
    "data/HCP/npz/sim01/HCP_visual_voxel.npz",
    "results/stage_a/pretrain/fmri_encoder.pth",
)
# The jobs that build TARGETS from nothing: rule -> how many.
EXPECTED_JOBS = {
    "make_stimuli": 1,
    "simulate_god": 2,
    "simulate_hcp": 1,
    "preprocess_god": 2,
    "preprocess_god_images": 1,
    "preprocess_hcp": 1,
    "pretrain_mbm": 1,
}
# The rules the profile must give resources to (stage B and evaluation included).
HEAVY_RULES = {
    "pretrain_mbm", "finetune_mbm", "train_autoencoder", "train_label2img", "finetune_ldm",
    "generate", "generate_controls", "generate_seed", "train_judge", "evaluate", "compare_samplers",
}
CI_ONLY_KEYS = {
    "slurm-status-command", "slurm-init-seconds-before-status-checks", "slurm-no-account",
    "slurm-keep-successful-logs", "retries",
}
REQUIRED_PROGRAMS = (
    "munged", "mungekey", "munge", "unmunge", "slurmctld", "slurmd",
    "sinfo", "scontrol", "squeue", "scancel", "sbatch", "srun", "setpriv", "setsid",
)
RUN_TIMEOUT = timeouts.SNAKEMAKE_JOB  # one Snakemake run


def _cluster_unavailable() -> str | None:
    """Why a SLURM test cluster cannot be started here (None: it can)."""
    if not sys.platform.startswith("linux"):
        return f"the SLURM test cluster needs Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return "the SLURM test cluster needs root (slurmd, and munged started as the munge user)"
    missing = [p for p in REQUIRED_PROGRAMS if shutil.which(p) is None]
    if missing:
        return f"missing {', '.join(missing)}: apt-get install -y munge slurmctld slurmd slurm-client"
    if find_spec("snakemake_executor_plugin_slurm") is None:
        return "snakemake-executor-plugin-slurm is not installed: pip install snakemake-executor-plugin-slurm"
    try:
        import pwd

        pwd.getpwnam("munge")
    except KeyError:
        return "no 'munge' user (Debian's munge package creates it)"
    if SYSTEM_CONF.exists() and not SYSTEM_CONF.is_symlink():
        return f"{SYSTEM_CONF} belongs to a real SLURM installation; the test cluster would shadow it"
    return None


_WHY_NOT = _cluster_unavailable()


def on_cluster(test):
    """Marks of a test that needs the real SLURM test cluster."""
    for mark in (pytest.mark.slurm, pytest.mark.integration, pytest.mark.slow,
                 pytest.mark.skipif(_WHY_NOT is not None, reason=str(_WHY_NOT))):
        test = mark(test)
    return test


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _squeue_snapshot() -> dict[str, dict[str, str]]:
    """Every job slurmctld still knows (finished ones stay MinJobAge = 300 s)."""
    fields = ("id", "name", "state", "comment", "alloc", "per_job")
    proc = subprocess.run(
        ["squeue", "--states=all", "--noheader", "-O", "JobID:|,Name:|,State:|,Comment:|,tres-alloc:|,tres-per-job:|"],
        capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    jobs = {}
    for line in proc.stdout.splitlines():
        values = [v.strip() for v in line.split("|")]
        if len(values) >= len(fields):
            job = dict(zip(fields, values))
            jobs[job["id"]] = job
    return jobs


def _submissions(output: str) -> list[tuple[str, str, Path]]:
    """(rule, SLURM job id, SLURM log) of every sbatch submission Snakemake reported."""
    found = re.findall(r"has been submitted with SLURM jobid (\d+) \(log: (\S+)\)\.", output)
    # the plugin writes each job's log to .snakemake/slurm_logs/rule_<rule>/[<wildcards>/]<id>.log
    return [(re.search(r"/rule_(\w+?)/", log).group(1), job_id, Path(log)) for job_id, log in found]


# --- the profile itself (no cluster needed) -----------------------------------


def _gpu_rules_in_workflow() -> set[str]:
    """Rules in rules/*.smk whose own resources ask for a GPU."""
    names = set()
    for smk in (REPO_ROOT / "rules").glob("*.smk"):
        for name, body in re.findall(r"^\s*rule (\w+):\n(.*?)(?=^\s*rule \w+:|\Z)", smk.read_text(), re.S | re.M):
            if re.search(r"^\s+gpus?\s*=\s*[1-9]", body, re.M):
                names.add(name)
    return names


def test_profile_gives_every_heavy_rule_resources_and_ci_override_mirrors_it():
    profile = yaml.safe_load(PROFILE.read_text())
    ci = yaml.safe_load(CI_PROFILE.read_text())
    assert profile["executor"] == "slurm"
    assert {"jobs", "retries", "latency-wait", "rerun-incomplete"} <= set(profile)
    assert {"slurm_partition", "slurm_account", "mem_mb", "runtime", "cpus_per_task"} <= set(profile["default-resources"])
    per_rule = profile["set-resources"]
    assert set(per_rule) == HEAVY_RULES
    for rule, resources in per_rule.items():
        # training and generation get a GPU through the plugin's `gpu` resource (sbatch --gpus)
        assert resources.get("gpu", 0) >= 1, rule
        assert {"mem_mb", "runtime", "cpus_per_task"} <= set(resources), rule
    # a rule of the workflow that asks for a GPU must not fall back to the CPU-only defaults
    assert _gpu_rules_in_workflow() <= set(per_rule)
    # The override replaces whole blocks: it must repeat every rule and resource name,
    # and change nothing else but the test-cluster settings.
    assert set(ci) - {"default-resources", "set-resources"} <= CI_ONLY_KEYS
    assert set(ci["default-resources"]) == set(profile["default-resources"])
    assert {r: set(v) for r, v in ci["set-resources"].items()} == {r: set(v) for r, v in per_rule.items()}
    assert ci["slurm-status-command"] == "squeue"
    assert ci["default-resources"]["slurm_partition"] == PARTITION


@pytest.mark.parametrize(
    "args, message",
    [(["--gpus", "two"], "--gpus must be a whole number"), (["--colour"], "unknown option --colour")],
)
def test_start_script_rejects_bad_arguments_before_starting_anything(tmp_path, args, message):
    proc = subprocess.run(
        ["bash", str(SCRIPTS / "start_cluster.sh"), *args, str(tmp_path / "state")],
        capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode == 1
    assert message in proc.stderr
    assert not (tmp_path / "state").exists()


# --- on the real cluster -------------------------------------------------------


@pytest.fixture(scope="module")
def cluster():
    """A running single-node cluster; stopped (by its PID files) even when a test fails."""
    # Not under pytest's tmp folder: munged (as the munge user) must reach its socket folder.
    state = Path(tempfile.mkdtemp(prefix="mindvis-slurm-"))
    env = {
        **os.environ,
        "MINDVIS_SLURMCTLD_PORT": str(_free_port()),
        "MINDVIS_SLURMD_PORT": str(_free_port()),
    }
    try:
        start = subprocess.run(
            [str(SCRIPTS / "start_cluster.sh"), "--gpus", "1", "--partition", PARTITION, "--timeout", "60", str(state)],
            capture_output=True, text=True, timeout=180, env=env,
        )
        assert start.returncode == 0, start.stdout + start.stderr
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("SLURM_CONF", str(state / "etc" / "slurm.conf"))
            yield state
    finally:
        subprocess.run([str(SCRIPTS / "stop_cluster.sh"), str(state)], capture_output=True, text=True, timeout=180)
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="module")
def runs(cluster, tmp_path_factory):
    """The three Snakemake runs, at the same time, and slurmctld's job table right after."""
    slurm_dir = copy_workflow(tmp_path_factory.mktemp("slurm_run"))
    local_dir = copy_workflow(tmp_path_factory.mktemp("local_run"))
    failing_dir = copy_workflow(tmp_path_factory.mktemp("failing_run"))
    # A broken input for the first job: the stimulus folder does not exist.
    (failing_dir / "broken.yaml").write_text("stimuli:\n  source: folder\n  folder: /nonexistent/mindvis-slurm-test\n")
    profiles = ("--profile", "workflow/profiles/slurm", "--profile", str(CI_PROFILE))

    def timed(function, *args, **kwargs):
        began = time.perf_counter()
        proc = function(*args, **kwargs)
        return proc, time.perf_counter() - began

    # slurmctld forgets a finished job after MinJobAge (300 s): poll its job table
    # during the runs, so a slow machine cannot lose the early jobs' final states.
    jobs: dict[str, dict[str, str]] = {}
    done = threading.Event()

    def poll_jobs():
        while not done.wait(5):
            jobs.update(_squeue_snapshot())

    with ThreadPoolExecutor(max_workers=4) as pool:
        poller = pool.submit(poll_jobs)
        slurm = pool.submit(timed, snakemake, slurm_dir, *profiles, *TARGETS, timeout=RUN_TIMEOUT)
        local = pool.submit(timed, snakemake, local_dir, "--cores", "2", *TARGETS, timeout=RUN_TIMEOUT)
        failing = pool.submit(
            timed, snakemake, failing_dir, *profiles, "data/raw/stimuli/stimuli.npz",
            configfiles=("broken.yaml",), timeout=RUN_TIMEOUT,
        )
        try:
            results = {"slurm": slurm.result(), "local": local.result(), "failing": failing.result()}
        finally:
            done.set()
        poller.result()
    jobs.update(_squeue_snapshot())
    for name, (_, seconds) in results.items():
        print(f"{name} run: {seconds:.1f} s")
    return {
        "dirs": {"slurm": slurm_dir, "local": local_dir, "failing": failing_dir},
        "procs": {name: proc for name, (proc, _) in results.items()},
        "jobs": jobs,
    }


def _log_tail(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout[-3000:] + proc.stderr[-5000:]


@on_cluster
def test_slurm_run_outputs_equal_local_run_outputs(runs):
    slurm_proc, local_proc = runs["procs"]["slurm"], runs["procs"]["local"]
    assert local_proc.returncode == 0, _log_tail(local_proc)
    assert slurm_proc.returncode == 0, _log_tail(slurm_proc)
    slurm_dir, local_dir = runs["dirs"]["slurm"], runs["dirs"]["local"]
    for target in TARGETS[:4]:
        with np.load(slurm_dir / target) as ours, np.load(local_dir / target) as reference:
            assert sorted(ours.files) == sorted(reference.files), target
            for key in reference.files:
                assert ours[key].dtype == reference[key].dtype, (target, key)
                np.testing.assert_array_equal(ours[key], reference[key], err_msg=f"{target}:{key}")
    for labels in ("imagenet_training_label.csv", "imagenet_testing_label.csv"):
        path = f"data/Kamitani/npz/{labels}"
        assert (slurm_dir / path).read_bytes() == (local_dir / path).read_bytes()
    # Same seed, one torch thread, CPU: pre-training is bitwise reproducible.
    from mindvis.checkpoints.mindvis_encoder import load_mbm_checkpoint

    ours = load_mbm_checkpoint(slurm_dir / TARGETS[4]).model.state_dict()
    reference = load_mbm_checkpoint(local_dir / TARGETS[4]).model.state_dict()
    assert ours.keys() == reference.keys()
    for key, tensor in reference.items():
        assert torch.equal(ours[key], tensor), key


@on_cluster
def test_every_job_ran_as_a_slurm_job_with_the_profile_resources(runs):
    proc = runs["procs"]["slurm"]
    assert proc.returncode == 0, _log_tail(proc)
    output = proc.stdout + proc.stderr
    submissions = _submissions(output)
    rules = [rule for rule, _, _ in submissions]
    assert {rule: rules.count(rule) for rule in set(rules)} == EXPECTED_JOBS
    run_id = re.search(r"SLURM run ID: (\S+)", output).group(1)
    assert run_id.startswith("mindvis_")  # slurm-jobname-prefix of the real profile is in force
    for rule, job_id, log in submissions:
        job = runs["jobs"][job_id]
        assert job["state"] == "COMPLETED", (rule, job)
        assert job["name"] == run_id
        assert job["comment"].startswith(f"rule_{rule}")
        if rule == "pretrain_mbm":
            # set-resources of the override: 2 CPUs, 2000 MB, one GPU through --gpus
            assert "cpu=2" in job["alloc"] and "mem=2000M" in job["alloc"], job
            assert re.fullmatch(r"gres[:/]gpu:1", job["per_job"]), job
        else:
            # default-resources: cpus_per_task = threads (1), mem_mb = 1000 * attempt
            assert "cpu=1" in job["alloc"] and "mem=1000M" in job["alloc"], job
            assert "gpu" not in job["per_job"], job
        # SLURM wrote the job's output (kept by slurm-keep-successful-logs): inside
        # the batch job, the plugin's job-step executor ran exactly this rule.
        text = log.read_text()
        assert "--executor slurm-jobstep" in text and f"Finished jobid: 0 (Rule: {rule})" in text, log
    assert not (runs["dirs"]["local"] / ".snakemake" / "slurm_logs").exists()


@on_cluster
def test_failing_job_is_reported_failed_and_retried_with_more_memory(runs):
    proc = runs["procs"]["failing"]
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, _log_tail(proc)
    assert "Error in rule make_stimuli" in output
    failed = re.findall(r"SLURM-job '(\d+)' failed, SLURM status is: 'FAILED'", output)
    # the first attempt and the one retry of tests/data/slurm_ci.yaml, each a new SLURM job
    assert len(failed) == 2 and len(set(failed)) == 2, _log_tail(proc)
    memory = []
    for job_id in failed:
        job = runs["jobs"][job_id]
        assert job["state"] == "FAILED" and job["comment"] == "rule_make_stimuli", job
        memory.append(re.search(r"mem=(\d+)M", job["alloc"]).group(1))
        assert (runs["dirs"]["failing"] / f".snakemake/slurm_logs/rule_make_stimuli/{job_id}.log").is_file()
    assert memory == ["1000", "2000"]  # mem_mb: 1000 * attempt
    # the rule's own log names the broken input; nothing that looks like an output is left
    rule_log = (runs["dirs"]["failing"] / "results/logs/make_stimuli.log").read_text()
    assert "/nonexistent/mindvis-slurm-test: stimulus folder not found" in rule_log
    assert not (runs["dirs"]["failing"] / "data/raw/stimuli/stimuli.npz").exists()


@on_cluster
def test_second_start_refuses_and_leaves_the_running_cluster_alone(cluster):
    other = Path(tempfile.mkdtemp(prefix="mindvis-slurm-other-"))
    try:
        env = {**os.environ, "MINDVIS_SLURMCTLD_PORT": str(_free_port()), "MINDVIS_SLURMD_PORT": str(_free_port())}
        proc = subprocess.run(
            [str(SCRIPTS / "start_cluster.sh"), "--timeout", "20", str(other)],
            capture_output=True, text=True, timeout=120, env=env,
        )
        assert proc.returncode == 1
        assert f"another test cluster runs under {cluster}" in proc.stderr
        # its own munged was stopped by its own PID file; the first cluster still works
        assert not list((other / "pids").glob("*.pid"))
        for name in ("munged", "slurmctld", "slurmd"):
            pid = (cluster / "pids" / f"{name}.pid").read_text().strip()
            assert Path(f"/proc/{pid}/comm").read_text().strip() == name
        state = subprocess.run(["sinfo", "--noheader", "--format=%T"], capture_output=True, text=True, timeout=30)
        assert state.stdout.split() == ["idle"]
        assert os.readlink(SYSTEM_CONF) == str(cluster / "etc" / "slurm.conf")
    finally:
        subprocess.run([str(SCRIPTS / "stop_cluster.sh"), str(other)], capture_output=True, timeout=120)
        shutil.rmtree(other, ignore_errors=True)


@on_cluster
def test_stop_script_stops_its_daemons_and_can_run_twice(cluster):
    # Runs last in this module: the cluster fixture's own stop is then a no-op.
    pids = {name: (cluster / "pids" / f"{name}.pid").read_text().strip() for name in ("munged", "slurmctld", "slurmd")}
    first = subprocess.run([str(SCRIPTS / "stop_cluster.sh"), str(cluster)], capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    for name, pid in pids.items():
        assert f"stopped {name} (pid {pid})" in first.stdout
        assert not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/comm").read_text().strip() != name
    assert not SYSTEM_CONF.is_symlink()
    second = subprocess.run([str(SCRIPTS / "stop_cluster.sh"), str(cluster)], capture_output=True, text=True, timeout=120)
    assert second.returncode == 0 and "stopped" not in second.stdout

