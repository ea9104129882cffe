"""The n-gram index of evaluation sets that the ``decontaminate`` stage looks documents up in.

Built once (``curate decontam build``) from the benchmarks a user names; one file that every worker maps
into memory read-only, so a machine's workers share one copy in the page cache and none rebuilds it.

N-grams are of the words MinHash dedup uses (:func:`curate.dedup.minhash.split_words`: NFKC, lower case,
punctuation as separators, so "well-known", "Well known" and WikiText's "well @-@ known" are one bigram).
An item of fewer than ``ngram`` words but at least ``min_item_words`` is indexed as one n-gram of all its
words (GPT-3's short examples); shorter items cannot be matched without false hits and are counted as
skipped. Each n-gram is a 64-bit value: the words' xxh3 hashes combined in order, mixed with its length.

File layout (little-endian)::

    b"CURDECON" | uint32 version | uint32 header bytes | header (JSON) | zero padding to 64 bytes
    hashes  uint64[entries]  sorted          one entry per distinct (n-gram, item)
    items   uint32[entries]                  the item holding that n-gram
    table   Arrow IPC stream                 per item: benchmark, item_id, n_grams
    bitmap  uint8[2^k / 8]                   bit (value >> (64 - k)) set for every indexed value

A lookup first tests the bitmap (one random byte per n-gram; with 2^k >= 16 x distinct values, 94 % or
more of a document's n-grams stop there) and binary-searches the sorted values only for the rest.

False positives: a document n-gram is reported present without being in any item only when its 64-bit
value collides with one of the index's distinct values, probability ``distinct / 2^64`` per lookup
(stated in the header and by ``curate decontam inspect``): 10^8 indexed n-grams and 10^12 looked up give
~5 false hits in total, and each is one n-gram, below any ``min_matches`` > 1.
"""

from __future__ import annotations

import io
import json
import os
import struct
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curate.dedup.minhash import split_words
from curate.io.corpus import _decompressed, _lookup

MAGIC = b"CURDECON"
VERSION = 2
_ALIGN = 64
_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)
_LENGTH_MIX = np.uint64(0xD6E8FEB86659FD93)
#: Items hashed per batch while building (bounds the builder's memory, not the index size).
BUILD_BATCH_ITEMS = 20_000


@dataclass(frozen=True)
class Normalisation:
    """How text becomes words (the fields :func:`split_words` reads); stored in the index header."""

    lowercase: bool = True
    punctuation: bool = True
    digits: bool = False


def ngram_values(words: np.ndarray, offsets: np.ndarray, n: int, lengths: Iterable[int] = ()
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every n-gram of every document: (values uint64, document of each, index of its first word, its
    length in words). ``lengths`` adds, for each L < n given, the L-grams (to meet short indexed items).
    """
    values, docs, starts, sizes = [], [], [], []
    counts = np.diff(offsets)
    wanted = {n, *lengths}
    h = words.copy()  # h[i]: the (j+1)-gram starting at word i, extended by one word per step
    for j in range(max(wanted)):
        if j:
            with np.errstate(over="ignore"):
                h = (h[:-1] * _MULTIPLIER) ^ words[j:]
        size = j + 1
        if size not in wanted or not len(h):
            continue
        per_doc = np.maximum(counts - size + 1, 0)
        total = int(per_doc.sum())
        first = np.repeat(offsets[:-1] - (np.cumsum(per_doc) - per_doc), per_doc) + np.arange(total)
        doc = np.repeat(np.arange(len(counts)), per_doc)
        with np.errstate(over="ignore"):
            values.append(_mix64(h[first] ^ (np.uint64(size) * _LENGTH_MIX)))
        docs.append(doc)
        starts.append(first - offsets[doc])
        sizes.append(np.full(total, size, np.int64))
    if not values:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(values), np.concatenate(docs), np.concatenate(starts), np.concatenate(sizes)


def _mix64(h: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: spreads the combined value over all 64 bits."""
    with np.errstate(over="ignore"):
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return h ^ (h >> np.uint64(31))


# ---- reading evaluation sets ---------------------------------------------------------------------------

@dataclass(frozen=True)
class EvalItem:
    benchmark: str
    item_id: str
    text: str


def _benchmark_name(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".zst", ".jsonl", ".json", ".parquet", ".txt"):
        name = name.removesuffix(suffix)
    return name


def _open_text(path: Path) -> io.TextIOBase:
    """The file as text, decompressed by name (gzip, zstd) as the corpus readers do."""
    return io.TextIOWrapper(_decompressed(open(path, "rb"), str(path)), encoding="utf-8")


def _text_of(record: dict, fields: list[str]) -> str:
    """The item's text: its text fields joined (lists, e.g. answer choices, joined too)."""
    parts = []
    for name in fields:
        value = _lookup(record, name)
        if isinstance(value, list):
            parts += [str(v) for v in value if v is not None]
        elif value is not None:
            parts.append(str(value))
    return "\n".join(parts)


def read_eval_items(paths: list[str], text_fields: list[str], id_field: str | None = "id",
                    name: str | None = None) -> Iterator[EvalItem]:
    """Items of JSONL (.gz/.zst), JSON (a list of objects), Parquet and plain-text files (one item per
    non-blank line), or folders of them. The benchmark is ``name`` or each file's name without suffixes;
    an item's id is its ``id_field`` or its line/row number."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"evaluation input not found: {raw}")
    if not files:
        raise FileNotFoundError(f"no evaluation files in {paths}")
    for path in files:
        benchmark = name or _benchmark_name(path)
        suffixes = path.suffixes
        if ".parquet" in suffixes:
            table = pq.read_table(path)
            missing = [f for f in text_fields if f.split(".")[0] not in table.column_names]
            if missing:
                raise ValueError(f"{path}: no column {missing[0]!r} (columns: {table.column_names})")
            for row, record in enumerate(table.to_pylist()):
                yield EvalItem(benchmark, _item_id(record, id_field, row), _text_of(record, text_fields))
        elif ".jsonl" in suffixes or ".json" in suffixes:
            with _open_text(path) as stream:
                if ".jsonl" in suffixes:
                    records = (json.loads(line) for line in stream if line.strip())
                else:
                    records = iter(json.load(stream))
                for row, record in enumerate(records):
                    if not isinstance(record, dict):
                        raise ValueError(f"{path}: item {row} is not a JSON object")  # noqa: TRY004 - bad data
                    yield EvalItem(benchmark, _item_id(record, id_field, row), _text_of(record, text_fields))
        else:  # plain text: a line is an item (its 1-based line number is its id)
            with _open_text(path) as stream:
                for line_no, line in enumerate(stream, start=1):
                    if line.strip():
                        yield EvalItem(benchmark, str(line_no), line)


def _item_id(record: dict, id_field: str | None, row: int) -> str:
    value = _lookup(record, id_field) if id_field else None
    return str(value) if value is not None else str(row)


# ---- building ----------------------------------------------------------------------------------------

@dataclass
class BuildReport:
    path: str
    items: int
    skipped_short: int
    entries: int
    distinct: int
    bytes: int
    seconds: float
    per_benchmark: dict[str, int]
    false_positive_per_lookup: float


def build_index(items: Iterable[EvalItem], output: str | os.PathLike, ngram: int = 13, min_item_words: int = 8,
                normalisation: Normalisation = Normalisation(), sources: list[str] | None = None) -> BuildReport:
    """Write the index of ``items`` to ``output`` (atomically: a temporary file renamed into place)."""
    if not 1 <= min_item_words <= ngram:
        raise ValueError(f"min_item_words must be in 1..ngram ({ngram}), got {min_item_words}")
    started = time.perf_counter()
    hashes, owners, table = [], [], {"benchmark": [], "item_id": [], "n_grams": []}
    per_benchmark: dict[str, int] = {}
    skipped = 0
    lengths: set[int] = {ngram}  # n, and the word counts of the short items indexed whole
    batch: list[EvalItem] = []

    def flush() -> None:
        nonlocal skipped
        if not batch:
            return
        words, offsets = split_words(pa.array([item.text for item in batch], pa.large_string()), normalisation)
        counts = np.diff(offsets)
        short = (counts < ngram) & (counts >= min_item_words)
        values, docs, _, _ = ngram_values(words, offsets, ngram)
        # a short item is one n-gram of all its words
        short_values, short_docs = _whole_items(words, offsets, np.flatnonzero(short))
        values, docs = np.concatenate([values, short_values]), np.concatenate([docs, short_docs])
        base = len(table["benchmark"])
        lengths.update(int(c) for c in np.unique(counts[short]))
        order = np.lexsort((docs, values))
        values, docs = values[order], docs[order]
        distinct = np.ones(len(values), bool)
        distinct[1:] = (values[1:] != values[:-1]) | (docs[1:] != docs[:-1])
        values, docs = values[distinct], docs[distinct]  # distinct (n-gram, item) pairs
        grams = np.bincount(docs, minlength=len(batch))
        for k, item in enumerate(batch):
            if counts[k] < min_item_words:
                skipped += 1
                continue
            table["benchmark"].append(item.benchmark)
            table["item_id"].append(item.item_id)
            table["n_grams"].append(int(grams[k]))
            per_benchmark[item.benchmark] = per_benchmark.get(item.benchmark, 0) + 1
        kept = counts >= min_item_words
        row_of = np.cumsum(kept) - 1 + base  # batch position -> table row
        keep = kept[docs]
        hashes.append(values[keep])
        owners.append(row_of[docs[keep]].astype(np.uint32))
        batch.clear()

    for item in items:
        batch.append(item)
        if len(batch) >= BUILD_BATCH_ITEMS:
            flush()
    flush()
    if not table["benchmark"]:
        raise ValueError(f"no evaluation item has {min_item_words} words or more: nothing to index")
    all_hashes = np.concatenate(hashes) if hashes else np.zeros(0, np.uint64)
    all_owners = np.concatenate(owners) if owners else np.zeros(0, np.uint32)
    order = np.lexsort((all_owners, all_hashes))
    all_hashes, all_owners = all_hashes[order], all_owners[order]
    distinct = int(np.count_nonzero(np.diff(all_hashes)) + (1 if len(all_hashes) else 0))
    bitmap_bits = _bitmap_bits(distinct)
    bitmap = _bitmap(all_hashes, bitmap_bits)
    header = {
        "version": VERSION, "ngram": ngram, "min_item_words": min_item_words,
        "normalisation": normalisation.__dict__, "words": "curate-words-v1 (split_words: xxh3_64 per word)",
        "lengths": sorted(lengths),
        "entries": len(all_hashes), "distinct": distinct, "items": len(table["benchmark"]),
        "bitmap_bits": bitmap_bits,
        "skipped_short_items": skipped, "benchmarks": per_benchmark,
        "false_positive_per_lookup": distinct / 2.0**64, "sources": sources or [],
        "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    sink = pa.BufferOutputStream()
    items_table = pa.table({"benchmark": pa.array(table["benchmark"], pa.string()).dictionary_encode(),
                            "item_id": pa.array(table["item_id"], pa.string()),
                            "n_grams": pa.array(table["n_grams"], pa.int32())})
    with pa.ipc.new_stream(sink, items_table.schema) as writer:
        writer.write_table(items_table)
    blob = sink.getvalue()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_name(f".{output.name}.tmp{os.getpid()}")
    # the header names where each section starts, which depends on the header's own length: iterate to a fixpoint
    sections: dict[str, int] = {}
    while True:
        encoded = json.dumps({**header, "sections": sections}, sort_keys=True).encode()
        hashes_at = _aligned(len(MAGIC) + 8 + len(encoded))
        items_at = _aligned(hashes_at + all_hashes.nbytes)
        table_at = _aligned(items_at + all_owners.nbytes)
        placed = {"hashes": hashes_at, "items": items_at, "table": table_at,
                  "bitmap": _aligned(table_at + blob.size)}
        if placed == sections:
            break
        sections = placed
    with open(temporary, "wb") as f:
        f.write(MAGIC + struct.pack("<II", VERSION, len(encoded)) + encoded)
        for name, data in (("hashes", all_hashes.tobytes()), ("items", all_owners.tobytes()), ("table", blob),
                           ("bitmap", bitmap.tobytes())):
            f.write(b"\0" * (sections[name] - f.tell()))
            f.write(data)
    os.replace(temporary, output)
    return BuildReport(str(output), len(table["benchmark"]), skipped, len(all_hashes), distinct,
                       output.stat().st_size, time.perf_counter() - started, per_benchmark,
                       header["false_positive_per_lookup"])


def _aligned(offset: int) -> int:
    return -(-offset // _ALIGN) * _ALIGN


def _bitmap_bits(distinct: int) -> int:
    """log2 of the bitmap's size: at least 16 bits per distinct value (2^20 .. 2^34 bits)."""
    return min(max(int(np.ceil(np.log2(max(distinct, 1) * 16))), 20), 34)


def _bitmap(values: np.ndarray, bits: int) -> np.ndarray:
    """The bitmap of sorted ``values``: bit ``value >> (64 - bits)`` set, packed 8 bits a byte."""
    out = np.zeros(1 << (bits - 3), np.uint8)
    slots = np.unique(values >> np.uint64(64 - bits))
    if len(slots):
        byte = (slots >> np.uint64(3)).astype(np.int64)
        flags = (np.uint8(1) << (slots & np.uint64(7)).astype(np.uint8)).astype(np.uint8)
        starts = np.flatnonzero(np.concatenate([[True], byte[1:] != byte[:-1]]))
        out[byte[starts]] = np.bitwise_or.reduceat(flags, starts)
    return out


def _whole_items(words: np.ndarray, offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One value per given document: the n-gram of all its words (the same value a document's L-gram has)."""
    values = np.empty(len(rows), np.uint64)
    for k, row in enumerate(rows):
        doc_words = words[offsets[row]:offsets[row + 1]]
        values[k] = ngram_values(doc_words, np.array([0, len(doc_words)]), len(doc_words))[0][0]
    return values, rows.astype(np.int64)


# ---- loading -----------------------------------------------------------------------------------------

class NgramIndex:
    """An index file mapped read-only: ``lookup`` finds which items hold which document n-grams."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = str(path)
        with open(path, "rb") as f:
            start = f.read(len(MAGIC) + 8)
            if len(start) < len(MAGIC) + 8 or start[:len(MAGIC)] != MAGIC:
                raise ValueError(f"{path}: not a curate decontamination index (build one with `curate decontam "
                                 "build`)")
            version, size = struct.unpack("<II", start[len(MAGIC):])
            if version != VERSION:
                raise ValueError(f"{path}: index version {version}; this curate reads version {VERSION}")
            self.header: dict[str, Any] = json.loads(f.read(size))
        sections, entries = self.header["sections"], self.header["entries"]
        self.hashes = np.memmap(path, np.uint64, "r", sections["hashes"], (entries,)) if entries else \
            np.zeros(0, np.uint64)
        self.items = np.memmap(path, np.uint32, "r", sections["items"], (entries,)) if entries else \
            np.zeros(0, np.uint32)
        self._table_offset = sections["table"]
        self.bitmap_bits: int = self.header["bitmap_bits"]
        self.bitmap = np.memmap(path, np.uint8, "r", sections["bitmap"], (1 << (self.bitmap_bits - 3),))
        self._table: pa.Table | None = None
        self.ngram: int = self.header["ngram"]
        self.lengths: list[int] = self.header["lengths"]
        self.normalisation = Normalisation(**self.header["normalisation"])

    @property
    def table(self) -> pa.Table:
        """Per item (row = item number): benchmark, item_id, n_grams."""
        if self._table is None:
            with open(self.path, "rb") as f:
                f.seek(self._table_offset)
                self._table = pa.ipc.open_stream(f.read()).read_all()
        return self._table

    def lookup(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For n-gram ``values``: (position in ``values``, item) of every (value, item) hit."""
        none = np.zeros(0, np.int64), np.zeros(0, np.uint32)
        if not len(values) or not len(self.hashes):
            return none
        slots = values >> np.uint64(64 - self.bitmap_bits)
        maybe = np.flatnonzero(self.bitmap[(slots >> np.uint64(3)).astype(np.int64)]
                               & (np.uint8(1) << (slots & np.uint64(7)).astype(np.uint8)))
        if not len(maybe):
            return none
        order = np.argsort(values[maybe], kind="stable")  # sorted queries: the binary searches stay in cache
        maybe = maybe[order]
        left = np.searchsorted(self.hashes, values[maybe], side="left")
        right = np.searchsorted(self.hashes, values[maybe], side="right")
        hits = right - left
        found = np.flatnonzero(hits)
        if not len(found):
            return none
        where, counts, left = maybe[found], hits[found], left[found]
        positions = np.repeat(where, counts)
        entry = np.repeat(left - (np.cumsum(counts) - counts), counts) + np.arange(int(counts.sum()))
        return positions, np.asarray(self.items[entry])
