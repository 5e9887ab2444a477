"""Wall time of the embedded default DAG from a fresh clone (issue 12 section 4: at most 10 min on 2 cores).

Each run: `git clone` of this repository (its committed HEAD, or --ref) into a temporary
folder, then `python -m snakemake --cores N` there, as a new user runs the README's
quickstart (the clone's own src/ is on the jobs' PYTHONPATH, see rules/common.smk).
MLflow goes to the clone's own results/mlflow.db (MLFLOW_TRACKING_URI and
MINDVIS_ARTIFACT_ROOT are removed from the environment).

Prints per run: the wall time, the 1-minute load average before and after, the most
threads Snakemake had running at once (from its log; must not exceed --cores), the
time per rule (from Snakemake's log: job start to "Finished jobid", 1 s resolution),
and the decoding metrics of results/metrics/*/*/metrics.json (n-way top-1 exact,
identification PCC), so a change that saves time can be checked for a metric
regression; then the median wall time over the runs.

CPU seconds (user + sys) per job, which a loaded machine does not hide the way it
hides wall time: the clone's jobs run `python -m mindvis ...` through a `python` found
first on PATH, a small wrapper this script writes, which runs the real interpreter,
waits for it with os.wait4 (its rusage covers the job's threads and the children it
waited for) and appends one JSON line naming the job's log file (the file its stdout
goes to: every rule writes `> {log}`). Each run then prints CPU seconds per rule, the
critical path in CPU seconds (the longest chain of jobs through their input and output
files), and a projected quiet wall time = max(total job CPU / cores, critical path CPU):
what the DAG would take on an idle machine with those cores, if Snakemake packs them
(rule priorities) and nothing else runs. No file of the clone is changed.

Usage:
  python benchmarks/bench_embedded_dag.py                         # 2 cores, 3 runs
  python benchmarks/bench_embedded_dag.py --cores 2 --repeats 1 --json dag.json
  python benchmarks/bench_embedded_dag.py --ref my-branch -- --configfile config/faster.yaml
Arguments after `--` go to Snakemake unchanged. The whole DAG takes minutes per run:
on a machine shared with other work, run it once and report the load average with it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
GOAL_SECONDS = 600.0
HEADLINE_METRICS = ("nway_top1_exact", "identification_pcc")

_STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
_RULE = re.compile(r"^(?:local)?rule (\w+):$")
_FIELD = re.compile(r"^\s+(jobid|threads|wildcards|input|output|log): (.*)$")
_FINISHED = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)")


def parse_snakemake_log(text: str) -> list[dict]:
    """Jobs from a Snakemake log: rule, wildcards, threads, start and end (epoch seconds, 1 s resolution),
    and the job's input, output and log files (lists of paths as Snakemake prints them).

    A job block is a `[date]` line, `rule NAME:` (or `localrule`) and indented fields
    (`jobid`, `threads` when above 1, `wildcards`, `input`, `output`, `log`); its end is
    the `[date]` line before `Finished jobid: N (Rule: NAME)`."""
    jobs: dict[int, dict] = {}
    stamp = None
    current = None
    for line in text.splitlines():
        if match := _STAMP.match(line):
            stamp = time.mktime(time.strptime(match.group(1), "%a %b %d %H:%M:%S %Y"))
            current = None
        elif (match := _RULE.match(line)) and stamp is not None:
            current = {"rule": match.group(1), "start": stamp, "threads": 1, "wildcards": "",
                       "input": [], "output": [], "log": []}
        elif current is not None and (match := _FIELD.match(line)):
            key, value = match.groups()
            if key == "jobid":
                jobs[int(value)] = current
            elif key == "threads":
                current["threads"] = int(value)
            elif key == "wildcards":
                current["wildcards"] = value
            else:
                current[key] = [path.strip() for path in value.split(",") if path.strip()]
        elif (match := _FINISHED.match(line)) and stamp is not None:
            job = jobs.get(int(match.group(1)))
            if job is not None:
                job["end"] = stamp
    return [job for job in jobs.values() if "end" in job]


def peak_threads(jobs: list[dict]) -> int:
    """The most threads running at once; a job finishing in the second another starts does not count
    as overlapping it (the log has 1 s resolution)."""
    events = sorted([(j["start"], j["threads"]) for j in jobs] + [(j["end"], -j["threads"]) for j in jobs])
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    return peak


def per_rule_seconds(jobs: list[dict]) -> dict[str, dict]:
    """rule -> {jobs, total, max} wall seconds, and `cpu`: the rule's summed CPU seconds (None when
    none of its jobs has a `cpu` figure, e.g. Snakemake's own `all`)."""
    by_rule: dict[str, list[dict]] = defaultdict(list)
    for job in jobs:
        by_rule[job["rule"]].append(job)
    out = {}
    for rule, group in by_rule.items():
        seconds = [j["end"] - j["start"] for j in group]
        cpu = [j["cpu"] for j in group if j.get("cpu") is not None]
        out[rule] = {"jobs": len(group), "total": sum(seconds), "max": max(seconds), "cpu": sum(cpu) if cpu else None}
    return out


# The `python` the clone's jobs find first on PATH: runs the real interpreter, then appends
# {"log": the file its stdout went to, "user", "sys": CPU seconds} to $MINDVIS_BENCH_CPU_LOG.
CPU_WRAPPER = """#!{python}
import json, os, signal, sys
child = os.fork()
if child == 0:
    os.execv({python!r}, [{python!r}, *sys.argv[1:]])
for signum in (signal.SIGTERM, signal.SIGINT):  # Snakemake stopping a job reaches the job itself
    signal.signal(signum, lambda s, _: os.kill(child, s))
_, status, usage = os.wait4(child, 0)
try:
    stdout = os.readlink("/proc/self/fd/1")
except OSError:
    stdout = ""
record = {{"log": os.path.relpath(stdout) if stdout.startswith("/") else stdout, "argv": sys.argv[1:4],
          "user": usage.ru_utime, "sys": usage.ru_stime, "maxrss_kb": usage.ru_maxrss}}
with open(os.environ["MINDVIS_BENCH_CPU_LOG"], "a") as sink:
    sink.write(json.dumps(record) + "\\n")
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


def write_cpu_wrapper(folder: Path, python: str = sys.executable) -> Path:
    """`folder/python`, the CPU-recording wrapper around `python` (put `folder` first on PATH)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "python"
    path.write_text(CPU_WRAPPER.format(python=python))
    path.chmod(0o755)
    return path


def read_cpu_log(path: Path) -> dict[str, float]:
    """log file -> CPU seconds (user + sys) from the wrapper's JSON lines; records without a log
    file (a command not run by a rule) are left out, and a log file named twice adds up."""
    out: dict[str, float] = defaultdict(float)
    if path.exists():
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if record.get("log") and not record["log"].startswith("/dev/"):
                out[record["log"]] += record["user"] + record["sys"]
    return dict(out)


def attach_cpu(jobs: list[dict], cpu_by_log: dict[str, float]) -> None:
    """Give each job `cpu`: the CPU seconds recorded for its log file(s), None when it has none."""
    for job in jobs:
        found = [cpu_by_log[log] for log in job.get("log", []) if log in cpu_by_log]
        job["cpu"] = sum(found) if found else None


def critical_path_cpu(jobs: list[dict]) -> tuple[float, list[str]]:
    """The chain of jobs with the most CPU seconds, a job depending on every job whose output
    is one of its inputs (jobs without `cpu` count 0); returns its CPU seconds and its rules."""
    producer = {path: i for i, job in enumerate(jobs) for path in job.get("output", [])}
    parents = [{producer[p] for p in job.get("input", []) if p in producer and producer[p] != i}
               for i, job in enumerate(jobs)]
    best: dict[int, tuple[float, list[str]]] = {}

    def chain(i: int) -> tuple[float, list[str]]:
        if i not in best:
            before = max((chain(p) for p in parents[i]), default=(0.0, []), key=lambda c: c[0])
            best[i] = (before[0] + (jobs[i].get("cpu") or 0.0), before[1] + [jobs[i]["rule"]])
        return best[i]

    return max((chain(i) for i in range(len(jobs))), default=(0.0, []), key=lambda c: c[0])


def projected_quiet_wall(total_cpu: float, critical_cpu: float, cores: int) -> float:
    """Seconds the DAG needs on `cores` otherwise idle cores: no less than its work spread over them,
    no less than its longest chain run alone."""
    return max(total_cpu / max(cores, 1), critical_cpu)


def cores_number(cores: str) -> int:
    """--cores as a count ('all': this machine's CPUs)."""
    return (os.cpu_count() or 1) if cores == "all" else int(cores)


def read_metrics(results: Path) -> dict[str, dict[str, float]]:
    """'dataset/subject' -> {metric: value} from results/metrics/*/*/metrics.json."""
    out = {}
    for path in sorted(results.glob("metrics/*/*/metrics.json")):
        doc = json.loads(path.read_text())
        out[f"{path.parent.parent.name}/{path.parent.name}"] = {
            name: rec["value"]
            for name, rec in doc.get("metrics", {}).items()
            if isinstance(rec, dict) and "value" in rec
        }
    return out


def snakemake_version() -> str:
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--version"], capture_output=True, text=True)
    return proc.stdout.strip() or proc.stderr.strip()


def one_run(source: Path, ref: str, cores: str, extra: list[str], keep: bool) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="mindvis-dag-"))
    clone = tmp / "mindvis"
    subprocess.run(["git", "clone", "--quiet", str(source), str(clone)], check=True)
    if ref != "HEAD":
        subprocess.run(["git", "-C", str(clone), "checkout", "--quiet", ref], check=True)
    commit = subprocess.run(["git", "-C", str(clone), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True, check=True).stdout.strip()
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MINDVIS_ARTIFACT_ROOT")}
    wrapper = write_cpu_wrapper(tmp / "bin")
    cpu_log = tmp / "cpu.jsonl"
    env.update(PATH=f"{wrapper.parent}{os.pathsep}{env.get('PATH', '')}", MINDVIS_BENCH_CPU_LOG=str(cpu_log))
    load_before = os.getloadavg()
    start = time.perf_counter()
    with open(tmp / "snakemake.out", "w") as sink:
        proc = subprocess.run([sys.executable, "-m", "snakemake", "--cores", cores, *extra],
                              cwd=clone, env=env, stdout=sink, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    load_after = os.getloadavg()
    logs = sorted((clone / ".snakemake" / "log").glob("*.snakemake.log"))
    jobs = parse_snakemake_log(logs[-1].read_text()) if logs else []
    attach_cpu(jobs, read_cpu_log(cpu_log))
    total_cpu = sum(job["cpu"] or 0.0 for job in jobs)
    critical_cpu, critical_rules = critical_path_cpu(jobs)
    run = {
        "commit": commit,
        "returncode": proc.returncode,
        "seconds": seconds,
        "load_before": load_before,
        "load_after": load_after,
        "jobs": len(jobs),
        "peak_threads": peak_threads(jobs),
        "rules": per_rule_seconds(jobs),
        "cpu_seconds": total_cpu,
        "critical_path_cpu": critical_cpu,
        "critical_path": critical_rules,
        "projected_quiet_wall": projected_quiet_wall(total_cpu, critical_cpu, cores_number(cores)),
        "metrics": read_metrics(clone / "results"),
        "workdir": str(tmp) if keep or proc.returncode else None,
    }
    if not (keep or proc.returncode):
        subprocess.run(["rm", "-rf", str(tmp)], check=False)
    return run


def print_run(i: int, run: dict, cores: str) -> None:
    lb, la = run["load_before"], run["load_after"]
    print(f"\nrun {i}: {run['seconds']:.1f} s ({run['seconds'] / 60:.1f} min), exit {run['returncode']}, "
          f"commit {run['commit']}, {run['jobs']} jobs, at most {run['peak_threads']} threads at once "
          f"(--cores {cores}); load average (1/5/15 min) before {lb[0]:.2f}/{lb[1]:.2f}/{lb[2]:.2f}, "
          f"after {la[0]:.2f}/{la[1]:.2f}/{la[2]:.2f}")
    if run["workdir"]:
        print(f"  kept: {run['workdir']} (snakemake.out, the clone)")
    print(f"  {'rule':<20} {'jobs':>4} {'total s':>9} {'max s':>7} {'cpu_seconds':>12}")
    for rule, r in sorted(run["rules"].items(), key=lambda item: -item[1]["total"]):
        cpu = f"{r['cpu']:>12.1f}" if r.get("cpu") is not None else f"{'-':>12}"
        print(f"  {rule:<20} {r['jobs']:>4} {r['total']:>9.0f} {r['max']:>7.0f} {cpu}")
    print(f"  CPU seconds of all jobs {run['cpu_seconds']:.0f}; critical path {run['critical_path_cpu']:.0f} CPU s "
          f"({' -> '.join(run['critical_path'])})")
    print(f"  projected quiet wall = max(total CPU / cores, critical path CPU) = {run['projected_quiet_wall']:.0f} s "
          f"({run['projected_quiet_wall'] / 60:.1f} min; goal {GOAL_SECONDS / 60:.0f} min)")
    if run["metrics"]:
        print(f"  {'dataset/subject':<16} " + " ".join(f"{m:>20}" for m in HEADLINE_METRICS))
        for where, values in run["metrics"].items():
            print(f"  {where:<16} " + " ".join(f"{values.get(m, float('nan')):>20.3f}" for m in HEADLINE_METRICS))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cores", default="2", help="Snakemake --cores (a number or 'all'; default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="fresh clones to run (default 3)")
    parser.add_argument("--repo", type=Path, default=REPO_ROOT, help="repository to clone (default: this one)")
    parser.add_argument("--ref", default="HEAD", help="commit or branch to check out (default: HEAD)")
    parser.add_argument("--keep", action="store_true", help="keep the clones (failed runs are always kept)")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure here")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    print(f"embedded DAG from fresh clones of {args.repo} ({args.ref}); Snakemake {snakemake_version()}; "
          f"{os.cpu_count()} CPUs; --cores {args.cores}; extra: {' '.join(extra) or 'none'}")
    runs = []
    for i in range(1, args.repeats + 1):
        runs.append(one_run(args.repo, args.ref, args.cores, extra, args.keep))
        print_run(i, runs[-1], args.cores)
    ok = [r["seconds"] for r in runs if r["returncode"] == 0]
    if ok:
        median = statistics.median(ok)
        print(f"\nmedian of {len(ok)} successful run(s): {median:.1f} s ({median / 60:.1f} min); "
              f"goal {GOAL_SECONDS / 60:.0f} min on 2 cores: {'met' if median <= GOAL_SECONDS else 'NOT met'}")
        projected = statistics.median(r["projected_quiet_wall"] for r in runs if r["returncode"] == 0)
        cpu = statistics.median(r["cpu_seconds"] for r in runs if r["returncode"] == 0)
        print(f"median CPU seconds of all jobs {cpu:.0f}; median projected quiet wall {projected:.0f} s "
              f"({projected / 60:.1f} min): {'met' if projected <= GOAL_SECONDS else 'NOT met'} on a quiet machine")
    if args.json:
        args.json.write_text(json.dumps({"cores": args.cores, "ref": args.ref, "runs": runs}, indent=1))
    return 0 if len(ok) == len(runs) else 1


if __name__ == "__main__":
    sys.exit(main())
