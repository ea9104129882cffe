"""A run's output folder as every audit command reads it: committed parts only, lazily.

Parts are listed from the current commits (never by globbing ``kept/``, which may hold parts of an attempt
that never committed) and opened as ``pyarrow.dataset`` datasets, so a query reads only the columns and
row groups it needs, on a local folder or object storage alike.
"""

from __future__ import annotations

import json
from functools import cached_property
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from curate.audit.ledger import load_ledger
from curate.io.fs import Location

KINDS = ("kept", "removed", "errors")


class RunOutput:
    """The commits, stats, reports and shards of one output folder (local path or ``s3://...``)."""

    def __init__(self, out: Location | str) -> None:
        self.out = out if isinstance(out, Location) else Location(out, {})
        self.fs, self.root = self.out.resolve()
        try:
            self.chain, self.run = load_ledger(self.out)
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"{self.out.url}: no run.json (is it the output folder of a run?)") from exc

    @cached_property
    def filesystem(self) -> pafs.FileSystem:
        """The folder's filesystem as pyarrow sees it (fsspec wrapped, so S3 options carry over)."""
        from fsspec.implementations.local import LocalFileSystem

        if isinstance(self.fs, LocalFileSystem):
            return pafs.LocalFileSystem()
        return pafs.PyFileSystem(pafs.FSSpecHandler(self.fs))

    @cached_property
    def stats(self) -> dict[str, Any]:
        with self.fs.open(f"{self.root}/stats/stats.json", "r") as f:
            return json.load(f)

    def stages(self) -> list[str]:
        """Stage names in pipeline order (the reader first)."""
        return list(self.stats["stages"])

    def paths(self, kind: str, stage: str | None = None) -> list[str]:
        """Committed parts of one kind (``kept``: the last step's; ``removed``: by ``stage`` if given)."""
        if kind not in KINDS:
            raise ValueError(f"kind {kind!r}: one of {', '.join(KINDS)}")
        steps = self.chain[-1:] if kind == "kept" else self.chain
        return sorted(f"{self.root}/{p.path}" for step in steps for c in step.values() for p in c.parts
                      if p.kind == kind and (stage is None or p.stage == stage))

    def dataset(self, kind: str, stage: str | None = None) -> ds.Dataset | None:
        """The parts as one lazy dataset, their schemas unified (removed parts of different stages carry
        different signal columns); None when there are none."""
        paths = self.paths(kind, stage)
        if not paths:
            return None
        schemas = [pq.read_schema(p, filesystem=self.filesystem) for p in paths]
        schema = pa.unify_schemas(schemas, promote_options="permissive")
        return ds.dataset(paths, schema=schema, format="parquet", filesystem=self.filesystem)

    def find(self, kind: str, where: ds.Expression, columns: list[str] | None = None, limit: int | None = None,
             stage: str | None = None) -> pa.Table:
        """Rows matching ``where`` with ``columns`` (default all), in two passes: the filter's own columns
        over every part (plus each row's file), then the wanted columns from only the files that hold a
        match, so a lookup by id or reason never decodes the text of the whole corpus."""
        dataset = self.dataset(kind, stage)
        if dataset is None:
            return pa.table({})
        files = dataset.to_table(columns=["__filename"], filter=where)["__filename"]
        return self.read_matching(dataset.schema, files, where, columns, limit)

    def read_matching(self, schema: pa.Schema, files: pa.ChunkedArray | pa.Array, where: ds.Expression,
                      columns: list[str] | None = None, limit: int | None = None) -> pa.Table:
        """The second pass of :meth:`find`: ``files`` are the file of each matching row, in scan order (only
        those of the first ``limit`` matches are opened)."""
        wanted = list(dict.fromkeys((files if limit is None else files[:limit]).to_pylist()))
        empty = schema.empty_table()
        if not wanted:
            return empty if columns is None else empty.select(columns)
        found = ds.dataset(wanted, schema=schema, format="parquet", filesystem=self.filesystem)
        table = found.to_table(columns=columns, filter=where)
        return table if limit is None else table.slice(0, limit)

    def reports(self) -> dict[str, str]:
        """Global stages' audit tables: stage name -> path of ``stats/<stage>_report.parquet``."""
        found = self.fs.glob(f"{self.root}/stats/*_report.parquet")
        return {p.rsplit("/", 1)[-1].removesuffix("_report.parquet"): p for p in sorted(found)}

    @cached_property
    def shards(self) -> dict[str, Any] | None:
        """``shards/manifest.json`` when the run tokenized its corpus."""
        path = f"{self.root}/shards/manifest.json"
        if not self.fs.exists(path):
            return None
        with self.fs.open(path, "r") as f:
            return json.load(f)
