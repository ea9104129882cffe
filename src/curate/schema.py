"""The one document schema every stage reads and extends.

A batch is a ``pyarrow.Table``. Readers produce the base columns below; stages append their own columns
named ``<stage>_<signal>`` and fill the removal triple (``removed_by``, ``reason``, ``score`` plus
``threshold``) for the rows they reject. Only the runner splits rows into ``kept/`` and
``removed/<stage>/``; rows already removed pass through later stages untouched.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

#: Columns produced by readers. ``html`` is transient: extraction consumes it and writers drop it.
BASE_FIELDS: list[pa.Field] = [
    pa.field("id", pa.string(), nullable=False),  # stable: WARC-Record-ID (or url + date)
    pa.field("url", pa.string()),
    pa.field("host", pa.string()),
    pa.field("source", pa.string()),  # source key for quarantine, e.g. reddit.com/r/microwavegang
    pa.field("warc_path", pa.string()),
    pa.field("warc_offset", pa.int64()),
    pa.field("fetch_time", pa.string()),  # ISO-8601 WARC-Date, kept as text: WARC dates vary in precision
    pa.field("content_type", pa.string()),
    pa.field("charset", pa.string()),  # as declared in HTTP headers (may lie)
    pa.field("html", pa.binary()),
    pa.field("text", pa.string()),
]

REMOVAL_FIELDS: list[pa.Field] = [
    pa.field("removed_by", pa.string()),
    pa.field("reason", pa.string()),
    pa.field("score", pa.float64()),
    pa.field("threshold", pa.float64()),
    pa.field("error", pa.string()),  # set with reason == ERROR_REASON: the runner routes the row to errors/
]

#: A row whose stage failed on it (an exception, a dead worker) is not a quality decision: it goes to
#: ``errors/`` with the message, not to ``removed/``.
ERROR_REASON = "error"

DOCUMENT_SCHEMA = pa.schema(BASE_FIELDS + REMOVAL_FIELDS)

#: Columns that never reach an output file.
TRANSIENT_COLUMNS = ("html", "error")

#: One row per record that could not be read or processed.
ERROR_SCHEMA = pa.schema(
    [
        pa.field("input", pa.string()),
        pa.field("offset", pa.int64()),
        pa.field("end_offset", pa.int64()),  # a skipped span of a damaged WARC: where reading resumed
        pa.field("record_id", pa.string()),
        pa.field("stage", pa.string()),
        pa.field("error", pa.string()),
    ]
)


def empty_documents() -> pa.Table:
    return DOCUMENT_SCHEMA.empty_table()


def active_mask(batch: pa.Table) -> pa.ChunkedArray:
    """True for rows no stage has removed yet."""
    return pc.is_null(batch["removed_by"])


def set_column(batch: pa.Table, name: str, values: pa.Array | pa.ChunkedArray) -> pa.Table:
    """Return ``batch`` with column ``name`` replaced or appended (tables are immutable)."""
    index = batch.schema.get_field_index(name)
    if index >= 0:
        return batch.set_column(index, name, values)
    return batch.append_column(name, values)


def mark_removed(
    batch: pa.Table,
    remove: pa.Array | pa.ChunkedArray,
    stage: str,
    reasons: pa.Array | pa.ChunkedArray | str,
    scores: pa.Array | pa.ChunkedArray | float | None = None,
    thresholds: pa.Array | pa.ChunkedArray | float | None = None,
) -> pa.Table:
    """Fill the removal triple for rows where ``remove`` is true and no earlier stage removed them.

    ``reasons``/``scores``/``thresholds`` are either per-row arrays (read only where ``remove`` holds) or
    one value for all removed rows. Rows removed earlier keep their first removal: the first failing
    stage is the one the audit reports.
    """
    remove = pc.and_(pc.fill_null(remove, False), active_mask(batch))
    n = batch.num_rows

    def broadcast(value, type_):
        if isinstance(value, (pa.Array, pa.ChunkedArray)):
            return value.cast(type_)
        return pa.array([value] * n, type=type_)

    columns = {
        "removed_by": (pa.array([stage] * n, pa.string()), pa.string()),
        "reason": (broadcast(reasons, pa.string()), pa.string()),
        "score": (broadcast(scores, pa.float64()), pa.float64()),
        "threshold": (broadcast(thresholds, pa.float64()), pa.float64()),
    }
    for name, (new, type_) in columns.items():
        old = batch[name] if name in batch.column_names else pa.nulls(n, type_)
        batch = set_column(batch, name, pc.if_else(remove, new, old))
    return batch


def mark_failed(batch: pa.Table, failed: pa.Array | pa.ChunkedArray, stage: str,
                messages: pa.Array | pa.ChunkedArray) -> pa.Table:
    """Mark rows a stage could not process; ``messages`` is read only where ``failed`` holds."""
    failed = pc.and_(pc.fill_null(failed, False), active_mask(batch))
    batch = mark_removed(batch, failed, stage, ERROR_REASON)
    old = batch["error"] if "error" in batch.column_names else pa.nulls(batch.num_rows, pa.string())
    return set_column(batch, "error", pc.if_else(failed, messages.cast(pa.string()), old))


def conform(batch: pa.Table) -> pa.Table:
    """Cast/complete a table to at least the document schema (extra stage columns are kept)."""
    n = batch.num_rows
    for field in DOCUMENT_SCHEMA:
        if field.name not in batch.column_names:
            batch = batch.append_column(field, pa.nulls(n, field.type))
    return batch
