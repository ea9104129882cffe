"""``curate audit diff OUT_A OUT_B``: what changed between two runs over the same inputs (a threshold moved,
a stage was added): documents newly removed, newly kept, or removed by another stage or reason, counted by
transition (A's decision → B's) with examples, and the pipeline settings that differ.

A document's decision is ``kept``, ``removed`` (by a stage, for a reason) or ``error`` (in a stage). The
two runs are joined on ``id`` in DuckDB over their committed parts, reading only ``id``, ``removed_by``,
``reason``, ``score`` and ``threshold`` (errors: ``record_id`` and ``stage``); only the examples' URLs are
read afterwards. Documents whose id is in one run only (the runs read different inputs) are counted apart,
by their decision in that run; so are error rows without a record id (an unreadable record has none).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds

from curate.audit.run import RunOutput
from curate.io.fs import Location

HELP = "what changed between two runs (OUT OTHER): documents newly removed, newly kept, removed by another rule"
KINDS = ("newly_removed", "newly_kept", "changed")
_DECISION = pa.schema([("id", pa.string()), ("status", pa.string()), ("stage", pa.string()),
                       ("reason", pa.string()), ("score", pa.float64()), ("threshold", pa.float64())])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("other", help="the --output folder of the run to compare with (B; OUTPUT is A)")
    parser.add_argument("--json", action="store_true", help="print the comparison as JSON")
    parser.add_argument("--examples", type=int, default=3, help="examples per transition (0: none)")
    parser.add_argument("--out", "-o", default=None,
                        help="also write every document whose decision changed (id, kind, A's and B's decision) "
                             "to this Parquet file")


def run(args: argparse.Namespace, output: RunOutput) -> int:
    from curate.config import load_profile

    other = RunOutput(Location(args.other, dict(load_profile(args.config).storage_options)))
    figures = diff(output, other, examples=args.examples, out=args.out)
    print(json.dumps(figures, indent=1, default=str) if args.json else format_diff(figures))
    if args.out and not args.json:
        print(f"{figures['changed_documents']:,} changed documents -> {args.out}", file=sys.stderr)
    return 0


def diff(a: RunOutput, b: RunOutput, examples: int = 3, out: str | None = None) -> dict[str, Any]:
    """Every figure of the comparison, as plain data.

    One aggregate over the join gives every count; the changed documents alone are kept (in a DuckDB
    temporary table, which spills to disk) when examples or ``out`` need them.
    """
    con = _connect(a, b)
    groups = con.execute("""
        SELECT kind, a.status, a.stage, a.reason, b.status, b.stage, b.reason, count(*),
               count(*) FILTER (a.score IS DISTINCT FROM b.score)
        FROM joined GROUP BY ALL""").fetchall()
    count = {k: sum(g[7] for g in groups if g[0] == k) for k in ("only_a", "only_b", "unchanged", *KINDS)}
    both = count["unchanged"] + sum(count[k] for k in KINDS)
    transitions = [{"kind": g[0], "a": _decision(*g[1:4]), "b": _decision(*g[4:7]), "documents": g[7],
                    "examples": []} for g in groups if g[0] in KINDS]
    transitions.sort(key=lambda t: (-t["documents"], KINDS.index(t["kind"]), _label(t["a"]), _label(t["b"])))
    if transitions and (examples > 0 or out):
        con.execute("CREATE TEMP TABLE changed AS SELECT * FROM changes")
        if examples > 0:
            _examples(con, a, transitions, examples)
        if out:
            import pyarrow.parquet as pq

            pq.write_table(con.sql("SELECT * FROM changed ORDER BY id").to_arrow_table(), out)
    elif out:
        import pyarrow.parquet as pq

        pq.write_table(con.sql("SELECT * FROM changes").to_arrow_table(), out)  # no rows, the columns
    only = {side: {_label(_decision(*(g[1:4] if side == "a" else g[4:7]))): g[7]
                   for g in sorted(groups, key=lambda g: -g[7]) if g[0] == f"only_{side}"} for side in ("a", "b")}
    return {
        "a": a.out.url, "b": b.out.url,
        "documents": {"a": both + count["only_a"], "b": both + count["only_b"], "both": both,
                      "only_a": count["only_a"], "only_b": count["only_b"]},
        "unchanged": count["unchanged"],
        "unchanged_score_changed": sum(g[8] for g in groups if g[0] == "unchanged"),
        **{k: count[k] for k in KINDS}, "changed_documents": sum(count[k] for k in KINDS),
        "transitions": transitions, "only_a": only["a"], "only_b": only["b"],
        "errors_without_id": {"a": _errors_without_id(a), "b": _errors_without_id(b)},
        "settings": settings_diff(a.run.get("pipeline", {}), b.run.get("pipeline", {})),
    }


def _connect(a: RunOutput, b: RunOutput):
    import duckdb

    con = duckdb.connect()
    for side, output in (("a", a), ("b", b)):
        for kind in ("kept", "removed", "errors"):
            dataset = output.dataset(kind)
            con.register(f"{side}_{kind}", dataset if dataset is not None else _empty(kind))
        con.execute(f"""CREATE VIEW {side} AS
            SELECT id, 'kept' AS status, NULL::VARCHAR AS stage, NULL::VARCHAR AS reason, NULL::DOUBLE AS score,
                   NULL::DOUBLE AS threshold FROM {side}_kept
            UNION ALL SELECT id, 'removed', removed_by, reason, score, threshold FROM {side}_removed
            UNION ALL SELECT record_id, 'error', stage, NULL, NULL, NULL FROM {side}_errors
                      WHERE record_id IS NOT NULL""")
    con.execute("""CREATE VIEW joined AS
        SELECT coalesce(a.id, b.id) AS id, a, b,
               CASE WHEN a.id IS NULL THEN 'only_b' WHEN b.id IS NULL THEN 'only_a'
                    WHEN a.status = b.status AND a.stage IS NOT DISTINCT FROM b.stage
                         AND a.reason IS NOT DISTINCT FROM b.reason THEN 'unchanged'
                    WHEN a.status = 'kept' THEN 'newly_removed' WHEN b.status = 'kept' THEN 'newly_kept'
                    ELSE 'changed' END AS kind
        FROM a FULL OUTER JOIN b ON a.id = b.id""")
    # a struct per side keeps the columns apart; the flat view is what --out writes and the examples read
    con.execute("""CREATE VIEW changes AS
        SELECT id, kind, a.status AS a_status, a.stage AS a_stage, a.reason AS a_reason, a.score AS a_score,
               a.threshold AS a_threshold, b.status AS b_status, b.stage AS b_stage, b.reason AS b_reason,
               b.score AS b_score, b.threshold AS b_threshold
        FROM joined WHERE kind IN ('newly_removed', 'newly_kept', 'changed')""")
    return con


def _empty(kind: str) -> pa.Table:
    if kind == "errors":
        return pa.table({"record_id": pa.array([], pa.string()), "stage": pa.array([], pa.string())})
    names = ["id", "removed_by", "reason", "score", "threshold"]
    types = [pa.string(), pa.string(), pa.string(), pa.float64(), pa.float64()]
    return pa.table({n: pa.array([], t) for n, t in zip(names, types, strict=True)})


def _decision(status: str, stage: str | None, reason: str | None) -> dict[str, Any]:
    return {"status": status, "stage": stage, "reason": reason}


def _label(d: dict[str, Any]) -> str:
    if d["status"] == "kept":
        return "kept"
    if d["status"] == "error":
        return f"error in {d['stage']}"
    return f"{d['stage']}/{d['reason']}"


def _examples(con, a: RunOutput, transitions: list[dict[str, Any]], examples: int) -> None:
    """The first ``examples`` documents (by id) of every transition, with their URL from run A."""
    rows = con.sql(f"""
        SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY a_status, a_stage, a_reason, b_status, b_stage,
                                                                 b_reason ORDER BY id) AS n FROM changed)
        WHERE n <= {int(examples)} ORDER BY id""").to_arrow_table().to_pylist()
    urls = _urls(a, [r["id"] for r in rows])
    index = {(t["a"]["status"], t["a"]["stage"], t["a"]["reason"], t["b"]["status"], t["b"]["stage"],
              t["b"]["reason"]): t for t in transitions}
    for r in rows:
        key = (r["a_status"], r["a_stage"], r["a_reason"], r["b_status"], r["b_stage"], r["b_reason"])
        index[key]["examples"].append({
            "id": r["id"], "url": urls.get(r["id"]),
            "a": {"decision": _label(_decision(r["a_status"], r["a_stage"], r["a_reason"])),
                  "score": r["a_score"], "threshold": r["a_threshold"]},
            "b": {"decision": _label(_decision(r["b_status"], r["b_stage"], r["b_reason"])),
                  "score": r["b_score"], "threshold": r["b_threshold"]}})


def _urls(output: RunOutput, ids: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for kind in ("kept", "removed"):
        dataset = output.dataset(kind)
        if dataset is None or not ids:
            continue
        for row in dataset.to_table(columns=["id", "url"], filter=ds.field("id").isin(ids)).to_pylist():
            found.setdefault(row["id"], row["url"])
    return found


def _errors_without_id(output: RunOutput) -> int:
    errors = output.dataset("errors")
    if errors is None:
        return 0
    return errors.count_rows(filter=ds.field("record_id").is_null())


def settings_diff(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """The pipeline settings (as each run.json records them, defaults filled in) that differ, one dotted key
    each: ``gopher_quality.min_doc_words``, ``stages`` when the stage lists differ."""
    def stages(pipeline: dict[str, Any]) -> dict[str, Any]:
        found = {}
        for entry in pipeline.get("stages", []):
            for name, params in (entry.items() if isinstance(entry, dict) else [(str(entry), {})]):
                found[name if name not in found else f"{name}#{len(found)}"] = params
        return found

    out: list[dict[str, Any]] = []
    sa, sb = stages(a), stages(b)
    if list(sa) != list(sb):
        out.append({"key": "stages", "a": list(sa), "b": list(sb)})
    flat_a = {**_flatten({k: v for k, v in a.items() if k != "stages"}), **_flatten(sa)}
    flat_b = {**_flatten({k: v for k, v in b.items() if k != "stages"}), **_flatten(sb)}
    for key in sorted(set(flat_a) | set(flat_b)):
        if flat_a.get(key, "<absent>") != flat_b.get(key, "<absent>"):
            out.append({"key": key, "a": flat_a.get(key), "b": flat_b.get(key)})
    return out


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        flat: dict[str, Any] = {}
        for k, v in value.items():
            flat.update(_flatten(v, f"{prefix}{k}."))
        return flat
    return {prefix.rstrip("."): value}


def format_diff(f: dict[str, Any]) -> str:
    d = f["documents"]
    lines = [f"A {f['a']}\nB {f['b']}",
             f"documents: {d['both']:,} in both runs, {d['only_a']:,} only in A, {d['only_b']:,} only in B",
             f"  unchanged {f['unchanged']:,} (score moved for {f['unchanged_score_changed']:,}), newly removed "
             f"{f['newly_removed']:,}, newly kept {f['newly_kept']:,}, removed by another rule {f['changed']:,}"]
    if f["settings"]:
        lines += ["", "settings that differ (A → B):"]
        lines += [f"  {s['key']}: {_short(s['a'])} → {_short(s['b'])}" for s in f["settings"]]
    titles = {"newly_removed": "newly removed (kept in A)", "newly_kept": "newly kept (removed in A)",
              "changed": "removed in both, by another stage or reason"}
    for kind in KINDS:
        group = [t for t in f["transitions"] if t["kind"] == kind]
        if not group:
            continue
        lines += ["", f"{titles[kind]}: {f[kind]:,}"]
        for t in group:
            lines.append(f"  {_label(t['a'])} → {_label(t['b'])}: {t['documents']:,}")
            for e in t["examples"]:
                lines.append(f"    e.g. {e['id']}  {e['url'] or ''}  A {_scored(e['a'])}; B {_scored(e['b'])}")
    for side in ("a", "b"):
        if f[f"only_{side}"]:
            lines += ["", f"only in {side.upper()}: " + ", ".join(f"{k} {n:,}" for k, n in f[f"only_{side}"].items())]
    missing = f["errors_without_id"]
    if missing["a"] or missing["b"]:
        lines.append(f"errors without a record id (not compared): A {missing['a']:,}, B {missing['b']:,}")
    return "\n".join(lines)


def _scored(side: dict[str, Any]) -> str:
    if side["score"] is None:
        return side["decision"]
    threshold = "" if side["threshold"] is None else f" vs {side['threshold']:.4g}"
    return f"{side['decision']} (score {side['score']:.4g}{threshold})"


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 70 else text[:67] + "..."
