"""The page's tables: the headline (model vs each control, with intervals), one folded
table of every metric per run, and the published numbers quoted for context.

A column that is empty on every row is left out, so no table carries a column of dashes.
"""

from __future__ import annotations

from mindvis.evaluation.report.estimates import (
    Estimate,
    headline_metrics,
    separated,
    shown_metrics,
    sources,
    train_copy,
)
from mindvis.evaluation.report.labels import (
    CHANCE,
    CONTROLS,
    COPY_SHARE,
    DATASET_NAMES,
    MODEL,
    SOURCE_LABELS,
    esc,
    format_interval,
    format_p,
    format_value,
    metric_label,
    run_title,
)


EMPTY = "<td></td>"


def run_order(doc: dict) -> tuple:
    """GOD, BOLD5000, HCP, then any other dataset; subjects in numeric order."""
    dataset, subject = str(doc.get("dataset")).lower(), str(doc.get("subject"))
    rank = list(DATASET_NAMES).index(dataset) if dataset in DATASET_NAMES else len(DATASET_NAMES)
    return rank, dataset, (int(subject) if subject.isdigit() else 10**9, subject), str(doc.get("protocol"))


def estimate_cell(name: str, est: Estimate | None, css: str = "") -> str:
    """'0.829 [0.792–0.866]' on one line; '' for no estimate."""
    if est is None:
        return EMPTY
    interval = format_interval(name, est.ci, est.value)
    ci = f' <span class="ci">[{esc(interval)}]</span>' if interval else ""
    attr = f' class="{css}"' if css else ""
    return f"<td{attr}><b>{esc(format_value(name, est.value))}</b>{ci}</td>"


def filled_columns(rows: list[list[str]], width: int, keep: int) -> list[bool]:
    """Per column: shown? The first `keep` always; any other only if some row has a value in it."""
    return [i < keep or any(r[i] != EMPTY for r in rows) for i in range(width)]


# ----------------------------------------------------------------------------- headline


def headline_table(docs: list[dict]) -> str:
    metrics = headline_metrics(docs)
    copies = any(train_copy(d) for d in docs)
    labels = {m: _common_label(docs, m) for m in metrics}
    head = ["<th>run</th>", "<th>decoder</th>"] + [f'<th title="{esc(m)}">{esc(labels[m])}</th>' for m in metrics]
    if copies:
        head.append('<th title="baselines.nearest_train_copy">closer to a training image</th>')
    groups = []
    for doc in sorted(docs, key=run_order):
        per = sources(doc)
        model = per[MODEL]
        order = [MODEL] + [k for k, _, _ in CONTROLS if k in per] + ([CHANCE] if CHANCE in per else [])
        rows = []
        for src in order:
            cells = []
            for m in metrics:
                est = per[src].get(m)
                css = ""
                if src != MODEL and est is not None and m in model:
                    higher = doc["metrics"][m].get("higher_is_better", True)
                    clear = separated(model[m], est, higher)
                    css = "" if clear is None else ("clear" if clear else "overlap")
                cells.append(estimate_cell(m, est, css))
            if copies:
                share = train_copy(doc) if src == MODEL else None
                cells.append(estimate_cell(COPY_SHARE, share[0]) if share else EMPTY)
            rows.append(cells)
        groups.append((doc, order, rows))
    keep = [True] * 2 + filled_columns([r for _, _, rows in groups for r in rows], len(head) - 2, 0)
    head = [h for h, k in zip(head, keep) if k]
    body = []
    for doc, order, rows in groups:
        trs = []
        for i, (src, cells) in enumerate(zip(order, rows)):
            first = f'<th rowspan="{len(order)}" scope="rowgroup">{esc(run_title(doc))}</th>' if i == 0 else ""
            shown = "".join(c for c, k in zip(cells, keep[2:]) if k)
            trs.append(f'<tr class="src-{esc(src)}">{first}<td class="src">{esc(SOURCE_LABELS[src])}</td>{shown}</tr>')
        body.append("<tbody>" + "".join(trs) + "</tbody>")
    return (f'<div class="scroll"><table id="headline"><thead><tr>{"".join(head)}</tr></thead>'
            f'{"".join(body)}</table></div>')


def _common_label(docs: list[dict], name: str) -> str:
    labels = {metric_label(name, d["metrics"][name]) for d in docs if name in d["metrics"]}
    return labels.pop() if len(labels) == 1 else metric_label(name, {"n": "n", "n_classes": "all"})


# ----------------------------------------------------------------------------- details


def run_details(doc: dict) -> str:
    """<details> with every metric of one run: rows are metrics, columns the model's figures and each source."""
    per = sources(doc)
    model = per[MODEL]
    controls = [k for k, _, _ in CONTROLS if k in per]
    head = ["metric", "model", "p vs chance", "best of K", "across seeds"]
    head += [SOURCE_LABELS[k] for k in controls] + (["chance"] if CHANCE in per else [])
    rows = []
    for name in shown_metrics(doc):
        est = model.get(name)
        rec = doc["metrics"][name]
        seeds = ""
        if est is not None and est.seeds:
            s = est.seeds
            seeds = f"{format_value(name, s.get('mean'))} ± {format_value(name, s.get('sd'))} (n = {s.get('n')})"
        cells = [f'<th scope="row" title="{esc(name)}">{esc(metric_label(name, rec))}</th>',
                 estimate_cell(name, est),
                 _text_cell(format_p(est.p) if est else ""),
                 _text_cell(format_value(name, est.best) if est and est.best is not None else ""),
                 _text_cell(seeds)]
        cells += [estimate_cell(name, per[k].get(name)) for k in controls]
        if CHANCE in per:
            chance = per[CHANCE].get(name)
            cells.append(_text_cell(format_value(name, chance.value) if chance else ""))
        rows.append(cells)
    keep = filled_columns(rows, len(head), keep=2)
    head_html = "".join(f"<th>{esc(h)}</th>" for h, k in zip(head, keep) if k)
    body = "".join("<tr>" + "".join(c for c, k in zip(r, keep) if k) + "</tr>" for r in rows)
    table = (f'<div class="scroll"><table class="details"><thead><tr>{head_html}</tr></thead>'
             f"<tbody>{body}</tbody></table></div>")
    copy = train_copy(doc)
    copy_html = ""
    if copy:
        share, _ = copy
        interval = format_interval(COPY_SHARE, share.ci, share.value)
        copy_html = (f"<p>Closer to a training image than to their own ground truth: "
                     f"<b>{esc(format_value(COPY_SHARE, share.value))}</b>"
                     f"{' [' + esc(interval) + ']' if interval else ''} of the reconstructions.</p>")
    skipped = doc.get("skipped") or {}
    skip_html = ""
    if skipped:
        items = "".join(f"<li>{esc(metric_label(n))}: {esc(why)}</li>" for n, why in sorted(skipped.items()))
        skip_html = f'<p class="note">Not computed in this run:</p><ul class="note">{items}</ul>'
    judge = doc.get("judge") or {}
    summary = (f"{esc(run_title(doc))}: every metric <span class=\"note\">({esc(doc.get('n_test', '?'))} test items "
               f"× {esc(doc.get('k_samples', '?'))} samples, judge {esc(judge.get('name', '?'))}, protocol "
               f"{esc(doc.get('protocol', '?'))})</span>")
    return f"<details><summary>{summary}</summary>{table}{copy_html}{skip_html}</details>"


def _text_cell(text: str) -> str:
    return f"<td>{esc(text)}</td>" if text else EMPTY


def details_section(docs: list[dict]) -> str:
    return "".join(run_details(d) for d in sorted(docs, key=run_order))
