"""Evaluation: the reference protocol exactly, the field's other metrics, and what each number is.

Modules, each usable on its own:
  nway            n-way top-1 (the reference's Monte-Carlo procedure + its exact expectation)
  identification  pair-wise identification (MSE, PCC, colour SSIM, any score matrix), raw means
  fid             Fréchet distance through torchmetrics with the feature extractor passed in
  nsd_suite       PixCorr, grayscale SSIM, 2-way identification and correlation distances (NSD protocol)
  nsd_networks    the NSD suite's networks at MindEye's input sizes (AlexNet, Inception, CLIP, EffNet, SwAV)
  judges          the classifiers that score reconstructions (ViT-H/14, the demo's small CNN)
  feature_nets    feature extractors: Inception (FID), AlexNet, CLIP, LPIPS
  weight_files    pretrained weights from local files only (never downloaded)
  image_inputs    image batches -> the networks' input (resize, centre crop, normalise)
  judge_training  the embedded default's small CNN judge
  records         metrics.json records: label, definition, chance, direction of every number
  uncertainty     bootstrap intervals over test items, permutation p-values against chance
  controls        the controls (shuffled fMRI, prior only, train retrieval, nearest training copy)
                  and the spread over generation seeds, around `evaluate_samples`
  report          the HTML report across datasets and subjects

This file holds the protocol that runs them all on one samples file
(`evaluate_samples`) and its config (`EvaluateConfig`).

samples.npz (written by the generate step; read by `load_samples`):
  samples       uint8 (n_test, K, H, W, 3)  K generated images per test item
  ground_truth  uint8 (n_test, H, W, 3)     the test stimuli, same H, W
  test_labels   int   (n_test,)  optional: dataset class labels (only used to report the
                judge's own accuracy on the ground truth; never used by the metrics)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mindvis.evaluation.records import (
    FID_CI_NOTE,
    ID_RULE,
    nway_records,
    per_set_record,
    pixel_records,
    record,
    uncertainty_note,
)
from mindvis.utils.errors import InputDataError

log = logging.getLogger(__name__)

METRICS_FORMAT = "mindvis-metrics/2"


@dataclass
class EvaluateConfig:
    protocol: str = "embedded-demo"  # protocol name; tags the MLflow run and labels the report row
    judge: str = "small_cnn"  # small_cnn (the demo's, from `train-judge`) | vit_h_14_swag (the reference's)
    judge_weights: str | None = None  # judge file (--judge wins); vit_h_14_swag: vit_h_14_swag-80465313.pth
    n_way: int = 5  # classes per n-way trial, <= the judge's class count (reference: 50 of 1000)
    trials: int = 1000  # random distractor draws per test image (reference: 1000)
    seed: int = 0  # distractor draws
    batch_size: int = 32  # images per network forward pass
    device: str = "cpu"  # torch device for the networks ("cuda" on a GPU machine)
    threads: int = 1  # torch CPU threads (1 suits the demo's tiny judge; raise it for ViT-H/14 on CPU)
    ssim: bool = True  # colour-SSIM identification (n_test^2 SSIM evaluations per sample set)
    judge_fid: bool = True  # FID in the judge's penultimate feature space (the demo's stand-in)
    nsd_suite: bool = True  # PixCorr, grayscale SSIM, 2-way identification on each configured network
    nsd_pixels: str = "auto"  # PixCorr/SSIM size: mindeye (425 px) | native (the images' own) | auto (425 for nsd)
    inception_weights: str | None = None  # inception_v3_google-0cc3c7bd.pth: FID 2048 / 64, NSD Inception 2-way
    alexnet_weights: str | None = None  # torchvision alexnet-owt-7be5be79.pth: LPIPS backbone, NSD AlexNet 2/5
    lpips_weights: str | None = None  # LPIPS v0.1 alex.pth linear layers; null = the copy inside torchmetrics
    clip_weights: str | None = None  # CLIP ViT-L/14 (OpenAI) as timm/open_clip files; null = CLIP skipped
    clip_arch: str = "vit_large_patch14_clip_quickgelu_224"  # timm definition the CLIP weights fill
    effnet_weights: str | None = None  # torchvision efficientnet_b1-c27df63c.pth: NSD EffNet-B distance
    swav_weights: str | None = None  # swav_800ep_pretrain.pth.tar (facebookresearch/swav): NSD SwAV distance
    grid_rows: int = 10  # test items shown in the reconstruction grid (evenly spaced over the test set)
    grid_cell_max: int = 128  # grid cells larger than this (px) are downscaled, to keep the report small
    bootstrap: int = 1000  # resamples of the test items behind every metric's ci95 (0 = no intervals)
    permutations: int = 1000  # random pairings behind the p-values of n-way and identification (0 = none)
    controls: bool = True  # the DAG generates and scores the controls (shuffled fMRI, prior only, train retrieval)
    controls_n_samples: int = 1  # K per test item of the generated controls (same sampler and noise as the model's)
    seeds: list[int] = field(default_factory=list)  # generation seeds besides stage_b.generate.seed: mean +- sd


# ----------------------------------------------------------------------------- input


def load_samples(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(samples (n, K, H, W, 3) uint8, ground_truth (n, H, W, 3) uint8, test_labels or None)."""
    from mindvis.io.npz import open_npz

    path = Path(path)
    if not path.is_file():
        raise InputDataError(path, "samples file not found (run the generate step first)")
    with open_npz(path, "samples file") as z:
        missing = [k for k in ("samples", "ground_truth") if k not in z.files]
        if missing:
            have = ", ".join(z.files)
            raise InputDataError(path, f"not a samples file: missing {', '.join(missing)} (has {have})")
        samples, gt = z["samples"], z["ground_truth"]
        labels = z["test_labels"] if "test_labels" in z.files else None
    if samples.dtype != np.uint8 or samples.ndim != 5 or samples.shape[-1] != 3:
        raise InputDataError(path, f"samples must be uint8 (n_test, K, H, W, 3), got {samples.dtype} {samples.shape}")
    if gt.dtype != np.uint8 or gt.shape != (samples.shape[0], *samples.shape[2:]):
        raise InputDataError(
            path, f"ground_truth must be uint8 {(samples.shape[0], *samples.shape[2:])}, got {gt.dtype} {gt.shape}"
        )
    if samples.shape[0] < 2 or samples.shape[1] < 1:
        raise InputDataError(path, f"need >= 2 test items and >= 1 sample each, got {samples.shape[:2]}")
    if labels is not None and labels.shape != (samples.shape[0],):
        raise InputDataError(path, f"test_labels must be ({samples.shape[0]},), got {labels.shape}")
    return samples, gt, labels


PIXEL_GT_KEY = "test_images_pixel"  # preprocess-nsd's 425-px test images, row i <-> the samples' item i


def load_pixel_ground_truth(path: str | Path, n_test: int) -> np.ndarray:
    """The test images at the pixel metrics' size (`test_images_pixel` of an NSD subject npz)."""
    from mindvis.io.npz import open_npz

    path = Path(path)
    if not path.is_file():
        raise InputDataError(path, "pixel ground-truth file not found (run preprocess-nsd first)")
    with open_npz(path, "pixel ground-truth file") as z:
        if PIXEL_GT_KEY not in z.files:
            raise InputDataError(path, f"no {PIXEL_GT_KEY} (has {', '.join(z.files)})")
        images = z[PIXEL_GT_KEY]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or images.shape[0] != n_test:
        raise InputDataError(path, f"{PIXEL_GT_KEY} must be uint8 ({n_test}, P, P, 3) for {n_test} test items, got "
                                   f"{images.dtype} {images.shape}")
    return images


# ----------------------------------------------------------------------------- the protocol


def evaluate_samples(
    samples: np.ndarray,
    ground_truth: np.ndarray,
    cfg: EvaluateConfig,
    judge=None,
    test_labels: np.ndarray | None = None,
    identity: dict[str, Any] | None = None,
    features_out: dict[str, np.ndarray] | None = None,
    pixel_ground_truth: np.ndarray | None = None,
    networks: Networks | None = None,
) -> dict:
    """Every metric for one samples file; returns the metrics.json document.

    samples (n, K, H, W, 3) uint8, ground_truth (n, H, W, 3) uint8. `judge`: a loaded
    `judges.Judge` (else loaded from cfg.judge / cfg.judge_weights). Metrics whose
    weights are not configured are listed under "skipped" with the reason. Every record gets
    ci95 (and the main ones a p_value; `uncertainty`). features_out, when given, receives the
    judge's penultimate features: "gt" (n, D) and "gen" (n, K, D). pixel_ground_truth: the test
    images at the NSD suite's PixCorr/SSIM size (425 px, uint8), when the dataset provides them.
    networks: the pretrained networks of `load_networks(cfg)`, when already read (else read here).
    """
    import torch

    threads_before = torch.get_num_threads()
    torch.set_num_threads(max(1, cfg.threads))
    try:
        return _evaluate(samples, ground_truth, cfg, judge, test_labels, identity, features_out, pixel_ground_truth,
                         networks)
    finally:
        torch.set_num_threads(threads_before)


@dataclass
class Networks:
    """The optional pretrained networks, read once per evaluation (the model's samples, controls, seeds)."""

    alexnet: Any = None
    inception: Any = None
    nsd: tuple | None = None  # nsd_extractors' (2-way extractors, distance extractors, skipped notes)


def load_networks(cfg: EvaluateConfig) -> Networks:
    """Each configured network's weights, read once (a missing configured file fails here, before any work)."""
    from mindvis.evaluation import feature_nets as nets
    from mindvis.evaluation.nsd_networks import nsd_extractors

    out = Networks()
    if cfg.alexnet_weights:
        out.alexnet = nets.load_alexnet(cfg.alexnet_weights, "evaluate.alexnet_weights")
    if cfg.inception_weights:
        out.inception = nets.load_inception_net(cfg.inception_weights, "evaluate.inception_weights")
    if cfg.nsd_suite:
        out.nsd = nsd_extractors(cfg, out.alexnet, out.inception)
    return out


def _evaluate(samples, ground_truth, cfg: EvaluateConfig, judge, test_labels, identity, features_out,
              pixel_ground_truth=None, networks: Networks | None = None) -> dict:
    import torch

    from mindvis.evaluation import feature_nets as nets
    from mindvis.evaluation import judges as J
    from mindvis.evaluation.fid import fid_over_sample_sets
    from mindvis.evaluation.identification import correlation_matrix, identification_rates, pixel_score_matrices
    from mindvis.evaluation.nsd_suite import batched_features, nsd_item_scores, pixel_size_for, summarise_nsd
    from mindvis.evaluation.uncertainty import (
        Frechet,
        ItemMeans,
        PairScores,
        UncertaintyConfig,
        attach_uncertainty,
    )
    from mindvis.utils.seeding import seed_everything

    rng = seed_everything(cfg.seed)
    n_test, k_sets = samples.shape[:2]
    if judge is None:
        judge = J.load_judge(cfg.judge, cfg.judge_weights, "evaluate.judge_weights")
    judge.to(cfg.device)
    networks = networks if networks is not None else load_networks(cfg)
    alexnet, inception = networks.alexnet, networks.inception
    metrics: dict[str, dict] = {}
    views: dict[str, object] = {}  # per metric, what it is made of item by item (uncertainty.py)
    skipped: dict[str, str] = {}
    counts = {"n_test": int(n_test), "k_samples": int(k_sets), "image_size": [int(s) for s in samples.shape[2:4]]}
    log.info("evaluating %d test items x %d samples of %s px", n_test, k_sets, counts["image_size"])

    # --- judge: n-way top-1 -------------------------------------------------------------
    gt_probs, gt_feats = judge.run(ground_truth, cfg.batch_size)
    flat_probs, flat_feats = judge.run(samples.reshape(-1, *samples.shape[2:]), cfg.batch_size)
    gen_probs = flat_probs.reshape(n_test, k_sets, -1)
    gen_feats = flat_feats.reshape(n_test, k_sets, -1)
    if features_out is not None:
        features_out.update(gt=gt_feats, gen=gen_feats)
    records, item_views = nway_records(gen_probs, gt_probs, cfg.judge, cfg.n_way, cfg.trials, rng)
    metrics.update(records)
    views.update(item_views)
    if test_labels is not None:
        agree = gt_probs.argmax(1) == test_labels
        metrics["judge_gt_accuracy"] = record(
            float(np.mean(agree)), "judge acc. on GT", "Judge argmax on the ground-truth images vs the dataset "
            "labels: how well the judge itself knows the test stimuli (not a decoding metric).",
            1.0 / judge.n_classes, True,
        )
        views["judge_gt_accuracy"] = ItemMeans(agree.astype(np.float64)[:, None])

    # --- pixels: pair-wise identification + raw means ---------------------------------
    pixel_sets = [pixel_score_matrices(samples[:, k], ground_truth, with_ssim=cfg.ssim) for k in range(k_sets)]
    metrics.update(pixel_records(pixel_sets))
    for name in pixel_sets[0]:
        stacked = np.stack([m[name] for m in pixel_sets])  # (K, n, n)
        higher = name != "mse"
        views[f"identification_{name}"] = PairScores(stacked, higher)
        views[f"{name}_raw_mean"] = ItemMeans(np.diagonal(stacked, axis1=1, axis2=2).T)
    if not cfg.ssim:
        skipped["identification_ssim"] = "switched off (evaluate.ssim: false)"

    # --- LPIPS identification ------------------------------------------------------------
    if alexnet is not None:
        keys = ("evaluate.alexnet_weights", "evaluate.lpips_weights")
        lpips = nets.load_lpips(cfg.alexnet_weights, cfg.lpips_weights, keys, alexnet=alexnet)
        lpips.to(cfg.device)
        gts_t = torch.from_numpy(ground_truth).permute(0, 3, 1, 2).to(cfg.device)
        rates, matrices = [], []
        for k in range(k_sets):
            preds_t = torch.from_numpy(np.ascontiguousarray(samples[:, k])).permute(0, 3, 1, 2).to(cfg.device)
            # One row = one generated image against every ground truth: n forwards of batch n.
            m = np.stack([lpips(p[None].expand_as(gts_t), gts_t).cpu().numpy() for p in preds_t])
            matrices.append(m.reshape(n_test, n_test))
            rates.append(float(identification_rates(matrices[-1], higher_is_better=False).mean()))
        metrics["identification_lpips"] = per_set_record(
            rates, "ID LPIPS", f"Pair-wise identification by LPIPS (AlexNet, v0.1 linear weights): {ID_RULE} "
            "(lower LPIPS).", 0.5, True,
        )
        views["identification_lpips"] = PairScores(np.stack(matrices), higher_is_better=False)
    else:
        skipped["identification_lpips"] = (
            "needs AlexNet weights (evaluate.alexnet_weights, alexnet-owt-7be5be79.pth): not configured"
        )

    # --- FID ------------------------------------------------------------------------------
    if cfg.judge_fid:
        fid = fid_over_sample_sets(ground_truth, samples, nets.JudgeFeatures(judge), cfg.batch_size)
        metrics["fid_judge_features"] = record(
            fid["mean"], "FID (judge feat.)",
            f"judge-features FID, not comparable to Inception FID: Fréchet distance between the ground-truth set "
            f"and each sample set in the judge's {judge.feature_dim}-d penultimate features (torchmetrics "
            "FrechetInceptionDistance with the judge as feature extractor). Value: mean over the K sets; 'best' = "
            "min; 'pooled' = all K*n samples vs the ground truth." + FID_CI_NOTE,
            None, False, best=fid["min"], per_set=fid["per_set"], pooled=fid["pooled"], features=judge.feature_dim,
        )
        views["fid_judge_features"] = Frechet(gt_feats, gen_feats.transpose(1, 0, 2))
    if inception is not None:
        for dims, name, label, what in (
            (2048, "fid_inception_2048", "FID (Inception 2048)", "standard 2048-d Inception-v3 pool features"),
            (64, "fid_inception_64_reference", "FID-64 (reference)",
             "the reference's 64-d variant (Inception first max-pool block; NOT comparable with standard FID)"),
        ):
            ext = nets.InceptionFeatures(inception, dims=dims, resize=299).to(cfg.device)
            fid = fid_over_sample_sets(ground_truth, samples, ext, cfg.batch_size)
            metrics[name] = record(
                fid["mean"], label, f"FID with {what}; torchvision Inception-v3 IMAGENET1K_V1 weights (not the TF "
                f"FID-Inception port), 299 px bilinear, over {n_test} images per set. Value: mean over the K sets; "
                "'best' = min; 'pooled' = all K*n samples vs the ground truth." + FID_CI_NOTE,
                None, False, best=fid["min"], per_set=fid["per_set"], pooled=fid["pooled"], features=dims,
            )
            if cfg.bootstrap:  # the interval needs the features themselves: one more forward pass
                real = batched_features(ext, ground_truth, cfg.batch_size)["features"]
                fake = np.stack([batched_features(ext, samples[:, k], cfg.batch_size)["features"]
                                 for k in range(k_sets)])
                views[name] = Frechet(real, fake)
    else:
        note = (
            "needs Inception-v3 weights (evaluate.inception_weights, inception_v3_google-0cc3c7bd.pth): not configured"
        )
        skipped["fid_inception_2048"] = note
        skipped["fid_inception_64_reference"] = note

    # --- NSD-style suite --------------------------------------------------------------------
    if cfg.nsd_suite:
        two_way, distances, missing = networks.nsd
        skipped.update(missing)
        size = pixel_size_for(cfg.nsd_pixels, (identity or {}).get("dataset"))
        pix_gt = _pixel_ground_truth(pixel_ground_truth, size, n_test)
        cache: dict[str, dict] = {}
        item_sets = [nsd_item_scores(samples[:, k], ground_truth, two_way, cache, distances, size, pix_gt)
                     for k in range(k_sets)]
        for k, one in enumerate(item_sets):  # the judge's features are already computed above
            one["two_way_judge"] = correlation_matrix(gen_feats[:, k], gt_feats)
        sets = [summarise_nsd(one) for one in item_sets]
        for name in sets[0]:
            label, definition, chance = _NSD_SPEC.get(name, (name, name, 0.5))
            higher = not name.startswith("distance_")
            extra = {}
            if name in ("pixcorr", "ssim_gray"):
                definition = f"{definition} {_pixel_note(size, pix_gt is not None)}"
                extra = {"pixel_size": size}
            metrics[f"nsd_{name}"] = per_set_record([s[name] for s in sets], label, definition, chance, higher,
                                                     **extra)
            stacked = np.stack([one[name] for one in item_sets])
            views[f"nsd_{name}"] = PairScores(stacked, True) if stacked.ndim == 3 else ItemMeans(stacked.T)

    unc = UncertaintyConfig(bootstrap=cfg.bootstrap, permutations=cfg.permutations)
    attach_uncertainty(metrics, views, int(n_test), unc)
    for name, rec in metrics.items():
        rec["definition"] += uncertainty_note(rec, unc)
    judge_info = judge.describe()
    if cfg.judge_weights:
        judge_info["path"] = str(cfg.judge_weights)
    return {
        "format": METRICS_FORMAT,
        **(identity or {}),
        "protocol": cfg.protocol,
        **counts,
        "judge": judge_info,
        "uncertainty": unc.describe(),
        "metrics": metrics,
        "skipped": skipped,
    }


_NSD_SPEC = {
    "pixcorr": ("PixCorr", "NSD suite: mean Pearson correlation of flattened RGB pixels, each generated image vs "
                "its own ground truth.", None),
    "ssim_gray": ("SSIM (gray)", "NSD suite: mean grayscale SSIM (skimage rgb2gray; gaussian window sigma 1.5, "
                  "population covariance, data_range 1).", None),
    "two_way_alexnet_2": ("2-way AlexNet(2)", "NSD suite: 2-way identification (feature correlation, MindEye's "
                          "rule) on AlexNet features.4 (layer 2), 256 px input.", 0.5),
    "two_way_alexnet_5": ("2-way AlexNet(5)", "NSD suite: 2-way identification on AlexNet features.11 (layer 5), "
                          "256 px input.", 0.5),
    "two_way_inception": ("2-way Inception", "NSD suite: 2-way identification on InceptionV3 global-pool features "
                          "(342 px input).", 0.5),
    "two_way_clip": ("2-way CLIP", "NSD suite: 2-way identification on the CLIP ViT-L/14 image embedding (224 px, "
                     "bilinear).", 0.5),
    "two_way_judge": ("2-way judge feat.", "2-way identification on the judge's penultimate features (the demo's "
                      "stand-in for a semantic network; not an NSD-paper metric).", 0.5),
    "distance_effnet": ("EffNet-B dist.", "NSD suite: mean over images of the correlation distance (1 - Pearson r, "
                        "scipy) between EfficientNet-B1 global-pool features of each generated image and its own "
                        "ground truth (255 px input); lower is better.", None),
    "distance_swav": ("SwAV dist.", "NSD suite: mean correlation distance between SwAV ResNet-50 global-pool "
                      "features of each generated image and its own ground truth (224 px input); lower is better.",
                      None),
}


def resolve_pixels(cfg: EvaluateConfig, dataset: str | None) -> EvaluateConfig:
    """cfg with nsd_pixels "auto" made explicit for this dataset (controls then use the model's size)."""
    from dataclasses import replace

    from mindvis.evaluation.nsd_suite import pixel_size_for

    return replace(cfg, nsd_pixels="mindeye" if pixel_size_for(cfg.nsd_pixels, dataset) else "native")


def _pixel_note(size: int | None, own_gt: bool) -> str:
    if size is None:
        return "Computed at the images' own resolution (evaluate.nsd_pixels)."
    gt = "the ground truth's own 425-px images" if own_gt else "the ground truth resized the same way"
    return f"Computed at {size} px as MindEye: generated images resized (torchvision bilinear), against {gt}."


def _pixel_ground_truth(images: np.ndarray | None, size: int | None, n_test: int) -> np.ndarray | None:
    """The 425-px test images, checked against the samples; None when not given or not used."""
    if images is None or size is None:
        return None
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[0] != n_test or images.shape[-1] != 3:
        raise InputDataError(None, f"pixel ground truth must be uint8 ({n_test}, H, W, 3), got {images.dtype} "
                                   f"{images.shape}")
    return images


# ----------------------------------------------------------------------------- flat view and grid


def flat_metrics(doc: dict) -> dict[str, float]:
    """name -> headline value (and name.best / name.pooled), for MLflow."""
    flat = {}
    for name, rec in doc["metrics"].items():
        flat[name] = rec["value"]
        for extra in ("best", "pooled", "p_value"):
            if extra in rec:
                flat[f"{name}.{extra}"] = rec[extra]
        if rec.get("ci95"):
            flat[f"{name}.ci95_lo"], flat[f"{name}.ci95_hi"] = rec["ci95"]
        spread = rec.get("across_seeds") or {}
        if spread.get("sd") is not None:
            flat[f"{name}.seeds_mean"], flat[f"{name}.seeds_sd"] = spread["mean"], spread["sd"]
    for control, recs in doc.get("baselines", {}).items():
        if control in ("chance", "nearest_train_copy"):
            continue
        for name, rec in recs.items():
            flat[f"{control}.{name}"] = rec["value"]
    copy = doc.get("baselines", {}).get("nearest_train_copy")
    if copy:
        flat["nearest_train_copy.share"] = copy["share_closer_to_train"]
    return flat
