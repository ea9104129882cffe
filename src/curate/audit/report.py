"""``curate audit report OUT -o report.html``: one self-contained HTML page of a run's audit.

The page holds the funnel (records → documents → each stage → kept → tokens in shards), documents removed
per stage and reason, a score histogram per stage and reason with its threshold drawn, the quarantined
sources, the hosts that lost most documents, the language mix of the kept corpus (and of the shards'
tokens) and a few examples per reason. plotly.js is inlined once, so the page opens with no network.

Every count comes from :func:`curate.audit.summary.summary`, embedded verbatim as JSON
(``<script type="application/json" id="curate-summary">``) so it can be checked against
``curate audit summary --json``; a second blob (``id="curate-charts"``) lists the charts and what they
draw. The page's size does not grow with the crawl: scores are binned while the removed parts stream past
(the ``reason``, ``score`` and ``threshold`` columns only), hosts and languages are counted per batch and
only the top few are drawn, and examples are the summary's few per reason.
"""

from __future__ import annotations

import argparse
import html
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from curate.audit.run import RunOutput
from curate.audit.summary import SNIPPET, summary

HELP = ("one self-contained HTML page: funnel, removal reasons, score histograms with thresholds, quarantined "
        "sources, top removed hosts, language mix, examples")
BINS = 40
TOP = 20
#: Distinct thresholds drawn on one histogram (a stage whose threshold varies per row draws the first few).
MAX_THRESHOLDS = 8
QUARANTINE_STAGE = "source_quarantine"
_NONE = "(none)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", "-o", default="report.html", help="the HTML file to write (default: report.html)")
    parser.add_argument("--examples", type=int, default=3, help="examples per stage and reason")
    parser.add_argument("--bins", type=int, default=BINS, help="bins of each score histogram")
    parser.add_argument("--top", type=int, default=TOP, help="hosts, sources and languages drawn")


def run(args: argparse.Namespace, output: RunOutput) -> int:
    import fsspec

    page = report(output, examples=args.examples, bins=args.bins, top=args.top)
    with fsspec.open(args.out, "w", encoding="utf-8") as f:
        f.write(page.html)
    charts = len(page.charts)
    print(f"{args.out}: {charts} chart{'s' if charts != 1 else ''}, {len(page.html.encode()) / 1e6:.1f} MB "
          "(open it in a browser; it needs no network)")
    return 0


@dataclass
class Chart:
    id: str
    kind: str  # funnel | reasons | scores | quarantine | hosts | languages
    title: str
    figure: Any  # plotly.graph_objects.Figure
    info: dict[str, Any] = field(default_factory=dict)  # what it draws, for the curate-charts blob
    height: int = 420


@dataclass
class Page:
    html: str
    figures: dict[str, Any]  # the summary
    charts: list[Chart]


def report(output: RunOutput, examples: int = 3, bins: int = BINS, top: int = TOP) -> Page:
    """The page, with the summary it shows and its charts."""
    figures = summary(output, examples=examples)
    charts = [_funnel(figures)]
    reasons = _reasons_chart(figures)
    if reasons is not None:
        charts.append(reasons)
    charts += [_histogram_chart(h, k) for k, h in enumerate(histograms(output, figures, bins))]
    quarantine = quarantined_sources(output)
    if quarantine is not None and quarantine.num_rows:
        charts.append(_quarantine_chart(quarantine, top))
    hosts = removed_hosts(output, top)
    if hosts is not None and hosts["hosts"]:
        charts.append(_hosts_chart(hosts))
    languages = language_mix(output, top)
    if languages["languages"]:
        charts.append(_languages_chart(languages))
    return Page(_render(figures, charts, quarantine, top), figures, charts)


# ---- data: bounded whatever the size of the crawl ------------------------------------------------------

def histograms(output: RunOutput, figures: dict[str, Any], bins: int = BINS) -> list[dict[str, Any]]:
    """Per stage and reason with finite scores: bin edges, counts and the distinct thresholds of its rows.

    Two streaming passes over a stage's removed parts (the range, then the counts), reading only the
    ``reason``, ``score`` and ``threshold`` columns."""
    out = []
    for stage, s in figures["stages"].items():
        if not s["removed"]:
            continue
        dataset = output.dataset("removed", stage)
        if dataset is None or not {"reason", "score", "threshold"} <= set(dataset.schema.names):
            continue
        columns = ["reason", "score", "threshold"]
        ranges: dict[str, list[float]] = {}
        thresholds: dict[str, set[float]] = defaultdict(set)
        more: dict[str, bool] = defaultdict(bool)
        for reason, scores, limits in _by_reason(dataset, columns):
            finite = scores[np.isfinite(scores)]
            if len(finite):
                low, high = ranges.get(reason, [math.inf, -math.inf])
                ranges[reason] = [min(low, float(finite.min())), max(high, float(finite.max()))]
            for t in np.unique(limits[~np.isnan(limits)]).tolist():
                if len(thresholds[reason]) < MAX_THRESHOLDS:
                    thresholds[reason].add(t)
                elif t not in thresholds[reason]:
                    more[reason] = True
        # the range holds the thresholds too, so each is drawn inside its histogram
        edges = {reason: _edges(min([low, *thresholds[reason]]), max([high, *thresholds[reason]]), bins)
                 for reason, (low, high) in ranges.items()}
        counts = {reason: np.zeros(len(e) - 1, np.int64) for reason, e in edges.items()}
        scored: dict[str, int] = defaultdict(int)
        for reason, scores, _ in _by_reason(dataset, columns):
            if reason in edges:
                finite = scores[np.isfinite(scores)]
                counts[reason] += np.histogram(finite, bins=edges[reason])[0]
                scored[reason] += len(finite)
        for reason in s["reasons"]:  # in the summary's order (most documents first)
            if reason in edges:
                out.append({"stage": stage, "reason": reason, "documents": s["reasons"][reason]["documents"],
                            "scored": scored[reason], "edges": edges[reason].tolist(),
                            "counts": counts[reason].tolist(), "thresholds": sorted(thresholds[reason]),
                            "more_thresholds": more[reason]})
    return out


def _by_reason(dataset: ds.Dataset, columns: list[str]):
    """(reason, scores, thresholds) per batch and reason, as float64 arrays (null → NaN)."""
    for batch in dataset.to_batches(columns=columns):
        if not batch.num_rows:
            continue
        reasons = batch.column("reason")
        for reason in pc.unique(reasons).to_pylist():
            if reason is None:
                continue
            rows = batch.filter(pc.equal(reasons, reason))
            yield (reason, _floats(rows.column("score")), _floats(rows.column("threshold")))


def _floats(column: pa.Array) -> np.ndarray:
    return pc.fill_null(pc.cast(column, pa.float64()), math.nan).to_numpy(zero_copy_only=False)


def _edges(low: float, high: float, bins: int) -> np.ndarray:
    if high <= low:  # every score equal, and the threshold: one bin around them
        return np.array([low - 0.5, low + 0.5])
    return np.linspace(low, high, max(bins, 1) + 1)


def quarantined_sources(output: RunOutput) -> pa.Table | None:
    """``stats/source_quarantine_report.parquet`` (one row per quarantined source), most documents first;
    None when the run has no such stage."""
    path = output.reports().get(QUARANTINE_STAGE)
    if path is None:
        return None
    with output.fs.open(path, "rb") as f:
        table = pq.read_table(f)
    if not table.num_rows or "docs" not in table.column_names:
        return table
    return table.sort_by([("docs", "descending"), ("source", "ascending")])


def count_by(dataset: ds.Dataset, keys: list[str], filter: ds.Expression | None = None) -> pa.Table:
    """Rows per distinct value of ``keys`` (a ``count`` column), counted batch by batch: memory holds the
    distinct values, never the rows."""
    partial: list[pa.Table] = []
    empty = pa.table({**{k: pa.array([], dataset.schema.field(k).type) for k in keys},
                      "count": pa.array([], pa.int64())})

    def merge(tables: list[pa.Table]) -> pa.Table:
        merged = pa.concat_tables(tables).group_by(keys, use_threads=False).aggregate([("count", "sum")])
        return merged.select([*keys, "count_sum"]).rename_columns([*keys, "count"])

    for batch in dataset.to_batches(columns=keys, filter=filter):
        if batch.num_rows:
            table = pa.Table.from_batches([batch]).group_by(keys, use_threads=False).aggregate([([], "count_all")])
            partial.append(table.select([*keys, "count_all"]).rename_columns([*keys, "count"]))
        if len(partial) >= 64:
            partial = [merge(partial)]
    return merge([empty, *partial])


def removed_hosts(output: RunOutput, top: int = TOP) -> dict[str, Any] | None:
    """The ``top`` hosts with most removed documents, and per host the documents each stage removed."""
    dataset = output.dataset("removed")
    if dataset is None or not {"host", "removed_by"} <= set(dataset.schema.names):
        return None
    counts = count_by(dataset, ["host", "removed_by"])
    totals = counts.group_by("host", use_threads=False).aggregate([("count", "sum")])
    totals = totals.sort_by([("count_sum", "descending"), ("host", "ascending")])
    hosts = totals["host"].to_pylist()[:top]
    per_stage: dict[str, dict[str, int]] = defaultdict(dict)
    for row in counts.to_pylist():
        if row["host"] in hosts:
            per_stage[row["removed_by"] or _NONE][row["host"] or _NONE] = row["count"]
    order = {name: i for i, name in enumerate(output.stages())}
    stages = sorted(per_stage, key=lambda s: order.get(s, len(order)))
    return {"hosts": [h or _NONE for h in hosts], "removed": totals["count_sum"].to_pylist()[:top],
            "distinct_hosts": totals.num_rows, "by_stage": {stage: per_stage[stage] for stage in stages}}


def language_mix(output: RunOutput, top: int = TOP) -> dict[str, Any]:
    """Kept documents per ``language`` and, when the run wrote shards, their documents and tokens per
    language (the manifest's totals); the ``top`` languages by kept documents, the rest as ``other``."""
    kept: dict[str, int] = {}
    dataset = output.dataset("kept")
    if dataset is not None and "language" in dataset.schema.names:
        counts = count_by(dataset, ["language"])
        kept = {(r["language"] or _NONE): r["count"] for r in counts.to_pylist()}
    shards = output.shards
    by_language = (shards or {}).get("totals", {}).get("by_language") or {}
    names = sorted(set(kept) | set(by_language), key=lambda n: (-kept.get(n, 0),
                                                               -by_language.get(n, {}).get("tokens", 0), n))
    shown, rest = names[:top], names[top:]
    out: dict[str, Any] = {"languages": shown + (["other"] if rest else []),
                           "kept_documents": [kept.get(n, 0) for n in shown],
                           "shard_tokens": [by_language.get(n, {}).get("tokens", 0) for n in shown] if by_language
                           else None}
    if rest:
        out["kept_documents"].append(sum(kept.get(n, 0) for n in rest))
        if by_language:
            out["shard_tokens"].append(sum(by_language.get(n, {}).get("tokens", 0) for n in rest))
    return out


# ---- charts --------------------------------------------------------------------------------------------

def _figure(title: str, height: int):
    import plotly.graph_objects as go

    figure = go.Figure()
    figure.update_layout(title=title, template="plotly_white", height=height,
                         margin={"l": 60, "r": 30, "t": 60, "b": 50})
    return figure


def _funnel(figures: dict[str, Any]) -> Chart:
    import plotly.graph_objects as go

    rows = figures["funnel"]
    labels = []
    for row in rows:
        label = row["step"]
        if "tokens" in row:
            label = f"{label} ({row['tokens']:,} tokens)"
        labels.append(label)
    figure = _figure("Funnel: documents after each step", max(320, 36 * len(rows) + 100))
    figure.add_trace(go.Funnel(y=labels, x=[row["documents"] for row in rows], textinfo="value+percent initial"))
    return Chart("chart-funnel", "funnel", "Funnel", figure, {"steps": [row["step"] for row in rows],
                                                              "documents": [row["documents"] for row in rows]},
                 height=max(320, 36 * len(rows) + 100))


def _reasons_chart(figures: dict[str, Any]) -> Chart | None:
    import plotly.graph_objects as go

    bars = [(stage, reason, entry) for stage, s in figures["stages"].items()
            for reason, entry in s["reasons"].items() if entry["documents"]]
    if not bars:
        return None
    height = max(320, 24 * len(bars) + 120)
    figure = _figure("Documents removed, per stage and reason", height)
    for stage in dict.fromkeys(stage for stage, _, _ in bars):
        mine = [(reason, entry) for st, reason, entry in bars if st == stage]
        figure.add_trace(go.Bar(name=stage, orientation="h", y=[f"{stage} · {reason}" for reason, _ in mine],
                                x=[entry["documents"] for _, entry in mine],
                                customdata=[entry["bytes"] for _, entry in mine],
                                hovertemplate="%{y}: %{x:,} documents, %{customdata:,} bytes<extra></extra>"))
    figure.update_yaxes(autorange="reversed")
    figure.update_xaxes(title="documents")
    return Chart("chart-reasons", "reasons", "Removal reasons", figure,
                 {"bars": [{"stage": st, "reason": r, "documents": e["documents"]} for st, r, e in bars]}, height)


def _histogram_chart(h: dict[str, Any], k: int) -> Chart:
    import plotly.graph_objects as go

    edges = np.asarray(h["edges"])
    title = f"{h['stage']} · {h['reason']}: {h['scored']:,} score{'s' if h['scored'] != 1 else ''}"
    if h["scored"] < h["documents"]:
        title += f" (of {h['documents']:,} documents)"
    figure = _figure(title, 320)
    figure.add_trace(go.Bar(x=((edges[:-1] + edges[1:]) / 2).tolist(), y=h["counts"], width=np.diff(edges).tolist(),
                            name="documents", marker_line_width=0,
                            hovertemplate="score %{x:.4g}: %{y:,} documents<extra></extra>"))
    for t in h["thresholds"]:
        figure.add_vline(x=t, line_dash="dash", line_color="firebrick", annotation_text=f"threshold {t:.4g}",
                         annotation_position="top")
    figure.update_layout(showlegend=False, bargap=0)
    figure.update_xaxes(title="score")
    figure.update_yaxes(title="documents")
    info = {k2: h[k2] for k2 in ("stage", "reason", "documents", "scored", "thresholds", "more_thresholds")}
    info["bins"] = len(h["counts"])
    return Chart(f"chart-scores-{k:03d}", "scores", title, figure, info, height=320)


def _quarantine_chart(table: pa.Table, top: int) -> Chart:
    import plotly.graph_objects as go

    rows = table.slice(0, top).to_pylist()
    figure = _figure(f"Quarantined sources ({table.num_rows:,})", 380)
    sources = [r["source"] for r in rows]
    figure.add_trace(go.Bar(name="pathological pages", x=sources, y=[r["pathological"] for r in rows]))
    figure.add_trace(go.Bar(name="other pages", x=sources, y=[r["docs"] - r["pathological"] for r in rows]))
    figure.update_layout(barmode="stack")
    figure.update_yaxes(title="documents")
    return Chart("chart-quarantine", "quarantine", "Quarantined sources", figure,
                 {"sources": sources, "total": table.num_rows}, height=380)


def _hosts_chart(hosts: dict[str, Any]) -> Chart:
    import plotly.graph_objects as go

    height = max(320, 24 * len(hosts["hosts"]) + 120)
    figure = _figure(f"Hosts with most documents removed (top {len(hosts['hosts'])} of "
                     f"{hosts['distinct_hosts']:,})", height)
    for stage, counts in hosts["by_stage"].items():
        figure.add_trace(go.Bar(name=stage, orientation="h", y=hosts["hosts"],
                                x=[counts.get(h, 0) for h in hosts["hosts"]]))
    figure.update_layout(barmode="stack")
    figure.update_yaxes(autorange="reversed")
    figure.update_xaxes(title="documents removed")
    return Chart("chart-hosts", "hosts", "Top removed hosts", figure,
                 {"hosts": hosts["hosts"], "removed": hosts["removed"]}, height)


def _languages_chart(mix: dict[str, Any]) -> Chart:
    import plotly.graph_objects as go

    figure = _figure("Language mix: share of kept documents" + (" and of shard tokens" if mix["shard_tokens"] else ""),
                     380)
    for name, values, what in (("kept documents", mix["kept_documents"], "documents"),
                               ("shard tokens", mix["shard_tokens"], "tokens")):
        if not values or not sum(values):
            continue
        total = sum(values)
        figure.add_trace(go.Bar(name=name, x=mix["languages"], y=[100 * v / total for v in values],
                                customdata=values, hovertemplate=f"%{{x}}: %{{y:.1f}}% (%{{customdata:,}} {what})"
                                                                 "<extra></extra>"))
    figure.update_layout(barmode="group")
    figure.update_yaxes(title="%")
    return Chart("chart-languages", "languages", "Language mix", figure, mix, height=380)


# ---- the page ------------------------------------------------------------------------------------------

_STYLE = """
body { font-family: system-ui, -apple-system, Segoe UI, Roboto, sans-serif; margin: 2em auto; max-width: 1200px;
       color: #1f2933; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { margin-top: 2em; border-bottom: 1px solid #d9e2ec; padding-bottom: .2em; }
table { border-collapse: collapse; font-size: .9em; margin: .5em 0; }
th, td { border-bottom: 1px solid #e4e7eb; padding: .3em .6em; text-align: left; vertical-align: top; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(520px, 1fr)); gap: 1em; }
.note { color: #52606d; } .bad { color: #b91c1c; font-weight: bold; } .ok { color: #047857; font-weight: bold; }
td.snippet { font-family: ui-monospace, monospace; font-size: .85em; max-width: 60em; word-break: break-word; }
"""


def _render(figures: dict[str, Any], charts: list[Chart], quarantine: pa.Table | None, top: int) -> str:
    from plotly.offline import get_plotlyjs

    by_kind: dict[str, list[Chart]] = defaultdict(list)
    for chart in charts:
        by_kind[chart.kind].append(chart)
    e = html.escape
    ok = figures["conservation_ok"]
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        f"<title>curate audit: {e(figures['output'])}</title>", f"<style>{_STYLE}</style>",
        # plotly.js, once for the whole page (every chart's div calls Plotly.newPlot on it)
        '<script type="text/javascript">window.PlotlyConfig = {MathJaxConfig: "local"};</script>',
        f'<script type="text/javascript">{get_plotlyjs()}</script>', "</head>", "<body>",
        f"<h1>curate audit: {e(figures['output'])}</h1>",
        f"<p>{figures['inputs']:,} inputs; conservation "
        f"<span class=\"{'ok' if ok else 'bad'}\">{'OK' if ok else 'FAILED'}</span>: documents read "
        f"{figures['documents']:,} = kept {figures['kept']['documents']:,} + removed {figures['removed']:,} + errors "
        f"{figures['errors']:,}</p>",
        _numbers_table(figures),
        '<section id="funnel"><h2>Funnel</h2>', *_divs(by_kind["funnel"]), "</section>",
        '<section id="reasons"><h2>Removals by stage and reason</h2>',
        *(_divs(by_kind["reasons"]) or ['<p class="note">Nothing was removed.</p>']), _stages_table(figures),
        "</section>",
        '<section id="scores"><h2>Scores against thresholds</h2>',
        '<p class="note">Per stage and reason, the scores of the removed documents; the dashed line is the '
        "threshold the rule applied.</p>",
        '<div class="grid">', *_divs(by_kind["scores"]), "</div>",
        *([] if by_kind["scores"] else ['<p class="note">No removal carries a score.</p>']), "</section>",
        '<section id="quarantine"><h2>Quarantined sources</h2>', *_quarantine(by_kind["quarantine"], quarantine, top),
        "</section>",
        '<section id="hosts"><h2>Top removed hosts</h2>',
        *(_divs(by_kind["hosts"]) or ['<p class="note">No removed document has a host.</p>']), "</section>",
        '<section id="languages"><h2>Language mix</h2>',
        *(_divs(by_kind["languages"]) or ['<p class="note">The kept documents have no language column and the run '
                                          "wrote no shards.</p>"]), "</section>",
        '<section id="examples"><h2>Examples per reason</h2>', _examples_table(figures), "</section>",
        f'<script type="application/json" id="curate-summary">{_json(figures)}</script>',
        f'<script type="application/json" id="curate-charts">'
        f'{_json([{"id": c.id, "kind": c.kind, "title": c.title, **c.info} for c in charts])}</script>',
        "</body>", "</html>",
    ]
    return "\n".join(parts)


def _divs(charts: list[Chart]) -> list[str]:
    import plotly.io as pio

    return [pio.to_html(c.figure, include_plotlyjs=False, full_html=False, div_id=c.id, default_height=f"{c.height}px",
                        config={"displaylogo": False, "responsive": True}) for c in charts]


def _json(value: Any) -> str:
    """JSON safe inside a <script> element: no '<', '>' or '&' (as \\u escapes, the same value once parsed),
    and no NaN (which JSON.parse rejects)."""
    text = json.dumps(_finite(value), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _numbers_table(figures: dict[str, Any]) -> str:
    rows = [("records", figures["funnel"][0]["documents"]), ("documents", figures["documents"]),
            ("read errors", figures["read_errors"]), ("kept documents", figures["kept"]["documents"]),
            ("kept bytes", figures["kept"]["bytes"]), ("removed", figures["removed"]), ("errors", figures["errors"])]
    if figures["shards"]:
        sh = figures["shards"]
        rows += [("shards", sh["shards"]), ("shard documents", sh["documents"]),
                 (f"shard tokens ({sh['tokenizer']})", sh["tokens"])]
    if figures["bytes_per_token"]:
        rows.append(("bytes per token", figures["bytes_per_token"]))
    body = "".join(f'<tr><th>{html.escape(name)}</th><td class="n">{_number(v)}</td></tr>' for name, v in rows)
    return f'<table id="numbers">{body}</table>'


def _stages_table(figures: dict[str, Any]) -> str:
    head = ("<tr><th>stage</th><th>in</th><th>removed</th><th>share</th><th>bytes removed</th>"
            "<th>≈ tokens removed</th><th>errors</th><th>seconds</th></tr>")
    rows = []
    for name, s in figures["stages"].items():
        share = f"{s['removed'] / s['in']:.1%}" if s["in"] else "-"
        tokens = _number(s["tokens_removed_estimate"]) if s["tokens_removed_estimate"] is not None else "-"
        rows.append(f"<tr><td>{html.escape(name)}</td><td class=\"n\">{_number(s['in'])}</td>"
                    f"<td class=\"n\">{_number(s['removed'])}</td><td class=\"n\">{share}</td>"
                    f"<td class=\"n\">{_number(s['bytes_removed'])}</td><td class=\"n\">{tokens}</td>"
                    f"<td class=\"n\">{_number(s['errors'])}</td><td class=\"n\">{s['seconds']}</td></tr>")
    return f'<table id="stages">{head}{"".join(rows)}</table>'


def _quarantine(charts: list[Chart], table: pa.Table | None, top: int) -> list[str]:
    if table is None:
        return [f'<p class="note">The run has no {QUARANTINE_STAGE} stage.</p>']
    if not table.num_rows:
        return ['<p class="note">No source was quarantined.</p>']
    columns = [c for c in ("source", "docs", "pathological", "share", "removed", "example") if c in table.column_names]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    rows = []
    for row in table.slice(0, top).to_pylist():
        cells = []
        for c in columns:
            value = row[c]
            if c == "example":
                cells.append(f'<td class="snippet">{html.escape(_snippet(value))}</td>')
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                cells.append(f'<td class="n">{_number(value)}</td>')
            else:
                cells.append(f"<td>{html.escape(str(value))}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    more = f'<p class="note">… and {table.num_rows - top:,} more.</p>' if table.num_rows > top else ""
    return [*_divs(charts), f'<table id="quarantined">{"<tr>" + head + "</tr>"}{"".join(rows)}</table>{more}']


def _examples_table(figures: dict[str, Any]) -> str:
    rows = []
    for stage, s in figures["stages"].items():
        for reason, entry in s["reasons"].items():
            for ex in entry.get("examples", []):
                score = "-" if ex["score"] is None else f"{ex['score']:.4g}"
                rows.append(f"<tr><td>{html.escape(stage)}</td><td>{html.escape(reason)}</td>"
                            f"<td>{html.escape(ex['url'] or ex['id'] or '')}</td><td class=\"n\">{score}</td>"
                            f"<td class=\"snippet\">{html.escape(ex['text'] or '')}</td></tr>")
    if not rows:
        return '<p class="note">No examples (nothing removed, or --examples 0).</p>'
    head = "<tr><th>stage</th><th>reason</th><th>url</th><th>score</th><th>snippet</th></tr>"
    return f'<table id="examples-table">{head}{"".join(rows)}</table>'


def _snippet(text: Any) -> str:
    return " ".join(str(text or "").split())[:SNIPPET]


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".")
    return f"{value:,}" if isinstance(value, int) else html.escape(str(value))
