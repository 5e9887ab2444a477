"""The report's NSD section: our NSD runs in the field's columns, published subject-1 rows beside them.

Shown only when some run is on dataset nsd. Our cells carry the 95 % interval of metrics.json;
a metric whose network weights were not configured reads "not measured" (the reason on hover).
The published rows come from `published_nsd` and are labelled "quoted, not measured here".
"""

from __future__ import annotations

from mindvis.evaluation.report.labels import esc, format_interval, format_value, run_title
from mindvis.evaluation.report.published_nsd import NOT_QUOTED, NSD_COLUMNS, PUBLISHED_NSD
from mindvis.evaluation.report.quoted import QUOTED_TAG

LOWER_IS_BETTER = {"nsd_distance_effnet", "nsd_distance_swav"}


def _our_cell(doc: dict, key: str) -> str:
    rec = doc["metrics"].get(key)
    if rec is None:
        why = (doc.get("skipped") or {}).get(key, "not in metrics.json")
        return f'<td class="na" title="{esc(why)}">not measured</td>'
    interval = format_interval(key, rec.get("ci95"), rec.get("value"))
    ci = f' <span class="ci">[{esc(interval)}]</span>' if interval else ""
    return f"<td><b>{esc(format_value(key, rec.get('value')))}</b>{ci}</td>"


def _our_row(doc: dict) -> str:
    """One of our runs: its title, what was measured (test images, K, pixel metrics' size, protocol), its cells."""
    pix = (doc["metrics"].get("nsd_pixcorr") or {}).get("pixel_size")
    size = f"PixCorr/SSIM at {pix} px" if pix else "PixCorr/SSIM at the images' own size"
    setting = (f"measured here: {doc.get('n_test', '?')} test images, K = {doc.get('k_samples', '?')}, {size}, "
               f"protocol {doc.get('protocol', '?')}")
    cells = "".join(_our_cell(doc, key) for key, _ in NSD_COLUMNS)
    return (f'<tr class="ours"><td class="src">{esc(run_title(doc))} (mindvis)</td>'
            f'<td class="src">{esc(setting)}</td>{cells}</tr>')


def _quoted_row(pub) -> str:
    """A published row (a PublishedNsd), labelled as quoted."""
    cells = "".join(f"<td>{esc(format_value(key, pub.values[key]))}</td>" if key in pub.values else "<td></td>"
                    for key, _ in NSD_COLUMNS)
    return (f'<tr class="quoted"><td class="src">{esc(pub.method)} · subject {pub.subject} '
            f"<em>({QUOTED_TAG})</em></td>"
            f'<td class="src">{esc(pub.setting)}; source: {esc(pub.source)}</td>{cells}</tr>')


def nsd_runs(docs: list[dict]) -> list[dict]:
    return [d for d in docs if str(d.get("dataset", "")).lower() == "nsd"]


def nsd_section(docs: list[dict]) -> str:
    """'' when no run is on NSD; else the heading, the table and its notes."""
    runs = nsd_runs(docs)
    if not runs:
        return ""
    head = "".join(f"<th>{esc(label)}{' ↓' if key in LOWER_IS_BETTER else ''}</th>" for key, label in NSD_COLUMNS)
    rows = [_our_row(doc) for doc in runs] + [_quoted_row(pub) for pub in PUBLISHED_NSD]
    return (
        "<h2>NSD: the field's protocol</h2>"
        '<p class="note">PixCorr and SSIM at 425 px, 2-way identification (chance 0.5) on AlexNet layers 2 and 5 '
        "(256 px), InceptionV3 (342 px) and CLIP ViT-L/14 (224 px), EfficientNet-B1 and SwAV correlation distances "
        "(↓ lower is better), as MindEye computes them. Rows marked <em>" + esc(QUOTED_TAG) + "</em> are published "
        "figures copied for context: other models, the real NSD release, other test-set sizes; they were not "
        "recomputed by this pipeline. " + esc(NOT_QUOTED) + "</p>"
        f'<div class="scroll"><table id="nsd"><thead><tr><th>run</th><th>setting</th>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )
