"""Dry-run time of the whole DAG at paper scale (issue 7 §6: at most 5 s).

Builds, in a temporary folder, placeholder raw releases in the layout the rules
declare as inputs (empty files: a dry run only checks that they exist and
compares modification times):
- HCP: <raw>/hcp/<subject>/MNINonLinear/Results/<run>/<run>_Atlas_MSMAll_hp2000_clean.dtseries.nii
  for 1205 subjects (ids 100206, 100207, ...) x 4 runs (REST1/REST2, LR/RL);
- GOD: Subject1.h5 .. Subject5.h5, imageID_training.csv, imageID_test.csv,
  images/{training,test}/;
- BOLD5000: the release folder (the rule depends on the folder itself);
- the CompVis cin256-v2 checkpoint and the judge weights (stage B / evaluation);
copies the workflow (Snakefile, rules/, workflow/, config/, envs/) beside them,
writes a config override (source: release everywhere, paper presets), and
times `python -m snakemake -n --cores 1 --quiet`: one warm-up, then the median
of `--repeats` runs. The time includes interpreter start and Snakemake's own
imports (~1 s), as a user typing the command sees it.

Usage:
  python benchmarks/bench_dag_scale.py                  # 1205 HCP subjects, 5 GOD, 4 BOLD5000
  python benchmarks/bench_dag_scale.py --hcp 60 --repeats 1
  python benchmarks/bench_dag_scale.py --profile prof.out   # cProfile of one more dry run
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
WORKFLOW_PARTS = ("Snakefile", "rules", "workflow", "config", "envs")
HCP_RUNS = ("rfMRI_REST1_LR", "rfMRI_REST1_RL", "rfMRI_REST2_LR", "rfMRI_REST2_RL")
HCP_CIFTI = "MNINonLinear/Results/{run}/{run}_Atlas_MSMAll_hp2000_clean.dtseries.nii"
FIRST_HCP_ID = 100206  # the first subject id of the S1200 release
GOAL_SECONDS = 5.0
CONFIG_NAME = "scale.yaml"


def hcp_subject_ids(n: int) -> list[str]:
    """n distinct six-digit ids in the release's style (real ids are not contiguous; the DAG does not care)."""
    return [str(FIRST_HCP_ID + i) for i in range(n)]


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def expected_jobs(n_hcp: int, n_god: int, n_bold5000: int, samplers: bool = True) -> Counter:
    """Jobs per rule the dry run must plan on a fresh tree (nothing processed yet)."""
    n_eval = n_god + n_bold5000
    jobs = Counter(
        preprocess_hcp=n_hcp,
        preprocess_god=n_god,
        preprocess_god_images=1,
        preprocess_bold5000=n_bold5000,
        pretrain_mbm=1,
        finetune_mbm=n_eval,
        finetune_ldm=n_eval,
        generate=n_eval,
        generate_controls=n_eval,  # evaluate.controls (default true): shuffled fMRI, prior only, train retrieval
        evaluate=n_eval,
        report=1,
        all=1,
    )
    if samplers:
        jobs["compare_samplers"] = 1
    return jobs


def build_tree(root: Path, n_hcp: int = 1205, n_god: int = 5, n_bold5000: int = 4, samplers: bool = True) -> Path:
    """Placeholder releases + a copy of the workflow + `scale.yaml` under `root`; returns the workdir."""
    root.mkdir(parents=True, exist_ok=True)
    raw = root / "release"
    hcp_ids = hcp_subject_ids(n_hcp)
    for subject in hcp_ids:
        for run in HCP_RUNS:
            _touch(raw / "hcp" / subject / HCP_CIFTI.format(run=run))
    god = raw / "god"
    for n in range(1, n_god + 1):
        _touch(god / f"Subject{n}.h5")
    _touch(god / "imageID_training.csv")
    _touch(god / "imageID_test.csv")
    for split in ("training", "test"):
        (god / "images" / split).mkdir(parents=True, exist_ok=True)
    bold5000 = raw / "bold5000"
    for n in range(1, n_bold5000 + 1):  # a few files in the release's style; the rule reads the folder
        _touch(bold5000 / f"CSI{n}" / f"CSI{n}_imgnames.txt")
    checkpoint = raw / "models" / "cin256-v2" / "model.ckpt"
    judge = raw / "models" / "vit_h_14_swag.pth"
    _touch(checkpoint)
    _touch(judge)

    for part in WORKFLOW_PARTS:
        src = REPO_ROOT / part
        if src.is_dir():
            shutil.copytree(src, root / part, dirs_exist_ok=True)  # --keep may reuse a folder
        else:
            shutil.copy2(src, root / part)

    override = {
        "paths": {"raw": str(raw), "processed": "data", "results": "results"},
        "tracking": {"uri": f"sqlite:///{root}/results/mlflow.db"},
        "god": {
            "source": "release",
            "raw_dir": str(god),
            "train_list": str(god / "imageID_training.csv"),
            "test_list": str(god / "imageID_test.csv"),
            "image_dir": str(god / "images"),
            "subjects": list(range(1, n_god + 1)),
        },
        "bold5000": {
            "source": "release",
            "raw_dir": str(bold5000),
            "subjects": list(range(1, n_bold5000 + 1)),
            "preprocess": {"compress_npz": True},
        },
        "hcp": {
            "source": "release",
            "raw_dir": str(raw / "hcp"),
            "subjects": hcp_ids,
            "runs": list(HCP_RUNS),
            "preprocess": {"input": "cifti"},
        },
        "stage_a": {"model": {"preset": "paper"}},
        "stage_b": {"prior": {"source": "compvis", "checkpoint": str(checkpoint)}, "model": {"preset": "paper"}},
        "evaluate": {"protocol": "paper", "judge": "vit_h_14_swag", "judge_weights": str(judge)},
        "report": {"samplers": {"enabled": samplers, "dataset": "god", "subject": 1}},
    }
    # JSON is YAML: no YAML writer needed
    (root / CONFIG_NAME).write_text(json.dumps(override, indent=1))
    return root


def dry_run_command(quiet: tuple[str, ...] = ()) -> list[str]:
    """The dry run; bare `--quiet` (= all) also hides the job stats table, `--quiet rules` keeps it."""
    return [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--quiet", *quiet, "--configfile", CONFIG_NAME]


def _env(workdir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{workdir}/results/mlflow.db"
    env.pop("MINDVIS_ARTIFACT_ROOT", None)
    return env


def parse_job_stats(text: str) -> Counter:
    """The 'Job stats' table of a dry run: rule -> count (the 'total' row left out)."""
    counts: Counter = Counter()
    in_table = False
    for line in text.splitlines():
        if line.startswith("Job stats"):
            in_table = True
            continue
        if not in_table:
            continue
        match = re.match(r"^(\w+)\s+(\d+)\s*$", line)
        if match:
            if match.group(1) == "total":
                break
            counts[match.group(1)] = int(match.group(2))
    return counts


def dry_run(workdir: Path, count_jobs: bool = False, timeout: int = 300) -> tuple[float, Counter]:
    """One timed dry run: (seconds, jobs per rule; empty unless `count_jobs`, which keeps the job stats
    table in the output). Raises with Snakemake's output when it fails."""
    start = time.perf_counter()
    proc = subprocess.run(dry_run_command(("rules",) if count_jobs else ()), cwd=workdir, env=_env(workdir), capture_output=True, text=True,
                          timeout=timeout)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"dry run failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return seconds, parse_job_stats(proc.stdout + proc.stderr)


def measure(workdir: Path, repeats: int = 3) -> tuple[float, list[float], Counter]:
    """One warm-up (page cache, .pyc files) that also counts the jobs, then the median of `repeats`
    dry runs with bare `--quiet`."""
    _, jobs = dry_run(workdir, count_jobs=True)
    times = [dry_run(workdir)[0] for _ in range(repeats)]
    return statistics.median(times), times, jobs


def profile(workdir: Path, out: Path) -> None:
    """cProfile of one dry run, written to `out` (read it with pstats)."""
    cmd = [sys.executable, "-m", "cProfile", "-o", str(out.resolve()), "-m", "snakemake",
           *dry_run_command()[3:]]
    subprocess.run(cmd, cwd=workdir, env=_env(workdir), check=True, capture_output=True, text=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hcp", type=int, default=1205, help="HCP subjects (4 runs each)")
    parser.add_argument("--god", type=int, default=5, help="GOD subjects")
    parser.add_argument("--bold5000", type=int, default=4, help="BOLD5000 subjects")
    parser.add_argument("--repeats", type=int, default=3, help="timed dry runs after the warm-up")
    parser.add_argument("--profile", type=Path, default=None, help="also write a cProfile of one dry run here")
    parser.add_argument("--keep", type=Path, default=None, help="build the tree here and keep it")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="mindvis-dag-scale-") as tmp:
        root = args.keep or Path(tmp)
        t0 = time.perf_counter()
        workdir = build_tree(root, args.hcp, args.god, args.bold5000)
        built = time.perf_counter() - t0
        median, times, jobs = measure(workdir, args.repeats)
        expected = expected_jobs(args.hcp, args.god, args.bold5000)
        print(f"tree: {args.hcp} HCP subjects x {len(HCP_RUNS)} runs, {args.god} GOD, {args.bold5000} BOLD5000 "
              f"(built in {built:.1f} s)")
        print(f"dry run: median {median:.2f} s over {args.repeats} ({', '.join(f'{t:.2f}' for t in times)})")
        print(f"jobs: {sum(jobs.values())} ({', '.join(f'{r} {n}' for r, n in sorted(jobs.items()))})")
        print(f"ratio to the {GOAL_SECONDS:.0f} s goal: {median / GOAL_SECONDS:.2f}"
              f" ({'PASS' if median <= GOAL_SECONDS else 'FAIL'})")
        if jobs != expected:
            print(f"job counts differ from the expected {dict(sorted(expected.items()))}")
        if args.profile:
            profile(workdir, args.profile)
            print(f"profile written to {args.profile}")
        return 0 if median <= GOAL_SECONDS and jobs == expected else 1


if __name__ == "__main__":
    sys.exit(main())
