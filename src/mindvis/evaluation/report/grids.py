"""Reconstruction grids, readable at a glance.

`mindvis evaluate --grid-out` writes one PNG per run: one row per test item, the
ground truth, a wider white gap, then the K samples, with `gap` px of white around
every cell (mindvis.utils.images.grid_image). The report finds that layout back from
the pixels, shows each cell at >= MIN_CELL_PX on screen, frames and labels the
ground-truth column, and enlarges the grid on click. A PNG whose layout is not
found is shown as it is, scaled up the same way.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import numpy as np

from mindvis.evaluation.report.labels import esc

MIN_CELL_PX = 96  # every image on screen at least this wide (CSS px)
GAP = 2  # grid_image's default gap, px


@dataclass(frozen=True)
class GridLayout:
    cell: int  # cell side, px (cells are square)
    k: int  # samples per row
    rows: int
    width: int
    height: int
    gap: int = GAP

    @property
    def gt_left(self) -> int:
        return self.gap

    @property
    def samples_left(self) -> int:
        return 4 * self.gap + self.cell


def _white(a: np.ndarray) -> bool:
    return a.size > 0 and bool((a == 255).all())


def find_layout(png: bytes, gap: int = GAP) -> GridLayout | None:
    """The grid_image layout that fits the PNG's size and white gaps, or None."""
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    height, width = img.shape[:2]
    for k in range(1, 65):
        cell, rest = divmod(width - (k + 4) * gap, k + 1)
        if cell < 2 or rest:
            continue
        rows, rest = divmod(height - gap, cell + gap)
        if rows < 1 or rest:
            continue
        layout = GridLayout(cell, k, rows, width, height, gap)
        stripes = [img[:, : gap], img[:, gap + cell : layout.samples_left], img[:, width - gap :]]
        stripes += [img[r * (cell + gap) : r * (cell + gap) + gap] for r in range(rows + 1)]
        stripes += [img[:, layout.samples_left + j * (cell + gap) - gap : layout.samples_left + j * (cell + gap)]
                    for j in range(1, k)]
        if all(_white(s) for s in stripes):
            return layout
    return None


def display_scale(cell: int) -> float:
    """Screen px per image px: at least MIN_CELL_PX per cell, never shrunk."""
    return max(1.0, MIN_CELL_PX / cell)


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def grid_figure(caption: str, png: bytes) -> str:
    from PIL import Image

    layout = find_layout(png)
    if layout is None:
        shown = max(Image.open(io.BytesIO(png)).size[0], 4 * MIN_CELL_PX)  # cell size unknown: a wide default
        img = (f'<img class="zoomable" alt="{esc(caption)}: reconstruction grid" src="{data_uri(png)}" '
               f'style="width:{shown}px">')
        return (f'<figure class="grid">{img}<figcaption><b>{esc(caption)}</b>: ground truth in the first column, '
                "then the samples (click to enlarge)</figcaption></figure>")
    scale = display_scale(layout.cell)
    shown_w = round(layout.width * scale)
    pixelated = " pixelated" if float(scale).is_integer() and scale > 1 else ""

    def pct(px: float) -> str:
        return f"{100 * px / layout.width:.3f}%"

    samples_w = layout.width - layout.samples_left
    head = (f'<div class="gridhead"><span class="gtlabel" style="left:{pct(0)};width:{pct(layout.samples_left)}">'
            f'ground truth</span><span style="left:{pct(layout.samples_left)};width:{pct(samples_w)}">'
            f'{layout.k} sample{"s" if layout.k > 1 else ""}</span></div>')
    frame = (f'<div class="gtframe" style="left:{pct(layout.gt_left - 1)};width:{pct(layout.cell + 2)}"></div>')
    img = (f'<img class="zoomable{pixelated}" alt="{esc(caption)}: ground truth | {layout.k} samples per test item" '
           f'src="{data_uri(png)}" data-cell-px="{layout.cell}" data-grid-px="{layout.width}">')
    return (f'<figure class="grid" style="width:{shown_w}px">{head}<div class="gridbox">{img}{frame}</div>'
            f"<figcaption><b>{esc(caption)}</b>: {layout.rows} test items, {layout.cell} px images "
            "(click to enlarge)</figcaption></figure>")


def grids_section(grids: list[tuple[str, bytes]]) -> str:
    if not grids:
        return "<p>No reconstruction grids were given.</p>"
    return '<div class="grids">' + "".join(grid_figure(c, png) for c, png in grids) + "</div>"
