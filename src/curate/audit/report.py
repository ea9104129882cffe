"""``curate audit OUT``: what every stage removed, why, with score ranges and examples.

Read entirely from an output folder (``stats/stats.json`` and the removed parts its current commits
name), so it works on a finished, a resumed or a still-running output, and on outputs written elsewhere
(S3); parts of an attempt that never committed are never shown.
"""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate.audit.ledger import load_ledger
from curate.commit import Commit
from curate.io.fs import Location

_SNIPPET = 100
_COLUMNS = ["id", "url", "reason", "score", "threshold", "text"]


def _removed(fs, root: str, chain: list[dict[str, Commit]], stage: str) -> pa.Table | None:
    paths = [p.path for step in chain for c in step.values() for p in c.parts if p.kind == "removed" and p.stage == stage]
    if not paths:
        return None
    return pa.concat_tables([pq.read_table(f"{root}/{p}", filesystem=fs, columns=_COLUMNS) for p in paths],
                            promote_options="permissive")


def audit_report(out: Location, examples: int = 3) -> str:
    """A plain-text report: per stage and reason, count, share of the stage's input, score range, examples."""
    fs, root = out.resolve()
    with fs.open(f"{root}/stats/stats.json", "r") as f:
        stats = json.load(f)
    chain, _ = load_ledger(out)
    totals = stats["totals"]
    lines = [
        f"{stats['files']} input files, {stats['documents']} documents read, {stats['read_errors']} unreadable "
        f"records; kept {totals.get('kept', 0)}, removed {totals.get('removed', 0)}, errors {totals.get('errors', 0)}; "
        f"conservation {'OK' if stats['conservation_ok'] else 'FAILED'}",
        f"records by WARC type: {json.dumps(stats['records'])}",
        f"responses that are not documents: {json.dumps(stats['skipped'])}",
    ]
    for stage, s in stats["stages"].items():
        share = s["removed"] / s["in"] if s["in"] else 0.0
        lines.append(f"\n{stage}: in {s['in']}, removed {s['removed']} ({share:.1%}), errors {s['errors']}")
        removed = _removed(fs, root, chain, stage) if s["removed"] else None
        for reason, count in s["reasons"].items():
            lines.append(f"  {reason}: {count}")
            if removed is None:
                continue
            rows = removed.filter(pc.equal(removed["reason"], reason))
            scores = pc.drop_null(rows["score"])
            if len(scores):
                q = pc.quantile(scores, q=[0.0, 0.5, 1.0]).to_pylist()
                threshold = pc.max(rows["threshold"]).as_py()
                lines.append(f"    score min {q[0]:.4g} / median {q[1]:.4g} / max {q[2]:.4g}; threshold {threshold}")
            for row in rows.sort_by("id").slice(0, examples).to_pylist():
                text = " ".join((row["text"] or "").split())[:_SNIPPET]
                lines.append(f"    e.g. {row['url']}  score={row['score']}  “{text}”")
    for path in sorted(fs.glob(f"{root}/stats/*_report.parquet")):
        report = pq.read_table(path, filesystem=fs)
        lines.append(f"\n{path.rsplit('/', 1)[-1]}: {report.num_rows} rows")
        for row in report.slice(0, 20).to_pylist():
            lines.append("  " + ", ".join(f"{k}={str(v)[:_SNIPPET]!s}" for k, v in row.items()))
    return "\n".join(lines)
