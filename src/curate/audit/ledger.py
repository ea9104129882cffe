"""The ledger: merged stats and the conservation check, always recomputed from what is on disk.

Conservation: for every input file, documents read (HTML responses, WET conversions and unreadable
records) = rows in ``kept/`` + ``removed/*/`` + ``errors/``, counted from Parquet footers of the parts named
after that file. A run where it does not hold exits non-zero.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

import fsspec
import pyarrow.parquet as pq

from curate.io.fs import Location, write_text_atomic


@dataclass
class Conservation:
    per_file: dict[str, dict[str, int]]  # file id -> in/kept/removed/errors
    ok: bool

    @property
    def totals(self) -> dict[str, int]:
        total: Counter = Counter()
        for row in self.per_file.values():
            total.update({k: v for k, v in row.items() if k != "input"})
        return dict(total)

    def failures(self) -> list[str]:
        return [f"{row['input']}: in={row['in']} kept={row['kept']} removed={row['removed']} errors={row['errors']}"
                for row in self.per_file.values() if row["in"] != row["kept"] + row["removed"] + row["errors"]]


def _rows_by_file(fs: fsspec.AbstractFileSystem, pattern: str) -> Counter:
    rows: Counter = Counter()
    for path in fs.glob(pattern):
        name = path.rsplit("/", 1)[-1]
        fid = name.removeprefix("part-").split(".")[0].split("-")[0]  # part-<file id>[-step<k>].parquet
        with fs.open(path, "rb") as f:
            rows[fid] += pq.ParquetFile(f).metadata.num_rows
    return rows


def load_file_stats(fs: fsspec.AbstractFileSystem, root: str) -> list[dict[str, Any]]:
    stats = []
    for path in sorted(fs.glob(f"{root}/stats/files/*.json")):
        with fs.open(path, "r") as f:
            stats.append(json.load(f))
    return stats


def check_conservation(out: Location) -> Conservation:
    fs, root = out.resolve()
    kept = _rows_by_file(fs, f"{root}/kept/part-*.parquet")
    removed = _rows_by_file(fs, f"{root}/removed/*/part-*.parquet")
    errors = _rows_by_file(fs, f"{root}/errors/part-*.parquet")
    per_file = {}
    for s in load_file_stats(fs, root):
        fid = s["file_id"]
        per_file[fid] = {"input": s["input"], "in": s["documents"] + s["read_errors"], "kept": kept[fid],
                         "removed": removed[fid], "errors": errors[fid]}
    ok = all(r["in"] == r["kept"] + r["removed"] + r["errors"] for r in per_file.values())
    ok = ok and set(kept) | set(removed) | set(errors) <= set(per_file)  # no orphan parts
    return Conservation(per_file=per_file, ok=ok)


def merge_stats(out: Location, global_steps: list[dict[str, Any]], conservation: Conservation) -> dict[str, Any]:
    """Merge per-file and global-stage stats into ``stats/stats.json`` (re-merged from disk every run,
    so a resumed run reports the whole corpus, not only the files it just processed)."""
    fs, root = out.resolve()
    files = load_file_stats(fs, root)
    records: Counter = Counter()
    skipped: Counter = Counter()
    stages: dict[str, dict[str, Any]] = defaultdict(lambda: {"in": 0, "removed": 0, "errors": 0, "seconds": 0.0,
                                                             "reasons": Counter()})
    for s in files:
        records.update(s["records"])
        skipped.update(s["skipped"])
        for name, c in s["stages"].items():
            agg = stages[name]
            for key in ("in", "removed", "errors", "seconds"):
                agg[key] += c[key]
            agg["reasons"].update(c["reasons"])
    for step in global_steps:
        agg = stages[step["stage"]]
        for key in ("in", "removed", "seconds"):
            agg[key] += step[key]
        agg["reasons"].update(step["reasons"])
    merged = {
        "files": len(files),
        "records": dict(sorted(records.items())),
        "skipped": dict(sorted(skipped.items())),
        "documents": sum(s["documents"] for s in files),
        "read_errors": sum(s["read_errors"] for s in files),
        "bytes": sum(s["bytes"] for s in files),
        "read_seconds": round(sum(s["read_seconds"] for s in files), 3),
        "stages": {name: {**{k: (round(v, 3) if k == "seconds" else v) for k, v in agg.items() if k != "reasons"},
                          "reasons": dict(agg["reasons"].most_common())} for name, agg in stages.items()},
        "totals": conservation.totals,
        "conservation_ok": conservation.ok,
    }
    write_text_atomic(fs, f"{root}/stats/stats.json", json.dumps(merged, indent=1))
    return merged
