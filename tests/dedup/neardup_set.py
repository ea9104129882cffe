"""A near-duplicate evaluation set from real text, and its exact Jaccard truth.

Bases are real documents from shared/data (Wikipedia sections, news, State of the Union chunks, forum
text, Reddit threads, DCLM Common Crawl extractions, templated archive.org pages); a share of them get
variants with the edits a crawl really produces (boilerplate, truncation, timestamps, reordered
paragraphs, changed words). Nothing is assumed to be a duplicate: the truth is the exact Jaccard of the
stage's own shingles over every pair, so natural duplicates (templated archive.org pages, news items and
State of the Union passages that the corpora repeat) count as well as the planted ones.
"""

from __future__ import annotations

import gzip
import json
import random
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import scipy.sparse as sp

MIN_WORDS = 50
SECTION_CHARS = (2000, 4000)
# Bases drawn per source (None: all), so the set is ~2,000 documents with every source represented.
BASES_PER_SOURCE = {"enwiki": 300, "news": None, "state_union": 200, "firefox": 100, "reddit": 100, "dclm": 200,
                    "archive_org": None}
VARIANT_SHARE = 0.4

BOILERPLATE = {
    "cookie": ["We use cookies to improve your experience on our site and to show you relevant advertising.",
               "By continuing to browse, you agree to our use of cookies. Learn more in our Cookie Policy.",
               "Accept all cookies | Manage preferences | Reject non-essential"],
    "nav": ["Home", "News", "World", "Business", "Technology", "Science", "Health", "Sport", "Culture",
            "Opinion", "Subscribe", "Sign in", "Search"],
    "footer": ["About us | Contact | Careers | Advertise with us | Privacy policy | Terms of use",
               "Copyright © 2019 Example Media Group. All rights reserved.",
               "Follow us on Twitter, Facebook and Instagram for the latest updates.",
               "Sign up for our newsletter and get the best stories delivered to your inbox every morning."],
    "share": ["Share this article:", "Facebook Twitter LinkedIn Email Print", "Related articles", "Comments (12)"],
}
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
# Edit recipes with the weight each is drawn with; combinations make the pairs near the 0.8 threshold.
RECIPES = {"boilerplate": 3, "truncate": 3, "date": 2, "shuffle": 2, "words": 4, "boilerplate+date": 1,
           "truncate+words": 2, "shuffle+words": 1, "boilerplate+truncate": 1, "date+words": 1}


def _words(text: str) -> int:
    return len(text.split())


def _decode(raw: bytes) -> str:
    """Some shared files are ISO-8859-1 (SOURCES.md), and no one marks which."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _paragraphs(text: str) -> list[str]:
    blocks = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    return blocks if len(blocks) > 1 else [p.strip() for p in text.splitlines() if p.strip()]


def _sections(text: str, rng: random.Random) -> Iterator[str]:
    """Long texts become ~2–4k-char sections at paragraph boundaries, so one article gives many bases."""
    chunk: list[str] = []
    size, target = 0, rng.randint(*SECTION_CHARS)
    for para in _paragraphs(text):
        chunk.append(para)
        size += len(para)
        if size >= target:
            yield "\n\n".join(chunk)
            chunk, size, target = [], 0, rng.randint(*SECTION_CHARS)
    if chunk:
        yield "\n\n".join(chunk)


def _enwiki(data: Path, rng: random.Random) -> Iterator[tuple[str, str]]:
    with gzip.open(data / "text" / "enwiki-shortened-plaintext.shared.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            article = json.loads(line)
            for i, section in enumerate(_sections(article["text"], rng)):
                yield f"enwiki-{article['id']}-{i}", section


def _news(data: Path, rng: random.Random) -> Iterator[tuple[str, str]]:
    lines = (data / "text" / "gensim-lee_background.cor.txt").read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        yield f"news-{i}", line.strip()


def _state_union(data: Path, rng: random.Random) -> Iterator[tuple[str, str]]:
    for path in sorted((data / "text" / "nltk-state_union").glob("*.txt")):
        for i, section in enumerate(_sections(_decode(path.read_bytes()), rng)):
            yield f"state_union-{path.stem}-{i}", section


def _firefox(data: Path, rng: random.Random) -> Iterator[tuple[str, str]]:
    lines = _decode((data / "text" / "nltk-webtext" / "firefox.txt").read_bytes()).splitlines()
    for i in range(0, len(lines), 40):
        yield f"firefox-{i // 40}", "\n".join(lines[i:i + 40])


def _reddit(data: Path, rng: random.Random) -> Iterator[tuple[str, str]]:
    """A thread is a root post and every reply below it, in posting order."""
    for path in sorted((data / "text" / "reddit-2015").glob("*.json.gz")):
        raw = gzip.decompress(path.read_bytes()).decode("utf-8")
        if raw.startswith("[,"):  # the upstream quirk SOURCES.md names
            raw = "[" + raw[2:]
        parent: dict[int, int] = {}
        texts: dict[int, str] = {}
        for row in json.loads(raw):
            parent[row["aSentId"]] = row["qSentId"]
            texts[row["qSentId"]], texts[row["aSentId"]] = row["question"], row["answer"]
        threads: dict[int, list[int]] = {}
        for sent in sorted(texts):
            root = sent
            while root in parent:
                root = parent[root]
            threads.setdefault(root, []).append(sent)
        subreddit = path.name.split("_")[0]
        for root, sents in threads.items():
            yield f"reddit-{subreddit}-{root}", "\n\n".join(texts[s].strip() for s in sents)


def _dclm(data: Path, rng: random.Random) -> Iterator[tuple[str, str]]:
    with open(data / "text" / "dclm-human-quality-labels.shared.jsonl", encoding="utf-8") as f:
        for i, line in enumerate(f):
            yield f"dclm-{i}", json.loads(line)["text"]


def _archive_org(data: Path, rng: random.Random) -> Iterator[tuple[str, str]]:
    """Main text of every HTML response of the 2008 archive.org crawl; the pages share templates."""
    from fastwarc.warc import ArchiveIterator, WarcRecordType
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding

    with open(data / "warc" / "IAH-20080430204825-00000-blackbook.part-A.warc.gz", "rb") as f:
        for i, record in enumerate(ArchiveIterator(f, record_types=WarcRecordType.response, parse_http=True)):
            if record.http_headers is None or "html" not in (record.http_headers.get("Content-Type") or "").lower():
                continue  # dns: and other non-HTTP responses have no HTTP headers
            body = record.reader.read()
            text = extract_plain_text(bytes_to_str(body, detect_encoding(body)), main_content=True)
            for j, section in enumerate(_sections(text, rng)):
                yield f"archive_org-{i}-{j}", section


SOURCES = {"enwiki": _enwiki, "news": _news, "state_union": _state_union, "firefox": _firefox, "reddit": _reddit,
           "dclm": _dclm, "archive_org": _archive_org}


def _tokens(text: str) -> list[str]:
    """Words and the whitespace between them, so edits keep the layout."""
    return re.split(r"(\s+)", text)


def _replace_words(text: str, share: float, vocab: list[str], rng: random.Random) -> str:
    tokens = _tokens(text)
    words = [i for i, t in enumerate(tokens) if t and not t.isspace()]
    for i in rng.sample(words, max(1, round(share * len(words)))):
        tokens[i] = rng.choice(vocab)
    return "".join(tokens)


def _truncate(text: str, share: float) -> str:
    tokens = _tokens(text)
    words = [i for i, t in enumerate(tokens) if t and not t.isspace()]
    return "".join(tokens[:words[int(len(words) * (1 - share))]]).rstrip()


def _shuffle(text: str, rng: random.Random) -> tuple[str, str]:
    """Swap two paragraphs; a one-paragraph text is cut into sentence groups first."""
    paras = _paragraphs(text)
    if len(paras) < 3:
        sentences = re.split(r"(?<=[.!?])\s+", text)
        step = max(1, len(sentences) // 4)
        paras = [" ".join(sentences[i:i + step]) for i in range(0, len(sentences), step)]
    if len(paras) < 2:
        return text, "shuffle none"
    a, b = sorted(rng.sample(range(len(paras)), 2))
    paras[a], paras[b] = paras[b], paras[a]
    return "\n\n".join(paras), f"shuffle {a}<->{b}"


def _boilerplate(text: str, rng: random.Random) -> tuple[str, str]:
    kinds = rng.sample(sorted(BOILERPLATE), rng.randint(1, 2))
    head, tail = [], []
    for kind in kinds:
        (head if kind in ("cookie", "nav") or rng.random() < 0.3 else tail).append("\n".join(BOILERPLATE[kind]))
    return "\n\n".join([*head, text, *tail]), "boilerplate " + ",".join(kinds)


def _date(text: str, rng: random.Random) -> tuple[str, str]:
    year, month, day = rng.randint(2005, 2023), rng.randint(1, 12), rng.randint(1, 28)
    stamp = rng.choice([f"Posted on {day} {MONTHS[month - 1]} {year}",
                        f"Updated: {year}-{month:02d}-{day:02d} {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d} UTC",
                        f"{MONTHS[month - 1]} {day}, {year} at {rng.randint(1, 12)}:{rng.randint(0, 59):02d} pm"])
    paras = _paragraphs(text)
    at = rng.choice([0, len(paras)]) if len(paras) < 3 else rng.randrange(len(paras) + 1)
    paras.insert(at, stamp)
    return "\n\n".join(paras), f"date at paragraph {at}"


def _variant(text: str, recipe: str, vocab: list[str], rng: random.Random) -> tuple[str, str]:
    done = []
    for edit in recipe.split("+"):
        if edit == "boilerplate":
            text, what = _boilerplate(text, rng)
        elif edit == "truncate":
            share = rng.uniform(0.05, 0.25)
            text, what = _truncate(text, share), f"truncate {share:.0%}"
        elif edit == "date":
            text, what = _date(text, rng)
        elif edit == "shuffle":
            text, what = _shuffle(text, rng)
        else:
            share = rng.uniform(0.01, 0.05)
            text, what = _replace_words(text, share, vocab, rng), f"words {share:.1%}"
        done.append(what)
    return text, "+".join(done)


def build_eval_set(data: Path, seed: int = 0) -> list[dict]:
    """Deterministic in ``seed``: real bases (>= MIN_WORDS words) plus 1–3 edited variants of VARIANT_SHARE of them."""
    rng = random.Random(seed)
    bases: list[tuple[str, str, str]] = []
    for source, read in SOURCES.items():
        found = [(id_, text) for id_, text in read(data, rng) if _words(text) >= MIN_WORDS]
        keep = BASES_PER_SOURCE[source]
        if keep is not None and len(found) > keep:
            found = [found[i] for i in sorted(rng.sample(range(len(found)), keep))]
        bases += [(id_, source, text) for id_, text in found]
    vocab = sorted({w for _, _, text in bases for w in text.split() if w.isalpha() and len(w) > 2})
    recipes, weights = zip(*RECIPES.items())
    docs = []
    for id_, source, text in bases:
        docs.append({"id": id_, "text": text, "source": source, "base": None, "edit": None})
        if rng.random() >= VARIANT_SHARE:
            continue
        for k in range(rng.choice([1, 1, 2, 2, 3])):
            variant, edit = _variant(text, rng.choices(recipes, weights)[0], vocab, rng)
            docs.append({"id": f"{id_}~v{k}", "text": variant, "source": source, "base": id_, "edit": edit})
    return docs


def jaccard_pairs(shingle_sets: list[set[int]], min_jaccard: float) -> dict[tuple[int, int], float]:
    """Exact Jaccard of every pair (i < j) at or above ``min_jaccard`` (pairs sharing no shingle never appear).

    Intersections come from a sparse document × shingle incidence product, so pairs that share no
    shingle never exist; the counts are integers, so the ratio is the same one a double loop computes.
    """
    sizes = np.fromiter((len(s) for s in shingle_sets), np.int64, len(shingle_sets))
    flat = np.fromiter((h for s in shingle_sets for h in s), np.int64, int(sizes.sum()))
    _, columns = np.unique(flat, return_inverse=True)
    rows = np.repeat(np.arange(len(shingle_sets)), sizes)
    incidence = sp.csr_matrix((np.ones(len(flat), np.int32), (rows, columns.ravel())),
                              shape=(len(shingle_sets), int(columns.max(initial=-1)) + 1))
    shared = sp.triu(incidence @ incidence.T, k=1).tocoo()
    i, j, both = shared.row, shared.col, shared.data.astype(np.int64)
    jaccard = both / (sizes[i] + sizes[j] - both)
    keep = jaccard >= min_jaccard
    return {(int(a), int(b)): float(x) for a, b, x in zip(i[keep], j[keep], jaccard[keep])}
