"""Run one input file through a pipeline's per-document stages, with no knowledge of Ray.

Outputs for the file are written under temporary names and renamed into place, then a stats file and
finally a completion marker: a file with a marker is finished and is skipped on resume; anything else is
redone from scratch and overwrites its parts.
"""

from __future__ import annotations

import json
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate.io.fs import Location, atomic_path, file_id, open_input, write_text_atomic
from curate.schema import (DOCUMENT_SCHEMA, ERROR_REASON, ERROR_SCHEMA, TRANSIENT_COLUMNS, conform, mark_failed,
                           mark_removed)
from curate.stage import REMOVALS_SCHEMA, DocumentStage, GlobalStage, Reader


@dataclass
class StageCounter:
    docs_in: int = 0
    removed: int = 0
    errors: int = 0
    seconds: float = 0.0
    reasons: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {"in": self.docs_in, "removed": self.removed, "errors": self.errors,
                "seconds": round(self.seconds, 4), "reasons": dict(sorted(self.reasons.items()))}


class PartWriter:
    """Streams tables of one destination into a Parquet part, created lazily, renamed on close."""

    def __init__(self, fs: fsspec.AbstractFileSystem, path: str) -> None:
        self.fs, self.path, self.tmp = fs, path, f"{path}.tmp"
        self._writer: pq.ParquetWriter | None = None
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        if self._writer is None:
            self.fs.makedirs(self.path.rsplit("/", 1)[0], exist_ok=True)
            self._writer = pq.ParquetWriter(self.tmp, table.schema, filesystem=self.fs, compression="zstd")
        else:
            table = _align(table, self._writer.schema)
        self._writer.write_table(table)
        self.rows += table.num_rows

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self.fs.mv(self.tmp, self.path)
        elif self.fs.exists(self.path):
            self.fs.rm(self.path)  # a stale part from an interrupted earlier attempt


def _align(table: pa.Table, schema: pa.Schema) -> pa.Table:
    extra = set(table.column_names) - set(schema.names)
    if extra:
        raise RuntimeError(f"a stage added columns mid-file: {sorted(extra)} (stages must add typed columns "
                           "on every batch, even an empty one)")
    columns = [table[f.name].cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
               for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


def apply_stage(stage: DocumentStage, batch: pa.Table) -> pa.Table:
    """Run a stage on a batch; if it raises, isolate the failing rows and send only them to errors."""
    try:
        return stage(batch)
    except Exception:  # noqa: BLE001 - retried row by row below
        pass
    out = []
    for i in range(batch.num_rows):
        row = batch.slice(i, 1)
        try:
            out.append(stage(row))
        except Exception as exc:  # noqa: BLE001 - this document is reported in errors/
            message = f"{type(exc).__name__}: {exc} | {traceback.format_exc(limit=-1).strip().splitlines()[-2]}"
            out.append(mark_failed(row, pa.array([True]), stage.name, pa.array([message])))
    return pa.concat_tables(out, promote_options="default") if out else batch


def _apply_all(stages: list[DocumentStage], batch: pa.Table, counters: dict[str, StageCounter]) -> pa.Table:
    """Run a batch through the stages in order, counting each stage's input and time."""
    for stage in stages:
        counters[stage.name].docs_in += pc.sum(pc.is_null(batch["removed_by"])).as_py() or 0
        t0 = time.perf_counter()
        batch = apply_stage(stage, batch)
        counters[stage.name].seconds += time.perf_counter() - t0
    return batch


def run_file(uri: str, reader: Reader, stages: list[DocumentStage], *, batch_size: int, out: Location,
             kept_dir: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Process one input file end to end and return its stats (also written to ``stats/files/``).

    Stages stay set up afterwards (a worker reuses them for its next file); the caller tears them down.
    """
    from curate.io.warc import ReadCounts

    fs, root = out.resolve()
    fid = file_id(uri)
    started = time.time()
    counts = ReadCounts()
    stage_counts = {s.name: StageCounter() for s in (reader, *stages)}
    writers: dict[str, PartWriter] = {}
    error_rows: list[dict[str, Any]] = []

    def writer(rel: str) -> PartWriter:
        if rel not in writers:
            writers[rel] = PartWriter(fs, f"{root}/{rel}/part-{fid}.parquet")
        return writers[rel]

    def on_error(offset: int | None, record_id: str | None, message: str) -> None:
        error_rows.append({"input": uri, "offset": offset, "record_id": record_id, "stage": reader.name,
                           "error": message})

    read_seconds = 0.0
    with open_input(uri, storage_options) as stream:
        batches = reader.read(stream, uri, batch_size, on_error, counts)
        while True:
            t0 = time.perf_counter()
            batch = next(batches, None)
            read_seconds += time.perf_counter() - t0
            if batch is None:
                break
            batch = conform(batch)
            stage_counts[reader.name].docs_in += batch.num_rows
            batch = _apply_all(stages, batch, stage_counts)
            _route(batch, uri, writer, kept_dir, error_rows, stage_counts)

    stage_counts[reader.name].seconds = read_seconds
    if error_rows:
        writer("errors").write(pa.Table.from_pylist(error_rows, schema=ERROR_SCHEMA))
    for w in writers.values():
        w.close()
    kept = writers[kept_dir].rows if kept_dir in writers else 0
    removed = sum(c.removed for c in stage_counts.values())
    errors = len(error_rows)
    documents_in = counts.documents + counts.errors
    stats = {
        "input": uri,
        "file_id": fid,
        "records": dict(sorted(counts.records.items())),
        "skipped": dict(sorted(counts.skipped.items())),
        "documents": counts.documents,
        "read_errors": counts.errors,
        "bytes": counts.bytes,
        "read_seconds": round(read_seconds, 4),
        "stages": {name: c.as_dict() for name, c in stage_counts.items()},
        "kept": kept,
        "removed": removed,
        "errors": errors,
        "seconds": round(time.time() - started, 3),
        "conservation": {"in": documents_in, "out": kept + removed + errors, "ok": documents_in == kept + removed + errors},
    }
    write_text_atomic(fs, f"{root}/stats/files/{fid}.json", json.dumps(stats, indent=1))
    write_text_atomic(fs, f"{root}/work/done/{fid}", uri)
    return stats


def _route(batch: pa.Table, uri: str, writer, kept_dir: str, error_rows: list[dict[str, Any]],
           stage_counts: dict[str, StageCounter]) -> None:
    """Split a processed batch into kept, removed/<stage> and errors."""
    batch = batch.drop_columns([c for c in TRANSIENT_COLUMNS if c != "error"])
    removed_by = batch["removed_by"]
    is_error = pc.fill_null(pc.equal(batch["reason"], ERROR_REASON), False)
    for row in batch.filter(is_error).select(["warc_offset", "id", "removed_by", "error"]).to_pylist():
        error_rows.append({"input": uri, "offset": row["warc_offset"], "record_id": row["id"],
                           "stage": row["removed_by"], "error": row["error"]})
        stage_counts[row["removed_by"]].errors += 1
    batch = batch.drop_columns(["error"])  # now recorded in errors/
    writer(kept_dir).write(batch.filter(pc.is_null(removed_by)))
    removed = batch.filter(pc.and_(pc.is_valid(removed_by), pc.invert(is_error)))
    for stage in pc.unique(removed["removed_by"]).to_pylist():
        part = removed.filter(pc.equal(removed["removed_by"], stage))
        writer(f"removed/{stage}").write(part)
        stage_counts[stage].removed += part.num_rows
        stage_counts[stage].reasons.update(part["reason"].to_pylist())



# ---- global stages: map (partial) -> shuffle by key -> reduce (decide) -> apply ----------------------

def _hash_partition(keys: pa.ChunkedArray | pa.Array, partitions: int) -> pa.Array:
    """Partition of each key: a stable hash (xxh64), computed once per distinct key, not once per row."""
    import numpy as np
    import xxhash

    encoded = pc.dictionary_encode(keys).combine_chunks() if isinstance(keys, pa.ChunkedArray) else \
        pc.dictionary_encode(keys)
    per_value = np.array([xxhash.xxh64_intdigest(str(v)) % partitions for v in encoded.dictionary.to_pylist()],
                         dtype=np.int64)
    return pa.array(per_value[encoded.indices.to_numpy(zero_copy_only=False)])


def run_partial(stage: GlobalStage, paths: list[str], out: Location, step_dir: str, map_id: str,
                partitions: int) -> int:
    """Map one document partition (a file's kept part plus its removed parts) to shuffle files."""
    fs, root = out.resolve()
    tables = []
    for path in paths:
        with fs.open(path, "rb") as f:
            columns = [c for c in stage.columns if c in pq.ParquetFile(f).schema_arrow.names]
            f.seek(0)
            tables.append(pq.read_table(f, columns=columns))
    if not tables:
        return 0
    part = stage.partial(pa.concat_tables([conform_columns(t, stage.columns) for t in tables]))
    buckets = _hash_partition(part["key"], partitions)
    for p in range(partitions):
        piece = part.filter(pc.equal(buckets, p))
        if piece.num_rows:
            path = f"{root}/{step_dir}/shuffle/{p:05d}/map-{map_id}.parquet"
            fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            with atomic_path(fs, path) as tmp:
                pq.write_table(piece, tmp, filesystem=fs)
    return part.num_rows


def conform_columns(table: pa.Table, columns: tuple[str, ...]) -> pa.Table:
    """Give a partition every column a global stage reads (removed parts lack later stages' columns)."""
    for name in columns:
        if name not in table.column_names:
            field_ = DOCUMENT_SCHEMA.field(name) if name in DOCUMENT_SCHEMA.names else pa.field(name, pa.null())
            table = table.append_column(field_, pa.nulls(table.num_rows, field_.type))
    return table


def run_decide(stage: GlobalStage, out: Location, step_dir: str, partition: int) -> tuple[int, int]:
    """Reduce one shuffle partition to removals and report rows; returns (removals, report rows)."""
    fs, root = out.resolve()
    paths = sorted(fs.glob(f"{root}/{step_dir}/shuffle/{partition:05d}/map-*.parquet"))
    if not paths:
        return 0, 0
    group = pa.concat_tables([pq.read_table(p, filesystem=fs) for p in paths])
    removals, report = stage.decide(group)
    for name, table in (("removals", removals.cast(REMOVALS_SCHEMA)), ("report", report)):
        path = f"{root}/{step_dir}/{name}/part-{partition:05d}.parquet"
        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        with atomic_path(fs, path) as tmp:
            pq.write_table(table, tmp, filesystem=fs)
    return removals.num_rows, report.num_rows


def run_apply(stage_name: str, kept_path: str, out: Location, step_dir: str, next_kept_dir: str) -> dict[str, Any]:
    """Split one kept partition by the step's removals into ``removed/<stage>/`` and the next kept dir."""
    fs, root = out.resolve()
    removals = pq.read_table(f"{root}/{step_dir}/removals", filesystem=fs, schema=REMOVALS_SCHEMA)
    table = pq.read_table(kept_path, filesystem=fs)
    name = kept_path.rsplit("/", 1)[-1]
    index = pc.index_in(table["id"], removals["id"])
    hit = pc.is_valid(index)
    if removals.num_rows:
        take = pc.fill_null(index, 0)
        batch = mark_removed(table, hit, stage_name, pc.take(removals["reason"], take),
                             pc.take(removals["score"], take), pc.take(removals["threshold"], take))
    else:
        batch = table
    kept = PartWriter(fs, f"{root}/{next_kept_dir}/{name}")
    kept.write(batch.filter(pc.invert(hit)))
    kept.close()
    gone = PartWriter(fs, f"{root}/removed/{stage_name}/{name}")
    gone.write(batch.filter(hit))
    gone.close()
    reasons = Counter(batch.filter(hit)["reason"].to_pylist())
    return {"in": table.num_rows, "removed": gone.rows, "reasons": dict(reasons)}


def run_partition(path: str, stages: list[DocumentStage], out: Location, next_kept_dir: str, step: int
                  ) -> dict[str, Any]:
    """Per-document stages after a global stage, over one kept partition (named after its input file)."""
    fs, root = out.resolve()
    name = path.rsplit("/", 1)[-1]
    fid = name.removeprefix("part-").removesuffix(".parquet")
    table = pq.read_table(path, filesystem=fs)
    table = conform(table)
    if "error" not in table.column_names:
        table = table.append_column("error", pa.nulls(table.num_rows, pa.string()))
    counters = {s.name: StageCounter() for s in stages}
    writers: dict[str, PartWriter] = {}

    def writer(rel: str) -> PartWriter:
        if rel not in writers:
            part = f"part-{fid}-step{step}.parquet" if rel == "errors" else name  # errors/ is shared by steps
            writers[rel] = PartWriter(fs, f"{root}/{rel}/{part}")
        return writers[rel]

    uri = table["warc_path"][0].as_py() if table.num_rows else fid
    error_rows: list[dict[str, Any]] = []
    for batch in table.to_batches(max_chunksize=4096):
        batch = pa.Table.from_batches([batch])
        batch = _apply_all(stages, batch, counters)
        _route(batch, uri, writer, next_kept_dir, error_rows, counters)
    if error_rows:
        writer("errors").write(pa.Table.from_pylist(error_rows, schema=ERROR_SCHEMA))
    for w in writers.values():
        w.close()
    return {name: c.as_dict() for name, c in counters.items()}
