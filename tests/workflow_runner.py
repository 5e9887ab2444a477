"""Run the Snakemake DAG in a scratch copy of the workflow, and read its plans.

The workflow files (Snakefile, rules/, workflow/, config/, envs/) are copied
into a temporary folder, exactly as a user's checkout looks, and Snakemake runs
there with the micro config on top of the embedded default, so outputs never
touch the repository.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from timeouts import DAG_RUN

REPO_ROOT = Path(__file__).resolve().parent.parent
MICRO_CONFIG = Path(__file__).resolve().parent / "data" / "micro.yaml"
WORKFLOW_PARTS = ("Snakefile", "rules", "workflow", "config", "envs")


def copy_workflow(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for part in WORKFLOW_PARTS:
        src = REPO_ROOT / part
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dest / part)
    shutil.copy2(MICRO_CONFIG, dest / "micro.yaml")
    return dest


def snakemake(
    workdir: Path, *args: str, configfiles: tuple[str, ...] = (), timeout: int = DAG_RUN
) -> subprocess.CompletedProcess:
    """Run Snakemake in `workdir` with the micro config (plus `configfiles`, later ones win)."""
    env = dict(os.environ)
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{workdir}/results/mlflow.db"
    env.pop("MINDVIS_ARTIFACT_ROOT", None)
    cmd = [sys.executable, "-m", "snakemake", "--configfile", "micro.yaml", *configfiles, *args]
    return subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)


def planned_jobs(workdir: Path, *args: str, configfiles: tuple[str, ...] = ()) -> set[tuple[str, frozenset]]:
    """The (rule, wildcards) of every job a dry run would execute (rule `all` left out)."""
    proc = snakemake(workdir, "--dry-run", "--cores", "1", *args, configfiles=configfiles)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    jobs: set[tuple[str, frozenset]] = set()
    current: str | None = None
    wildcards: frozenset = frozenset()
    for line in proc.stdout.splitlines() + [""]:
        head = re.match(r"^(?:local)?rule (\w+):", line)
        if head or not line.strip():
            if current and current != "all":
                jobs.add((current, wildcards))
            current, wildcards = (head.group(1), frozenset()) if head else (None, frozenset())
            continue
        match = re.match(r"^\s+wildcards: (.*)$", line)
        if match and current:
            wildcards = frozenset(tuple(kv.split("=", 1)) for kv in match.group(1).split(", "))
    return jobs


def start_snakemake(
    workdir: Path, *args: str, configfiles: tuple[str, ...] = (), output: Path | None = None
) -> subprocess.Popen:
    """Start Snakemake like `snakemake()` but without waiting, in a new session (so the caller can end
    the whole process group it started, jobs included); stdout and stderr go to `output` (default
    workdir/snakemake.out), never to a pipe that could fill up while nobody reads it."""
    env = dict(os.environ)
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{workdir}/results/mlflow.db"
    env.pop("MINDVIS_ARTIFACT_ROOT", None)
    cmd = [sys.executable, "-m", "snakemake", "--configfile", "micro.yaml", *configfiles, *args]
    sink = open(output or workdir / "snakemake.out", "w")  # noqa: SIM115 (closed when the child has it)
    try:
        return subprocess.Popen(cmd, cwd=workdir, env=env, stdout=sink, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
    finally:
        sink.close()
