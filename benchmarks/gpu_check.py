r"""The GPU path, measured: the CUDA/bf16 code paths of the paper-size models, each run once.

On a CUDA machine (`benchmarks/gpu_check.sh` calls this):

1. the bf16 matmul peak of this GPU: an 8192^3 bf16 matrix product timed with CUDA events
   (warm-up, then the median of a few), the yardstick for every "% of peak" below;
2. the trainers' own CUDA paths: `train_mbm` (SC-MBM paper preset) and `run_loop` (stage B,
   the reference's trainable set) for a few optimizer steps with precision `auto` (bf16 on
   a GPU that has it), through `max_steps`: proves the paths run and the loss stays finite;
3. timed steps of the paper workloads (benchmarks/paper_workloads.py) under bf16 autocast:
   SC-MBM A1 step at batch 100 and stage B step at batch 5 (forward, backward, AdamW),
   warm-up then the median of a few: samples/s, peak memory, achieved FLOP/s (torch's
   FlopCounterMode count of one step / the median time) as a share of the measured peak;
4. both samplers at 256 px as `generate` runs them (fp32) and under bf16 autocast:
   PLMS-250 and DPM-Solver++-25 on a batch of images, seconds per image and the speed-up;
5. with 2 or more GPUs: the SC-MBM A1 step under 2-process DDP (NCCL), samples/s and the
   scaling over one process.

Goals printed beside the figures: SC-MBM A1 >= 40 % of the measured bf16 peak;
DPM-Solver++-25 >= 8x faster per image than PLMS-250 at 256 px.

Without a GPU it prints that there is none and exits 0. `--cpu-smoke` runs the same code
(every step above, DDP with 2 gloo processes) on the CPU at tiny widths, to prove the
script's logic where no GPU is at hand; its figures mean nothing.

    bash benchmarks/gpu_check.sh                  # on a CUDA machine: about 2-4 minutes on one H100/H200
    bash benchmarks/gpu_check.sh --json gpu.json  # also write the figures
    python benchmarks/gpu_check.py --cpu-smoke    # the logic on a CPU, in under a minute
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import paper_workloads as w  # noqa: E402

A1_GOAL = 0.40  # SC-MBM A1 step: share of the measured bf16 matmul peak
SPEEDUP_GOAL = 8.0  # DPM-Solver++-25 vs PLMS-250, per image at 256 px


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpu-smoke", action="store_true", help="run the same logic on the CPU at tiny widths")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per workload after warm-up (median)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls first")
    p.add_argument("--a1-batch", type=int, default=100, help="SC-MBM A1 batch (paper: 100 per GPU)")
    p.add_argument("--b-batch", type=int, default=5, help="stage B batch (paper: 5 for GOD)")
    p.add_argument("--sample-images", type=int, default=5, help="images sampled together per sampler")
    p.add_argument("--samplers", default="plms:250,dpmpp:25",
                   help="name:steps of the baseline and the fast sampler (default plms:250,dpmpp:25; the goal is "
                        "stated for these)")
    p.add_argument("--no-ddp", action="store_true", help="skip the 2-process DDP check")
    p.add_argument("--json", type=Path, default=None, help="write the figures to this file")
    return p.parse_args(argv)


# -- timing ------------------------------------------------------------------------------------------
class Clock:
    """Seconds of a call: CUDA events on a GPU (the queue is drained first), perf_counter on the CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def time(self, fn) -> float:
        if self.cuda:
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end) / 1000.0
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    def median(self, fn, warmup: int, repeats: int) -> float:
        for _ in range(warmup):
            fn()
        return statistics.median(self.time(fn) for _ in range(max(repeats, 1)))


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1024**3
    with open("/proc/self/status") as fh:  # the process's peak RSS (CPU smoke only)
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")) / 1024**2


# -- 1. the matmul peak ------------------------------------------------------------------------------------
def matmul_peak(device: torch.device, clock: Clock, n: int, warmup: int, repeats: int) -> float:
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    seconds = clock.median(lambda: a @ b, warmup, repeats)
    return 2 * n**3 / seconds


# -- 2. the trainers' own paths ------------------------------------------------------------------------------------
def trainer_paths(size: str, device: torch.device, steps: int = 3) -> dict:
    """A few max_steps-capped optimizer steps through train_mbm and run_loop with precision auto."""
    import numpy as np

    from mindvis.models.ldm.presets import ScheduleSpec  # noqa: F401  (import check of the LDM stack)
    from mindvis.training.draws import StepDraws
    from mindvis.training.engine import LoopHooks, run_loop
    from mindvis.training.ldm_common import step_diffusion_loss
    from mindvis.training.mbm import LoopConfig, train_mbm
    from mindvis.training.stage_b import FinetuneLdmConfig

    out: dict = {}
    precision = "auto" if device.type == "cuda" else "bf16"  # CPU smoke: the bf16 autocast branch
    with tempfile.TemporaryDirectory() as tmp:
        mbm = w.build_mbm(size, "cpu")
        batch = 100 if size == "paper" else 8
        rows = np.random.default_rng(0).standard_normal((batch * steps, mbm.num_voxels)).astype(np.float32)
        cfg = LoopConfig(epochs=1, batch_size=batch, device=device.type, precision=precision, holdout_fraction=0.0,
                         checkpoint_every_steps=0, max_steps=steps)
        t0 = time.perf_counter()
        summary = train_mbm(mbm, rows, np.zeros((0, mbm.num_voxels), np.float32), cfg, Path(tmp) / "enc.pth", {})
        out["train_mbm"] = {"steps": summary["steps"], "precision": summary["precision"],
                            "final_loss": summary["final_loss"], "seconds": time.perf_counter() - t0}
        del mbm

        model = w.build_stage_b(size, device)
        spec = model.spec
        n = 5 * steps
        images = (torch.rand(n, 3, spec.vq.resolution, spec.vq.resolution) * 255).to(torch.uint8)
        fmri = torch.randn(n, 1, model.conditioner.num_voxels)

        def step_loss(idx, draws: StepDraws, step):
            x = images[idx].to(device).float() / 127.5 - 1.0
            return step_diffusion_loss(model, x, fmri[idx].to(device), draws)

        cfg_b = FinetuneLdmConfig(epochs=1, batch_size=5, device=device.type, precision=precision,
                                  checkpoint_every_steps=0, max_steps=steps)
        t0 = time.perf_counter()
        result = run_loop(model, n, cfg_b, Path(tmp) / "stage_b.pt", {"check": "gpu"}, LoopHooks(step_loss),
                          export=lambda done: None)
        out["stage_b_run_loop"] = {"steps": result["steps"], "precision": result["precision"],
                                   "final_loss": result["final_loss"], "seconds": time.perf_counter() - t0}
        del model
    for name, r in out.items():
        if not (r["steps"] == steps and r["final_loss"] is not None and math.isfinite(r["final_loss"])):
            raise RuntimeError(f"{name}: expected {steps} steps with a finite loss, got {r}")
    return out


# -- 3. timed training steps ---------------------------------------------------------------------------------------
def timed_training(name: str, build, step_fn, batch: int, device, clock: Clock, amp, warmup: int, repeats: int,
                   peak: float) -> dict:
    model = build(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    step = step_fn(model, batch, device, amp, optimizer)
    flops = w.count_flops(step_fn(model, batch, device, amp))  # forward + backward, no optimizer step
    model.zero_grad(set_to_none=True)
    reset_peak(device)
    seconds = clock.median(step, warmup, repeats)
    row = {"workload": name, "batch": batch, "s_per_step": seconds, "samples_per_s": batch / seconds,
           "peak_gb": peak_gb(device), "tflop_per_step": flops / 1e12, "tflop_per_s": flops / seconds / 1e12,
           "share_of_peak": flops / seconds / peak}
    del model, optimizer, step
    return row


# -- 4. samplers ---------------------------------------------------------------------------------------------------
def sampler_rows(model, device, clock: Clock, n_images: int, bf16: bool, peak: float,
                 samplers: tuple[tuple[str, int], ...]) -> list[dict]:
    """Seconds per image of each sampler (the first is the speed-up baseline) on one stage B model."""
    from mindvis.models.ldm.sampling import SamplerConfig, sample_images

    fmri = torch.randn(n_images, 1, model.conditioner.num_voxels)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    step_flops = w.count_flops(w.sampler_step(model, 1, device, torch.bfloat16 if bf16 else None))
    extra = (w.count_flops(w.condition_step(model, 1, device)) + w.count_flops(w.decode_step(model, 1, device)))

    def run(name: str, steps: int) -> float:
        cfg = SamplerConfig(sampler=name, steps=steps, n_samples=1, batch_size=n_images)
        with amp:
            return clock.time(lambda: sample_images(model, fmri, cfg, device=device))

    run("ddim", 2)  # warm-up: kernels, allocator
    rows = []
    for name, steps in samplers:
        seconds = run(name, steps)
        flops = w.model_evaluations(name, steps) * step_flops + extra
        label = {"plms": "PLMS", "dpmpp": "DPM-Solver++", "ddim": "DDIM"}.get(name, name)
        rows.append({"workload": f"{label}-{steps} "
                                 f"({'bf16' if bf16 else 'fp32'}, {model.spec.vq.resolution} px)",
                     "batch": n_images, "s_per_image": seconds / n_images, "samples_per_s": n_images / seconds,
                     "tflop_per_s": flops * n_images / seconds / 1e12, "share_of_peak": flops * n_images / seconds / peak})
    rows[1]["speedup_vs_plms"] = rows[0]["s_per_image"] / rows[1]["s_per_image"]
    return rows


# -- 5. DDP -------------------------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, size: str, backend: str, batch: int, warmup: int, repeats: int,
                result_path: str) -> None:
    import torch.distributed as dist

    device = torch.device("cuda", rank) if backend == "nccl" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        model = w.build_mbm(size, device)
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[rank] if device.type == "cuda" else None)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
        amp = torch.bfloat16 if device.type == "cuda" else None
        x = torch.randn(batch, 1, model.num_voxels, device=device)
        noise = torch.rand(batch, model.n_tokens, device=device)

        def step():
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                loss, _, _ = net(x, w.MASK_RATIO, noise)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        seconds = Clock(device).median(step, warmup, repeats)
        if rank == 0:
            Path(result_path).write_text(json.dumps({"s_per_step": seconds}))
    finally:
        dist.destroy_process_group()


def ddp_row(size: str, device, world: int, batch: int, warmup: int, repeats: int, single_s: float) -> dict:
    import torch.multiprocessing as mp

    backend = "nccl" if device.type == "cuda" else "gloo"
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "rank0.json"
        mp.spawn(_ddp_worker, args=(world, _free_port(), size, backend, batch, warmup, repeats, str(result)),
                 nprocs=world, join=True)
        seconds = json.loads(result.read_text())["s_per_step"]
    return {"workload": f"SC-MBM A1 step, {world}-process DDP ({backend})", "batch": f"{world} x {batch}",
            "s_per_step": seconds, "samples_per_s": world * batch / seconds,
            "scaling_vs_1_process": (world * batch / seconds) / (batch / single_s)}


# -- report ---------------------------------------------------------------------------------------------------------------
def print_rows(rows: list[dict]) -> None:
    print(f"{'workload':46s}{'batch':>7s}{'s/step':>9s}{'s/image':>9s}{'samples/s':>11s}{'peak mem':>10s}"
          f"{'TFLOP/s':>9s}{'of peak':>9s}")
    for r in rows:
        def f(key, fmt):
            return format(r[key], fmt) if r.get(key) is not None else ""
        mem = f"{r['peak_gb']:.1f} GB" if r.get("peak_gb") is not None else ""
        share = f"{r['share_of_peak']:.0%}" if r.get("share_of_peak") is not None else ""
        print(f"{r['workload'][:45]:46s}{str(r['batch']):>7s}{f('s_per_step', '.4f'):>9s}{f('s_per_image', '.3f'):>9s}"
              f"{f('samples_per_s', '.1f'):>11s}{mem:>10s}{f('tflop_per_s', '.1f'):>9s}{share:>9s}")


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.cpu_smoke and not torch.cuda.is_available():
        print("gpu_check: no GPU (torch.cuda.is_available() is False): nothing measured. Run it on a CUDA machine, "
              "or pass --cpu-smoke to exercise the script's logic on the CPU.")
        return 0
    size = "smoke" if args.cpu_smoke else "paper"
    device = torch.device("cpu" if args.cpu_smoke else "cuda")
    clock = Clock(device)
    if args.cpu_smoke:
        torch.set_num_threads(min(2, os.cpu_count() or 1))
        print("gpu_check --cpu-smoke: the GPU check's logic on the CPU at tiny widths; the figures mean nothing")
        n, a1_batch, b_batch = 256, 8, args.b_batch
    else:
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 sampling as on any Ampere+ setup
        torch.backends.cudnn.allow_tf32 = True
        props = torch.cuda.get_device_properties(0)
        print(f"gpu_check on {props.name} ({torch.cuda.device_count()} GPU(s), {props.total_memory / 1024**3:.0f} GiB), "
              f"torch {torch.__version__}, CUDA {torch.version.cuda}")
        n, a1_batch, b_batch = 8192, args.a1_batch, args.b_batch
    report: dict = {"device": str(device), "size": size, "torch": torch.__version__}
    t_start = time.perf_counter()

    peak = matmul_peak(device, clock, n, args.warmup, args.repeats)
    report["bf16_matmul_peak_tflops"] = peak / 1e12
    print(f"bf16 matmul peak ({n}^3, median of {args.repeats}): {peak / 1e12:.1f} TFLOP/s", flush=True)

    paths = trainer_paths(size, device)
    report["trainer_paths"] = paths
    for name, r in paths.items():
        print(f"{name}: {r['steps']} steps on {device.type}, precision {r['precision']}, "
              f"final loss {r['final_loss']:.4f} (finite), {r['seconds']:.1f} s", flush=True)

    bf16 = torch.bfloat16
    rows = [
        timed_training("SC-MBM A1 step (paper preset, bf16)", lambda d: w.build_mbm(size, d), w.a1_step, a1_batch,
                       device, clock, bf16, args.warmup, args.repeats, peak),
        timed_training("stage B step (VQ-f4 + cin256-v2, bf16)", lambda d: w.build_stage_b(size, d), w.stage_b_step,
                       b_batch, device, clock, bf16, args.warmup, args.repeats, peak),
    ]
    samplers = tuple((name, int(steps)) for name, steps in (item.split(":") for item in args.samplers.split(",")))
    if len(samplers) != 2:
        raise SystemExit("--samplers takes two name:steps entries (baseline, fast)")
    model = w.build_stage_b(size, device).eval()
    for bf in (False, True):
        rows += sampler_rows(model, device, clock, args.sample_images, bf, peak, samplers)
    del model
    gpus = torch.cuda.device_count() if device.type == "cuda" else 2
    if not args.no_ddp and gpus >= 2:
        rows.append(ddp_row(size, device, 2, a1_batch, args.warmup, args.repeats, rows[0]["s_per_step"]))
    elif not args.no_ddp:
        print("DDP: skipped (one GPU)")
    report["rows"] = rows
    print()
    print_rows(rows)

    a1_share = rows[0]["share_of_peak"]
    speedups = [r["speedup_vs_plms"] for r in rows if "speedup_vs_plms" in r]
    report["goals"] = {"a1_share_of_peak": a1_share, "a1_goal": A1_GOAL, "a1_met": a1_share >= A1_GOAL,
                       "dpmpp_speedup": speedups, "speedup_goal": SPEEDUP_GOAL,
                       "speedup_met": all(s >= SPEEDUP_GOAL for s in speedups)}
    print(f"\ngoal SC-MBM A1 >= {A1_GOAL:.0%} of the bf16 matmul peak: {a1_share:.0%} "
          f"({'met' if a1_share >= A1_GOAL else 'NOT met'})")
    print(f"goal {rows[3]['workload'].split(' (')[0]} >= {SPEEDUP_GOAL:g}x faster per image than "
          f"{rows[2]['workload'].split(' (')[0]}: "
          + ", ".join(f"{s:.1f}x" for s in speedups) + f" (fp32, bf16; {'met' if report['goals']['speedup_met'] else 'NOT met'})")
    report["seconds"] = time.perf_counter() - t_start
    print(f"gpu_check finished in {report['seconds']:.0f} s")
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
