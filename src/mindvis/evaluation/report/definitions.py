"""'What each number is': every metric shown, every control, and the statistics around them."""

from __future__ import annotations

from mindvis.evaluation.report.estimates import control_definition, is_duplicate, shown_metrics
from mindvis.evaluation.report.labels import (
    CONTROLS,
    SAME_AS,
    SAME_AS_NOTE,
    esc,
    finite,
    format_value,
    metric_label,
)


def _metric_items(docs: list[dict]) -> str:
    seen: dict[str, dict] = {}
    for doc in docs:
        for name in shown_metrics(doc):
            seen.setdefault(name, doc["metrics"][name])
    items = []
    for name, rec in seen.items():
        chance = rec.get("chance")
        chance_txt = f" Chance: {format_value(name, chance)}." if finite(chance) else ""
        better = "" if rec.get("higher_is_better", True) else " Lower is better."
        items.append(f"<dt>{esc(metric_label(name, rec))} <code>{esc(name)}</code></dt>"
                     f"<dd>{esc(rec.get('definition', ''))}{esc(chance_txt + better)}</dd>")
    if any(dup in d["metrics"] and is_duplicate(d, dup) for d in docs for dup in SAME_AS):
        items.append(f"<dt>PCC (raw mean) <code>pcc_raw_mean</code></dt><dd>{esc(SAME_AS_NOTE)}</dd>")
    return "".join(items)


def _control_items(docs: list[dict]) -> str:
    present = {k for d in docs for k in (d.get("baselines") or {})}
    keys = [(k, label) for k, label, _ in CONTROLS]
    keys += [("nearest_train_copy", "closer to a training image"), ("chance", "chance")]
    items = []
    for key, label in keys:
        absent = "" if key in present or key == "chance" else (
            " (Not in these metrics.json files: written before the controls existed, or with "
            "evaluate.controls: false.)")
        items.append(f"<dt>{esc(label)} <code>{esc(key)}</code></dt>"
                     f"<dd>{esc(control_definition(docs, key) + absent)}</dd>")
    return "".join(items)


def _statistics_items(docs: list[dict]) -> str:
    info = next((d["uncertainty"] for d in docs if isinstance(d.get("uncertainty"), dict)), {})
    boot = f" ({info['bootstrap']} resamples)" if finite(info.get("bootstrap")) else ""
    perms = info.get("permutations")
    floor = f" With {perms} permutations the smallest possible p is {1 / (perms + 1):.4f}." if finite(perms) else ""
    return "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in (
        ("[lo–hi], ci95", f"95 % bootstrap interval over test items{boot}: the test items are resampled with "
         "replacement and the metric recomputed; lo and hi are the 2.5th and 97.5th percentiles."),
        ("p vs chance, p_value", "One-sided permutation p-value against chance: the pairing of generated and "
         f"ground-truth items is shuffled and the metric recomputed; p is the share of shuffles that score at least "
         f"as well as the real pairing.{floor} Given for n-way top-1, top-1 of all classes and the pair-wise and "
         "2-way identification rates."),
        ("best of K", "The best of the K sample sets (max, or min where lower is better): the reference reports "
         "it beside the mean. The headline value is always the mean over the K sets."),
        ("across seeds", "Mean ± standard deviation of the headline value when generation is repeated with "
         "several seeds (evaluate.seeds), n = number of seeds."),
        ("headline colours", "A control's cell is green when the model's interval lies wholly on the better side "
         "of the control's interval (the model beats it), amber when the two overlap (no evidence the model does "
         "better than that control). For chance, the model's interval is compared with the chance level."),
    ))


def definitions_section(docs: list[dict]) -> str:
    return (f"<h3>Metrics</h3><dl>{_metric_items(docs)}</dl>"
            f"<h3>Controls</h3><dl>{_control_items(docs)}</dl>"
            f"<h3>Intervals and tests</h3><dl>{_statistics_items(docs)}</dl>")
