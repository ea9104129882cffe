"""``curate audit sample OUT --stage S [--reason R] [-n 10] [--seed N]``: removed documents of one stage, drawn
at random but reproducibly, each with its score against the threshold and the part of the text that
triggered the rule.

The draw orders rows by a 64-bit xxh3 of ``(seed, id)`` and takes the ``n`` smallest, so one seed gives
one sample whatever the order or number of the parts (a run resumed on other workers draws the same
documents). The first pass reads only ``id``, ``reason``, ``score`` and ``threshold``, row group by row
group; the second reads the text and signal columns of just the row groups holding the chosen rows.

What "the part that triggered the rule" is depends on the stage:

* ``repetition``: the repeated span. The stage records how long its longest runs are but not where they
  are, so :func:`repeated_runs` finds them again: every period a character run can have (1–8) and the
  distances at which 8-character windows recur most often (a token loop's or a repeated block's period)
  are checked exactly by comparing the code points with themselves shifted, vectorised with numpy.
* ``contamination``: each matched assistant phrase in its sentence, with the stage's own matcher.
* ``exact_dedup`` / ``minhash_dedup`` (any removal with ``duplicate_of``): the kept twin, looked up in
  ``kept/`` (or wherever a later stage put it), both openings side by side with the similarity.
* ``c4_quality``'s ``lorem_ipsum`` / ``curly_bracket``: the line that has it.
* otherwise the opening, with the stage's signal columns (``<stage>_*``) that explain the score.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow.dataset as ds

from curate.audit.run import RunOutput

HELP = "removed documents of one stage (and reason), drawn by seed, with the span that triggered the rule"
CONTEXT = 80  # characters shown either side of a span
OPENING = 240  # characters of an opening
_BASE = ("id", "url", "reason", "score", "threshold", "text")
_DOCUMENT_COLUMNS = {"id", "url", "host", "source", "warc_path", "warc_offset", "fetch_time", "content_type",
                     "charset", "html", "text", "removed_by", "reason", "score", "threshold", "error"}
#: Window length whose recurrence distances propose long periods (token loops, repeated blocks).
_WINDOW = 8
_CANDIDATE_PERIODS = 32
_WHITESPACE = np.array([c for c in range(0x3001) if chr(c).isspace()], dtype=np.uint32)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stage", required=True, help="the stage whose removals are sampled (see `audit summary`)")
    parser.add_argument("--reason", default=None, help="only removals for this reason")
    parser.add_argument("-n", type=int, default=10, help="documents drawn (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="the draw: one seed always gives the same documents")
    parser.add_argument("--json", action="store_true", help="print the sample as JSON")


def run(args: argparse.Namespace, output: RunOutput) -> int:
    drawn = sample(output, args.stage, reason=args.reason, n=args.n, seed=args.seed)
    print(json.dumps(drawn, indent=1, default=str) if args.json else format_sample(drawn))
    return 0


def sample(output: RunOutput, stage: str, reason: str | None = None, n: int = 10, seed: int = 0) -> dict[str, Any]:
    """The drawn removals with their snippets, as plain data. Raises ValueError for a stage not in the run."""
    stages = output.stages()
    if stage not in stages:
        raise ValueError(f"no stage {stage!r} in this run; its stages: {', '.join(stages)}")
    if n < 0:
        raise ValueError("-n must be >= 0")
    reasons = dict(output.stats["stages"][stage]["reasons"])
    result: dict[str, Any] = {"output": output.out.url, "stage": stage, "reason": reason, "seed": seed,
                              "reasons": reasons, "removed": sum(reasons.values()) if reason is None else
                              reasons.get(reason, 0), "examples": []}
    dataset = output.dataset("removed", stage)
    if dataset is None or not result["removed"] or not n:
        return result
    where = None if reason is None else ds.field("reason") == reason
    chosen = _draw(dataset, where, n, seed)
    config = _stage_params(output, stage)
    rows = _read_chosen(dataset, chosen, _columns(dataset.schema.names, stage, stages))
    twins = _twins(output, [r["duplicate_of"] for r in rows if r.get("duplicate_of")])
    result["examples"] = [_example(stage, row, twins, config) for row in rows]
    return result


def draw_key(seed: int, id_: str) -> int:
    """The rank of a document in the draw of ``seed`` (smallest first)."""
    import xxhash

    return xxhash.xxh3_64_intdigest(id_.encode("utf-8", "surrogatepass"), seed=seed & 0xFFFF_FFFF_FFFF_FFFF)


def _draw(dataset: ds.Dataset, where: ds.Expression | None, n: int, seed: int) -> list[tuple[int, str, Any]]:
    """The ``n`` rows with the smallest draw keys, as (key, id, row-group fragment), keys ascending."""
    best: list[tuple[int, str, int]] = []
    groups: list[Any] = []
    for fragment in dataset.get_fragments(filter=where):
        for group in fragment.split_by_row_group(filter=where, schema=dataset.schema):
            ids = group.to_table(schema=dataset.schema, columns=["id"], filter=where)["id"].to_pylist()
            if not ids:
                continue
            groups.append(group)
            keys = np.fromiter((draw_key(seed, i) for i in ids), dtype=np.uint64, count=len(ids))
            if len(keys) > n:
                picked = np.argpartition(keys, n - 1)[:n]
            else:
                picked = np.arange(len(keys))
            best = sorted(best + [(int(keys[i]), ids[i], len(groups) - 1) for i in picked])[:n]
    return [(key, id_, groups[index]) for key, id_, index in best]


def _columns(names: list[str], stage: str, stages: list[str]) -> list[str]:
    """What the examples need: the triple, the text, the stage's signals and a global stage's own columns."""
    own = [c for c in names if c == stage or c.startswith(stage + "_")]
    extra = [c for c in names if c not in _DOCUMENT_COLUMNS and not c.startswith("_")
             and not any(c == s or c.startswith(s + "_") for s in stages)]
    return [c for c in dict.fromkeys([*_BASE, *own, *extra]) if c in names]


def _read_chosen(dataset: ds.Dataset, chosen: list[tuple[int, str, Any]], columns: list[str]) -> list[dict]:
    by_group: dict[int, tuple[Any, list[str]]] = {}
    for _, id_, group in chosen:
        by_group.setdefault(id(group), (group, []))[1].append(id_)
    found: dict[str, dict] = {}
    for group, ids in by_group.values():
        table = group.to_table(schema=dataset.schema, columns=columns, filter=ds.field("id").isin(ids))
        for row in table.to_pylist():
            found.setdefault(row["id"], row)
    return [found[id_] for _, id_, _ in chosen if id_ in found]


def _twins(output: RunOutput, ids: list[str]) -> dict[str, dict]:
    """The documents removals name as ``duplicate_of``: from ``kept/`` first, else from a later removal."""
    if not ids:
        return {}
    wanted = sorted(set(ids))
    found: dict[str, dict] = {}
    for kind in ("kept", "removed"):
        dataset = output.dataset(kind)
        if dataset is None:
            continue
        columns = [c for c in ("id", "url", "text", "removed_by", "reason") if c in dataset.schema.names]
        table = dataset.to_table(columns=columns, filter=ds.field("id").isin(wanted))
        for row in table.to_pylist():
            row["status"] = kind
            found.setdefault(row["id"], row)
        wanted = [i for i in wanted if i not in found]
        if not wanted:
            break
    return found


def _stage_params(output: RunOutput, stage: str) -> dict[str, Any]:
    for entry in output.run.get("pipeline", {}).get("stages", []):
        if isinstance(entry, dict) and stage in entry:
            return dict(entry[stage] or {})
    return {}


# --- what triggered the rule ---------------------------------------------------------------------------------


def _example(stage: str, row: dict[str, Any], twins: dict[str, dict], config: dict[str, Any]) -> dict[str, Any]:
    text = row.get("text") or ""
    own = {k: v for k, v in row.items() if (k == stage or k.startswith(stage + "_")) and v is not None}
    extra = {k: v for k, v in row.items() if k not in _BASE and k not in own and v is not None
             and k != "contamination_phrases"}
    example: dict[str, Any] = {"id": row["id"], "url": row["url"], "reason": row["reason"], "score": row["score"],
                               "threshold": row["threshold"], "characters": len(text),
                               "measured_by": [k for k, v in {**own, **extra}.items() if _equal(v, row["score"])],
                               "signals": {**own, **extra}}
    if row.get("duplicate_of"):
        example["snippet"] = _twin_snippet(text, row, twins.get(row["duplicate_of"]))
    elif stage == "repetition":
        example["snippet"] = _repetition_snippet(text, row["reason"], config)
    elif stage == "contamination":
        example["snippet"] = _phrase_snippet(text, row.get("contamination_phrases") or [])
    elif stage == "c4_quality" and row["reason"] in ("lorem_ipsum", "curly_bracket"):
        example["snippet"] = _line_snippet(text, row.get(f"c4_quality_{row['reason']}_line"))
    else:
        example["snippet"] = {"kind": "opening", "text": _flat(text[:OPENING])}
    return example


def _equal(value: Any, score: Any) -> bool:
    if score is None or isinstance(value, (bool, str, list, dict)):
        return False
    try:
        return abs(float(value) - float(score)) <= 1e-9 * max(1.0, abs(float(score)))
    except (TypeError, ValueError):
        return False


@dataclass(frozen=True)
class Run:
    """``copies`` back-to-back copies (the last maybe partial) of ``text[start:start + period]``."""

    start: int
    period: int
    span: int  # characters covered, from start

    @property
    def copies(self) -> int:
        return self.span // self.period


def repeated_runs(text: str, max_period: int = 8, window: int = _WINDOW, candidates: int = _CANDIDATE_PERIODS
                  ) -> list[Run]:
    """Per period, the longest stretch of ``text`` that repeats its first ``period`` characters at least
    twice, for periods 1..``max_period`` and the ``candidates`` distances at which ``window``-character
    windows most often recur (the period of a token loop or of a repeated line or block).

    Exact: each period is checked by comparing the code points with themselves shifted by it. Runs made
    only of white space are left out, and so, for periods above 1, runs of one repeated character (the
    period-1 run is that run), as the repetition stage counts them.
    """
    codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    n = len(codes)
    if n < 2:
        return []
    periods = set(range(1, min(max_period, n // 2) + 1)) | _recurring_distances(codes, window, candidates)
    space_before = np.concatenate([[0], np.cumsum(np.isin(codes, _WHITESPACE))])
    same_before = np.concatenate([[0], np.cumsum(codes[1:] == codes[:-1]), [0]])
    runs = []
    for p in sorted(d for d in periods if d <= n // 2):
        equal = codes[p:] == codes[:-p]
        edges = np.flatnonzero(np.diff(equal, prepend=False, append=False))
        starts, stops = edges[0::2], edges[1::2]
        keep = stops - starts >= p  # at least one full extra copy
        starts, spans = starts[keep], stops[keep] - starts[keep] + p
        keep = space_before[starts + spans] - space_before[starts] < spans
        if p > 1:
            keep &= same_before[starts + spans - 1] - same_before[starts] < spans - 1
        if keep.any():
            best = int(np.argmax(np.where(keep, spans, -1)))
            runs.append(Run(int(starts[best]), p, int(spans[best])))
    return runs


def _recurring_distances(codes: np.ndarray, window: int, candidates: int) -> set[int]:
    """The most frequent distances from a window of the text back to its nearest earlier copy."""
    if len(codes) <= window:
        return set()
    weights = np.random.default_rng(0x5A3).integers(1, 2**63, size=window, dtype=np.uint64) | np.uint64(1)
    windows = np.lib.stride_tricks.sliding_window_view(codes.astype(np.uint64), window)
    hashes = windows @ weights  # wraps modulo 2**64: a polynomial-free but well-mixed fingerprint
    order = np.argsort(hashes, kind="stable")
    same = hashes[order[1:]] == hashes[order[:-1]]
    distance = order[1:][same] - order[:-1][same]  # stable sort: the earlier copy comes first
    if not len(distance):
        return set()
    values, counts = np.unique(distance, return_counts=True)
    top = values[np.argsort(-counts, kind="stable")[:candidates]]
    return {int(d) for d in top}


def _trigger(runs: list[Run], text: str, reason: str, config: dict[str, Any]) -> Run | None:
    """The run the rule saw: the longest one-character run for ``char_run``, the longest 2–8-character n-gram
    run (not one character repeated) for ``char_ngram_run``, else the run covering the most characters."""
    if reason == "char_run":
        pool = [r for r in runs if r.period == 1]
    elif reason == "char_ngram_run":
        low, high = config.get("min_char_period", 2), config.get("max_char_period", 8)
        pool = [r for r in runs if low <= r.period <= high]
    else:
        pool = runs
    pool = pool or runs
    return max(pool, key=lambda r: (r.span, -r.period, -r.start)) if pool else None


def _repetition_snippet(text: str, reason: str, config: dict[str, Any]) -> dict[str, Any]:
    high = max(8, int(config.get("max_char_period", 8)))
    run = _trigger(repeated_runs(text, max_period=high), text, reason, config)
    if run is None:
        return {"kind": "opening", "text": _flat(text[:OPENING])}
    unit = text[run.start:run.start + run.period]
    return {"kind": "repeated_span", "start": run.start, "period": run.period, "copies": run.copies,
            "span": run.span, "unit": unit, "before": _before(text, run.start),
            "after": _after(text, run.start + run.span)}


def _phrase_snippet(text: str, phrases: list[str], shown: int = 3) -> dict[str, Any]:
    """Each matched phrase in context, found with the contamination stage's own pattern."""
    from curate.stages.contamination import normalize_phrase, phrase_pattern

    if not phrases:
        return {"kind": "opening", "text": _flat(text[:OPENING])}
    regex = re.compile(phrase_pattern(phrases), re.IGNORECASE | re.ASCII)
    matches = list(regex.finditer(text))
    canonical = {normalize_phrase(p): p for p in phrases}
    found = [{"phrase": canonical.get(normalize_phrase(m.group(0)), m.group(0)), "start": m.start(),
              "match": m.group(0), "before": _before(text, m.start()), "after": _after(text, m.end())}
             for m in matches[:shown]]
    return {"kind": "phrases", "phrases": phrases, "matches": len(matches), "shown": found}


def _twin_snippet(text: str, row: dict[str, Any], twin: dict[str, Any] | None) -> dict[str, Any]:
    """Both openings and, since near copies usually open alike, where the two texts first differ."""
    snippet: dict[str, Any] = {"kind": "twin", "duplicate_of": row["duplicate_of"],
                               "similarity": row.get("similarity", 1.0 if row["reason"] == "exact_duplicate"
                                                     else None),
                               "opening": _flat(text[:OPENING])}
    if twin is None:
        snippet["twin"] = None  # e.g. a document of an earlier corpus the run deduplicated against
        return snippet
    mine, theirs = _flat(text), _flat(twin.get("text") or "")
    differs = len(os.path.commonprefix([mine, theirs]))
    snippet["twin"] = {"id": twin["id"], "url": twin.get("url"), "status": twin["status"],
                       "removed_by": twin.get("removed_by"), "reason": twin.get("reason"),
                       "opening": theirs[:OPENING]}
    snippet["first_difference"] = None if mine == theirs else {
        "at": differs, "this": mine[max(0, differs - 40):differs + CONTEXT],
        "twin": theirs[max(0, differs - 40):differs + CONTEXT]}
    return snippet


def _line_snippet(text: str, index: float | None) -> dict[str, Any]:
    """Line ``index`` of ``text.splitlines()`` (the c4 stage's numbering), with the non-blank lines around it."""
    lines = text.splitlines()
    if index is None or not 0 <= int(index) < len(lines):
        return {"kind": "opening", "text": _flat(text[:OPENING])}
    i = int(index)
    before = next((_flat(line) for line in reversed(lines[:i]) if line.strip()), "")
    after = next((_flat(line) for line in lines[i + 1:] if line.strip()), "")
    return {"kind": "line", "line": i, "text": _flat(lines[i])[:2 * OPENING], "before": before[-CONTEXT:],
            "after": after[:CONTEXT]}


def _flat(text: str) -> str:
    return " ".join(text.split())


def _before(text: str, start: int) -> str:
    """Up to CONTEXT characters before ``start``, white space collapsed (a space kept where one touches it)."""
    piece = text[max(0, start - CONTEXT):start]
    flat = _flat(piece)
    return flat + " " if flat and piece[-1].isspace() else flat


def _after(text: str, end: int) -> str:
    piece = text[end:end + CONTEXT]
    flat = _flat(piece)
    return " " + flat if flat and piece[0].isspace() else flat


# --- text -----------------------------------------------------------------------------------------------------


def format_sample(drawn: dict[str, Any]) -> str:
    stage, reason = drawn["stage"], drawn["reason"]
    which = f"{stage}" + (f" (reason {reason})" if reason else "")
    if not drawn["removed"]:
        if reason and drawn["reasons"]:
            return (f"{which}: no removals for this reason; {stage} removed for: "
                    + ", ".join(f"{r} ({c:,})" for r, c in drawn["reasons"].items()))
        return f"{which}: removed no documents in {drawn['output']}"
    lines = [f"{which}: {drawn['removed']:,} removed; {len(drawn['examples'])} drawn with seed {drawn['seed']}"]
    for i, e in enumerate(drawn["examples"], 1):
        lines += ["", f"[{i}] {e['id']}  {e['url'] or ''}",
                  f"    {e['reason']}: score {_num(e['score'])} vs threshold {_num(e['threshold'])}"
                  + (f" ({', '.join(e['measured_by'])})" if e["measured_by"] else "")
                  + f"; {e['characters']:,} characters"]
        lines += ["    " + line for line in _format_snippet(e["snippet"])]
        if e["signals"]:
            lines.append("    signals: " + ", ".join(f"{k}={_short(v)}" for k, v in e["signals"].items()))
    return "\n".join(lines)


def _format_snippet(s: dict[str, Any]) -> list[str]:
    if s["kind"] == "repeated_span":
        rest = s["span"] - s["copies"] * s["period"]
        tail = f" and {rest} characters of one more" if rest else ""
        unit = f"{s['period']} character" + ("s" if s["period"] != 1 else "")
        return [f"repeated: {s['copies']:,} copies of a unit of {unit}{tail} ({s['span']:,} "
                f"characters from {s['start']:,})",
                f"  “…{s['before']}⟦{_visible(s['unit'])}⟧×{s['copies']}{s['after']}…”"]
    if s["kind"] == "phrases":
        out = [f"phrases: {s['matches']} matches of {', '.join(repr(p) for p in s['phrases'])}"]
        return out + [f"  at {m['start']:,}: “…{m['before']}⟦{m['match']}⟧{m['after']}…”" for m in s["shown"]]
    if s["kind"] == "twin":
        similarity = ("" if s["similarity"] is None else " (identical after normalisation)"
                      if s["similarity"] == 1.0 else f" (similarity {_num(s['similarity'])})")
        out = [f"duplicate of {s['duplicate_of']}{similarity}", f"  this: “{s['opening'][:160]}”"]
        twin = s["twin"]
        if twin is None:
            return out + ["  twin: not in this run's output (a document of an earlier corpus?)"]
        where = "kept" if twin["status"] == "kept" else f"later removed by {twin['removed_by']} ({twin['reason']})"
        out.append(f"  twin: “{twin['opening'][:160]}”  [{where}; {twin['url']}]")
        first = s["first_difference"]
        if first is None:
            return out + ["  the texts are identical (white space aside)"]
        return out + [f"  first difference at character {first['at']:,}:", f"    this: “…{first['this']}…”",
                      f"    twin: “…{first['twin']}…”"]
    if s["kind"] == "line":
        return [f"line {s['line']}: “{s['text']}”", f"  (after “{s['before']}”, before “{s['after']}”)"]
    return [f"opening: “{s['text']}”"]


def _visible(unit: str) -> str:
    return unit.replace("\n", "\\n").replace("\t", "\\t")


def _num(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."
