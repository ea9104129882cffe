"""What one unit of work does, with no knowledge of Ray: the runner ships these jobs to its actors.

* :class:`DocumentJob` runs a step's per-document stages over one unit: an input file through the reader
  (step 0) or the kept documents a unit committed in the step before.
* :class:`MapJob` / :class:`ReduceJob` run one :class:`~curate.stage.ShuffleRound` of a global stage:
  map a unit to keyed rows and hash-partition them into shuffle files; reduce one partition to named
  outputs, routing ``removals`` back to the units holding those ids.
* :class:`ApplyJob` joins a unit's removals onto its kept documents.

Each document-producing unit writes its parts (named by :mod:`curate.commit`), then its manifest, last.
:func:`run_rounds_locally` runs a global stage's rounds in-process, for tests and small corpora.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate.commit import Commit, Part, map_marker_path, new_attempt, part_path, removals_path, round_output_path, \
    shuffle_path, write_commit
from curate.io.fs import Location, atomic_path, open_input, write_text_atomic
from curate.schema import DOCUMENT_SCHEMA, ERROR_REASON, ERROR_SCHEMA, TRANSIENT_COLUMNS, conform, mark_failed, \
    mark_removed
from curate.stage import REMOVALS_SCHEMA, DocumentStage, GlobalStage, Reader, RoundResult, ShuffleRound, UnitData, \
    next_round

#: Rows per batch when a later step re-reads committed parts.
PART_BATCH_ROWS = 4096
#: Column a map output carries so a reduce can send removals back to the unit holding each id.
UNIT_COLUMN = "_unit"
#: Column a reduce's input carries: the number of its partition (e.g. to mint ids unique across partitions).
PARTITION_COLUMN = "_partition"
#: The reduce output written as files of the stage's product (see :class:`curate.stage.ShuffleRound`).
ARTIFACTS = "artifacts"


@dataclass
class StageCounter:
    docs_in: int = 0
    removed: int = 0
    errors: int = 0
    seconds: float = 0.0
    reasons: Counter = field(default_factory=Counter)
    text_bytes: Counter = field(default_factory=Counter)  # reason -> UTF-8 bytes of the text removed for it
    example_error: str | None = None

    def count_removed(self, removed: pa.Table) -> None:
        self.removed += removed.num_rows
        self.reasons.update(removed["reason"].to_pylist())
        if removed.num_rows:
            sizes = pa.table({"reason": removed["reason"],
                              "bytes": pc.fill_null(pc.binary_length(removed["text"]), 0)})
            for row in sizes.group_by("reason", use_threads=False).aggregate([("bytes", "sum")]).to_pylist():
                self.text_bytes[row["reason"]] += row["bytes_sum"]

    def as_dict(self) -> dict[str, Any]:
        return {"in": self.docs_in, "removed": self.removed, "errors": self.errors,
                "seconds": round(self.seconds, 4), "reasons": dict(sorted(self.reasons.items())),
                "text_bytes": dict(sorted(self.text_bytes.items())),
                "example_error": self.example_error}


class PartWriter:
    """Streams tables of one destination into a Parquet part, created lazily, renamed into place on close."""

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

    def close(self) -> bool:
        """True if a part was written."""
        if self._writer is None:
            return False
        self._writer.close()
        self.fs.mv(self.tmp, self.path)
        return True


def _align(table: pa.Table, schema: pa.Schema) -> pa.Table:
    extra = set(table.column_names) - set(schema.names)
    if extra:
        raise RuntimeError(f"a stage added columns mid-file: {sorted(extra)} (stages must add typed columns "
                           "on every batch, even an empty one)")
    columns = [table[f.name].cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
               for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


class UnitOutput:
    """One attempt of one unit: its parts, then :meth:`commit` renames them and writes the manifest."""

    def __init__(self, out: Location, step: int, unit: str, kept_dest: str) -> None:
        self.fs, self.root = out.resolve()
        self.step, self.unit, self.kept_dest = step, unit, kept_dest
        self.attempt = new_attempt()
        self._writers: dict[tuple[str, str | None], PartWriter] = {}
        self.kept_bytes = 0  # UTF-8 bytes of the kept text: the audit's funnel reads it from the commits

    def write(self, kind: str, table: pa.Table, stage: str | None = None) -> None:
        if kind == "kept" and table.num_rows:
            self.kept_bytes += int(pc.sum(pc.binary_length(table["text"])).as_py() or 0)
        key = (kind, stage)
        if key not in self._writers:
            dest = {"kept": self.kept_dest, "removed": f"removed/{stage}", "errors": "errors"}[kind]
            rel = part_path(dest, self.unit, self.step, self.attempt)
            self._writers[key] = PartWriter(self.fs, f"{self.root}/{rel}")
        self._writers[key].write(table)

    def commit(self, uri: str, input_key: str, stats: dict[str, Any]) -> Commit:
        parts = []
        for (kind, stage), writer in sorted(self._writers.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
            if writer.close():
                parts.append(Part(kind=kind, path=writer.path[len(self.root) + 1:], rows=writer.rows, stage=stage))
        commit = Commit(step=self.step, unit=self.unit, input=uri, attempt=self.attempt, input_key=input_key,
                        parts=parts, stats={**stats, "kept_bytes": self.kept_bytes})
        fault_point("before_commit", self.step, self.unit)
        write_commit(self.fs, self.root, commit)
        return commit


def fault_point(name: str, step: int, unit: str) -> None:
    """Fault injection for the end-to-end tests: ``CURATE_FAULT=<name>:<step>:<action>:<dir>``.

    Points: ``before_commit`` (a unit's parts are renamed, its manifest not yet written), ``map-<round>`` (a
    global stage's round starts mapping a unit), ``mapped-<round>`` (a unit's map is committed) and
    ``reduced-<round>`` (a partition's outputs and artifacts, e.g. token shards, are written; the round's
    marker is not).

    ``action`` is ``die`` (the process exits at once, as an OOM kill would) or ``pause`` (it blocks, so a
    test can kill -9 the whole run, or only this worker, at exactly this point); each fires once per unit,
    remembered in ``dir`` by a flag file that holds the action and the process id.
    """
    spec = os.environ.get("CURATE_FAULT")
    if not spec:
        return
    where, at_step, action, folder = spec.split(":", 3)
    if where != name or int(at_step) != step:
        return
    flag = Path(folder) / f"{name}-{step}-{unit}"
    if flag.exists():
        return
    flag.parent.mkdir(parents=True, exist_ok=True)
    flag.write_text(f"{action} {os.getpid()}")
    if action == "die":
        os._exit(17)
    while True:
        time.sleep(60)


# ---- per-document steps ------------------------------------------------------------------------------

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
            frames = traceback.format_exc(limit=-1).strip().splitlines()
            where = frames[-2].strip() if len(frames) >= 2 else ""
            out.append(mark_failed(row, pa.array([True]), stage.name, pa.array([f"{type(exc).__name__}: {exc} | {where}"])))
    return pa.concat_tables(out, promote_options="default") if out else batch


@dataclass(frozen=True)
class DocumentUnit:
    """One unit of a per-document step: an input file (step 0) or the kept parts it committed upstream."""

    step: int
    unit: str
    input: str
    input_key: str
    sources: tuple[str, ...] = ()  # step > 0: kept parts (relative paths) of the upstream commit


class DocumentJob:
    """A step's per-document stages, set up once per actor and run over many units.

    ``drop_after`` names, per stage, transient columns no later stage reads (``html`` after ``extract``),
    so they do not travel through the rest of the step.
    """

    def __init__(self, reader: Reader | None, stages: list[DocumentStage], *, batch_size: int, out: Location,
                 kept_dest: str, storage_options: dict[str, Any], drop_after: dict[str, tuple[str, ...]]) -> None:
        self.reader, self.stages = reader, stages
        self.batch_size, self.out, self.kept_dest = batch_size, out, kept_dest
        self.storage_options, self.drop_after = storage_options, drop_after

    def close(self) -> None:
        for stage in self.stages:
            stage.close()

    def run(self, unit: DocumentUnit) -> Commit:
        started = time.time()
        output = UnitOutput(self.out, unit.step, unit.unit, self.kept_dest)
        counters = {s.name: StageCounter() for s in ([self.reader] if self.reader else []) + self.stages}
        error_rows: list[dict[str, Any]] = []
        stats: dict[str, Any] = {}
        if self.reader is not None:
            stats = self._read_and_process(unit, output, counters, error_rows)
        else:
            fs, root = self.out.resolve()
            rows_in = 0
            for rel in unit.sources:
                with fs.open(f"{root}/{rel}", "rb") as f:
                    for record_batch in pq.ParquetFile(f).iter_batches(batch_size=PART_BATCH_ROWS):
                        batch = _with_error_column(conform(pa.Table.from_batches([record_batch])))
                        rows_in += batch.num_rows
                        self._process(batch, unit.input, output, counters, error_rows)
            stats["in"] = rows_in
        if error_rows:
            output.write("errors", pa.Table.from_pylist(error_rows, schema=ERROR_SCHEMA))
        stats.update(stages={name: c.as_dict() for name, c in counters.items()}, seconds=round(time.time() - started, 3))
        return output.commit(unit.input, unit.input_key, stats)

    def _read_and_process(self, unit: DocumentUnit, output: UnitOutput, counters: dict[str, StageCounter],
                          error_rows: list[dict[str, Any]]) -> dict[str, Any]:
        from curate.io.warc import ReadCounts

        reader = self.reader
        counts = ReadCounts()

        def on_error(offset: int | None, record_id: str | None, message: str, end_offset: int | None = None) -> None:
            error_rows.append({"input": unit.input, "offset": offset, "end_offset": end_offset,
                               "record_id": record_id, "stage": reader.name, "error": message})

        read_seconds = 0.0
        with open_input(unit.input, self.storage_options) as stream:
            batches = reader.read(stream, unit.input, self.batch_size, on_error, counts)
            while True:
                t0 = time.perf_counter()
                batch = next(batches, None)
                read_seconds += time.perf_counter() - t0
                if batch is None:
                    break
                batch = conform(batch)
                counters[reader.name].docs_in += batch.num_rows
                self._process(batch, unit.input, output, counters, error_rows)
        counters[reader.name].seconds = read_seconds
        counters[reader.name].errors = counts.errors
        counters[reader.name].docs_in += counts.errors
        counters[reader.name].example_error = next((e["error"] for e in error_rows if e["stage"] == reader.name), None)
        stats = {"records": dict(sorted(counts.records.items())), "skipped": dict(sorted(counts.skipped.items())),
                 "documents": counts.documents, "read_errors": counts.errors, "bytes": counts.bytes,
                 "read_seconds": round(read_seconds, 4), "in": counts.documents + counts.errors}
        extra = {k: v for k, v in vars(counts).items() if k not in ("records", "skipped", "documents", "errors", "bytes")}
        if extra:
            stats["read"] = {k: (dict(v) if isinstance(v, Counter) else v) for k, v in extra.items()}
        return stats

    def _process(self, batch: pa.Table, uri: str, output: UnitOutput, counters: dict[str, StageCounter],
                 error_rows: list[dict[str, Any]]) -> None:
        for stage in self.stages:
            counters[stage.name].docs_in += pc.sum(pc.is_null(batch["removed_by"])).as_py() or 0
            t0 = time.perf_counter()
            batch = apply_stage(stage, batch)
            counters[stage.name].seconds += time.perf_counter() - t0
            drop = [c for c in self.drop_after.get(stage.name, ()) if c in batch.column_names]
            if drop:
                batch = batch.drop_columns(drop)
        _route(batch, uri, output, error_rows, counters)


def _with_error_column(table: pa.Table) -> pa.Table:
    if "error" in table.column_names:
        return table
    return table.append_column("error", pa.nulls(table.num_rows, pa.string()))


def _route(batch: pa.Table, uri: str, output: UnitOutput, error_rows: list[dict[str, Any]],
           counters: dict[str, StageCounter]) -> None:
    """Split a processed batch into kept, removed/<stage> and errors."""
    batch = batch.drop_columns([c for c in TRANSIENT_COLUMNS if c != "error" and c in batch.column_names])
    removed_by = batch["removed_by"]
    is_error = pc.fill_null(pc.equal(batch["reason"], ERROR_REASON), False)
    for row in batch.filter(is_error).select(["warc_offset", "id", "removed_by", "error"]).to_pylist():
        error_rows.append({"input": uri, "offset": row["warc_offset"], "end_offset": None, "record_id": row["id"],
                           "stage": row["removed_by"], "error": row["error"]})
        counter = counters[row["removed_by"]]
        counter.errors += 1
        counter.example_error = counter.example_error or row["error"]
    batch = batch.drop_columns(["error"])  # now recorded in errors/
    output.write("kept", batch.filter(pc.is_null(removed_by)))
    removed = batch.filter(pc.and_(pc.is_valid(removed_by), pc.invert(is_error)))
    for stage in pc.unique(removed["removed_by"]).to_pylist():
        part = removed.filter(pc.equal(removed["removed_by"], stage))
        output.write("removed", part, stage)
        counters[stage].count_removed(part)


# ---- global stages: shuffle rounds, then apply ---------------------------------------------------------

class PartsData:
    """A unit's parts as a round's map sees them (:class:`curate.stage.UnitData`): lazy column reads.

    ``paths`` are relative to the output root, or absolute URIs for a round's ``input:`` sources.
    """

    def __init__(self, fs: fsspec.AbstractFileSystem, root: str | None, unit: str, paths: Sequence[str],
                 source: str = "documents", storage_options: dict[str, Any] | None = None) -> None:
        self.fs, self.root, self.unit, self.paths, self.source = fs, root, unit, list(paths), source
        self.storage_options = storage_options or {}

    def _open(self, rel: str):
        if self.root is None:
            fs, path = fsspec.core.url_to_fs(rel, **self.storage_options)
            return fs.open(path, "rb")
        return self.fs.open(f"{self.root}/{rel}", "rb")

    def read(self, columns: Sequence[str]) -> pa.Table:
        tables = []
        for rel in self.paths:
            with self._open(rel) as f:
                present = pq.ParquetFile(f).schema_arrow.names
                f.seek(0)
                tables.append(_complete(pq.read_table(f, columns=[c for c in columns if c in present]), columns))
        if not tables:
            return _complete(pa.table({}), columns)
        return pa.concat_tables(tables, promote_options="permissive").select(list(columns))

    def metadata(self) -> dict[bytes, bytes]:
        """The key-value metadata of the unit's first file (e.g. how its signatures were made)."""
        if not self.paths:
            return {}
        with self._open(self.paths[0]) as f:
            return pq.ParquetFile(f).schema_arrow.metadata or {}


def _complete(table: pa.Table, columns: Sequence[str]) -> pa.Table:
    """Give a table every requested column (parts written before a stage ran lack its columns)."""
    for name in columns:
        if name not in table.column_names:
            field_ = DOCUMENT_SCHEMA.field(name) if name in DOCUMENT_SCHEMA.names else pa.field(name, pa.null())
            table = table.append_column(field_, pa.nulls(table.num_rows, field_.type))
    return table


def hash_partition(keys: pa.ChunkedArray | pa.Array, partitions: int) -> pa.Array:
    """Partition of each key: a stable hash. Integer keys (already hashes, or node ids) are mixed in numpy;
    other keys are hashed with xxh64 once per distinct value, not once per row."""
    import numpy as np
    import xxhash

    keys = keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys
    if pa.types.is_integer(keys.type):
        mixed = _mix64(keys.to_numpy(zero_copy_only=False).astype(np.uint64))
        return pa.array((mixed % np.uint64(partitions)).astype(np.int64))
    encoded = pc.dictionary_encode(keys)
    per_value = np.array([xxhash.xxh64_intdigest(str(v)) % partitions for v in encoded.dictionary.to_pylist()],
                         dtype=np.int64)
    return pa.array(per_value[encoded.indices.to_numpy(zero_copy_only=False)])


def route(rows: pa.Table, partitions: int, round_name: str) -> tuple[pa.Table, pa.Array]:
    """A map output's rows (less ``_partition``) and the partition of each: the one the map chose in its
    ``_partition`` column, else the hash of ``key``."""
    if PARTITION_COLUMN not in rows.column_names:
        return rows, hash_partition(rows["key"], partitions)
    chosen = pc.cast(rows[PARTITION_COLUMN], pa.int64())
    bounds = pc.min_max(chosen)
    if chosen.null_count or bounds["min"].as_py() < 0 or bounds["max"].as_py() >= partitions:
        raise ValueError(f"round {round_name!r}: map output routes rows outside partitions 0..{partitions - 1}")
    return rows.drop_columns([PARTITION_COLUMN]), chosen.combine_chunks()


def _mix64(values):
    """The splitmix64 finaliser: spreads sequential or structured integers over all 64 bits."""
    import numpy as np

    with np.errstate(over="ignore"):
        values = (values ^ (values >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        values = (values ^ (values >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return values ^ (values >> np.uint64(31))


@dataclass(frozen=True)
class MapUnit:
    unit: str
    paths: tuple[str, ...]  # relative to the output root; absolute URIs when ``external``
    source: str = "documents"
    external: bool = False


@dataclass(frozen=True)
class ReduceUnit:
    unit: str  # "p<partition>"
    partition: int
    paths: tuple[str, ...]  # this partition's shuffle files, one per map unit that had rows for it


class MapJob:
    """Map one unit through a round and hash-partition the rows by ``key`` into shuffle files.

    File names are deterministic (:func:`curate.commit.shuffle_path`), so a retried map overwrites its own
    earlier files instead of adding to them.
    """

    def __init__(self, round_: ShuffleRound, out: Location, round_dir: str, partitions: int, step: int) -> None:
        self.round, self.out, self.round_dir, self.partitions, self.step = round_, out, round_dir, partitions, step

    def close(self) -> None:
        pass

    def run(self, unit: MapUnit) -> dict[str, Any]:
        fs, root = self.out.resolve()
        fault_point(f"map-{self.round.name}", self.step, unit.unit)
        data = PartsData(fs, None if unit.external else root, unit.unit, unit.paths, unit.source,
                         self.out.storage_options)
        rows = self.round.map(data)
        if "key" not in rows.column_names:
            raise ValueError(f"round {self.round.name!r}: map output has no 'key' column")
        if UNIT_COLUMN not in rows.column_names:
            rows = rows.append_column(UNIT_COLUMN, pa.array([unit.unit] * rows.num_rows, pa.string()))
        written: dict[int, str] = {}
        counted = rows.num_rows if self.round.progress is None else int(pc.sum(rows[self.round.progress]).as_py() or 0)
        if rows.num_rows:
            rows, buckets = route(rows, self.partitions, self.round.name)
            for p in pc.unique(buckets).to_pylist():
                rel = shuffle_path(self.round_dir, p, unit.unit)
                _write_table(fs, f"{root}/{rel}", rows.filter(pc.equal(buckets, p)))
                written[p] = rel
        result = {"rows": rows.num_rows, "files": written, "progress": counted}
        write_text_atomic(fs, f"{root}/{map_marker_path(self.round_dir, unit.unit)}", json.dumps(result))
        fault_point(f"mapped-{self.round.name}", self.step, unit.unit)
        return result


class ReduceJob:
    """Reduce one shuffle partition to the round's named outputs (see :class:`curate.stage.ShuffleRound`)."""

    def __init__(self, round_: ShuffleRound, out: Location, round_dir: str, step: int) -> None:
        self.round, self.out, self.round_dir, self.step = round_, out, round_dir, step

    def close(self) -> None:
        pass

    def run(self, unit: ReduceUnit) -> dict[str, Any]:
        fs, root = self.out.resolve()
        group = pa.concat_tables([pq.read_table(f"{root}/{rel}", filesystem=fs) for rel in unit.paths],
                                 promote_options="permissive")
        outputs = self.round.reduce(_with_partition(group, unit.partition))
        rows: dict[str, int] = {}
        files: dict[str, list[str]] = {}
        removals_by_unit: dict[str, str] = {}
        for name, table in sorted(outputs.items()):
            rows[name] = table.num_rows
            if name == "removals":
                removals_by_unit = self._route_removals(fs, root, unit, table, group)
            elif name == ARTIFACTS:
                files[name] = write_artifacts(fs, root, self.round, table)
            elif table.num_rows or name == "report":
                rel = round_output_path(self.round_dir, name, unit.partition)
                _write_table(fs, f"{root}/{rel}", table)
                files[name] = [rel]
        fault_point(f"reduced-{self.round.name}", self.step, unit.unit)
        return {"outputs": rows, "files": files, "removals": removals_by_unit}

    def _route_removals(self, fs, root: str, unit: ReduceUnit, removals: pa.Table, group: pa.Table) -> dict[str, str]:
        """Send removals back by unit, so each apply reads only its own (ids are looked up in the input
        rows when the reduce did not say which unit holds them)."""
        if removals.num_rows == 0:
            return {}
        if UNIT_COLUMN not in removals.column_names:
            index = pc.index_in(removals["id"], group["id"])
            if pc.any(pc.is_null(index)).as_py():
                raise ValueError(f"round {self.round.name!r}: removals name ids that are not in the partition; "
                                 f"add a {UNIT_COLUMN!r} column to say which unit holds them")
            removals = removals.append_column(UNIT_COLUMN, pc.take(group[UNIT_COLUMN], index))
        routed = {}
        for owner in pc.unique(removals[UNIT_COLUMN]).to_pylist():
            rel = removals_path(self.round_dir, owner, unit.partition)
            mine = removals.filter(pc.equal(removals[UNIT_COLUMN], owner)).drop_columns([UNIT_COLUMN])
            _write_table(fs, f"{root}/{rel}", mine)
            routed[owner] = rel
        return routed


def write_artifacts(fs: fsspec.AbstractFileSystem, root: str, round_: ShuffleRound, table: pa.Table) -> list[str]:
    """Write a reduce's ``artifacts`` rows as files under ``<root>/<round.artifacts>/``, each atomically
    (a retried reduce overwrites them); returns their paths relative to ``root``."""
    if round_.artifacts is None:
        raise ValueError(f"round {round_.name!r}: its reduce returned artifacts but the round names no "
                         "artifacts folder")
    written = []
    for path, data in zip(table["path"].to_pylist(), table["data"], strict=True):  # one file's bytes at a time
        if path.startswith("/") or ".." in path.split("/"):
            raise ValueError(f"round {round_.name!r}: artifact path {path!r} leaves {round_.artifacts}/")
        rel = f"{round_.artifacts}/{path}"
        fs.makedirs(f"{root}/{rel}".rsplit("/", 1)[0], exist_ok=True)
        with atomic_path(fs, f"{root}/{rel}") as tmp, fs.open(tmp, "wb") as f:
            f.write(memoryview(data.as_buffer()))
        written.append(rel)
    return written


def _with_partition(group: pa.Table, partition: int) -> pa.Table:
    return group.append_column(PARTITION_COLUMN, pa.array([partition] * group.num_rows, pa.int32()))


def _write_table(fs: fsspec.AbstractFileSystem, path: str, table: pa.Table) -> None:
    """A round's file, zstd-compressed except columns of hash values (:func:`_is_hash_column`): those are
    incompressible, and trying zstd and a dictionary on them doubled the write and read of signatures."""
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    raw = {f.name for f in table.schema if _is_hash_column(f.type)}
    with atomic_path(fs, path) as tmp:
        pq.write_table(table, tmp, filesystem=fs,
                       compression={name: "none" if name in raw else "zstd" for name in table.column_names},
                       use_dictionary=[name for name in table.column_names if name not in raw])


def _is_hash_column(type_: pa.DataType) -> bool:
    """Unsigned 32/64-bit integers, or lists of them: in rounds' files these are hashes (MinHash signatures,
    shingle sets, band keys), uniformly random bits."""
    while pa.types.is_list(type_) or pa.types.is_large_list(type_) or pa.types.is_fixed_size_list(type_):
        type_ = type_.value_type
    return pa.types.is_uint32(type_) or pa.types.is_uint64(type_)


def data_bytes(fs: fsspec.AbstractFileSystem | None, root: str | None, paths: Sequence[str],
               columns: Sequence[str] | None, storage_options: dict[str, Any] | None = None) -> int:
    """Uncompressed bytes of the columns a round reads (all when ``columns`` is None), from Parquet footers
    only; ``paths`` are relative to ``root``, or URIs when ``root`` is None. Sizes a round's shuffle."""
    total = 0
    for rel in paths:
        if root is None:
            fs_, path = fsspec.core.url_to_fs(rel, **(storage_options or {}))
        else:
            fs_, path = fs, f"{root}/{rel}"
        with fs_.open(path, "rb") as f:
            meta = pq.ParquetFile(f).metadata
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            for c in range(group.num_columns):
                column = group.column(c)
                if columns is None or column.path_in_schema.split(".")[0] in columns:
                    total += column.total_uncompressed_size
    return total


@dataclass(frozen=True)
class ApplyUnit:
    step: int
    unit: str
    input: str
    input_key: str
    sources: tuple[str, ...]  # the unit's kept parts of the step before
    removals: tuple[str, ...]  # its removals, from every round


class ApplyJob:
    """Split one unit's kept documents by its removals into ``removed/<stage>/`` and the next kept parts."""

    def __init__(self, stage_name: str, out: Location, kept_dest: str) -> None:
        self.stage_name, self.out, self.kept_dest = stage_name, out, kept_dest

    def close(self) -> None:
        pass

    def run(self, unit: ApplyUnit) -> Commit:
        started = time.time()
        fs, root = self.out.resolve()
        removals = _read_removals(fs, root, unit.removals)
        output = UnitOutput(self.out, unit.step, unit.unit, self.kept_dest)
        counter = StageCounter()
        for rel in unit.sources:
            table = pq.read_table(f"{root}/{rel}", filesystem=fs)
            counter.docs_in += table.num_rows
            kept, gone = apply_removals(table, removals, self.stage_name)
            output.write("kept", kept)
            if gone.num_rows:
                output.write("removed", gone, self.stage_name)
                counter.count_removed(gone)
        stats = {"in": counter.docs_in, "stages": {self.stage_name: counter.as_dict()},
                 "seconds": round(time.time() - started, 3)}
        return output.commit(unit.input, unit.input_key, stats)


def _read_removals(fs: fsspec.AbstractFileSystem, root: str, paths: Sequence[str]) -> pa.Table:
    """A unit's removals from every round; a document removed by two rounds keeps the first."""
    tables = [pq.read_table(f"{root}/{rel}", filesystem=fs) for rel in paths]
    if not tables:
        return REMOVALS_SCHEMA.empty_table()
    removals = pa.concat_tables(tables, promote_options="permissive")
    if pc.count_distinct(removals["id"]).as_py() == removals.num_rows:
        return removals
    seen: set[str] = set()
    first = []
    for value in removals["id"].to_pylist():
        first.append(value not in seen)
        seen.add(value)
    return removals.filter(pa.array(first))


def apply_removals(table: pa.Table, removals: pa.Table, stage_name: str) -> tuple[pa.Table, pa.Table]:
    """(kept, removed) of ``table`` by ``removals`` (a join on ``id``); removal columns beyond the removal
    triple (``duplicate_of``, ``cluster_size`` ...) are added to the removed documents."""
    index = pc.index_in(table["id"], removals["id"])
    hit = pc.is_valid(index)
    if not removals.num_rows or not pc.any(hit).as_py():
        return table, table.slice(0, 0)
    take = pc.fill_null(index, 0)
    marked = mark_removed(table, hit, stage_name, pc.take(removals["reason"], take), pc.take(removals["score"], take),
                          pc.take(removals["threshold"], take))
    gone = marked.filter(hit)
    hits = index.filter(hit)
    for name in removals.column_names:
        if name not in REMOVALS_SCHEMA.names and name not in gone.column_names:
            gone = gone.append_column(name, pc.take(removals[name], hits))
    return marked.filter(pc.invert(hit)), gone


def run_rounds_locally(stage: GlobalStage, units: dict[str, pa.Table], partitions: int = 3,
                       output: str | None = None) -> tuple[pa.Table, pa.Table]:
    """Execute a global stage's rounds in this process over in-memory units; returns (removals, report).

    The same map → hash partition → reduce as the runner, without shuffle files: for tests and notebooks.
    A round's ``input:`` sources are read from their (local or fsspec) paths; its artifacts are written
    under the local folder ``output``.
    """
    from curate.io.fs import expand_inputs

    class _Memory:
        def __init__(self, unit: str, table: pa.Table, source: str) -> None:
            self.unit, self.table, self.source = unit, table, source

        def read(self, columns: Sequence[str]) -> pa.Table:
            return _complete(self.table, columns).select(list(columns))

        def metadata(self) -> dict[bytes, bytes]:
            return self.table.schema.metadata or {}

    sources: dict[str, list[UnitData]] = {"documents": [_Memory(u, t, "documents") for u, t in units.items()]}
    removals, reports = [], []
    done: set[str] = set()  # rounds run so far (an output they wrote nothing to is empty, not unknown)
    by_partition: dict[str, tuple[int, dict[int, pa.Table]]] = {}  # an output's partition count and tables
    rounds = stage.rounds()
    round_ = next(rounds, None)
    while round_ is not None:
        for name, patterns in round_.inputs.items():
            fs = fsspec.filesystem("file")
            sources[f"input:{name}"] = [PartsData(fs, None, f"in{i:05d}", (uri,), f"input:{name}")
                                        for i, uri in enumerate(expand_inputs(list(patterns)))]
        mapped = []
        for source in round_.sources:
            for data in sources.get(source, []) if source.split("/")[0] in done else sources[source]:
                rows = round_.map(data)
                if UNIT_COLUMN not in rows.column_names:
                    rows = rows.append_column(UNIT_COLUMN, pa.array([data.unit] * rows.num_rows, pa.string()))
                mapped.append(rows)
        rows = pa.concat_tables(mapped, promote_options="permissive") if mapped else pa.table({"key": pa.array([])})
        count = round_.partitions or partitions
        rows, buckets = route(rows, count, round_.name) if rows.num_rows else (rows, pa.nulls(0, pa.int64()))
        for key in round_.beside:
            if by_partition.get(key, (count,))[0] != count:
                raise ValueError(f"round {round_.name!r} reads {key!r} beside its shuffle with other partitions")
        outputs: dict[str, list[pa.Table]] = {}
        partition_outputs: dict[str, dict[int, pa.Table]] = {}
        for p in range(count):
            part = rows.filter(pc.equal(buckets, p))
            if not part.num_rows:
                continue  # as in the runner: a partition no map wrote to has no reduce
            beside = [by_partition[key][1][p] for key in round_.beside if p in by_partition.get(key, (0, {}))[1]]
            if beside:
                part = pa.concat_tables([part, *beside], promote_options="permissive")
            for name, table in round_.reduce(_with_partition(part, p)).items():
                if name == ARTIFACTS:
                    if output is None:
                        raise ValueError(f"round {round_.name!r} writes artifacts: give output=")
                    write_artifacts(fsspec.filesystem("file"), output, round_, table)
                    continue
                outputs.setdefault(name, []).append(table)
                partition_outputs.setdefault(name, {})[p] = table
        merged = {name: pa.concat_tables(tables, promote_options="permissive") for name, tables in outputs.items()}
        removals += [merged.pop("removals")] if "removals" in merged else []
        reports += [merged.pop("report")] if "report" in merged else []
        for name in merged:
            key = f"{round_.name}/{name}"
            sources[key] = [_Memory(f"p{i:05d}", t, key) for i, t in enumerate(outputs[name]) if t.num_rows]
            by_partition[key] = (count, {p: t for p, t in partition_outputs[name].items() if t.num_rows})
        done.add(round_.name)
        result = RoundResult(partitions=count, rows_in=rows.num_rows,
                             outputs={name: sum(t.num_rows for t in tables) for name, tables in outputs.items()},
                             tables={name: merged[name] for name in round_.collect if name in merged})
        round_ = next_round(rounds, result)
    removals_table = pa.concat_tables(removals, promote_options="permissive") if removals else \
        REMOVALS_SCHEMA.empty_table()
    report = pa.concat_tables(reports, promote_options="permissive") if reports else pa.table({})
    return removals_table, report
