"""The ledger: conservation, merged stats and the failure policy, from committed units only.

Conservation, per input file: documents read (HTML responses, WET conversions and unreadable records) =
rows kept by the last step + rows every step removed + error rows, summed over the file's current commits
(:func:`curate.commit.current_chain`). Each commit must also balance on its own (what entered the step =
what it kept + removed + sent to errors), and every part it names must exist with the row count its
Parquet footer gives. A run where any of this does not hold exits non-zero.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import pyarrow.parquet as pq

from curate.commit import Commit, current_chain, load_commits
from curate.io.fs import Location, file_id, write_text_atomic


@dataclass
class Conservation:
    per_file: dict[str, dict[str, Any]]  # file id -> input/in/kept/removed/errors
    ok: bool
    unfinished: dict[str, str] = field(default_factory=dict)  # input URI -> the step it has not finished
    problems: list[str] = field(default_factory=list)  # parts missing or with other row counts than committed

    @property
    def totals(self) -> dict[str, int]:
        total: Counter = Counter()
        for row in self.per_file.values():
            total.update({k: v for k, v in row.items() if k != "input"})
        return dict(total)

    def failures(self) -> list[str]:
        lines = [f"{row['input']}: in={row['in']} kept={row['kept']} removed={row['removed']} errors={row['errors']}"
                 for row in self.per_file.values() if row["in"] != row["kept"] + row["removed"] + row["errors"]]
        return lines + self.problems


@dataclass
class Ledger:
    conservation: Conservation
    stats: dict[str, Any]


def check_conservation(out: Location, chain: list[dict[str, Commit]], units: dict[str, str]) -> Conservation:
    fs, root = out.resolve()
    per_file: dict[str, dict[str, Any]] = {}
    unfinished: dict[str, str] = {}
    problems: list[str] = []
    for unit, uri in sorted(units.items()):
        commits = [step.get(unit) for step in chain]
        missing = next((k for k, c in enumerate(commits) if c is None), None)
        if missing is not None:
            unfinished[uri] = f"step {missing}"
            continue
        for c in commits:
            if c.stats.get("in", 0) != c.rows("kept") + c.rows("removed") + c.rows("errors"):
                problems.append(f"{uri}: step {c.step} took in {c.stats.get('in')} documents but committed "
                                f"kept={c.rows('kept')} removed={c.rows('removed')} errors={c.rows('errors')}")
            for part in c.parts:
                path = f"{root}/{part.path}"
                if not fs.exists(path):
                    problems.append(f"{uri}: committed part missing: {part.path}")
                    continue
                with fs.open(path, "rb") as f:
                    rows = pq.ParquetFile(f).metadata.num_rows
                if rows != part.rows:
                    problems.append(f"{uri}: {part.path} holds {rows} rows, its commit says {part.rows}")
        per_file[unit] = {"input": uri, "in": commits[0].stats["in"], "kept": commits[-1].rows("kept"),
                          "removed": sum(c.rows("removed") for c in commits),
                          "errors": sum(c.rows("errors") for c in commits)}
    ok = not problems and all(r["in"] == r["kept"] + r["removed"] + r["errors"] for r in per_file.values())
    return Conservation(per_file=per_file, ok=ok, unfinished=unfinished, problems=problems)


def _new_stage() -> dict[str, Any]:
    return {"in": 0, "removed": 0, "errors": 0, "seconds": 0.0, "reasons": Counter(), "text_bytes": Counter(),
            "example_error": None}


def _add_stages(into: dict[str, dict[str, Any]], stages: dict[str, dict[str, Any]]) -> None:
    for name, c in stages.items():
        agg = into[name]
        for key in ("in", "removed", "errors", "seconds"):
            agg[key] += c[key]
        agg["reasons"].update(c["reasons"])
        agg["text_bytes"].update(c.get("text_bytes", {}))
        agg["example_error"] = agg["example_error"] or c.get("example_error")


def _finish_stages(stages: dict[str, dict[str, Any]], order: list[str]) -> dict[str, dict[str, Any]]:
    rank = {name: i for i, name in enumerate(order)}
    ordered = sorted(stages.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0]))
    return {name: {"in": s["in"], "removed": s["removed"], "errors": s["errors"], "seconds": round(s["seconds"], 3),
                   "docs_per_s": round(s["in"] / s["seconds"], 1) if s["seconds"] else None,
                   "reasons": dict(s["reasons"].most_common()),
                   "bytes_removed": sum(s["text_bytes"].values()),
                   "text_bytes": {reason: s["text_bytes"][reason] for reason, _ in s["reasons"].most_common()},
                   **({"example_error": s["example_error"]} if s["example_error"] else {})}
            for name, s in ordered}


def merge_stats(chain: list[dict[str, Commit]], order: list[str]) -> dict[str, Any]:
    """Stats of every current commit, merged: records by type (step 0) and per-stage counts (all steps),
    stages in pipeline ``order``."""
    records: Counter = Counter()
    skipped: Counter = Counter()
    read: Counter = Counter()
    stages: dict[str, dict[str, Any]] = defaultdict(_new_stage)
    files = list(chain[0].values()) if chain else []
    for s in (c.stats for c in files):
        records.update(s["records"])
        skipped.update(s["skipped"])
        for key, value in s.get("read", {}).items():
            if isinstance(value, (int, float)):
                read[key] += value
    for step in chain:
        for c in step.values():
            _add_stages(stages, c.stats["stages"])
    merged = {
        "files": len(files),
        "records": dict(sorted(records.items())),
        "skipped": dict(sorted(skipped.items())),
        "documents": sum(c.stats["documents"] for c in files),
        "read_errors": sum(c.stats["read_errors"] for c in files),
        "bytes": sum(c.stats["bytes"] for c in files),
        "read_seconds": round(sum(c.stats["read_seconds"] for c in files), 3),
        "kept_bytes": sum(c.stats.get("kept_bytes", 0) for c in chain[-1].values()) if chain else 0,
        "stages": _finish_stages(stages, order),
    }
    if read:
        merged["read"] = dict(sorted(read.items()))
    return merged


def policy_violations(merged: dict[str, Any], policy, steps) -> list[str]:
    """Messages for every limit of the :class:`curate.config.FailurePolicy` the stats exceed."""
    from curate.stage import Reader

    problems = []
    documents = merged["documents"] + merged["read_errors"]
    stage_errors = 0
    for step in steps:
        for stage in step.stages:
            s = merged["stages"].get(stage.name)
            if s is None or isinstance(stage, Reader):
                continue
            stage_errors += s["errors"]
            limit = policy.stage_limit(stage.name)
            if s["in"] and s["errors"] / s["in"] > limit:
                problems.append(f"stage {stage.name}: {s['errors']} of {s['in']} documents failed "
                                f"({s['errors'] / s['in']:.1%}), over its max_error_share {limit}; "
                                f"e.g. {s.get('example_error')}")
    if documents and stage_errors / documents > policy.max_error_share:
        problems.append(f"run: {stage_errors} of {documents} documents failed in stages "
                        f"({stage_errors / documents:.1%}), over max_error_share {policy.max_error_share}")
    limit = policy.max_read_error_share
    if limit is not None and documents and merged["read_errors"] / documents > limit:
        problems.append(f"read: {merged['read_errors']} of {documents} records unreadable "
                        f"({merged['read_errors'] / documents:.1%}), over max_read_error_share {limit}")
    return problems


def build_ledger(out: Location, chain: list[dict[str, Commit]], units: dict[str, str], order: list[str]) -> Ledger:
    """Conservation and merged stats; writes ``stats/stats.json`` and one ``stats/files/<id>.json`` per input
    (all steps of that file), re-derived from the commits on every run so resumed runs report everything."""
    fs, root = out.resolve()
    conservation = check_conservation(out, chain, units)
    merged = merge_stats(chain, order)
    merged.update(totals=conservation.totals, conservation_ok=conservation.ok,
                  unfinished=dict(sorted(conservation.unfinished.items())))
    write_text_atomic(fs, f"{root}/stats/stats.json", json.dumps(merged, indent=1))
    for unit, first in chain[0].items() if chain else ():
        stages: dict[str, dict[str, Any]] = defaultdict(_new_stage)
        for step in chain:
            if unit in step:
                _add_stages(stages, step[unit].stats["stages"])
        row = conservation.per_file.get(unit)
        per_file = {**{k: v for k, v in first.stats.items() if k != "stages"}, "input": first.input, "file_id": unit,
                    "stages": _finish_stages(stages, order), "steps": len([s for s in chain if unit in s]),
                    "conservation": None if row is None else
                    {"in": row["in"], "out": row["kept"] + row["removed"] + row["errors"],
                     "ok": row["in"] == row["kept"] + row["removed"] + row["errors"]}}
        write_text_atomic(fs, f"{root}/stats/files/{unit}.json", json.dumps(per_file, indent=1))
    return Ledger(conservation=conservation, stats=merged)


def load_ledger(out: Location) -> tuple[list[dict[str, Commit]], dict[str, Any]]:
    """The current commits of an output folder and its ``run.json`` (for the audit and other readers)."""
    fs, root = out.resolve()
    with fs.open(f"{root}/run.json", "r") as f:
        run = json.load(f)
    kinds = [s["kind"] for s in run["steps"]]
    units = {file_id(uri) for uri in run["inputs"]}
    return current_chain(load_commits(fs, root), kinds, units), run
