"""One self-contained HTML page across every dataset and subject (`mindvis report`).

Reading order of the page: the headline table (per run, the model against each
control: shuffled fMRI, prior only, train retrieval, chance, with 95 % intervals)
and a chart of the same numbers with error bars; every metric per run, folded; the
published numbers, quoted in a compact table; the reconstruction grids; the sampler
comparison; what each number is.

Modules, one job each:
  inputs       read metrics.json files, grid PNGs, the sampler table
  labels       what the page calls each key, and number formats
  estimates    one metrics.json as numbers per source (model, controls, chance)
  tables       the headline and per-run tables
  quoted       the published numbers (GOD)
  published_nsd  NSD subject-1 numbers of MindEye2 (data, with its source)
  nsd          the NSD section: our NSD runs beside the published rows
  charts       inline SVG of model vs controls
  grids        the reconstruction grids, ground truth marked, >= 96 px per image
  samplers     the sampler table and plot
  definitions  'what each number is'
  page         CSS, script, the page itself
"""

from __future__ import annotations

from dataclasses import dataclass

from mindvis.evaluation.report.inputs import (
    ReportInputs,
    gather_inputs,
    read_metrics,
    read_png,
    read_sampler_doc,
    read_sampler_table,
)
from mindvis.evaluation.report.labels import format_value
from mindvis.evaluation.report.page import render_report, write_report
from mindvis.evaluation.report.quoted import QUOTED, QUOTED_TAG
from mindvis.evaluation.report.samplers import sampler_plot, sampler_section


@dataclass
class ReportConfig:
    title: str = "mindvis results"  # the page's title


__all__ = [
    "QUOTED", "QUOTED_TAG", "ReportConfig", "ReportInputs", "format_value", "gather_inputs", "read_metrics",
    "read_png", "read_sampler_doc", "read_sampler_table", "render_report", "sampler_plot", "sampler_section",
    "write_report",
]
