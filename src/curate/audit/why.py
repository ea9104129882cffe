"""``curate audit why OUT URL_OR_ID``: the story of one document — which stage removed it, by which rule,
its score against the threshold and every signal the stages measured; or that it was kept, and where its
tokens are in the shards; or the error that stopped it.

The lookup is a filter on ``id``/``url`` pushed into the Parquet scan (row groups whose statistics exclude
the key are skipped), over committed parts only.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from curate.audit.run import RunOutput

HELP = "the full story of one document (by URL or id): removed by which stage and rule, or kept (and its shard)"
_TEXT = 300


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("key", help="the document's URL or id")
    parser.add_argument("--json", action="store_true", help="print the story as JSON")


def run(args: argparse.Namespace, output: RunOutput) -> int:
    stories = why(output, args.key)
    if args.json:
        print(json.dumps(stories, indent=1, default=str))
    else:
        print("\n\n".join(format_story(s) for s in stories) if stories else
              f"{args.key}: no document with this URL or id in {output.out.url}")
    return 0 if stories else 1


def why(output: RunOutput, key: str) -> list[dict[str, Any]]:
    """Every document whose id or URL is ``key`` (a URL may have been crawled more than once)."""
    stories = []
    order = {name: i for i, name in enumerate(output.stages())}
    for kind in ("kept", "removed"):
        for row in output.find(kind, (ds.field("id") == key) | (ds.field("url") == key)).to_pylist():
            stories.append(_story(kind, row, output))
    if output.paths("errors"):
        for row in output.find("errors", ds.field("record_id") == key).to_pylist():
            stories.append({"status": "error", "id": row["record_id"], "stage": row["stage"], "error": row["error"],
                            "input": row["input"], "offset": row["offset"]})
    return sorted(stories, key=lambda s: (s["status"] != "kept", order.get(s.get("stage"), len(order)), s["id"]))


def _story(kind: str, row: dict[str, Any], output: RunOutput) -> dict[str, Any]:
    text = row.pop("text", None) or ""
    base = {"id": row["id"], "url": row["url"], "source": row.get("source"), "input": row.get("warc_path"),
            "offset": row.get("warc_offset"), "fetch_time": row.get("fetch_time"), "language": row.get("language"),
            "characters": len(text), "text": text[:_TEXT]}
    triple = {"removed_by", "reason", "score", "threshold"}
    documented = set(base) | triple | {"warc_path", "warc_offset", "host", "content_type", "charset", "html"}
    boilerplate = row.pop("extract_boilerplate", None)  # the extract engine curate's cut lines
    signals = {k: v for k, v in sorted(row.items()) if k not in documented and v is not None}
    if boilerplate:
        base["boilerplate"] = boilerplate
    if kind == "kept":
        return {"status": "kept", **base, "signals": signals, "shards": _in_shards(output, row["id"])}
    story = {"status": "removed", "stage": row["removed_by"], "reason": row["reason"], "score": row["score"],
             "threshold": row["threshold"], **base, "signals": signals}
    if row.get("duplicate_of"):
        story["kept_twin"] = row["duplicate_of"]
    return story


def _in_shards(output: RunOutput, id_: str) -> list[dict[str, Any]]:
    """Where the document's copies are: shard, position in it, token count (none if it was not drawn)."""
    manifest = output.shards
    if not manifest:
        return []
    found = []
    for shard in manifest["shards"]:
        with output.fs.open(f"{output.root}/shards/{shard['name']}.docs.parquet", "rb") as f:
            docs = pq.read_table(f, columns=["id", "n_tokens"])
        for index in pc.indices_nonzero(pc.equal(docs["id"], id_)).to_pylist():
            found.append({"shard": shard["name"], "document": index, "tokens": docs["n_tokens"][index].as_py()})
    return found


def format_story(story: dict[str, Any]) -> str:
    head = f"{story['id']}  {story.get('url') or ''}"
    if story["status"] == "error":
        return f"{head}\n  ERROR in {story['stage']}: {story['error']}\n  input {story['input']} @ {story['offset']}"
    lines = [head, f"  from {story['input']} @ {story['offset']}, fetched {story['fetch_time']}, source "
                   f"{story['source']}, language {story['language']}, {story['characters']:,} characters"]
    if story["status"] == "kept":
        where = ", ".join(f"{s['shard']}#{s['document']} ({s['tokens']} tokens)" for s in story["shards"])
        lines.insert(1, "  KEPT" + (f"; in the shards at {where}" if where else ""))
    else:
        twin = f"; kept twin {story['kept_twin']}" if "kept_twin" in story else ""
        lines.insert(1, f"  REMOVED by {story['stage']}: {story['reason']} (score {story['score']}, threshold "
                        f"{story['threshold']}){twin}")
    if story["signals"]:
        lines.append("  signals: " + ", ".join(f"{k}={_short(v)}" for k, v in story["signals"].items()))
    lines.append(f"  text: “{' '.join(story['text'].split())[:200]}”")
    if story.get("boilerplate"):
        cut = story["boilerplate"].split("\n")
        shown = " | ".join(cut)[:300]
        lines.append(f"  cut as boilerplate by extract ({len(cut)} lines, share "
                     f"{story['signals'].get('extract_boilerplate_share', 0):.1%}): “{shown}”")
    return "\n".join(lines)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."
