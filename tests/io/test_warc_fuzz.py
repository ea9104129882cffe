"""Fuzz test of the ``warc_read`` stage over mutated real WARC bytes (issue #13, item 6).

The real WARCs of ../shared/data/warc (per-record gzip, plain, and gzip files gunzipped into plain ones) are
damaged by the mutations of ``warc_mutations.py``: truncated files, gzip members cut short mid-file, garbage
between records, wrong Content-Lengths, huge header lines, byte flips in raw and in decoded bytes, chunked
transfer encoding (valid and broken), wrong and missing charsets, gzip bombs, duplicated and swapped records,
and (outside hypothesis, in a temp file) a 50 MB record and a gzip member inflating to 256 MiB. Hypothesis
chooses the file, the record and the damage, derandomized, so CI runs the same examples every time.

Every read runs in a worker process, once per engine, and for every mutant:

- safety: the stage never raises, each read ends within ``READ_SECONDS`` (else the worker is killed and the
  example fails as a hang), its peak RSS grows by less than ``rss_limit(max_record_bytes)``, and no html or text
  value is longer than ``max_record_bytes``;
- well-formed output: one error row per ``counts.errors``, each a span ``0 <= start <= end <= len(file)``;
  ``counts.documents`` equals the rows, and every response/conversion record is a document or a skip; row
  offsets strictly increase (no document comes out twice); both engines give the same rows, errors and counts;
- prefix: every document of a record wholly before the first damaged byte comes out identically (id, url,
  offset, html, text, reason ...) and first, and no error row starts before the damaged record;
- suffix: every document of a record wholly after the damage comes out identically at its shifted offset, and
  no error row starts there. In a plain file a damaged header may claim a block (its Content-Length) that runs
  over later records; the reader rightly trusts a Content-Length whose block ends in a ``\\r\\n\\r\\n`` (an
  embedded WARC looks the same), so documents starting inside such a claim may be missing, never altered;
- accounting: a document of a damaged record that is not read (its offset lies in the record) is explained by
  an error row over the record, by damage to its WARC header or HTTP head, or by such a claim; damage to a
  body only (chunking, a byte of a plain body) never loses the document.

Per mutation, exactly: a truncation yields the documents before the cut and at most the cut record, removed as
``truncated`` (kept whole if only its trailer was cut); garbage yields error rows inside the garbage only;
duplicated and swapped records yield exactly the healthy documents in the new order with no errors; a gzip
bomb page is ``too_large`` with no html; valid chunking yields the healthy html; a charset in Content-Type is
the one the regex of the reader reads, or None.

Bugs this found in warc.py, each now a plain test at the end that says what went wrong: a record with no
Content-Length in a plain file swallowed the rest of the file once its block passed ~1 MiB; an HTTP header
value holding \\x85 or \\x0b was cut there; a gzip member inflating past 1 MiB moved the framer back (a
spurious error row, or decoding earlier members again forever: a hang); a file cut before its last gzip
member decodes a byte left no trace; garbage in front that looks like the other kind of file made the whole
file that kind; a Content-Length ending the block among the trailer's newlines split the engines; a record
whose Content-Length runs far past its member came out at offset 0. The one
``assume`` left: a whole plain record in front of a gzip file's members makes it a plain file.

``CURATE_FUZZ_EXAMPLES=N`` runs N examples per hypothesis test instead of the CI budget (the whole file takes
about 35 s on a 2-core machine). A long run: ``CURATE_FUZZ_EXAMPLES=200 pytest tests/io/test_warc_fuzz.py``
(10 hypothesis tests, 2,000 examples, about 5 minutes).
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from curate.io.warc import ReadCounts, WarcReader, WarcReadParams, _sniff_gzip

_spec = importlib.util.spec_from_file_location("warc_mutations", Path(__file__).with_name("warc_mutations.py"))
wm = importlib.util.module_from_spec(_spec)
sys.modules["warc_mutations"] = wm
_spec.loader.exec_module(wm)

Mutant, Result, Row, Warc = wm.Mutant, wm.Result, wm.Row, wm.Warc

EXAMPLES = int(os.environ.get("CURATE_FUZZ_EXAMPLES", "0"))
READ_SECONDS = 20.0  # a healthy file here reads in well under a second; a read past this is a hang
BIG_READ_SECONDS = 90.0  # the 50 MB record and the 256 MiB member
DEFAULT_MAX = 10_000_000  # WarcReadParams.max_record_bytes
SMALL_MAX = 20_000  # makes many pages too_large, and the gzip bombs cheap
GUNZIPPED = ("dolma-wget-sample-0000.warc.gz", "CC-MAIN-20200808165417-20200808195417-00395.excerpt.warc.gz",
             "IAH-urls-wget.warc.gz")


def rss_limit(max_record_bytes: int) -> int:
    """A document holds its block, its decoded body and its html value (each up to ``max_record_bytes``);
    buffers and the 16 MiB replay window of a misframed record come on top."""
    return 40 * (1 << 20) + 3 * max_record_bytes


def fuzz(ci_examples: int) -> settings:
    return settings(max_examples=EXAMPLES or ci_examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large], print_blob=False)


# ---- fixtures: the healthy files, a worker process, their healthy reads -------------------------------


class Fuzz:
    """The healthy files, the worker process, and what each engine reads from the healthy files."""

    def __init__(self, warcs: dict[str, Warc], worker: wm.Worker, scratch: Path) -> None:
        self.warcs = warcs
        self.names = sorted(warcs)
        self.worker = worker
        self.scratch = scratch
        self._healthy: dict[tuple[str, int], Result] = {}

    def healthy(self, w: Warc, max_record_bytes: int) -> Result:
        key = (w.name, max_record_bytes)
        if key not in self._healthy:
            result = self.read(w.data, max_record_bytes)
            assert result.errors == (), f"{w.name} is not a healthy WARC"
            self._healthy[key] = result
        return self._healthy[key]

    def read(self, data: bytes | Path, max_record_bytes: int, batch_size: int = 5,
             seconds: float = READ_SECONDS) -> Result:
        """Both engines' read of ``data``, checked for safety and agreement; the FastWARC one."""
        path = data if isinstance(data, Path) else self.scratch / "mutant.warc"
        if not isinstance(data, Path):
            path.write_bytes(data)
        size = path.stat().st_size
        results = []
        for engine in ("fastwarc", "framer"):
            try:
                result = self.worker.read(path, engine, max_record_bytes, batch_size, seconds)
            except (wm.Hang, wm.Crash) as exc:
                pytest.fail(str(exc))
            check_safe(result, size, max_record_bytes, engine)
            results.append(result)
        fast, framer = results
        assert fast.rows == framer.rows, "the engines read different documents"
        assert fast.errors == framer.errors, "the engines report different errors"
        assert fast.counts == framer.counts, "the engines count differently"
        return fast


@pytest.fixture(scope="module")
def fz(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzz]:
    paths = sorted((shared_data / "warc").glob("*.warc*"))
    assert len(paths) >= 10, f"expected the real WARCs in {shared_data / 'warc'}"
    warcs = {p.name: wm.load_warc(p) for p in paths}
    warcs |= {f"{name} (gunzipped)": wm.load_warc(shared_data / "warc" / name, plain=True) for name in GUNZIPPED}
    worker = wm.Worker()
    try:
        yield Fuzz(warcs, worker, tmp_path_factory.mktemp("warc-fuzz"))
    finally:
        worker.close()


# ---- the invariants ---------------------------------------------------------------------------------


def check_safe(result: Result, size: int, max_record_bytes: int, engine: str) -> None:
    assert result.exception is None, f"{engine}: the stage raised:\n{result.exception}"
    limit = rss_limit(max_record_bytes)
    assert result.rss_growth < limit, f"{engine}: peak RSS grew {result.rss_growth >> 20} MiB (limit {limit >> 20})"
    for row in result.rows:
        assert row.html is None or row.html[0] <= max_record_bytes, f"{engine}: html of {row.html[0]} bytes held"
        assert row.text is None or row.text[0] <= max_record_bytes, f"{engine}: text of {row.text[0]} chars held"
    counts = result.counts
    assert counts["errors"] == len(result.errors)
    for start, _, message, end in result.errors:
        assert message and 0 <= start <= (start if end is None else end) <= size, (start, end, message)
    assert counts["documents"] == len(result.rows)
    responses = counts["records"].get("response", 0) + counts["records"].get("conversion", 0)
    assert counts["documents"] + sum(counts["skipped"].values()) == responses
    offsets = [row.warc_offset for row in result.rows]
    assert offsets == sorted(set(offsets)), f"{engine}: a document came out twice (offsets {offsets})"


def mapped(m: Mutant, x: int) -> int:
    """Where healthy offset ``x`` lies in the mutant (damaged offsets map to the end of the damage)."""
    return x if x <= m.start else x + m.delta if x >= m.stop else m.stop + m.delta


def claim_end(w: Warc, m: Mutant) -> int:
    """Plain files: the furthest healthy offset that a record header in the damaged bytes claims as its block
    (header end + Content-Length + trailer); 0 if none reaches past the damage. Gzip: 0 (a block stops at
    the next record's gzip member)."""
    if w.gzip or m.order is not None:
        return 0
    first = w.records[w.index_at(m.start)].offset if m.start < len(w.data) else m.start
    furthest = 0
    zone = m.data[first:m.stop + m.delta]
    for match in re.finditer(rb"WARC/\d{1,3}\.\d{1,3}\r?\n", zone):
        at = first + match.start()
        crlf = m.data.find(b"\r\n\r\n", at, at + (1 << 16))
        lf = m.data.find(b"\n\n", at, crlf if crlf >= 0 else at + (1 << 16))
        end = lf + 2 if lf >= 0 else crlf + 4 if crlf >= 0 else -1
        cl = re.search(rb"(?i)\ncontent-length:[ \t]*(\d+)[ \t]*\r?\n", m.data[at:end]) if end >= 0 else None
        if cl:
            furthest = max(furthest, end + int(cl.group(1)) + 4 - m.delta)
    return furthest


def check_splice(fz: Fuzz, w: Warc, m: Mutant, max_record_bytes: int, got: Result | None = None) -> Result:
    """The prefix, suffix and accounting invariants of a one-splice mutant; returns its read."""
    healthy = fz.healthy(w, max_record_bytes)
    got = got or fz.read(m.data, max_record_bytes)
    by_offset = {rec.offset: rec for rec in w.records}
    rec_of = {row.warc_offset: by_offset[row.warc_offset] for row in healthy.rows}
    note = f"{w.name}: {m.what}"

    before = [row for row in healthy.rows if rec_of[row.warc_offset].end <= m.start]
    assert got.rows[:len(before)] == tuple(before), f"{note}: a document before the damage changed"
    damaged_from = w.records[w.index_at(m.start)].offset if m.start < len(w.data) else len(w.data)
    assert all(e[0] >= damaged_from for e in got.errors), f"{note}: an error row before the damage: {got.errors}"

    claim = claim_end(w, m)
    safe = min([rec.offset for rec in w.records if rec.offset >= max(m.stop, claim)] or [len(w.data)])
    if m.stop >= len(w.data):
        safe = len(w.data)
    after = [row.moved(m.delta) for row in healthy.rows if row.warc_offset >= m.stop]
    strict = [row for row in after if row.warc_offset >= safe + m.delta]
    tail = [row for row in got.rows if row.warc_offset >= m.stop + m.delta]
    assert tail[len(tail) - len(strict):] == strict, f"{note}: a document after the damage changed or was lost"
    assert set(tail) <= set(after), f"{note}: a document after the damage changed"
    assert all(e[0] < safe + m.delta for e in got.errors if safe < len(w.data)), \
        f"{note}: an error row after the damage: {got.errors}"

    for row in healthy.rows:
        rec = rec_of[row.warc_offset]
        if rec.end <= m.start or rec.offset >= m.stop:
            continue
        if m.start <= rec.offset and rec.end <= m.stop and m.decoded_at is None:
            continue  # cut out of the file
        lo, hi = mapped(m, rec.offset), mapped(m, rec.end)
        if any(lo <= r.warc_offset < max(hi, lo + 1) for r in got.rows):
            continue
        assert not m.body_only, f"{note}: the document of the record whose body was damaged was lost"
        covered = any(start < max(hi, lo + 1) and (end or start) >= lo for start, _, _, end in got.errors)
        head_hit = m.decoded_at is not None and m.decoded_at < rec.header_len + rec.http_len
        raw_head_hit = not w.gzip and m.start < rec.offset + rec.header_len + rec.http_len
        swallowed = lo < claim + m.delta
        cut = m.stop >= len(w.data) and got.counts["truncated"] == 1  # counted, cut inside its header
        assert covered or head_hit or raw_head_hit or swallowed or cut, (
            f"{note}: the document at {rec.offset} was lost without an error row (errors {got.errors})")
    return got


# ---- strategies -------------------------------------------------------------------------------------


def draw_warc(data: st.DataObject, fz: Fuzz, gz: bool | None = None) -> Warc:
    names = [n for n in fz.names if gz is None or fz.warcs[n].gzip == gz]
    return fz.warcs[data.draw(st.sampled_from(names), label="file")]


def draw_max(data: st.DataObject) -> int:
    return data.draw(st.sampled_from([DEFAULT_MAX, SMALL_MAX]), label="max_record_bytes")


def draw_record(data: st.DataObject, w: Warc, label: str = "record") -> int:
    return data.draw(st.integers(0, len(w.records) - 1), label=label)


def draw_page(data: st.DataObject, fz: Fuzz, w: Warc | None = None) -> tuple[Warc, int]:
    """A record of an HTTP-200 page whose HTTP head names an HTML Content-Type."""
    pages = [(name, i) for name in fz.names for i, rec in enumerate(fz.warcs[name].records)
             if (w is None or name == w.name) and rec.type == "response" and rec.http_len
             and re.match(rb"HTTP/\S+ 200[ \r]", page_head(fz.warcs[name], i))
             and re.search(rb"(?i)\r\ncontent-type:\s*(text/html|application/xhtml)", page_head(fz.warcs[name], i))]
    name, i = data.draw(st.sampled_from(pages), label="page")
    return fz.warcs[name], i


def page_head(w: Warc, k: int) -> bytes:
    rec = w.records[k]
    return w.decoded(rec)[rec.header_len:rec.header_len + rec.http_len]


def row_at(result: Result, offset: int) -> Row | None:
    return next((row for row in result.rows if row.warc_offset == offset), None)


GARBAGE = st.one_of(
    st.binary(min_size=1, max_size=4096),
    st.builds(lambda b, n: b * n, st.binary(min_size=1, max_size=16), st.integers(1, 600)),
    st.text(min_size=1, max_size=2000).map(lambda t: t.encode("utf-8")),
    st.sampled_from([b"\r\n", b"\n\n\n", b"WARC/", b"WARC/1.0\r\n", b"WARC/1.0\r\nWARC-Type: response\r\n",
                     b"WARC/1.0\r\nWARC-Type: response\r\nContent-Length: 10\r\n\r\n0123456789\r\n\r\n",
                     b"\x1f\x8b\x08", b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff", b"HTTP/1.1 200 OK\r\n\r\n"]),
    st.binary(min_size=0, max_size=200).map(lambda b: gzip.compress(b, mtime=0)),
    st.binary(min_size=1, max_size=200).map(lambda b: b"\x1f\x8b\x08" + b),
)


# ---- hypothesis tests -------------------------------------------------------------------------------


@fuzz(24)
@given(data=st.data())
def test_truncated_files(fz: Fuzz, data: st.DataObject) -> None:
    w = draw_warc(data, fz)
    max_bytes = draw_max(data)
    k = draw_record(data, w)
    rec = w.records[k]
    keep = data.draw(st.one_of(st.integers(0, rec.length - 1), st.integers(0, min(rec.length - 1, 120)),
                               st.integers(max(0, rec.length - 24), rec.length - 1)), label="keep")
    m = wm.truncate(w, rec.offset + keep)
    got = check_splice(fz, w, m, max_bytes)
    healthy = fz.healthy(w, max_bytes)
    extra = [row for row in got.rows if row.warc_offset >= rec.offset]
    assert len(extra) <= 1 and all(row.warc_offset == rec.offset for row in extra), f"{m.what}: {extra}"
    available = keep
    if w.gzip:
        available = len(zlib_prefix(w.data[rec.offset:rec.offset + keep]))
    whole = available >= rec.header_len + rec.content_length
    was = row_at(healthy, rec.offset)
    if was is not None and available >= rec.header_len + rec.http_len:
        assert extra, f"{m.what}: the cut document vanished"
        assert extra[0] == was if whole else extra[0].reason == "truncated", f"{m.what}: {extra[0]}"
    if keep and not whole:
        assert got.counts["truncated"] == 1 or got.errors, f"{m.what}: the cut record is not reported"


def zlib_prefix(member: bytes) -> bytes:
    """What a cut gzip member decodes to."""
    import zlib

    try:
        return zlib.decompressobj(31).decompress(member)
    except zlib.error:
        return b""


@fuzz(16)
@given(data=st.data())
def test_records_cut_short_mid_file(fz: Fuzz, data: st.DataObject) -> None:
    """A record (a gzip member) loses its tail and the next record follows at once: a truncated gzip member
    inside the file."""
    w = draw_warc(data, fz)
    k = data.draw(st.integers(0, len(w.records) - 2), label="record")
    keep = data.draw(st.integers(1, w.records[k].length - 1), label="keep")
    check_splice(fz, w, wm.cut_record(w, k, keep), draw_max(data))


@fuzz(24)
@given(data=st.data())
def test_garbage_between_records(fz: Fuzz, data: st.DataObject) -> None:
    w = draw_warc(data, fz)
    j = data.draw(st.integers(0, len(w.records)), label="before record")
    at = w.records[j].offset if j < len(w.records) else len(w.data)
    garbage = data.draw(GARBAGE, label="garbage")
    m = wm.insert(w, at, garbage)
    # a whole version line (a plain record) in front of a gzip file's members makes it a plain file
    assume(_sniff_gzip(m.data[:1 << 16]) == w.gzip)
    got = check_splice(fz, w, m, draw_max(data))
    for start, _, message, end in got.errors:
        assert at <= start <= end <= at + len(garbage), f"{m.what}: error row outside the garbage: {message}"
    if not w.gzip and garbage.strip(b"\r\n") == b"":
        assert got.errors == (), f"{m.what}: newlines between records are not an error"


@fuzz(24)
@given(data=st.data())
def test_wrong_content_length(fz: Fuzz, data: st.DataObject) -> None:
    w = draw_warc(data, fz)
    k = draw_record(data, w)
    true = w.records[k].content_length
    value = data.draw(st.one_of(
        st.integers(0, true + 5000).map(lambda n: b"%d" % n),
        st.integers(1, 64).map(lambda d: b"%d" % (true + d)),
        st.integers(1, 64).map(lambda d: b"%d" % max(0, true - d)),
        st.sampled_from([b"", b"-5", b"99999999999999999999", b"0x10", b"+12", b" 12 ", b"1e3", b"\xd9\xa3",
                         b"%d" % (2 ** 63), b"%d" % (1 << 22), b"%d" % ((1 << 22) + 1)]),
    ), label="Content-Length")
    check_splice(fz, w, wm.set_content_length(w, k, value), draw_max(data))


@fuzz(12)
@given(data=st.data())
def test_huge_header_lines(fz: Fuzz, data: st.DataObject) -> None:
    w, k = draw_page(data, fz)
    where = data.draw(st.sampled_from(["warc", "http"]), label="where")
    size = data.draw(st.sampled_from([1000, 60_000, 65_600, 200_000, 1 << 20]), label="size")
    m = wm.huge_header(w, k, where, size)
    got = check_splice(fz, w, m, draw_max(data))
    rec = w.records[k]
    if where == "warc" and size > 1 << 16:  # longer than any WARC header the reader takes: one skipped span
        assert row_at(got, rec.offset) is None and got.errors
        assert got.errors[0][0] == rec.offset, f"{m.what}: {got.errors}"


@fuzz(24)
@given(data=st.data())
def test_byte_flips(fz: Fuzz, data: st.DataObject) -> None:
    """A raw byte (compressed, in a gzip file) or a decoded byte of one record (header, HTTP head or body)."""
    w = draw_warc(data, fz)
    mask = data.draw(st.integers(1, 255), label="mask")
    if data.draw(st.booleans(), label="raw"):
        pos = data.draw(st.integers(0, len(w.data) - 1), label="pos")
        m = wm.flip(w, pos, mask)
        rec = w.records[w.index_at(pos)]
        if not w.gzip:
            body = rec.offset + rec.header_len + rec.http_len <= pos < rec.offset + rec.header_len + rec.content_length
            m = wm.replace(m, body_only=body)
    else:
        k = draw_record(data, w)
        m = wm.flip_decoded(w, k, data.draw(st.integers(0, 1 << 20), label="at"), mask)
    check_splice(fz, w, m, draw_max(data))


@fuzz(16)
@given(data=st.data())
def test_chunked_transfer_encoding(fz: Fuzz, data: st.DataObject) -> None:
    w, k = draw_page(data, fz)
    sizes = data.draw(st.lists(st.integers(1, 5000), max_size=6), label="chunk sizes")
    breakage = data.draw(st.one_of(st.none(), st.sampled_from(sorted(wm.BAD_CHUNKING))), label="breakage")
    max_bytes = draw_max(data)
    m = wm.replace(wm.chunked(w, k, sizes, breakage), body_only=True)
    got = check_splice(fz, w, m, max_bytes)
    was, now = row_at(fz.healthy(w, max_bytes), w.records[k].offset), row_at(got, w.records[k].offset)
    if breakage is None and was is not None and b"chunked" not in page_head(w, k).lower():
        assert (now.html, now.reason) == (was.html, was.reason), f"{m.what}: de-chunked body differs"


CHARSETS = st.one_of(
    st.sampled_from([b"utf-8", b"UTF-8", b"iso-8859-1", b"windows-1252", b"shift_jis", b"gb2312", b"koi8-r",
                     b"no-such-charset", b"", b"\"utf-8\"", b"'latin1'", b"utf-8; foo=bar", b"\xff\xfe",
                     b"utf-8" * 500]),
    st.binary(max_size=40).filter(lambda b: b"\r" not in b and b"\n" not in b),
)


@fuzz(16)
@given(data=st.data())
def test_wrong_and_missing_charsets(fz: Fuzz, data: st.DataObject) -> None:
    w, k = draw_page(data, fz)
    value = data.draw(st.one_of(st.none(), CHARSETS.map(lambda c: b"text/html; charset=" + c),
                                st.just(b"text/html")), label="Content-Type")
    meta = data.draw(st.one_of(st.none(), CHARSETS), label="meta charset")
    max_bytes = draw_max(data)
    m = wm.charset(w, k, value, meta)
    got = check_splice(fz, w, m, max_bytes)
    if value is None:
        return  # the page is sniffed: a document or not, as its first bytes say
    now = row_at(got, w.records[k].offset)
    assert now is not None, f"{m.what}: a text/html page was lost"
    expected = re.search(r"charset\s*=\s*[\"']?([\w.:-]+)", value.decode("iso-8859-1"), re.IGNORECASE)
    assert now.charset == (expected.group(1).lower() if expected else None), f"{m.what}: charset {now.charset!r}"
    was = row_at(fz.healthy(w, max_bytes), w.records[k].offset)
    if meta is None and was is not None and was.reason is None:
        assert now.html == was.html, f"{m.what}: html changed"


@fuzz(12)
@given(data=st.data())
def test_gzip_bombs(fz: Fuzz, data: st.DataObject) -> None:
    w, k = draw_page(data, fz)
    max_bytes = draw_max(data)
    # 1 GiB of zeros is ~1 MB of gzip: its WARC member inflates past the reader's 1 MiB zlib output cap
    size = data.draw(st.sampled_from([max_bytes + 1, max_bytes + (1 << 20), 256 << 20, 1 << 30]),
                     label="inflated size")
    encoding = data.draw(st.sampled_from([b"gzip", b"x-gzip", b"deflate"]), label="encoding")
    m = wm.bomb(w, k, size, encoding)
    got = check_splice(fz, w, m, max_bytes)
    now = row_at(got, w.records[k].offset)
    assert now is not None and now.reason == "too_large" and now.html is None, f"{m.what}: {now}"
    assert now.score > max_bytes


@fuzz(16)
@given(data=st.data())
def test_duplicated_and_swapped_records(fz: Fuzz, data: st.DataObject) -> None:
    w = draw_warc(data, fz)
    max_bytes = draw_max(data)
    if data.draw(st.booleans(), label="duplicate"):
        k = draw_record(data, w)
        j = data.draw(st.sampled_from([k, k + 1, len(w.records), 0]), label="before record")
        m = wm.duplicate(w, k, j)
    else:
        i = draw_record(data, w, "first")
        j = draw_record(data, w, "second")
        if i == j:
            return
        m = wm.swap(w, min(i, j), max(i, j))
    got = fz.read(m.data, max_bytes)
    healthy = {row.warc_offset: row for row in fz.healthy(w, max_bytes).rows}
    expected, at = [], 0
    for index in m.order:
        rec = w.records[index]
        if rec.offset in healthy:
            expected.append(healthy[rec.offset].moved(at - rec.offset))
        at += rec.length
    assert got.errors == (), f"{w.name}: {m.what}: {got.errors}"
    assert list(got.rows) == expected, f"{w.name}: {m.what}: documents differ from the healthy ones reordered"


# ---- a 50 MB record and a 256 MiB gzip member, in temp files ----------------------------------------


@pytest.mark.parametrize("kind, content_length, gz, size", [
    ("html", "right", True, 50_000_000),
    ("html", "right", False, 50_000_000),
    ("html", "short", False, 50_000_000),
    ("html", "cut", True, 50_000_000),
    ("video", "missing", False, 50_000_000),  # no valid Content-Length, a block past ~1 MiB: the next record is found
    ("resource", "right", False, 50_000_000),
    ("zeros", "right", True, 256 << 20),
    ("zeros", "missing", True, 256 << 20),
])
def test_big_records_are_streamed(fz: Fuzz, tmp_path: Path, kind: str, content_length: str, gz: bool,
                                  size: int) -> None:
    """A record far above ``max_record_bytes`` passes in bounded memory: the RSS limit for 1 MB pages is below
    the record's size, so holding it fails the test. The other documents come out as from the healthy file."""
    w = fz.warcs["dolma-wget-sample-0000.warc.gz (gunzipped)"]
    max_bytes = 1_000_000
    assert rss_limit(max_bytes) < size
    path = tmp_path / "big.warc"
    at = len(w.records) // 2
    wm.big_record_file(path, w, at, size, kind, content_length, gz)
    got = fz.read(path, max_bytes, seconds=BIG_READ_SECONDS)
    path.unlink()
    healthy = fz.healthy(w, max_bytes)
    key = lambda row: (row.id, row.url, row.html, row.text, row.reason)  # offsets moved
    big = [row for row in got.rows if row.url == "http://big.example/"]
    rest = [key(row) for row in got.rows if row not in big]
    kept = [key(row) for row in healthy.rows if content_length != "cut" or row.warc_offset < w.records[at].offset]
    assert rest == kept
    assert got.errors == ()
    if kind == "html":
        assert len(big) == 1 and big[0].html is None
        assert big[0].reason == ("truncated" if content_length == "cut" else "too_large")
    else:
        assert big == []


# ---- a bug found by this fuzz test ------------------------------------------------------------------


class Errors(list):
    """An error sink that keeps what it is given."""

    def __call__(self, *error: object) -> None:
        self.append(error)


@pytest.mark.parametrize("keep", [3, 10, 40])
def test_file_cut_early_in_a_gzip_member_is_reported(shared_data: Path, keep: int) -> None:
    """Found by this fuzz test: a file ending in a member's gzip header or first deflate bytes (nothing decoded)
    left no trace; it is an error row now, as the same cut is in a plain file."""
    w = wm.load_warc(shared_data / "warc" / "dolma-wget-sample-0000.warc.gz")
    rec = w.records[3]
    assert zlib_prefix(w.data[rec.offset:rec.offset + keep]) == b""  # not one byte of the record decodes
    for engine in ("fastwarc", "framer"):
        counts, errors = ReadCounts(), Errors()
        reader = WarcReader(WarcReadParams(engine=engine))
        list(reader.read(io.BytesIO(w.data[:rec.offset + keep]), "cut.warc.gz", 100, errors, counts))
        assert counts.truncated == 1 or errors, f"{engine}: the cut record left no trace"


def big_member_warc(size: int) -> bytes:
    """A healthy per-record gzip WARC: a small page, a ``size``-byte PDF response, three small pages."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    buf = io.BytesIO()
    writer = WARCWriter(buf, gzip=True)
    for uri, body, ctype in [("http://a.example/", b"<html>a</html>", "text/html"),
                             ("http://big.example/", b"x" * size, "application/pdf"),
                             ("http://b.example/", b"<html>b</html>", "text/html"),
                             ("http://c.example/", b"<html>c</html>", "text/html")]:
        http = StatusAndHeaders("200 OK", [("Content-Type", ctype)], protocol="HTTP/1.1")
        writer.write_record(writer.create_warc_record(uri, "response", payload=io.BytesIO(body), http_headers=http,
                                                      length=len(body)))
    return buf.getvalue()


@pytest.mark.parametrize("size, engine", [(2_000_000, "framer"), (5_000_000, "fastwarc"), (5_000_000, "framer")])
def test_healthy_gzip_member_inflating_past_1_mib(fz: Fuzz, size: int, engine: str) -> None:
    """Found by this fuzz test: at the end of a member that filled a 1 MiB zlib call, CPython leaves the bytes
    after it in both ``unconsumed_tail`` and ``unused_data``; counting them twice moved the framer back into
    the member (a spurious error row) or before the members in front of it (a hang, next test)."""
    path = fz.scratch / "big-member.warc.gz"
    path.write_bytes(big_member_warc(size))
    got = fz.worker.read(path, engine, DEFAULT_MAX, 5, READ_SECONDS)
    assert [row.url for row in got.rows] == ["http://a.example/", "http://b.example/", "http://c.example/"]
    assert got.errors == (), got.errors


@pytest.mark.parametrize("engine", ["fastwarc", "framer"])
def test_1_mib_warc_header_line_in_a_small_gzip_member_is_one_skipped_record(fz: Fuzz, engine: str) -> None:
    """The 1 MiB line compresses to a 7 KB member, smaller than the 16 KiB feed: the double count moved the
    framer back before the two members in front of it, to read them and it again forever."""
    w = fz.warcs["CC-MAIN-20200808165417-20200808195417-00395.excerpt.warc.gz"]
    path = fz.scratch / "huge-header.warc.gz"
    path.write_bytes(wm.huge_header(w, 8, "warc", 1 << 20).data)
    got = fz.worker.read(path, engine, DEFAULT_MAX, 5, 5.0)
    assert got.exception is None
    healthy = fz.healthy(w, DEFAULT_MAX)
    lost = [row for row in healthy.rows if row.warc_offset == w.records[8].offset]
    assert len(got.rows) == len(healthy.rows) - len(lost) and len(got.errors) == 1, got.errors


@pytest.mark.parametrize("name, garbage", [
    ("CC-MAIN-20200808165417-20200808195417-00395.excerpt.warc.gz", b"WARC/"),
    ("CC-MAIN-20200808165417-20200808195417-00395.excerpt.warc.gz (gunzipped)", b"\x1f\x8b"),  # and back
])
def test_garbage_at_the_start_that_looks_like_the_other_kind_of_file(fz: Fuzz, name: str, garbage: bytes) -> None:
    """Found by this fuzz test: the kind of file was told by its first bytes only, so these 5 (or 2) bytes made a
    per-record gzip file plain (one error row for all of it, no documents), or a plain file gzip."""
    w = fz.warcs[name]
    check_splice(fz, w, wm.insert(w, 0, garbage), DEFAULT_MAX)


def test_http_header_value_with_a_nel_byte(fz: Fuzz) -> None:
    """A header value holding \\x85 (NEL, cp1252's '...') stays one header: HTTP lines end at LF or CRLF only
    (str.splitlines() also cut at \\x0b, \\x0c, \\x1c-\\x1e and \\x85, and a text/html page became non_html)."""
    w = fz.warcs["dolma-wget-sample-0000.warc.gz"]
    k = next(i for i in range(len(w.records)) if re.search(rb"(?i)content-type: text/html", wm._parts(w, i)[1]))
    _, http, body, _ = wm._parts(w, k)
    assert re.search(rb"(?i)content-type: text/html", http)
    http = http[:-2] + b"X-Title: Caf\x85Content-Type: image/png\r\n\r\n"  # after the real Content-Type
    m = wm.change_http(w, k, "a header value with a NEL byte", http, body, body_only=True)
    check_splice(fz, w, m, DEFAULT_MAX)


@pytest.mark.parametrize("name, k, off", [("pywb-iana.org-liveweb-2014.warc.gz", 1, -1),
                                          ("dolma-wget-sample-0000.warc.gz", 3, -3),
                                          ("CC-MAIN-20200808165417-20200808195417-00395.excerpt.warc.gz", 0, -1),
                                          ("CC-MAIN-20200808165417-20200808195417-00395.excerpt.warc.gz", 2, 4),
                                          ("dolma-wget-sample-0000.warc.gz", 3, 4)])
def test_content_length_off_into_the_trailer_engines_agree(fz: Fuzz, name: str, k: int, off: int) -> None:
    """Found by this fuzz test: a Content-Length 1 or 3 bytes short where those bytes are the page's closing
    newlines, or 4 long (swallowing the trailer): FastWARC took the declared block, the framer called it
    misframed and took the true one (html and counts differed). Both take the declared block now."""
    w = fz.warcs[name]
    fz.read(wm.set_content_length(w, k, b"%d" % (w.records[k].content_length + off)).data, DEFAULT_MAX)


@pytest.mark.parametrize("value", [b"99999999999999999999", b"%d" % (1 << 40)])
def test_a_record_whose_content_length_runs_past_the_file_keeps_its_offset(fz: Fuzz, value: bytes) -> None:
    """Found by a long run of this fuzz test: streaming the block of a record whose Content-Length runs far
    past its gzip member released the member it starts in, and its document came out at offset 0 (after
    the one before it: the offsets of a file no longer rose)."""
    w = fz.warcs["dolma-wget-sample-0000.warc.gz"]
    got = check_splice(fz, w, wm.set_content_length(w, 24, value), DEFAULT_MAX)
    assert row_at(got, w.records[24].offset) is not None and got.counts["misframed"] == 1
