"""metrics.json records: every number with its label, definition, chance level and direction.

`evaluate_samples` builds its document from these; the definitions say exactly how each
number was computed, so a reader of metrics.json (or the HTML report) needs no other source.
"""

from __future__ import annotations

import numpy as np

def record(value: float, label: str, definition: str, chance: float | None, higher_is_better: bool, **extra) -> dict:
    return {
        "value": float(value),
        "label": label,
        "definition": definition,
        "chance": chance,
        "higher_is_better": higher_is_better,
        **extra,
    }


def per_set_record(values: list[float], label: str, definition: str, chance, higher: bool, **extra) -> dict:
    arr = np.asarray(values, dtype=np.float64)
    best = arr.max() if higher else arr.min()
    return record(arr.mean(), label, definition + " Value: mean over the K sample sets.", chance, higher,
                   best=float(best), per_set=arr.tolist(), **extra)


ID_RULE = (
    "for each generated image, the fraction of the other ground-truth images for which its own ground "
    "truth scores strictly better"
)


def nway_records(gen_probs, gt_probs, judge: str, n_way: int, trials: int,
                 rng) -> tuple[dict[str, dict], dict[str, object]]:
    """n-way top-1 records (sampled, exact, all classes) and their per-item views for the intervals."""
    from mindvis.evaluation.nway import n_way_top1
    from mindvis.evaluation.uncertainty import ItemMeans, NWayHits, hit_table

    result = n_way_top1(gen_probs, gt_probs, n_way, trials, rng)
    res = result.summary()
    common = {"n": res["n"], "trials": res["trials"], "n_classes": res["n_classes"]}
    rule = (
        f"{res['n']}-way top-1 (MinD-Vis protocol): judge = {judge}; ground-truth class = judge argmax on the "
        f"ground-truth image; per trial {res['n'] - 1} distractor classes drawn uniformly from the other "
        f"{res['n_classes'] - 1}; hit when the ground-truth class has the highest judge probability among the "
        f"{res['n']} on the generated image; mean over test images."
    )
    full = n_way_top1(gen_probs, gt_probs, res["n_classes"], 1, rng).summary()
    records = {
        "nway_top1_sampled": record(
            res["sampled_mean"], f"{res['n']}-way top-1 (sampled)",
            rule + f" Monte-Carlo with {res['trials']} trials per image. Value: mean over the K sample sets; "
            "'best' = max over them (the reference reports both). No p_value of its own: nway_top1_exact's is "
            "the test of the same expectation.",
            res["chance"], True, best=res["sampled_max"], per_set=res["sampled_per_set"], **common,
        ),
        "nway_top1_exact": record(
            res["exact_mean"], f"{res['n']}-way top-1 (exact)",
            rule + " Exact expectation over all distractor draws: C(C-1-r, n-1)/C(C-1, n-1) with r = classes "
            "at least as probable as the ground-truth class. Value: mean over the K sample sets; 'best' = max.",
            res["chance"], True, best=res["exact_max"], per_set=res["exact_per_set"], **common,
        ),
        "top1_all_classes": record(
            full["exact_mean"], f"top-1 of {full['n_classes']}",
            f"judge argmax on the generated image equals judge argmax on its ground truth ({full['n_classes']}-way "
            "over all classes, no sampling). Value: mean over the K sample sets; 'best' = max.",
            full["chance"], True, best=full["exact_max"], per_set=full["exact_per_set"], n=full["n"],
            n_classes=full["n_classes"],
        ),
    }
    probs = np.asarray(gen_probs, np.float64)
    views = {
        "nway_top1_sampled": ItemMeans(result.per_image_sampled),
        "nway_top1_exact": NWayHits(np.stack([hit_table(probs[:, k], res["n"]) for k in range(probs.shape[1])]),
                                    result.gt_classes),
        "top1_all_classes": NWayHits(np.stack([hit_table(probs[:, k], full["n_classes"])
                                               for k in range(probs.shape[1])]), result.gt_classes),
    }
    return records, views


def pixel_records(matrix_sets: list[dict]) -> dict[str, dict]:
    from mindvis.evaluation.identification import pairwise_pixel_identification

    per_set = [pairwise_pixel_identification(None, None, matrices=m) for m in matrix_sets]
    out = {}
    spec = {
        "identification_mse": ("ID MSE", f"Pair-wise identification by pixel MSE (float, 0..255 scale): {ID_RULE} "
                               "(lower MSE).", 0.5, True),
        "identification_pcc": ("ID PCC", "Pair-wise identification by Pearson correlation of flattened pixels: "
                               f"{ID_RULE} (higher r).", 0.5, True),
        "identification_ssim": ("ID SSIM", "Pair-wise identification by colour SSIM (scikit-image, data_range=255, "
                                f"channel_axis=-1, 7x7 uniform window): {ID_RULE} (higher SSIM).", 0.5, True),
        "mse_raw_mean": ("MSE (raw)", "Raw mean pixel MSE (float, 0..255 scale) between each generated image "
                         "and its own ground truth, mean over images. NOT an identification rate.", None, False),
        "pcc_raw_mean": ("PCC (raw)", "Raw mean Pearson correlation of flattened pixels between each generated "
                         "image and its own ground truth. NOT an identification rate.", None, True),
        "ssim_raw_mean": ("SSIM (raw)", "Raw mean colour SSIM (scikit-image, data_range=255) between each "
                          "generated image and its own ground truth. NOT an identification rate.", None, True),
    }
    for name, (label, definition, chance, higher) in spec.items():
        if name in per_set[0]:
            out[name] = per_set_record([d[name] for d in per_set], label, definition, chance, higher)
    return out


FID_CI_NOTE = (
    " ci95 of FID: items resampled with replacement and the Fréchet distance recomputed on the resampled "
    "features (closed form); a resample repeats images and FID grows as the distinct set shrinks, so the "
    "interval is shifted down by that bootstrap bias (mean resampled FID minus the value)."
)


def uncertainty_note(rec: dict, unc) -> str:
    """One sentence on how this record's ci95 and p_value were made."""
    note = ""
    if rec.get("ci95") is not None:
        note += (f" ci95: 95 % percentile bootstrap over test items ({unc.bootstrap} resamples with replacement, "
                 f"seed {unc.seed}); pair-wise identification is recomputed on each resampled set (copies of one item "
                 "are not each other's distractors), means are means over the resampled items.")
    if "p_value" in rec:
        note += (f" p_value: one-sided permutation test against chance, {unc.permutations} random pairings of "
                 "generated and ground-truth items; (1 + #(permuted >= observed)) / (1 + permutations).")
    return note
