"""One self-contained HTML page across every dataset and subject.

Sections: the metrics table (one row per metrics.json, the reference's
published numbers beside them as rows labelled "quoted, not measured here"),
what each metric is (definition, chance level, what was skipped and why), the
reconstruction grids (ground truth | K samples), and, when a sampler table is
given, the sampler comparison (metric vs steps and vs time).

Self-contained: CSS inline, images embedded as base64 data URIs, no external
URL anywhere, so the file can be mailed or archived as it is.

Sampler table JSON (written by whoever benchmarks the samplers): a list of rows
(or {"rows": [...]}) with "sampler" (str), "steps" (int), "seconds_per_image"
(float) and any number of numeric metric columns, e.g.
  [{"sampler": "plms", "steps": 250, "seconds_per_image": 1.9, "nway_top1_exact": 0.61}, ...]
Optional "dataset" / "subject" keys are shown as columns.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mindvis.utils.errors import InputDataError

# Column order of the main table: the reference's metrics first, then the field's.
COLUMNS = [
    ("nway_top1_sampled", "n-way top-1 (sampled)"),
    ("nway_top1_exact", "n-way top-1 (exact)"),
    ("top1_all_classes", "top-1 over all classes"),
    ("identification_mse", "ID MSE"),
    ("identification_pcc", "ID PCC"),
    ("identification_ssim", "ID SSIM"),
    ("identification_lpips", "ID LPIPS"),
    ("pcc_raw_mean", "PCC (raw mean)"),
    ("ssim_raw_mean", "SSIM (raw mean)"),
    ("mse_raw_mean", "MSE (raw mean)"),
    ("fid_judge_features", "FID (judge features)"),
    ("fid_inception_2048", "FID (Inception 2048)"),
    ("fid_inception_64_reference", "FID-64 (reference variant)"),
    ("nsd_pixcorr", "PixCorr"),
    ("nsd_ssim_gray", "SSIM (gray)"),
    ("nsd_two_way_alexnet_2", "2-way AlexNet(2)"),
    ("nsd_two_way_alexnet_5", "2-way AlexNet(5)"),
    ("nsd_two_way_inception", "2-way Inception"),
    ("nsd_two_way_clip", "2-way CLIP"),
    ("nsd_two_way_judge", "2-way judge features"),
    ("judge_gt_accuracy", "judge accuracy on GT"),
]
RATE_METRICS = {
    "nway_top1_sampled", "nway_top1_exact", "top1_all_classes", "identification_mse", "identification_pcc",
    "identification_ssim", "identification_lpips", "nsd_two_way_alexnet_2", "nsd_two_way_alexnet_5",
    "nsd_two_way_inception", "nsd_two_way_clip", "nsd_two_way_judge", "judge_gt_accuracy",
}


@dataclass
class ReportConfig:
    title: str = "mindvis results"  # the page's title


@dataclass
class QuotedRow:
    """A published number, shown for context only."""

    label: str
    values: dict[str, str]
    note: str = ""


QUOTED = [
    QuotedRow(
        "MinD-Vis paper, GOD subject 3",
        {"nway_top1_sampled": "23.9 %", "fid_inception_64_reference": "1.67"},
        "as commonly quoted (not verified against the paper here); the paper calls its metric 100-way, its "
        "public code runs 50-way with 1000 trials and a ViT-H/14 judge; FID from 64-d Inception features over "
        "50 images",
    ),
    QuotedRow(
        "MinD-Vis released checkpoint, GOD subject 3",
        {"nway_top1_sampled": "22.6 % (max)"},
        "the public protocol (50-way, 1000 trials, ViT-H/14), max over the 5 sample sets",
    ),
    QuotedRow(
        "a user's retrain of MinD-Vis, GOD subject 3",
        {"nway_top1_sampled": "19.2 %"},
        "reported by a user of the reference code",
    ),
]
QUOTED_TAG = "quoted, not measured here"


@dataclass
class ReportInputs:
    metrics: list[dict]
    metrics_paths: list[Path]
    grids: list[tuple[str, bytes]] = field(default_factory=list)  # (caption, PNG bytes)
    sampler_rows: list[dict] | None = None


# ----------------------------------------------------------------------------- reading


def read_metrics(path: str | Path) -> dict:
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputDataError(path, "metrics file not found") from None
    except (OSError, ValueError) as exc:
        raise InputDataError(path, f"not readable JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("metrics"), dict):
        raise InputDataError(path, "not a metrics.json from `mindvis evaluate` (no 'metrics' mapping)")
    return doc


def read_png(path: str | Path) -> bytes:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputDataError(path, f"cannot read image: {exc}") from None
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise InputDataError(path, "not a PNG file")
    return data


def read_sampler_table(path: str | Path) -> list[dict]:
    path = Path(path)
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputDataError(path, f"sampler table not readable JSON: {exc}") from None
    rows = obj.get("rows") if isinstance(obj, dict) else obj
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise InputDataError(path, "sampler table must be a non-empty list of rows (or {'rows': [...]})")
    for i, row in enumerate(rows):
        for key in ("sampler", "steps", "seconds_per_image"):
            if key not in row:
                raise InputDataError(path, f"row {i} lacks '{key}' (need sampler, steps, seconds_per_image)")
    return rows


def grid_caption(path: Path, docs: list[tuple[Path, dict]]) -> str:
    """'dataset / subject' of the metrics.json in the grid's folder, else the path's last parts."""
    for mpath, doc in docs:
        if mpath.parent.resolve() == path.parent.resolve() and doc.get("dataset") is not None:
            return f"{doc.get('dataset')} / subject {doc.get('subject')}"
    return "/".join(path.parts[-3:])


def gather_inputs(metrics_paths: list[str], grid_paths: list[str], sampler_table: str | None = None) -> ReportInputs:
    paths = [Path(p) for p in metrics_paths]
    docs = [read_metrics(p) for p in paths]
    pairs = list(zip(paths, docs))
    grids = [(grid_caption(Path(g), pairs), read_png(g)) for g in grid_paths]
    rows = read_sampler_table(sampler_table) if sampler_table else None
    return ReportInputs(docs, paths, grids, rows)


# ----------------------------------------------------------------------------- formatting


def _esc(value) -> str:
    return html.escape(str(value), quote=True)


def format_value(name: str, value: float | None) -> str:
    if value is None or not np.isfinite(value):
        return "n/a"
    if name in RATE_METRICS:
        return f"{100 * value:.1f} %"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.3f}"


def _cell(name: str, rec: dict | None, skipped: str | None) -> str:
    if rec is None:
        title = _esc(skipped) if skipped else "not computed"
        return f'<td class="na" title="{title}">{"skipped" if skipped else "–"}</td>'
    parts = [f"<span class=v>{_esc(format_value(name, rec['value']))}</span>"]
    small = []
    if "best" in rec and rec.get("per_set") and len(rec["per_set"]) > 1:
        word = "max" if rec.get("higher_is_better", True) else "min"
        small.append(f"{word} {format_value(name, rec['best'])}")
    if "n" in rec and name.startswith(("nway", "top1")):
        small.append(f"n={rec['n']}")
    if rec.get("chance") is not None:
        small.append(f"chance {format_value(name, rec['chance'])}")
    if small:
        parts.append(f"<small>{_esc(' · '.join(small))}</small>")
    return f'<td title="{_esc(rec.get("definition", ""))}">' + "<br>".join(parts) + "</td>"


def metrics_table(inputs: ReportInputs) -> str:
    present = {name for doc in inputs.metrics for name in doc["metrics"]}
    present |= {name for q in QUOTED for name in q.values}
    known = [c for c, _ in COLUMNS]
    cols = [(c, label) for c, label in COLUMNS if c in present]
    cols += [(c, c) for c in sorted(present) if c not in known]
    head = "".join(f"<th>{_esc(label)}</th>" for _, label in cols)
    rows = []
    def order(d: dict) -> tuple[str, str, str]:
        return str(d.get("dataset")), str(d.get("subject")), str(d.get("protocol"))

    for doc in sorted(inputs.metrics, key=order):
        judge = doc.get("judge", {}).get("name", "?")
        ident = (
            f"<td>{_esc(doc.get('dataset', '?'))}</td><td>{_esc(doc.get('subject', '?'))}</td>"
            f"<td>{_esc(doc.get('protocol', '?'))}<br><small>judge {_esc(judge)} · "
            f"{_esc(doc.get('n_test', '?'))} test × {_esc(doc.get('k_samples', '?'))} samples</small></td>"
            "<td>measured</td>"
        )
        skipped = doc.get("skipped", {})
        cells = "".join(_cell(c, doc["metrics"].get(c), skipped.get(c)) for c, _ in cols)
        rows.append(f"<tr>{ident}{cells}</tr>")
    for q in QUOTED:
        ident = (
            f"<td>god</td><td>3</td><td>{_esc(q.label)}<br><small>{_esc(q.note)}</small></td>"
            f"<td><em>{QUOTED_TAG}</em></td>"
        )
        cells = "".join(
            f'<td class="quoted">{_esc(q.values[c])}</td>' if c in q.values else '<td class="na">–</td>'
            for c, _ in cols
        )
        rows.append(f'<tr class="quoted">{ident}{cells}</tr>')
    return (
        '<table id="metrics"><thead><tr><th>dataset</th><th>subject</th><th>protocol</th><th>source</th>'
        f"{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def definitions_section(inputs: ReportInputs) -> str:
    seen: dict[str, dict] = {}
    for doc in inputs.metrics:
        for name, rec in doc["metrics"].items():
            seen.setdefault(name, rec)
    items = []
    for name, rec in seen.items():
        chance = "" if rec.get("chance") is None else f" Chance: {format_value(name, rec['chance'])}."
        items.append(f"<dt>{_esc(rec.get('label', name))} <code>{_esc(name)}</code></dt>"
                     f"<dd>{_esc(rec.get('definition', ''))}{_esc(chance)}</dd>")
    skipped = sorted({(n, why) for doc in inputs.metrics for n, why in doc.get("skipped", {}).items()})
    skip_html = "".join(f"<li><code>{_esc(n)}</code>: {_esc(why)}</li>" for n, why in skipped)
    out = f"<dl>{''.join(items)}</dl>"
    if skip_html:
        out += f"<h3>Not computed in these runs</h3><ul>{skip_html}</ul>"
    return out


def _img_tag(png: bytes, alt: str) -> str:
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def grids_section(inputs: ReportInputs) -> str:
    if not inputs.grids:
        return "<p>No reconstruction grids were given.</p>"
    figs = [
        f"<figure>{_img_tag(png, caption)}"
        f"<figcaption>{_esc(caption)}: ground truth (left) | K samples</figcaption></figure>"
        for caption, png in inputs.grids
    ]
    return '<div class="grids">' + "".join(figs) + "</div>"


def sampler_plot(rows: list[dict]) -> bytes:
    """PNG: each metric column vs steps and vs seconds per image, one line per sampler."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    skip = {"sampler", "steps", "seconds_per_image", "dataset", "subject", "images", "speedup"}
    metric_cols = sorted({k for r in rows for k, v in r.items() if k not in skip and isinstance(v, (int, float))})
    n = max(1, len(metric_cols))
    fig, axes = plt.subplots(n, 2, figsize=(9, 3 * n), squeeze=False)
    samplers = sorted({str(r["sampler"]) for r in rows})
    for i, metric in enumerate(metric_cols):
        for s in samplers:
            mine = [r for r in rows if str(r["sampler"]) == s and metric in r]
            pts = sorted((r["steps"], r["seconds_per_image"], r[metric]) for r in mine)
            if not pts:
                continue
            steps, secs, vals = zip(*pts)
            axes[i, 0].plot(steps, vals, "o-", label=s)
            axes[i, 1].plot(secs, vals, "o-", label=s)
        axes[i, 0].set_xlabel("steps")
        axes[i, 1].set_xlabel("seconds per image")
        for ax in axes[i]:
            ax.set_ylabel(metric)
            ax.grid(alpha=0.3)
        axes[i, 0].legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def sampler_section(rows: list[dict]) -> str:
    keys = ["sampler", "steps", "seconds_per_image"]
    keys += [k for k in ("dataset", "subject") if any(k in r for r in rows)]
    keys += sorted({k for r in rows for k in r} - set(keys))
    head = "".join(f"<th>{_esc(k)}</th>" for k in keys)

    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else _esc("" if v is None else v)

    body = "".join("<tr>" + "".join(f"<td>{fmt(r.get(k))}</td>" for k in keys) + "</tr>" for r in rows)
    return (f'<table id="samplers"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
            f"<figure>{_img_tag(sampler_plot(rows), 'sampler comparison')}"
            "<figcaption>metric vs sampling steps and vs time per image</figcaption></figure>")


CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;font-size:13px;margin:1em 0}
th,td{border:1px solid #ccc;padding:4px 6px;text-align:center;vertical-align:top}
th{background:#f2f2f2} td small{color:#666} .v{font-weight:600}
tr.quoted td{background:#fff8e6;font-style:italic} td.na{color:#aaa}
.grids{display:flex;flex-wrap:wrap;gap:1.5em} figure{margin:0} figcaption{font-size:13px;color:#444}
img{image-rendering:pixelated;max-width:100%} dt{font-weight:600;margin-top:.6em} dd{margin-left:1.5em}
"""


def render_report(inputs: ReportInputs, title: str = "mindvis results") -> str:
    sampler = (
        f"<h2>Sampler comparison</h2>{sampler_section(inputs.sampler_rows)}" if inputs.sampler_rows else ""
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title><style>{CSS}</style></head>
<body>
<h1>{_esc(title)}</h1>
<p>{len(inputs.metrics)} evaluated run(s). Rates (n-way, identification) are percentages; hover a cell for the
metric's exact definition. Rows marked <em>{QUOTED_TAG}</em> are published numbers for context: they come from a
different judge, image set and protocol and are not comparable with the measured rows.</p>
<h2>Metrics</h2>
{metrics_table(inputs)}
<h2>Reconstructions</h2>
{grids_section(inputs)}
{sampler}
<h2>What each number is</h2>
{definitions_section(inputs)}
</body></html>
"""


def write_report(inputs: ReportInputs, out: str | Path, title: str = "mindvis results") -> dict:
    from mindvis.utils.atomic import write_text

    text = render_report(inputs, title)
    write_text(out, text)
    return {"n_runs": len(inputs.metrics), "n_grids": len(inputs.grids),
            "n_sampler_rows": len(inputs.sampler_rows or []), "bytes": len(text.encode())}
