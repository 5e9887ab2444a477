"""The DAG never runs more threads at once than `--cores` allows.

Snakemake 9.10.0 to 9.16.3 lost count of the cores in use (public Snakemake issue
3913, fixed in 9.17.0): a job picked while it was the only ready job was never
subtracted from the free cores, yet was added back when it finished, so each such job
left one phantom core behind. On the embedded DAG, `--cores 2` then ran four
one-thread fine-tunes at once. The project requires a fixed Snakemake: pyproject.toml
for pip, and the Snakefile's `min_version` for a Snakemake installed any other way.

The probe rules below run through the project's own Snakefile (so its version guard
applies) under the Snakemake the tests run with: two chained one-thread jobs that
each run alone (on a buggy version each leaks one core), then four one-thread jobs
and one two-thread job that are ready together. Every job writes when it started and
ended and how many threads it claimed; the test takes the most threads claimed at
one instant from those intervals.
"""

from __future__ import annotations

import re
import tomllib
import pytest

from conftest import REPO_ROOT
from timeouts import SNAKEMAKE_JOB
from workflow_runner import copy_workflow, snakemake

CORES = 2
# Jobs started together overlap for this long: far more than the few milliseconds
# (at most a second or two on a loaded machine) between two job launches.
HOLD_SECONDS = 6

PROBE_SNAKEFILE = f"""
include: "Snakefile"  # the project's workflow: its Snakemake version guard, config and helpers


# start and end (epoch seconds) and the threads the job claims, written to its output
RECORD = 'start=$(date +%s.%N); sleep {{params.hold}}; end=$(date +%s.%N); echo "$start $end {{threads}}" > {{output}}'


rule probe_all:
    input:
        expand("probe/fan_{{i}}.txt", i=range(4)),
        "probe/wide.txt",


rule probe_first:
    output:
        "probe/first.txt",
    params:
        hold=0,
    threads: 1
    shell:
        RECORD


rule probe_second:
    input:
        "probe/first.txt",
    output:
        "probe/second.txt",
    params:
        hold=0,
    threads: 1
    shell:
        RECORD


rule probe_fan:
    input:
        "probe/second.txt",
    output:
        "probe/fan_{{i}}.txt",
    params:
        hold={HOLD_SECONDS},
    threads: 1
    shell:
        RECORD


rule probe_wide:
    input:
        "probe/second.txt",
    output:
        "probe/wide.txt",
    params:
        hold={HOLD_SECONDS},
    threads: 2
    shell:
        RECORD
"""


def peak_threads(intervals: list[tuple[float, float, int]]) -> int:
    """The most threads claimed at one instant; a job ending when another starts does not overlap it."""
    events = [(start, threads) for start, _, threads in intervals] + [(end, -threads) for _, end, threads in intervals]
    events.sort(key=lambda event: (event[0], event[1]))  # at a tie, ends (negative) come first
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    return peak


def test_peak_threads_counts_overlaps_by_hand():
    # [0,10] 1 thread, [2,5] 2 threads, [5,8] 1 thread, [9,12] 1 thread:
    # 1+2 = 3 during [2,5]; at t=5 the 2-thread job ends as the next starts: 1+1 = 2; 1+1 during [9,10]
    assert peak_threads([(0, 10, 1), (2, 5, 2), (5, 8, 1), (9, 12, 1)]) == 3
    assert peak_threads([(0, 1, 2), (1, 2, 2)]) == 2
    assert peak_threads([]) == 0


def _lower_bound(spec: str) -> tuple[int, ...]:
    match = re.search(r">=\s*([\d.]+)", spec)
    assert match, f"no lower bound in {spec!r}"
    return tuple(int(part) for part in match.group(1).split("."))


def test_pyproject_and_snakefile_require_a_snakemake_that_counts_cores():
    deps = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (spec,) = [d for d in deps if re.match(r"snakemake\s*[<>=!~]", d)]
    guard = re.search(r'^min_version\("([\d.]+)"\)', (REPO_ROOT / "Snakefile").read_text(), flags=re.M)
    assert guard, "Snakefile: no min_version(...)"
    assert _lower_bound(spec) == tuple(int(p) for p in guard.group(1).split(".")), (spec, guard.group(1))
    assert _lower_bound(spec) >= (9, 17), f"{spec}: Snakemake 9.10-9.16 run more threads than --cores"


@pytest.mark.integration
@pytest.mark.slow
def test_dag_never_runs_more_threads_than_cores(tmp_path):
    workdir = copy_workflow(tmp_path / "wf")
    (workdir / "probe.smk").write_text(PROBE_SNAKEFILE)
    proc = snakemake(workdir, "--snakefile", "probe.smk", "--cores", str(CORES), "probe_all", timeout=SNAKEMAKE_JOB)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    jobs = {}
    for path in (workdir / "probe").glob("*.txt"):
        start, end, threads = path.read_text().split()
        jobs[path.stem] = (float(start), float(end), int(threads))
    assert sorted(jobs) == ["fan_0", "fan_1", "fan_2", "fan_3", "first", "second", "wide"]
    assert jobs["wide"][2] == 2 and jobs["fan_0"][2] == 1  # the claims reached the jobs unscaled

    intervals = list(jobs.values())
    peak = peak_threads(intervals)
    assert peak <= CORES, f"{peak} threads ran at once with --cores {CORES}: {intervals}"
    # and the probe sees overlap where it is allowed: two one-thread jobs side by side
    fans = [jobs[f"fan_{i}"] for i in range(4)]
    assert peak_threads(fans) == CORES, f"no two one-thread jobs overlapped: {fans}"
