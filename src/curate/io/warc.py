"""WARC reader: HTTP 200 HTML ``response`` records (and WET ``conversion`` records) become documents.

Neither FastWARC nor warcio resynchronises after a bad record: FastWARC stops at a wrong Content-Length or a
corrupt gzip member, and warcio raises ``ArchiveLoadFailed``. So records are framed by curate: the framer
walks gzip members with zlib, checks each record's Content-Length against its ``\\r\\n\\r\\n`` trailer and
where the next record begins, and after damage resumes at the next gzip member (per-record gzip, as Common
Crawl writes it) or at the next ``WARC/x.y`` version line (plain files, or inside one big gzip member).
Each skipped span becomes one error with its start and end offsets. Whatever can still be read is used:

- a record with a wrong Content-Length ends where the next record begins (``counts.misframed``);
- an unknown ``WARC/x.y`` version is read leniently (``counts.unknown_versions``);
- a record cut short by the end of the file or by a broken gzip member is still counted. If it would have
  been a document, it is one, removed with reason ``truncated`` or ``corrupt``. So a damaged file never
  yields fewer documents than warcio reads from it.

With ``engine: fastwarc`` (the default), FastWARC frames healthy per-record gzip, which is faster, and the
framer takes over at the first doubt (see :func:`_fastwarc`); ``engine: framer`` (formerly ``warcio``) uses the framer throughout.
Both read the same documents and errors from any bytes.

Memory stays bounded. The input is read forward only (an HTTP stream cannot seek), and bodies of records
that are not documents are streamed past in chunks. A response is judged on its first 64 KiB, and
decoding a page's Content-Encoding stops at ``max_record_bytes``.
"""

from __future__ import annotations

import re
import zlib
from collections import Counter, deque
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import IO, Literal, Protocol

import pyarrow as pa
from pydantic import Field, field_validator

from curate.registry import register
from curate.schema import DOCUMENT_SCHEMA
from curate.sources import SourceRules, source_keys, url_hosts
from curate.stage import Reader, StageParams


class ErrorSink(Protocol):
    """``on_error(offset, record_id, message, end_offset)``: ``end_offset`` (exclusive) is set for a skipped span."""

    def __call__(self, offset: int | None, record_id: str | None, message: str, end_offset: int | None = None, /
                 ) -> None: ...


_HTML_TYPES = ("text/html", "application/xhtml+xml")
#: Leading bytes of an HTML page (after an optional BOM and whitespace), as a browser would sniff them
#: when the server sends no Content-Type; an XML prolog counts only if XHTML follows.
_SNIFF = re.compile(
    rb"^(?:\xef\xbb\xbf)?\s*(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*)*"
    rb"(?:<!doctype\s+html|<html|<head|<body|<meta|<title|<script|<link|<style|<div|<p[\s>]|<h1|<table|<a\s)",
    re.IGNORECASE | re.DOTALL,
)
_CHARSET = re.compile(r"charset\s*=\s*[\"']?([\w.:-]+)", re.IGNORECASE)

_GZIP_MAGIC = b"\x1f\x8b\x08"
_VERSION = re.compile(rb"WARC/(\d{1,3}\.\d{1,3})\r?\n")
_VERSION_NUMBER = re.compile(rb"\d{1,3}\.\d{1,3}")
_KNOWN_VERSIONS = {b"0.17", b"0.18", b"1.0", b"1.1"}
_PEEK = {"response"}  # record types whose block head the reader judges before the block is read
_READ = 1 << 20  # raw bytes read from the stream at a time
#: Raw bytes handed to zlib per call. At each member end zlib copies the rest of its input into
#: ``unused_data``, so a small feed keeps per-record gzip (one member per record) linear in the file size.
_FEED = 1 << 14
_OUT = 1 << 20  # decoded bytes per zlib call: a member that inflates to gigabytes is streamed, not held
_HEAD_MAX = 1 << 16  # longest WARC header block, and the HTTP head a response is judged on
#: Blocks up to this size are framed in one step from memory (FastWARC's too); longer ones are streamed.
#: Common Crawl truncates payloads at 1 MiB, so nearly every record is below it.
_FAST_MAX = 1 << 22
_REPLAY_MAX = 1 << 24  # decoded bytes kept to go back to a record that a too-long Content-Length ran over
_NEWLINES_MAX = 16  # CR/LF bytes taken as a block's trailer
_RESCAN_MAX = 1 << 20  # raw bytes of a long gzip member kept to look in it for the next member if it breaks


class WarcReadParams(StageParams):
    engine: Literal["fastwarc", "framer"] = Field(
        "fastwarc", description="fastwarc: FastWARC frames healthy per-record gzip and curate's framer takes over "
                                "at the first doubt (faster); framer: curate's framer throughout. Both read the "
                                "same documents. 'warcio' (its earlier name) is accepted: warcio itself raises at "
                                "a bad record, so it is no longer used to read")

    @field_validator("engine", mode="before")
    @classmethod
    def _warcio_is_the_framer(cls, value: str) -> str:
        return "framer" if value == "warcio" else value

    max_record_bytes: int = Field(
        10_000_000, ge=1, description="larger HTML pages are removed by this stage as 'too_large' (unparsed)"
    )
    wet: bool = Field(True, description="also read WET 'conversion' records (already plain text)")
    sources: SourceRules = Field(default_factory=SourceRules, description="url -> source key rules")


@dataclass
class ReadCounts:
    """What the reader saw in one file: every response or conversion record is a document or lands in
    exactly one bucket of ``skipped``; bytes that are no record are in ``errors``, one per skipped span."""

    records: Counter = field(default_factory=Counter)  # by WARC-Type
    skipped: Counter = field(default_factory=Counter)  # response records that are not documents, by why
    documents: int = 0
    errors: int = 0
    bytes: int = 0
    unknown_versions: int = 0  # records read despite a WARC/x.y version this reader does not know
    misframed: int = 0  # records whose Content-Length disagreed with where the next record begins
    truncated: int = 0  # records cut short by the end of the file
    corrupt: int = 0  # records whose gzip member broke off or failed its checksum


# ---- framing: decoded bytes with the places a reader can resynchronise at ----------------------------


@dataclass(slots=True)
class _Gap:
    """Raw bytes that could not be decoded; decoded data resumes at ``pos``."""

    pos: int
    member_pos: int  # where the broken member's decoded bytes began (== pos if it gave none)
    raw_start: int
    why: str


class _Raw:
    """The input read forward only (an HTTP stream cannot seek back), addressed by absolute offset."""

    def __init__(self, stream: IO[bytes], start: int = 0, prefix: bytes = b"") -> None:
        self._stream = stream
        self.buf = prefix  # bytes from ``start`` already read from the stream
        self.base = start
        self.eof = False

    @property
    def end(self) -> int:
        return self.base + len(self.buf)

    def ensure(self, upto: int) -> bool:
        """Read until offset ``upto`` is buffered; False if the file ends first."""
        while self.end < upto and not self.eof:
            chunk = self._stream.read(_READ)
            if chunk:
                self.buf += chunk
            else:
                self.eof = True
        return self.end >= upto

    def take(self) -> bytes:
        """Everything buffered, which is then no longer held here."""
        out, self.buf, self.base = self.buf, b"", self.end
        return out

    def release(self, before: int) -> None:
        """Bytes before ``before`` are no longer needed (dropped in large steps, so copies stay rare)."""
        if before - self.base >= _READ:
            self.buf = self.buf[before - self.base:]
            self.base = before

    def find(self, pattern: bytes, start: int) -> int:
        """Offset of the next ``pattern`` at or after ``start``, or the end of the file; bytes before the
        scan position are released as it goes."""
        while True:
            i = self.buf.find(pattern, max(0, start - self.base))
            if i >= 0:
                return self.base + i
            start = max(start, self.end - len(pattern) + 1)
            self.release(start)
            if not self.ensure(self.end + 1):
                return self.end


def _sniff_gzip(head: bytes) -> bool:
    """Whether a file is gzip, from its first bytes. Whichever comes first decides: a gzip member that inflates
    to a WARC version line, or a plain version line; so garbage in front (``WARC/`` before the first member,
    gzip magic before a plain record) does not turn the whole file into the other kind. With neither (a
    damaged start), it is gzip if a member starts before any ``WARC/``."""
    line = _VERSION.search(head)
    i = head.find(_GZIP_MAGIC)
    while i >= 0 and (line is None or i < line.start()):
        try:
            if _VERSION.match(zlib.decompressobj(31).decompress(head[i:i + 4096], 32)):
                return True
        except zlib.error:
            pass
        i = head.find(_GZIP_MAGIC, i + 1)
    if line is not None:
        return False
    magic, warc = head.find(_GZIP_MAGIC), head.find(b"WARC/")
    return head[:2] == _GZIP_MAGIC[:2] or (magic >= 0 and (warc < 0 or magic < warc))


class _Decoded:
    """The decoded bytes of a plain or gzip WARC file, addressed by absolute decoded position, with marks
    where gzip members start (a record's offset is its member's) and where undecodable raw bytes were
    skipped (gaps)."""

    def __init__(self, stream: IO[bytes], start: int = 0, prefix: bytes = b"") -> None:
        self.raw = _Raw(stream, start, prefix)
        self.buf = bytearray()
        self.base = 0
        self.eof = False
        self.origin = start  # offset in the file of decoded position 0 in a plain file
        self.members: deque[tuple[int, int]] = deque()  # (decoded position, raw offset) of member starts
        self.gaps: deque[_Gap] = deque()
        self._z: zlib._Decompress | None = None
        self._zpos = start  # raw offset of the next byte for zlib
        self._member = (0, start)  # (decoded position, raw offset) where the current member began
        self.raw.ensure(_HEAD_MAX)
        self.gzip = _sniff_gzip(bytes(self.raw.buf[:_HEAD_MAX]))

    @property
    def end(self) -> int:
        return self.base + len(self.buf)

    def more(self) -> bool:
        """Decode the next piece of input; False at the end of the file."""
        raw = self.raw
        if not self.gzip:
            if not raw.ensure(raw.end + 1) and not raw.buf:
                self.eof = True
                return False
            self.buf += raw.take()
            return True
        zpos = self._zpos
        if raw.base + len(raw.buf) < zpos + _FEED:
            raw.ensure(zpos + _FEED)
        at = zpos - raw.base
        z = self._z
        if z is None:
            if at >= len(raw.buf):
                self.eof = True
                return False
            if raw.buf[at:at + 3] != _GZIP_MAGIC:
                nxt = raw.find(_GZIP_MAGIC, zpos + 1)
                self.gaps.append(_Gap(self.end, self.end, zpos, "bytes that are not a gzip member"))
                self._zpos = nxt
                return True
            z = self._z = zlib.decompressobj(31)
            self._member = (self.base + len(self.buf), zpos)
            self.members.append(self._member)
        piece = memoryview(raw.buf)[at:at + _FEED]
        if not piece:  # the file ends inside this member: what it gave is all there is
            self._z = None
            if self.end == self._member[0]:  # not one byte: nothing downstream would see the record
                self.gaps.append(_Gap(self.end, self.end, self._member[1],
                                      "the file ends inside a gzip member before it decodes a byte"))
            self.eof = True
            return False
        try:
            out = z.decompress(piece, _OUT)
        except zlib.error as exc:
            self.buf += self._salvage()
            nxt = raw.find(_GZIP_MAGIC, max(self._member[1] + 1, raw.base))
            self.gaps.append(_Gap(self.end, self._member[0], self._member[1], f"corrupt gzip member: {exc}"))
            self._z = None
            self._zpos = nxt
            return True
        # At a member's end the bytes after it are in unused_data, and (after a call capped by _OUT) the same
        # bytes may also still be in unconsumed_tail (CPython 3.11): count them once.
        if z.eof:
            used = len(piece) - len(z.unused_data)
            self._z = None
        else:
            used = len(piece) - len(z.unconsumed_tail)
        self._zpos = zpos + used
        self.buf += out
        if at >= _READ:
            raw.release(max(self._member[1], self._zpos - _RESCAN_MAX))
        return True

    def _salvage(self) -> bytes:
        """The rest of what a broken member decodes to before its error. zlib drops the output of the call
        that fails, so the member is decoded again from its start in small steps (if its start is still
        held), as far as the bad byte."""
        raw, (member_pos, start) = self.raw, self._member
        if start < raw.base:
            return b""
        inflate, skip, out, i = zlib.decompressobj(31), self.end - member_pos, [], start - raw.base
        try:
            while i < len(raw.buf):
                piece = inflate.decompress(memoryview(raw.buf)[i:i + 64])
                i += 64
                if skip >= len(piece):
                    skip -= len(piece)
                else:
                    out.append(piece[skip:])
                    skip = 0
        except zlib.error:
            pass
        return b"".join(out)

    def fill(self, upto: int) -> bool:
        """Decode until position ``upto`` is buffered; False if the file ends first."""
        while self.base + len(self.buf) < upto:
            if not self.more():
                return False
        return True

    def release(self, before: int) -> None:
        """Decoded bytes before ``before`` are no longer needed."""
        if before - self.base >= _READ:
            del self.buf[:before - self.base]
            self.base = before
        while len(self.members) > 1 and self.members[1][0] <= before:
            self.members.popleft()

    def member_of(self, pos: int) -> tuple[int, int]:
        """(decoded start, raw offset) of the gzip member that ``pos`` lies in; (0, 0) for a plain file."""
        for member in reversed(self.members):
            if member[0] <= pos:
                return member
        return 0, 0

    def src(self, pos: int) -> int:
        """Offset in the file of decoded position ``pos``: exact in a plain file, the member in a gzip one."""
        return self.member_of(pos)[1] if self.gzip else self.origin + pos

    def version_at(self, pos: int) -> re.Match | None:
        if self.base + len(self.buf) < pos + 16:
            self.fill(pos + 16)
        return _VERSION.match(self.buf, pos - self.base)

    def next_member(self, after: int, upto: int) -> int | None:
        """The first member start in (after, upto] whose bytes begin with a WARC version line."""
        for start, _ in self.members:
            if after < start <= upto and self.version_at(start):
                return start
        return None

    def next_gap(self, upto: int) -> _Gap | None:
        return self.gaps[0] if self.gaps and self.gaps[0].pos <= upto else None

    def find_version(self, start: int, stop: int) -> int | None:
        """Position of the first ``WARC/x.y`` version line in [start, stop)."""
        i = self.buf.find(b"WARC/", start - self.base, stop - self.base)
        while i >= 0:
            if self.version_at(self.base + i):
                return self.base + i
            i = self.buf.find(b"WARC/", i + 1, stop - self.base)
        return None


@dataclass(slots=True)
class _Record:
    """One framed WARC record."""

    offset: int  # in the file (gzip: the member it starts in)
    inner: int  # decoded bytes into that member: 0 for plain files and per-record gzip
    version: bytes
    headers: dict[str, str]
    type: str
    content_length: int | None  # None if missing or invalid
    block: bytes  # the first bytes of the block, as many as the reader asked to keep
    length: int  # block bytes present
    status: Literal["ok", "misframed", "truncated", "corrupt"]


@dataclass
class _Span:
    """Bytes skipped because they are not records: [start, end) in the file."""

    start: int
    end: int
    why: str
    where: str  # decoded positions, when the span lies inside one gzip member
    at_eof: bool


def _header(d: _Decoded, pos: int) -> tuple[bytes, dict[str, str], int, str] | None:
    """(version, lower-cased headers, block start, status) of the WARC header block at ``pos``, or None.

    A header that the end of the file or a broken gzip member cuts off is read as far as it goes, as warcio
    does: its status is ``truncated`` or ``corrupt`` and its block starts (and ends) where it is cut."""
    m = d.version_at(pos)
    if m is None:
        return None
    i = pos - d.base
    for want in (2048, _HEAD_MAX):  # nearly every header block fits the first look
        d.fill(pos + want)
        b = d.buf
        end = b.find(b"\r\n\r\n", i, i + want)
        lf = b.find(b"\n\n", i, end if end >= 0 else i + want)  # a writer that ends lines with LF only
        end, term = (end, 4) if lf < 0 else (lf, 2)
        if end >= 0:
            break
    status = "ok"
    if d.gaps and d.gaps[0].pos < (d.base + end + term if end >= 0 else d.end + 1):
        status, end, term = "corrupt", d.gaps[0].pos - d.base, 0
    elif end < 0 and d.eof and d.end - pos < _HEAD_MAX:
        status, end, term = "truncated", len(b), 0
    elif end < 0:
        return None
    block = d.base + end + term
    text = bytes(memoryview(b)[m.end():end]).decode("utf-8", "replace")
    headers: dict[str, str] = {}
    if "\n " in text or "\n\t" in text:  # folded continuation lines (rare): join them first
        text = re.sub(r"\r?\n[ \t]+", " ", text)
    for line in text.split("\n"):
        key, colon, value = line.partition(":")
        if colon:
            headers[key.strip().lower()] = value.strip()
    return m.group(1), headers, block, status


def _trailer(d: _Decoded, at: int) -> int | None:
    """Where the next record may begin if a block that ends at ``at`` is well framed, else None.

    A block is followed by ``\\r\\n\\r\\n``. Fewer or more newlines (up to ``_NEWLINES_MAX``: writers differ, and a
    Content-Length a few bytes short of a page's own closing newlines is common) are accepted before the end of
    the file, the end of the gzip member or the next ``WARC/`` line, but not before other bytes. FastWARC
    frames such records the same way.
    """
    d.fill(at + _NEWLINES_MAX + 5)
    b, i = d.buf, at - d.base
    if b[i:i + 4] == b"\r\n\r\n":
        return at + 4
    j = i
    while j < i + _NEWLINES_MAX and j < len(b) and b[j] in b"\r\n":
        j += 1
    after = d.base + j
    if (after >= d.end and d.eof) or b[j:j + 5] == b"WARC/" or d.next_gap(after) is not None:
        return after
    if any(start == after for start, _ in d.members):
        return after
    return None


def _record(d: _Decoded, pos: int, header: tuple[bytes, dict[str, str], int, str],
            keep: Callable[[str, bytes, int | None], int]) -> tuple[_Record, int]:
    """Frame the record whose header starts at ``pos``; returns it and where the next record may begin.

    The block is streamed: only the first ``keep(type, head, content_length)`` bytes are held. While the
    Content-Length is trusted, the first place inside the block where a record could begin is remembered
    (and the bytes from there kept, up to ``_REPLAY_MAX``), to go back to if the trailer is not where the
    Content-Length says. A gzip member that begins with a WARC version line ends the block at once.
    """
    version, headers, block, cut = header
    member_start = d.member_of(pos)[0]
    offset = d.src(pos)  # now: streaming a long block releases the members before it
    text = headers.get("content-length", "")
    content_length = int(text) if text.isascii() and text.isdigit() else None
    rtype = (headers.get("warc-type") or "unknown").lower()
    if cut != "ok":  # nothing of the block is there
        return _Record(offset=offset, inner=pos - member_start if d.gzip else 0, version=version,
                       headers=headers, type=rtype, content_length=content_length, block=b"", length=0,
                       status=cut), block
    head = b""
    if rtype in _PEEK:
        for want in (1 << 14, _HEAD_MAX):  # the HTTP head nearly always fits the first look
            want = want if content_length is None else min(want, content_length)
            d.fill(block + want)
            i = block - d.base
            head = bytes(memoryview(d.buf)[i:i + want])
            if b"\r\n\r\n" in head or b"\n\n" in head:
                break
    room = max(keep(rtype, head, content_length), len(head))
    target = None if content_length is None else block + content_length
    # a member starting right at the declared end is the next record: the block swallowed its own trailer
    if target is not None and content_length <= _FAST_MAX and d.fill(target + 9) and not (
            d.gaps and d.gaps[0].pos <= target + 9) and d.next_member(block, target - 1) is None:
        nxt = _trailer(d, target)  # the whole block is buffered: frame it in one step
        if nxt is not None:
            gap = d.next_gap(nxt)
            i = block - d.base
            return _Record(
                offset=offset, inner=pos - member_start if d.gzip else 0, version=version,
                headers=headers, type=rtype, content_length=content_length,
                block=head if room <= len(head) else bytes(memoryview(d.buf)[i:i + min(room, content_length)]),
                length=content_length, status="corrupt" if gap is not None and gap.member_pos < nxt else "ok",
            ), nxt
    kept: list[bytes] = []
    kept_len = 0
    status = "ok" if target is not None else "misframed"
    at, candidate = block, None
    while True:
        if target is not None and at >= target:
            nxt = _trailer(d, target)
            if nxt is not None:
                end = target
                gap = d.next_gap(nxt)
                if gap is not None and gap.member_pos < nxt:
                    status = "corrupt"  # its own gzip member failed its checksum: the bytes may be wrong
                break
            status, target = "misframed", None  # the block goes on: it ends where the next record begins
            if candidate is not None:
                end = nxt = candidate
                break
        if not d.fill(at + 1):  # the file ends: inside the block, unless a record began after all
            if candidate is not None:
                status, end, nxt = "misframed", candidate, candidate
            else:
                status, end, nxt = "truncated" if status == "ok" else status, at, at
            break
        stop = d.end if target is None else min(d.end, target)
        gap = d.next_gap(stop)
        if gap is not None:
            stop = max(at, gap.pos)
        member = d.next_member(at, stop if target is None else min(stop, target - 1))
        if member is not None:
            stop = member
        if candidate is None:
            # from 4 bytes back (a version line split by the last fill), but never before what is still held
            candidate = d.find_version(max(block, at - 4, d.base), stop)
            if candidate is not None and target is None:
                stop = candidate
        if kept_len < room and stop > at:
            piece = bytes(memoryview(d.buf)[at - d.base:min(stop, at + room - kept_len) - d.base])
            kept.append(piece)
            kept_len += len(piece)
        at = stop
        if gap is not None and at == gap.pos:
            status, end, nxt = "corrupt", at, at
            break
        if at == member or (target is None and at == candidate):
            status, end, nxt = "misframed", at, at
            break
        if candidate is not None and at - candidate > _REPLAY_MAX:
            status, end, nxt = "misframed", candidate, candidate
            break
        d.release(at if candidate is None else candidate)
    data = b"".join(kept)[:end - block]
    if status == "misframed" and len(data) == end - block:
        data = data[:-4] + data[-4:].rstrip(b"\r\n")  # the trailer is not part of the block
    return _Record(
        offset=offset, inner=pos - member_start if d.gzip else 0, version=version,
        headers=headers, type=rtype, content_length=content_length, block=data, length=end - block,
        status=status,
    ), nxt


def _next_sync(d: _Decoded, pos: int) -> int:
    """The first place at or after ``pos`` where a record may begin: a gzip member start, the data after a
    gap, a ``WARC/x.y`` version line, or the end of the file."""
    while True:
        stop = d.end
        gap = d.next_gap(stop)
        if gap is not None:
            stop = max(pos, gap.pos)
        for start, _ in d.members:
            if pos <= start < stop:
                stop = start
                break
        found = d.find_version(pos, stop)
        if found is not None:
            return found
        if stop < d.end or gap is not None:
            return stop
        pos = max(pos, d.end - 4)
        d.release(pos)
        if not d.more():
            return d.end


def _frame(d: _Decoded, keep: Callable[[str, bytes, int | None], int], hand_back: bool = False
           ) -> Generator[_Record | _Span, None, int | None]:
    """Records and skipped spans of a decoded WARC, in file order.

    With ``hand_back``, it stops after a well-framed record once the next one starts a gzip member whose raw
    bytes are still held, and returns that member's offset (for FastWARC to go on from); else None.
    """
    pos = 0
    span: tuple[int, str, int] | None = None  # (start offset, why, decoded start) of the bytes being skipped
    clean = False  # the last record was well framed
    while True:
        while d.fill(pos + 1):  # newlines between records (the trailer is already consumed, as a rule)
            if d.buf[pos - d.base] not in b"\r\n":
                break
            b, i = d.buf, pos - d.base
            while i < len(b) and b[i] in b"\r\n":
                i += 1
            pos = d.base + i
            if i < len(b):
                break
        while d.gaps and d.gaps[0].pos <= pos:
            gap = d.gaps.popleft()
            if span is None:
                span = (gap.raw_start, gap.why, pos)
        if pos >= d.end and d.eof:
            if span is not None:
                yield _Span(span[0], d.raw.end, span[1], "", True)
            return None
        if hand_back and clean and span is None and d.gzip:
            member_pos, offset = d.member_of(pos)
            if member_pos == pos and offset >= d.raw.base:
                return offset
        header = _header(d, pos)
        if header is None:
            if span is None:
                span = (d.src(pos), "no WARC record header", pos)
            pos = _next_sync(d, pos + 1)
            continue
        if span is not None:
            end = d.src(pos)
            where = f" (decoded bytes {span[2]}-{pos} of the gzip member)" if end == span[0] and d.gzip else ""
            yield _Span(span[0], end, span[1], where, False)
            span = None
        record, pos = _record(d, pos, header, keep)
        clean = record.status == "ok"
        d.release(pos)
        yield record


# ---- FastWARC where it can be trusted ---------------------------------------------------------------


class _Tee:
    """The input as FastWARC reads it, keeping the bytes from ``hold`` on, so that curate's framer can take
    over from the first record FastWARC has not been trusted with."""

    def __init__(self, stream: IO[bytes], start: int, prefix: bytes) -> None:
        self.stream = stream
        self.buf = bytearray(prefix)  # bytes from ``start`` already read from the stream
        self.base = self.hold = self.pos = start

    def tell(self) -> int:
        return self.pos

    def peek(self, n: int) -> bytes:
        """The first ``n`` bytes from ``start`` (fewer at the end of the file), still to be read by FastWARC."""
        while len(self.buf) < n and (chunk := self.stream.read(_READ)):
            self.buf += chunk
        return bytes(self.buf[:n])

    def read(self, n: int = -1) -> bytes:
        n = n if n > 0 else _READ
        if self.pos == self.base + len(self.buf):
            if self.hold - self.base >= _READ:
                del self.buf[:self.hold - self.base]
                self.base = self.hold
            self.buf += self.stream.read(n)
        i = self.pos - self.base
        chunk = bytes(memoryview(self.buf)[i:i + n])
        self.pos += len(chunk)
        return chunk

    def held(self) -> bytes:
        """The bytes read from ``hold`` on."""
        return bytes(self.buf[self.hold - self.base:])


def _read_exact(reader, n: int) -> bytes:
    first = reader.read(n)
    if len(first) == n or not first:
        return first
    parts, got = [first], len(first)
    while got < n:
        part = reader.read(n - got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def _member_inside(raw: bytearray, start: int, end: int) -> bool:
    """Whether a gzip member that begins with a WARC version line starts in ``raw[start:end]``: there, a
    Content-Length ran over into the next record, which :func:`_record` stops at."""
    i = raw.find(_GZIP_MAGIC, start, end)
    while i >= 0:
        try:
            if _VERSION.match(zlib.decompressobj(31).decompress(raw[i:i + 1024], 16)):
                return True
        except zlib.error:
            pass  # the magic bytes were compressed data
        i = raw.find(_GZIP_MAGIC, i + 1, end)
    return False


def _fast_record(rec, pos: int, keep: Callable[[str, bytes, int | None], int]) -> _Record | None:
    """One record as FastWARC read it, as :func:`_record` would frame it; None if curate's framer must look
    at it: a Content-Length that is invalid or too long to hold, or a block cut short."""
    version = (rec.headers.status_line or "").encode()[5:]
    headers = {key.strip().lower(): value.strip() for key, value in rec.headers.items()}  # as _header has them
    text = headers.get("content-length", "")
    if not (text.isascii() and text.isdigit()) or int(text) > _FAST_MAX or not _VERSION_NUMBER.fullmatch(version):
        return None
    content_length = int(text)
    rtype = (headers.get("warc-type") or "unknown").lower()
    reader = rec.reader
    head = b""
    if rtype in _PEEK:  # as _record reads it
        head = _read_exact(reader, min(1 << 14, content_length))
        if b"\r\n\r\n" not in head and b"\n\n" not in head:
            head += _read_exact(reader, min(_HEAD_MAX, content_length) - len(head))
    room = max(keep(rtype, head, content_length), len(head))
    if room > len(head):
        block = head + reader.read()  # at most _FAST_MAX, as _record holds it
        length = len(block)
    else:
        block, length = head, len(head) + rec.consume()
    if length != content_length:
        return None
    return _Record(offset=pos, inner=0, version=version, headers=headers, type=rtype, content_length=content_length,
                   block=block[:room], length=length, status="ok")


def _fastwarc(stream: IO[bytes], keep: Callable[[str, bytes, int | None], int]) -> Iterator[_Record | _Span]:
    """Records of per-record gzip framed by FastWARC (its Rust inflate is ~1.7x faster than Python's zlib),
    handed over to curate's framer at the first doubt.

    FastWARC cannot resynchronise, and a wrong Content-Length only shows at the next record, so a record is
    passed on only once FastWARC has begun the next one at a new gzip member with no record member in
    between (its own member then held just it and passed its checksum). Anything else — an exception, a
    plain or single-member gzip file, a record :func:`_fast_record` declines, the end of the file — hands
    over to :func:`_frame` from the record not yet passed on, replayed from the tee. The framer hands back
    once it has read a well-framed record and the next one starts a gzip member.
    """
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    start, prefix = 0, b""
    while True:
        tee = _Tee(stream, start, prefix)
        if tee.peek(3) == _GZIP_MAGIC:  # a plain file goes to the framer at once: it reads those as fast
            try:
                held: _Record | None = None
                for rec in ArchiveIterator(tee, record_types=WarcRecordType.any_type, parse_http=False):
                    pos = rec.stream_pos
                    at = pos - tee.base
                    if held is None:
                        if pos != tee.hold or tee.buf[at:at + 3] != _GZIP_MAGIC:
                            break
                    elif pos <= tee.hold or tee.buf[at:at + 3] != _GZIP_MAGIC or _member_inside(
                            tee.buf, tee.hold - tee.base + 1, at):
                        break
                    else:
                        yield held
                    tee.hold = pos
                    held = _fast_record(rec, pos, keep)
                    if held is None:
                        break
            except OSError:
                pass  # where FastWARC gives up, the framer takes over
        d = _Decoded(tee.stream, tee.hold, tee.held())
        start = yield from _frame(d, keep, hand_back=True)
        if start is None:
            return
        prefix = bytes(d.raw.buf[start - d.raw.base:])


# ---- records -> documents -----------------------------------------------------------------------------


def _normalise_uri(uri: str | None) -> str | None:
    """WARC/0.17-1.0 writers wrap URIs in angle brackets (``<http://...>``); strip them."""
    if uri is None:
        return None
    uri = uri.strip()
    if uri.startswith("<") and uri.endswith(">"):
        uri = uri[1:-1].strip()
    return uri


def _http_head(block: bytes) -> tuple[int | None, dict[str, str], int]:
    """Status, lower-cased headers and where the body starts; a head cut short is parsed as far as it goes."""
    end, sep = block.find(b"\r\n\r\n"), 4
    if end < 0:
        end, sep = block.find(b"\n\n"), 2
    if end < 0:
        end, sep = len(block), 0
    # lines end at LF or CRLF only: str.splitlines() would also cut a header value at \x85, \x0b, \x1c ...
    lines = [line.removesuffix("\r") for line in block[:end].decode("iso-8859-1").split("\n")]
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
    return status, headers, end + sep


def _decode_body(body: bytes, headers: dict[str, str], max_bytes: int | None = None) -> bytes:
    """Undo chunking and gzip/deflate Content-Encoding; decoding stops one byte past ``max_bytes``, so a
    gzip bomb costs ``max_bytes`` of memory, not its inflated size."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = _dechunk(body)
    encoding = headers.get("content-encoding", "").lower().strip()
    if encoding in ("gzip", "x-gzip", "deflate"):
        try:
            inflate = zlib.decompressobj(31 if "gzip" in encoding else -zlib.MAX_WBITS)
            return inflate.decompress(body, 0 if max_bytes is None else max_bytes + 1)
        except zlib.error:
            pass  # many crawlers store the decoded body but keep the header: use the bytes as they are
    return body


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


@register
class WarcReader(Reader):
    """Reads WARC 0.17-1.1 (and later versions, leniently), gzip (per record or whole file) or plain, from
    any fsspec file object, resynchronising after corrupt records."""

    name = "warc_read"
    Params = WarcReadParams

    def __init__(self, params: StageParams | None = None) -> None:
        super().__init__(params)
        self._judged: tuple[bytes, tuple[int | None, dict[str, str], int]] | None = None  # last head parsed

    def read(self, stream: IO[bytes], path: str, batch_size: int, on_error: ErrorSink, counts: ReadCounts
             ) -> Iterator[pa.Table]:
        """Yield document batches; report each skipped span through ``on_error(start, None, why, end)``."""
        params: WarcReadParams = self.params  # type: ignore[assignment]
        rows: list[dict] = []
        items = _fastwarc(stream, self._keep) if params.engine == "fastwarc" else _frame(_Decoded(stream), self._keep)
        for item in items:
            if isinstance(item, _Span):
                counts.errors += 1
                on_error(item.start, None, self._span_message(item, counts), item.end)
                continue
            counts.records[item.type] += 1
            counts.bytes += item.length
            counts.unknown_versions += item.version not in _KNOWN_VERSIONS
            if item.status != "ok":
                setattr(counts, item.status, getattr(counts, item.status) + 1)
            row = self._document(item, path, counts)
            if row is not None:
                rows.append(row)
                if len(rows) >= batch_size:
                    yield self._table(rows)
                    rows = []
        if rows:
            yield self._table(rows)
        if not counts.records and not counts.errors:
            counts.errors += 1
            on_error(0, None, "no WARC records found: empty file or not a WARC file")

    @staticmethod
    def _span_message(span: _Span, counts: ReadCounts) -> str:
        if not counts.records and span.start == 0 and span.at_eof:
            return f"not a WARC file: no WARC record in bytes 0-{span.end} ({span.why})"
        then = "the file ends there" if span.at_eof else "resumed at the next record"
        return f"corrupt WARC stream: skipped bytes {span.start}-{span.end}{span.where} ({span.why}); {then}"

    def _keep(self, rtype: str, head: bytes, content_length: int | None) -> int:
        """How many block bytes to keep: a document's, or none for a record that cannot become one."""
        params: WarcReadParams = self.params  # type: ignore[assignment]
        if rtype == "conversion":
            return params.max_record_bytes + 1 if params.wet else 0
        if rtype != "response":
            return 0
        status, headers, start = parsed = _http_head(head)
        self._judged = (head, parsed) if b"\r\n\r\n" in head else None  # parsed again at once by _document
        if start < len(head) or len(head) < _HEAD_MAX:  # the whole HTTP head is here: judge it now
            content_type = headers.get("content-type", "")
            if status != 200 or (content_type and not _is_html(content_type, b"")):
                return 0
            if content_length is not None and content_length - start > params.max_record_bytes:
                return start + _HEAD_MAX  # too large whatever else: its size is known, only a sniff is needed
        return _HEAD_MAX + params.max_record_bytes + 1

    def _document(self, rec: _Record, path: str, counts: ReadCounts) -> dict | None:
        params: WarcReadParams = self.params  # type: ignore[assignment]
        if rec.type not in ("response", "conversion"):
            return None
        uri = _normalise_uri(rec.headers.get("warc-target-uri"))
        too_large = rec.length > params.max_record_bytes
        if rec.type == "conversion":
            if not params.wet:
                counts.skipped["wet_disabled"] += 1
                return None
            text = None if too_large else rec.block.decode("utf-8", errors="replace")
            row = self._row(rec, path, uri, "text/plain", None, None, text)
            size = float(rec.length)
        else:
            judged = self._judged
            if judged is not None and (rec.block is judged[0] or rec.block.startswith(judged[0])):
                status, headers, start = judged[1]
            else:
                status, headers, start = _http_head(rec.block)
            if status is None:
                counts.skipped["not_http"] += 1  # dns:, whois: and other non-HTTP responses
                return None
            if status != 200:
                counts.skipped[f"http_status_{status}"] += 1
                return None
            size = float(rec.length - start)
            too_large = size > params.max_record_bytes
            raw = rec.block[start:]
            body = _decode_body(raw[:_HEAD_MAX] if too_large else raw, headers, params.max_record_bytes)
            content_type = headers.get("content-type", "")
            if not _is_html(content_type, body):
                counts.skipped["non_html"] += 1
                return None
            if not too_large and len(body) > params.max_record_bytes:  # an encoded body that inflates past the cap
                too_large, size = True, float(len(body))
            match = _CHARSET.search(content_type)
            row = self._row(rec, path, uri, content_type.split(";")[0].strip().lower() or "text/html",
                            match.group(1).lower() if match else None, None if too_large else body, None)
        counts.documents += 1
        if rec.status in ("truncated", "corrupt"):  # a document all the same, so it is counted, not kept
            row.update(removed_by=self.name, reason=rec.status, score=float(rec.length),
                       threshold=None if rec.content_length is None else float(rec.content_length))
        elif too_large:  # removed with its size, not skipped
            row.update(html=None, text=None, removed_by=self.name, reason="too_large", score=size,
                       threshold=float(params.max_record_bytes))
        return row

    @staticmethod
    def _row(rec: _Record, path: str, uri: str | None, content_type: str, charset: str | None,
             html: bytes | None, text: str | None) -> dict:
        # Without a WARC-Record-ID the id is where the record is: url|date would collide for two captures in
        # one second, path@offset cannot (+inner for records inside one big gzip member).
        fallback = f"{path}@{rec.offset}" + (f"+{rec.inner}" if rec.inner else "")
        return {
            "id": _normalise_uri(rec.headers.get("warc-record-id")) or fallback, "url": uri, "warc_path": path,
            "warc_offset": rec.offset, "fetch_time": rec.headers.get("warc-date"), "content_type": content_type,
            "charset": charset, "html": html, "text": text,
        }

    def _table(self, rows: list[dict]) -> pa.Table:
        params: WarcReadParams = self.params  # type: ignore[assignment]
        table = pa.Table.from_pylist(rows, schema=DOCUMENT_SCHEMA)
        urls = table["url"].combine_chunks()
        table = table.set_column(table.schema.get_field_index("host"), "host", url_hosts(urls))
        return table.set_column(table.schema.get_field_index("source"), "source", source_keys(urls, params.sources))
