"""Names people read: metric labels and order, control names, number formats.

Everything here maps a key of metrics.json (or of the sampler table) to what the
page shows; nothing computes a metric.
"""

from __future__ import annotations

import html
import math

# The order metrics appear in the details tables: the reference's first, then the field's.
METRIC_ORDER = [
    "nway_top1_exact", "nway_top1_sampled", "top1_all_classes",
    "identification_pcc", "identification_ssim", "identification_mse", "identification_lpips",
    "nsd_two_way_clip", "nsd_two_way_inception", "nsd_two_way_alexnet_2", "nsd_two_way_alexnet_5",
    "nsd_two_way_judge", "nsd_pixcorr", "pcc_raw_mean", "nsd_ssim_gray", "ssim_raw_mean", "mse_raw_mean",
    "nsd_distance_effnet", "nsd_distance_swav",
    "fid_judge_features", "fid_inception_2048", "fid_inception_64_reference", "judge_gt_accuracy",
]
LABELS = {
    "nway_top1_exact": "{n}-way top-1",
    "nway_top1_sampled": "{n}-way top-1 (Monte-Carlo)",
    "top1_all_classes": "top-1 of {n_classes} classes",
    "identification_pcc": "identification by PCC",
    "identification_ssim": "identification by SSIM",
    "identification_mse": "identification by MSE",
    "identification_lpips": "identification by LPIPS",
    "nsd_two_way_clip": "2-way CLIP",
    "nsd_two_way_inception": "2-way Inception",
    "nsd_two_way_alexnet_2": "2-way AlexNet(2)",
    "nsd_two_way_alexnet_5": "2-way AlexNet(5)",
    "nsd_two_way_judge": "2-way judge features",
    "nsd_pixcorr": "PixCorr",
    "pcc_raw_mean": "PCC (raw mean)",
    "nsd_ssim_gray": "SSIM (gray)",
    "nsd_distance_effnet": "EffNet-B distance",
    "nsd_distance_swav": "SwAV distance",
    "ssim_raw_mean": "SSIM (colour)",
    "mse_raw_mean": "pixel MSE",
    "fid_judge_features": "FID (judge features)",
    "fid_inception_2048": "FID (Inception 2048)",
    "fid_inception_64_reference": "FID-64 (reference variant)",
    "judge_gt_accuracy": "judge accuracy on ground truth",
    "seconds_per_image": "seconds per image",
}
# Rates in [0, 1]: shown with three decimals, plotted on a 0..1 axis.
RATE_PREFIXES = ("nway_", "top1_", "identification_", "nsd_two_way_", "judge_gt_", "nearest_train_")
# The share of reconstructions closer to a training image (baselines.nearest_train_copy).
COPY_SHARE = "nearest_train_copy"

# The headline table's columns: per group, the first metric any run has.
HEADLINE_GROUPS = (
    ("nway_top1_exact", "nway_top1_sampled"),
    ("top1_all_classes",),
    ("identification_pcc",),
    ("nsd_two_way_clip", "nsd_two_way_judge"),
)

# metrics.json keys that hold the same number as another key: shown once (see SAME_AS_NOTE).
SAME_AS = {"pcc_raw_mean": "nsd_pixcorr"}  # only while PixCorr is at native size (no pixel_size)
SAME_AS_NOTE = (
    "metrics.json also holds pcc_raw_mean, the same computation as PixCorr (Pearson correlation of the "
    "flattened RGB pixels of each reconstruction with its own ground truth, mean over images, at native "
    "resolution): it is shown once, as PixCorr."
)

MODEL = "model"
CHANCE = "chance"
# Controls in the order the page lists them: key in metrics.json's baselines, label, colour.
CONTROLS = (
    ("shuffled_fmri", "shuffled fMRI", "#d62728"),
    ("prior_only", "prior only (no fMRI)", "#9467bd"),
    ("train_retrieval", "train retrieval", "#8c564b"),
)
SOURCE_LABELS = {MODEL: "model", CHANCE: "chance", **{k: label for k, label, _ in CONTROLS}}
SOURCE_COLOURS = {MODEL: "#1f6fb4", CHANCE: "#777777", **{k: colour for k, _, colour in CONTROLS}}
# What each control is, when metrics.json carries no definition of its own.
CONTROL_DEFINITIONS = {
    "shuffled_fmri": "The same stage B model and sampler, each test item conditioned on the fMRI of a different "
    "test item (a fixed derangement). If the model reads the brain, every identification metric falls to chance.",
    "prior_only": "Samples with the condition dropped (the unconditional / \"no class\" branch), same seeds: what "
    "the generative prior draws without any fMRI.",
    "train_retrieval": "No generative model: for each test fMRI, the training image whose training fMRI "
    "correlates best with it, scored as if it were the reconstruction.",
    "nearest_train_copy": "For each reconstruction, its nearest training image in the judge's feature space; the "
    "share of reconstructions closer to a training image than to their own ground truth (how much the model "
    "copies training images).",
    "chance": "What a decoder that ignores the brain scores on average: 1/n for n-way top-1, 1/C for top-1 of C "
    "classes, 0.5 for pair-wise and 2-way identification.",
}

DATASET_NAMES = {"god": "GOD", "bold5000": "BOLD5000", "hcp": "HCP", "nsd": "NSD"}
SAMPLER_NAMES = {"plms": "PLMS", "ddim": "DDIM", "dpmpp": "DPM-Solver++ 2M"}
SAMPLER_COLUMNS = {
    "sampler": "Sampler", "steps": "Steps", "seconds_per_image": "Seconds per image",
    "speedup": "Speed-up", "images": "Images", "dataset": "Dataset", "subject": "Subject",
}


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def is_rate(name: str) -> bool:
    return name.startswith(RATE_PREFIXES)


def metric_label(name: str, rec: dict | None = None) -> str:
    """'5-way top-1' from the key and the record's n / n_classes; unknown keys read as words."""
    template = LABELS.get(name)
    if template is None:
        return name.replace("_", " ")
    rec = rec or {}
    try:
        return template.format(n=rec.get("n", "n"), n_classes=rec.get("n_classes", "all"))
    except (KeyError, IndexError):
        return template


def finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def decimals(name: str, value) -> int:
    """Rates: 3. Other numbers: three significant digits (none past the point from 100 up)."""
    if is_rate(name):
        return 3
    if not finite(value) or value == 0 or abs(value) >= 100:
        return 0 if finite(value) and abs(value) >= 100 else 3
    return max(0, 2 - math.floor(math.log10(abs(value))))


def format_value(name: str, value, places: int | None = None) -> str:
    """Rates with three decimals; other numbers with three significant digits (or `places` decimals)."""
    if not finite(value):
        return "n/a"
    if value == 0 and places is None and not is_rate(name):
        return "0"
    return f"{value:.{decimals(name, value) if places is None else places}f}"


def format_interval(name: str, ci, value=None) -> str:
    """'0.792–0.866' from [lo, hi], with as many decimals as `value` (the estimate) is shown with."""
    if not isinstance(ci, (list, tuple)) or len(ci) != 2 or not all(finite(v) for v in ci):
        return ""
    places = decimals(name, value if finite(value) else max(abs(ci[0]), abs(ci[1])))
    return f"{format_value(name, ci[0], places)}–{format_value(name, ci[1], places)}"


def format_p(p) -> str:
    if not finite(p):
        return ""
    if p < 0.001:
        return "p < 0.001"
    return f"p = {p:.3f}" if p < 0.01 else f"p = {p:.2f}"


def run_title(doc: dict) -> str:
    """'GOD · subject 1', 'BOLD5000 · CSI4'; a run evaluated without its identity: its samples file."""
    if doc.get("dataset") is None:
        return str(doc.get("samples_file") or "unnamed run")
    dataset = str(doc["dataset"])
    subject = str(doc.get("subject", "?"))
    name = DATASET_NAMES.get(dataset.lower(), dataset)
    who = f"CSI{subject}" if dataset.lower() == "bold5000" and subject.isdigit() else f"subject {subject}"
    return f"{name} · {who}"


def sampler_name(raw) -> str:
    return SAMPLER_NAMES.get(str(raw).lower(), str(raw))
