"""Documents/s per core of the ``pii`` stage against the heuristic filters, on the same distinct documents.

Documents: the distinct real documents of ``bench/texts.py`` (2,951: main-content text of the shared HTML
pages, DCLM, Wikipedia and WikiText articles, news, speeches, forum and reddit threads; 13.5 M
characters), in pyarrow batches of ``--batch`` rows, each document through each side once.

* filters: ``bench/filters.py``'s :func:`our_stages` (Gopher repetition, Gopher quality, C4, FineWeb
  quality, repetition, in FineWeb's order; a document one removes is not seen by the next), as
  ``bench/filters.py`` times them;
* pii: ``Pii(PiiParams())`` (every kind redacted, the default), then the same with every kind in ``tag``
  mode (found and located, the text left as it is).

Everything runs in this process, one core, from cold: each side builds its stages and fills its memos inside
the timing, and before each pii pass the module's caches (libphonenumber parses, the top-level domain list)
are cleared. Order: pii, filters, pii again (the difference between the two pii passes is drift on a shared
machine), pii in tag mode. The ratios divide the first pii pass's docs/s (and tag mode's) by the filters'.
Also printed: the spans found per kind (the ``pii_<kind>_count`` columns summed) and the share of documents
the RE2 prefilters send on to the Python detectors (``Pii.candidates``, per kind and any kind).

    python bench/pii.py [--docs 2951] [--batch 1000]
    python bench/pii.py --smoke        # 200 documents: seconds, every code path
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from filters import our_stages, run_ours
from texts import distinct_documents

from curate.schema import conform
from curate.stages import pii

#: The kinds in PiiParams' field order (email, phone, …: the order a user configures them in).
KINDS = tuple(field for field in pii.PiiParams.model_fields if field in pii.KINDS)


def arrow_batches(texts: list[str], size: int) -> list[pa.Table]:
    """Document-schema batches of ``size`` rows (ids are the positions), as ``bench/filters.py`` builds them."""
    return [
        conform(pa.table({"id": list(map(str, range(a, a + len(chunk)))), "text": chunk}))
        for a in range(0, len(texts), size)
        if (chunk := texts[a : a + size])
    ]


def rate(docs: int, seconds: float) -> str:
    return f"{docs} docs, {docs / seconds:.1f} docs/s ({seconds:.2f} s)"


def time_filters(batches: list[pa.Table], docs: int) -> float:
    """Seconds of the heuristic filters over ``batches`` from cold; prints their line."""
    stages = our_stages()
    seconds = run_ours(batches, stages)[0]
    print(f"filters ({', '.join(s.name for s in stages)}): {rate(docs, seconds)}")
    return seconds


def run_pii(batches: list[pa.Table], params: pii.PiiParams) -> tuple[float, list[pa.Table]]:
    """Seconds of a fresh ``pii`` stage over ``batches`` (module caches cleared first), and its output."""
    pii.phone_number.cache_clear()
    pii.top_level_domains.cache_clear()
    start = time.perf_counter()
    stage = pii.Pii(params)
    out = [stage(batch) for batch in batches]
    return time.perf_counter() - start, out


def found(out: list[pa.Table]) -> dict[str, int]:
    """Spans per kind: the ``pii_<kind>_count`` columns summed over every batch."""
    return {kind: sum(pc.sum(batch[f"pii_{kind}_count"]).as_py() or 0 for batch in out) for kind in KINDS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=None, help="distinct documents (default: all)")
    parser.add_argument("--batch", type=int, default=1000, help="rows per pyarrow batch")
    parser.add_argument("--smoke", action="store_true", help="200 documents")
    args = parser.parse_args()
    if args.smoke:
        args.docs = 200
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    texts = [text for _, text in distinct_documents(args.docs)]
    batches = arrow_batches(texts, args.batch)
    n = len(texts)
    print(f"corpus: {n} distinct documents, {sum(len(t.encode()) for t in texts) / 1e6:.1f} MB of text")

    pii_s, out = run_pii(batches, pii.PiiParams())
    filters_s = time_filters(batches, n)
    totals = found(out)
    rewritten = sum(pc.sum(pc.not_equal(o["text"], b["text"])).as_py() or 0 for o, b in zip(out, batches, strict=True))
    print(f"pii: {rate(n, pii_s)}; found: " + ", ".join(f"{kind} {count}" for kind, count in totals.items())
          + f"; {rewritten} documents rewritten")
    again_s, _ = run_pii(batches, pii.PiiParams())
    print(f"pii again (drift check): {n / again_s:.1f} docs/s ({(pii_s / again_s - 1) * 100:+.0f}% against the first)")
    tag_s, tagged = run_pii(batches, pii.PiiParams(**dict.fromkeys(KINDS, "tag")))
    assert found(tagged) == totals, "tag mode must find what redact mode finds"
    print(f"pii, every kind in tag mode (no rewriting): {rate(n, tag_s)}")

    stage = pii.Pii(pii.PiiParams())
    stage.setup()
    masks = stage.candidates(pa.chunked_array([texts], pa.string()))
    any_kind = np.logical_or.reduce(list(masks.values()))
    print(f"prefilters: {any_kind.mean():.1%} of documents go on to Python ({int(any_kind.sum())} of {n}); per kind: "
          + ", ".join(f"{kind} {masks[kind].mean():.1%}" for kind in KINDS))
    print(f"ratio pii/filters docs/s: {filters_s / pii_s:.1f}x (goal: > 1, the stage costs less than the filters)")
    print(f"ratio pii (tag mode)/filters docs/s: {filters_s / tag_s:.1f}x")


if __name__ == "__main__":
    main()
