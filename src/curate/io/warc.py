"""WARC reader: HTTP 200 HTML ``response`` records (and WET ``conversion`` records) become documents.

FastWARC is the default engine (4-20x faster than warcio on real files); warcio is the fallback for
archives FastWARC rejects. Both read a streamed file object, so an ``https://`` or ``s3://`` WARC is never
downloaded whole first. Every record is counted by type; records that are not documents are counted by
why (``non_html``, ``http_status_404`` ...), and a truncated or corrupt record is reported as an error
with its offset instead of being dropped.
"""

from __future__ import annotations

import gzip
import re
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Literal

import pyarrow as pa
from pydantic import Field

from curate.registry import register
from curate.schema import DOCUMENT_SCHEMA
from curate.sources import SourceRules, source_keys
from curate.stage import Reader, StageParams

ErrorSink = Callable[[int | None, str | None, str], None]

_HTML_TYPES = ("text/html", "application/xhtml+xml")
#: Leading bytes of an HTML page (after an optional BOM and whitespace), as a browser would sniff them
#: when the server sends no Content-Type; an XML prolog counts only if XHTML follows.
_SNIFF = re.compile(
    rb"^(?:\xef\xbb\xbf)?\s*(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*)*"
    rb"(?:<!doctype\s+html|<html|<head|<body|<meta|<title|<script|<link|<style|<div|<p[\s>]|<h1|<table|<a\s)",
    re.IGNORECASE | re.DOTALL,
)
_CHARSET = re.compile(r"charset\s*=\s*[\"']?([\w.:-]+)", re.IGNORECASE)


class WarcReadParams(StageParams):
    engine: Literal["fastwarc", "warcio"] = Field("fastwarc", description="fastwarc is 4-20x faster")
    max_record_bytes: int = Field(
        10_000_000, ge=1, description="larger HTML pages are removed by this stage as 'too_large' (unparsed)"
    )
    wet: bool = Field(True, description="also read WET 'conversion' records (already plain text)")
    sources: SourceRules = Field(default_factory=SourceRules, description="url -> source key rules")


@dataclass
class ReadCounts:
    """What the reader saw in one file: every record lands in exactly one bucket of ``skipped`` or is a
    document or an error."""

    records: Counter = field(default_factory=Counter)  # by WARC-Type
    skipped: Counter = field(default_factory=Counter)  # response records that are not documents, by why
    documents: int = 0
    errors: int = 0
    bytes: int = 0


def _normalise_uri(uri: str | None) -> str | None:
    """WARC/0.17-1.0 writers wrap URIs in angle brackets (``<http://...>``); strip them."""
    if uri is None:
        return None
    uri = uri.strip()
    if uri.startswith("<") and uri.endswith(">"):
        uri = uri[1:-1].strip()
    return uri


def _parse_http(block: bytes) -> tuple[int | None, dict[str, str], bytes]:
    """Split an HTTP response block into status, lower-cased headers and the (decoded) body."""
    head, sep, body = block.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = block.partition(b"\n\n")
    if not sep:
        return None, {}, b""
    lines = head.decode("iso-8859-1").splitlines()
    status = None
    if lines and lines[0].upper().startswith("HTTP/"):
        parts = lines[0].split(None, 2)
        if len(parts) >= 2 and parts[1].isdigit():
            status = int(parts[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = _dechunk(body)
    encoding = headers.get("content-encoding", "").lower().strip()
    if encoding in ("gzip", "x-gzip", "deflate"):
        try:
            body = gzip.decompress(body) if "gzip" in encoding else zlib.decompress(body, -zlib.MAX_WBITS)
        except (OSError, zlib.error, EOFError):
            pass  # many crawlers store the decoded body but keep the header: use the bytes as they are
    return status, headers, body


def _dechunk(body: bytes) -> bytes:
    """Undo HTTP chunking; bodies that crawlers already de-chunked (most do) come back unchanged."""
    out, pos = [], 0
    while pos < len(body):
        eol = body.find(b"\r\n", pos)
        size_text = body[pos:eol].split(b";")[0].strip() if eol >= 0 else b""
        if not size_text or len(size_text) > 16 or any(c not in b"0123456789abcdefABCDEF" for c in size_text):
            return body
        size = int(size_text, 16)
        if size == 0:
            return b"".join(out)
        out.append(body[eol + 2 : eol + 2 + size])
        pos = eol + 2 + size + 2
    return b"".join(out)  # a truncated final chunk: keep what arrived


def _is_html(content_type: str, body: bytes) -> bool:
    if content_type:
        return content_type.split(";")[0].strip().lower() in _HTML_TYPES
    return bool(_SNIFF.match(body[:1024]))  # no Content-Type: sniff like a browser would


@dataclass
class _Record:
    """Engine-neutral view of one WARC record."""

    type: str
    offset: int | None
    record_id: str | None
    uri: str | None
    date: str | None
    content_length: int
    block: bytes
    identified_type: str | None


def _iter_fastwarc(stream: IO[bytes]) -> Iterator[_Record]:
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    for rec in ArchiveIterator(stream, record_types=WarcRecordType.any_type, parse_http=False):
        h = rec.headers
        yield _Record(
            type=(h.get("WARC-Type") or "unknown").lower(),
            offset=rec.stream_pos,
            record_id=h.get("WARC-Record-ID"),
            uri=h.get("WARC-Target-URI"),
            date=h.get("WARC-Date"),
            content_length=rec.content_length,
            block=rec.reader.read(),
            identified_type=h.get("WARC-Identified-Payload-Type"),
        )


def _iter_warcio(stream: IO[bytes]) -> Iterator[_Record]:
    from warcio.archiveiterator import ArchiveIterator

    it = ArchiveIterator(stream, no_record_parse=True)
    for rec in it:
        h = rec.rec_headers
        block = rec.raw_stream.read()
        yield _Record(
            type=(h.get_header("WARC-Type") or "unknown").lower(),
            offset=it.get_record_offset(),
            record_id=h.get_header("WARC-Record-ID"),
            uri=h.get_header("WARC-Target-URI"),
            date=h.get_header("WARC-Date"),
            content_length=int(h.get_header("Content-Length") or len(block)),
            block=block,
            identified_type=h.get_header("WARC-Identified-Payload-Type"),
        )


@register
class WarcReader(Reader):
    """Reads WARC 0.17-1.1, gzip (per record or whole file) or plain, from any fsspec file object."""

    name = "warc_read"
    Params = WarcReadParams

    def read(self, stream: IO[bytes], path: str, batch_size: int, on_error: ErrorSink, counts: ReadCounts
             ) -> Iterator[pa.Table]:
        """Yield document batches; report unreadable records through ``on_error(offset, record_id, why)``."""
        params: WarcReadParams = self.params  # type: ignore[assignment]
        engine = _iter_fastwarc if params.engine == "fastwarc" else _iter_warcio
        rows: list[dict] = []
        last_offset: int | None = 0
        try:
            for rec in engine(stream):
                counts.records[rec.type] += 1
                last_offset = rec.offset
                counts.bytes += len(rec.block)
                row = self._document(rec, path, counts, on_error)
                if row is not None:
                    rows.append(row)
                    if len(rows) >= batch_size:
                        yield self._table(rows)
                        rows = []
        except (OSError, EOFError, ValueError, zlib.error) as exc:
            # The stream cannot be resynchronised past a corrupt gzip member or header: report where it
            # broke; every record before it has been delivered.
            counts.errors += 1
            if counts.records:
                on_error(last_offset, None, f"corrupt WARC stream after offset {last_offset}: {exc}")
            else:
                on_error(0, None, f"not a WARC file (unreadable from the first byte): {exc}")
        if rows:
            yield self._table(rows)
        if not counts.records and not counts.errors:
            counts.errors += 1
            on_error(0, None, "no WARC records found: empty file or not a WARC file")

    def _document(self, rec: _Record, path: str, counts: ReadCounts, on_error: ErrorSink) -> dict | None:
        params: WarcReadParams = self.params  # type: ignore[assignment]
        if rec.type not in ("response", "conversion"):
            return None
        if len(rec.block) < rec.content_length:
            counts.errors += 1
            on_error(rec.offset, rec.record_id,
                     f"truncated record: {len(rec.block)} of {rec.content_length} bytes")
            return None
        uri = _normalise_uri(rec.uri)
        if rec.type == "conversion":
            if not params.wet:
                counts.skipped["wet_disabled"] += 1
                return None
            counts.documents += 1
            return self._row(rec, path, uri, "text/plain", None, None,
                             rec.block.decode("utf-8", errors="replace"))
        status, headers, body = _parse_http(rec.block)
        if status is None:
            counts.skipped["not_http"] += 1  # dns:, whois: and other non-HTTP responses
            return None
        if status != 200:
            counts.skipped[f"http_status_{status}"] += 1
            return None
        content_type = headers.get("content-type", "")
        if not _is_html(content_type, body):
            counts.skipped["non_html"] += 1
            return None
        match = _CHARSET.search(content_type)
        counts.documents += 1
        row = self._row(rec, path, uri, content_type.split(";")[0].strip().lower() or "text/html",
                        match.group(1).lower() if match else None, body, None)
        if len(body) > params.max_record_bytes:  # a document all the same: removed, with its size, not skipped
            row.update(html=None, removed_by=self.name, reason="too_large", score=float(len(body)),
                       threshold=float(params.max_record_bytes))
        return row

    @staticmethod
    def _row(rec: _Record, path: str, uri: str | None, content_type: str, charset: str | None,
             html: bytes | None, text: str | None) -> dict:
        record_id = _normalise_uri(rec.record_id) or f"{uri}|{rec.date}"
        return {
            "id": record_id, "url": uri, "warc_path": path, "warc_offset": rec.offset, "fetch_time": rec.date,
            "content_type": content_type, "charset": charset, "html": html, "text": text,
        }

    def _table(self, rows: list[dict]) -> pa.Table:
        params: WarcReadParams = self.params  # type: ignore[assignment]
        table = pa.Table.from_pylist(rows, schema=DOCUMENT_SCHEMA)
        urls = table["url"].combine_chunks()
        table = table.set_column(table.schema.get_field_index("host"), "host", _hosts(urls))
        return table.set_column(table.schema.get_field_index("source"), "source", source_keys(urls, params.sources))


def _hosts(urls: pa.Array) -> pa.Array:
    import pyarrow.compute as pc

    host = pc.extract_regex(urls, r"^[a-zA-Z][\w+.-]*://(?:[^@/?#]*@)?(?P<host>[^:/?#]*)")
    return pc.utf8_lower(pc.struct_field(host, "host"))
