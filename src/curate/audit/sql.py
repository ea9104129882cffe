"""``curate audit sql OUT "SELECT …"``: DuckDB over a run's output.

Views (registered as lazy Arrow datasets: DuckDB pushes column projection and filters into the Parquet
scan, so a query over a whole crawl reads only what it selects):

* ``kept``, ``removed`` (every stage; ``removed_by``, ``reason``, ``score``, ``threshold``), ``errors``;
* ``stats``: one row per stage and reason (documents, bytes), from ``stats/stats.json``;
* ``sources``: per source key, documents kept and removed (and by which stages);
* ``<stage>_report`` for every global stage's report (e.g. ``source_quarantine_report``);
* ``shards`` (each shard's documents in order, with the shard name on a local output) when the run
  tokenized its corpus.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from curate.audit.run import RunOutput

HELP = "DuckDB SQL over views kept, removed, errors, stats, sources, <stage>_report and shards"
FORMATS = ("table", "csv", "json", "parquet")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("query", help='e.g. "SELECT reason, count(*) FROM removed GROUP BY 1 ORDER BY 2 DESC"')
    parser.add_argument("--format", choices=FORMATS, default="table", help="how to print the result")
    parser.add_argument("--out", "-o", default=None, help="write the result to this file (required for parquet)")
    parser.add_argument("--limit", type=int, default=50, help="rows shown in the table format (all in the others)")


def run(args: argparse.Namespace, output: RunOutput) -> int:
    import duckdb

    con = connect(output)
    try:
        result = con.sql(args.query).to_arrow_table()
    except duckdb.Error as exc:
        print(f"curate: error: {exc}\nviews: {', '.join(views(con))}", file=sys.stderr)
        return 2
    if args.format == "parquet" or (args.out and args.format != "table"):
        if not args.out:
            print("curate: error: --format parquet needs --out FILE", file=sys.stderr)
            return 2
        _write(result, args.format, args.out)
        print(f"{result.num_rows} rows -> {args.out}")
        return 0
    if args.format == "table":
        print(format_table(result, args.limit))
    else:
        _write(result, args.format, sys.stdout)
    return 0


def connect(output: RunOutput):
    """A DuckDB connection with every view of the run registered."""
    import duckdb

    con = duckdb.connect()
    for kind in ("kept", "removed", "errors"):
        dataset = output.dataset(kind)
        con.register(kind, dataset if dataset is not None else _empty(kind))
    con.register("stats", _stats_table(output.stats))
    con.execute("""CREATE VIEW sources AS
        SELECT source, sum(kept) AS kept, sum(removed) AS removed, string_agg(DISTINCT removed_by, ',') AS removed_by
        FROM (SELECT source, 1 AS kept, 0 AS removed, NULL AS removed_by FROM kept
              UNION ALL SELECT source, 0, 1, removed_by FROM removed)
        GROUP BY source""")
    for stage, path in output.reports().items():
        con.register(f"{stage}_report", ds.dataset([path], format="parquet", filesystem=output.filesystem))
    if output.shards:
        paths = [f"{output.root}/shards/{s['name']}.docs.parquet" for s in output.shards["shards"]]
        if isinstance(output.filesystem, pafs.LocalFileSystem):  # DuckDB reads them itself, naming the file
            listed = ", ".join("'" + p.replace("'", "''") + "'" for p in paths)
            con.execute(f"CREATE VIEW shards AS SELECT regexp_extract(filename, '([^/]+)[.]docs[.]parquet$', 1) AS "
                        f"shard, * EXCLUDE (filename) FROM read_parquet([{listed}], filename = true)")
        else:  # object storage: through pyarrow's filesystem (DuckDB's own would need its httpfs extension)
            con.register("shards", ds.dataset(paths, format="parquet", filesystem=output.filesystem))
    return con


def views(con) -> list[str]:
    return sorted(r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall())


def _stats_table(stats: dict[str, Any]) -> pa.Table:
    rows = []
    for stage, s in stats["stages"].items():
        for reason, count in s["reasons"].items():
            rows.append({"stage": stage, "reason": reason, "documents": count,
                         "bytes": s.get("text_bytes", {}).get(reason, 0), "stage_in": s["in"],
                         "stage_errors": s["errors"]})
    schema = pa.schema([("stage", pa.string()), ("reason", pa.string()), ("documents", pa.int64()),
                        ("bytes", pa.int64()), ("stage_in", pa.int64()), ("stage_errors", pa.int64())])
    return pa.Table.from_pylist(rows, schema)


def _empty(kind: str) -> pa.Table:
    from curate.schema import DOCUMENT_SCHEMA, ERROR_SCHEMA

    return (ERROR_SCHEMA if kind == "errors" else DOCUMENT_SCHEMA).empty_table()


def _write(table: pa.Table, fmt: str, target) -> None:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if fmt == "parquet":
        pq.write_table(table, target)
    elif fmt == "csv":
        if isinstance(target, str):
            pacsv.write_csv(table, target)
        else:
            target.buffer.write(_csv_bytes(table))
    else:
        import json

        lines = "".join(json.dumps(r, default=str) + "\n" for r in table.to_pylist())
        if isinstance(target, str):
            with open(target, "w", encoding="utf-8") as f:
                f.write(lines)
        else:
            target.write(lines)


def _csv_bytes(table: pa.Table) -> bytes:
    import pyarrow.csv as pacsv

    sink = pa.BufferOutputStream()
    pacsv.write_csv(table, sink)
    return sink.getvalue().to_pybytes()


def format_table(table: pa.Table, limit: int) -> str:
    """A plain-text table of the first ``limit`` rows, cells cut at 60 characters."""
    names = table.column_names
    rows = [[_cell(v) for v in row.values()] for row in table.slice(0, limit).to_pylist()]
    widths = [max([len(n)] + [len(r[i]) for r in rows]) for i, n in enumerate(names)]
    lines = ["  ".join(n.ljust(w) for n, w in zip(names, widths, strict=True)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    if table.num_rows > limit:
        lines.append(f"… {table.num_rows - limit} more rows (--limit, or --format csv|json|parquet)")
    else:
        lines.append(f"({table.num_rows} rows)")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    text = "NULL" if value is None else (f"{value:.6g}" if isinstance(value, float) else str(value))
    text = " ".join(text.split())
    return text if len(text) <= 60 else text[:57] + "..."
