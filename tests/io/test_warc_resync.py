"""WARC reader on damaged files: it resynchronises after a corrupt record and never reads fewer documents
than warcio does from the same bytes.

Real WARCs from ../shared/data/warc are mutated in memory: a wrong Content-Length, an unknown version line,
garbage spliced between records, a corrupt gzip member, truncation and random byte flips. Each test says
which record is damaged and checks that every other document comes out exactly as from the healthy file.
"""

from __future__ import annotations

import gzip
import io
import random
import re
import struct
import tracemalloc
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest
from warcio.archiveiterator import ArchiveIterator
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from conftest import SHARED_DATA
from helpers import warcio_documents
from curate.io.warc import ReadCounts, WarcReader, WarcReadParams

WARC_DIR = SHARED_DATA / "warc"
#: Per-record gzip (as Common Crawl writes), plain, and one more per-record gzip file of a different crawler.
FILES = ("dolma-wget-sample-0000.warc.gz", "aut-issue-493-webrecorder-2020.warc",
         "CC-MAIN-20200808165417-20200808195417-00395.excerpt.warc.gz")
ALL_FILES = sorted(p.name for p in WARC_DIR.glob("*.warc*"))

pytestmark = pytest.mark.skipif(not WARC_DIR.is_dir(), reason=f"shared test data not found at {WARC_DIR}")


@dataclass
class Read:
    counts: ReadCounts
    errors: list[tuple]
    rows: list[dict]

    @property
    def by_id(self) -> dict[str, dict]:
        return {r["id"]: r for r in self.rows}

    def same_as(self, other: Read) -> bool:
        """Same documents (id, html, text, reason) and the same error rows."""
        key = lambda r: (r["id"], r["url"], r["html"], r["text"], r["reason"], r["warc_offset"])  # noqa: E731
        return [key(r) for r in self.rows] == [key(r) for r in other.rows] and self.errors == other.errors


def read(data: bytes, engine: str = "fastwarc") -> Read:
    reader = WarcReader(WarcReadParams(engine=engine))
    counts, errors = ReadCounts(), []
    rows = [r for t in reader.read(io.BytesIO(data), "mem.warc", 5, lambda *e: errors.append(e), counts)
            for r in t.to_pylist()]
    return Read(counts, errors, rows)


def read_both(data: bytes) -> Read:
    """Read with both engines, which must agree exactly; return one."""
    fast, slow = read(data, "fastwarc"), read(data, "warcio")
    assert fast.same_as(slow)
    assert vars(fast.counts) == vars(slow.counts)
    return fast


@dataclass
class Rec:
    offset: int
    length: int
    record_id: str


def records(data: bytes) -> list[Rec]:
    """Where each record of a healthy file lies, found by warcio (member extents for per-record gzip)."""
    out = []
    it = ArchiveIterator(io.BytesIO(data))
    for rec in it:
        rec.content_stream().read()
        rid = rec.rec_headers.get_header("WARC-Record-ID").strip("<>")  # as the reader normalises it
        out.append(Rec(it.get_record_offset(), 0, rid))
    for i, rec in enumerate(out):
        rec.length = (out[i + 1].offset if i + 1 < len(out) else len(data)) - rec.offset
    return out


def load(name: str) -> tuple[bytes, list[Rec], Read]:
    data = (WARC_DIR / name).read_bytes()
    return data, records(data), read(data)


def victim(recs: list[Rec], healthy: Read) -> int:
    """Index of a document record in the middle of the file with another document after it."""
    docs = [i for i, r in enumerate(recs) if r.record_id in healthy.by_id]
    return docs[len(docs) // 2]


def rewrite(data: bytes, rec: Rec, change) -> bytes:
    """``data`` with one record's bytes replaced by ``change(record bytes)``, re-gzipped if the file is."""
    raw = data[rec.offset:rec.offset + rec.length]
    gz = raw[:2] == b"\x1f\x8b"
    new = change(gzip.decompress(raw) if gz else raw)
    return data[:rec.offset] + (gzip.compress(new) if gz else new) + data[rec.offset + rec.length:]


def set_content_length(value: bytes):
    return lambda rec: re.sub(rb"(?i)(\r\nContent-Length:)[^\r\n]*", rb"\1 " + value, rec, count=1)


def content_length(data: bytes, rec: Rec) -> int:
    raw = data[rec.offset:rec.offset + rec.length]
    raw = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    return int(re.search(rb"(?i)\r\nContent-Length:\s*(\d+)", raw).group(1))


def assert_rest_intact(healthy: Read, damaged: Read, lost: set[str] = frozenset()) -> None:
    """Every document of the healthy file except ``lost`` comes out unchanged and kept."""
    got = damaged.by_id
    for rid, row in healthy.by_id.items():
        if rid in lost:
            continue
        assert rid in got, f"document {rid} was lost"
        assert (got[rid]["html"], got[rid]["text"], got[rid]["reason"]) == (row["html"], row["text"], row["reason"])


def assert_conserved(recs: list[Rec], result: Read) -> None:
    """No record vanishes: each record of the healthy file is counted by the damaged read or lies in an
    error span (for damage that moves no offsets)."""
    inside = sum(any(start <= r.offset < end for start, _, _, end in result.errors) for r in recs)
    assert sum(result.counts.records.values()) + inside >= len(recs)


def assert_well_formed(result: Read, data: bytes) -> None:
    """Error rows carry [start, end) spans inside the file; warcio never reads more documents."""
    assert result.counts.errors == len(result.errors)
    for offset, record_id, message, end in result.errors:
        assert 0 <= offset <= end <= len(data), message
    assert result.counts.documents == len(result.rows) >= warcio_documents(data)
    responses = result.counts.records["response"] + result.counts.records["conversion"]
    assert result.counts.documents + sum(result.counts.skipped.values()) == responses


# ---- one bad record, then healthy ones --------------------------------------------------------------


@pytest.mark.parametrize("name", FILES)
@pytest.mark.parametrize("change", ["short", "long", "negative", "missing", "huge"])
def test_wrong_content_length_is_reframed_where_the_next_record_begins(name: str, change: str) -> None:
    data, recs, healthy = load(name)
    k = victim(recs, healthy)
    true = content_length(data, recs[k])
    value = {"short": b"%d" % (true - 100), "long": b"%d" % (true + 100), "negative": b"-5",
             "missing": b"", "huge": b"99999999999"}[change]
    bad = rewrite(data, recs[k], set_content_length(value))
    result = read_both(bad)
    assert_well_formed(result, bad)
    assert result.errors == []  # nothing was skipped: the record ends where the next one begins
    assert result.counts.misframed == 1
    assert_rest_intact(healthy, result)  # the bad record too: its block is recovered exactly
    assert len(result.rows) == len(healthy.rows)


@pytest.mark.parametrize("name", [f for f in FILES if f.endswith(".gz")])
def test_content_length_that_swallows_the_next_record_exactly(name: str) -> None:
    """FastWARC reads such a record without complaint (the next one then starts at a fresh gzip member),
    losing the swallowed record; curate stops the block at the member that begins with a WARC line."""
    data, recs, healthy = load(name)
    k = victim(recs, healthy)
    swallowed = gzip.decompress(data[recs[k + 1].offset:recs[k + 1].offset + recs[k + 1].length])
    # Its block runs on over its trailer and the whole next record, whose trailer then ends it.
    bad = rewrite(data, recs[k], set_content_length(b"%d" % (content_length(data, recs[k]) + len(swallowed))))
    result = read_both(bad)
    assert result.errors == [] and result.counts.misframed == 1
    assert_rest_intact(healthy, result)
    assert result.counts.records == healthy.counts.records


def test_fastwarc_frames_per_record_gzip_and_goes_on_after_damage(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default engine stays fast: FastWARC reads every record of a healthy file but the last, which
    curate's framer reads to finish the file; after damage the framer hands back to FastWARC."""
    import curate.io.warc as warc

    data, recs, healthy = load("dolma-wget-sample-0000.warc.gz")
    rec = recs[victim(recs, healthy)]
    mid = rec.offset + rec.length // 2
    bad = data[:mid] + bytes(b ^ 0x55 for b in data[mid:mid + 64]) + data[mid + 64:]
    damaged = read(bad, "warcio")
    starts = []
    frame = warc._frame
    monkeypatch.setattr(warc, "_frame", lambda d, keep, **kw: starts.append(d.raw.base) or frame(d, keep, **kw))
    assert read(data).same_as(healthy)
    assert starts == [recs[-1].offset]
    starts.clear()
    assert read(bad).same_as(damaged)
    assert len(starts) <= 3 and starts[0] < rec.offset and starts[-1] == recs[-1].offset


@pytest.mark.parametrize("name", FILES)
def test_unknown_warc_version_is_read_leniently(name: str) -> None:
    data, recs, healthy = load(name)
    k = victim(recs, healthy)
    bad = rewrite(data, recs[k], lambda rec: re.sub(rb"^WARC/[\d.]+", b"WARC/9.9", rec))
    result = read_both(bad)
    assert_well_formed(result, bad)
    assert result.counts.unknown_versions == 1 and result.errors == []
    assert_rest_intact(healthy, result)
    assert warcio_documents(bad) < len(result.rows)  # warcio stops there (ArchiveLoadFailed)


@pytest.mark.parametrize("name", FILES)
@pytest.mark.parametrize("garbage", [b"garbage!" * 512, bytes(range(256)) * 16, b"\n" + b"x" * 4000 + b"\r\n"])
def test_garbage_between_records_is_one_error_with_its_exact_span(name: str, garbage: bytes) -> None:
    data, recs, healthy = load(name)
    k = victim(recs, healthy)
    at = recs[k].offset
    bad = data[:at] + garbage + data[at:]
    result = read_both(bad)
    assert_well_formed(result, bad)
    assert len(result.errors) == 1
    start, record_id, message, end = result.errors[0]
    skipped_newline = garbage.startswith(b"\n") and not name.endswith(".gz")  # a newline between records is fine
    assert (start, end) == (at + skipped_newline, at + len(garbage)), message
    assert "corrupt WARC stream" in message
    assert_rest_intact(healthy, result)
    assert result.by_id[recs[k].record_id]["warc_offset"] == at + len(garbage)


def test_uncompressed_file_with_garbage_spliced_mid_record() -> None:
    """Seen in production: 4 KB of garbage inside a record of a plain WARC cost all later records."""
    data, recs, healthy = load("aut-issue-493-webrecorder-2020.warc")
    at = recs[2].offset + recs[2].length // 2
    bad = data[:at] + random.Random(493).randbytes(4096) + data[at:]
    result = read_both(bad)
    assert_well_formed(result, bad)
    damaged = {r.record_id for r in recs if r.offset <= at < r.offset + r.length}
    assert_rest_intact(healthy, result, lost=damaged)
    assert len(result.rows) >= len(healthy.rows) - 1


def test_corrupt_gzip_member_resumes_at_the_next_member() -> None:
    data, recs, healthy = load("dolma-wget-sample-0000.warc.gz")
    k = victim(recs, healthy)
    rec = recs[k]
    mid = rec.offset + rec.length // 2
    bad = data[:mid] + bytes(b ^ 0x55 for b in data[mid:mid + 64]) + data[mid + 64:]
    result = read_both(bad)
    assert_well_formed(result, bad)
    assert len(result.errors) == 1
    start, _, message, end = result.errors[0]
    assert (start, end) == (rec.offset, rec.offset + rec.length) and "corrupt gzip member" in message
    assert_rest_intact(healthy, result, lost={rec.record_id})
    assert_conserved(recs, result)
    # What decodes before the damage is read, as warcio reads it: the page is a document, but not kept.
    assert result.by_id[rec.record_id]["reason"] == "corrupt" and result.counts.corrupt == 1
    assert len(result.rows) == len(healthy.rows) and warcio_documents(bad) <= len(result.rows)


def test_gzip_member_with_a_bad_checksum_is_counted_not_kept() -> None:
    data, recs, healthy = load("dolma-wget-sample-0000.warc.gz")
    rec = recs[victim(recs, healthy)]
    bad = bytearray(data)
    bad[rec.offset + rec.length - 6] ^= 1  # the member's CRC32
    result = read_both(bytes(bad))
    assert [(e[0], e[3]) for e in result.errors] == [(rec.offset, rec.offset + rec.length)]
    assert "incorrect data check" in result.errors[0][2]
    assert_rest_intact(healthy, result, lost={rec.record_id})
    assert result.by_id[rec.record_id]["reason"] == "corrupt" and result.counts.corrupt == 1


@pytest.mark.parametrize("name", FILES)
def test_truncated_file_keeps_the_partial_record_as_a_removed_document(name: str) -> None:
    data, recs, healthy = load(name)
    rec = recs[victim(recs, healthy)]
    bad = data[:rec.offset + rec.length - 200]  # inside the page, past its HTTP head
    result = read_both(bad)
    assert_well_formed(result, bad)  # warcio counts the partial page as a document, so must we
    assert result.errors == [] and result.counts.truncated == 1
    row = result.by_id[rec.record_id]
    assert row["reason"] == "truncated" and row["removed_by"] == "warc_read" and row["score"] < row["threshold"]
    before = {r.record_id for r in recs if r.offset < rec.offset}
    assert {r["id"] for r in result.rows} == {rid for rid in healthy.by_id if rid in before} | {rec.record_id}


def test_header_cut_off_by_the_end_of_the_file_is_a_truncated_record() -> None:
    """warcio reads the header lines that are there (found by fuzzing: a WET file cut inside a header)."""
    data, recs, healthy = load("CC-MAIN-20240517233122-20240518023122-00000.whirlwind.warc.wet.gz")
    rec = recs[1]  # the conversion record; its member is cut 343 bytes in, inside its WARC header
    bad = data[:rec.offset + 343]
    assert b"\r\n\r\n" not in zlib.decompressobj(31).decompress(bad[rec.offset:])
    result = read_both(bad)
    assert_well_formed(result, bad)
    assert [(r["id"], r["reason"], r["text"]) for r in result.rows] == [(rec.record_id, "truncated", "")]
    assert result.errors == [] and warcio_documents(bad) == 1


def test_whole_file_gzip_resynchronises_at_the_next_version_line() -> None:
    """One gzip member holding every record: resume inside it, at the next ``WARC/`` line."""
    data, recs, healthy = load("aut-issue-493-webrecorder-2020.warc")
    k = victim(recs, healthy)
    at = recs[k].offset + 3  # breaks the version line: "WAR" + garbage + "C/1.0"
    plain = data[:at] + b"\x00garbage\x00" * 50 + data[at:]
    result = read_both(gzip.compress(plain))
    assert len(result.errors) == 1 and "decoded bytes" in result.errors[0][2]
    assert_rest_intact(healthy, result, lost={recs[k].record_id})
    assert result.errors[0][0] == result.errors[0][3] == 0  # one member: compressed offsets cannot say more


@pytest.mark.parametrize("name", ALL_FILES)
@pytest.mark.parametrize("seed", range(4))
def test_random_byte_flips(name: str, seed: int) -> None:
    """Each flipped byte damages at most one record; everything else is read, whatever warcio makes of it."""
    data, recs, healthy = load(name)
    rng = random.Random(seed)
    bad = bytearray(data)
    hit = set()
    for pos in rng.sample(range(len(data)), 5):
        bad[pos] ^= 1 << rng.randrange(8)
        hit |= {r.record_id for r in recs if r.offset <= pos < r.offset + r.length}
    result = read_both(bytes(bad))
    assert_well_formed(result, bytes(bad))
    assert_rest_intact(healthy, result, lost=hit)
    assert_conserved(recs, result)
    assert all(start < end for start, _, _, end in result.errors)  # no file here is one big gzip member


@pytest.mark.parametrize("engine", ["fastwarc", "warcio"])
def test_warcio_engine_survives_what_makes_warcio_raise(engine: str) -> None:
    data, recs, healthy = load("dolma-wget-sample-0000.warc.gz")
    bad = rewrite(data, recs[victim(recs, healthy)], lambda rec: rec.replace(b"WARC/1.0", b"WARC/9.9", 1))
    bad = bad[:40_000] + b"garbage" * 100 + bad[40_000:]
    result = read(bad, engine)
    assert len(result.rows) >= len(healthy.rows) - 1 and result.counts.unknown_versions == 1


# ---- memory and identity ----------------------------------------------------------------------------


def _response(writer: WARCWriter, uri: str, body: bytes, headers: list[tuple[str, str]]) -> None:
    http = StatusAndHeaders("200 OK", headers, protocol="HTTP/1.1")
    writer.write_record(writer.create_warc_record(uri, "response", payload=io.BytesIO(body), http_headers=http,
                                                  length=len(body)))


def _gzip_bomb(mib: int) -> bytes:
    """A valid gzip stream that inflates to ``mib`` MiB of zeros, built from one repeated deflate block."""
    zeros = bytes(1 << 20)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    first = deflate.compress(zeros) + deflate.flush(zlib.Z_FULL_FLUSH)
    block = deflate.compress(zeros) + deflate.flush(zlib.Z_FULL_FLUSH)  # independent of what came before
    last = deflate.compress(zeros) + deflate.flush()
    crc = 0
    for _ in range(mib):
        crc = zlib.crc32(zeros, crc)
    trailer = struct.pack("<II", crc, (mib << 20) & 0xFFFFFFFF)
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + first + block * (mib - 2) + last + trailer


def _peak_while(read_file) -> tuple[object, int]:
    """What ``read_file()`` returns and the peak of Python memory it took, after one warm-up read, so that
    modules imported on first use are not counted."""
    buf = io.BytesIO()
    _response(WARCWriter(buf, gzip=True), "http://warm.example/", b"<html>up</html>", [("Content-Type", "text/html")])
    read(buf.getvalue())
    tracemalloc.start()
    try:
        result = read_file()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_gzip_bomb_is_too_large_not_a_memory_spike(tmp_path: Path) -> None:
    bomb = _gzip_bomb(1024)  # 1 GiB of zeros in ~1 MB
    buf = io.BytesIO()
    writer = WARCWriter(buf, gzip=True)
    _response(writer, "http://bomb.example/", bomb, [("Content-Type", "text/html"), ("Content-Encoding", "gzip")])
    _response(writer, "http://ok.example/", b"<html><p>fine</p></html>", [("Content-Type", "text/html")])
    path = tmp_path / "bomb.warc.gz"
    path.write_bytes(buf.getvalue())
    result, peak = _peak_while(lambda: read(path.read_bytes()))
    assert peak < 32 << 20, f"peak {peak >> 20} MiB while reading a 1 GiB bomb"  # the 10 MB page cap + buffers
    bomb_row, ok_row = result.rows
    assert bomb_row["reason"] == "too_large" and bomb_row["html"] is None and bomb_row["score"] > 10_000_000
    assert ok_row["html"] == b"<html><p>fine</p></html>" and ok_row["removed_by"] is None


@pytest.mark.parametrize("compress", [True, False])
def test_bodies_of_records_that_are_not_documents_are_not_held(tmp_path: Path, compress: bool) -> None:
    """A 64 MiB video, a 64 MiB resource and a 64 MiB too-large page pass through in bounded memory."""
    big = bytes(64 << 20)
    buf = io.BytesIO()
    writer = WARCWriter(buf, gzip=compress)
    _response(writer, "http://v.example/movie.mp4", big, [("Content-Type", "video/mp4")])
    writer.write_record(writer.create_warc_record("http://v.example/r", "resource", payload=io.BytesIO(big),
                                                  length=len(big)))
    _response(writer, "http://v.example/huge.html", big, [("Content-Type", "text/html")])
    _response(writer, "http://v.example/", b"<html><p>small</p></html>", [("Content-Type", "text/html")])
    path = tmp_path / "big.warc"
    path.write_bytes(buf.getvalue())
    del buf, big

    def read_file() -> tuple[ReadCounts, list[dict]]:
        counts = ReadCounts()
        with open(path, "rb") as f:
            rows = [r for t in WarcReader().read(f, str(path), 10, lambda *e: None, counts) for r in t.to_pylist()]
        return counts, rows

    (counts, rows), peak = _peak_while(read_file)
    assert counts.skipped == {"non_html": 1} and counts.records["resource"] == 1
    assert [r["reason"] for r in rows] == ["too_large", None]
    assert peak < 16 << 20, f"peak {peak >> 20} MiB for 64 MiB bodies"


def test_fallback_ids_include_path_and_offset() -> None:
    """Two captures of one URL in the same second without WARC-Record-IDs used to collide (``url|date``)."""
    def record(body: bytes) -> bytes:
        block = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n" + body
        return (b"WARC/1.0\r\nWARC-Type: response\r\nWARC-Target-URI: http://same.example/\r\n"
                b"WARC-Date: 2024-01-01T00:00:00Z\r\nContent-Length: %d\r\n\r\n" % len(block)) + block + b"\r\n\r\n"

    one, two = record(b"<html>one</html>"), record(b"<html>two</html>")
    plain = read(one + two)
    assert [r["id"] for r in plain.rows] == ["mem.warc@0", f"mem.warc@{len(one)}"]
    per_record = read(gzip.compress(one) + gzip.compress(two))
    assert [r["id"] for r in per_record.rows] == ["mem.warc@0", f"mem.warc@{len(gzip.compress(one))}"]
    whole = read(gzip.compress(one + two))
    assert [r["id"] for r in whole.rows] == ["mem.warc@0", f"mem.warc@0+{len(one)}"]


def test_span_errors_pass_the_end_offset_as_a_fourth_argument() -> None:
    data, recs, healthy = load("dolma-wget-sample-0000.warc.gz")
    seen = []
    bad = data[:recs[3].offset] + b"junk" * 10 + data[recs[3].offset:]
    list(WarcReader().read(io.BytesIO(bad), "x", 100, lambda offset, rid, message, end=None: seen.append(end),
                           ReadCounts()))
    assert seen == [recs[3].offset + 40]
