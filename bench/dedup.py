"""MinHash near-duplicate removal end to end: ``curate dedup`` against datatrove's 4-stage MinHash, in the same run.

**Corpus.** ``--docs`` documents (200,000) of real prose, as JSONL (``{"id", "text"}``) in ``--files`` files
under ``bench/_work/dedup/`` (200,000: 480 MB of text). The distinct real documents of ``bench/texts.py``
hold about 2.1 M words in 57,000 paragraphs, so 200,000 documents of a few hundred words cannot each be
real on their own: every **base** document is recombined from runs of one to three consecutive real
sentences (longer sentences cut into pieces of 30 words), each run drawn from a random paragraph of a
random real document (web pages in several languages, DCLM, Wikipedia, news, speeches, forums, reddit),
grouped into paragraphs of 40-160 words, 120-2,500 words in all (lognormal, median 300). Bases share a
sentence now and then, as crawled pages quote each other, but no two share much: on the smoke corpus the
most similar unrelated pair has J = 0.17, and the "unplanted pairs" figure counts pairs at J >= 0.8 that
no planting explains (0 at 200,000). Of the documents, ``--variants`` (20 %) are **near-duplicates** of an earlier
document (a base or another variant, so clusters grow beyond pairs), made by one to three of: boilerplate
lines added (navigation, cookie and share banners), a date line inserted, the tail truncated (2-30 %),
words changed, deleted or repeated (0.5-6 %), two paragraphs swapped, the first paragraph dropped. The
heavier edits fall below J = 0.8 on purpose, so the threshold matters. ``--copies`` (3 %) are exact copies
of an earlier document. Deterministic for a given ``--seed``; the corpus is built once and reused.

**Truth.** Exact Jaccard similarity on word 5-gram shingle sets (``curate.dedup.minhash.reference_shingles``,
the pure-Python definition of the shingles curate hashes), for ALL pairs at J >= ``--threshold``, without
materialising all pairs: the prefix-filtering all-pairs algorithm (Bayardo et al. 2007, "Scaling up all
pairs similarity search"). Each document's shingles are sorted by global frequency, rarest first; a pair
with J >= t shares a shingle within each document's prefix of |A| - ceil(t |A|) + 1 shingles, so only
pairs that share a prefix shingle (and pass the length filter |B| >= t |A|) are candidates, and every
candidate is verified exactly. The documents that should be removed: per connected component of the
J >= t graph of k documents, k - 1 (any k - 1). A tool's **precision** is the share of its removed
documents that have a true partner at J >= t; its **recall** is, summed over components, min(removed in
the component, k - 1) over the sum of k - 1. A tool that clusters around representatives (a member must
itself be within t of the document it is a duplicate of) keeps both ends of a chain A ~ B ~ C with
J(A, C) < t, which this recall counts as a miss; so two clustering-neutral figures are shown too: true
pairs of which the tool kept both documents (missed duplicates, whatever the clustering), and true
components of which it kept no member (each removed for a document outside, at J < t). For curate also
the share of its ``duplicate_of`` links that are themselves true pairs.

**The tools**, on the same JSONL files, the same shingle size, bands and rows, the same number of workers:

* curate: ``curate dedup <files> --output OUT --no-exact --workers W --no-progress --threshold --bands
  --rows --ngram`` (removed documents in ``OUT/removed/minhash_dedup/*.parquet``);
* datatrove 0.10.1: ``MinhashDedupSignature`` (tasks = files) -> ``MinhashDedupBuckets`` (tasks = bands)
  -> ``MinhashDedupCluster`` -> ``MinhashDedupFilter`` with a ``JsonlWriter`` as ``exclusion_writer``
  (its removed documents), each under ``LocalPipelineExecutor(workers=W)``, ``MinhashConfig(n_grams,
  num_buckets=bands, hashes_per_bucket=rows)``; this file re-run as ``--datatrove-child``. Its signature
  step runs at 100-160 docs/s per worker (spaCy word splitting), so it reads only the first
  ``--datatrove-docs`` documents (20,000, the same documents re-packed into as many files), and curate runs
  on that subset too for a like-for-like ratio.

**Measured**, each tool as a whole process: wall seconds end to end, docs/s, MB/s per core (UTF-8 text MB /
wall / workers), and peak RSS, polled with psutil every 50 ms over the process tree of the launched command:
per worker (the largest RSS any single worker process reached: Ray's ``ray::`` workers for curate, the pool
processes for datatrove), the driver, and Ray's daemons (GCS, raylet, dashboard) apart. Curate runs on N and
on 2N documents (the same N plus N more, in as many files again): memory per worker should stay flat, so
the 2N/N ratio of peak RSS per worker is printed (goal: within 20 %).

    python bench/dedup.py                           # 200,000 docs (+ 200,000 more for 2N), datatrove on 20,000
    python bench/dedup.py --docs 50000 --datatrove-docs 5000
    python bench/dedup.py --smoke                   # 2,000 docs, datatrove on all of them: every code path
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import orjson
from texts import curate_cmd

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "bench" / "_work" / "dedup"
#: Bump when the corpus generator changes, so a cached corpus is rebuilt.
CORPUS_VERSION = 2
MB = 1e6

# ---- corpus ------------------------------------------------------------------------------------------

#: Sentence ends: a period/question/exclamation mark (maybe closing a quote) before white space, in any
#: script, or a CJK full stop.
_SENTENCE_END = re.compile(r"(?:(?<=[.!?\u2026])|(?<=[.!?\u2026][\"')\]\u00bb\u201d]))\s+|(?<=[\u3002\uff01\uff1f])")
#: Longer sentences are cut into pieces of this many words, so no single draw dominates a short document.
MAX_SENTENCE_WORDS = 30

#: Site chrome that crawled pages carry around the main text (what boilerplate removal misses).
BOILERPLATE = [
    "Skip to main content", "Home | News | Sport | Business | Contact", "Share this article",
    "Share on Facebook Share on Twitter Share via Email", "Subscribe to our newsletter",
    "Sign up for our daily newsletter and get the latest stories delivered to your inbox.",
    ("We use cookies to improve your experience on our site. By continuing to browse you agree to our use "
     "of cookies."), "Accept all cookies", "Advertisement", "Related articles", "Read more",
    "Click here to read the full story.", "Comments are closed.", "Leave a comment",
    "Log in or register to post comments", "All rights reserved.", "Privacy Policy | Terms of Use | Sitemap",
    "Follow us on social media", "This article originally appeared in print.",
    "Reporting by staff writers; editing by the news desk.", "Print this page", "Back to top",
    "You are here: Home / Archives", "Posted in Uncategorized | Tagged news, updates",
]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]


def sentence_pool(limit: int | None = None) -> list[list[str]]:
    """Real paragraphs (of eight words or more) as lists of sentences, from the distinct real documents."""
    from texts import distinct_documents

    pool = []
    for _, text in distinct_documents(limit):
        for para in re.split(r"\n\s*\n|\n", text):
            para = " ".join(para.split())
            if len(para.split()) >= 8:
                sentences = []
                for sentence in _SENTENCE_END.split(para):
                    words = sentence.split()
                    sentences += [" ".join(words[i:i + MAX_SENTENCE_WORDS])
                                  for i in range(0, len(words), MAX_SENTENCE_WORDS)]
                pool.append(sentences)
    return pool


def _date(rng: random.Random) -> str:
    y, m, d = rng.randrange(2008, 2027), rng.randrange(12), rng.randrange(1, 29)
    h, mi = rng.randrange(24), rng.randrange(60)
    return rng.choice([
        f"Posted on {MONTHS[m]} {d}, {y}", f"Updated: {d} {MONTHS[m]} {y}, {h:02d}:{mi:02d}",
        f"{y}-{m + 1:02d}-{d:02d} {h:02d}:{mi:02d}",
        f"Published {MONTHS[m][:3]}. {d}, {y} at {h % 12 + 1}:{mi:02d} {'a.m.' if h < 12 else 'p.m.'}",
        f"Last modified {d:02d}/{m + 1:02d}/{y}",
    ])


def base_document(pool: list[list[str]], rng: random.Random) -> str:
    """120-2,500 words (lognormal, median 300) in paragraphs of 40-160 words, each made of runs of 1-3
    consecutive real sentences (of at most 30 words) from random real paragraphs."""
    target = min(2500, max(120, int(rng.lognormvariate(math.log(300), 0.7))))
    paragraphs, words = [], 0
    while words < target:
        want, sentences, have = min(rng.randrange(40, 160), target - words + 10), [], 0
        while have < want:
            para = rng.choice(pool)
            start = rng.randrange(len(para))
            run = para[start:start + rng.choice((1, 1, 2, 2, 3))]
            sentences.extend(run)
            have += sum(len(s.split()) for s in run)
        paragraphs.append(" ".join(sentences))
        words += have
    return "\n\n".join(paragraphs)


def _edit_words(text: str, rng: random.Random, share: float) -> str:
    paragraphs = [p.split(" ") for p in text.split("\n\n")]
    vocabulary = [w for p in paragraphs for w in p]
    for _ in range(max(1, round(share * len(vocabulary)))):
        para = rng.choice(paragraphs)
        i = rng.randrange(len(para))
        action = rng.random()
        if action < 0.6:
            para[i] = rng.choice(vocabulary)  # a word changed
        elif action < 0.8 and len(para) > 1:
            del para[i]  # a word dropped
        else:
            para.insert(i, para[i])  # a word repeated
    return "\n\n".join(" ".join(p) for p in paragraphs)


def variant(text: str, rng: random.Random) -> tuple[str, list[str]]:
    """A near-duplicate of ``text`` by one to three edits; returns it and the edits' names."""
    ops = rng.sample(["boilerplate", "date", "truncate", "edit", "swap", "head"], 1 + (rng.random() < 0.45)
                     + (rng.random() < 0.15))
    for op in ops:
        paragraphs = text.split("\n\n")
        if op == "boilerplate":
            head = rng.sample(BOILERPLATE, rng.randrange(0, 3))
            tail = rng.sample(BOILERPLATE, rng.randrange(1, 4))
            text = "\n\n".join(["\n".join(head)] * bool(head) + paragraphs + ["\n".join(tail)])
        elif op == "date":
            at = rng.choice((0, 1, len(paragraphs)))
            text = "\n\n".join(paragraphs[:at] + [_date(rng)] + paragraphs[at:])
        elif op == "truncate":
            cut = text.rfind(" ", 0, int(len(text) * rng.uniform(0.70, 0.98)))
            text = text[:cut] + rng.choice(("", " ...", "\n\nRead more", "\u2026"))
        elif op == "edit":
            text = _edit_words(text, rng, rng.uniform(0.005, 0.06))
        elif op == "swap" and len(paragraphs) >= 2:
            i = rng.randrange(len(paragraphs) - 1)
            j = rng.randrange(i + 1, len(paragraphs))
            paragraphs[i], paragraphs[j] = paragraphs[j], paragraphs[i]
            text = "\n\n".join(paragraphs)
        elif op == "head" and len(paragraphs) >= 3:
            text = "\n\n".join(paragraphs[1:])
    return text, ops


def doc_id(i: int) -> str:
    return f"d{i:07d}"


def doc_index(id_: str) -> int:
    return int(id_[1:])


@dataclass
class Corpus:
    """The generated documents: JSONL parts of the N corpus, of its second half (2N), and of the subsets."""

    root: Path
    docs: int
    files: int
    manifest: dict

    def part(self, k: int) -> Path:
        """Parts 0..files-1 are the N corpus (``full/``), the next ``files`` its second half (``more/``)."""
        folder = "full" if k < self.files else "more"
        return self.root / folder / f"part-{k:05d}.jsonl"

    def paths(self, double: bool = False) -> list[Path]:
        return [self.part(k) for k in range(self.files * (2 if double else 1))]

    def text_bytes(self, double: bool = False) -> int:
        return sum(self.manifest["part_bytes"][: self.files * (2 if double else 1)])

    def subset(self, m: int) -> tuple[list[Path], int]:
        """The first ``m`` documents in ``files`` parts of their own (written on first use), and their bytes."""
        if m >= self.docs:
            return self.paths(), self.text_bytes()
        folder = self.root / f"subset-{m}"
        info = folder / "subset.json"
        if not info.is_file():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            size = 0
            with contextlib.ExitStack() as stack:
                outs = [stack.enter_context(open(folder / f"part-{k:05d}.jsonl", "wb")) for k in range(self.files)]
                for row in iter_docs(self.paths()):
                    i = doc_index(row["id"])
                    if i < m:
                        outs[i % self.files].write(orjson.dumps(row) + b"\n")
                        size += len(row["text"].encode())
            info.write_text(json.dumps({"docs": m, "text_bytes": size}))
        return sorted(folder.glob("part-*.jsonl")), json.loads(info.read_text())["text_bytes"]


def iter_docs(paths: list[Path]):
    for path in paths:
        with open(path, "rb") as f:
            for line in f:
                yield orjson.loads(line)


def generate(total: int, seed: int, variants: float, copies: float, pool: list[list[str]]):
    """(index, parent index or -1, kind, edits, text) of documents 0..total-1, each from its own seeded draw,
    so the first N documents are the same whatever ``total`` is."""
    texts: list[str] = []
    for i in range(total):
        rng = random.Random(seed * 1_000_003 + i)
        draw = rng.random() if i >= 20 else 1.0  # the first documents are bases, so there is something to copy
        ops: list[str] = []
        if draw < variants:
            parent = rng.randrange(i)
            (text, ops), kind = variant(texts[parent], rng), "variant"
        elif draw < variants + copies:
            parent = rng.randrange(i)
            text, kind = texts[parent], "copy"
        else:
            parent, text, kind = -1, base_document(pool, rng), "base"
        texts.append(text)
        yield i, parent, kind, ops, text


def build_corpus(n: int, files: int, seed: int, variants: float, copies: float, double: bool,
                 pool_limit: int | None = None) -> Corpus:
    """The N (and 2N) corpus under ``bench/_work/dedup``, built unless an identical one is there."""
    key = f"n{n}-f{files}-s{seed}-v{variants}-c{copies}-p{pool_limit}-{'2n' if double else '1n'}-v{CORPUS_VERSION}"
    root = WORK / f"corpus-{key}"
    manifest_path = root / "manifest.json"
    if manifest_path.is_file():
        return Corpus(root, n, files, json.loads(manifest_path.read_text()))
    t0 = time.perf_counter()
    shutil.rmtree(root, ignore_errors=True)
    (root / "full").mkdir(parents=True)
    (root / "more").mkdir()
    pool = sentence_pool(pool_limit)
    parts = files * (2 if double else 1)
    corpus = Corpus(root, n, files, {})
    part_bytes = [0] * parts
    kinds = {"base": 0, "variant": 0, "copy": 0}
    lineage: list[int] = []  # parent index per document (-1 for a base)
    edits: dict[str, int] = {}
    with contextlib.ExitStack() as stack:
        outs = [stack.enter_context(open(corpus.part(k), "wb")) for k in range(parts)]
        for i, parent, kind, ops, text in generate(2 * n if double else n, seed, variants, copies, pool):
            lineage.append(parent)
            if i < n:
                kinds[kind] += 1
                for op in ops:
                    edits[op] = edits.get(op, 0) + 1
            k = (i % files) + (files if i >= n else 0)  # round robin: near-duplicates land in other files
            outs[k].write(orjson.dumps({"id": doc_id(i), "text": text}) + b"\n")
            part_bytes[k] += len(text.encode())
    manifest = {"docs": n, "total": len(lineage), "files": files, "seed": seed, "kinds": kinds, "edits": edits,
                "part_bytes": part_bytes, "pool_paragraphs": len(pool), "build_s": time.perf_counter() - t0}
    (root / "lineage.json").write_text(json.dumps(lineage))
    manifest_path.write_text(json.dumps(manifest))
    return Corpus(root, n, files, manifest)


# ---- truth -------------------------------------------------------------------------------------------

def _standin_table() -> dict[int, str]:
    import unicodedata

    return {c: " " for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c))[0] in "PS"}


_TABLE: dict[int, str] | None = None


def standin_shingles(text: str, n: int = 5) -> set[int]:
    """Stand-in for ``reference_shingles`` while curate has none: NFKC, lowercase, punctuation/symbols to
    spaces, white-space words, xxh32 of each space-joined word n-gram."""
    import unicodedata

    import xxhash

    global _TABLE
    if _TABLE is None:
        _TABLE = _standin_table()
    words = unicodedata.normalize("NFKC", text).lower().translate(_TABLE).split()
    return {xxhash.xxh32_intdigest(" ".join(words[i:i + n])) for i in range(len(words) - n + 1)}


def shingler(ngram: int):
    """(name, function text -> set of shingle hashes): curate's reference definition, else the stand-in."""
    try:
        from curate.dedup.minhash import MinHashParams, reference_shingles
    except ImportError:
        return "stand-in (curate.dedup.minhash not importable)", lambda text: standin_shingles(text, ngram)
    params = MinHashParams(ngram=ngram) if "ngram" in MinHashParams.model_fields else MinHashParams()
    return "curate.dedup.minhash.reference_shingles", lambda text: reference_shingles(text, params)


def shingler_key(name: str) -> str:
    """A cache key that changes when the shingle definition's source does."""
    import hashlib
    import inspect

    if not name.startswith("curate"):
        return "standin"
    import curate.dedup.minhash as mh

    if all(hasattr(mh, f) for f in ("_normalise_token", "_token_hash", "_combine")):
        src = "".join(inspect.getsource(f) for f in (mh.reference_shingles, mh._normalise_token, mh._token_hash,
                                                        mh._combine))
        src += repr([getattr(mh, c, None) for c in ("_SHINGLE_MULTIPLIER", "_MASK64")])
        src += repr(sorted(mh.MinHashParams().model_dump().items(), key=str))
    else:  # the helpers were renamed: any change to the module may change the shingles
        src = inspect.getsource(mh)
    return "curate-" + hashlib.sha1(src.encode()).hexdigest()[:10]


_SHINGLE_FN = None


def _shingle_chunk(texts: list[str]):
    import numpy as np

    sets = [_SHINGLE_FN(t) for t in texts]
    return [np.fromiter(s, dtype=np.uint64, count=len(s)) for s in sets]


def shingle_all(texts: list[str], fn, workers: int) -> list:
    """Shingle hash arrays of every text, in ``workers`` forked processes."""
    global _SHINGLE_FN
    _SHINGLE_FN = fn
    chunks = [texts[i:i + 2000] for i in range(0, len(texts), 2000)]
    if workers <= 1 or len(chunks) <= 1:
        return [a for c in chunks for a in _shingle_chunk(c)]
    import multiprocessing as mp

    with mp.get_context("fork").Pool(workers) as pool:
        return [a for part in pool.imap(_shingle_chunk, chunks) for a in part]


def all_pairs(sets: list, threshold: float) -> tuple[dict, dict]:
    """Every pair (a < b) with J >= threshold, exactly, by prefix filtering; returns edges and counters.

    ``edges``: arrays a, b, inter, union. Integer arithmetic throughout (t = p/q), so no pair at exactly
    the threshold is lost to rounding.
    """
    import numpy as np

    t = Fraction(threshold).limit_denominator(1000)
    p, q = t.numerator, t.denominator
    n = len(sets)
    lengths = np.array([len(s) for s in sets], dtype=np.int64)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    tokens = np.concatenate(sets) if n else np.zeros(0, np.uint64)
    doc = np.repeat(np.arange(n, dtype=np.int64), lengths)
    uniq, inverse, counts = np.unique(tokens, return_inverse=True, return_counts=True)
    del tokens
    rank = np.empty(len(uniq), dtype=np.int64)
    rank[np.lexsort((uniq, counts))] = np.arange(len(uniq))  # global order: rarest first, ties by hash
    ranks = rank[inverse]
    freq = counts[inverse]
    del inverse, rank, uniq, counts
    order = np.lexsort((ranks, doc))  # within each document, rarest first
    ranks, freq = ranks[order], freq[order]
    del order
    prefix = lengths - (p * lengths + q - 1) // q + 1  # |A| - ceil(t |A|) + 1
    position = np.arange(len(ranks), dtype=np.int64) - np.repeat(offsets[:-1], lengths)
    keep = (position < np.repeat(prefix, lengths)) & (freq > 1)  # a shingle no other document has pairs nothing
    del position, freq
    p_tok, p_doc = ranks[keep], doc[keep]
    del keep, doc
    o = np.argsort(p_tok, kind="stable")
    p_tok, p_doc = p_tok[o], p_doc[o]
    starts = np.flatnonzero(np.r_[True, p_tok[1:] != p_tok[:-1]])
    sizes = np.diff(np.r_[starts, len(p_tok)])
    cand_a, cand_b = [], []
    raw = 0
    for g in np.unique(sizes[sizes >= 2]):
        s = starts[sizes == g]
        iu, ju = np.triu_indices(int(g), 1)
        raw += len(s) * len(iu)
        if len(s) * len(iu) > 50_000_000:
            raise SystemExit(f"prefix filter: {len(s)} groups of {g} documents share a prefix shingle; the corpus "
                             "is too repetitive for an exact all-pairs truth")
        a = p_doc[(s[:, None] + iu[None, :]).ravel()]
        b = p_doc[(s[:, None] + ju[None, :]).ravel()]
        cand_a.append(np.minimum(a, b))
        cand_b.append(np.maximum(a, b))
    if cand_a:
        a, b = np.concatenate(cand_a), np.concatenate(cand_b)
        pair = np.unique(a * n + b)
        a, b = pair // n, pair % n
    else:
        a = b = np.zeros(0, np.int64)
    la, lb = lengths[a], lengths[b]
    ok = q * np.minimum(la, lb) >= p * np.maximum(la, lb)  # length filter
    a, b = a[ok], b[ok]
    inter = np.empty(len(a), dtype=np.int64)
    for k, (x, y) in enumerate(zip(a.tolist(), b.tolist())):
        ra, rb = ranks[offsets[x]:offsets[x + 1]], ranks[offsets[y]:offsets[y + 1]]
        if len(ra) > len(rb):
            ra, rb = rb, ra
        idx = np.searchsorted(rb, ra)
        idx[idx == len(rb)] = 0
        inter[k] = int(np.count_nonzero(rb[idx] == ra))
    union = lengths[a] + lengths[b] - inter
    true = q * inter >= p * union
    edges = {"a": a[true], "b": b[true], "inter": inter[true], "union": union[true]}
    return edges, {"shingles": int(lengths.sum()), "prefix_entries": len(p_tok), "raw_candidates": int(raw),
                   "candidates": len(a), "empty_docs": int((lengths == 0).sum())}


class Components:
    """Connected components of the true-pair graph over document indices < ``limit``."""

    def __init__(self, edges: dict, limit: int):
        parent: dict[int, int] = {}

        def find(x: int) -> int:
            root = x
            while parent.get(root, root) != root:
                root = parent[root]
            while parent.get(x, x) != root:
                parent[x], x = root, parent[x]
            return root

        self.pairs: set[tuple[int, int]] = set()
        for a, b in zip(edges["a"].tolist(), edges["b"].tolist()):
            if a < limit and b < limit:
                self.pairs.add((a, b))
                parent.setdefault(a, a)
                parent.setdefault(b, b)
                ra, rb = find(a), find(b)
                if ra != rb:
                    parent[max(ra, rb)] = min(ra, rb)
        self.of = {x: find(x) for x in parent}
        self.size: dict[int, int] = {}
        for root in self.of.values():
            self.size[root] = self.size.get(root, 0) + 1

    @property
    def to_remove(self) -> int:
        return sum(k - 1 for k in self.size.values())


@dataclass
class Truth:
    edges: dict
    info: dict
    seconds: float
    shingler: str

    def components(self, limit: int) -> Components:
        return Components(self.edges, limit)


def compute_truth(corpus: Corpus, threshold: float, ngram: int, workers: int) -> Truth:
    """Exact truth on the N corpus, cached beside it (keyed by shingler and threshold)."""
    import numpy as np

    name, fn = shingler(ngram)
    cache = corpus.root / f"truth-{shingler_key(name)}-n{ngram}-t{threshold}.npz"
    if cache.is_file():
        z = np.load(cache)
        info = json.loads(str(z["info"]))
        return Truth({k: z[k] for k in ("a", "b", "inter", "union")}, info, info["seconds"], name)
    t0 = time.perf_counter()
    texts = [""] * corpus.docs
    for row in iter_docs(corpus.paths()):
        texts[doc_index(row["id"])] = row["text"]
    sets = shingle_all(texts, fn, workers)
    del texts
    t1 = time.perf_counter()
    edges, info = all_pairs(sets, threshold)
    info["shingle_s"], info["pairs_s"] = t1 - t0, time.perf_counter() - t1
    info["seconds"] = time.perf_counter() - t0
    singles = np.bincount(np.unique(np.concatenate(sets), return_counts=True)[1]) if sets else np.zeros(2)
    info["once_share"] = float(singles[1] / max(1, singles.sum())) if len(singles) > 1 else 0.0
    np.savez(cache, info=json.dumps(info), **edges)
    return Truth(edges, info, info["seconds"], name)


@dataclass
class Agreement:
    removed: int
    precision: float
    recall: float
    lost_components: int  # true components none of whose members was kept (each removed for a document outside)
    extra: dict = field(default_factory=dict)

    def line(self) -> str:
        return f"P={self.precision:.3f} R={self.recall:.3f}"


def agreement(removed_ids: list[str], comps: Components, links: list[tuple[str, str]] | None = None) -> Agreement:
    removed = {doc_index(i) for i in removed_ids}
    per_comp: dict[int, int] = {}
    with_partner = 0
    for x in removed:
        root = comps.of.get(x)
        if root is not None:
            with_partner += 1
            per_comp[root] = per_comp.get(root, 0) + 1
    hit = sum(min(c, comps.size[r] - 1) for r, c in per_comp.items())
    lost = sum(c >= comps.size[r] for r, c in per_comp.items())
    result = Agreement(len(removed), with_partner / len(removed) if removed else 1.0,
                       hit / comps.to_remove if comps.to_remove else 1.0, lost)
    # Whatever the clustering (transitive components, or stars around a representative), a true pair of
    # which both documents were kept is a duplicate the tool missed.
    result.extra["both_kept"] = sum(a not in removed and b not in removed for a, b in comps.pairs)
    if links:
        pairs = [tuple(sorted((doc_index(a), doc_index(b)))) for a, b in links if b is not None]
        result.extra["link_true"] = sum(p in comps.pairs for p in pairs) / len(pairs) if pairs else 1.0
        result.extra["link_same_component"] = (sum(comps.of.get(a) is not None and comps.of.get(a) == comps.of.get(b)
                                                   for a, b in pairs) / len(pairs)) if pairs else 1.0
    return result


def planted_similarity(corpus: Corpus, ngram: int, limit: int = 5000) -> dict:
    """Exact J of planted (variant, parent) pairs among the first ``limit`` variants: how hard the edits are."""
    _, fn = shingler(ngram)
    lineage = json.loads((corpus.root / "lineage.json").read_text())
    texts: dict[int, str] = {}
    wanted = [(i, p) for i, p in enumerate(lineage[: corpus.docs]) if p >= 0][:limit]
    need = {x for pair in wanted for x in pair}
    for row in iter_docs(corpus.paths()):
        i = doc_index(row["id"])
        if i in need:
            texts[i] = row["text"]
    js = []
    for i, p in wanted:
        a, b = fn(texts[i]), fn(texts[p])
        js.append(len(a & b) / len(a | b) if a | b else 1.0)
    js.sort()
    return {"pairs": len(js), "below": sum(j < 0.8 for j in js) / max(1, len(js)),
            "median": js[len(js) // 2] if js else 0.0}


def unplanted(truth: Truth, corpus: Corpus) -> int:
    """True pairs between documents that no planting relates (neither descends from the other's root)."""
    lineage = json.loads((corpus.root / "lineage.json").read_text())

    def root(x: int) -> int:
        while lineage[x] >= 0:
            x = lineage[x]
        return x

    return sum(root(a) != root(b) for a, b in zip(truth.edges["a"].tolist(), truth.edges["b"].tolist()))


# ---- whole processes, measured -----------------------------------------------------------------------

#: Ray's own long-running processes: not workers (their figures are shown apart).
RAY_DAEMONS = ("gcs_server", "raylet", "dashboard", "log_monitor", "monitor.py", "runtime_env", "ray_client_server",
               "Agent", "plasma_store")


@dataclass
class Measured:
    wall: float
    rc: int
    log: Path
    driver_mb: float
    worker_mb: float  # the largest peak of any single worker process
    daemon_mb: float
    workers_seen: int
    worker_peak_at: float = 0.0  # seconds after the start
    load_before: float = 0.0  # 1-minute load average at the start
    info: dict = field(default_factory=dict)
    processes: list = field(default_factory=list)  # (peak MB, at s, kind, command lines seen), largest first

    def output(self) -> str:
        return self.log.read_text(errors="replace")


class TreeSampler(threading.Thread):
    """Peak RSS of every process in a tree, sampled every ``interval`` seconds, with what each one was."""

    def __init__(self, pid: int, interval: float = 0.05):
        super().__init__(daemon=True)
        import psutil

        self.psutil = psutil
        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak: dict[int, int] = {}
        self.peak_at: dict[int, float] = {}  # seconds after the start when the peak was seen
        self.t0 = time.perf_counter()
        self.labels: dict[int, set[str]] = {}
        self.done = threading.Event()

    def run(self) -> None:
        ps = self.psutil
        polls = 0
        while not self.done.is_set():
            polls += 1
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except ps.Error:
                break
            for proc in procs:
                try:
                    rss = proc.memory_info().rss
                    labels = self.labels.setdefault(proc.pid, set())
                    if not labels or (polls % 20 == 0 and len(labels) < 4):  # Ray workers retitle themselves
                        labels.add(" ".join(proc.cmdline()[:3]) or proc.name())
                except ps.Error:
                    continue
                if rss > self.peak.get(proc.pid, 0):
                    self.peak[proc.pid] = rss
                    self.peak_at[proc.pid] = time.perf_counter() - self.t0
            self.done.wait(self.interval)

    def kind(self, pid: int) -> str:
        if pid == self.root.pid:
            return "driver"
        labels = " ".join(self.labels.get(pid, ()))
        if "default_worker.py" not in labels and any(d in labels for d in RAY_DAEMONS):
            return "daemon"  # the agents title themselves ray::...Agent, yet are no workers
        return "worker"


def run_measured(cmd: list[str], log: Path, timeout_s: float = 3600) -> Measured:
    """Run ``cmd`` from the repository root (stdout+stderr into ``log``), sampling its process tree."""
    log.parent.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]  # others' work on the machine skews wall times: shown beside them
    with open(log, "wb") as fh:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO / "bench")})
        sampler = TreeSampler(proc.pid)
        sampler.start()
        try:
            rc = proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        wall = time.perf_counter() - t0
        sampler.done.set()
        sampler.join()
    by_kind: dict[str, list[tuple[int, float]]] = {"driver": [], "worker": [], "daemon": []}
    for pid, rss in sampler.peak.items():
        by_kind[sampler.kind(pid)].append((rss, sampler.peak_at[pid]))
    top = {k: max(v, default=(0, 0.0)) for k, v in by_kind.items()}
    worker = top["worker"] if by_kind["worker"] else top["driver"]
    m = Measured(wall, rc, log, top["driver"][0] / 2**20, worker[0] / 2**20, top["daemon"][0] / 2**20,
                 len(by_kind["worker"]), worker_peak_at=worker[1], load_before=load)
    m.processes = sorted(((rss / 2**20, sampler.peak_at[pid], sampler.kind(pid),
                           " | ".join(sorted(sampler.labels.get(pid, ())))) for pid, rss in sampler.peak.items()),
                         reverse=True)
    return m


def checked(m: Measured, what: str) -> Measured:
    if m.rc != 0:
        tail = "\n".join(m.output().splitlines()[-30:])
        raise SystemExit(f"{what} exited with {m.rc} after {m.wall:.1f} s; log {m.log}:\n{tail}")
    return m


# ---- curate ------------------------------------------------------------------------------------------

def curate_available() -> bool:
    r = subprocess.run([*curate_cmd(), "dedup", "--help"], capture_output=True, text=True, cwd=REPO, check=False)
    return r.returncode == 0


def run_curate(paths: list[Path], out: Path, args, label: str) -> Measured:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [*curate_cmd(), "dedup", *map(str, paths), "--output", str(out), "--no-exact", "--workers",
           str(args.workers), "--no-progress", "--text-column", "text", "--id-column", "id", "--threshold",
           str(args.threshold), "--bands", str(args.bands), "--rows", str(args.rows), "--ngram", str(args.ngram),
           *args.curate_arg]
    m = checked(run_measured(cmd, out.parent / f"{out.name}.log"), f"curate dedup ({label})")
    import pyarrow.parquet as pq

    removed = [pq.read_table(f) for f in sorted((out / "removed" / "minhash_dedup").glob("*.parquet"))]
    ids, links, sims = [], [], []
    for t in removed:
        ids += t.column("id").to_pylist()
        if "duplicate_of" in t.column_names:
            links += list(zip(t.column("id").to_pylist(), t.column("duplicate_of").to_pylist()))
        if "similarity" in t.column_names:
            sims += [s for s in t.column("similarity").to_pylist() if s is not None]
    kept = sum(pq.read_metadata(f).num_rows for f in (out / "kept").glob("*.parquet"))
    other_removed = sum(pq.read_metadata(f).num_rows for d in (out / "removed").glob("*") if d.name != "minhash_dedup"
                        for f in d.glob("*.parquet"))
    m.info = {"removed": ids, "links": links, "kept": kept, "other_removed": other_removed,
              "similarity_mean": sum(sims) / len(sims) if sims else None, "cmd": cmd}
    return m


# ---- datatrove ---------------------------------------------------------------------------------------

def datatrove_child(args) -> None:
    """Datatrove's four MinHash stages on ``--input`` (this file re-run as a child): timings to ``--work``."""
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import (
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    work = Path(args.work)
    config = MinhashConfig(n_grams=args.ngram, num_buckets=args.bands, hashes_per_bucket=args.rows, seed=1)
    files = len(list(Path(args.input).glob("*.jsonl")))

    def reader():
        return JsonlReader(args.input, glob_pattern="*.jsonl", text_key="text", id_key="id")

    stages = [
        ("signature", LocalPipelineExecutor(
            [reader(), MinhashDedupSignature(output_folder=str(work / "sigs"), config=config)],
            tasks=files, workers=args.workers, logging_dir=str(work / "logs" / "signature"))),
        ("buckets", LocalPipelineExecutor(
            [MinhashDedupBuckets(input_folder=str(work / "sigs"), output_folder=str(work / "buckets"),
                                 config=config)],
            tasks=args.bands, workers=args.workers, logging_dir=str(work / "logs" / "buckets"))),
        ("cluster", LocalPipelineExecutor(
            [MinhashDedupCluster(input_folder=str(work / "buckets"), output_folder=str(work / "remove"),
                                 config=config)],
            tasks=1, workers=1, logging_dir=str(work / "logs" / "cluster"))),
        ("filter", LocalPipelineExecutor(
            [reader(),
             MinhashDedupFilter(input_folder=str(work / "remove"),
                                exclusion_writer=JsonlWriter(str(work / "removed"), compression=None)),
             JsonlWriter(str(work / "kept"), compression=None)],
            tasks=files, workers=args.workers, logging_dir=str(work / "logs" / "filter"))),
    ]
    seconds = {}
    for name, executor in stages:
        t = time.perf_counter()
        executor.run()
        seconds[name] = time.perf_counter() - t
    (work / "timings.json").write_text(json.dumps(seconds))


def run_datatrove(paths: list[Path], work: Path, args) -> Measured:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    folder = paths[0].parent
    cmd = [sys.executable, str(Path(__file__).resolve()), "--datatrove-child", "--input", str(folder), "--work",
           str(work), "--workers", str(args.workers), "--bands", str(args.bands), "--rows", str(args.rows),
           "--ngram", str(args.ngram)]
    if len(list(folder.glob("*.jsonl"))) != len(paths):
        raise SystemExit(f"datatrove reads the whole folder {folder}, which holds other files than the input")
    m = checked(run_measured(cmd, work.parent / f"{work.name}.log"), "datatrove MinHash")
    removed = [row["id"] for row in iter_docs(sorted((work / "removed").glob("*.jsonl")))]
    kept = sum(f.read_bytes().count(b"\n") for f in (work / "kept").glob("*.jsonl"))
    m.info = {"removed": removed, "kept": kept, "stages": json.loads((work / "timings.json").read_text())}
    return m


# ---- report ------------------------------------------------------------------------------------------

def rate_line(tool: str, docs: int, text_bytes: int, m: Measured, workers: int) -> str:
    line = (f"{tool}: {docs} docs, {docs / m.wall:.1f} docs/s, {text_bytes / MB / m.wall / workers:.2f} MB/s per "
            f"core, peak RSS per worker {m.worker_mb:.0f} MB (at {m.worker_peak_at:.0f} s; driver {m.driver_mb:.0f} MB")
    if m.daemon_mb:
        line += f", Ray daemons up to {m.daemon_mb:.0f} MB"
    return line + f"; {m.workers_seen} worker processes), wall {m.wall:.1f} s (load before {m.load_before:.1f})"


def show_processes(tool: str, m: Measured, verbose: bool) -> None:
    if verbose:
        for mb, at, kind, labels in m.processes:
            print(f"    {tool} {kind:6} {mb:7.0f} MB at {at:6.1f} s  {labels[:150]}")


def conservation(tool: str, docs: int, m: Measured) -> str | None:
    total = m.info["kept"] + len(m.info["removed"]) + m.info.get("other_removed", 0)
    if total != docs:
        return f"  WARNING {tool}: kept {m.info['kept']} + removed {len(m.info['removed'])} != {docs} input documents"
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=200_000, help="N: documents in the corpus")
    ap.add_argument("--datatrove-docs", type=int, default=20_000, help="datatrove runs on the first M documents")
    ap.add_argument("--files", type=int, default=8, help="JSONL files per N documents")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--bands", type=int, default=20)
    ap.add_argument("--rows", type=int, default=6)
    ap.add_argument("--ngram", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variants", type=float, default=0.20, help="share of documents that are near-duplicates")
    ap.add_argument("--copies", type=float, default=0.03, help="share of documents that are exact copies")
    ap.add_argument("--no-double", action="store_true", help="skip the 2N run (no RSS ratio)")
    ap.add_argument("--skip-datatrove", action="store_true")
    ap.add_argument("--skip-curate", action="store_true", help="corpus, truth and datatrove only")
    ap.add_argument("--curate-arg", action="append", default=[], help="extra argument for curate dedup (repeatable)")
    ap.add_argument("--verbose", action="store_true", help="list every measured process with its peak RSS")
    ap.add_argument("--smoke", action="store_true", help="2,000 documents, datatrove on all: seconds")
    ap.add_argument("--datatrove-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--input", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # progress shows in a log as it happens
    if args.datatrove_child:
        datatrove_child(args)
        return 0
    pool_limit = None
    if args.smoke:
        args.docs, args.datatrove_docs, pool_limit = 2000, 2000, 600
    m_docs = min(args.datatrove_docs, args.docs)
    t_start = time.perf_counter()

    corpus = build_corpus(args.docs, args.files, args.seed, args.variants, args.copies, not args.no_double,
                          pool_limit)
    man = corpus.manifest
    print(f"corpus: {args.docs} docs ({man['kinds']['base']} bases, {man['kinds']['variant']} near-duplicate "
          f"variants, {man['kinds']['copy']} exact copies), {corpus.text_bytes() / MB:.1f} MB text in {args.files} "
          f"files; 2N: {'skipped' if args.no_double else f'{corpus.text_bytes(True) / MB:.1f} MB'}; built from "
          f"{man['pool_paragraphs']} real paragraphs in {man['build_s']:.0f} s (cached in {corpus.root.name})")
    print(f"  variant edits: {', '.join(f'{k} {v}' for k, v in sorted(man['edits'].items()))}")

    truth = compute_truth(corpus, args.threshold, args.ngram, args.workers)
    info = truth.info
    comps = truth.components(args.docs)
    print(f"truth (exact J >= {args.threshold} on word {args.ngram}-gram shingles, {truth.shingler}): "
          f"{len(comps.pairs)} pairs, {len(comps.size)} components, {comps.to_remove} docs to remove; "
          f"{info['candidates']} candidates verified ({info['raw_candidates']} before dedup and length filter) "
          f"in {truth.seconds:.0f} s ({info['shingle_s']:.0f} s shingling)")
    ps = planted_similarity(corpus, args.ngram)
    print(f"  {info['shingles']} shingles, {info['once_share']:.0%} of distinct ones in one document only; planted "
          f"variant/parent J: median {ps['median']:.2f}, {ps['below']:.0%} below {args.threshold}; unplanted pairs at "
          f"J >= {args.threshold}: {unplanted(truth, corpus)}; empty shingle sets: {info['empty_docs']}")

    sub_paths, sub_bytes = corpus.subset(m_docs)
    sub_comps = truth.components(m_docs)
    runs = corpus.root / "runs"  # per corpus, so a smoke run never clobbers a full one
    runs.mkdir(parents=True, exist_ok=True)
    dt = None
    if not args.skip_datatrove:
        dt = run_datatrove(sub_paths, runs / "datatrove", args)
        print(rate_line("datatrove", m_docs, sub_bytes, dt, args.workers)
              + (f" (on the first {m_docs} of the {args.docs} docs)" if m_docs < args.docs else ""))
        print("  datatrove stages: " + ", ".join(f"{k} {v:.1f} s" for k, v in dt.info["stages"].items()))
        show_processes("datatrove", dt, args.verbose)
        if (w := conservation("datatrove", m_docs, dt)) is not None:
            print(w)

    if args.skip_curate:
        print(f"curate: skipped; total {time.perf_counter() - t_start:.0f} s")
        return 0
    if not curate_available():
        raise SystemExit("`curate dedup --help` fails: curate's dedup command is not installed yet")

    cur = run_curate(corpus.paths(), runs / "curate-n", args, "N")
    print(rate_line("curate", args.docs, corpus.text_bytes(), cur, args.workers))
    show_processes("curate", cur, args.verbose)
    if (w := conservation("curate", args.docs, cur)) is not None:
        print(w)
    cur_sub = cur
    if m_docs < args.docs and dt is not None:
        cur_sub = run_curate(sub_paths, runs / "curate-m", args, "M")
        print(rate_line("curate, datatrove's subset", m_docs, sub_bytes, cur_sub, args.workers))
    if dt is not None:
        ratio = (args.docs / cur.wall) / (m_docs / dt.wall)
        where = f"curate on {args.docs} docs, datatrove on its first {m_docs}" if m_docs < args.docs else \
            f"both on the same {m_docs} docs"
        print(f"ratio curate/datatrove docs/s: {ratio:.1f}x ({where}; goal >= 50x)")
        if m_docs < args.docs:
            print(f"ratio curate/datatrove docs/s, same {m_docs} docs: {dt.wall / cur_sub.wall:.1f}x")
    if not args.no_double:
        cur2 = run_curate(corpus.paths(True), runs / "curate-2n", args, "2N")
        print(rate_line("curate 2N", 2 * args.docs, corpus.text_bytes(True), cur2, args.workers))
        show_processes("curate 2N", cur2, args.verbose)
        print(f"RSS per worker 2N/N: {cur2.worker_mb / cur.worker_mb:.2f} (goal <= 1.20; driver "
              f"{cur2.driver_mb / cur.driver_mb:.2f})")

    a_cur = agreement(cur.info["removed"], comps, cur.info["links"])
    line = f"agreement with truth: curate {a_cur.line()}"
    if dt is not None:
        a_dt = agreement(dt.info["removed"], sub_comps)
        line += f"; datatrove {a_dt.line()}"
        if m_docs < args.docs:
            line += f" (datatrove on {m_docs} docs; curate on them {agreement(cur_sub.info['removed'], sub_comps).line()})"
    print(line)
    print(f"  curate removed {a_cur.removed} ({comps.to_remove} to remove); true pairs both kept "
          f"{a_cur.extra['both_kept']} of {len(comps.pairs)}; true components with no member kept "
          f"{a_cur.lost_components}; duplicate_of is a true pair for {a_cur.extra.get('link_true', 0):.1%}, same "
          f"component {a_cur.extra.get('link_same_component', 0):.1%}"
          + (f"; mean similarity {cur.info['similarity_mean']:.3f}" if cur.info["similarity_mean"] else ""))
    if dt is not None:
        print(f"  datatrove removed {a_dt.removed} ({sub_comps.to_remove} to remove); true pairs both kept "
              f"{a_dt.extra['both_kept']} of {len(sub_comps.pairs)}; true components with no member kept "
              f"{a_dt.lost_components}")
    print(f"total {time.perf_counter() - t_start:.0f} s; logs and outputs in {runs}")
    return 0


if __name__ == "__main__":  # datatrove's LocalPipelineExecutor re-imports this file (forkserver)
    sys.exit(main())
