"""``curate audit pii OUT [--kind K] [-n 10] [--seed N]``: what the ``pii`` stage found and did, with
before/after snippets.

Totals per kind come from the ``pii_<kind>_count`` columns of kept and removed documents. The examples
are documents drawn by seed (as ``audit sample`` draws) among those with a span of the kind; each span
is shown in its context *after* the stage (the placeholder, or the value itself for ``tag`` kinds) and
*before* it. The stage writes no original value unless it ran with ``keep_originals``, so "before" shows
the value's shape (every letter and digit as ``•``) by default: enough to judge a detection ("•••@•••.de",
"+•• •• •••••") without the audit putting the personal data back.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import pyarrow.compute as pc
import pyarrow.dataset as ds

from curate.audit.run import RunOutput
from curate.audit.sample import _draw, _read_chosen

HELP = "what the pii stage found per kind, and drawn documents with before/after snippets of each span"
CONTEXT = 60  # characters either side of a span


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kind", default=None, help="only documents with this kind (email, phone, …)")
    parser.add_argument("-n", type=int, default=10, help="documents drawn (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="the draw: one seed always gives the same documents")
    parser.add_argument("--json", action="store_true", help="print as JSON")


def run(args: argparse.Namespace, output: RunOutput) -> int:
    found = audit_pii(output, kind=args.kind, n=args.n, seed=args.seed)
    print(json.dumps(found, indent=1, default=str) if args.json else format_pii(found))
    return 0


def audit_pii(output: RunOutput, kind: str | None = None, n: int = 10, seed: int = 0) -> dict[str, Any]:
    """Totals and drawn examples as plain data. Raises ValueError when the run has no pii stage (or kind)."""
    if "pii" not in output.stages():
        raise ValueError(f"no pii stage in this run; its stages: {', '.join(output.stages())}")
    totals: dict[str, dict[str, int]] = {}
    examples: list[dict[str, Any]] = []
    for status in ("kept", "removed"):
        dataset = output.dataset(status)
        if dataset is None:
            continue
        counts = [c for c in dataset.schema.names if c.startswith("pii_") and c.endswith("_count")]
        if not counts:
            continue
        table = dataset.to_table(columns=counts)
        for column in counts:
            name = column.removeprefix("pii_").removesuffix("_count")
            entry = totals.setdefault(name, {"spans": 0, "documents": 0})
            values = pc.fill_null(table[column], 0)
            entry["spans"] += int(pc.sum(values).as_py() or 0)
            entry["documents"] += int(pc.sum(pc.greater(values, 0)).as_py() or 0)
    if kind is not None and kind not in totals:
        raise ValueError(f"kind {kind!r} was not enabled in this run's pii stage; kinds: {', '.join(totals)}")
    for status in ("kept", "removed"):
        dataset = output.dataset(status)
        if dataset is None or "pii_spans" not in dataset.schema.names or not n:
            continue
        columns = [c for c in dataset.schema.names if c.startswith("pii_") and c.endswith("_count")]
        wanted = [f"pii_{kind}_count"] if kind else columns
        where = None
        for column in wanted:
            term = ds.field(column) > 0
            where = term if where is None else where | term
        chosen = _draw(dataset, where, n, seed)
        picked = ("id", "url", "text", "removed_by", "reason", "pii_spans")
        for row in _read_chosen(dataset, chosen, [c for c in picked if c in dataset.schema.names]):
            examples.append({"status": status, "id": row["id"], "url": row.get("url"),
                             "removed_by": row.get("removed_by"), "reason": row.get("reason"),
                             "spans": [_snippets(row["text"] or "", span) for span in row["pii_spans"] or []
                                       if kind is None or span["kind"] == kind]})
    return {"output": output.out.url, "kind": kind, "seed": seed, "totals": totals,
            "examples": sorted(examples, key=lambda e: e["status"] != "kept")[:n]}


def _snippets(text: str, span: dict[str, Any]) -> dict[str, Any]:
    start, end = span["start"], span["end"]
    left, right = text[max(0, start - CONTEXT):start], text[end:end + CONTEXT]
    original = span.get("original")
    return {"kind": span["kind"], "after": _squash(left) + " «" + text[start:end] + "» " + _squash(right),
            "before": _squash(left) + " «" + (original if original is not None else span["masked"]) + "» "
            + _squash(right), "original_kept": original is not None}


def _squash(text: str) -> str:
    return " ".join(text.split())


def format_pii(found: dict[str, Any]) -> str:
    lines = [f"pii in {found['output']}" + (f" (kind {found['kind']})" if found["kind"] else "")]
    for kind, entry in sorted(found["totals"].items(), key=lambda kv: -kv[1]["spans"]):
        lines.append(f"  {kind:13s} {entry['spans']:8d} spans in {entry['documents']} documents")
    for example in found["examples"]:
        where = example["status"] + (f" (removed by {example['removed_by']}: {example['reason']})"
                                     if example["removed_by"] else "")
        lines.append(f"\n{example['id']}  {example['url'] or ''}  [{where}]")
        for span in example["spans"][:5]:
            shape = "original" if span["original_kept"] else "shape"
            lines.append(f"  {span['kind']}\n    before ({shape}): …{span['before']}…")
            lines.append(f"    after:  …{span['after']}…")
        if len(example["spans"]) > 5:
            lines.append(f"  … {len(example['spans']) - 5} more spans")
    return "\n".join(lines)
