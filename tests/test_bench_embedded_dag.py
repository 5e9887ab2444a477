"""The embedded-DAG benchmark's readers: jobs and their times from a Snakemake log, the most
threads running at once, per-rule totals, CPU seconds per job (the PATH wrapper's records),
the critical path in CPU seconds, the projected quiet wall time and the metrics files
(issue 12 section 4). The expected values are worked out by hand from the texts below."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
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
    log: results/logs/make_stimuli.log
    jobid: 1
    resources: tmpdir=/tmp

[Thu Dec  3 09:00:10 2026]
Finished jobid: 1 (Rule: make_stimuli)
1 of 5 steps (20%) done
Select jobs to execute...
Execute 2 jobs...
[Thu Dec  3 09:00:11 2026]
rule finetune_ldm:
    input: a, data/raw/stimuli/stimuli.npz
    output: results/stage_b/god/1/finetuned.pt
    log: results/logs/finetune_ldm/god_1.log
    jobid: 2
    wildcards: dataset=god, subject=1
    resources: tmpdir=/tmp, gpu=1

[Thu Dec  3 09:00:11 2026]
rule train_judge:
    input: data/raw/stimuli/stimuli.npz
    output: results/judge/judge.pt
    log: results/logs/train_judge.log
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
        "make_stimuli": {"jobs": 1, "total": 10.0, "max": 10.0, "cpu": None},
        "finetune_ldm": {"jobs": 1, "total": 120.0, "max": 120.0, "cpu": None},
        "train_judge": {"jobs": 1, "total": 30.0, "max": 30.0, "cpu": None},
    }


def test_input_output_and_log_files_come_out_of_the_log():
    jobs = {j["rule"]: j for j in bench.parse_snakemake_log(LOG)}
    assert jobs["finetune_ldm"]["input"] == ["a", "data/raw/stimuli/stimuli.npz"]
    assert jobs["finetune_ldm"]["output"] == ["results/stage_b/god/1/finetuned.pt"]
    assert jobs["train_judge"]["log"] == ["results/logs/train_judge.log"]
    assert jobs["make_stimuli"]["input"] == []


# The wrapper's JSON lines: make_stimuli's log twice (a retried job adds up), finetune_ldm once,
# a record without a log file and one whose stdout was /dev/null (not a rule's job) left out.
CPU_LINES = [
    {"log": "results/logs/make_stimuli.log", "user": 3.0, "sys": 0.5},
    {"log": "results/logs/make_stimuli.log", "user": 1.0, "sys": 0.25},
    {"log": "results/logs/finetune_ldm/god_1.log", "user": 100.0, "sys": 2.0},
    {"log": "", "user": 9.0, "sys": 9.0},
    {"log": "/dev/null", "user": 7.0, "sys": 7.0},
]


def test_cpu_seconds_per_job_and_rule_from_the_wrapper_records(tmp_path):
    path = tmp_path / "cpu.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in CPU_LINES))
    cpu_by_log = bench.read_cpu_log(path)
    # user + sys: 3.5 + 1.25 = 4.75 for make_stimuli, 102 for finetune_ldm
    assert cpu_by_log == {"results/logs/make_stimuli.log": 4.75, "results/logs/finetune_ldm/god_1.log": 102.0}
    assert bench.read_cpu_log(tmp_path / "absent.jsonl") == {}
    jobs = bench.parse_snakemake_log(LOG)
    bench.attach_cpu(jobs, cpu_by_log)
    rules = bench.per_rule_seconds(jobs)
    assert (rules["make_stimuli"]["cpu"], rules["finetune_ldm"]["cpu"], rules["train_judge"]["cpu"]) == (
        4.75, 102.0, None)  # train_judge has no record


def test_critical_path_and_projected_quiet_wall():
    # make_stimuli (4.75) -> finetune_ldm (102) and make_stimuli -> train_judge (no record: 0)
    jobs = bench.parse_snakemake_log(LOG)
    bench.attach_cpu(jobs, {"results/logs/make_stimuli.log": 4.75, "results/logs/finetune_ldm/god_1.log": 102.0})
    assert bench.critical_path_cpu(jobs) == (106.75, ["make_stimuli", "finetune_ldm"])
    # a diamond: a (10) -> b (50), a -> c (20), b and c -> d (5): the longest chain is a-b-d = 65
    diamond = [
        {"rule": "d", "input": ["b.out", "c.out", "raw"], "output": ["d.out"], "cpu": 5.0},
        {"rule": "b", "input": ["a.out"], "output": ["b.out"], "cpu": 50.0},
        {"rule": "c", "input": ["a.out"], "output": ["c.out"], "cpu": 20.0},
        {"rule": "a", "input": ["raw"], "output": ["a.out"], "cpu": 10.0},
    ]
    assert bench.critical_path_cpu(diamond) == (65.0, ["a", "b", "d"])
    assert bench.critical_path_cpu([]) == (0.0, [])
    # total 85 CPU s on 2 cores: 42.5 s of spread work < the 65 s chain; on 1 core 85 s
    assert bench.projected_quiet_wall(85.0, 65.0, 2) == 65.0
    assert bench.projected_quiet_wall(85.0, 65.0, 1) == 85.0
    assert bench.projected_quiet_wall(1200.0, 400.0, 2) == 600.0
    assert bench.cores_number("2") == 2 and bench.cores_number("all") == (os.cpu_count() or 1)


def test_the_cpu_wrapper_records_a_child_that_burns_cpu(tmp_path):
    """The wrapper runs the real interpreter with the same arguments and exit code and records the
    child's CPU time under the file its stdout goes to."""
    wrapper = bench.write_cpu_wrapper(tmp_path / "bin")
    record = tmp_path / "cpu.jsonl"
    log = tmp_path / "job.log"
    env = {**os.environ, "PATH": f"{wrapper.parent}{os.pathsep}{os.environ['PATH']}",
           "MINDVIS_BENCH_CPU_LOG": str(record)}
    burn = "import sys, time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\nsys.exit(3)"
    with open(log, "w") as sink:
        proc = subprocess.run(["python", "-c", burn], stdout=sink, env=env, cwd=tmp_path)
    assert proc.returncode == 3
    (line,) = record.read_text().splitlines()
    rec = json.loads(line)
    assert rec["log"] == "job.log" and rec["argv"][0] == "-c"
    assert rec["user"] + rec["sys"] >= 0.3  # the child burnt 0.3 s of CPU before exiting


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
