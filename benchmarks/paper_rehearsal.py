r"""The full-size rehearsal of the DAG (config/rehearsal.yaml), measured; FLOPs; a GPU-hour table.

Three parts, each can run alone:

1. The rehearsal: copies the workflow and the source tree into a scratch folder (so edits to
   this checkout during a long run change nothing) and runs
       snakemake --cores N --configfile config/rehearsal.yaml [--configfile ...]
   there, while a watcher polls the processes Snakemake starts (twice a second) for each job:
   wall seconds, peak RSS (VmHWM, summed over the job's processes) and how many jobs ran at
   once. Afterwards it reads each job's MLflow summary for its optimizer steps and loop time,
   and `snakemake --summary` for its output files. Per rule it prints: seconds, optimizer
   steps, seconds per step (the training loop's own time; sampling: per denoising step and
   image), peak RSS and output size; and the machine's load average during the run.
2. FLOPs (`--only-flops` runs just this): torch's FlopCounterMode on the paper-size workloads
   of benchmarks/paper_workloads.py, at batch 1 on the CPU, scaled to the paper's batches:
   SC-MBM A1 step (batch 100), A2 step (batch 16), stage B step (batch 5), one sampler step
   and one VQ decode per image, and the UNet evaluations of PLMS-250 and DPM-Solver++-25.
3. The GPU-hour table for the full paper run (A1 500 epochs x 136,000 samples; A2 15 epochs
   x 1200 rows per GOD subject; stage B 500 epochs x 1200 pairs per GOD subject; generation
   of 50 x 5 images per subject with PLMS-250, and with DPM-Solver++-25 for comparison) on
   one A100 and one H100 SXM at an assumed fraction of the bf16 dense peak (`--fraction`,
   default 0.40; peaks 312 and 989 TFLOP/s), and what the rehearsal's CPU speed would take.

    python benchmarks/paper_rehearsal.py                      # all three (about 90 min on 2 cores)
    python benchmarks/paper_rehearsal.py --only-flops         # FLOPs and the GPU-hour table (~3 min)
    python benchmarks/paper_rehearsal.py --dry                # the rehearsal's job list (snakemake -n)
    python benchmarks/paper_rehearsal.py --configfile tests/data/rehearsal_micro.yaml --skip-flops
                                                              # the test suite's micro rehearsal (~3 min)
    nice -n 10 python benchmarks/paper_rehearsal.py --json rehearsal.json --keep

`--json` writes every figure; `--keep` keeps the scratch folder (outputs, logs, MLflow store).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP

import argparse  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
COPIED = ("Snakefile", "rules", "workflow", "config", "envs", "src")
TRAINING_RULES = ("pretrain_mbm", "finetune_mbm", "train_autoencoder", "train_label2img", "finetune_ldm",
                  "train_judge")

# The full paper run the cost table prices (docs/reference.md §4, §7, §9).
A1_EPOCHS, A1_SAMPLES, A1_BATCH = 500, 136_000, 100
A2_EPOCHS, A2_ROWS, A2_BATCH = 15, 1200, 16
B_EPOCHS, B_PAIRS, B_BATCH = 500, 1200, 5
GEN_ITEMS, GEN_SAMPLES = 50, 5
GOD_SUBJECTS = 5
GPUS = {"A100 (312 TFLOP/s bf16)": 312e12, "H100 SXM (989 TFLOP/s bf16)": 989e12}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cores", type=int, default=2, help="snakemake --cores (default 2)")
    p.add_argument("--configfile", action="append", default=[], type=Path,
                   help="extra overlay after config/rehearsal.yaml (repeatable), e.g. tests/data/rehearsal_micro.yaml")
    p.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a new temporary one)")
    p.add_argument("--keep", action="store_true", help="keep the scratch folder")
    p.add_argument("--dry", action="store_true", help="only list the rehearsal's jobs (snakemake --dry-run)")
    p.add_argument("--only-flops", action="store_true", help="only the FLOP counts and the GPU-hour table")
    p.add_argument("--skip-flops", action="store_true", help="the rehearsal only, no FLOP counts or table")
    p.add_argument("--fraction", type=float, default=0.40, help="assumed fraction of the bf16 peak (default 0.40)")
    p.add_argument("--threads", type=int, default=2, help="torch threads for the FLOP counts (default 2)")
    p.add_argument("--poll", type=float, default=0.5, help="watcher period in seconds")
    p.add_argument("--timeout", type=float, default=0, help="stop the rehearsal after this many minutes (0: none)")
    p.add_argument("--json", type=Path, default=None, help="write every figure to this JSON file")
    return p.parse_args(argv)


# -- part 1: the rehearsal ---------------------------------------------------------------------------
@dataclass
class Job:
    key: str  # the MLflow run name: rule[wildcard=value,...]
    rule: str
    log: str
    start: float
    end: float
    peak_rss_kb: int = 0
    processes: set = field(default_factory=set)


def _job_identity(command: str) -> tuple[str, str, str] | None:
    """(key, rule, log file) of a rule's shell command, or None when it is not one of ours."""
    rule = re.search(r"--rule (\S+)", command)
    if "-m mindvis" not in command or rule is None:
        return None
    wildcards = sorted(m.group(1).split("=", 1) for m in re.finditer(r"--wildcard (\S+=\S+)", command))
    key = rule.group(1) + (f"[{','.join(f'{k}={v}' for k, v in wildcards)}]" if wildcards else "")
    log = re.search(r">\s*(\S+\.log)\s+2>&1", command)
    return key, rule.group(1), log.group(1) if log else ""


def _vm_hwm_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Watcher(threading.Thread):
    """Polls the descendants of one Snakemake process: which job runs, for how long, its peak memory."""

    def __init__(self, root_pid: int, period: float):
        super().__init__(daemon=True)
        self.root_pid, self.period = root_pid, period
        self.jobs: dict[str, Job] = {}
        self.max_concurrent = 0
        self.loads: list[float] = []
        self.halt = threading.Event()

    def run(self) -> None:
        import psutil

        last_load = 0.0
        while not self.halt.is_set():
            now = time.time()
            try:
                tree = psutil.Process(self.root_pid).children(recursive=True)
            except psutil.Error:
                tree = []
            live = 0
            for proc in tree:
                try:
                    identity = _job_identity(" ".join(proc.cmdline()))
                    if identity is None or proc.name() not in ("bash", "sh"):
                        continue
                    members = [proc] + proc.children(recursive=True)
                except psutil.Error:
                    continue
                key, rule, log = identity
                job = self.jobs.setdefault(key, Job(key, rule, log, now, now))
                job.end = now
                job.processes |= {m.pid for m in members}
                job.peak_rss_kb = max(job.peak_rss_kb, sum(_vm_hwm_kb(m.pid) for m in members))
                live += 1
            self.max_concurrent = max(self.max_concurrent, live)
            if now - last_load >= 30:
                self.loads.append(os.getloadavg()[0])
                last_load = now
            self.halt.wait(self.period)


def prepare_workdir(workdir: Path, overlays: list[Path]) -> list[str]:
    """Copy the workflow and the source tree; return the --configfile list (relative to workdir)."""
    workdir.mkdir(parents=True, exist_ok=True)
    for part in COPIED:
        src, dst = REPO / part, workdir / part
        if dst.exists():
            continue
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(src, dst)
    configs = ["config/rehearsal.yaml"]
    for i, overlay in enumerate(overlays):
        name = f"overlay_{i}_{overlay.name}"
        shutil.copy2(overlay, workdir / name)
        configs.append(name)
    return configs


def snakemake_command(configs: list[str], *extra: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "--configfile", *configs, *extra]


def job_environment(workdir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{workdir}/results/mlflow.db"
    env.pop("MINDVIS_ARTIFACT_ROOT", None)
    return env


def run_rehearsal(workdir: Path, configs: list[str], cores: int, period: float, timeout_min: float):
    """Run the DAG under the watcher; return (exit code, watcher, seconds)."""
    log_path = workdir / "snakemake.log"
    with open(log_path, "w") as sink:
        proc = subprocess.Popen(snakemake_command(configs, "--cores", str(cores)), cwd=workdir,
                                env=job_environment(workdir), stdout=sink, stderr=subprocess.STDOUT,
                                start_new_session=True)
    watcher = Watcher(proc.pid, period)
    watcher.start()
    t0 = time.time()
    try:
        proc.wait(timeout=timeout_min * 60 if timeout_min > 0 else None)
    except subprocess.TimeoutExpired:
        print(f"rehearsal: stopped after {timeout_min:g} min (--timeout); figures so far below", flush=True)
        os.killpg(proc.pid, 15)  # the session this script started: Snakemake and its jobs
        proc.wait()
    watcher.halt.set()
    watcher.join()
    return proc.returncode, watcher, time.time() - t0


def output_sizes(workdir: Path, configs: list[str]) -> dict[str, int]:
    """Bytes of every output, summed per log file (= per job), from `snakemake --summary`."""
    out = subprocess.run(snakemake_command(configs, "--summary", "--cores", "1"), cwd=workdir,
                         env=job_environment(workdir), capture_output=True, text=True)
    sizes: dict[str, int] = {}
    for line in out.stdout.splitlines()[1:]:
        cols = line.split("\t")
        if len(cols) < 4 or not cols[3]:
            continue
        path = workdir / cols[0]
        if path.is_dir():
            size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        else:
            size = path.stat().st_size if path.exists() else 0
        sizes[cols[3]] = sizes.get(cols[3], 0) + size
    return sizes


def run_summaries(workdir: Path) -> dict[str, dict]:
    """Each finished job's summary.json from its MLflow run, by run name."""
    db = workdir / "results" / "mlflow.db"
    if not db.exists():
        return {}
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = client.get_experiment_by_name(os.environ.get("MINDVIS_EXPERIMENT", "mindvis"))
    if exp is None:
        return {}
    found = {}
    for run in client.search_runs([exp.experiment_id], max_results=1000):
        path = Path(run.info.artifact_uri.removeprefix("file://")) / "summary.json"
        if path.is_file():
            found[run.info.run_name] = json.loads(path.read_text())
    return found


def loop_seconds(summary: dict) -> tuple[int | None, float | None]:
    """(optimizer steps, seconds of the training loop) from a training summary.

    SC-MBM and stage B log samples/s per epoch over the epoch's own steps, so the loop's
    time is the sum over epochs of (its steps x global batch / its samples/s); the judge
    logs its training seconds.
    """
    steps = summary.get("steps")
    if steps is None:
        return None, None
    if "train_seconds" in summary:
        return int(steps), float(summary["train_seconds"])
    per_epoch, batch = summary.get("steps_per_epoch"), summary.get("global_batch")
    rows = [r for r in summary.get("history", []) if r.get("samples_per_s")]
    if not per_epoch or not batch or not rows:
        return int(steps), None
    seconds, left = 0.0, int(steps)
    for row in rows:
        done = min(per_epoch, left)
        seconds += done * batch / row["samples_per_s"]
        left -= done
    return int(steps), seconds


def sampling_seconds(summary: dict) -> float | None:
    """Seconds per denoising step and image of a generate job."""
    if summary.get("seconds_per_image") and summary.get("steps"):
        return summary["seconds_per_image"] / summary["steps"]
    return None


def collect(workdir: Path, configs: list[str], watcher: Watcher) -> list[dict]:
    sizes = output_sizes(workdir, configs)
    summaries = run_summaries(workdir)
    rows = []
    for job in sorted(watcher.jobs.values(), key=lambda j: j.start):
        row = {"job": job.key, "rule": job.rule, "seconds": round(job.end - job.start, 1),
               "peak_rss_gb": round(job.peak_rss_kb / 1024**2, 2), "output_mb": round(sizes.get(job.log, 0) / 1e6, 1)}
        summary = summaries.get(job.key, {})
        if job.rule in TRAINING_RULES:
            steps, seconds = loop_seconds(summary)
            row["steps"] = steps
            if steps and seconds is not None:
                row["s_per_step"] = round(seconds / steps, 2)
            row["batch"] = summary.get("global_batch") or summary.get("batch_size")
        elif job.rule == "generate":
            per_step = sampling_seconds(summary)
            if per_step is not None:
                row["s_per_step"] = round(per_step, 3)
                row["per"] = f"{summary.get('sampler')}-{summary.get('steps')} step x image"
        rows.append(row)
    table = workdir / "results" / "samplers" / "sampler_comparison.json"
    if table.is_file():
        for sampler in json.loads(table.read_text()).get("rows", []):
            rows.append({"job": f"  compare_samplers: {sampler['sampler']}-{sampler['steps']}", "rule": "sampler",
                         "s_per_image": round(sampler["seconds_per_image"], 1),
                         "s_per_step": round(sampler["seconds_per_image"] / sampler["steps"], 3)})
    return rows


def print_jobs(rows: list[dict]) -> None:
    print(f"{'job':52s}{'seconds':>9s}{'steps':>7s}{'batch':>7s}{'s/step':>9s}{'peak RSS':>10s}{'outputs':>10s}")
    for r in rows:
        steps = "" if r.get("steps") is None else str(r["steps"])
        batch = "" if r.get("batch") is None else str(r["batch"])
        per = "" if r.get("s_per_step") is None else f"{r['s_per_step']:.3g}"
        rss = "" if "peak_rss_gb" not in r else f"{r['peak_rss_gb']:.2f} GB"
        out = "" if "output_mb" not in r else f"{r['output_mb']:.1f} MB"
        secs = f"{r['seconds']:.0f}" if "seconds" in r else (f"{r['s_per_image']:.0f}/img" if "s_per_image" in r else "")
        print(f"{r['job'][:51]:52s}{secs:>9s}{steps:>7s}{batch:>7s}{per:>9s}{rss:>10s}{out:>10s}")


# -- part 2: FLOPs -------------------------------------------------------------------------------------
def measure_flops(threads: int) -> dict[str, float]:
    """FLOPs per unit of work at the paper's sizes (counted at batch 1 on the CPU; they scale with batch)."""
    import torch

    import paper_workloads as w

    torch.set_num_threads(threads)
    flops: dict[str, float] = {}
    t0 = time.time()
    mbm = w.build_mbm("paper", "cpu")
    flops["sc_mbm_sample"] = w.count_flops(w.a1_step(mbm, 1, "cpu"))
    del mbm
    model = w.build_stage_b("paper", "cpu")
    flops["stage_b_item"] = w.count_flops(w.stage_b_step(model, 1, "cpu"))
    model.zero_grad(set_to_none=True)
    flops["sampler_step_image"] = w.count_flops(w.sampler_step(model, 1, "cpu"))
    flops["condition_image"] = w.count_flops(w.condition_step(model, 1, "cpu"))
    flops["decode_image"] = w.count_flops(w.decode_step(model, 1, "cpu"))
    flops["plms250_evaluations"] = w.model_evaluations("plms", 250)
    flops["dpmpp25_evaluations"] = w.model_evaluations("dpmpp", 25)
    flops["count_seconds"] = round(time.time() - t0, 1)
    return flops


def per_step_flops(f: dict[str, float]) -> dict[str, float]:
    return {
        f"SC-MBM A1 step (batch {A1_BATCH})": f["sc_mbm_sample"] * A1_BATCH,
        f"SC-MBM A2 step (batch {A2_BATCH})": f["sc_mbm_sample"] * A2_BATCH,
        f"stage B step (batch {B_BATCH})": f["stage_b_item"] * B_BATCH,
        "sampler step (1 image)": f["sampler_step_image"],
        "VQ decode (1 image)": f["decode_image"],
        "PLMS-250 image (251 UNet evals + decode)": image_flops(f, "plms250"),
        "DPM-Solver++-25 image (25 UNet evals + decode)": image_flops(f, "dpmpp25"),
    }


def image_flops(f: dict[str, float], sampler: str) -> float:
    return f[f"{sampler}_evaluations"] * f["sampler_step_image"] + f["condition_image"] + f["decode_image"]


def print_flops(f: dict[str, float]) -> None:
    print(f"\nFLOPs (torch FlopCounterMode, forward+backward for training steps; counted in {f['count_seconds']} s)")
    for name, value in per_step_flops(f).items():
        print(f"  {name:50s}{value / 1e12:10.3f} TFLOP")


# -- part 3: the GPU-hour table --------------------------------------------------------------------------
def paper_run(f: dict[str, float]) -> list[tuple[str, float, str]]:
    """(stage, total FLOPs, what it counts) of the full paper run."""
    a1 = A1_EPOCHS * A1_SAMPLES * f["sc_mbm_sample"]
    a2 = A2_EPOCHS * A2_ROWS * f["sc_mbm_sample"]
    b = B_EPOCHS * B_PAIRS * f["stage_b_item"]
    plms = GEN_ITEMS * GEN_SAMPLES * image_flops(f, "plms250")
    dpmpp = GEN_ITEMS * GEN_SAMPLES * image_flops(f, "dpmpp25")
    return [
        ("A1 pre-training", a1, f"{A1_EPOCHS} epochs x {A1_SAMPLES:,} samples"),
        ("A2 fine-tuning, 1 GOD subject", a2, f"{A2_EPOCHS} epochs x {A2_ROWS} rows"),
        ("stage B, 1 GOD subject", b, f"{B_EPOCHS} epochs x {B_PAIRS} pairs"),
        ("generation PLMS-250, 1 subject", plms, f"{GEN_ITEMS} x {GEN_SAMPLES} images"),
        ("generation DPM-Solver++-25, 1 subject", dpmpp, f"{GEN_ITEMS} x {GEN_SAMPLES} images"),
        (f"whole run, {GOD_SUBJECTS} GOD subjects (PLMS)", a1 + GOD_SUBJECTS * (a2 + b + plms), "A1 + 5 x (A2 + B + gen)"),
    ]


def print_cost_table(f: dict[str, float], fraction: float, cpu_flops_per_s: float | None) -> list[dict]:
    rows = []
    names = list(GPUS)
    head = f"{'stage':42s}{'PFLOP':>10s}" + "".join(f"{n.split(' (')[0] + ' h':>14s}" for n in names)
    if cpu_flops_per_s:
        head += f"{'2-core CPU h':>16s}"
    print(f"\nGPU-hours of the full paper run at {fraction:.0%} of the bf16 dense peak "
          f"(A100 312, H100 SXM 989 TFLOP/s; bf16 autocast as our trainers use on CUDA)")
    print(head)
    for stage, total, what in paper_run(f):
        hours = {n: total / (peak * fraction) / 3600 for n, peak in GPUS.items()}
        line = f"{stage:42s}{total / 1e15:10.1f}" + "".join(f"{hours[n]:14.3g}" for n in names)
        cpu_h = total / cpu_flops_per_s / 3600 if cpu_flops_per_s else None
        if cpu_h is not None:
            line += f"{cpu_h:16.3g}"
        print(line)
        rows.append({"stage": stage, "counts": what, "pflop": total / 1e15,
                     **{f"hours_{n.split(' (')[0]}": h for n, h in hours.items()}, "cpu_hours": cpu_h})
    print("  one GPU; data loading, evaluation passes, checkpoint writes and multi-GPU communication not included")
    return rows


# -- main ------------------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    report: dict = {"load_average_start": os.getloadavg()}
    if args.only_flops:
        flops = _flops(args, report)
        report["cost_table"] = print_cost_table(flops, args.fraction, None)
        return _write(args, report)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mindvis-rehearsal-"))
    configs = prepare_workdir(workdir, args.configfile)
    print(f"\nrehearsal in {workdir}: snakemake --cores {args.cores} --configfile {' '.join(configs)}", flush=True)
    if args.dry:
        proc = subprocess.run(snakemake_command(configs, "--dry-run", "--cores", str(args.cores)), cwd=workdir,
                              env=job_environment(workdir), capture_output=True, text=True)
        text = proc.stdout + proc.stderr  # Snakemake writes its plan to stderr
        start, end = text.rfind("Job stats:"), text.rfind("Reasons:")
        print(text[start:end if end > start else None].strip() if start >= 0 else text[-3000:])
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        return proc.returncode

    code, watcher, seconds = run_rehearsal(workdir, configs, args.cores, args.poll, args.timeout)
    rows = collect(workdir, configs, watcher)
    loads = watcher.loads or [os.getloadavg()[0]]
    print(f"\nrehearsal: exit {code}, {seconds / 60:.1f} min on --cores {args.cores}; at most "
          f"{watcher.max_concurrent} job(s) at once; 1-min load average mean {sum(loads) / len(loads):.1f}, "
          f"max {max(loads):.1f} (other users' processes included)")
    print_jobs(rows)
    report.update({"exit_code": code, "minutes": seconds / 60, "jobs": rows, "load_average": loads,
                   "max_concurrent_jobs": watcher.max_concurrent, "workdir": str(workdir)})
    if code != 0:
        print(f"a job failed: see {workdir}/snakemake.log and {workdir}/results/logs/")
    if not args.skip_flops:  # after the rehearsal: its models would otherwise hold memory during the run
        flops = _flops(args, report)
        cpu_rate = _cpu_rate(rows, flops)
        if cpu_rate:
            print(f"\nCPU throughput measured in the rehearsal's stage B steps: {cpu_rate / 1e9:.1f} GFLOP/s")
        report["cpu_flops_per_s"] = cpu_rate
        report["cost_table"] = print_cost_table(flops, args.fraction, cpu_rate)
    _write(args, report)
    if not args.keep and code == 0:
        shutil.rmtree(workdir, ignore_errors=True)
    return code


def _flops(args, report: dict) -> dict[str, float]:
    flops = measure_flops(args.threads)
    report["flops"] = flops
    report["flops_per_step"] = per_step_flops(flops)
    print_flops(flops)
    return flops


def _cpu_rate(rows: list[dict], flops: dict[str, float]) -> float | None:
    """FLOP/s the CPU achieved in the stage B training steps (the run's largest model)."""
    rates = [flops["stage_b_item"] * r["batch"] / r["s_per_step"] for r in rows
             if r["rule"] == "finetune_ldm" and r.get("s_per_step") and r.get("batch")]
    return sum(rates) / len(rates) if rates else None


def _write(args, report: dict) -> int:
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2, default=lambda o: asdict(o) if hasattr(o, "__dataclass_fields__")
                                        else str(o)))
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
