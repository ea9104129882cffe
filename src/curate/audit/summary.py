"""``curate audit summary OUT``: the funnel (records → documents → each stage → kept → tokens in shards) and,
per stage and reason, documents and bytes removed, with score ranges and examples.

The counts and bytes come from the commits' stats (``stats/stats.json``), so the summary of a whole crawl
reads no corpus; only the score ranges and examples read the removed parts (the ``reason``, ``score``,
``threshold`` columns, and a few rows' text). Tokens removed are an estimate (bytes at the kept corpus's
bytes per token) unless the removed text were tokenized, which no stage does.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from curate.audit.run import RunOutput

HELP = "the funnel and, per stage and reason, documents/bytes removed, score ranges and examples"
SNIPPET = 100


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--examples", type=int, default=3, help="examples per stage and reason (0: none, faster)")


def run(args: argparse.Namespace, output: RunOutput) -> int:
    figures = summary(output, examples=args.examples)
    print(json.dumps(figures, indent=1) if args.json else format_summary(figures))
    return 0


def summary(output: RunOutput, examples: int = 3) -> dict[str, Any]:
    """Every figure of the summary, as plain data (the HTML report draws the same numbers)."""
    stats = output.stats
    totals = stats["totals"]
    shards = output.shards
    tokens = shards["totals"]["tokens"] if shards else None
    bytes_per_token = stats["kept_bytes"] / tokens if tokens else None
    documents = stats["documents"] + stats["read_errors"]
    funnel: list[dict[str, Any]] = [
        {"step": "records", "documents": sum(stats["records"].values())},
        {"step": "documents", "documents": documents},
    ]
    remaining = documents
    stages: dict[str, Any] = {}
    for name, s in stats["stages"].items():
        remaining -= s["removed"] + s["errors"]
        funnel.append({"step": name, "documents": remaining, "removed": s["removed"], "errors": s["errors"]})
        reasons = {reason: {"documents": count, "bytes": s.get("text_bytes", {}).get(reason, 0)}
                   for reason, count in s["reasons"].items()}
        stages[name] = {"in": s["in"], "removed": s["removed"], "errors": s["errors"],
                        "bytes_removed": s.get("bytes_removed", 0),
                        "tokens_removed_estimate": round(s.get("bytes_removed", 0) / bytes_per_token)
                        if bytes_per_token else None,
                        "seconds": s["seconds"], "reasons": reasons}
        if s["removed"] and (examples or reasons):
            _scores_and_examples(output, name, reasons, examples)
    funnel.append({"step": "kept", "documents": totals.get("kept", 0), "bytes": stats["kept_bytes"]})
    if shards:
        funnel.append({"step": "shards", "documents": shards["totals"]["documents"], "tokens": tokens})
    return {
        "output": output.out.url, "inputs": stats["files"], "records": stats["records"],
        "skipped": stats["skipped"], "documents": documents, "read_errors": stats["read_errors"],
        "kept": {"documents": totals.get("kept", 0), "bytes": stats["kept_bytes"]},
        "removed": totals.get("removed", 0), "errors": totals.get("errors", 0),
        "conservation_ok": stats["conservation_ok"], "funnel": funnel, "stages": stages,
        "shards": None if not shards else {"documents": shards["totals"]["documents"], "tokens": tokens,
                                           "shards": len(shards["shards"]), "format": shards["format"],
                                           "tokenizer": shards["tokenizer"]["name"]},
        "bytes_per_token": round(bytes_per_token, 3) if bytes_per_token else None,
        "reports": {stage: _report_head(output, path) for stage, path in output.reports().items()},
    }


def _scores_and_examples(output: RunOutput, stage: str, reasons: dict[str, dict[str, Any]], examples: int) -> None:
    """Score range, threshold and a few examples per reason, from the removed parts (pruned to what is read)."""
    dataset = output.dataset("removed", stage)
    if dataset is None:
        return
    scored = dataset.to_table(columns=["reason", "score", "threshold", "__filename"])
    for reason, entry in reasons.items():
        rows = scored.filter(pc.equal(scored["reason"], reason))
        scores = pc.drop_null(rows["score"])
        if len(scores):
            low, median, high = pc.quantile(scores, q=[0.0, 0.5, 1.0]).to_pylist()
            entry.update(score_min=low, score_median=median, score_max=high,
                         threshold=pc.max(rows["threshold"]).as_py())
        if examples:
            picked = output.read_matching(dataset.schema, rows["__filename"], ds.field("reason") == reason,
                                          ["id", "url", "score", "text"], examples)
            entry["examples"] = [{"id": r["id"], "url": r["url"], "score": r["score"],
                                  "text": " ".join((r["text"] or "").split())[:SNIPPET]} for r in picked.to_pylist()]


def _report_head(output: RunOutput, path: str) -> dict[str, Any]:
    with output.fs.open(path, "rb") as f:
        report = pq.read_table(f)
    return {"rows": report.num_rows, "head": [{k: (str(v)[:SNIPPET] if isinstance(v, str) else v) for k, v in r.items()}
                                              for r in report.slice(0, 10).to_pylist()]}


def format_summary(figures: dict[str, Any]) -> str:
    kept = figures["kept"]
    lines = [f"{figures['output']}: {figures['inputs']} inputs; conservation "
             f"{'OK' if figures['conservation_ok'] else 'FAILED'}",
             f"records by type: {json.dumps(figures['records'])}",
             f"responses that are not documents: {json.dumps(figures['skipped'])}", "", "funnel:"]
    for row in figures["funnel"]:
        extra = ""
        if "removed" in row:
            extra = f"  (-{row['removed']} removed, -{row['errors']} errors)"
        elif "bytes" in row:
            extra = f"  ({_mb(row['bytes'])} of text)"
        elif "tokens" in row:
            extra = f"  ({row['tokens']:,} tokens)"
        lines.append(f"  {row['step']:<22} {row['documents']:>12,}{extra}")
    per_token = figures["bytes_per_token"]
    for name, s in figures["stages"].items():
        share = s["removed"] / s["in"] if s["in"] else 0.0
        tokens = f", ≈{s['tokens_removed_estimate']:,} tokens" if s["tokens_removed_estimate"] is not None else ""
        lines.append(f"\n{name}: in {s['in']:,}, removed {s['removed']:,} ({share:.1%}), {_mb(s['bytes_removed'])}"
                     f"{tokens}, errors {s['errors']:,}")
        for reason, r in s["reasons"].items():
            lines.append(f"  {reason}: {r['documents']:,} documents, {_mb(r['bytes'])}")
            if "score_min" in r:
                lines.append(f"    score min {r['score_min']:.4g} / median {r['score_median']:.4g} / max "
                             f"{r['score_max']:.4g}; threshold {r['threshold']}")
            for e in r.get("examples", []):
                lines.append(f"    e.g. {e['url']}  score={e['score']}  “{e['text']}”")
    lines.append(f"\nkept: {kept['documents']:,} documents, {_mb(kept['bytes'])}")
    if figures["shards"]:
        sh = figures["shards"]
        lines.append(f"shards: {sh['shards']} {sh['format']} shards, {sh['documents']:,} documents, {sh['tokens']:,} "
                     f"{sh['tokenizer']} tokens ({per_token:.2f} bytes per token; tokens removed above are bytes at "
                     "this rate)")
    for stage, report in figures["reports"].items():
        lines.append(f"\nstats/{stage}_report.parquet: {report['rows']} rows")
        lines += ["  " + ", ".join(f"{k}={v}" for k, v in row.items()) for row in report["head"]]
    return "\n".join(lines)


def _mb(n: int) -> str:
    return f"{n / 1e6:,.2f} MB" if n >= 10_000 else f"{n:,} B"
