"""Extraction on real pages: quality against gold, encoding repair, the time limit, and language ID.

Data (read in place from shared/data/html, see SOURCES.md):

* ``scrapinghub-aeb``: 119 news/blog pages with a human gold ``articleBody``. Scored as in the
  article-extraction-benchmark: ``\\w+`` tokens, per page true positives = the overlap of the two token
  bags, precision and recall averaged over pages (precision over pages with any predicted token, as the
  benchmark does), F1 of the two means. The benchmark's own 4-gram shingle F1 is printed alongside.
* ``trafilatura``: 383 pages with snippets that must (``with``) and must not (``without``) be in the main
  text; compared after collapsing whitespace.

The floors are what was measured when these tests were written (resiliparse 2.0.1, trafilatura 2.3.1)
minus ``MARGIN``: a drop below one is a regression of the extractor or of how we call it. Run with
``-s`` to see the figures. Extracted texts are cached for the session (trafilatura takes ~20 s).
"""

from __future__ import annotations

import gzip
import html as html_lib
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.io.html import decode_html, extract_text, read_page, write_page
from curate.schema import DOCUMENT_SCHEMA
from curate.stages.extract import Extract, ExtractParams
from curate.stages.language import Language, LanguageParams

ENGINES = ("resiliparse", "trafilatura", "curate")  # resiliparse: the stage's default; curate: the recipes'
MARGIN = 0.02

# Measured on the shared pages (2026-11): token-bag precision / recall / F1 on scrapinghub-aeb, and
# the shares of trafilatura's evaldata snippets found (with) and absent (without).
MEASURED = {
    "resiliparse": {"precision": 0.8630, "recall": 0.9888, "f1": 0.9216, "with": 0.9402, "without": 0.6900},
    "trafilatura": {"precision": 0.9537, "recall": 0.9749, "f1": 0.9642, "with": 0.9098, "without": 0.9231},
    # resiliparse's main content, then the line classifier, rebuilt by the test session (in-sample: it was
    # trained on these pages; the held-out cross-check is test_boilerplate_model_rebuilds_and_holds_out)
    "curate": {"precision": 0.9908, "recall": 0.9840, "f1": 0.9874, "with": 0.9625, "without": 0.9983},
}
#: The line classifier's figures on pages neither it nor its threshold saw (two halves, each scored by the
#: model trained on the other), as classifiers/boilerplate/train.py prints them. 'with' (0.912) is below the
#: issue's goal of 0.93: the floor is what is measured, not the goal (README, "Extraction engines").
HELD_OUT = {"precision": 0.9500, "recall": 0.9768, "f1": 0.9632, "with": 0.9116, "without": 0.9039}
TRAIN = Path(__file__).resolve().parents[2] / "classifiers" / "boilerplate" / "train.py"
SHIPPED_MODEL = Path(__file__).resolve().parents[2] / "src" / "curate" / "io" / "data" / "boilerplate.json"

_TOKEN = re.compile(r"\w+")
_CACHE: dict[tuple[str, str], dict[str, str]] = {}


# ---- data ------------------------------------------------------------------------------------------

def _read_pages(folder: Path) -> dict[str, bytes]:
    return {p.name: gzip.decompress(p.read_bytes()) for p in sorted(folder.glob("*.html.gz"))}


@pytest.fixture(scope="session")
def aeb(shared_data) -> dict:
    root = shared_data / "html" / "scrapinghub-aeb"
    gold = json.loads((root / "ground-truth.json").read_text(encoding="utf-8"))
    pages = _read_pages(root / "html")
    assert len(pages) == len(gold) == 119
    return {"name": "aeb", "pages": pages, "gold": {f"{k}.html.gz": v["articleBody"] for k, v in gold.items()}}


@pytest.fixture(scope="session")
def traf(shared_data) -> dict:
    root = shared_data / "html" / "trafilatura"
    evaldata = json.loads((root / "evaldata.json").read_text(encoding="utf-8"))
    stats = [json.loads(line) for line in (root / "page_stats.jsonl").read_text(encoding="utf-8").splitlines()]
    pages = _read_pages(root / "html")
    assert len(pages) == 399
    return {"name": "traf", "pages": pages, "eval": {f"{v['file']}.gz": v for v in evaldata.values()},
            "lang": {s["file"]: s["lang"] for s in stats}}


@pytest.fixture(scope="session")
def rebuilt_boilerplate(shared_data, tmp_path_factory) -> tuple[Path, str]:
    """The line classifier rebuilt by its command (deterministic: byte-identical to the shipped file), and
    what the command printed."""
    out = tmp_path_factory.mktemp("boilerplate") / "boilerplate.json"
    done = subprocess.run([sys.executable, str(TRAIN), "--data", str(shared_data), "--out", str(out)],
                          capture_output=True, text=True, timeout=1200, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert out.read_bytes() == SHIPPED_MODEL.read_bytes(), "the rebuilt model differs from the shipped one"
    return out, done.stdout


def texts(dataset: dict, engine: str, model: Path | None = None) -> dict[str, str]:
    """Extracted text per page with the stage's default parameters for ``engine`` (cached per session)."""
    key = (dataset["name"], engine)
    if key not in _CACHE:
        params = ExtractParams(engine=engine, model=str(model) if model else None)
        _CACHE[key] = {name: extract_text(page, None, params)[0] for name, page in dataset["pages"].items()}
    return _CACHE[key]


def engine_texts(request: pytest.FixtureRequest, dataset: dict, engine: str) -> dict[str, str]:
    model = request.getfixturevalue("rebuilt_boilerplate")[0] if engine == "curate" else None
    return texts(dataset, engine, model)


# ---- quality ---------------------------------------------------------------------------------------

def overlap(gold: str, pred: str, n: int = 1) -> tuple[int, int, int]:
    """(tp, fp, fn) of the bags of ``\\w+`` n-grams of the gold and the predicted text."""
    def bag(text: str) -> Counter:
        tokens = _TOKEN.findall(text)
        return Counter(tuple(tokens[i:i + n]) for i in range(max(1, len(tokens) - n + 1)) if tokens[i:i + n])

    g, p = bag(gold), bag(pred)
    tp = sum((g & p).values())
    return tp, sum(p.values()) - tp, sum(g.values()) - tp


def scores(pairs: list[tuple[str, str]], n: int = 1) -> dict[str, float]:
    counts = [overlap(gold, pred, n) for gold, pred in pairs]
    precision = statistics.mean(tp / (tp + fp) for tp, fp, fn in counts if tp + fp)
    recall = statistics.mean(tp / (tp + fn) for tp, fp, fn in counts if tp + fn)
    return {"precision": precision, "recall": recall, "f1": 2 * precision * recall / (precision + recall)}


@pytest.mark.parametrize("engine", ENGINES)
def test_article_body_token_f1(aeb, engine, request):
    extracted = engine_texts(request, aeb, engine)
    pairs = [(aeb["gold"][name], extracted[name]) for name in aeb["pages"]]
    s, shingles = scores(pairs), scores(pairs, n=4)
    per_page = []
    for name, (gold, pred) in zip(aeb["pages"], pairs):
        tp, fp, fn = overlap(gold, pred)
        per_page.append((2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0, name))
    per_page.sort()
    print(f"\n[aeb {engine}] {len(pairs)} pages: token P {s['precision']:.4f} R {s['recall']:.4f} F1 {s['f1']:.4f}"
          f" | 4-gram shingle P {shingles['precision']:.4f} R {shingles['recall']:.4f} F1 {shingles['f1']:.4f}"
          f" | lowest page F1: " + ", ".join(f"{name[:10]} {f1:.2f}" for f1, name in per_page[:3]))
    floor = MEASURED[engine]
    assert s["f1"] >= floor["f1"] - MARGIN, s
    assert s["recall"] >= floor["recall"] - MARGIN, s
    assert s["precision"] >= floor["precision"] - MARGIN, s
    assert sum(1 for _, p in pairs if not p.strip()) <= 1  # an empty extraction of an article is a failure


def _squash(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("engine", ENGINES)
def test_trafilatura_eval_snippets(traf, engine, request):
    extracted = engine_texts(request, traf, engine)
    found = wanted = absent = unwanted = 0
    worst = []
    for name, gold in traf["eval"].items():
        text = _squash(extracted[name])
        with_ = [_squash(s) in text for s in gold.get("with", [])]
        without = [_squash(s) not in text for s in gold.get("without", [])]
        found, wanted = found + sum(with_), wanted + len(with_)
        absent, unwanted = absent + sum(without), unwanted + len(without)
        if with_ and not any(with_):
            worst.append(name)
    with_share, without_share = found / wanted, absent / unwanted
    print(f"\n[trafilatura evaldata {engine}] {len(traf['eval'])} pages: 'with' found {found}/{wanted} = "
          f"{with_share:.4f}, 'without' absent {absent}/{unwanted} = {without_share:.4f}; "
          f"{len(worst)} pages with no 'with' snippet found, e.g. {worst[:3]}")
    assert len(traf["eval"]) == 383
    assert with_share >= MEASURED[engine]["with"] - MARGIN
    assert without_share >= MEASURED[engine]["without"] - MARGIN


_REPORT = re.compile(r"^(?P<label>held-out half \d|held-out, both halves)\S*.*? aeb +(?P<pages>\d+) pages "
                     r"P (?P<precision>[\d.]+) R (?P<recall>[\d.]+) F1 (?P<f1>[\d.]+) \| traf with "
                     r"(?P<with>[\d.]+) without-absent (?P<without>[\d.]+)", re.MULTILINE)


def test_boilerplate_model_rebuilds_and_holds_out(rebuilt_boilerplate) -> None:
    """The command that builds the shipped model rebuilds it byte for byte (the fixture asserts it), and on
    the pages neither the model nor its threshold saw (each half by the model of the other) it holds."""
    _, printed = rebuilt_boilerplate
    rows = {m["label"]: m for m in _REPORT.finditer(printed)}
    assert set(rows) == {"held-out half 0", "held-out half 1", "held-out, both halves"}, printed
    print("\n" + "\n".join(line for line in printed.splitlines() if line.startswith(("held-out", "shipped"))))
    assert int(rows["held-out half 0"]["pages"]) + int(rows["held-out half 1"]["pages"]) == 119
    both = rows["held-out, both halves"]
    for name, measured in HELD_OUT.items():
        assert float(both[name]) >= measured - 0.01, (name, both[name])
    for half in ("held-out half 0", "held-out half 1"):  # each half alone, not only their union
        assert float(rows[half]["f1"]) >= 0.955 and float(rows[half]["recall"]) >= 0.965, rows[half].groupdict()


def test_curate_engine_records_what_it_cut(aeb, rebuilt_boilerplate) -> None:
    """Through the stage (and its time-limited child): the cut lines and their share are columns."""
    model = str(rebuilt_boilerplate[0])
    names = sorted(aeb["pages"])[:6]
    batch = pa.Table.from_pylist([{**{f.name: None for f in DOCUMENT_SCHEMA}, "id": n, "html": aeb["pages"][n]}
                                  for n in names], schema=DOCUMENT_SCHEMA)
    stage = Extract(ExtractParams(engine="curate", model=model))
    try:
        out = stage(batch)
    finally:
        stage.close()
    shares = out["extract_boilerplate_share"].to_pylist()
    cut = out["extract_boilerplate"].to_pylist()
    assert all(0 <= s < 1 for s in shares) and any(s > 0 for s in shares)
    for text, lines, share in zip(out["text"].to_pylist(), cut, shares, strict=True):
        total = len(text.replace("\n", "")) + len((lines or "").replace("\n", ""))
        assert abs(share - len((lines or "").replace("\n", "")) / total) < 0.02
    bare = Extract(ExtractParams(engine="curate", model=model, keep_boilerplate=False, timeout_s=0))(batch)
    assert "extract_boilerplate" not in bare.column_names and bare["text"].to_pylist() == out["text"].to_pylist()


def test_curate_engine_scores_a_batch_as_it_scores_each_page(aeb, traf, rebuilt_boilerplate, monkeypatch) -> None:
    """The stage classifies a batch's lines together; each page's features, bit for bit, and so its text,
    cut lines and share are what the page gets alone, however the batch is chunked (empty pages too)."""
    from curate.io import boilerplate

    model = boilerplate.load_model(rebuilt_boilerplate[0])
    htmls = [aeb["pages"][n] for n in sorted(aeb["pages"])[:40]] + [traf["pages"][n] for n in sorted(traf["pages"])[:40]]
    pages = [boilerplate.page_lines(decode_html(h, None)[0]) for h in htmls]
    pages.insert(7, ([], [], False))
    alone = [boilerplate.classify_pages([page], model)[0] for page in pages]
    lined = [page for page in pages if page[1]]
    features = boilerplate.pages_features(lined)
    assert np.array_equal(features, np.vstack([boilerplate.line_features(*page) for page in lined]))
    assert len(features) > boilerplate.CHUNK_LINES  # more than one chunk at the default size
    for chunk_lines in (boilerplate.CHUNK_LINES, 1, 97):
        monkeypatch.setattr(boilerplate, "CHUNK_LINES", chunk_lines)
        assert boilerplate.classify_pages(pages, model) == alone
    assert alone[7] == ("", "", 0.0) and sum(bool(cut) for _, cut, _ in alone) > 40


def test_curate_engine_keeps_an_escaped_newline_inside_its_line() -> None:
    """Lines cross the child's pipe newline-joined: a ``&#10;`` in a line's text must not split it."""
    from curate.io import boilerplate

    html = ("<html><body><p>" + "Ein langer Absatz &#10; mit Zeilenumbruch über das Wetter. " * 8 + "</p>"
            "<p>" + "Noch ein langer Absatz über die Berge und die Täler im Herbst. " * 6 + "</p></body></html>")
    raws, lines, _ = boilerplate.page_lines(html)
    assert len(raws) == len(lines) == 2 and not any("\n" in line for line in lines)
    sandboxed = Extract(ExtractParams(engine="curate", timeout_s=30))
    try:
        out = sandboxed(_batch([html.encode()]))
    finally:
        sandboxed.teardown()
    assert out["text"].to_pylist() == Extract(ExtractParams(engine="curate", timeout_s=0))(_batch([html.encode()]))[
        "text"].to_pylist()
    assert "Zeilenumbruch" in out["text"][0].as_py()


def test_a_page_the_classifier_fails_on_is_an_error_the_others_finish(monkeypatch) -> None:
    """The batch's classification failing falls back to page by page: only the page at fault goes to
    errors/ with the message."""
    import curate.stages.extract as extract_module

    real = extract_module.finish_pages

    def fragile(prepared, options):
        if any("Sprengsatz" in getattr(p, "texts", "") for p in prepared):
            raise ValueError("cannot score Sprengsatz")
        return real(prepared, options)

    monkeypatch.setattr(extract_module, "finish_pages", fragile)
    body = "<p>" + "Ein ganz gewöhnlicher Absatz über das Wetter in den Bergen und Tälern. " * 5 + "</p>"
    htmls = [f"<html><body>{body}{extra}</body></html>".encode() for extra in ("", "<p>Sprengsatz</p>", "")]
    out = Extract(ExtractParams(engine="curate", timeout_s=0))(_batch(htmls))
    assert out["error"].to_pylist() == [None, "ValueError: cannot score Sprengsatz", None]
    assert out["text"][0].as_py() and out["text"][2].as_py() and out["reason"][1].as_py() == "error"


# ---- encoding --------------------------------------------------------------------------------------

def _page(text: str, meta: str = "") -> str:
    body = "".join(f"<p>{html_lib.escape(line)}</p>\n" for line in text.splitlines() if line.strip())
    return f"<!DOCTYPE html>\n<html><head>{meta}<title>Test</title></head><body>{body}</body></html>"


def _encodable(text: str, encoding: str) -> str:
    return text.encode(encoding, "ignore").decode(encoding)


@pytest.fixture(scope="session")
def german(traf) -> str:
    """Real German text with umlauts, ß, „quotes“, bullets and € (adac.de)."""
    text = texts(traf, "resiliparse")["adac.de.kindersitze.html.gz"]
    assert {"ü", "ß", "„", "€"} <= set(text)
    return text


@pytest.fixture(scope="session")
def polish(traf) -> str:
    """Real Polish text (publica.pl): ą ę ł ś ż ..., which differ between windows-1250 and ISO-8859-2."""
    text = texts(traf, "resiliparse")["Finowie odkrywają wino _ Res Publica Nowa.html.gz"]
    assert {"ą", "ł", "ś", "ż"} <= set(text)
    return text


def test_cp1252_page_declared_utf8(german):
    page = _page(_encodable(german, "cp1252"))
    raw = page.encode("cp1252")
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    decoded, encoding = decode_html(raw, "utf-8")
    assert decoded == page
    assert encoding in ("cp1252", "windows-1252")
    text, _ = extract_text(raw, "utf-8", ExtractParams())
    assert text == extract_text(page.encode("utf-8"), "utf-8", ExtractParams())[0]
    assert "\ufffd" not in text and "ü" in text and "€" in text


def test_utf8_page_declared_latin1(german):
    page = _page(german)
    decoded, encoding = decode_html(page.encode("utf-8"), "iso-8859-1")
    assert (decoded, encoding) == (page, "utf-8")  # not 'geprÃ¼ft'


@pytest.mark.parametrize("meta", ['<meta charset="iso-8859-15">',
                                  '<meta http-equiv="Content-Type" content="text/html; charset=ISO-8859-15">'])
def test_meta_charset_only(german, meta):
    # ISO-8859-15 puts € at 0xA4, where byte-level detection (which guesses windows-1252 here) reads '¤':
    # only the <meta> gets it right.
    page = _page(_encodable(german, "iso-8859-15"), meta)
    assert "€" in page
    decoded, encoding = decode_html(page.encode("iso-8859-15"), None)
    assert decoded == page
    assert encoding.replace("-", "").replace("_", "").lower() == "iso885915"


@pytest.mark.parametrize("language,encoding", [("german", "cp1252"), ("polish", "cp1250"), ("polish", "iso-8859-2")])
def test_no_declaration_detected(request, language, encoding):
    page = _page(_encodable(request.getfixturevalue(language), encoding))
    decoded, used = decode_html(page.encode(encoding), None)
    assert decoded == page, used


# ---- time limit ------------------------------------------------------------------------------------

def _batch(htmls: list[bytes]) -> pa.Table:
    return pa.Table.from_pylist([{"id": f"doc{i}", "html": h} for i, h in enumerate(htmls)], schema=DOCUMENT_SCHEMA)


def _deeply_nested(depth: int = 30_000) -> bytes:
    """330 kB of nested <div>s: resiliparse's main-content pass is quadratic in depth (~24 s on one
    core of the dev machine at 30k, 2 s at 10k), while plain text extraction takes milliseconds."""
    return ("<html><body>" + "<div>" * depth + "<p>Tief verschachtelter Absatz.</p>" + "</div>" * depth
            + "</body></html>").encode()


def test_nested_page_is_valid_html():
    text, _ = extract_text(_deeply_nested(), None, ExtractParams(main_content=False))
    assert text == "Tief verschachtelter Absatz."


def test_page_requests_cross_a_pipe_whole_in_any_size() -> None:
    """The sandbox's raw request frames: a page larger than any pipe buffer (partial writes), an empty one,
    no declared charset and a label that is not ASCII all arrive as sent."""
    sent = [(bytes(range(256)) * 20_000, "windows-1252"), (b"", None), (b"<p>x</p>", ""), (b"<p>y</p>", "utf-\udcff8")]
    read, write = os.pipe()
    received = []
    reader = threading.Thread(target=lambda: received.extend(read_page(read) for _ in sent))
    reader.start()
    try:
        for html, declared in sent:
            write_page(write, html, declared)
        reader.join(timeout=30)
    finally:
        os.close(write)
        os.close(read)
    assert received == sent


def test_timeout_removes_slow_page_and_goes_on(traf):
    normal = [traf["pages"][name] for name in sorted(traf["pages"])[:3]]
    stage = Extract(ExtractParams(timeout_s=2.0))
    started = time.perf_counter()
    try:
        out = stage(_batch([normal[0], _deeply_nested(), normal[1], normal[2]]))
    finally:
        stage.teardown()
    elapsed = time.perf_counter() - started
    print(f"\n[timeout] {elapsed:.1f} s, reasons {out['reason'].to_pylist()}")
    assert out["reason"].to_pylist() == [None, "extraction_timeout", None, None]
    assert out["removed_by"].to_pylist() == [None, "extract", None, None]
    assert out["text"][1].as_py() is None and all(out["extract_chars"][i].as_py() > 100 for i in (0, 2, 3))
    assert elapsed >= 2.0  # the limit was waited for, not skipped


def test_pipelined_pages_bigger_than_the_pipes_give_what_in_process_extraction_gives() -> None:
    """Pages and answers over the pipes' 1 MB, mixed with small ones: the sandbox sends the next page while
    the child works only when both fit, so neither side ever blocks on a full pipe (a deadlock would hang
    here), and every page's text is what the engine gives in this process."""
    paragraph = "<p>" + "Ein langer Absatz über das Wetter in den Bergen, der sich wiederholt. " * 40 + "</p>"
    big = ("<html><body>" + paragraph * 600 + "</body></html>").encode()  # ~1.7 MB, ~1.7 MB of text
    small = b"<html><body><p>Ein kurzer Absatz.</p></body></html>"
    pages = [big, big, small, small, big, small]
    assert len(big) > 1 << 20
    sandboxed = Extract(ExtractParams(timeout_s=30))
    result: list[pa.Table] = []
    worker = threading.Thread(target=lambda: result.append(sandboxed(_batch(pages))), daemon=True)
    worker.start()
    worker.join(timeout=120)
    deadlocked = worker.is_alive()
    sandboxed.teardown()  # kills the child, which also frees a deadlocked thread
    assert not deadlocked, "the sandbox and its child both blocked on full pipes"
    out = result[0]
    reference = Extract(ExtractParams(timeout_s=0))(_batch(pages))
    assert out["reason"].to_pylist() == [None] * len(pages)
    assert out["text"].to_pylist() == reference["text"].to_pylist()
    assert out["extract_chars"][0].as_py() > 1 << 20


def test_short_timeout_does_not_charge_startup_to_the_next_page(traf):
    # A new child (the first, and the one replacing a killed child) takes ~0.5-2 s to start on a loaded
    # machine; the page's clock must start only once it is ready, or the page after a slow one times out.
    normal = [traf["pages"][name] for name in sorted(traf["pages"])[:2]]
    stage = Extract(ExtractParams(timeout_s=0.5))
    try:
        out = stage(_batch([normal[0], _deeply_nested(), normal[1]]))
    finally:
        stage.teardown()
    assert out["reason"].to_pylist() == [None, "extraction_timeout", None]


# ---- language --------------------------------------------------------------------------------------

def _languages(extracted: dict[str, str]) -> tuple[list[str], list[str | None], list[float | None]]:
    stage = Language(LanguageParams(keep=[]))  # annotate only
    names = list(extracted)
    out = stage(pa.Table.from_pylist([{"id": n, "text": extracted[n]} for n in names], schema=DOCUMENT_SCHEMA))
    assert out["removed_by"].null_count == len(names)
    return names, out["language"].to_pylist(), out["language_score"].to_pylist()


def test_language_aeb_mostly_english(aeb):
    extracted = texts(aeb, "resiliparse")
    names, languages, score = _languages(extracted)
    rows = [(n, lang, s) for n, lang, s in zip(names, languages, score) if len(extracted[n]) >= 200]
    english = sum(lang == "en" for _, lang, _ in rows) / len(rows)
    exceptions = [f"{n[:12]} {lang} {s:.2f} {extracted[n][:50]!r}" for n, lang, s in rows if lang != "en"]
    print(f"\n[language aeb] {len(rows)} pages with >= 200 chars: en {english:.3f}; "
          f"{Counter(lang for _, lang, _ in rows).most_common()}; not en:\n  " + "\n  ".join(exceptions))
    assert english >= 0.90


def test_language_trafilatura_pages_agree_with_reference(traf):
    from resiliparse.parse.lang import detect_fast  # reference detector (langid is not installed)

    extracted = texts(traf, "resiliparse")
    names, languages, _ = _languages(extracted)
    rows = [(n, lang) for n, lang in zip(names, languages) if len(extracted[n]) >= 200]
    reference = {n: detect_fast(extracted[n])[0] for n, _ in rows}
    agree_ref = sum(lang == reference[n] for n, lang in rows) / len(rows)
    agree_stats = sum(lang == traf["lang"][n] for n, lang in rows) / len(rows)
    counts = Counter(lang for _, lang in rows)
    disagreements = [f"{n[:40]} ours {lang} detect_fast {reference[n]} page_stats {traf['lang'][n]}"
                     for n, lang in rows if lang != reference[n] or lang != traf["lang"][n]]
    print(f"\n[language trafilatura] {len(rows)} pages with >= 200 chars: {counts.most_common(8)}; agreement with "
          f"detect_fast {agree_ref:.3f}, with page_stats {agree_stats:.3f}; disagreements:\n  "
          + "\n  ".join(disagreements))
    assert counts.most_common(1)[0][0] == "de" and counts["de"] / len(rows) >= 0.6
    assert agree_ref >= 0.90
    assert agree_stats >= 0.90


def test_audit_why_shows_what_the_curate_engine_cut(shared_data: Path, rebuilt_boilerplate, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from curate.cli import main

    pipeline = tmp_path / "p.yaml"
    model = rebuilt_boilerplate[0]
    pipeline.write_text(f"stages:\n  - warc_read: {{}}\n  - extract: {{engine: curate, model: '{model}'}}\n")
    out = tmp_path / "out"
    warc = shared_data / "warc" / "dolma-wget-sample-0000.warc.gz"
    assert main(["run", str(pipeline), "-i", str(warc), "-o", str(out), "--no-progress", "--workers", "1"]) == 0
    kept = pq.read_table(out / "kept", columns=["id", "extract_boilerplate", "extract_boilerplate_share"])
    row = next(r for r in kept.to_pylist() if r["extract_boilerplate"])
    capsys.readouterr()
    assert main(["audit", "why", str(out), row["id"]]) == 0
    shown = capsys.readouterr().out
    assert "cut as boilerplate by extract" in shown and row["extract_boilerplate"].split("\n")[0][:40] in shown
