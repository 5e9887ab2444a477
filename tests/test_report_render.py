"""report.html as a person sees it (issue 15 section 3).

Hand-made inputs: metrics.json files with controls and intervals (format /2) beside
one without (format /1), grids written by the evaluate step's own grid writer, a
sampler table whose metrics differ by noise only. Checked twice: the HTML's structure
(headline table of model vs controls with intervals, no empty or duplicate columns,
readable headers, no external URL), then the page rendered in headless Chromium
(non-blank screenshot, no horizontal overflow, every grid image >= 96 px wide).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest
import timeouts
from PIL import Image

from mindvis.utils.images import grid_image
from mindvis.evaluation.report import gather_inputs, write_report
from mindvis.evaluation.report.samplers import x_range, y_range

K = 3  # samples per test item in the hand-made grids


# ----------------------------------------------------------------------------- inputs


def rec(value, ci=None, chance=None, label="x", **extra):
    out = {"value": value, "label": label, "definition": f"definition of {label}", "chance": chance,
           "higher_is_better": True, **extra}
    if ci is not None:
        out["ci95"] = list(ci)
    return out


def new_doc(dataset, subject, nway):
    """A format /2 metrics.json: intervals, p-values, every control."""
    pix = -0.0145
    return {
        "format": "mindvis-metrics/2", "dataset": dataset, "subject": subject, "protocol": "embedded-demo",
        "n_test": 50, "k_samples": K, "judge": {"name": "small_cnn"},
        "uncertainty": {"bootstrap": 1000, "permutations": 1000, "seed": 0, "confidence": 0.95, "unit": "test item"},
        "metrics": {
            "nway_top1_exact": rec(nway, (nway - 0.037, nway + 0.037), 0.2, "5-way top-1 (exact)", n=5, n_classes=10,
                                   p_value=0.000999, best=nway + 0.02, per_set=[nway, nway + 0.02, nway - 0.01],
                                   across_seeds={"mean": nway, "sd": 0.012, "n": 3}),
            "top1_all_classes": rec(0.756, (0.70, 0.81), 0.1, "top-1 of 10", n=10, n_classes=10, p_value=0.000999),
            "identification_pcc": rec(0.768, (0.741, 0.795), 0.5, "ID PCC", p_value=0.000999),
            "nsd_two_way_judge": rec(0.9, (0.87, 0.93), 0.5, "2-way judge feat.", p_value=0.000999),
            "nsd_pixcorr": rec(pix, (-0.03, 0.001), None, "PixCorr"),
            "pcc_raw_mean": rec(pix, (-0.03, 0.001), None, "PCC (raw)"),  # the same number, shown once
            "fid_judge_features": {**rec(1.93, (1.7, 2.2), None, "FID (judge feat.)"), "higher_is_better": False},
        },
        "skipped": {"fid_inception_2048": "needs Inception-v3 weights: not configured"},
        "baselines": {
            "shuffled_fmri": {"nway_top1_exact": {"value": 0.205, "ci95": [0.17, 0.24]},
                              "identification_pcc": {"value": 0.49, "ci95": [0.46, 0.52]},
                              "top1_all_classes": {"value": 0.1, "ci95": [0.07, 0.13]}},
            "prior_only": {"nway_top1_exact": {"value": 0.198, "ci95": [0.16, 0.235]},
                           "identification_pcc": {"value": 0.5, "ci95": [0.47, 0.53]}},
            "train_retrieval": {"nway_top1_exact": {"value": 0.81, "ci95": [0.77, 0.85]},
                                "identification_pcc": {"value": 0.6, "ci95": [0.57, 0.63]}},
            "nearest_train_copy": {"share_closer_to_train": 0.12, "ci95": [0.06, 0.2], "definition": "copy share"},
            "chance": {"nway_top1_exact": 0.2, "top1_all_classes": 0.1, "identification_pcc": 0.5,
                       "nsd_two_way_judge": 0.5},
        },
        "baseline_definitions": {"shuffled_fmri": "SHUFFLED-DEFINITION from metrics.json"},
    }


def old_doc(dataset, subject, nway):
    """A format /1 metrics.json: no intervals, no controls."""
    return {
        "format": "mindvis-metrics/1", "dataset": dataset, "subject": subject, "protocol": "embedded-demo",
        "n_test": 50, "k_samples": K, "judge": {"name": "small_cnn"},
        "metrics": {"nway_top1_exact": rec(nway, None, 0.2, "5-way top-1 (exact)", n=5, n_classes=10),
                    "identification_pcc": rec(0.61, None, 0.5, "ID PCC")},
        "skipped": {},
    }


SAMPLER_DOC = {
    "dataset": "god", "subject": "1", "items": 50, "n_samples": 2, "n_way": 5, "guidance_scale": 3.0, "threads": 1,
    "rows": [  # metrics within 0.005 of each other: noise, to be drawn flat
        {"sampler": "plms", "steps": 250, "seconds_per_image": 0.35123456, "speedup": 1.0,
         "seconds_per_image_runs": [0.35, 0.351, 0.36], "nway_top1_exact": 0.8181818, "identification_pcc": 0.7581234},
        {"sampler": "ddim", "steps": 50, "seconds_per_image": 0.0721234, "speedup": 4.869812,
         "seconds_per_image_runs": [0.072, 0.073, 0.071], "nway_top1_exact": 0.8221212, "identification_pcc": 0.757},
        {"sampler": "dpmpp", "steps": 25, "seconds_per_image": 0.0371111, "speedup": 9.46434,
         "seconds_per_image_runs": [0.037, 0.038, 0.037], "nway_top1_exact": 0.8231, "identification_pcc": 0.7549876},
    ],
}


@pytest.fixture
def report(tmp_path):
    rng = np.random.default_rng(0)
    paths, grids = [], []
    runs = (("god", "1", 0.829, new_doc), ("bold5000", "4", 0.854, new_doc), ("god", "2", 0.784, old_doc))
    for dataset, subject, nway, make in runs:
        d = tmp_path / dataset / subject
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps(make(dataset, subject, nway)))
        paths.append(str(d / "metrics.json"))
        samples = rng.integers(0, 256, (6, K, 32, 32, 3), dtype=np.uint8)
        gt = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
        Image.fromarray(grid_image(samples, gt, rows=4)).save(d / "grid.png")
        grids.append(str(d / "grid.png"))
    (tmp_path / "samplers.json").write_text(json.dumps(SAMPLER_DOC))
    out = tmp_path / "report.html"
    write_report(gather_inputs(paths, grids, str(tmp_path / "samplers.json")), out)
    return out


class Page(HTMLParser):
    """Tables (rows of cell texts, with each cell's class), element counts, src/href values, text."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, list[list[tuple[str, str]]]] = {}
        self.counts: dict[str, int] = {}
        self.urls: list[str] = []
        self._stack: list[str] = []
        self._row = self._cell = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.counts[tag] = self.counts.get(tag, 0) + 1
        self.urls += [attrs[k] for k in ("src", "href") if attrs.get(k)]
        if tag == "table":
            self._stack.append(attrs.get("id") or f"table{len(self.tables)}")
            self.tables[self._stack[-1]] = []
        elif tag == "tr" and self._stack:
            self._row = []
            self.tables[self._stack[-1]].append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._cell = ([], attrs.get("class") or "")

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append((" ".join("".join(self._cell[0]).split()), self._cell[1]))
            self._cell = None
        elif tag == "table" and self._stack:
            self._stack.pop()

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[0].append(data)


def parse(path) -> tuple[Page, str]:
    text = path.read_text()
    page = Page()
    page.feed(text)
    return page, text


def texts(rows):
    return [[t for t, _ in r] for r in rows]


# ----------------------------------------------------------------------------- structure


def headline_runs(page) -> tuple[list[str], dict[str, dict[str, list[tuple[str, str]]]]]:
    """(header, run -> decoder -> [(cell text, cell class)] per metric column)."""
    header, *rows = page.tables["headline"]
    header = [t for t, _ in header]
    runs: dict[str, dict] = {}
    run = None
    for r in rows:  # the run's name spans its rows: only its first row carries it
        if len(r) == len(header):
            run, r = r[0][0], r[1:]
        runs.setdefault(run, {})[r[0][0]] = r[1:]
    return header, runs


def test_headline_table_has_model_controls_and_intervals(report):
    page, _ = parse(report)
    header, runs = headline_runs(page)
    assert header == ["run", "decoder", "5-way top-1", "top-1 of 10 classes", "identification by PCC",
                      "2-way judge features", "closer to a training image"]
    assert list(runs) == ["GOD · subject 1", "GOD · subject 2", "BOLD5000 · CSI4"]
    god1 = {src: [t for t, _ in cells] for src, cells in runs["GOD · subject 1"].items()}
    assert list(god1) == ["model", "shuffled fMRI", "prior only (no fMRI)", "train retrieval", "chance"]
    # value [lo–hi], formatted here from the hand-made numbers
    assert god1["model"][0] == f"{0.829:.3f} [{0.829 - 0.037:.3f}–{0.829 + 0.037:.3f}]"
    assert god1["model"][4] == "0.120 [0.060–0.200]"
    assert god1["shuffled fMRI"][0] == "0.205 [0.170–0.240]" and god1["chance"][0] == "0.200"
    assert god1["prior only (no fMRI)"][2] == "0.500 [0.470–0.530]"
    assert god1["train retrieval"][1] == "" and god1["chance"][3] == "0.500"
    # the older file: model and chance only, no interval
    god2 = {src: [t for t, _ in cells] for src, cells in runs["GOD · subject 2"].items()}
    assert list(god2) == ["model", "chance"] and god2["model"][:3] == ["0.784", "", "0.610"]
    # n-way: the model's interval (0.792-0.866) clears shuffled, prior only and chance (green), overlaps
    # train retrieval's (0.77-0.85: amber)
    colours = {src: cells[0][1] for src, cells in runs["GOD · subject 1"].items()}
    assert colours == {"model": "", "shuffled fMRI": "clear", "prior only (no fMRI)": "clear",
                       "train retrieval": "overlap", "chance": "clear"}


def test_tables_have_no_empty_or_duplicate_columns_and_readable_headers(report):
    page, text = parse(report)
    for name, table in page.tables.items():
        header, *rows = texts(table)
        for i, title in enumerate(header):
            assert any(len(r) > i and r[i] not in ("", "-", "–") for r in rows), f"{name}: column {title!r} is empty"
            assert "_" not in title, f"{name}: snake_case header {title!r}"
        for r in rows:  # at most three digits after the point's leading zeros
            for num in re.findall(r"\d+\.\d+", " ".join(r)):
                assert len(num.split(".")[1].lstrip("0")) <= 3, f"{name}: unrounded number {num} in {r}"
    details = [texts(t) for n, t in page.tables.items() if n.startswith("table")]
    assert len(details) == 3 and page.counts["details"] == 3  # one folded table per run
    metric_rows = [r[0] for r in details[0][1:]]
    assert "PixCorr" in metric_rows and "PCC (raw mean)" not in metric_rows  # one number, shown once
    assert "pcc_raw_mean" in text.split("What each number is")[-1]  # ... and the definitions say why
    samplers = texts(page.tables["samplers"])
    assert samplers[0][:4] == ["Sampler", "Steps", "Seconds per image", "Speed-up"]
    assert [r[:4] for r in samplers[1:]] == [["PLMS", "250", "0.351", "1.0×"], ["DDIM", "50", "0.0721", "4.9×"],
                                             ["DPM-Solver++ 2M", "25", "0.0371", "9.5×"]]


def test_page_is_self_contained_and_defines_every_number(report):
    page, text = parse(report)
    assert not re.search(r"https?://", text), "external URL in the report"
    assert all(u.startswith("data:image/png;base64,") for u in page.urls)
    assert len(page.urls) == 3 + 1  # three grids and the sampler plot
    assert page.counts["svg"] == 4  # one chart per headline metric
    chart = text.split('<div class="charts">')[1].split("</div>")[0]
    assert chart.count('class="eb"') > 0 and "chance" in chart  # error bars, chance line
    defs = text.split("What each number is")[-1]
    for key in ("shuffled_fmri", "prior_only", "train_retrieval", "nearest_train_copy", "chance", "ci95",
                "p_value", "nway_top1_exact", "across seeds"):
        assert key in defs, key
    assert "SHUFFLED-DEFINITION from metrics.json" in defs  # the file's own wording wins
    assert text.count('class="gtframe"') == 3 and text.count(">ground truth</span>") == 3
    assert text.count('data-cell-px="32"') == 3  # the grid writer's layout was found back


def test_sampler_axes_are_honest():
    # a rate's axis spans at least chance..1, however close the values are
    lo, hi = y_range("nway_top1_exact", [0.818, 0.822, 0.823], chance=0.2)
    assert lo <= 0.2 and hi >= 1.0
    lo, hi = y_range("identification_pcc", [0.7549, 0.757, 0.7581], chance=0.5)
    assert lo <= 0.5 and hi >= 1.0
    # any other metric starts at 0: 1.930 vs 1.931 is not a slope
    lo, hi = y_range("fid_judge_features", [1.930, 1.931], chance=None)
    assert lo <= 0 and hi >= 1.931
    # time: two timings 3 % apart on a linear axis from 0; a 10x spread on a log axis
    assert x_range([0.0242, 0.0249])[0] == 0.0 and x_range([0.0242, 0.0249])[1] > 0.0249
    assert x_range([0.037, 0.351]) is None


# ----------------------------------------------------------------------------- in a browser


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless_shell"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no chromium binary (Debian: apt-get install chromium; .ci/run installs it)")


def browse(binary, page, profile, *args) -> subprocess.CompletedProcess:
    cmd = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
           f"--user-data-dir={profile}", "--window-size=1280,2000", "--virtual-time-budget=5000", *args,
           page.as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeouts.COMMAND)


# Written into the page after load: does it scroll sideways, and how wide is each grid image on screen?
PROBE = """<script>
window.addEventListener('load', function () {
  var d = document.documentElement, cells = [];
  document.querySelectorAll('img[data-cell-px]').forEach(function (im) {
    cells.push(im.getBoundingClientRect().width * im.dataset.cellPx / im.dataset.gridPx);
  });
  document.body.setAttribute('data-overflow', d.scrollWidth > d.clientWidth ? 'yes' : 'no');
  document.body.setAttribute('data-widths', d.scrollWidth + '/' + d.clientWidth);
  document.body.setAttribute('data-cells', cells.map(function (c) { return c.toFixed(1); }).join(','));
});
</script>"""


def probe(binary, html_path, tmp_path) -> dict[str, str]:
    probed = tmp_path / f"probed_{html_path.name}"
    probed.write_text(html_path.read_text().replace("</body>", PROBE + "</body>"))
    proc = browse(binary, probed, tmp_path / "profile", "--dump-dom")
    assert proc.returncode == 0, proc.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", proc.stdout)
    assert body, "no <body> in the dumped DOM"
    return dict(re.findall(r'data-(\w+)="([^"]*)"', body.group(1)))


def test_rendered_page_is_not_blank_and_does_not_overflow(report, tmp_path):
    binary = chromium()
    shot = tmp_path / "report.png"
    proc = browse(binary, report, tmp_path / "profile", f"--screenshot={shot}")
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.shape == (2000, 1280)
    assert pixels.std() > 20 and (pixels < 200).mean() > 0.02, "screenshot is (nearly) blank"

    seen = probe(binary, report, tmp_path)
    assert seen["overflow"] == "no", f"page scrolls sideways: scrollWidth/clientWidth = {seen['widths']}"
    cells = [float(c) for c in seen["cells"].split(",")]
    assert len(cells) == 3 and min(cells) >= 96, f"grid images on screen (px): {cells}"


def test_overflow_probe_sees_a_wide_page(tmp_path):
    # The probe itself: a page wider than the window must read as overflowing.
    binary = chromium()
    wide = tmp_path / "wide.html"
    wide.write_text('<!DOCTYPE html><html><body><div style="width:3000px;height:10px"></div></body></html>')
    assert probe(binary, wide, tmp_path)["overflow"] == "yes"
