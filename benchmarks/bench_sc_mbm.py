"""SC-MBM forward+backward throughput and peak memory: ours vs a plain fp32 eager implementation.

Ours: `mindvis.models.ScMbm` (timm blocks, fused scaled-dot-product attention;
on CUDA bf16 autocast with the flash-attention kernel). Baseline, written
here: the same network evaluated with plain tensor ops (attention as
q @ k^T, softmax, @ v), fp32, no autocast, reading the SAME parameter tensors
(shared weights; checked to give the same loss before timing).

Per preset and device it prints samples/s, peak memory, the ratio ours /
baseline, and achieved FLOP/s (torch's FlopCounterMode count of one step)
against a matmul peak measured in the same run. Speed: ours and the baseline
alternate step by step in one process on the same weights and inputs, and
the median step time is reported, so machine load hits both alike. Memory:
the peak of one step over what model and inputs already hold; on CPU the
peak RSS (VmHWM, reset first) of a fresh process per implementation. CUDA parts are skipped when there is no GPU.

    python benchmarks/bench_sc_mbm.py                      # tiny + paper, CPU (+ CUDA if present)
    python benchmarks/bench_sc_mbm.py --presets tiny --steps 20
"""

from __future__ import annotations

import argparse
from contextlib import nullcontext
import json
import math
import statistics
import multiprocessing as mp
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from mindvis.models import PRESETS, ScMbm


# -- the baseline: same weights, plain ops ---------------------------------------------------------
def _layer_norm(x, norm):
    return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


def _plain_block(x, blk, heads):
    b, n, d = x.shape
    h = _layer_norm(x, blk.norm1)
    qkv = (h @ blk.attn.qkv.weight.t() + blk.attn.qkv.bias).reshape(b, n, 3, heads, d // heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (b, heads, n, hd)
    att = torch.softmax((q @ k.transpose(-2, -1)) / math.sqrt(d // heads), dim=-1)
    o = (att @ v).transpose(1, 2).reshape(b, n, d)
    x = x + o @ blk.attn.proj.weight.t() + blk.attn.proj.bias
    h = _layer_norm(x, blk.norm2)
    h = F.gelu(h @ blk.mlp.fc1.weight.t() + blk.mlp.fc1.bias)
    return x + h @ blk.mlp.fc2.weight.t() + blk.mlp.fc2.bias


def plain_forward(m: ScMbm, x: torch.Tensor, mask_ratio: float, noise: torch.Tensor) -> torch.Tensor:
    """The masked-autoencoder loss of `m`, computed without timm or fused kernels."""
    a = m.arch
    tokens = F.conv1d(x, m.patch_embed.proj.weight, m.patch_embed.proj.bias, stride=a.patch_size).transpose(1, 2)
    tokens = tokens + m.pos_embed[:, 1:]
    kept, mask, ids_restore = m.random_masking(tokens, mask_ratio, noise)
    h = torch.cat([(m.cls_token + m.pos_embed[:, :1]).expand(x.shape[0], -1, -1), kept], dim=1)
    for blk in m.blocks:
        h = _plain_block(h, blk, a.num_heads)
    h = _layer_norm(h, m.norm)
    h = h @ m.decoder_embed.weight.t() + m.decoder_embed.bias
    fill = m.mask_token.expand(x.shape[0], m.n_tokens + 1 - h.shape[1], -1)
    body = torch.gather(torch.cat([h[:, 1:], fill], 1), 1, ids_restore[:, :, None].expand(-1, -1, h.shape[2]))
    h = torch.cat([h[:, :1], body], dim=1) + m.decoder_pos_embed
    for blk in m.decoder_blocks:
        h = _plain_block(h, blk, a.decoder_num_heads)
    pred = (_layer_norm(h, m.decoder_norm) @ m.decoder_pred.weight.t() + m.decoder_pred.bias)[:, 1:]
    per_patch = ((pred - x.reshape(x.shape[0], m.n_tokens, a.patch_size)) ** 2).mean(-1)
    return (per_patch * mask).sum() / mask.sum()


# -- measurement -------------------------------------------------------------------------------------
def _status_mb(field: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> float:
    """Reset the process's peak-RSS mark (Linux clear_refs "5"); return the current RSS in MB."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    return _status_mb("VmRSS")


def _setup(preset: str, device: torch.device, batch: int, tokens: int):
    torch.manual_seed(0)
    model = ScMbm(PRESETS[preset], tokens).to(device)
    x = torch.randn(batch, 1, model.num_voxels, device=device)
    noise = torch.rand(batch, tokens, device=device)
    return model, x, noise


def _step_fn(model, impl, device, x, noise):
    """One forward+backward of `impl` ("ours" or "baseline"); gradients are dropped afterwards."""
    if impl == "ours":
        amp = device.type == "cuda"
        # on CUDA, ours must run a fused kernel (flash, else memory-efficient): never the math fallback
        kernels = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION] if amp else None

        def step():
            with sdpa_kernel(kernels) if kernels else nullcontext():
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    loss = model(x, 0.75, noise)[0]
                loss.backward()
            model.zero_grad(set_to_none=True)
    else:
        def step():
            plain_forward(model, x, 0.75, noise).backward()
            model.zero_grad(set_to_none=True)
    return step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_interleaved(preset: str, device_name: str, batch: int, steps: int, tokens: int, warmup: int) -> dict:
    """Median seconds per step of ours and of the baseline, alternating step by step on the same
    weights and inputs, so both see the same machine load (the CPU here is shared)."""
    device = torch.device(device_name)
    model, x, noise = _setup(preset, device, batch, tokens)
    fns = {impl: _step_fn(model, impl, device, x, noise) for impl in ("ours", "baseline")}
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {"ours": [], "baseline": []}
    for i in range(steps):
        for impl in (("ours", "baseline") if i % 2 == 0 else ("baseline", "ours")):
            _sync(device)
            t0 = time.perf_counter()
            fns[impl]()
            _sync(device)
            times[impl].append(time.perf_counter() - t0)
    flops = count_flops(model, x, noise)
    out = {}
    for impl, ts in times.items():
        med = statistics.median(ts)
        out[impl] = {"preset": preset, "impl": impl, "device": device_name, "batch": batch, "steps": steps,
                     "tokens": tokens, "s_per_step": med, "s_per_step_min": min(ts), "samples_per_s": batch / med,
                     "flops_per_step": flops, "tflops": flops / med / 1e12}
    return out


def peak_memory(preset: str, impl: str, device_name: str, batch: int, tokens: int) -> dict:
    """Peak memory of one forward+backward over what the model and inputs already hold."""
    device = torch.device(device_name)
    model, x, noise = _setup(preset, device, batch, tokens)
    step = _step_fn(model, impl, device, x, noise)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
    else:
        base = _reset_peak_rss()
    step()
    step()
    _sync(device)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else _status_mb("VmHWM")
    return {"peak_mem_mb": peak, "mem_before_mb": base, "peak_extra_mb": peak - base}


def count_flops(model: ScMbm, x: torch.Tensor, noise: torch.Tensor) -> int:
    """FLOPs of one forward+backward, by torch's FlopCounterMode on the plain implementation
    (it does not count fused CPU attention kernels, so counting on ours would under-report)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        plain_forward(model, x, 0.75, noise).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def _child(queue, kwargs):
    torch.set_num_threads(kwargs.pop("threads"))
    queue.put(peak_memory(**kwargs))


def peak_memory_isolated(threads: int, **kwargs) -> dict:
    """CPU: peak RSS must belong to one implementation alone, so each runs in a fresh process."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(queue, dict(kwargs, threads=threads)))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def matmul_peak_tflops(device: torch.device, dtype: torch.dtype, size: int, reps: int, trials: int = 5) -> float:
    """Best of `trials` timings of `reps` square matmuls: the practical peak of this device and dtype."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    best = 0.0
    for _ in range(trials):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = max(best, 2 * size**3 * reps / (time.perf_counter() - t0) / 1e12)
    return best


def check_same_loss(preset: str, tokens: int, device: str) -> float:
    torch.manual_seed(0)
    model = ScMbm(PRESETS[preset], tokens).to(device)
    x = torch.randn(2, 1, model.num_voxels, device=device)
    noise = torch.rand(2, tokens, device=device)
    with torch.no_grad():
        return abs(float(model(x, 0.75, noise)[0]) - float(plain_forward(model, x, 0.75, noise)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["tiny", "paper"], choices=list(PRESETS))
    parser.add_argument("--tokens", type=int, default=291, help="tokens N (291 = 4656 voxels, MinD-Vis HCP)")
    parser.add_argument("--cpu-batch", type=json.loads, default={"tiny": 32, "paper": 2},
                        help='JSON per preset, e.g. \'{"tiny": 32, "paper": 2}\'')
    parser.add_argument("--tiny-tokens", type=int, default=64, help="tokens N for the tiny preset")
    parser.add_argument("--cpu-steps", type=json.loads, default={"tiny": 20, "paper": 2})
    parser.add_argument("--cuda-batch", type=json.loads, default={"tiny": 256, "paper": 100})
    parser.add_argument("--cuda-steps", type=json.loads, default={"tiny": 50, "paper": 20})
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="CPU threads per measurement (on a shared machine use 1: spinning OpenMP threads "
                             "waiting for a busy core make multi-threaded timings erratic)")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()

    results = []
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if "cuda" not in devices:
        print("no CUDA device: CUDA measurements (bf16, flash attention, TFLOP/s vs GPU peak) skipped")
    for device in devices:
        if device == "cpu":
            torch.set_num_threads(args.threads)
            peak = matmul_peak_tflops(torch.device("cpu"), torch.float32, 2048, 3)
            peak_label = f"fp32 matmul peak {peak * 1e3:.1f} GFLOP/s ({args.threads} threads)"
        else:
            peak = matmul_peak_tflops(torch.device("cuda"), torch.bfloat16, 8192, 50)
            peak32 = matmul_peak_tflops(torch.device("cuda"), torch.float32, 8192, 10)
            peak_label = (f"bf16 matmul peak {peak:.0f} TFLOP/s, fp32 {peak32:.1f} TFLOP/s "
                          f"({torch.cuda.get_device_name()})")
        print(f"\n== {device}: {peak_label}")
        for preset in args.presets:
            tokens = args.tokens if preset == "paper" else args.tiny_tokens
            diff = check_same_loss(preset, tokens, device)
            batch = (args.cpu_batch if device == "cpu" else args.cuda_batch)[preset]
            steps = (args.cpu_steps if device == "cpu" else args.cuda_steps)[preset]
            torch.set_num_threads(args.threads)
            row = time_interleaved(preset, device, batch, steps, tokens, warmup=1 if device == "cpu" else 3)
            for impl, r in row.items():
                kw = dict(preset=preset, impl=impl, device_name=device, batch=batch, tokens=tokens)
                r.update(peak_memory_isolated(args.threads, **kw) if device == "cpu" else peak_memory(**kw))
                r["fraction_of_matmul_peak"] = r["tflops"] / (peak if (impl == "ours" or device == "cpu") else peak32)
                results.append(r)
                mem = "peak RSS" if device == "cpu" else "peak alloc"
                print(f"{preset:5s} {impl:8s} batch {batch:4d}, N={tokens}, median of {steps} steps: "
                      f"{r['samples_per_s']:9.1f} samples/s, {r['s_per_step'] * 1e3:8.1f} ms/step, "
                      f"{mem} {r['peak_mem_mb']:8.0f} MB (+{r['peak_extra_mb']:.0f} MB for the step), "
                      f"{r['tflops'] * 1e3:8.1f} GFLOP/s = {100 * r['fraction_of_matmul_peak']:.0f}% of matmul peak")
            ratio = row["ours"]["samples_per_s"] / row["baseline"]["samples_per_s"]
            mem_ratio = row["ours"]["peak_extra_mb"] / max(row["baseline"]["peak_extra_mb"], 1e-9)
            print(f"{preset:5s} speed ours/baseline = {ratio:.2f}x, step-memory ours/baseline = {mem_ratio:.2f}, "
                  f"|loss difference| with shared weights = {diff:.2e}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
