"""The embedded-DAG benchmark's readers: jobs and their times from a Snakemake log, the most
threads running at once, per-rule totals and the metrics files (issue 12 section 4).
The expected values are worked out by hand from the log text below."""

from __future__ import annotations

import importlib.util
import json
import sys
import time

from conftest import REPO_ROOT


def _load_bench():
    path = REPO_ROOT / "benchmarks" / "bench_embedded_dag.py"
    spec = importlib.util.spec_from_file_location("bench_embedded_dag", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


bench = _load_bench()

# Snakemake 9's log layout: a job block after a [date] line, `threads:` only above 1,
# and "Finished jobid" after the [date] of its end. Job 3 never finishes (a killed run).
LOG = """\
Provided cores: 2
[Thu Dec  3 09:00:00 2026]
localrule make_stimuli:
    output: data/raw/stimuli/stimuli.npz
    jobid: 1
    resources: tmpdir=/tmp

[Thu Dec  3 09:00:10 2026]
Finished jobid: 1 (Rule: make_stimuli)
1 of 5 steps (20%) done
Select jobs to execute...
Execute 2 jobs...
[Thu Dec  3 09:00:11 2026]
rule finetune_ldm:
    input: a, b
    output: results/stage_b/god/1/finetuned.pt
    jobid: 2
    wildcards: dataset=god, subject=1
    resources: tmpdir=/tmp, gpu=1

[Thu Dec  3 09:00:11 2026]
rule train_judge:
    output: results/judge/judge.pt
    jobid: 4
    threads: 2
    resources: tmpdir=/tmp

[Thu Dec  3 09:00:41 2026]
Finished jobid: 4 (Rule: train_judge)
[Thu Dec  3 09:00:41 2026]
rule finetune_ldm:
    output: results/stage_b/god/2/finetuned.pt
    jobid: 3
    wildcards: dataset=god, subject=2
[Thu Dec  3 09:02:11 2026]
Finished jobid: 2 (Rule: finetune_ldm)
"""


def _t(hms: str) -> float:
    return time.mktime(time.strptime(f"Thu Dec 3 {hms} 2026", "%a %b %d %H:%M:%S %Y"))


def test_jobs_come_out_of_the_log_with_start_end_threads_and_wildcards():
    jobs = sorted(bench.parse_snakemake_log(LOG), key=lambda j: j["start"])
    assert [(j["rule"], j["threads"], j["wildcards"]) for j in jobs] == [
        ("make_stimuli", 1, ""),
        ("finetune_ldm", 1, "dataset=god, subject=1"),
        ("train_judge", 2, ""),
    ]  # job 3 has no "Finished" line: left out
    assert [(j["start"], j["end"]) for j in jobs] == [
        (_t("09:00:00"), _t("09:00:10")),
        (_t("09:00:11"), _t("09:02:11")),
        (_t("09:00:11"), _t("09:00:41")),
    ]


def test_peak_threads_and_per_rule_seconds():
    jobs = bench.parse_snakemake_log(LOG)
    # 09:00:11-09:00:41: finetune_ldm (1) + train_judge (2) = 3 threads
    assert bench.peak_threads(jobs) == 3
    # a job ending in the second another starts does not overlap it
    assert bench.peak_threads([{"start": 0, "end": 5, "threads": 2}, {"start": 5, "end": 9, "threads": 2}]) == 2
    assert bench.per_rule_seconds(jobs) == {
        "make_stimuli": {"jobs": 1, "total": 10.0, "max": 10.0},
        "finetune_ldm": {"jobs": 1, "total": 120.0, "max": 120.0},
        "train_judge": {"jobs": 1, "total": 30.0, "max": 30.0},
    }


def test_metrics_are_read_per_dataset_and_subject(tmp_path):
    for where, top1, pcc in (("god/1", 0.8, 0.7), ("bold5000/4", 0.6, 0.5)):
        path = tmp_path / "metrics" / where / "metrics.json"
        path.parent.mkdir(parents=True)
        doc = {"metrics": {"nway_top1_exact": {"value": top1, "label": "5-way"},
                           "identification_pcc": {"value": pcc, "label": "ID PCC"}},
               "skipped": {"fid": "no weights"}}
        path.write_text(json.dumps(doc))
    assert bench.read_metrics(tmp_path) == {
        "bold5000/4": {"nway_top1_exact": 0.6, "identification_pcc": 0.5},
        "god/1": {"nway_top1_exact": 0.8, "identification_pcc": 0.7},
    }
