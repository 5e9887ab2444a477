"""Stage B samplers side by side: the same test items, the same seeded noise, one row per sampler.

`compare_samplers` is the library function behind `mindvis compare-samplers`
(and `benchmarks/bench_samplers.py`). For each "name:steps" entry of the config
it samples the first N test items of one subject K times, from the noise seeded
by (seed, item, k) that `generate` uses, so the rows differ only by the sampler.
Per row: seconds per image (wall clock around the whole sampling call, CUDA
synchronised), the speed-up over the first row, pair-wise identification by
pixel correlation (chance 0.5; mean over the K sample sets) and, with a judge,
the n-way top-1 accuracy as its exact expectation over distractor draws (chance 1/n).

The returned dict is the sampler table the HTML report reads
(`mindvis.evaluation.report.read_sampler_table`): {"rows": [...], ...} with
"sampler", "steps", "seconds_per_image" and numeric metric columns per row.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mindvis.data.pairs import load_pairs
from mindvis.generation import check_guidance, normalisation_for
from mindvis.metrics.identification import pairwise_identification
from mindvis.utils.device import resolve_device, set_threads
from mindvis.utils.errors import ConfigError, InputDataError

log = logging.getLogger(__name__)


@dataclass
class SamplerComparisonConfig:
    """`report: samplers:`. Defaults: the reference's sampler against the two fast ones."""

    samplers: list[str] = field(default_factory=lambda: ["plms:250", "ddim:50", "dpmpp:25"])  # name:steps;
    #                              the first row is the baseline of the speed-up column
    items: int = 20  # first N test items (0 = all; identification needs at least 2)
    n_samples: int = 2  # samples per test item K (same seeded noise for every sampler)
    seed: int = 2022  # sample k of item i starts from noise seeded by (seed, i, k), as `generate`
    guidance_scale: float = 3.0  # classifier-free guidance for every sampler (the DAG passes generate's)
    batch_size: int = 50  # samples denoised together
    judge: str = "small_cnn"  # judge kind for --judge: small_cnn (from `train-judge`) | vit_h_14_swag
    n_way: int = 5  # n of the n-way top-1 with --judge; clipped to the judge's class count
    roi: str | None = None  # ROI; null = the training run's (else the dataset's default: GOD VC, BOLD5000 all)
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 1  # torch CPU threads (0 = torch's default)


def parse_sampler_specs(specs: list[str]) -> list[tuple[str, int]]:
    """["plms:250", ...] -> [("plms", 250), ...]; a malformed entry is a ConfigError naming it."""
    from mindvis.models.ldm.sampling import SAMPLERS

    if not specs:
        raise ConfigError("samplers: the list is empty; give at least one 'name:steps' entry, e.g. 'dpmpp:25'")
    parsed = []
    for spec in specs:
        name, sep, steps = str(spec).strip().partition(":")
        name = name.strip()
        if not sep or not steps.strip().isdigit():
            raise ConfigError(f"samplers: {spec!r} is not 'name:steps' with a whole number of steps "
                              f"(e.g. 'ddim:50')")
        if name not in SAMPLERS:
            raise ConfigError(f"samplers: {spec!r} names an unknown sampler {name!r} "
                              f"(choose from {', '.join(SAMPLERS)})")
        if int(steps) < 1:
            raise ConfigError(f"samplers: {spec!r} needs at least 1 step")
        parsed.append((name, int(steps)))
    return parsed


def check_config(cfg: SamplerComparisonConfig) -> list[tuple[str, int]]:
    """Everything that can be wrong before the model is loaded; returns the parsed samplers."""
    specs = parse_sampler_specs(cfg.samplers)
    if cfg.items < 0 or cfg.items == 1:
        raise ConfigError(f"items must be 0 (all) or at least 2 (pair-wise identification), got {cfg.items}")
    if cfg.n_samples < 1 or cfg.batch_size < 1:
        raise ConfigError(f"n_samples and batch_size must be at least 1, got {cfg.n_samples} and {cfg.batch_size}")
    if cfg.n_way < 2:
        raise ConfigError(f"n_way must be at least 2, got {cfg.n_way}")
    return specs


def nway_exact(judge, samples: np.ndarray, gt_probs: np.ndarray, n: int) -> float:
    """Exact expected n-way top-1 (the reference's protocol without sampling noise), mean over sample sets."""
    from mindvis.evaluation.nway import n_way_top1

    flat, _ = judge.run(samples.reshape(-1, *samples.shape[2:]))
    gen_probs = flat.reshape(samples.shape[0], samples.shape[1], -1)
    # trials=1: the Monte-Carlo estimate is not used here, only the exact expectation
    return float(n_way_top1(gen_probs, gt_probs, n, 1, np.random.default_rng(0)).summary()["exact_mean"])


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compare_samplers(model_path: str | Path, npz: str | Path, images: str | Path | None, dataset: str,
                     cfg: SamplerComparisonConfig, judge_path: str | Path | None = None) -> dict[str, Any]:
    """Sample the same test items with each configured sampler; return the sampler table (see module doc)."""
    import torch
    from tqdm import tqdm

    from mindvis.checkpoints.mindvis_ldm import load_finetuned
    from mindvis.models.ldm.sampling import SamplerConfig, sample_images

    specs = check_config(cfg)
    set_threads(cfg.threads)
    device = resolve_device(cfg.device)
    loaded = load_finetuned(model_path)
    check_guidance(loaded, cfg.guidance_scale, model_path)
    model = loaded.model.to(device).eval()
    too_many = [f"{n}:{s}" for n, s in specs if s > model.spec.schedule.timesteps]
    if too_many:
        raise ConfigError(f"samplers: {', '.join(too_many)}: more steps than the model's "
                          f"{model.spec.schedule.timesteps} diffusion timesteps")
    roi = cfg.roi or loaded.mindvis.get("roi")  # the training run's ROI unless the config names one
    # the test fMRI normalised as `generate` does for this checkpoint (MinD-Vis's files: the reference's)
    pairs = load_pairs(npz, images, dataset, "test", num_voxels=model.conditioner.num_voxels,
                       image_size=model.spec.vq.resolution, roi=roi, normalisation=normalisation_for(loaded))
    n = pairs.fmri.shape[0] if cfg.items <= 0 else min(cfg.items, pairs.fmri.shape[0])
    if n < 2:
        raise InputDataError(npz, f"{n} test item(s): pair-wise identification needs at least 2")
    fmri = torch.from_numpy(pairs.fmri[:n])[:, None, :]
    gt = pairs.images_hwc()[:n]
    n_images = n * cfg.n_samples

    judge, n_way, gt_probs = None, None, None
    if judge_path is not None:
        from mindvis.evaluation.judges import load_judge

        judge = load_judge(cfg.judge, judge_path, "--judge").to(device)
        n_way = min(cfg.n_way, judge.n_classes)
        if n_way < 2:
            raise InputDataError(judge_path, f"the judge has {judge.n_classes} class(es): n-way needs at least 2")
        if n_way < cfg.n_way:
            log.warning("n_way %d > the judge's %d classes: using %d-way", cfg.n_way, judge.n_classes, n_way)
        gt_probs, _ = judge.run(gt)

    # Warm-up outside the timing (lazy CUDA init, allocator, first-call kernel setup), on a
    # batch of the real shape, so the first (baseline) sampler is not charged for it.
    warm = SamplerConfig(sampler="ddim", steps=1, n_samples=1, seed=cfg.seed, batch_size=cfg.batch_size)
    sample_images(model, fmri[:min(n, cfg.batch_size)], warm, device=device)

    log.info("comparing %d samplers on %d test items x %d samples on %s (roi %s)", len(specs), n, cfg.n_samples,
             device, roi or "dataset default")
    rows: list[dict[str, Any]] = []
    for name, steps in specs:
        sampler = SamplerConfig(sampler=name, steps=steps, n_samples=cfg.n_samples, seed=cfg.seed,
                                batch_size=cfg.batch_size, guidance_scale=cfg.guidance_scale)
        with tqdm(total=n_images, desc=f"{name}-{steps}", unit="img", disable=None) as bar:
            _sync(device)
            t0 = time.perf_counter()
            samples, _ = sample_images(model, fmri, sampler, device=device, progress=bar.update)
            _sync(device)
            seconds = time.perf_counter() - t0
        row: dict[str, Any] = {"sampler": name, "steps": steps, "images": n_images,
                               "seconds_per_image": seconds / n_images,
                               "identification_pcc": pairwise_identification(samples, gt)}
        if judge is not None:
            row["nway_top1_exact"] = nway_exact(judge, samples, gt_probs, n_way)
        rows.append(row)
        log.info("%s-%d: %.3g s (%.4f s/image), pcc identification %.3f%s", name, steps, seconds,
                 row["seconds_per_image"], row["identification_pcc"],
                 f", {n_way}-way top-1 {row['nway_top1_exact']:.3f}" if judge is not None else "")

    base = rows[0]["seconds_per_image"]
    for row in rows:
        row["speedup"] = base / row["seconds_per_image"] if row["seconds_per_image"] > 0 else float("nan")
    result: dict[str, Any] = {"device": str(device), "threads": int(torch.get_num_threads()), "items": int(n),
                              "n_samples": int(cfg.n_samples), "seed": int(cfg.seed), "roi": roi,
                              "guidance_scale": float(cfg.guidance_scale)}
    if judge is not None:
        result.update(judge=judge.name, n_way=int(n_way), judge_classes=int(judge.n_classes))
    result["rows"] = rows
    return result


def format_table(result: dict[str, Any]) -> str:
    """The sampler table as fixed-width text: steps, s/image, speed-up, identification, n-way."""
    judged = "n_way" in result
    lines = [f"{result['items']} test items x {result['n_samples']} samples on {result['device']}, "
             f"guidance {result.get('guidance_scale', 1.0):g}; pcc identification chance 0.5"
             + (f"; {result['n_way']}-way top-1 (exact) chance {1 / result['n_way']:.2f}" if judged else "")]
    header = f"{'sampler':<10}{'steps':>6}{'s/image':>10}{'speed-up':>10}{'pcc id.':>9}"
    if judged:
        header += f"{str(result['n_way']) + '-way top-1':>14}"
    lines.append(header)
    for row in result["rows"]:
        line = (f"{row['sampler']:<10}{row['steps']:>6}{row['seconds_per_image']:>10.4f}"
                f"{row['speedup']:>9.1f}x{row['identification_pcc']:>9.3f}")
        if judged:
            line += f"{row['nway_top1_exact']:>14.3f}"
        lines.append(line)
    return "\n".join(lines)


def metric_names(rows: list[dict]) -> list[str]:
    """MLflow keys per row, '<sampler>-<steps>/<metric>'; a repeated sampler gets '_2', '_3', ..."""
    seen: dict[str, int] = {}
    names = []
    for row in rows:
        base = f"{row['sampler']}-{row['steps']}"
        seen[base] = seen.get(base, 0) + 1
        names.append(base if seen[base] == 1 else f"{base}_{seen[base]}")
    return names
