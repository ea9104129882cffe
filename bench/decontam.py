"""Decontamination: the n-gram index's build time and size, and the ``decontaminate`` stage's docs/s per core
against the heuristic filters, on the same distinct documents, in the same run.

**Evaluation set.** The words (white-space tokens) of the distinct real documents of ``bench/texts.py``
(2,951 documents, 2.2 M words), cut into windows: one starts at every 20th word of a document, and window k
(counted over the whole corpus) has ``20 + 13k mod 41`` words (20-60, 40 on average; a window stops at its
document's end and none has under 20 words). That is 109,982 items, written as ``{"id", "text"}`` JSONL
(``bench/_work/decontam/corpus_windows.jsonl``, id = document key and first word); ``--items`` keeps that
many, evenly spaced. Consecutive windows overlap, so an n-gram of the corpus is in one to three items.

**(a) Build.** ``build_index(read_eval_items(...))`` in this process (reading the JSONL counted), 13-grams,
then ``curate decontam build EVAL -o INDEX --name corpus_windows`` as a subprocess, end to end (interpreter
and imports counted); both must give an index of the same items and distinct n-grams. Printed: items,
distinct n-grams, (n-gram, item) entries, MB, seconds, items/s.

**(b) Stage.** ``Decontaminate`` with that index, in ``remove`` and ``cut`` mode (``min_matches`` 1), over the
same documents in pyarrow batches of ``--batch`` rows, against ``bench/filters.py``'s :func:`our_stages`
(the FineWeb heuristic filters) from cold in this process; then with a small index, WikiText-2's validation
file alone (one item per non-blank line, the 8-word minimum skipping its headings), to show how the rate
depends on the index's size. Each pass builds its stage inside the timing (setup maps the index), one
process, one core. The documents the items come from are the ones looked up, so most documents are flagged:
that shows the matching works, and ``cut`` then has to cut nearly every document (its worst case). The
remove pass with the big index runs again last: the difference is drift on a shared machine.

An item of 8-12 words is indexed whole, and then every document's 8- to 12-grams are looked up too (the
index's "word lengths looked up"): a few dozen such windows (tables, WikiText headings) among the 110,000
make every length a lookup of its own. So each index is also built with ``min_item_words`` 13 (those items
skipped, only 13-grams looked up), and the remove pass timed with it, to tell the index's size from its
lengths.

    python bench/decontam.py [--items N] [--docs 2951] [--batch 1000]
    python bench/decontam.py --smoke   # 5,000 items of 200 documents' windows, 200 documents: seconds
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pii import arrow_batches, rate, time_filters
from texts import REPO, curate_cmd, distinct_documents, shared_data

from curate.decontam.index import BuildReport, NgramIndex, build_index, read_eval_items
from curate.decontam.stage import Decontaminate, DecontaminateParams

WORK = REPO / "bench" / "_work" / "decontam"
NAME = "corpus_windows"
#: Every window starts this many words after the previous one in its document; none is shorter.
STRIDE = MIN_WORDS = 20
MAX_WORDS = 60
#: The full evaluation set must have at least this many items (the issue's size).
FULL_ITEMS = 100_000


def windows(documents: list[tuple[str, str]]) -> list[dict[str, str]]:
    """Evaluation items: word windows of every document (see the module docstring), in corpus order."""
    items: list[dict[str, str]] = []
    for key, text in documents:
        words = text.split()
        for start in range(0, len(words) - MIN_WORDS + 1, STRIDE):
            size = MIN_WORDS + (13 * len(items)) % (MAX_WORDS - MIN_WORDS + 1)
            items.append({"id": f"{key}#{start}", "text": " ".join(words[start : start + size])})
    return items


def write_eval(items: list[dict[str, str]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(item, ensure_ascii=False) + "\n" for item in items)


def relative(path: Path) -> str:
    """``path`` as typed from the repository root, as the index headers record their sources (so that an index
    does not depend on where the checkout is)."""
    return os.path.relpath(path, REPO)


def read_back(report: BuildReport) -> None:
    """Exit unless the index file gives back its items (a header whose section offsets are wrong does not)."""
    try:
        rows = NgramIndex(report.path).table.num_rows
    except OSError as exc:
        raise SystemExit(f"{report.path}: the index does not read back ({exc})") from exc
    if rows != report.items:
        raise SystemExit(f"{report.path}: {rows} items read back, {report.items} written")


def build(eval_path: Path, index_path: Path) -> int:
    """(a): the index built in process and by the CLI, timed; prints both lines and returns its items."""
    start = time.perf_counter()
    items = read_eval_items([str(eval_path)], ["text"], "id", NAME)
    report = build_index(items, index_path, sources=[relative(eval_path)])
    seconds = time.perf_counter() - start
    read_back(report)
    print(f"index build (build_index, 1 process): {report.items} items, {report.distinct} distinct 13-grams, "
          f"{report.entries} entries, {report.bytes / 1e6:.1f} MB, {seconds:.2f} s, "
          f"{report.items / seconds:.0f} items/s; word lengths looked up: {NgramIndex(index_path).lengths}")
    cli_index = index_path.with_name("cli-" + index_path.name)
    start = time.perf_counter()
    subprocess.run([*curate_cmd(), "decontam", "build", relative(eval_path), "-o", str(cli_index), "--name", NAME],
                   check=True, capture_output=True, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    seconds = time.perf_counter() - start
    header = NgramIndex(cli_index).header
    same = header["items"] == report.items and header["distinct"] == report.distinct
    print(f"curate decontam build (CLI, end to end): {header['items']} items, {header['distinct']} distinct 13-grams, "
          f"{cli_index.stat().st_size / 1e6:.1f} MB, {seconds:.2f} s, {header['items'] / seconds:.0f} items/s; "
          f"same index as build_index: {'OK' if same else 'NO'}")
    if not same:
        raise SystemExit("the CLI's index differs from build_index's")
    return report.items


def variant(label: str, source: Path, path: Path, min_item_words: int, name: str | None = None) -> int:
    """Another index for the stage passes, built in process; prints its line and returns its items."""
    report = build_index(read_eval_items([str(source)], ["text"], "id", name), path, min_item_words=min_item_words,
                         sources=[relative(source)])
    read_back(report)
    print(f"{label} (--min-item-words {min_item_words}): {report.items} items ({report.skipped_short} shorter "
          f"skipped), {report.distinct} distinct 13-grams, {report.bytes / 1e6:.1f} MB, {report.seconds:.2f} s; "
          f"word lengths looked up: {NgramIndex(path).lengths}")
    return report.items


def run_stage(batches: list[pa.Table], index: Path, mode: str, label: str) -> float:
    """Seconds of a fresh ``decontaminate`` stage over ``batches``; prints its line with what it flagged."""
    start = time.perf_counter()
    stage = Decontaminate(DecontaminateParams(index=str(index), mode=mode))
    out = [stage(batch) for batch in batches]
    seconds = time.perf_counter() - start
    n = sum(b.num_rows for b in batches)
    flagged = sum(int(np.count_nonzero(b["decontaminate_matches"].to_numpy() >= 1)) for b in out)
    removed = sum(pc.sum(pc.equal(b["removed_by"], stage.name)).as_py() or 0 for b in out)
    line = f"decontaminate ({mode}, {label}): {rate(n, seconds)}; flagged {flagged} of {n}"
    if mode == "cut":
        cut = sum(pc.sum(b["decontaminate_cut_chars"]).as_py() or 0 for b in out)
        chars = sum(pc.sum(pc.utf8_length(b["text"])).as_py() or 0 for b in batches)
        line += f", cut {cut} of {chars} characters ({cut / chars:.1%}), {removed} left without a word and removed"
    else:
        line += f", removed {removed}"
    print(line)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=None, help="evaluation items kept, evenly spaced (default: all)")
    parser.add_argument("--docs", type=int, default=None, help="distinct documents looked up (default: all)")
    parser.add_argument("--batch", type=int, default=1000, help="rows per pyarrow batch")
    parser.add_argument("--smoke", action="store_true", help="5,000 items from 200 documents, those 200 looked up")
    args = parser.parse_args()
    if args.smoke:
        args.items, args.docs = 5_000, 200
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    documents = distinct_documents(args.docs)
    texts = [text for _, text in documents]
    n = len(texts)
    items = windows(documents)
    if args.items is not None and args.items < len(items):
        items = [items[i] for i in np.linspace(0, len(items) - 1, args.items).round().astype(int)]
    elif args.docs is None and len(items) < FULL_ITEMS:
        raise SystemExit(f"only {len(items)} evaluation items from the corpus: the bench needs {FULL_ITEMS}")
    eval_path = WORK / f"{NAME}.jsonl"
    write_eval(items, eval_path)
    words = sum(len(item["text"].split()) for item in items)
    print(f"eval set: {len(items)} items ({words / len(items):.1f} words on average, "
          f"{eval_path.stat().st_size / 1e6:.1f} MB of JSONL), word windows of {n} documents")
    big, big_13 = WORK / "corpus_windows.index", WORK / "corpus_windows.13.index"
    big_items = build(eval_path, big)
    variant("big index, 13-grams only", eval_path, big_13, 13, NAME)
    wikitext = shared_data() / "text" / "wikitext-2.valid.txt"
    small, small_13 = WORK / "wikitext-2.valid.index", WORK / "wikitext-2.valid.13.index"
    small_items = variant("small index, WikiText-2 valid, a line an item", wikitext, small, 8)
    variant("small index, 13-grams only", wikitext, small_13, 13)

    batches = arrow_batches(texts, args.batch)
    print(f"corpus: {n} distinct documents, {sum(len(t.encode()) for t in texts) / 1e6:.1f} MB of text")
    remove_s = run_stage(batches, big, "remove", "big index")
    filters_s = time_filters(batches, n)
    cut_s = run_stage(batches, big, "cut", "big index")
    big_13_s = run_stage(batches, big_13, "remove", "big index, 13-grams only")
    small_s = run_stage(batches, small, "remove", "small index")
    small_cut_s = run_stage(batches, small, "cut", "small index")
    small_13_s = run_stage(batches, small_13, "remove", "small index, 13-grams only")
    again_s = run_stage(batches, big, "remove", "big index, drift check")
    print(f"drift: the big index's remove pass {(remove_s / again_s - 1) * 100:+.0f}% docs/s on its second run")
    print(f"ratio decontaminate/filters docs/s (big index, {big_items} items): {filters_s / remove_s:.1f}x remove, "
          f"{filters_s / cut_s:.1f}x cut (goal: > 1); 13-grams only: {filters_s / big_13_s:.1f}x remove")
    print(f"ratio decontaminate/filters docs/s (small index, {small_items} items): {filters_s / small_s:.1f}x remove, "
          f"{filters_s / small_cut_s:.1f}x cut (goal: > 1); 13-grams only: {filters_s / small_13_s:.1f}x remove")


if __name__ == "__main__":
    main()
