"""One metrics.json as numbers per source: the model, each control, chance.

metrics.json (from `mindvis evaluate`) holds the model's records under "metrics"
({value, chance, best, per_set, ci95, p_value, across_seeds, ...}) and, in newer
files, a "baselines" object:
  {"shuffled_fmri": {metric: {value, ci95}}, "prior_only": {...}, "train_retrieval": {...},
   "nearest_train_copy": {"share_closer_to_train", "ci95", "definition"},
   "chance": {metric: value}},
and "baseline_definitions" {key: sentence}.
Older files have no baselines and no intervals: every field here is optional, and
a missing one is None rather than an error.
"""

from __future__ import annotations

from dataclasses import dataclass

from mindvis.evaluation.report.labels import (
    CHANCE,
    CONTROL_DEFINITIONS,
    CONTROLS,
    HEADLINE_GROUPS,
    METRIC_ORDER,
    MODEL,
    SAME_AS,
    finite,
)


@dataclass(frozen=True)
class Estimate:
    value: float | None
    ci: tuple[float, float] | None = None
    p: float | None = None
    best: float | None = None  # best of the K sample sets (max, or min where lower is better)
    seeds: dict | None = None  # {"mean", "sd", "n"} over generation seeds


def _interval(raw) -> tuple[float, float] | None:
    if isinstance(raw, (list, tuple)) and len(raw) == 2 and all(finite(v) for v in raw):
        return float(raw[0]), float(raw[1])
    return None


def _estimate(raw) -> Estimate | None:
    """A record ({value, ci95, ...}) or a bare number."""
    if finite(raw):
        return Estimate(float(raw))
    if not isinstance(raw, dict) or not finite(raw.get("value")):
        return None
    best = raw.get("best") if len(raw.get("per_set") or []) > 1 else None
    seeds = raw.get("across_seeds")
    # A spread needs two seeds or more; one seed (sd null) says nothing beyond the value.
    seeds = seeds if isinstance(seeds, dict) and finite(seeds.get("sd")) and (seeds.get("n") or 0) > 1 else None
    return Estimate(float(raw["value"]), _interval(raw.get("ci95")),
                    raw["p_value"] if finite(raw.get("p_value")) else None,
                    best if finite(best) else None, seeds)


def sources(doc: dict) -> dict[str, dict[str, Estimate]]:
    """source ("model", each control key, "chance") -> metric -> Estimate; empty sources left out."""
    baselines = doc.get("baselines") if isinstance(doc.get("baselines"), dict) else {}
    out: dict[str, dict[str, Estimate]] = {MODEL: {}}
    for name, rec in doc["metrics"].items():
        est = _estimate(rec)
        if est is not None:
            out[MODEL][name] = est
    for key, _, _ in CONTROLS:
        block = baselines.get(key)
        if isinstance(block, dict):
            found = {name: est for name, raw in block.items() if (est := _estimate(raw)) is not None}
            if found:
                out[key] = found
    chance: dict[str, Estimate] = {}
    for name, rec in doc["metrics"].items():
        if isinstance(rec, dict) and finite(rec.get("chance")):
            chance[name] = Estimate(float(rec["chance"]))
    if isinstance(baselines.get(CHANCE), dict):
        for name, raw in baselines[CHANCE].items():
            if (est := _estimate(raw)) is not None:
                chance[name] = Estimate(est.value)
    if chance:
        out[CHANCE] = chance
    return out


def train_copy(doc: dict) -> tuple[Estimate, str] | None:
    """(share of reconstructions closer to a training image than to their own ground truth, definition)."""
    block = (doc.get("baselines") or {}).get("nearest_train_copy")
    if not isinstance(block, dict) or not finite(block.get("share_closer_to_train")):
        return None
    est = Estimate(float(block["share_closer_to_train"]), _interval(block.get("ci95")),
                   block["p_value"] if finite(block.get("p_value")) else None)
    definitions = doc.get("baseline_definitions") or {}
    return est, str(block.get("definition") or definitions.get("nearest_train_copy") or "")


def control_definition(docs: list[dict], key: str) -> str:
    """The sentence metrics.json gives a control (baseline_definitions), else the report's own."""
    for doc in docs:
        text = (doc.get("baseline_definitions") or {}).get(key)
        if isinstance(text, str) and text:
            return text
    return CONTROL_DEFINITIONS.get(key, "")


def headline_metrics(docs: list[dict]) -> list[str]:
    """Per headline group, the first metric any run measured."""
    present = {name for doc in docs for name in doc["metrics"]}
    return [next(m for m in group if m in present) for group in HEADLINE_GROUPS if any(m in present for m in group)]


def shown_metrics(doc: dict) -> list[str]:
    """The run's metrics in page order, a duplicate (SAME_AS) dropped when its twin is there."""
    names = [m for m in METRIC_ORDER if m in doc["metrics"]]
    names += sorted(m for m in doc["metrics"] if m not in METRIC_ORDER)
    return [m for m in names if not is_duplicate(doc, m)]


def is_duplicate(doc: dict, name: str) -> bool:
    """`name` holds its SAME_AS twin's number: the twin is there and computed at native size (PixCorr at
    425 px, the NSD protocol, is another number than pcc_raw_mean)."""
    twin = doc["metrics"].get(SAME_AS.get(name, ""))
    return isinstance(twin, dict) and twin.get("pixel_size") is None


def separated(model: Estimate, other: Estimate, higher_is_better: bool = True) -> bool | None:
    """True when the model's interval lies wholly on the better side of the other's (or of its
    point value, for chance); None when the model has no interval to judge by."""
    if model.ci is None or other.value is None:
        return None
    lo, hi = other.ci if other.ci else (other.value, other.value)
    return model.ci[0] > hi if higher_is_better else model.ci[1] < lo
