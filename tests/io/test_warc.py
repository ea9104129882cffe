"""WARC reader: record counts against an independent warcio count, bad input, header quirks."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import pytest

from conftest import SHARED_DATA
from helpers import warcio_counts
from curate.io.warc import ReadCounts, WarcReader, WarcReadParams, _decode_body, _dechunk, _http_head, _normalise_uri

WARCS = sorted((SHARED_DATA / "warc").glob("*.warc*"))


def read_all(path_or_bytes, engine: str = "fastwarc", batch_size: int = 7):
    reader = WarcReader(WarcReadParams(engine=engine))
    counts, errors, tables = ReadCounts(), [], []
    stream = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else open(path_or_bytes, "rb")
    with stream:
        for table in reader.read(stream, "test.warc", batch_size, lambda *e: errors.append(e), counts):
            tables.append(table)
    rows = [r for t in tables for r in t.to_pylist()]
    return counts, errors, rows


@pytest.mark.parametrize("path", WARCS, ids=[p.name[:40] for p in WARCS])
@pytest.mark.parametrize("engine", ["fastwarc", "warcio"])
def test_counts_match_independent_warcio_count(path: Path, engine: str) -> None:
    counts, errors, rows = read_all(path, engine)
    by_type, documents = warcio_counts(path)
    assert dict(counts.records) == dict(by_type)
    assert errors == []
    assert counts.documents == len(rows) == documents
    responses = by_type["response"] + by_type["conversion"]
    assert counts.documents + sum(counts.skipped.values()) == responses  # every response accounted for
    assert len({r["id"] for r in rows}) == len(rows)


def test_engines_agree_on_documents(shared_data: Path) -> None:
    path = shared_data / "warc" / "IAH-20080430204825-00000-blackbook.part-A.warc.gz"  # WARC/0.17
    _, _, fast = read_all(path, "fastwarc")
    _, _, slow = read_all(path, "warcio")
    assert [(r["id"], r["url"], r["html"]) for r in fast] == [(r["id"], r["url"], r["html"]) for r in slow]
    assert all(not r["id"].startswith("<") and r["url"].startswith("http") for r in fast)
    assert fast[0]["host"] == "www.archive.org"


def test_wet_conversion_records_become_text_documents(shared_data: Path) -> None:
    path = shared_data / "warc" / "CC-MAIN-20240517233122-20240518023122-00000.whirlwind.warc.wet.gz"
    counts, _, rows = read_all(path)
    assert counts.documents == 1 and rows[0]["html"] is None
    assert "Escopete" in rows[0]["text"] and rows[0]["url"] == "https://an.wikipedia.org/wiki/Escopete"


def test_truncated_gzip_keeps_the_cut_record_as_a_removed_document(shared_data: Path) -> None:
    """warcio reads the record that the end of the file cuts off as a document, so the reader counts it
    too, removed as ``truncated`` (it was an error row, and the document count fell below warcio's)."""
    data = (shared_data / "warc" / "dolma-wget-sample-0000.warc.gz").read_bytes()
    counts, errors, rows = read_all(data[: len(data) // 2])
    _, _, full = read_all(data)
    assert 0 < len(rows) < len(full)
    assert errors == [] and counts.errors == 0 and counts.truncated == 1
    assert [r["reason"] for r in rows].count("truncated") == 1 and rows[-1]["reason"] == "truncated"


def test_corrupt_member_mid_file_is_reported_with_offset(shared_data: Path) -> None:
    data = (shared_data / "warc" / "dolma-wget-sample-0000.warc.gz").read_bytes()
    counts, errors, rows = read_all(data[:50_000] + b"garbage" * 100 + data[50_000:])
    assert counts.errors == 1 and "corrupt WARC stream" in errors[0][2]
    assert errors[0][0] is not None and errors[0][0] < 50_000


@pytest.mark.parametrize("payload, why", [
    (b"", "empty"),
    (b"this is just a text file\n" * 50, "not a WARC"),
    (gzip.compress(b"hello world"), "not a WARC"),
])
def test_not_a_warc(payload: bytes, why: str) -> None:
    counts, errors, rows = read_all(payload)
    assert rows == [] and counts.errors == 1
    assert why in errors[0][2] or "no WARC records" in errors[0][2]


def test_http_parsing_quirks() -> None:
    assert _normalise_uri("<http://example.com/a>") == "http://example.com/a"
    chunked = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    assert _dechunk(chunked) == b"hello world"
    assert _dechunk(b"<!doctype html>\n<p>already de-chunked</p>") == b"<!doctype html>\n<p>already de-chunked</p>"
    block = (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n")
    body = gzip.compress(b"<html><p>zipped</p></html>")
    response = block + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"
    status, headers, start = _http_head(response)
    assert status == 200 and _decode_body(response[start:], headers) == b"<html><p>zipped</p></html>"


def test_missing_content_type_is_sniffed() -> None:
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    buf = io.BytesIO()
    writer = WARCWriter(buf, gzip=True)
    for uri, body in [("http://a.example/", b"<!DOCTYPE html><html><p>page</p></html>"),
                      ("http://b.example/x.bin", b"\x00\x01binary")]:
        http = StatusAndHeaders("200 OK", [], protocol="HTTP/1.0")
        writer.write_record(writer.create_warc_record(uri, "response", payload=io.BytesIO(body), http_headers=http))
    counts, errors, rows = read_all(buf.getvalue())
    assert [r["url"] for r in rows] == ["http://a.example/"]
    assert counts.skipped == {"non_html": 1}


@pytest.mark.parametrize("head, is_html", [
    (b"\xef\xbb\xbf<!DOCTYPE html><html>", True),                    # UTF-8 BOM
    (b'<?xml version="1.0"?>\n<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML', True),
    (b"<script>var x = 1;</script><html>", True),
    (b"  <!-- generated -->\n<html><body>", True),
    (b'<?xml version="1.0"?><rss version="2.0">', False),
    (b'{"json": true}', False),
    (b"\x89PNG\r\n\x1a\n", False),
])
def test_sniffing_without_content_type(head: bytes, is_html: bool) -> None:
    from curate.io.warc import _is_html

    assert _is_html("", head) is is_html


def test_oversized_page_is_a_removed_document_not_a_skip(shared_data: Path) -> None:
    reader = WarcReader(WarcReadParams(max_record_bytes=20_000))
    counts, errors = ReadCounts(), []
    with open(shared_data / "warc" / "dolma-wget-sample-0000.warc.gz", "rb") as f:
        rows = [r for t in reader.read(f, "x", 100, lambda *e: errors.append(e), counts) for r in t.to_pylist()]
    big = [r for r in rows if r["removed_by"] == "warc_read"]
    assert big and counts.documents == len(rows) == 22 and "too_large" not in counts.skipped
    assert all(r["reason"] == "too_large" and r["score"] > 20_000 and r["html"] is None for r in big)
    assert all(r["removed_by"] is None and r["html"] for r in rows if r not in big)
