"""metrics.json with its controls and its spread over generation seeds.

`evaluate_with_controls` scores the model's samples (`evaluate_samples`), then each control's
samples with the same function and settings (so every number of a control is computed exactly
as the model's), and assembles:

  baselines.shuffled_fmri / prior_only / train_retrieval   {metric: {value, ci95[, p_value]}}
  baselines.nearest_train_copy  how much the reconstructions look like training images
  baselines.chance              {metric: chance level}
  metrics.<name>.across_seeds   {mean, sd, n, seeds, values} over the generation seeds

The control samples come from `mindvis generate-controls` (mindvis.generation.controls).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from mindvis.utils.errors import InputDataError

log = logging.getLogger(__name__)

CONTROLS = ("shuffled_fmri", "prior_only", "train_retrieval")

DEFINITIONS = {
    "shuffled_fmri": (
        "The same stage B model, sampler, steps, guidance and starting noise, conditioned on the fMRI of a "
        "DIFFERENT test item (a fixed derangement: no item keeps its own fMRI), scored against the original "
        "ground truth. If the model reads the brain, every identification metric falls to chance here."
    ),
    "prior_only": (
        "The same model and starting noise with the condition dropped: the unconditional branch that "
        "classifier-free guidance uses (an all-zero context, trained through cond_drop_prob). What the model "
        "draws from its prior alone; identification must be at chance."
    ),
    "train_retrieval": (
        "No generative model: for each test fMRI, the training image whose training fMRI correlates best "
        "(Pearson over voxels, the model's view of the fMRI), scored as a reconstruction (1 per item)."
    ),
    "nearest_train_copy": (
        "For each reconstruction, its nearest training image in the judge's penultimate feature space "
        "(Pearson correlation of features); share = the fraction of reconstructions that correlate more with "
        "some training image than with their own ground truth (how much the model copies the training set)."
    ),
    "chance": "Each metric's chance level (a decoder that knows nothing about the stimulus).",
}


def load_training_images(npz: str | Path, images: str | Path | None, dataset: str, size: int) -> np.ndarray:
    """The subject's training images, resized as the ground truth is (antialiased bilinear): (m, size, size, 3)."""
    from mindvis.data.pairs import split_images

    if dataset == "god" and images is None:
        raise InputDataError(npz, "GOD's training images are in images_256.npz: pass --train-images")
    return split_images(npz, images, dataset, "train", size)


def recorded_seed(path: str | Path) -> int | None:
    """The generation seed a samples file records (`generate` writes it), else None."""
    from mindvis.io.npz import open_npz

    with open_npz(path, "samples file") as z:
        return int(z["seed"]) if "seed" in z.files else None


def nearest_train_copy(gen_feats: np.ndarray, gt_feats: np.ndarray, train_feats: np.ndarray, unc) -> dict:
    """gen_feats (n, K, D), gt_feats (n, D), train_feats (m, D): the share of reconstructions closer (Pearson r)
    to a training image than to their own ground truth, with its bootstrap interval over test items."""
    from mindvis.metrics.identification import correlation_matrix
    from mindvis.evaluation.uncertainty import ItemMeans, bootstrap_indices, multiplicities, percentile_interval

    n, k = gen_feats.shape[:2]
    flat = gen_feats.reshape(n * k, -1)
    r_train = correlation_matrix(flat, train_feats).max(axis=1).reshape(n, k)
    r_own = np.einsum("nkd,nd->nk", _standardise(gen_feats), _standardise(gt_feats)) / gen_feats.shape[-1]
    closer = (r_train > r_own).astype(np.float64)
    ci = None
    if unc.bootstrap:
        counts = multiplicities(bootstrap_indices(n, unc.bootstrap, unc.seed), n)
        ci = percentile_interval(ItemMeans(closer).replicates(counts))
    return {"share_closer_to_train": float(closer.mean()), "ci95": ci, "definition": DEFINITIONS["nearest_train_copy"],
            "n_train": int(len(train_feats)), "mean_r_nearest_train": float(r_train.mean()),
            "mean_r_own_ground_truth": float(r_own.mean())}


def _standardise(x: np.ndarray) -> np.ndarray:
    """Each feature vector centred and scaled to unit population std (Pearson r = mean of products)."""
    x = np.asarray(x, np.float64)
    x = x - x.mean(axis=-1, keepdims=True)
    std = x.std(axis=-1, keepdims=True)
    return np.divide(x, std, out=np.zeros_like(x), where=std > 0)


def _control_summary(doc: dict) -> dict[str, dict]:
    out = {}
    for name, rec in doc["metrics"].items():
        one = {"value": rec["value"], "ci95": rec.get("ci95")}
        if "p_value" in rec:
            one["p_value"] = rec["p_value"]
        out[name] = one
    return out


def across_seeds(values_per_seed: list[float], seeds: list[int]) -> dict:
    arr = np.asarray(values_per_seed, dtype=np.float64)
    sd = float(arr.std(ddof=1)) if arr.size > 1 else None
    return {"mean": float(arr.mean()), "sd": sd, "n": int(arr.size), "seeds": [None if s is None else int(s) for s in seeds],
            "values": arr.tolist()}


def evaluate_with_controls(samples: np.ndarray, ground_truth: np.ndarray, cfg, judge=None, test_labels=None,
                           identity: dict | None = None, seed: int | None = None,
                           controls: dict[str, tuple[str, np.ndarray, np.ndarray]] | None = None,
                           train_images: np.ndarray | None = None,
                           seed_runs: list[tuple[str, int | None, np.ndarray, np.ndarray]] | None = None,
                           pixel_ground_truth: np.ndarray | None = None) -> dict:
    """metrics.json for the model's samples, its controls and its other generation seeds.

    controls: name -> (file, samples, ground_truth) for any of CONTROLS; train_images (m, H, W, 3) for
    nearest_train_copy; seed_runs: (file, seed, samples, ground_truth) of the other generation seeds. Every
    control and seed run must hold the same test items, in the same order, as the model's samples.
    pixel_ground_truth: the test images at the NSD suite's PixCorr/SSIM size (425 px), when the dataset has them.
    """
    from mindvis.evaluation import evaluate_samples, load_networks, resolve_pixels
    from mindvis.evaluation import judges as J
    from mindvis.evaluation.uncertainty import UncertaintyConfig

    if judge is None:
        judge = J.load_judge(cfg.judge, cfg.judge_weights, "evaluate.judge_weights")
    cfg = resolve_pixels(cfg, (identity or {}).get("dataset"))  # controls are scored at the model's size
    # the same networks score the model, every control and every seed run: each file is read once
    pix = {"pixel_ground_truth": pixel_ground_truth, "networks": load_networks(cfg)}
    features: dict[str, np.ndarray] = {}
    doc = evaluate_samples(samples, ground_truth, cfg, judge=judge, test_labels=test_labels, identity=identity,
                           features_out=features, **pix)
    controls = controls or {}
    baselines: dict[str, dict] = {}
    provenance: dict[str, dict] = {}
    for name in CONTROLS:
        if name not in controls:
            continue
        path, ctrl_samples, ctrl_gt = controls[name]
        _same_items(path, ctrl_gt, ground_truth)
        log.info("control %s: %s", name, path)
        ctrl = evaluate_samples(ctrl_samples, ctrl_gt, cfg, judge=judge, test_labels=test_labels, **pix)
        baselines[name] = _control_summary(ctrl)
        provenance[name] = {"file": str(path), "k_samples": int(ctrl_samples.shape[1])}
    if train_images is not None:
        train_feats = judge.run(train_images, cfg.batch_size)[1]
        unc = UncertaintyConfig(bootstrap=cfg.bootstrap, permutations=cfg.permutations)
        baselines["nearest_train_copy"] = nearest_train_copy(features["gen"], features["gt"], train_feats, unc)
    baselines["chance"] = {name: rec["chance"] for name, rec in doc["metrics"].items() if rec["chance"] is not None}
    doc["baselines"] = baselines
    doc["baseline_definitions"] = {name: DEFINITIONS[name] for name in baselines}
    doc["baseline_samples"] = provenance

    runs = [doc]
    seeds = [seed]
    quick = replace(cfg, bootstrap=0, permutations=0)  # the spread over seeds needs the values only
    for path, other_seed, run_samples, run_gt in seed_runs or []:
        _same_items(path, run_gt, ground_truth)
        runs.append(evaluate_samples(run_samples, run_gt, quick, judge=judge, test_labels=test_labels, **pix))
        seeds.append(other_seed)
    doc["seeds"] = seeds  # None where a samples file does not record its seed
    for name, rec in doc["metrics"].items():
        rec["across_seeds"] = across_seeds([r["metrics"][name]["value"] for r in runs], doc["seeds"])
    return doc


def _same_items(path, other_gt: np.ndarray, ground_truth: np.ndarray) -> None:
    if other_gt.shape != ground_truth.shape or not np.array_equal(other_gt, ground_truth):
        raise InputDataError(path, "its ground truth differs from the model's samples (not the same test items in "
                             "the same order): regenerate it with the same generate settings")
