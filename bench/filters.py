"""Documents/s of our heuristic filter stages against datatrove's filters, on the same distinct documents.

Documents: the distinct real documents of ``bench/texts.py`` (2,951: main-content text of the shared HTML
pages, DCLM, Wikipedia and WikiText articles, news, speeches, forum and reddit threads; 13.5 M
characters), each scored once. Both sides keep per-process memos of what they have split before (ours
per whitespace chunk, spaCy's tokenizer cache in datatrove), so a document scored twice would cost
either side almost nothing; no document repeats, and the figure is the rate a fresh worker sees on
crawl text. Both sides run FineWeb's order: Gopher repetition, Gopher quality, C4 with
``filter_no_terminal_punct=False`` (which rewrites the text), FineWeb quality; a document removed by one
step is not seen by the next.

* ours: :func:`our_stages` on pyarrow batches of ``--batch`` rows, in this process from cold (setup and
  filling the memos are counted);
* datatrove 0.10: the same filters' ``filter(doc)`` on ``Document`` objects, one document at a time through
  all steps, as its pipeline generators do (no executor, so no process or I/O overhead is counted).

    python bench/filters.py [--docs 2951] [--batch 1000]
    python bench/filters.py --smoke        # 40 short documents: seconds, every code path
"""

from __future__ import annotations

import argparse
import os
import time
from collections import Counter

import pyarrow as pa

from curate.schema import conform
from curate.stage import DocumentStage
from curate.stages.heuristics import C4Quality, FineWebQuality, GopherQuality, GopherRepetition
from curate.stages.repetition import Repetition
from texts import distinct_documents

#: Our stage name ↔ datatrove's filter class, for the removal counts side by side.
PEERS = {"gopher_repetition": "GopherRepetitionFilter", "gopher_quality": "GopherQualityFilter",
         "c4_quality": "C4QualityFilter", "fineweb_quality": "FineWebQualityFilter"}


def our_stages() -> list[DocumentStage]:
    """Our side, in pipeline order: the four heuristic filters, then the pathological-sequence detector
    (which datatrove does not have: its cost is counted on our side only, so the ratio is conservative)."""
    return [
        GopherRepetition(),
        GopherQuality(),
        C4Quality(C4Quality.Params(filter_no_terminal_punct=False, remove_lines=True)),
        FineWebQuality(),
        Repetition(),
    ]


def datatrove_filters() -> list:
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )

    return [
        GopherRepetitionFilter(),
        GopherQualityFilter(),
        C4QualityFilter(filter_no_terminal_punct=False),
        FineWebQualityFilter(),
    ]


def run_ours(batches: list[pa.Table], stages: list[DocumentStage]) -> tuple[float, Counter, dict[str, float]]:
    """Seconds, removals per stage and seconds per stage (setup included: it is part of a cold start)."""
    per_stage = dict.fromkeys((s.name for s in stages), 0.0)
    removed: Counter = Counter()
    start = time.perf_counter()
    for batch in batches:
        for stage in stages:
            t = time.perf_counter()
            batch = stage(batch)
            per_stage[stage.name] += time.perf_counter() - t
        removed.update(r for r in batch.column("removed_by").to_pylist() if r is not None)
    return time.perf_counter() - start, removed, per_stage


def run_datatrove(texts: list[str], filters: list) -> tuple[float, Counter, dict[str, float]]:
    from datatrove.data import Document

    names = [type(f).__name__ for f in filters]
    per_filter = dict.fromkeys(names, 0.0)
    removed: Counter = Counter()
    docs = [Document(text=text, id=str(i)) for i, text in enumerate(texts)]
    start = time.perf_counter()
    for doc in docs:
        for name, f in zip(names, filters, strict=True):
            t = time.perf_counter()
            verdict = f.filter(doc)
            per_filter[name] += time.perf_counter() - t
            if verdict is not True:
                removed[name] += 1
                break
    return time.perf_counter() - start, removed, per_filter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=None, help="distinct documents per side (default: all)")
    parser.add_argument("--batch", type=int, default=1000, help="rows per pyarrow batch on our side")
    parser.add_argument("--smoke", action="store_true", help="40 documents of at most 4,000 characters, batches of 10")
    args = parser.parse_args()
    if args.smoke:
        args.docs, args.batch = 40, 10
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    texts = [text for _, text in distinct_documents(args.docs, 4_000 if args.smoke else None)]
    batches = [
        conform(pa.table({"id": list(map(str, range(a, a + len(chunk)))), "text": chunk}))
        for a in range(0, len(texts), args.batch)
        if (chunk := texts[a : a + args.batch])
    ]
    print(f"{len(texts)} distinct documents, each scored once ({sum(map(len, texts)) / 1e6:.1f} M characters)")

    ours, ours_removed, ours_split = run_ours(batches, our_stages())
    theirs, theirs_removed, theirs_split = run_datatrove(texts, datatrove_filters())  # spaCy loads lazily, in here

    def rate(seconds: float) -> str:
        return f"{len(texts) / seconds:8.0f} docs/s ({seconds:6.1f} s)"

    print(f"ours, from cold  : {rate(ours)}   " + "  ".join(f"{k} {v:.1f}s" for k, v in ours_split.items()))
    print(f"datatrove 0.10   : {rate(theirs)}   " + "  ".join(f"{k} {v:.1f}s" for k, v in theirs_split.items()))
    print(f"ratio ours/datatrove: {theirs / ours:.1f}x (distinct documents, ours also runs repetition)")
    print("removed, ours / datatrove: " + ", ".join(
        f"{name} {ours_removed[name]}/{theirs_removed[peer]}" for name, peer in PEERS.items())
          + f"; repetition (ours only) {ours_removed['repetition']}")


if __name__ == "__main__":
    main()
