"""Build one self-contained HTML report (no external URLs; images embedded) across
every dataset and subject: the model against its controls with 95 % intervals, every
metric per run, the published numbers quoted apart, the reconstruction grids, the
sampler comparison when --samplers is given, and what each number is
(mindvis.evaluation.report).
"""

from __future__ import annotations

import argparse
import logging
from mindvis.config import load_section
from mindvis.evaluation.report import ReportConfig, gather_inputs, write_report
from mindvis.tracking import tracker_for

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--metrics", nargs="+", required=True, help="metrics.json files from `mindvis evaluate`")
    parser.add_argument("--grids", nargs="*", default=[], help="reconstruction grid PNGs (`evaluate --grid-out`)")
    parser.add_argument("--samplers", default=None, help="optional sampler table JSON (see the report module)")
    parser.add_argument("--out", required=True, help="HTML file to write, e.g. results/report.html")


def run(args: argparse.Namespace) -> int:
    cfg = load_section(ReportConfig, args.config, args.overrides)
    with tracker_for(args, cfg) as tracker:
        inputs = gather_inputs(args.metrics, args.grids, args.samplers)
        summary = write_report(inputs, args.out, cfg.title)
        log.info("report: %d runs, %d grids -> %s", summary["n_runs"], summary["n_grids"], args.out)
        tracker.log_metrics({k: v for k, v in summary.items() if isinstance(v, int)})
        tracker.log_artifact(args.out)
    return 0
