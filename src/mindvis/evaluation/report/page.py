"""The page: sections in reading order, inline CSS and the click-to-enlarge script.

Self-contained: no external URL anywhere (images are data URIs, charts inline SVG),
so the file can be mailed or archived as it is. Every wide element sits in a
box that scrolls on its own, so the page itself never scrolls sideways.
"""

from __future__ import annotations

from mindvis.evaluation.report.charts import charts_section
from mindvis.evaluation.report.definitions import definitions_section
from mindvis.evaluation.report.grids import grids_section
from mindvis.evaluation.report.inputs import ReportInputs
from mindvis.evaluation.report.labels import esc
from mindvis.evaluation.report.nsd import nsd_section
from mindvis.evaluation.report.quoted import quoted_table
from mindvis.evaluation.report.samplers import sampler_section
from mindvis.evaluation.report.tables import details_section, headline_table

CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;padding:1.5em 24px;max-width:1280px;
 color:#222;line-height:1.45}
h1{margin:.2em 0 .3em} h2{margin:1.6em 0 .5em;border-bottom:1px solid #ddd;padding-bottom:.2em}
p{max-width:75em} .note{color:#555;font-size:13px}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-size:14px;margin:.6em 0}
th,td{border:1px solid #d6d6d6;padding:4px 10px;text-align:right;white-space:nowrap}
thead th{background:#f3f3f3;text-align:center;white-space:normal} th[scope]{text-align:left;background:#fafafa}
td.src,#samplers td:first-child{text-align:left} .ci{color:#555;font-size:12px}
#headline tbody{border-top:2px solid #999} #headline tr.src-model td{background:#eef4fb}
#headline td.clear{background:#eaf6ea} #headline td.overlap{background:#fdf1dc}
table.details{font-size:13px} table.details td,table.details th{padding:3px 6px}
#quoted td{text-align:left} #nsd td.src{text-align:left;white-space:normal;min-width:12em}
#nsd td.na{color:#777;font-style:italic} #nsd tr.quoted td{background:#f7f7f7}
#quoted th{white-space:nowrap} #quoted td.note{white-space:normal;min-width:16em}
details{margin:.4em 0;border:1px solid #e2e2e2;border-radius:4px;padding:.3em .8em}
summary{cursor:pointer;font-weight:600} ul.note{margin-top:0}
.legend{display:flex;flex-wrap:wrap;gap:1.2em;font-size:13px;align-items:center}
.legend i{display:inline-block;width:11px;height:11px;border-radius:50%;margin-right:5px;vertical-align:-1px}
.legend i.dash{border-radius:0;height:0;border-top:2px dashed #777;width:18px}
.charts{display:flex;flex-wrap:wrap;gap:10px}
svg.chart{width:296px;max-width:100%;height:auto;font-size:11px;background:#fff}
svg .ct{font-weight:600;font-size:12px} svg .yt{text-anchor:end;fill:#444} svg .xt{text-anchor:middle;fill:#333}
svg .gl{stroke:#e5e5e5} svg .frame{fill:none;stroke:#999} svg .eb{stroke-width:1.6;fill:none}
svg .chance{stroke:#777;stroke-dasharray:5 4;stroke-width:1.5}
.grids{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}
figure{margin:0;max-width:100%} figcaption{font-size:13px;color:#444;margin-top:4px}
figure.grid img,figure.plot img{display:block;width:100%;height:auto;cursor:zoom-in}
img.pixelated{image-rendering:pixelated}
.gridhead{position:relative;height:1.5em;font-size:13px;font-weight:600}
.gridhead span{position:absolute;top:0;text-align:center;overflow:hidden;white-space:nowrap}
.gridhead .gtlabel{color:#c25400}
.gridbox{position:relative} .gtframe{position:absolute;top:0;bottom:0;border:3px solid #e06c00;pointer-events:none}
figure.plot{width:900px}
dt{font-weight:600;margin-top:.6em} dd{margin-left:1.5em;max-width:75em} code{font-size:12px;color:#555}
#lightbox{position:fixed;inset:0;background:rgba(0,0,0,.85);display:flex;align-items:center;
 justify-content:center;cursor:zoom-out;z-index:10}
#lightbox[hidden]{display:none}
#lightbox img{max-width:96vw;max-height:96vh;min-height:60vh;object-fit:contain;background:#fff}
"""

# Click an image: shown as large as the window allows; click or Escape closes it.
SCRIPT = """
(function(){
  var box=document.createElement('div');box.id='lightbox';box.hidden=true;
  var big=document.createElement('img');box.appendChild(big);document.body.appendChild(box);
  function close(){box.hidden=true;}
  box.addEventListener('click',close);
  document.addEventListener('keydown',function(e){if(e.key==='Escape')close();});
  document.querySelectorAll('img.zoomable').forEach(function(im){
    im.title='click to enlarge';
    im.addEventListener('click',function(){
      big.src=im.src;big.className=im.classList.contains('pixelated')?'pixelated':'';box.hidden=false;});
  });
})();
"""


def render_report(inputs: ReportInputs, title: str = "mindvis results") -> str:
    docs = inputs.metrics
    samplers = ""
    if inputs.sampler_rows:
        samplers = f"<h2>Sampler comparison</h2>{sampler_section(inputs.sampler_rows, inputs.sampler_context)}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title><style>{CSS}</style></head>
<body>
<h1>{esc(title)}</h1>
<p>{len(docs)} evaluated run(s). Each run's model is shown beside the controls that expose a decoder which does
not read the brain: if the model's numbers are no better than <em>shuffled fMRI</em> or <em>prior only</em>, it is
drawing typical images, not decoding. Brackets are 95 % intervals; "What each number is" at the end defines every
figure.</p>
<h2>Model against controls</h2>
{headline_table(docs)}
{charts_section(docs)}
<h3>Every metric, per run</h3>
{details_section(docs)}
<h3>Published numbers</h3>
{quoted_table()}
{nsd_section(docs)}
<h2>Reconstructions</h2>
<p class="note">Each row is one test item: its ground truth (framed, first column) and the model's samples.</p>
{grids_section(inputs.grids)}
{samplers}
<h2>What each number is</h2>
{definitions_section(docs)}
<script>{SCRIPT}</script>
</body></html>
"""


def write_report(inputs: ReportInputs, out, title: str = "mindvis results") -> dict:
    from mindvis.utils.atomic import write_text

    text = render_report(inputs, title)
    write_text(out, text)
    return {"n_runs": len(inputs.metrics), "n_grids": len(inputs.grids),
            "n_sampler_rows": len(inputs.sampler_rows or []), "bytes": len(text.encode())}
