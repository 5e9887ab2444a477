"""Inline SVG: per headline metric, the model and each control per run, with 95 % error bars.

Rates are drawn on their whole 0..1 range (so a gap of 0.01 looks like one), chance as
a dashed line per run. Plain SVG in the page: no script, no external reference.
"""

from __future__ import annotations

from mindvis.evaluation.report.estimates import Estimate, headline_metrics, sources
from mindvis.evaluation.report.labels import (
    CHANCE,
    CONTROLS,
    MODEL,
    SOURCE_COLOURS,
    SOURCE_LABELS,
    esc,
    format_interval,
    format_value,
    is_rate,
    metric_label,
    run_title,
)
from mindvis.evaluation.report.tables import run_order

WIDTH, HEIGHT = 296, 230  # four panels side by side on a 1280 px window
LEFT, RIGHT, TOP, BOTTOM = 40, 8, 26, 42


def _y_range(name: str, estimates: list[Estimate]) -> tuple[float, float]:
    if is_rate(name):
        return 0.0, 1.0
    values = [v for e in estimates for v in ((e.value,) + (e.ci or ()))]
    lo, hi = min(values + [0.0]), max(values + [0.0])
    span = hi - lo or 1.0
    return lo - 0.05 * span, hi + 0.05 * span


def _ticks(lo: float, hi: float) -> list[float]:
    if (lo, hi) == (0.0, 1.0):
        return [0.0, 0.25, 0.5, 0.75, 1.0]
    return [lo + (hi - lo) * i / 4 for i in range(5)]


def _tick_text(name: str, t: float) -> str:
    return f"{t:g}" if is_rate(name) else format_value(name, t)


def metric_chart(name: str, docs: list[dict]) -> str:
    runs = [(d, sources(d)) for d in sorted(docs, key=run_order) if name in d["metrics"]]
    keys = [MODEL] + [k for k, _, _ in CONTROLS if any(name in per.get(k, {}) for _, per in runs)]
    points = [per[k][name] for _, per in runs for k in keys + [CHANCE] if name in per.get(k, {})]
    lo, hi = _y_range(name, points)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def y(v: float) -> float:
        return TOP + plot_h * (1 - (min(max(v, lo), hi) - lo) / (hi - lo))

    parts = [f'<text x="{LEFT}" y="16" class="ct">{esc(metric_label(name, runs[0][0]["metrics"][name]))}</text>']
    for t in _ticks(lo, hi):
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(t):.1f}" y2="{y(t):.1f}" class="gl"/>'
                     f'<text x="{LEFT - 5}" y="{y(t) + 4:.1f}" class="yt">{esc(_tick_text(name, t))}</text>')
    cw = plot_w / max(1, len(runs))
    for i, (doc, per) in enumerate(runs):
        x0 = LEFT + i * cw
        dataset, _, who = run_title(doc).partition(" · ")
        parts.append(f'<text x="{x0 + cw / 2:.1f}" y="{HEIGHT - BOTTOM + 16}" class="xt">{esc(dataset)}</text>'
                     f'<text x="{x0 + cw / 2:.1f}" y="{HEIGHT - BOTTOM + 30}" class="xt">{esc(who)}</text>')
        chance = per.get(CHANCE, {}).get(name)
        if chance is not None:
            parts.append(f'<line x1="{x0 + 0.08 * cw:.1f}" x2="{x0 + 0.92 * cw:.1f}" y1="{y(chance.value):.1f}" '
                         f'y2="{y(chance.value):.1f}" class="chance"><title>chance '
                         f'{esc(format_value(name, chance.value))}</title></line>')
        for j, key in enumerate(keys):
            est = per.get(key, {}).get(name)
            if est is None:
                continue
            cx = x0 + cw * (0.2 + 0.6 * (j + 0.5) / len(keys))
            colour = SOURCE_COLOURS[key]
            tip = f"{SOURCE_LABELS[key]}: {format_value(name, est.value)}"
            if est.ci:
                a, b = y(est.ci[0]), y(est.ci[1])
                tip += f" [{format_interval(name, est.ci, est.value)}]"
                parts.append(f'<path d="M{cx - 4:.1f},{a:.1f}h8M{cx:.1f},{a:.1f}V{b:.1f}M{cx - 4:.1f},{b:.1f}h8" '
                             f'stroke="{colour}" class="eb"/>')
            parts.append(f'<circle cx="{cx:.1f}" cy="{y(est.value):.1f}" r="4.5" fill="{colour}">'
                         f"<title>{esc(tip)}</title></circle>")
    parts.append(f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" class="frame"/>')
    return (f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
            f'aria-label="{esc(metric_label(name))}: model and controls">{"".join(parts)}</svg>')


def charts_section(docs: list[dict]) -> str:
    names = headline_metrics(docs)
    if not names:
        return ""
    present = {k for d in docs for k in sources(d)}
    legend = "".join(
        f'<span><i style="background:{SOURCE_COLOURS[k]}"></i>{esc(SOURCE_LABELS[k])}</span>'
        for k in [MODEL] + [k for k, _, _ in CONTROLS] if k in present
    )
    if CHANCE in present:
        legend += '<span><i class="dash"></i>chance</span>'
    return (f'<div class="legend">{legend}<span class="note">bars: 95 % interval</span></div>'
            f'<div class="charts">{"".join(metric_chart(n, docs) for n in names)}</div>')
