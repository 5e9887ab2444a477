"""Screenshot of report.html in headless Chromium, e.g. for docs/report.png.

  python scripts/report_screenshot.py results/report.html docs/report.png
  python scripts/report_screenshot.py --demo /tmp/demo docs/report.png

--demo writes hand-made inputs first and renders them: illustrative numbers (the
README's decoding table with made-up intervals and controls at chance) and grids
whose "samples" are training stimuli of the ground truth's class (of another class for
about one item in seven). They show the layout, not a measurement; use the first form
on a real results/report.html to replace the picture.

Needs Debian's `chromium` (apt-get install chromium).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

# (dataset, subject, 5-way top-1, top-1 of 10, identification PCC, 2-way judge, PixCorr)
DEMO_RUNS = [
    ("god", "1", 0.829, 0.756, 0.768, 0.90, 0.385),
    ("god", "2", 0.784, 0.700, 0.609, 0.88, 0.145),
    ("bold5000", "1", 0.900, 0.852, 0.736, 0.92, 0.333),
    ("bold5000", "4", 0.854, 0.788, 0.513, 0.89, 0.015),
]
N_TEST, K = 50, 5


def _interval(p: float, n: int = N_TEST) -> list[float]:
    half = 1.96 * np.sqrt(max(p * (1 - p), 0.01) / n)
    return [round(max(0.0, p - half), 3), round(min(1.0, p + half), 3)]


def _record(value: float, label: str, chance: float | None, **extra) -> dict:
    return {"value": value, "label": label, "definition": f"{label} (illustrative demo input)", "chance": chance,
            "higher_is_better": True, "ci95": _interval(value), **extra}


def demo_metrics(dataset, subject, nway, top1, pcc, two_way, pix) -> dict:
    rng = np.random.default_rng(int(subject) + len(dataset))
    chance = {"nway_top1_exact": 0.2, "top1_all_classes": 0.1, "identification_pcc": 0.5, "nsd_two_way_judge": 0.5}

    def near(metric: str, spread: float = 0.02) -> dict:
        v = round(chance[metric] + float(rng.normal(0, spread)), 3)
        return {"value": v, "ci95": _interval(v)}

    return {
        "format": "mindvis-metrics/2", "dataset": dataset, "subject": subject, "protocol": "embedded-demo",
        "n_test": N_TEST, "k_samples": K, "judge": {"name": "small_cnn"},
        "uncertainty": {"bootstrap": 1000, "permutations": 1000, "confidence": 0.95, "unit": "test item"},
        "metrics": {
            "nway_top1_exact": _record(nway, "5-way top-1 (exact)", 0.2, n=5, n_classes=10, p_value=0.001),
            "top1_all_classes": _record(top1, "top-1 of 10", 0.1, n=10, n_classes=10, p_value=0.001),
            "identification_pcc": _record(pcc, "ID PCC", 0.5, p_value=0.001 if pcc > 0.56 else 0.31),
            "nsd_two_way_judge": _record(two_way, "2-way judge feat.", 0.5, p_value=0.001),
            "nsd_pixcorr": {**_record(pix, "PixCorr", None), "ci95": [round(pix - 0.04, 3), round(pix + 0.04, 3)]},
        },
        "skipped": {},
        "baselines": {
            "shuffled_fmri": {m: near(m) for m in chance},
            "prior_only": {m: near(m) for m in chance},
            "train_retrieval": {"nway_top1_exact": {"value": 0.62, "ci95": _interval(0.62)},
                                "top1_all_classes": {"value": 0.5, "ci95": _interval(0.5)},
                                "identification_pcc": {"value": 0.58, "ci95": _interval(0.58)}},
            "nearest_train_copy": {"share_closer_to_train": 0.08, "ci95": [0.02, 0.16]},
            "chance": chance,
        },
    }


def demo_grid(dataset: str, subject: str, out: Path) -> None:
    from PIL import Image

    from mindvis.utils.images import grid_image
    from mindvis.simulate.stimuli import StimuliConfig, build_stimuli

    stim = build_stimuli(StimuliConfig())
    rng = np.random.default_rng(int(subject) + 10 * len(dataset))
    samples = np.empty((len(stim.test_images), K, *stim.test_images.shape[1:]), np.uint8)
    for i, label in enumerate(stim.test_labels):
        for k in range(K):
            wrong = rng.random() < 0.15
            pool = np.flatnonzero((stim.train_labels != label) if wrong else (stim.train_labels == label))
            samples[i, k] = stim.train_images[rng.choice(pool)]
    Image.fromarray(grid_image(samples, stim.test_images, rows=10, cell_max=128)).save(out)


def demo_sampler_table(out: Path) -> None:
    rows = [{"sampler": "plms", "steps": 250, "seconds_per_image": 0.351, "speedup": 1.0,
             "identification_pcc": 0.758, "nway_top1_exact": 0.818},
            {"sampler": "ddim", "steps": 50, "seconds_per_image": 0.072, "speedup": 4.9,
             "identification_pcc": 0.757, "nway_top1_exact": 0.822},
            {"sampler": "dpmpp", "steps": 25, "seconds_per_image": 0.037, "speedup": 9.4,
             "identification_pcc": 0.755, "nway_top1_exact": 0.823}]
    out.write_text(json.dumps({"dataset": "god", "subject": "1", "items": N_TEST, "n_samples": 2, "n_way": 5,
                               "guidance_scale": 3.0, "threads": 1, "rows": rows}))


def write_demo_report(folder: Path) -> Path:
    from mindvis.evaluation.report import gather_inputs, write_report

    metrics, grids = [], []
    for run in DEMO_RUNS:
        d = folder / run[0] / run[1]
        d.mkdir(parents=True, exist_ok=True)
        (d / "metrics.json").write_text(json.dumps(demo_metrics(*run)))
        demo_grid(run[0], run[1], d / "grid.png")
        metrics.append(str(d / "metrics.json"))
        grids.append(str(d / "grid.png"))
    demo_sampler_table(folder / "samplers.json")
    out = folder / "report.html"
    write_report(gather_inputs(metrics, grids, str(folder / "samplers.json")), out,
                 title="mindvis results (illustrative inputs)")
    return out


def screenshot(html: Path, png: Path, width: int, height: int) -> None:
    binary = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)),
                  None)
    if binary is None:
        sys.exit("report_screenshot: no chromium binary (Debian: apt-get install chromium)")
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run([binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                               f"--user-data-dir={profile}", f"--window-size={width},{height}",
                               "--virtual-time-budget=5000", f"--screenshot={png.resolve()}", html.resolve().as_uri()],
                              capture_output=True, text=True, timeout=300)
    if proc.returncode != 0 or not png.is_file():
        sys.exit(f"report_screenshot: chromium failed: {proc.stderr[-1000:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source", help="report.html, or with --demo a folder for the hand-made inputs")
    ap.add_argument("png", help="screenshot to write, e.g. docs/report.png")
    ap.add_argument("--demo", action="store_true", help="render hand-made inputs into SOURCE first")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=2200)
    args = ap.parse_args()
    html = write_demo_report(Path(args.source)) if args.demo else Path(args.source)
    if not html.is_file():
        sys.exit(f"report_screenshot: {html}: not found")
    screenshot(html, Path(args.png), args.width, args.height)
    print(f"{html} -> {args.png}")


if __name__ == "__main__":
    main()
