"""Documents/s of our heuristic filter stages against datatrove's filters, on the same documents, in one run.

Documents: the real corpus of ``tests/stages/test_heuristics.py`` (main-content text of the shared HTML
pages, the DCLM documents, the Wikipedia articles, Firefox forum chunks, reddit threads: 2,134 documents)
repeated to ``--docs``. Both sides run FineWeb's order: Gopher repetition, Gopher quality, C4 with
``filter_no_terminal_punct=False`` (which rewrites the text), FineWeb quality; a document removed by one step
is not seen by the next.

* ours: :func:`our_stages` on pyarrow batches of ``--batch`` rows, from cold (fresh process: setup and the
  word memos are counted), then once more with warm memos;
* datatrove 0.10: the same filters' ``filter(doc)`` on ``Document`` objects, one document at a time through
  all steps, as its pipeline generators do (no executor, so no process or I/O overhead is counted).

    HF_HUB_OFFLINE=1 PYTHONPATH=src python bench/filters.py [--docs 3000] [--batch 1000]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa

from curate.schema import conform
from curate.stage import DocumentStage
from curate.stages.heuristics import C4Quality, FineWebQuality, GopherQuality, GopherRepetition
from curate.stages.repetition import Repetition

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CURATE_SHARED_DATA", REPO.parent / "shared" / "data"))


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


def load_documents() -> list[str]:
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding

    texts = []
    for path in sorted((SHARED_DATA / "html").rglob("*.html.gz")):
        raw = gzip.decompress(path.read_bytes())
        texts.append(extract_plain_text(bytes_to_str(raw, detect_encoding(raw)), main_content=True))
    with open(SHARED_DATA / "text" / "dclm-human-quality-labels.shared.jsonl") as f:
        texts += [json.loads(line)["text"] for line in f]
    with gzip.open(SHARED_DATA / "text" / "enwiki-shortened-plaintext.shared.jsonl.gz", "rt") as f:
        texts += [json.loads(line)["text"] for line in f]
    lines = (SHARED_DATA / "text" / "nltk-webtext" / "firefox.txt").read_bytes().decode("latin-1").splitlines(True)
    texts += ["".join(lines[i : i + 50]) for i in range(0, len(lines), 50)]
    for path in sorted((SHARED_DATA / "text" / "reddit-2015").glob("*.json.gz")):
        raw = gzip.decompress(path.read_bytes()).decode()
        pairs = json.loads("[" + raw[2:] if raw.startswith("[,") else raw)
        comments = list(dict.fromkeys(text for pair in pairs for text in (pair["question"], pair["answer"])))
        texts += ["\n\n".join(comments[i : i + 10]) for i in range(0, len(comments), 10)]
    return texts


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
    parser.add_argument("--docs", type=int, default=3000, help="documents per side (the corpus, repeated)")
    parser.add_argument("--batch", type=int, default=1000, help="rows per pyarrow batch on our side")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    corpus = load_documents()
    texts = [corpus[i % len(corpus)] for i in range(args.docs)]
    batches = [
        conform(pa.table({"id": list(map(str, range(a, a + len(chunk)))), "text": chunk}))
        for a in range(0, len(texts), args.batch)
        if (chunk := texts[a : a + args.batch])
    ]
    print(f"{len(texts)} documents ({len(corpus)} distinct, {sum(map(len, texts)) / 1e6:.1f} M characters)")

    stages = our_stages()
    cold, ours_removed, ours_split = run_ours(batches, stages)
    warm, _, ours_warm_split = run_ours(batches, stages)
    theirs, theirs_removed, theirs_split = run_datatrove(texts, datatrove_filters())  # spaCy loads lazily, in here

    def rate(seconds: float) -> str:
        return f"{len(texts) / seconds:8.0f} docs/s ({seconds:6.1f} s)"

    print(f"ours, cold memos : {rate(cold)}   " + "  ".join(f"{k} {v:.1f}s" for k, v in ours_split.items()))
    print(f"ours, warm memos : {rate(warm)}   " + "  ".join(f"{k} {v:.1f}s" for k, v in ours_warm_split.items()))
    print(f"datatrove 0.10   : {rate(theirs)}   " + "  ".join(f"{k} {v:.1f}s" for k, v in theirs_split.items()))
    print(f"ratio ours/datatrove: {theirs / cold:.1f}x cold, {theirs / warm:.1f}x warm")
    print(f"removed, ours     : {dict(ours_removed)}")
    print(f"removed, datatrove: {dict(theirs_removed)}")


if __name__ == "__main__":
    main()
