"""The HTML report from older metrics.json files (no controls, no intervals): parses, holds the headline\nand quoted tables and embedded images, no URLs. tests/test_report_render.py covers the controls."""

from __future__ import annotations

import base64
import io
import json
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from mindvis.evaluation.report import QUOTED_TAG, format_value, gather_inputs, write_report
from mindvis.utils.errors import InputDataError


class Collector(HTMLParser):
    """Tables (as rows of cell texts), img src values, every src/href attribute."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.images: list[str] = []
        self.links: list[str] = []
        self._table = None
        self._row = None
        self._cell = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("src", "href"):
            if key in attrs:
                self.links.append(attrs[key])
        if tag == "table":
            self._table = attrs.get("id", f"t{len(self.tables)}")
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self._row = []
            self.tables[self._table].append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "img":
            self.images.append(attrs["src"])

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data + " ")


def _metrics_doc(dataset, subject, nway):
    rec = lambda v, chance=None, **kw: {"value": v, "label": "x", "definition": "def", "chance": chance,
                                         "higher_is_better": True, **kw}
    return {
        "format": "mindvis-metrics/1", "dataset": dataset, "subject": subject, "protocol": "embedded-demo",
        "n_test": 50, "k_samples": 3, "judge": {"name": "small_cnn"},
        "metrics": {
            "nway_top1_exact": rec(nway, 0.2, n=5, trials=1000, best=nway + 0.05, per_set=[nway, nway + 0.05]),
            "identification_pcc": rec(0.8, 0.5, best=0.85, per_set=[0.8, 0.85]),
            "pcc_raw_mean": rec(0.45),
            "fid_judge_features": {**rec(1.93), "higher_is_better": False, "best": 1.5, "per_set": [1.93, 1.5]},
        },
        "skipped": {"fid_inception_2048": "needs Inception-v3 weights: not configured"},
    }


def _png(path, colour):
    Image.fromarray(np.full((20, 30, 3), colour, np.uint8)).save(path)
    return path


@pytest.fixture
def report_inputs(tmp_path):
    paths, grids = [], []
    for ds, sub, v in (("god", "1", 0.61), ("bold5000", "4", 0.42)):
        d = tmp_path / ds / sub
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps(_metrics_doc(ds, sub, v)))
        paths.append(str(d / "metrics.json"))
        grids.append(str(_png(d / "grid.png", 40 if ds == "god" else 200)))
    samplers = tmp_path / "samplers.json"
    samplers.write_text(json.dumps([
        {"sampler": "plms", "steps": 250, "seconds_per_image": 1.9, "nway_top1_exact": 0.61},
        {"sampler": "plms", "steps": 50, "seconds_per_image": 0.4, "nway_top1_exact": 0.58},
        {"sampler": "dpmpp", "steps": 20, "seconds_per_image": 0.2, "nway_top1_exact": 0.60},
    ]))
    return paths, grids, str(samplers)


def test_report_renders_table_images_and_no_urls(tmp_path, report_inputs):
    # These metrics.json files predate the controls and intervals: the page still renders, the headline
    # holds the model and chance only, and no column of the controls appears.
    paths, grids, samplers = report_inputs
    out = tmp_path / "results" / "report.html"
    summary = write_report(gather_inputs(paths, grids, samplers), out)
    assert summary["n_runs"] == 2 and summary["n_grids"] == 2
    text = out.read_text()
    parser = Collector()
    parser.feed(text)

    header, *rows = parser.tables["headline"]
    assert header[:2] == ["run", "decoder"] and "5-way top-1" in header
    assert "closer to a training image" not in header  # no run has the copy check
    assert rows == [
        ["GOD · subject 1", "model", "0.610", "0.800"], ["chance", "0.200", "0.500"],
        ["BOLD5000 · CSI4", "model", "0.420", "0.800"], ["chance", "0.200", "0.500"],
    ]
    assert header[2:] == ["5-way top-1", "identification by PCC"]
    assert "shuffled fMRI" not in text.split('id="headline"')[1].split("</table>")[0]

    quoted = parser.tables["quoted"]
    assert len(quoted) == 4 and QUOTED_TAG in text
    assert [r[1] for r in quoted[1:]] == ["23.9 %", "22.6 % (max of 5 sets)", "19.2 %"]
    assert quoted[1][2] == "1.67"

    # Two grids + the sampler plot, every one an embedded PNG that decodes.
    assert len(parser.images) == 3
    for src in parser.images:
        assert src.startswith("data:image/png;base64,")
        img = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        assert img.format == "PNG"
    assert not [u for u in parser.links if u.startswith(("http://", "https://", "//"))]
    assert "http://" not in text and "https://" not in text
    # Grid captions come from the metrics.json beside each grid; the sampler table is there.
    assert "GOD · subject 1" in text and "BOLD5000 · CSI4" in text
    assert [r[0] for r in parser.tables["samplers"][1:]] == ["PLMS", "PLMS", "DPM-Solver++ 2M"]
    assert "needs Inception-v3 weights" in text  # skipped metrics are explained


def test_report_without_grids_or_samplers(tmp_path, report_inputs):
    paths, _, _ = report_inputs
    out = tmp_path / "r.html"
    write_report(gather_inputs(paths[:1], []), out)
    parser = Collector()
    parser.feed(out.read_text())
    assert parser.images == [] and "samplers" not in parser.tables


def test_report_bad_inputs_name_the_file(tmp_path, report_inputs):
    paths, grids, _ = report_inputs
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputDataError, match="bad.json: not readable JSON"):
        gather_inputs([str(bad)], [])
    not_png = tmp_path / "grid.png"
    not_png.write_text("hello")
    with pytest.raises(InputDataError, match="grid.png: not a PNG"):
        gather_inputs(paths, [str(not_png)])
    rows = tmp_path / "s.json"
    rows.write_text(json.dumps([{"sampler": "ddim", "steps": 10}]))
    with pytest.raises(InputDataError, match="lacks 'seconds_per_image'"):
        gather_inputs(paths, [], str(rows))


def test_value_formatting():
    assert format_value("nway_top1_exact", 0.2346) == "0.235"  # rates: three decimals
    assert format_value("fid_judge_features", 1.933) == "1.93"  # others: three significant digits
    assert format_value("fid_judge_features", 0.0020516) == "0.00205"
    assert format_value("mse_raw_mean", 4984.8) == "4985"
    assert format_value("pcc_raw_mean", None) == "n/a"
