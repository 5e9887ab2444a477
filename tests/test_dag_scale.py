"""The DAG-scale benchmark at a reduced scale (issue 7 §6): the placeholder tree it builds is
exactly what the rules declare as raw inputs, the dry run plans the expected jobs per rule,
and it stays well inside the 5 s goal (the full 1205-subject figure comes from the benchmark)."""

from __future__ import annotations

import importlib.util
import sys
from collections import Counter
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
N_HCP, N_GOD, N_BOLD5000 = 60, 5, 4


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench_dag_scale", REPO_ROOT / "benchmarks" / "bench_dag_scale.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


bench = _load_bench()


@pytest.fixture(scope="module")
def scale_tree(tmp_path_factory):
    return bench.build_tree(tmp_path_factory.mktemp("dag_scale"), N_HCP, N_GOD, N_BOLD5000)


def test_expected_jobs_by_hand():
    jobs = bench.expected_jobs(N_HCP, N_GOD, N_BOLD5000)
    # 9 evaluated subjects (5 GOD + 4 BOLD5000): stage A2, stage B, sampling, controls and metrics once each
    assert jobs["preprocess_hcp"] == 60 and jobs["pretrain_mbm"] == 1
    for rule in ("finetune_mbm", "finetune_ldm", "generate", "generate_controls", "evaluate"):
        assert jobs[rule] == 9
    assert sum(jobs.values()) == 60 + 5 + 1 + 4 + 1 + 5 * 9 + 1 + 1 + 1
    assert "compare_samplers" not in bench.expected_jobs(N_HCP, N_GOD, N_BOLD5000, samplers=False)


def test_tree_layout(scale_tree):
    ids = bench.hcp_subject_ids(N_HCP)
    assert ids[0] == "100206" and len(set(ids)) == N_HCP
    cifti = sorted((scale_tree / "release" / "hcp").glob("*/MNINonLinear/Results/*/*.dtseries.nii"))
    assert len(cifti) == N_HCP * 4
    assert cifti[0].name == "rfMRI_REST1_LR_Atlas_MSMAll_hp2000_clean.dtseries.nii"
    assert all(p.stat().st_size == 0 for p in cifti[:5])
    assert sorted(p.name for p in (scale_tree / "release" / "god").glob("Subject*.h5")) == [
        f"Subject{n}.h5" for n in range(1, N_GOD + 1)
    ]
    assert (scale_tree / "Snakefile").is_file() and (scale_tree / "rules" / "common.smk").is_file()


def test_dry_run_plans_every_job_within_goal(scale_tree):
    _, jobs = bench.dry_run(scale_tree, count_jobs=True)  # also the warm-up of the timed run
    assert jobs == bench.expected_jobs(N_HCP, N_GOD, N_BOLD5000)
    seconds, _ = bench.dry_run(scale_tree)
    assert seconds < bench.GOAL_SECONDS


def test_missing_raw_run_is_named(scale_tree):
    # The dry run succeeding above is only meaningful if the rules really read these placeholders:
    # take one run away and Snakemake must refuse, naming that file.
    victim = scale_tree / "release" / "hcp" / "100210" / bench.HCP_CIFTI.format(run="rfMRI_REST2_RL")
    victim.unlink()
    try:
        with pytest.raises(RuntimeError, match=r"rfMRI_REST2_RL_Atlas_MSMAll_hp2000_clean\.dtseries\.nii"):
            bench.dry_run(scale_tree)
    finally:
        victim.touch()


def test_parse_job_stats():
    text = "Job stats:\njob    count\n-----  -----\nall        1\nreport     1\ntotal      2\n\nReasons:\n  x 3\n"
    assert bench.parse_job_stats(text) == Counter(all=1, report=1)
