"""Texts (and labels) for training and evaluating classifiers, from the formats corpora come in."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import fsspec
import orjson
import pyarrow.parquet as pq

from curate.io.corpus import _decompressed, _lookup
from curate.io.fs import expand_inputs


def _records(uri: str, fields: list[str], storage_options: dict[str, Any]) -> Iterator[dict[str, Any]]:
    fs, path = fsspec.core.url_to_fs(uri, **storage_options)
    name = path.rsplit("/", 1)[-1]
    if name.endswith(".parquet"):
        with fs.open(path, "rb") as f:
            table = pq.read_table(f)
        present = [c for c in fields if c.split(".")[0] in table.column_names]
        for row in table.select(list({c.split(".")[0] for c in present})).to_pylist():
            yield {c: _lookup(row, c) for c in fields}
        return
    with fs.open(path, "rb") as raw:
        stream = _decompressed(raw, path)
        plain = not any(name.endswith(s) for s in (".jsonl", ".jsonl.gz", ".jsonl.zst", ".json", ".json.gz"))
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            if plain:  # a text file: one document per line
                yield {fields[0]: line.decode("utf-8", "replace").rstrip("\n")}
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"{uri}: line {number} is not JSON: {exc}") from exc
            yield {c: _lookup(obj, c) for c in fields}


def read_texts(patterns: list[str], text_field: str = "text", storage_options: dict[str, Any] | None = None
               ) -> Iterator[str]:
    """Every non-empty text of these files (JSONL/Parquet/plain text, globs, folders such as a run's kept/)."""
    for uri in expand_inputs(patterns, storage_options):
        for record in _records(uri, [text_field], storage_options or {}):
            text = record[text_field]
            if isinstance(text, str) and text.strip():
                yield text


def read_labelled(patterns: list[str], text_field: str = "text", label_field: str = "label",
                  storage_options: dict[str, Any] | None = None) -> Iterator[tuple[str, str]]:
    """(label, text) pairs; a record without a label or text is an error, not silently skipped."""
    for uri in expand_inputs(patterns, storage_options):
        for i, record in enumerate(_records(uri, [text_field, label_field], storage_options or {}), start=1):
            text, label = record[text_field], record[label_field]
            if not isinstance(text, str) or label is None:
                raise ValueError(f"{uri}: record {i} has no {text_field!r} text or no {label_field!r}")
            yield str(label), text
