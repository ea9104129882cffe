"""Throughput of the repetition stage, and what the numpy token-run finder gains over plain Python.

Documents: the 69 Wikipedia articles and 387 DCLM documents of shared/data/text plus synthetic
pathological ones ("mmmm" posts of 20 to 200,000 characters, "lol" and "the" loops, a 13-token loop in
an article). Three measures, each the best of ``--repeats`` runs on one core's worth of work:

1. the whole stage (tokenise + token runs + character runs + zlib + removal marking);
2. :func:`curate.stages.repetition.token_runs` alone on the already-tokenised documents;
3. a plain pure-Python implementation of the same OLMo 2 measure (most back-to-back copies of any span of
   1-13 tokens) on the same token ids: the yardstick for 2. Both must agree on every document.

    python bench/repetition.py [--repeats 3] [--threads 1]
    python bench/repetition.py --smoke     # 4 articles, 20 DCLM documents, pathological ones to 2,000 chars
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from collections.abc import Callable

import pyarrow as pa

from curate.schema import conform
from curate.stages.repetition import Repetition, RepetitionParams, TokenRuns, token_runs
from curate.tokenizer import Tokenizer
from texts import shared_data


def load_documents(smoke: bool = False) -> dict[str, list[str]]:
    """Real documents and the synthetic pathological ones; ``smoke`` keeps a few of each, every kind."""
    text = shared_data() / "text"
    with gzip.open(text / "enwiki-shortened-plaintext.shared.jsonl.gz", "rt") as f:
        wiki = [json.loads(line)["text"] for line in f]
    with open(text / "dclm-human-quality-labels.shared.jsonl") as f:
        dclm = [json.loads(line)["text"] for line in f]
    loop13 = " one two three four five six seven eight nine ten eleven twelve thirteen" * 40
    sizes = (20, 64, 200, 2_000) if smoke else (20, 64, 200, 2_000, 20_000, 200_000)
    synthetic = [f"{'m' * n}" for n in sizes]
    synthetic += ["lol " * 500, "beep beep " * 50, wiki[1][:5000] + " the" * 100 + wiki[1][5000:], wiki[2] + loop13]
    if smoke:
        wiki, dclm = wiki[:4], dclm[:20]
    return {"wikipedia": wiki, "dclm": dclm, "pathological": synthetic}


def max_copies_python(ids: list[int], min_period: int, max_period: int) -> int:
    """OLMo 2's measure in plain Python: for each period, walk the ids once, extending runs of ids[i] == ids[i+p]."""
    best = 1 if ids else 0
    n = len(ids)
    for p in range(min_period, max_period + 1):
        run = 0
        for i in range(n - p):
            if ids[i] == ids[i + p]:
                run += 1
                best = max(best, (run + p) // p)
            else:
                run = 0
    return best


def best_of(repeats: int, work: Callable[[], object]) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="tokenizer threads (1 = one core)")
    parser.add_argument("--smoke", action="store_true", help="a few documents of each kind, one repeat")
    args = parser.parse_args()
    if args.smoke:
        args.repeats = 1

    corpora = load_documents(args.smoke)
    texts = [t for docs in corpora.values() for t in docs]
    batch = conform(pa.table({"id": [str(i) for i in range(len(texts))], "text": texts}))
    stage = Repetition(RepetitionParams(tokenizer_threads=args.threads))
    p = stage.params
    ids = Tokenizer(p.tokenizer, args.threads).encode_batch(texts)
    n_docs, n_tokens = len(texts), int(sum(len(a) for a in ids))
    print(f"{n_docs} documents ({', '.join(f'{k} {len(v)}' for k, v in corpora.items())}), "
          f"{sum(map(len, texts)) / 1e6:.1f} M characters, {n_tokens / 1e6:.2f} M cl100k tokens")

    out = stage(batch)
    reasons = out["reason"].value_counts().to_pylist()
    print("removed:", {r["values"]: r["counts"] for r in reasons if r["values"] is not None})

    ids_lists = [a.tolist() for a in ids]

    def numpy_runs() -> TokenRuns:
        return token_runs(ids, p.min_period, p.max_period, p.min_run_repeats)

    def python_runs() -> list[int]:
        return [max_copies_python(a, p.min_period, p.max_period) for a in ids_lists]

    assert numpy_runs().count.tolist() == python_runs(), "numpy and pure-Python token-run counts differ"
    rows = [
        ("stage (tokenise + all signals)", best_of(args.repeats, lambda: stage(batch))),
        ("token runs, numpy", best_of(args.repeats, numpy_runs)),
        ("token runs, pure Python", best_of(1, python_runs)),
    ]
    print(f"{'':34s} {'seconds':>8s} {'docs/s':>10s} {'tokens/s':>12s}")
    for name, seconds in rows:
        print(f"{name:34s} {seconds:8.3f} {n_docs / seconds:10,.0f} {n_tokens / seconds:12,.0f}")
    print(f"numpy / pure Python token-run speed-up: {rows[2][1] / rows[1][1]:.0f}x")


if __name__ == "__main__":
    main()
