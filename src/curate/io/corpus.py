"""Readers for already-extracted corpora: ``jsonl_read`` and ``parquet_read``.

So any stage (a filter, dedup, a classifier) runs over FineWeb, RedPajama, Dolma or a previous run's
``kept/`` with the same ledger as a crawl: every line or row is a document, or an error row with its line
number and why (a malformed JSON line, a line that is not an object, a ``text`` that is not a string). Columns
are mapped from YAML (``text: content``, ``url: metadata.url``: a dotted path reaches into nested objects or
structs); a document without an id gets ``<path>@<line or row>``, which cannot collide across files.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterator
from typing import IO, Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import Field

from curate.io.warc import ErrorSink, ReadCounts
from curate.registry import register
from curate.schema import DOCUMENT_SCHEMA
from curate.sources import SourceRules, source_keys, url_hosts
from curate.stage import Reader, StageParams

#: Document columns a corpus row can fill, beyond ``text``.
_MAPPABLE = ("id", "url", "fetch_time")


class CorpusReadParams(StageParams):
    text: str = Field("text", description="field holding the document text (dotted path for nested fields)")
    id: str | None = Field("id", description="field holding a stable id; missing or null: <path>@<line or row>")
    url: str | None = Field("url", description="field holding the URL (for host, source and URL filters)")
    fetch_time: str | None = Field(None, description="field holding the crawl date, e.g. 'date' or 'metadata.date'")
    sources: SourceRules = Field(default_factory=SourceRules, description="url -> source key rules")
    columns: list[str] = Field(default_factory=list, description="further fields carried over as columns of the same "
                               "name, e.g. an earlier run's language or quality_hq (for mixing its shards)")

    def fields(self) -> dict[str, str]:
        mapped = {"text": self.text, **{name: getattr(self, name) for name in _MAPPABLE}}
        return {column: path for column, path in mapped.items() if path}


def _decompressed(stream: IO[bytes], path: str) -> IO[bytes]:
    """gzip and zstd by file name; anything else is read as it is."""
    if path.endswith(".gz"):
        return gzip.GzipFile(fileobj=stream)
    if path.endswith((".zst", ".zstd")):
        import zstandard

        # zstandard's reader is a raw stream without readline: buffer it so it iterates by line
        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(stream, read_across_frames=True))
    return stream


def _lookup(obj: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


class _CorpusReader(Reader):
    Params = CorpusReadParams
    params: CorpusReadParams

    def carried_columns(self) -> tuple[str, ...]:
        return tuple(self.params.columns)

    def _table(self, rows: dict[str, Any], path: str, carried: dict[str, Any] | None = None) -> pa.Table:
        """A document batch from mapped columns (lists or Arrow arrays of strings) and carried ones (any
        type; a document column among them, e.g. ``language``, replaces what the reader would set)."""
        columns = {}
        for name, values in rows.items():
            if isinstance(values, pa.ChunkedArray):
                values = values.combine_chunks()
            columns[name] = values.cast(pa.string()) if isinstance(values, pa.Array) else pa.array(values, pa.string())
        n = len(columns["text"])
        columns["warc_path"] = pa.array([path] * n, pa.string())
        table = pa.table({f.name: columns.get(f.name, pa.nulls(n, f.type)) for f in DOCUMENT_SCHEMA},
                         schema=DOCUMENT_SCHEMA)
        urls = table["url"].combine_chunks()
        table = table.set_column(table.schema.get_field_index("host"), "host", url_hosts(urls))
        table = table.set_column(table.schema.get_field_index("source"), "source",
                                 source_keys(urls, self.params.sources))
        for name, values in (carried or {}).items():
            values = values if isinstance(values, pa.Array | pa.ChunkedArray) else pa.array(values)
            if name in DOCUMENT_SCHEMA.names:
                field = DOCUMENT_SCHEMA.field(name)
                table = table.set_column(table.schema.get_field_index(name), field, values.cast(field.type))
            else:
                table = table.append_column(name, values)
        return table


@register
class JsonlReader(_CorpusReader):
    """One JSON object per line, plain, gzip or zstd."""

    name = "jsonl_read"

    def read(self, stream: IO[bytes], path: str, batch_size: int, on_error: ErrorSink, counts: ReadCounts
             ) -> Iterator[pa.Table]:
        fields = {**{c: c for c in self.params.columns}, **self.params.fields()}
        rows: dict[str, list[Any]] = {column: [] for column in fields}
        offsets: list[int] = []
        try:
            for number, line in enumerate(_decompressed(stream, path), start=1):
                counts.bytes += len(line)
                if not line.strip():
                    counts.skipped["blank_line"] += 1
                    continue
                counts.records["jsonl_line"] += 1
                problem, values = self._values(line, fields)
                if problem:
                    counts.errors += 1
                    on_error(number, None, f"line {number}: {problem}")
                    continue
                counts.documents += 1
                if "id" in values:
                    values["id"] = values["id"] or f"{path}@{number}"
                for column in rows:
                    rows[column].append(values.get(column))
                offsets.append(number)
                if len(offsets) >= batch_size:
                    yield self._batch(rows, offsets, path)
                    rows, offsets = {column: [] for column in fields}, []
        except (OSError, EOFError, ValueError) as exc:  # a broken gzip/zstd stream: the rest is unreadable
            counts.errors += 1
            on_error(None, None, f"unreadable after {counts.records['jsonl_line']} lines: {type(exc).__name__}: {exc}")
        if offsets:
            yield self._batch(rows, offsets, path)

    @staticmethod
    def _values(line: bytes, fields: dict[str, str]) -> tuple[str | None, dict[str, Any]]:
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            return f"malformed JSON: {exc}", {}
        if not isinstance(obj, dict):
            return f"expected a JSON object, got {type(obj).__name__}", {}
        values = {column: _lookup(obj, path) for column, path in fields.items()}
        for column, value in values.items():
            if value is not None and not isinstance(value, str) and column in DOCUMENT_SCHEMA.names:
                if column == "text":
                    return f"field {fields['text']!r} is a {type(value).__name__}, not a string", {}
                values[column] = str(value)
        return None, values

    def _batch(self, rows: dict[str, list[Any]], offsets: list[int], path: str) -> pa.Table:
        ids = rows["id"] if "id" in rows else [f"{path}@{n}" for n in offsets]
        carried = {c: rows.pop(c) for c in self.params.columns if c not in self.params.fields()}
        table = self._table({**rows, "id": ids}, path, carried)
        return table.set_column(table.schema.get_field_index("warc_offset"), "warc_offset",
                                pa.array(offsets, pa.int64()))


@register
class ParquetReader(_CorpusReader):
    """Parquet files (a previous run's ``kept/``, FineWeb, …), read by row group; only mapped columns."""

    name = "parquet_read"

    def read(self, stream: IO[bytes], path: str, batch_size: int, on_error: ErrorSink, counts: ReadCounts
             ) -> Iterator[pa.Table]:
        fields = self.params.fields()
        try:
            parquet = pq.ParquetFile(stream)
        except (OSError, ValueError, pa.ArrowException) as exc:
            counts.errors += 1
            on_error(0, None, f"not a readable Parquet file: {exc}")
            return
        carried = [c for c in self.params.columns if c not in fields]
        top = {path_.split(".")[0] for path_ in fields.values()} | set(carried)
        missing = sorted(top - set(parquet.schema_arrow.names))
        if fields["text"].split(".")[0] in missing:
            counts.errors += 1
            on_error(0, None, f"no column {fields['text']!r} (text); columns: {parquet.schema_arrow.names}")
            return
        start = 0
        try:
            for batch in parquet.iter_batches(batch_size=batch_size, columns=sorted(top - set(missing))):
                table = pa.Table.from_batches([batch])
                n = table.num_rows
                counts.records["parquet_row"] += n
                counts.bytes += table.nbytes
                rows = {column: self._column(table, p, n) for column, p in fields.items()}
                text = rows["text"]
                if not (pa.types.is_string(text.type) or pa.types.is_large_string(text.type)):
                    raise TypeError(f"column {fields['text']!r} is {text.type}, not a string")
                index = pa.array(range(start, start + n), pa.int64())
                fallback = pc.binary_join_element_wise(pa.array([path] * n, pa.string()),
                                                       pc.cast(index, pa.string()), "@")
                rows["id"] = pc.coalesce(pc.cast(rows.get("id", pa.nulls(n, pa.string())), pa.string()), fallback)
                counts.documents += n
                out = self._table(rows, path, {c: self._column(table, c, n) for c in carried})
                yield out.set_column(out.schema.get_field_index("warc_offset"), "warc_offset", index)
                start += n
        except (OSError, ValueError, TypeError, pa.ArrowException) as exc:
            counts.errors += 1
            on_error(start, None, f"unreadable from row {start}: {type(exc).__name__}: {exc}")

    @staticmethod
    def _column(table: pa.Table, path: str, n: int) -> pa.ChunkedArray | pa.Array:
        head, *rest = path.split(".")
        if head not in table.column_names:
            return pa.nulls(n, pa.string())
        column = table[head]
        for part in rest:
            column = pc.struct_field(column, part)
        return column
