"""Published numbers, quoted for context in one compact table (never measured here)."""

from __future__ import annotations

from dataclasses import dataclass

from mindvis.evaluation.report.labels import esc

QUOTED_TAG = "quoted, not measured here"


@dataclass
class QuotedRow:
    """A published number, shown for context only."""

    source: str
    nway: str  # n-way top-1 as published
    fid64: str = ""  # the reference's 64-d Inception FID, where published
    note: str = ""


QUOTED = [
    QuotedRow("MinD-Vis paper", "23.9 %", "1.67",
              "as commonly quoted (not verified against the paper here); called 100-way in the paper, 50-way in "
              "its public code"),
    QuotedRow("MinD-Vis released checkpoint", "22.6 % (max of 5 sets)", "",
              "the public protocol: 50-way, 1000 trials, ViT-H/14 judge"),
    QuotedRow("a user's retrain of MinD-Vis", "19.2 %", "", "reported by a user of the reference code"),
]


def quoted_table() -> str:
    rows = "".join(
        f"<tr><td>{esc(q.source)}</td><td>{esc(q.nway)}</td><td>{esc(q.fid64)}</td>"
        f'<td class="note">{esc(q.note)}</td></tr>'
        for q in QUOTED
    )
    return (
        f'<p class="note">Published figures for GOD subject 3, {QUOTED_TAG}: they come from a different judge '
        "(ViT-H/14 over 1000 ImageNet classes), image set and protocol, and are not comparable with the rows "
        "above.</p>"
        '<div class="scroll"><table id="quoted"><thead><tr><th>source</th><th>n-way top-1</th>'
        f"<th>FID-64</th><th>note</th></tr></thead><tbody>{rows}</tbody></table></div>"
    )
