"""curate audit report: one self-contained page whose numbers are `summary --json`'s, checked twice: by
parsing the HTML (always) and by rendering it in headless Chromium (skipped where none is installed)."""

from __future__ import annotations

import base64
import json
import math
import os
import shutil
from collections import defaultdict
from html.parser import HTMLParser
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curate.audit.run import RunOutput
from curate.audit.summary import summary
from curate.cli import main

pytestmark = pytest.mark.e2e

PLANT = '<script>alert("planted")</script> & <b>not bold</b> '


def rows(out: Path, folder: str) -> list[dict]:
    return [r for f in sorted((out / folder).rglob("*.parquet")) for r in pq.read_table(f).to_pylist()]


class Page(HTMLParser):
    """Every tag with its attributes, script bodies, and the plotly chart divs of a page."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.scripts: list[tuple[dict, str]] = []
        self.charts: list[str] = []
        self.text: list[str] = []
        self._script: dict | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "script":
            self._script = attrs
            self.scripts.append((attrs, ""))
        if tag == "div" and "plotly-graph-div" in (attrs.get("class") or "").split():
            self.charts.append(attrs["id"])

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._script = None

    def handle_data(self, data: str) -> None:
        if self._script is not None:
            attrs, body = self.scripts[-1]
            self.scripts[-1] = (attrs, body + data)
        else:
            self.text.append(data)

    def blob(self, id_: str):
        [body] = [body for attrs, body in self.scripts if attrs.get("id") == id_]
        return json.loads(body)


def figures_of(text: str) -> dict[str, tuple[list, dict]]:
    """Each chart's (data, layout), read back from the ``Plotly.newPlot("id", data, layout, config)`` calls."""
    decoder = json.JSONDecoder()
    out = {}
    at = text.find("Plotly.newPlot(")
    while at >= 0:
        pos = at + len("Plotly.newPlot(")
        values = []
        for _ in range(3):
            while text[pos] in " \n\t,":
                pos += 1
            value, pos = decoder.raw_decode(text, pos)
            values.append(value)
        out[values[0]] = (values[1], values[2])
        at = text.find("Plotly.newPlot(", pos)
    return out


def expected_histograms(out: Path) -> dict[tuple[str, str], dict]:
    """Per stage and reason with a finite score: the scores and the distinct thresholds, from the Parquet files."""
    found: dict[tuple[str, str], dict] = defaultdict(lambda: {"scores": 0, "thresholds": set()})
    for r in rows(out, "removed"):
        if r["score"] is not None and math.isfinite(r["score"]):
            found[(r["removed_by"], r["reason"])]["scores"] += 1
    for r in rows(out, "removed"):
        if (r["removed_by"], r["reason"]) in found and r["threshold"] is not None:
            found[(r["removed_by"], r["reason"])]["thresholds"].add(r["threshold"])
    return dict(found)


@pytest.fixture(scope="module")
def page(audited_run: Path, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("report") / "report.html"
    assert main(["audit", "report", str(audited_run), "-o", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def planted_run(shared_data: Path, ray_session, tmp_path_factory) -> Path:
    """A tiny JSONL run whose removed pages carry HTML in their text and URL, and one quarantined source:
    three token loops (removed by repetition) and two ordinary pages of loops.example (quarantined), and a
    dozen Reddit threads from ../shared/data/text that are kept."""
    from classify.test_classify import reddit_documents

    tmp = tmp_path_factory.mktemp("planted")
    threads = reddit_documents(shared_data, per_topic=3)
    docs = [{"id": f"ok-{i}", "url": f"https://{sub}.example.org/{i}", "text": t} for i, (sub, t) in enumerate(threads)]
    docs += [{"id": f"loop-{i}", "url": f"https://loops.example/{i}?q=<script>x</script>", "text": PLANT + "na " * 200}
             for i in range(3)]
    docs += [{"id": f"loop-ok-{i}", "url": f"https://loops.example/ok{i}", "text": threads[i][1]} for i in range(2)]
    (tmp / "in.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (tmp / "p.yaml").write_text("stages:\n  - jsonl_read: {}\n  - repetition: {measure_removed: true}\n"
                                "  - source_quarantine: {min_docs: 5, max_pathological_share: 0.5}\n")
    out = tmp / "out"
    assert main(["run", str(tmp / "p.yaml"), "-i", str(tmp / "in.jsonl"), "-o", str(out), "--no-progress",
                 "--workers", "2"]) == 0
    return out


def test_the_page_is_self_contained_with_one_chart_per_figure_and_the_summary_numbers(
        page: Path, audited_run: Path, capsys) -> None:
    from plotly.offline import get_plotlyjs

    text = page.read_text()
    parsed = Page(text)
    # nothing to fetch: no script, stylesheet, image or frame from elsewhere
    for tag, attrs in parsed.tags:
        for attr in ("src", "href"):
            value = (attrs.get(attr) or "").strip().lower()
            assert not value.startswith(("http:", "https:", "//")), (tag, attrs)
    bundle = get_plotlyjs()
    assert sum(body == bundle for _, body in parsed.scripts) == 1  # plotly.js inlined once for the whole page
    assert text.count(bundle[:2000]) == 1

    # the embedded figures are the summary's, computed here and as `curate audit summary --json` prints them
    figures = parsed.blob("curate-summary")
    assert figures == json.loads(json.dumps(summary(RunOutput(str(audited_run)))))
    assert main(["audit", "summary", str(audited_run), "--json"]) == 0
    assert figures == json.loads(capsys.readouterr().out)

    # one plotly div per chart, each drawn by one Plotly.newPlot call
    charts = parsed.blob("curate-charts")
    assert parsed.charts == [c["id"] for c in charts] and len(set(parsed.charts)) == len(charts)
    plotted = figures_of(text)
    assert sorted(plotted) == sorted(parsed.charts)
    kinds = [c["kind"] for c in charts]
    expected = expected_histograms(audited_run)
    report = pq.read_table(audited_run / "stats" / "source_quarantine_report.parquet")
    assert kinds == ["funnel", "reasons", *["scores"] * len(expected), *(["quarantine"] if report.num_rows else []),
                     "hosts", "languages"]

    # the funnel draws the summary's documents, step by step
    [funnel] = [c for c in charts if c["kind"] == "funnel"]
    data, _ = plotted[funnel["id"]]
    assert data[0]["type"] == "funnel" and data[0]["x"] == [row["documents"] for row in figures["funnel"]]
    assert data[0]["y"][-1] == f"shards ({figures['shards']['tokens']:,} tokens)"

    # every score histogram counts the finite scores of its reason, with the rows' thresholds drawn
    drawn = {}
    for chart in charts:
        if chart["kind"] != "scores":
            continue
        data, layout = plotted[chart["id"]]
        key = (chart["stage"], chart["reason"])
        assert sum(data[0]["y"]) == chart["scored"] == expected[key]["scores"], key
        lines = {shape["x0"] for shape in layout.get("shapes", [])}
        assert lines == set(chart["thresholds"]) == expected[key]["thresholds"], key
        drawn[key] = lines
    assert set(drawn) == set(expected)

    # the hosts that lost most documents, as the removed parts count them
    removed = rows(audited_run, "removed")
    by_host: dict[str, int] = defaultdict(int)
    for r in removed:
        by_host[r["host"] or "(none)"] += 1
    [hosts] = [c for c in charts if c["kind"] == "hosts"]
    assert hosts["removed"] == sorted(by_host.values(), reverse=True)[:20]
    assert all(by_host[h] == n for h, n in zip(hosts["hosts"], hosts["removed"], strict=True))
    # the language mix: kept documents per language, and the shards' tokens per language
    kept = rows(audited_run, "kept")
    [mix] = [c for c in charts if c["kind"] == "languages"]
    manifest = json.loads((audited_run / "shards" / "manifest.json").read_text())
    for language, documents, tokens in zip(mix["languages"], mix["kept_documents"], mix["shard_tokens"], strict=True):
        assert documents == sum(r["language"] == language for r in kept)
        assert tokens == manifest["totals"]["by_language"][language]["tokens"]

    # the examples table shows the summary's examples
    body = " ".join(parsed.text)
    for s in figures["stages"].values():
        for entry in s["reasons"].values():
            for example in entry.get("examples", []):
                assert example["text"] in body


def test_page_text_is_escaped_and_quarantined_sources_are_drawn(planted_run: Path, tmp_path: Path) -> None:
    path = tmp_path / "planted.html"
    assert main(["audit", "report", str(planted_run), "-o", str(path)]) == 0
    text = path.read_text()
    parsed = Page(text)
    # the planted markup is text on the page, never a tag: only our own scripts exist
    assert 'alert("planted")' not in "".join(body for _, body in parsed.scripts)
    assert "<script>alert" not in text and "<b>not bold" not in text and "<script>x" not in text
    assert "&lt;script&gt;alert(&quot;planted&quot;)&lt;/script&gt; &amp; &lt;b&gt;not bold&lt;/b&gt;" in text
    assert not [t for t, _ in parsed.tags if t == "b"]
    body = " ".join(parsed.text)
    assert PLANT.strip() in body  # ... and reads as the page's own text once unescaped
    assert "https://loops.example/0?q=<script>x</script>" in body
    # the JSON blob holds the same text (escaped for a <script> element, equal once parsed)
    figures = parsed.blob("curate-summary")
    assert figures == json.loads(json.dumps(summary(RunOutput(str(planted_run)))))
    [example, *_] = figures["stages"]["repetition"]["reasons"]["token_period_run"]["examples"]
    assert example["text"].startswith(PLANT.strip()[:60])
    # the quarantined source, with the report's counts
    charts = parsed.blob("curate-charts")
    [quarantine] = [c for c in charts if c["kind"] == "quarantine"]
    report = pq.read_table(planted_run / "stats" / "source_quarantine_report.parquet").to_pylist()
    assert quarantine["sources"] == [r["source"] for r in report] == ["loops.example"]
    data, _ = figures_of(text)[quarantine["id"]]
    assert [t["y"] for t in data] == [[report[0]["pathological"]], [report[0]["docs"] - report[0]["pathological"]]]
    assert figures["stages"]["source_quarantine"]["removed"] == report[0]["removed"] == 2
    # no language column in this run: the section says so instead of drawing an empty chart
    assert "languages" not in [c["kind"] for c in charts] and "have no language column" in body


def _chromium() -> str | None:
    for name in (os.environ.get("CURATE_CHROMIUM"), "chromium", "chromium-browser", "google-chrome", "chrome"):
        found = name and shutil.which(name)
        if found:
            return found
    return None


def test_the_page_renders_in_headless_chromium(page: Path, audited_run: Path, capsys) -> None:
    """No console errors and no request leaves the file; every chart is drawn; the numbers the browser
    parses equal `summary --json`; a screenshot has content."""
    executable = _chromium()
    if executable is None:
        pytest.skip("Chromium is not installed (apt-get install chromium, or set CURATE_CHROMIUM): the rendering "
                    "check needs a browser; the page's structure and numbers are checked without one")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the rendering check drives Chromium with "
                                   "playwright (pip install playwright; it uses the installed Chromium)")
    assert main(["audit", "summary", str(audited_run), "--json"]) == 0
    expected = json.loads(capsys.readouterr().out)
    charts = Page(page.read_text()).blob("curate-charts")
    problems: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable)
        try:
            tab = browser.new_page(viewport={"width": 1280, "height": 1000})
            tab.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            tab.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            tab.on("request", lambda r: problems.append(f"request: {r.url}") if not r.url.startswith("file:") else None)
            tab.goto(page.resolve().as_uri(), wait_until="load")
            tab.wait_for_function("n => document.querySelectorAll('.plotly-graph-div .main-svg').length >= n",
                                  arg=len(charts))
            drawn = tab.evaluate("""() => Array.from(document.querySelectorAll('.plotly-graph-div')).map(d => ({
                id: d.id, data: d.data.length, svg: d.querySelectorAll('.main-svg').length,
                width: d.getBoundingClientRect().width, height: d.getBoundingClientRect().height}))""")
            numbers = tab.evaluate("JSON.parse(document.getElementById('curate-summary').textContent)")
            funnel = tab.evaluate("Array.from(document.getElementById('chart-funnel').data[0].x)")
            first_scores = next(c["id"] for c in charts if c["kind"] == "scores")
            shots = [tab.locator(f"#{id_}").screenshot() for id_ in ("chart-funnel", first_scores)]
            # decode the screenshots with the browser's own PNG decoder, on a blank page
            blank = browser.new_page()
            inks = [blank.evaluate(_INK, base64.b64encode(shot).decode()) for shot in shots]
        finally:
            browser.close()
    assert problems == []
    assert [d["id"] for d in drawn] == [c["id"] for c in charts]
    assert all(d["data"] >= 1 and d["svg"] >= 1 and d["width"] > 100 and d["height"] > 100 for d in drawn), drawn
    assert numbers == expected
    assert funnel == [row["documents"] for row in expected["funnel"]]
    for ink in inks:  # not blank: drawn in many colours over a good share of the chart
        assert ink["ink"] > 0.02 * ink["pixels"] and ink["colours"] > 16, ink


_INK = """async b64 => {
    const img = new Image(); img.src = 'data:image/png;base64,' + b64; await img.decode();
    const c = document.createElement('canvas'); c.width = img.width; c.height = img.height;
    const g = c.getContext('2d'); g.drawImage(img, 0, 0);
    const d = g.getImageData(0, 0, c.width, c.height).data;
    let ink = 0; const colours = new Set();
    for (let i = 0; i < d.length; i += 4) {
        if (d[i] < 240 || d[i + 1] < 240 || d[i + 2] < 240) ink++;
        colours.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
    }
    return {pixels: d.length / 4, ink, colours: colours.size};
}"""
