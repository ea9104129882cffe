"""Mutations of real WARC files for ``test_warc_fuzz.py``, and the subprocess that reads them.

Each mutation takes a healthy WARC (its records located by warcio, an independent parser) and returns the
damaged bytes with where the damage lies, as one splice: ``mutated = data[:start] + inserted + data[stop:]``
(``Mutant``). The test compares what ``warc_read`` makes of the mutant with what it makes of the healthy file.

The reads run in a separate worker process (``python warc_mutations.py``, spoken to over pipes) so that a read
that hangs can be killed at a wall-clock bound, one that crashes the interpreter is seen as a crash, and each
read's peak RSS growth is measured on its own (the kernel's high-water mark is reset before it, through
``/proc/self/clear_refs``).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import itertools
import os
import pickle
import re
import struct
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

# ---- healthy files ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rec:
    """One record of a healthy file. Offsets are raw (file) bytes; lengths below ``length`` are decoded."""

    offset: int
    length: int  # raw bytes up to the next record (the whole gzip member, or header + block + trailer)
    type: str
    header_len: int  # decoded WARC header block, with its blank line
    content_length: int
    http_len: int  # decoded HTTP head (status line + headers + blank line) at the start of the block; 0 if none

    @property
    def end(self) -> int:
        return self.offset + self.length


@dataclass(frozen=True)
class Warc:
    name: str
    data: bytes
    gzip: bool
    records: tuple[Rec, ...]

    def decoded(self, rec: Rec) -> bytes:
        raw = self.data[rec.offset:rec.end]
        return gzip.decompress(raw) if self.gzip else raw

    def encode(self, record: bytes) -> bytes:
        """A record's decoded bytes as this file stores them (one gzip member per record, as it was)."""
        return gzip.compress(record, mtime=0) if self.gzip else record

    def index_at(self, pos: int) -> int:
        """Index of the record whose raw bytes hold ``pos`` (len(records) at or past the end)."""
        for i, rec in enumerate(self.records):
            if rec.offset <= pos < rec.end:
                return i
        return len(self.records)


def load_warc(path: Path, plain: bool = False) -> Warc:
    """A real WARC with its records located; ``plain`` gunzips a per-record gzip file into a plain WARC."""
    from warcio.archiveiterator import ArchiveIterator

    data = path.read_bytes()
    if plain and data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    gz = data[:2] == b"\x1f\x8b"
    it = ArchiveIterator(io.BytesIO(data))
    offsets = []
    for rec in it:
        rec.content_stream().read()
        offsets.append(it.get_record_offset())
    offsets.append(len(data))
    records = []
    for start, stop in itertools.pairwise(offsets):
        raw = data[start:stop]
        dec = gzip.decompress(raw) if gz else raw
        assert dec.startswith(b"WARC/"), f"{path.name}@{start}: not one record per gzip member"
        head_end = dec.index(b"\r\n\r\n") + 4
        head = dec[:head_end].decode("utf-8", "replace")
        content_length = int(re.search(r"(?i)\r\ncontent-length:\s*(\d+)", head).group(1))
        rtype = (re.search(r"(?i)\r\nwarc-type:\s*([^\r\n]*)", head) or [None, "unknown"])[1].strip().lower()
        block = dec[head_end:head_end + content_length]
        http_end = block.find(b"\r\n\r\n")
        http_len = http_end + 4 if block.startswith(b"HTTP/") and http_end >= 0 else 0
        records.append(Rec(start, stop - start, rtype, head_end, content_length, http_len))
    return Warc(path.name + (" (gunzipped)" if plain and not gz else ""), data, gz, tuple(records))


# ---- mutations --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mutant:
    """``data[:start] + inserted + data[stop:]`` of a healthy file, or a reordering of its records."""

    data: bytes
    what: str
    start: int  # first damaged byte (raw offset in the healthy file)
    stop: int  # healthy bytes resume here (raw offset in the healthy file); the shift after it is ``delta``
    delta: int
    decoded_at: int | None = None  # where the damage lies in the decoded record (rewrites of one record)
    order: tuple[int, ...] | None = None  # reordered records: healthy indices in their new file order
    body_only: bool = False  # the damage leaves the WARC header and the HTTP head of its record as they were
    notes: dict[str, Any] = field(default_factory=dict)


def splice(w: Warc, start: int, stop: int, inserted: bytes, what: str, **kw: Any) -> Mutant:
    data = w.data[:start] + inserted + w.data[stop:]
    return Mutant(data, what, start, stop, len(inserted) - (stop - start), **kw)


def truncate(w: Warc, cut: int) -> Mutant:
    return splice(w, cut, len(w.data), b"", f"truncated at {cut} of {len(w.data)}")


def cut_record(w: Warc, k: int, keep: int) -> Mutant:
    """Record ``k`` (its gzip member) loses all but its first ``keep`` raw bytes; the file goes on."""
    rec = w.records[k]
    return splice(w, rec.offset + keep, rec.end, b"", f"record {k} cut to {keep} of {rec.length} raw bytes")


def insert(w: Warc, pos: int, garbage: bytes, what: str = "garbage") -> Mutant:
    return splice(w, pos, pos, garbage, f"{len(garbage)} bytes of {what} at {pos}")


def flip(w: Warc, pos: int, mask: int) -> Mutant:
    """One raw byte xor ``mask`` (in a gzip file, a bit of compressed data)."""
    byte = bytes([w.data[pos] ^ mask])
    return splice(w, pos, pos + 1, byte, f"raw byte {pos} ^ {mask:#04x}")


def rewrite(w: Warc, k: int, new: bytes, what: str, decoded_at: int, **kw: Any) -> Mutant:
    """Record ``k`` replaced by the decoded bytes ``new``, gzipped again if the file is."""
    rec = w.records[k]
    return splice(w, rec.offset, rec.end, w.encode(new), f"record {k} ({rec.type}): {what}", decoded_at=decoded_at,
                  **kw)


def flip_decoded(w: Warc, k: int, at: int, mask: int) -> Mutant:
    """A byte of record ``k`` flipped before compression (the header, HTTP head or body is damaged)."""
    dec = bytearray(w.decoded(w.records[k]))
    at %= len(dec)
    dec[at] ^= mask
    rec = w.records[k]
    return rewrite(w, k, bytes(dec), f"decoded byte {at} ^ {mask:#04x}", at,
                   body_only=at >= rec.header_len + rec.http_len and at < rec.header_len + rec.content_length)


def set_content_length(w: Warc, k: int, value: bytes) -> Mutant:
    """Record ``k``'s Content-Length header set to ``value`` (b"" drops the header line)."""
    dec = w.decoded(w.records[k])
    m = re.search(rb"(?i)\r\ncontent-length:[^\r\n]*", dec)
    line = b"\r\nContent-Length: " + value if value else b""
    return rewrite(w, k, dec[:m.start()] + line + dec[m.end():], f"Content-Length {value!r}", m.start() + 2)


def _parts(w: Warc, k: int) -> tuple[bytes, bytes, bytes, bytes]:
    """(WARC header, HTTP head, body, trailer) of record ``k``."""
    rec = w.records[k]
    dec = w.decoded(rec)
    block_end = rec.header_len + rec.content_length
    head_end = rec.header_len + rec.http_len
    return dec[:rec.header_len], dec[rec.header_len:head_end], dec[head_end:block_end], dec[block_end:]


def with_block(warc_head: bytes, block: bytes, trailer: bytes) -> bytes:
    """A record whose Content-Length is set to the length of ``block``."""
    head = re.sub(rb"(?i)(\r\ncontent-length:)[^\r\n]*", rb"\g<1> %d" % len(block), warc_head, count=1)
    return head + block + trailer


def http_header(http: bytes, name: bytes, value: bytes | None) -> bytes:
    """The HTTP head with header ``name`` removed, then added as ``value`` (unless None) after the status line."""
    lines = http[:-4].split(b"\r\n")
    lines = [lines[0]] + [ln for ln in lines[1:] if not ln.lower().startswith(name.lower() + b":")]
    if value is not None:
        lines.insert(1, name + b": " + value)
    return b"\r\n".join(lines) + b"\r\n\r\n"


def change_http(w: Warc, k: int, what: str, http: bytes, body: bytes, body_only: bool = False) -> Mutant:
    warc_head, _, _, trailer = _parts(w, k)
    return rewrite(w, k, with_block(warc_head, http + body, trailer), what, w.records[k].header_len,
                   body_only=body_only)


def huge_header(w: Warc, k: int, where: str, size: int) -> Mutant:
    """A ``size``-byte header line in record ``k``'s WARC header or HTTP head (Content-Length kept right)."""
    warc_head, http, body, trailer = _parts(w, k)
    line = b"X-Fuzz-Filler: " + b"a" * size
    if where == "warc":
        new = warc_head[:-4] + b"\r\n" + line + b"\r\n\r\n" + http + body + trailer
        return rewrite(w, k, new, f"{size}-byte WARC header line", len(warc_head) - 2)
    return change_http(w, k, f"{size}-byte HTTP header line", http[:-4] + b"\r\n" + line + b"\r\n\r\n", body)


def chunk(body: bytes, sizes: list[int]) -> bytes:
    """``body`` in valid HTTP chunked transfer encoding, cut at the given chunk sizes (then the rest)."""
    out, pos = [], 0
    for size in sizes + [len(body)]:
        piece = body[pos:pos + max(1, size)]
        if not piece:
            break
        out.append(b"%x\r\n%s\r\n" % (len(piece), piece))
        pos += len(piece)
    return b"".join(out) + b"0\r\n\r\n"


#: Ways to break chunked transfer encoding, applied to a validly chunked body.
BAD_CHUNKING = {
    "no final chunk": lambda c: c[:-5],
    "size too large": lambda c: b"ffff" + c[c.index(b"\r\n"):],
    "size 2**64-1": lambda c: b"ffffffffffffffff" + c[c.index(b"\r\n"):],
    "17 hex digits": lambda c: b"1" * 17 + c[c.index(b"\r\n"):],
    "not hex": lambda c: b"zz" + c[c.index(b"\r\n"):],
    "negative": lambda c: b"-5" + c[c.index(b"\r\n"):],
    "extension": lambda c: c[:c.index(b"\r\n")] + b";name=value" + c[c.index(b"\r\n"):],
    "LF only": lambda c: c.replace(b"\r\n", b"\n"),
    "cut mid-chunk": lambda c: c[:len(c) // 2],
    "empty": lambda c: b"",
    "only the last chunk": lambda c: b"0\r\n\r\n",
    "garbage after": lambda c: c + b"\x00garbage" * 10,
}


def chunked(w: Warc, k: int, sizes: list[int], breakage: str | None) -> Mutant:
    _, http, body, _ = _parts(w, k)
    coded = chunk(body, sizes)
    if breakage is not None:
        coded = BAD_CHUNKING[breakage](coded)
    http = http_header(http_header(http, b"Content-Length", None), b"Transfer-Encoding", b"chunked")
    return change_http(w, k, f"chunked {sizes} {breakage or 'valid'}", http, coded)


def charset(w: Warc, k: int, content_type: bytes | None, meta: bytes | None) -> Mutant:
    """Record ``k``'s Content-Type replaced (None drops it) and, optionally, a ``<meta charset>`` put first."""
    _, http, body, _ = _parts(w, k)
    if meta is not None:
        body = b'<meta charset="' + meta + b'">' + body
    return change_http(w, k, f"Content-Type {content_type!r}, meta {meta!r}",
                       http_header(http, b"Content-Type", content_type), body)


def gzip_bomb(size: int) -> bytes:
    """A valid gzip stream that inflates to ``size`` zero bytes (one deflate block repeated; ~1 KB per MiB)."""
    mib = max(3, -(-size // (1 << 20)))
    zeros = bytes(1 << 20)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    first = deflate.compress(zeros) + deflate.flush(zlib.Z_FULL_FLUSH)
    block = deflate.compress(zeros) + deflate.flush(zlib.Z_FULL_FLUSH)
    last = deflate.compress(zeros) + deflate.flush()
    crc = 0
    for _ in range(mib):
        crc = zlib.crc32(zeros, crc)
    return (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + first + block * (mib - 2) + last
            + struct.pack("<II", crc, (mib << 20) & 0xFFFFFFFF))


def bomb(w: Warc, k: int, size: int, encoding: bytes = b"gzip") -> Mutant:
    """Record ``k``'s body replaced by a gzip (or raw deflate) bomb inflating to ``size`` bytes."""
    _, http, _, _ = _parts(w, k)
    payload = gzip_bomb(size)
    if encoding == b"deflate":
        payload = payload[10:-8]
    http = http_header(http_header(http, b"Transfer-Encoding", None), b"Content-Encoding", encoding)
    return change_http(w, k, f"{encoding.decode()} bomb of {size} bytes in {len(payload)}", http, payload,
                       body_only=False)


def duplicate(w: Warc, k: int, j: int) -> Mutant:
    """Record ``k`` copied in front of record ``j`` (``j == len(records)``: at the end)."""
    rec = w.records[k]
    at = w.records[j].offset if j < len(w.records) else len(w.data)
    order = tuple(range(j)) + (k,) + tuple(range(j, len(w.records)))
    return replace(insert(w, at, w.data[rec.offset:rec.end], f"record {k} duplicated"), order=order)


def swap(w: Warc, i: int, j: int) -> Mutant:
    """Records ``i < j`` exchanged."""
    a, b = w.records[i], w.records[j]
    data = w.data[:a.offset] + w.data[b.offset:b.end] + w.data[a.end:b.offset] + w.data[a.offset:a.end] + w.data[b.end:]
    order = list(range(len(w.records)))
    order[i], order[j] = j, i
    return Mutant(data, f"records {i} and {j} swapped", a.offset, b.end, 0, order=tuple(order))


def big_record_file(path: Path, w: Warc, at: int, size: int, kind: str, content_length: str, gz: bool) -> None:
    """Write ``w`` with a record of a ``size``-byte block put in front of record ``at``, streamed to ``path``.

    ``kind``: ``html`` (an HTTP-200 page), ``video`` (an HTTP-200 video/mp4), ``resource`` or ``zeros`` (a
    resource of zero bytes: gzipped, a small member that inflates to ``size``); ``content_length``:
    ``right``, ``short`` (1 MB less), ``missing``, or ``cut`` (right, but the file ends half-way through it).
    Plain ``w`` only; ``gz`` writes every record as its own gzip member.
    """
    filler = bytes(1 << 16) if kind == "zeros" else b"<p>" + b"fuzz filler text " * 60 + b"</p>\n"
    http = b""
    if kind in ("html", "video"):
        ctype = b"text/html" if kind == "html" else b"video/mp4"
        http = b"HTTP/1.1 200 OK\r\nContent-Type: " + ctype + b"\r\n\r\n"
    length = len(http) + size
    declared = {"right": b"%d" % length, "short": b"%d" % (length - 1_000_000), "missing": None,
                "cut": b"%d" % length}[content_length]
    head = (b"WARC/1.0\r\nWARC-Type: " + (b"response" if http else b"resource")
            + b"\r\nWARC-Record-ID: <urn:uuid:fuzz-big-record>\r\nWARC-Target-URI: http://big.example/"
            + b"\r\nWARC-Date: 2024-01-01T00:00:00Z\r\n"
            + (b"" if declared is None else b"Content-Length: " + declared + b"\r\n") + b"\r\n")
    cut = content_length == "cut"
    with open(path, "wb") as out:
        def put(raw: bytes) -> None:
            out.write(gzip.compress(raw, 1, mtime=0) if gz else raw)
        for rec in w.records[:at]:
            put(w.data[rec.offset:rec.end])
        sink = zlib.compressobj(1, zlib.DEFLATED, 31) if gz else None
        written = 0
        for piece in [head, http] + [filler] * (size // len(filler)) + [filler[:size % len(filler)]]:
            if cut and written > size // 2:
                break
            out.write(sink.compress(piece) if sink else piece)
            written += len(piece)
        if not cut:
            out.write(sink.compress(b"\r\n\r\n") + sink.flush() if sink else b"\r\n\r\n")
            for rec in w.records[at:]:
                put(w.data[rec.offset:rec.end])
        elif sink:
            out.write(sink.flush(zlib.Z_SYNC_FLUSH))  # the member is cut: no end, no checksum


# ---- the worker: reads in a subprocess, with a wall-clock bound and its peak RSS growth ---------------


@dataclass(frozen=True)
class Row:
    """A document row, its html/text by length and digest."""

    id: str
    url: str | None
    warc_offset: int
    fetch_time: str | None
    content_type: str | None
    charset: str | None
    removed_by: str | None
    reason: str | None
    score: float | None
    threshold: float | None
    html: tuple[int, str] | None
    text: tuple[int, str] | None

    def moved(self, delta: int) -> Row:
        return replace(self, warc_offset=self.warc_offset + delta)


@dataclass(frozen=True)
class Result:
    rows: tuple[Row, ...]
    errors: tuple[tuple[int | None, str | None, str, int | None], ...]
    counts: dict[str, Any]
    rss_growth: int  # bytes the process's peak RSS rose by during the read
    seconds: float
    exception: str | None


def _digest(value: bytes | str | None) -> tuple[int, str] | None:
    if value is None:
        return None
    raw = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value
    return len(value), hashlib.sha1(raw).hexdigest()


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def _read(path: str, engine: str, max_record_bytes: int, batch_size: int) -> Result:
    import gc
    import traceback

    from curate.io.warc import ReadCounts, WarcReader, WarcReadParams

    reader = WarcReader(WarcReadParams(engine=engine, max_record_bytes=max_record_bytes))
    counts, errors, rows = ReadCounts(), [], []
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak RSS (VmHWM) to the current RSS
        base = _status("VmRSS")
    except OSError:
        base = -1
    started = time.perf_counter()
    exception = None
    try:
        with open(path, "rb") as stream:
            for table in reader.read(stream, "fuzz.warc", batch_size, lambda *e: errors.append(tuple(e)), counts):
                for r in table.to_pylist():
                    rows.append(Row(r["id"], r["url"], r["warc_offset"], r["fetch_time"], r["content_type"],
                                    r["charset"], r["removed_by"], r["reason"], r["score"], r["threshold"],
                                    _digest(r["html"]), _digest(r["text"])))
    except BaseException:  # noqa: BLE001 - anything out of the stage is what the fuzz test looks for
        exception = traceback.format_exc()
    seconds = time.perf_counter() - started
    growth = _status("VmHWM") - base if base >= 0 else 0
    errors = [e + (None,) * (4 - len(e)) for e in errors]
    plain = {k: dict(v) if isinstance(v, dict) else v for k, v in vars(counts).items()}
    return Result(tuple(rows), tuple(errors), plain, growth, seconds, exception)


def _warm_up() -> None:
    """One small read per engine and kind of file, so that what the first read imports or caches (~50 MiB:
    pyarrow compute, FastWARC) is not counted against the first measured read."""
    from curate.io.warc import ReadCounts, WarcReader, WarcReadParams

    block = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n<html><p>warm</p></html>"
    record = (b"WARC/1.0\r\nWARC-Type: response\r\nWARC-Target-URI: http://warm.example/\r\n"
              b"Content-Length: %d\r\n\r\n" % len(block)) + block + b"\r\n\r\n"
    for data in (record * 2, gzip.compress(record) * 2):
        for engine in ("fastwarc", "framer"):
            reader = WarcReader(WarcReadParams(engine=engine))
            list(reader.read(io.BytesIO(data), "warm.warc", 5, lambda *e: None, ReadCounts()))


def serve() -> None:
    """Answer pickled ``(path, engine, max_record_bytes, batch_size)`` requests on stdin until it closes."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing else may write to the answer pipe
    _warm_up()
    while header := stdin.read(8):
        request = pickle.loads(stdin.read(int.from_bytes(header, "big")))
        answer = pickle.dumps(_read(*request))
        stdout.write(len(answer).to_bytes(8, "big") + answer)
        stdout.flush()


class Hang(Exception):
    pass


class Crash(Exception):
    pass


class Worker:
    """A long-lived reader process; a read over the wall-clock bound kills it (and the next read starts another)."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None

    def _start(self) -> subprocess.Popen:
        if self._proc is None or self._proc.poll() is not None:
            self._proc = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          env={**os.environ, "PYTHONFAULTHANDLER": "1"})
        return self._proc

    def read(self, path: Path, engine: str, max_record_bytes: int, batch_size: int, timeout: float) -> Result:
        import selectors

        proc = self._start()
        request = pickle.dumps((str(path), engine, max_record_bytes, batch_size))
        proc.stdin.write(len(request).to_bytes(8, "big") + request)
        proc.stdin.flush()
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                self.close()
                raise Hang(f"{engine} read of {path} ran past {timeout} s")
        header = proc.stdout.read(8)
        if len(header) < 8:
            code = proc.wait()
            self._proc = None
            raise Crash(f"{engine} read of {path} killed the reader process (exit {code})")
        return pickle.loads(proc.stdout.read(int.from_bytes(header, "big")))

    def close(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None


if __name__ == "__main__":
    import warc_mutations  # this file again, under its own name, so that results unpickle in the test

    warc_mutations.serve()
