"""The sampler comparison: a table with readable headers and rounded numbers, and each
metric against steps and against time per image.

Axes are honest: a rate is drawn from its chance level (or 0) up to 1, any other
metric from 0, so run-to-run noise of 0.002 stays a flat line instead of a trend.
"""

from __future__ import annotations

import io

from mindvis.evaluation.report.grids import data_uri
from mindvis.evaluation.report.labels import (
    SAMPLER_COLUMNS,
    esc,
    finite,
    format_value,
    is_rate,
    metric_label,
    run_title,
    sampler_name,
)

NOT_METRICS = {"sampler", "steps", "seconds_per_image", "speedup", "images", "dataset", "subject", "n_way"}


def metric_columns(rows: list[dict]) -> list[str]:
    names = {k for r in rows for k, v in r.items() if k not in NOT_METRICS and finite(v)}
    return sorted(names, key=lambda n: (not n.startswith("nway"), n))


def chance_level(name: str, context: dict) -> float | None:
    if name.startswith("nway_") and finite(context.get("n_way")) and context["n_way"] > 0:
        return 1.0 / context["n_way"]
    if name == "top1_all_classes" and finite(context.get("judge_classes")) and context["judge_classes"] > 0:
        return 1.0 / context["judge_classes"]
    if name.startswith(("identification_", "nsd_two_way_")):
        return 0.5
    return None


def y_range(name: str, values: list[float], chance: float | None) -> tuple[float, float]:
    """A rate: from chance (or 0), never above the lowest value, to 1. Anything else: from 0
    (or the lowest value, if negative) to 10 % above the highest."""
    if is_rate(name):
        lo = chance if chance is not None else 0.0
        lo = min([lo] + values)
        return lo - 0.03, 1.02
    lo = min([0.0] + values)
    hi = max([0.0] + values)
    span = (hi - lo) or 1.0
    return lo - 0.05 * span, hi + 0.1 * span


def x_range(values: list[float]) -> tuple[float, float] | None:
    """None: a log axis (values spread over more than 5x); else a linear axis from 0, so two
    timings 3 % apart are not drawn at opposite edges."""
    values = [v for v in values if v > 0]
    if not values:
        return None
    if max(values) / min(values) > 5:
        return None
    return 0.0, 1.15 * max(values)


def _header(key: str, context: dict) -> str:
    if key in SAMPLER_COLUMNS:
        return SAMPLER_COLUMNS[key]
    label = metric_label(key, {"n": context.get("n_way", "n"), "n_classes": context.get("judge_classes", "all")})
    return label[:1].upper() + label[1:]


def _cell(key: str, value) -> str:
    if key == "sampler":
        return sampler_name(value)
    if key == "speedup" and finite(value):
        return f"{value:.1f}×"
    if key == "seconds_per_image" and finite(value):
        return f"{value:.3g}"
    if isinstance(value, float):
        return format_value(key, value)
    return "" if value is None else str(value)


def _td(key: str, value) -> str:
    # The sampler keeps its config name (ddim, dpmpp: what the sampler specs take) as a tooltip.
    tip = f' title="{esc(value)}"' if key == "sampler" else ""
    return f"<td{tip}>{esc(_cell(key, value))}</td>"


def sampler_plot(rows: list[dict], context: dict | None = None) -> bytes:
    """PNG: each metric vs steps and vs seconds per image, one line per sampler."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    context = context or {}
    metrics = metric_columns(rows)
    fig, axes = plt.subplots(max(1, len(metrics)), 2, figsize=(9, 2.9 * max(1, len(metrics))), squeeze=False)
    samplers = list(dict.fromkeys(str(r["sampler"]) for r in rows))
    # Distinct markers, later ones hollow: samplers with equal results stay visible on top of each other.
    styles = [{"marker": "o", "ms": 9}] + [{"marker": m, "ms": 7, "mfc": "none"} for m in "sD^v<>"]
    for i, metric in enumerate(metrics):
        chance = chance_level(metric, context)
        values = [float(r[metric]) for r in rows if finite(r.get(metric))]
        for s, style in zip(samplers, styles * len(samplers)):
            pts = sorted((r["steps"], r["seconds_per_image"], r[metric]) for r in rows
                         if str(r["sampler"]) == s and finite(r.get(metric)))
            if pts:
                steps, secs, vals = zip(*pts)
                axes[i, 0].plot(steps, vals, "-", label=sampler_name(s), **style)
                axes[i, 1].plot(secs, vals, "-", label=sampler_name(s), **style)
        for ax, key in zip(axes[i], ("steps", "seconds_per_image")):
            xs = sorted({float(r[key]) for r in rows if finite(r.get(key))})
            span = x_range(xs)
            if span is None:  # log axis, labelled at the measured values only (no crowded minor labels)
                ax.set_xscale("log")
                ax.margins(x=0.15)
                ax.set_xticks(xs, [f"{v:.3g}" for v in xs])
                ax.xaxis.set_minor_formatter(NullFormatter())
            else:
                ax.set_xlim(*span)
            ax.set_ylim(*y_range(metric, values, chance))
            if chance is not None:
                ax.axhline(chance, color="0.5", ls="--", lw=1)
                ax.annotate("chance", (0.01, chance), xycoords=("axes fraction", "data"), va="bottom",
                            fontsize=8, color="0.4")
            ax.set_xlabel(_header(key, context).lower())
            ax.set_ylabel(_header(metric, context))
            ax.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="upper center", ncol=len(labels), frameon=False,
                   bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout(rect=(0, 0, 1, 0.95 if len(metrics) < 2 else 0.97))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", pad_inches=0.15)
    plt.close(fig)
    return buf.getvalue()


def _intro(context: dict, rows: list[dict]) -> str:
    parts = []
    if context.get("dataset") is not None:
        parts.append(run_title(context))
    if finite(context.get("items")):
        samples = context.get("n_samples")
        each = f" × {samples} sample{'s' if samples != 1 else ''}" if finite(samples) else ""
        parts.append(f"{context['items']} test items{each}")
    if finite(context.get("guidance_scale")):
        parts.append(f"guidance {context['guidance_scale']:g}")
    if finite(context.get("threads")):
        parts.append(f"{context['threads']} CPU thread{'s' if context['threads'] != 1 else ''}")
    if any(isinstance(r.get("seconds_per_image_runs"), list) for r in rows):
        parts.append("time = median of the runs")
    return f'<p class="note">{esc("; ".join(parts))}. Same seeded noise for every sampler.</p>' if parts else ""


def sampler_section(rows: list[dict], context: dict | None = None) -> str:
    context = context or {}
    keys = ["sampler", "steps", "seconds_per_image"] + [k for k in ("speedup",) if any(k in r for r in rows)]
    keys += metric_columns(rows)
    keys += [k for k in ("images", "dataset", "subject") if any(k in r for r in rows)]
    head = "".join(f'<th title="{esc(k)}">{esc(_header(k, context))}</th>' for k in keys)
    body = "".join("<tr>" + "".join(_td(k, r.get(k)) for k in keys) + "</tr>" for r in rows)
    plot = sampler_plot(rows, context)
    table = f'<table id="samplers"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    return (f'{_intro(context, rows)}<div class="scroll">{table}</div>'
            f'<figure class="plot"><img class="zoomable" alt="sampler comparison" src="{data_uri(plot)}">'
            "<figcaption>Each metric against sampling steps and against seconds per image; the dashed line is "
            "chance, rates are drawn up to 1.</figcaption></figure>")
