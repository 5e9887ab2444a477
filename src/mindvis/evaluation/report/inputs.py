"""Reading the report's inputs: metrics.json files, grid PNGs, the sampler table.

Sampler table JSON (written by `compare_samplers`): a list of rows, or
{"rows": [...], ...context}, each row with "sampler" (str), "steps" (int),
"seconds_per_image" (float) and any number of numeric metric columns, e.g.
  [{"sampler": "plms", "steps": 250, "seconds_per_image": 1.9, "nway_top1_exact": 0.61}, ...]
Context keys beside "rows" (dataset, subject, items, n_samples, n_way,
guidance_scale, threads) label the section and set the n-way chance level.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from mindvis.utils.errors import InputDataError


@dataclass
class ReportInputs:
    metrics: list[dict]
    metrics_paths: list[Path]
    grids: list[tuple[str, bytes]] = field(default_factory=list)  # (caption, PNG bytes)
    sampler_rows: list[dict] | None = None
    sampler_context: dict = field(default_factory=dict)  # the sampler table's keys beside "rows"


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


def read_sampler_doc(path: str | Path) -> tuple[list[dict], dict]:
    """(rows, context): the rows checked, the context the keys beside them (empty for a bare list)."""
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
    context = {k: v for k, v in obj.items() if k != "rows"} if isinstance(obj, dict) else {}
    return rows, context


def read_sampler_table(path: str | Path) -> list[dict]:
    return read_sampler_doc(path)[0]


def grid_caption(path: Path, docs: list[tuple[Path, dict]]) -> str:
    """'GOD · subject 1' for the metrics.json in the grid's folder, else the path's last parts."""
    from mindvis.evaluation.report.labels import run_title

    for mpath, doc in docs:
        if mpath.parent.resolve() == path.parent.resolve() and doc.get("dataset") is not None:
            return run_title(doc)
    return "/".join(path.parts[-3:])


def gather_inputs(metrics_paths: list[str], grid_paths: list[str], sampler_table: str | None = None) -> ReportInputs:
    paths = [Path(p) for p in metrics_paths]
    docs = [read_metrics(p) for p in paths]
    pairs = list(zip(paths, docs))
    grids = [(grid_caption(Path(g), pairs), read_png(g)) for g in grid_paths]
    rows, context = read_sampler_doc(sampler_table) if sampler_table else (None, {})
    return ReportInputs(docs, paths, grids, rows, context)
