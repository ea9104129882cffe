"""Build a crawl-like WARC benchmark corpus from the real data of shared/data, and a manifest of what was planted.

Pages come from three real sources: every ``*.html.gz`` under ``shared/data/html`` (all subfolders, 528
pages), the HTTP 200 HTML responses of the real WARCs in ``shared/data/warc``, and the Wikipedia articles of
``shared/data/text/enwiki-shortened-plaintext.shared.jsonl.gz`` rendered as simple HTML pages. They are
repeated under distinct URLs and record ids until there are ``--records`` HTTP 200 HTML ``response``
records, in a seeded shuffled order, split over ``--files`` WARC files written with warcio (one gzip member
per record, like Common Crawl). Each response is preceded by its ``request`` record, and each file opens
with a ``warcinfo`` record.

Copies are made distinct: in every copy after the first, ``--respell`` (40 %) of the distinct visible
words of five or more letters are respelled (two adjacent inner letters swapped, one spelling per word
and page, a fresh draw per copy). A verbatim copy would cost the heuristic filters almost nothing (they
memoise per whitespace chunk), so a corpus of copies would measure a memo hit rate no crawl has. With
the default, in a 2,000-response corpus 10.9 % of the chunks of responses 529-2,000 (all copies) were
new to everything before them, against 11.7 % for the same positions in the distinct shared documents
of ``bench/texts.py`` (shuffled) and 0 % for verbatim copies.

A first copy keeps the page's real URL; later copies live on ``--hosts`` synthetic hosts drawn from a
Zipf law (``--host-zipf``), so a few hosts hold thousands of pages and most hold one or two, under paths
of several shapes (dated, sectioned, query strings).

Planted, at known rates and recorded by record id in ``manifest.json`` (a bench scores against it):

* ``--exact-dup`` responses whose body is byte-identical to an earlier page's, under another URL;
* ``--near-dup`` responses of an earlier page with small edits (``--near-edit`` of the visible long-word
  occurrences respelled one by one: on resiliparse's text the word 5-gram Jaccard to the original had
  median 0.91 and was >= 0.8 for 97 % of them in a 2,000-response build);
* ``--pathological`` generated pages: one character repeated thousands of times, a phrase repeated
  hundreds of times, or an article with a long character run inside;
* ``--pathological-sources`` hosts where every one of ``--pathological-source-pages`` pages is such a page;
* ``--non-html`` responses with their own Content-Type: the real non-HTML payloads of the shared WARCs
  (images, scripts, office documents ...) and generated PDF and JSON;
* ``--non-200`` responses: 404 with an error page, 301 with a ``Location``;
* ``--revisit`` ``revisit`` records (identical-payload-digest profile) of earlier responses.

These extras are added to the ``--records`` HTML responses; a rate above zero plants at least one.

The headers imitate a real crawl rather than a clean one:

* no ``WARC-Identified-Payload-Type`` (readers must look at the HTTP ``Content-Type`` or sniff);
* ``--wrong-charset`` (10 %) of the HTML responses declare the WRONG charset: ``iso-8859-1`` or
  ``windows-1252`` on a UTF-8 page, ``utf-8`` on a windows-1252 page;
* ``--no-content-type`` (2 %) have no ``Content-Type`` header at all;
* 25 % say ``text/html`` without a charset; the rest declare the page's true charset.

``--plain`` builds the corpus bench/extract.py measures on: the pages of ``--html`` only, at
``?curate_copy=N`` URLs, nothing planted (the same records as build_corpus.py, which this file was).

Deterministic: the same arguments give byte-identical files (fixed record ids, dates and gzip headers).
Output (gitignored): ``bench/_work/corpus/`` with ``corpus-NNNNN.warc.gz`` and ``manifest.json``.

    python bench/corpus.py                       # 50,000 HTML responses (+ planted extras) in 10 files
    python bench/corpus.py --plain --records 2000 --files 2 --out bench/_work/corpus-2000
    python bench/corpus.py --smoke               # 24 HTML responses + extras, into bench/_work/smoke-corpus
"""

from __future__ import annotations

import argparse
import base64
import bisect
import datetime as dt
import gzip
import hashlib
import html as htmllib
import io
import itertools
import json
import random
import re
import struct
import time
import uuid
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from texts import SHARED_DATA

REPO = Path(__file__).resolve().parents[1]
DEFAULT_HTML = SHARED_DATA / "html"
DEFAULT_WARC = SHARED_DATA / "warc"
DEFAULT_WIKI = SHARED_DATA / "text" / "enwiki-shortened-plaintext.shared.jsonl.gz"
DEFAULT_OUT = REPO / "bench" / "_work" / "corpus"
SMOKE_OUT = REPO / "bench" / "_work" / "smoke-corpus"
#: Markup whose text a reader never sees: tags, comments, scripts and styles are copied unchanged.
_MARKUP = re.compile(r"<script\b.*?</script\s*>|<style\b.*?</style\s*>|<!--.*?-->|<[^>]*>", re.DOTALL | re.IGNORECASE)
#: Words that may be respelled: 5+ letters (so never a Gopher stop word) and not an entity name (``&nbsp;``).
_WORD = re.compile(r"(?<![&#\w])[^\W\d_]{5,}")
#: Host-name pieces: plain syllables, so that no generated host trips the URL filter's banned words.
_SYLLABLES = ("al", "bar", "cor", "del", "fen", "gar", "hol", "iv", "jor", "kel", "lin", "mor", "nor", "ol",
              "pen", "quin", "ral", "ston", "tam", "ur", "ven", "wil", "yar", "zen")
_TLDS = ("com", "org", "net", "de", "co.uk", "info", "io", "fr", "com.au", "nl")
_SECTIONS = ("news", "blog", "article", "forum/thread", "p", "story", "docs", "stories", "en/world", "opinion")


def page_urls(html_root: Path) -> dict[Path, str]:
    """The page's real URL where the dataset records it (gold files), else one made from its name."""
    urls: dict[Path, str] = {}
    aeb = html_root / "scrapinghub-aeb"
    if (aeb / "ground-truth.json").is_file():
        for key, value in json.loads((aeb / "ground-truth.json").read_text(encoding="utf-8")).items():
            urls[aeb / "html" / f"{key}.html.gz"] = value["url"]
    traf = html_root / "trafilatura"
    if (traf / "evaldata.json").is_file():
        for url, value in json.loads((traf / "evaldata.json").read_text(encoding="utf-8")).items():
            urls[traf / "html" / f"{value['file']}.gz"] = url
    return urls


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-").lower()[:60] or "page"


def _charset(body: bytes) -> str:
    try:
        body.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError:
        from resiliparse.parse.encoding import detect_encoding

        found = detect_encoding(body)
        return {"cp1252": "windows-1252"}.get(found, found)


def _spread(items: list, limit: int | None) -> list:
    """``limit`` items spread evenly over ``items`` (all without a limit)."""
    return items[:: max(1, len(items) // limit)][:limit] if limit else items


def load_pages(html_root: Path, limit: int | None = None) -> list[dict]:
    """Pages with URL, body bytes and true charset: all, or ``limit`` spread evenly over the path order."""
    known = page_urls(html_root)
    pages = []
    for path in _spread(sorted(html_root.rglob("*.html.gz")), limit):
        body = gzip.decompress(path.read_bytes())
        url = (known.get(path) or "").strip().replace(" ", "%20")
        if not re.match(r"^https?://[^/?#\s]+", url):  # gold keys such as 'hard::x.html' are not URLs
            folder = path.parent.parent.name if path.parent.name == "html" else path.parent.name
            url = f"https://{folder}.example/{_slug(path.name.removesuffix('.html.gz'))}"
        pages.append({"path": str(path.relative_to(html_root)), "url": url, "body": body,
                      "charset": _charset(body), "source": "html"})
    return pages


def _warc_responses(warc_root: Path):
    """(url, status, content type, payload) of every response record of the real WARCs, in path order."""
    from warcio.archiveiterator import ArchiveIterator

    for path in sorted(p for p in warc_root.iterdir() if p.name.endswith((".warc", ".warc.gz"))):
        with open(path, "rb") as fh:
            for record in ArchiveIterator(fh):
                if record.rec_type != "response" or record.http_headers is None:
                    continue
                ctype = (record.http_headers.get_header("Content-Type") or "").split(";")[0].strip().lower()
                yield (path.name, record.rec_headers.get_header("WARC-Target-URI"),
                       record.http_headers.get_statuscode(), ctype, record.content_stream().read())


def warc_material(warc_root: Path, limit: int | None = None) -> tuple[list[dict], list[tuple[str, bytes]]]:
    """The real WARCs' HTML pages (HTTP 200, text/html, one per URL) and their non-HTML payloads.

    The non-HTML payloads (images, scripts, office documents ...) keep their Content-Type; anything that
    says html or xml is left out of them, so that none is an HTML page under another name.
    """
    pages, other, seen = [], [], set()
    for name, url, status, ctype, body in _warc_responses(warc_root):
        if status != "200" or not body or url in seen:
            continue
        seen.add(url)
        if ctype == "text/html":
            pages.append({"path": f"{name}#{url}", "url": url, "body": body, "charset": _charset(body),
                          "source": "warc"})
        elif ctype and "html" not in ctype and "xml" not in ctype:
            other.append((ctype, body))
    return _spread(pages, limit), other


def wiki_pages(path: Path, limit: int | None = None) -> list[dict]:
    """Wikipedia articles as the simple HTML page a wiki mirror serves: title, navigation, paragraphs."""
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        articles = [json.loads(line) for line in fh if line.strip()]
    pages = []
    for article in _spread(articles, limit):
        title = htmllib.escape(article["title"])
        paragraphs = "\n".join(f"<p>{htmllib.escape(p.strip())}</p>" for p in article["text"].split("\n")
                               if p.strip())
        body = (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title} - Wikipedia"
                f"</title></head>\n<body><nav><a href=\"/\">Main page</a> | <a href=\"/random\">Random article"
                f"</a></nav>\n<main><h1>{title}</h1>\n{paragraphs}\n</main>\n<footer>Text is available under "
                "the Creative Commons Attribution-ShareAlike License.</footer></body></html>\n").encode()
        url = "https://en.wikipedia.org/wiki/" + article["title"].replace(" ", "_")
        pages.append({"path": f"wiki#{article['id']}", "url": url, "body": body, "charset": "utf-8",
                      "source": "wikipedia", "text": article["text"]})
    return pages


def _distinct(url: str, copy: int) -> str:
    if copy == 0:
        return url
    base, _, fragment = url.partition("#")
    return f"{base}{'&' if '?' in base else '?'}curate_copy={copy}" + (f"#{fragment}" if fragment else "")


def _rewrite_words(body: bytes, charset: str, swap) -> bytes:
    """``body`` with every visible 5+-letter word replaced by ``swap(word)``; markup is copied unchanged."""
    html = body.decode(charset, "surrogateescape")  # bytes invalid in the charset survive the round trip
    pieces = _MARKUP.split(html)
    tags = _MARKUP.findall(html)
    out = [_WORD.sub(lambda m: swap(m.group()), text) + tag for text, tag in zip(pieces, [*tags, ""], strict=True)]
    return "".join(out).encode(charset, "surrogateescape")


def _swapped(word: str, rng: random.Random) -> str:
    i = rng.randrange(1, len(word) - 2)  # never the first or last letter
    return word[:i] + word[i + 1] + word[i] + word[i + 2:]


def respell(body: bytes, charset: str, rng: random.Random, share: float) -> tuple[bytes, int]:
    """``body`` with ``share`` of its distinct visible words respelled (two adjacent inner letters swapped).

    Each word keeps one spelling throughout the page, so its own repetition (boilerplate lines, n-grams)
    is unchanged; only text between tags changes, and only letters move, so markup, length, charset and
    word lengths are the same. Returns the body and how many distinct words were respelled.
    """
    spelling: dict[str, str] = {}

    def swap(word: str) -> str:
        if word not in spelling:
            i = rng.randrange(1, len(word) - 2)  # never the first or last letter
            spelling[word] = word[:i] + word[i + 1] + word[i] + word[i + 2:] if rng.random() < share else word
        return spelling[word]

    out = _rewrite_words(body, charset, swap)
    return out, sum(w != s for w, s in spelling.items())


def near_edit(body: bytes, charset: str, rng: random.Random, share: float) -> tuple[bytes, int]:
    """A near duplicate: ``share`` of the visible 5+-letter word *occurrences* respelled, each on its own.

    Unlike :func:`respell` a word's other occurrences stay as they were, so each edit touches at most five
    word 5-grams: the small, scattered edits of a re-rendered or lightly updated page.
    """
    edits = 0

    def swap(word: str) -> str:
        nonlocal edits
        if rng.random() < share:
            edits += 1
            return _swapped(word, rng)
        return word

    return _rewrite_words(body, charset, swap), edits


def pathological_page(kind: str, rng: random.Random, filler: list[str], title: str) -> bytes:
    """A generated page of one pathological kind, with the chrome of an ordinary page around it."""
    def sentence() -> str:
        return rng.choice(filler)

    if kind == "char_run":
        inner = f"<p>{rng.choice('am!.-=*xoz_') * rng.randrange(2000, 8000)}</p>"
    elif kind == "phrase_repeat":
        words = " ".join(sentence().split()[:rng.randrange(3, 9)]) or "buy now"
        inner = "<p>" + " ".join(itertools.repeat(htmllib.escape(words), rng.randrange(200, 600))) + "</p>"
    else:  # "run_in_article": a real article with thousands of one character in its middle
        run = rng.choice("!?.~") * rng.randrange(2000, 6000)
        inner = (f"<p>{htmllib.escape(sentence())}</p>\n<p>{htmllib.escape(sentence())} {run}</p>\n"
                 f"<p>{htmllib.escape(sentence())}</p>")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{htmllib.escape(title)}</title></head>"
            f"\n<body><div id=\"nav\"><a href=\"/\">Home</a></div>\n<div class=\"post\">{inner}</div>\n"
            "<div id=\"footer\">Powered by a forum</div></body></html>\n").encode()


def _png(rng: random.Random) -> bytes:
    """A small valid PNG of random grey pixels."""
    width, height = rng.randrange(8, 64), rng.randrange(8, 64)
    raw = b"".join(b"\x00" + bytes(rng.getrandbits(8) for _ in range(width)) for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def _pdf(text: str) -> bytes:
    """A minimal valid one-page PDF whose content stream shows ``text``."""
    line = text[:200].encode("latin-1", "replace").replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")
    stream = b"BT /F1 11 Tf 50 750 Td (" + line + b") Tj ET"
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               (b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
                b"/Resources << /Font << /F1 5 0 R >> >> >>"),
               b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for n, obj in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % n + obj + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def non_html_payload(rng: random.Random, real: list[tuple[str, bytes]], filler: list[str]) -> tuple[str, bytes]:
    """(Content-Type, body): a real non-HTML payload of the shared WARCs, or a generated PDF, JSON or PNG."""
    kind = rng.choice(["real", "real", "pdf", "json", "png"] if real else ["pdf", "json", "png"])
    if kind == "real":
        return rng.choice(real)
    if kind == "pdf":
        return "application/pdf", _pdf(rng.choice(filler))
    if kind == "json":
        return "application/json", json.dumps({"id": rng.getrandbits(32), "summary": rng.choice(filler)}).encode()
    return "image/png", _png(rng)


class Hosts:
    """Synthetic hosts with Zipf-distributed page counts, and URLs of varied shapes on them."""

    def __init__(self, n: int, exponent: float, rng: random.Random) -> None:
        self.rng = rng
        self.names = [self._name(k) for k in range(n)]
        self.cum = list(itertools.accumulate(1 / (k + 1) ** exponent for k in range(n)))

    @staticmethod
    def _name(k: int) -> str:
        parts, rest = [], k
        while True:  # k in base len(_SYLLABLES), at least two syllables: distinct k, distinct names
            rest, digit = divmod(rest, len(_SYLLABLES))
            parts.append(_SYLLABLES[digit])
            if not rest and len(parts) >= 2:
                break
        prefix = ("www.", "", "blog.", "", "news.")[k % 5]
        return f"{prefix}{''.join(reversed(parts))}.{_TLDS[k % len(_TLDS)]}"

    def host(self) -> str:
        return self.rng.choices(self.names, cum_weights=self.cum)[0]

    def url(self, host: str, slug: str, n: int) -> str:
        """A path shaped like a dated article, a sectioned page, a query string or a bare slug; ``n`` keeps
        it unique."""
        shape = self.rng.randrange(4)
        if shape == 0:
            path = f"{self.rng.randrange(2005, 2027)}/{self.rng.randrange(1, 13):02d}/{slug}-{n}.html"
        elif shape == 1:
            path = f"{self.rng.choice(_SECTIONS)}/{slug}-{n}"
        elif shape == 2:
            path = f"index.php?id={n}&page={self.rng.randrange(1, 9)}"
        else:
            path = f"{slug}-{n}/"
        return f"https://{host}/{path}"


def _content_type(rng: random.Random, charset: str, args) -> tuple[str | None, str]:
    """(Content-Type header or None, label for the manifest)."""
    draw = rng.random()
    if draw < args.no_content_type:
        return None, "none"
    draw -= args.no_content_type
    if draw < args.wrong_charset:
        wrong = rng.choice(["iso-8859-1", "windows-1252"]) if charset == "utf-8" else "utf-8"
        return f"text/html; charset={wrong}", "wrong"
    draw -= args.wrong_charset
    if draw < args.no_charset:
        return "text/html", "no_charset"
    return f"text/html; charset={charset.upper() if rng.random() < 0.3 else charset}", "correct"


@dataclass
class Item:
    """One planned record. ``kind``: page (``page``, ``copy``), exact_dup / near_dup (of HTML slot ``of``),
    pathological (``detail`` its kind, ``host`` for a pathological source), non_html, non_200, revisit."""

    kind: str
    page: int = -1
    copy: int = 0
    of: int = -1
    detail: str = ""
    host: str = ""
    slot: int = -1  # position among the HTML 200 responses (-1 for the extras)


def _count(rate: float, n: int) -> int:
    return max(1, round(rate * n)) if rate > 0 and n > 0 else 0


def plan(args, n_pages: int, rng: random.Random, plant: random.Random) -> tuple[list[Item], int]:
    """The records in file order, and how many copies of the pages were made.

    The page order is drawn from ``rng`` exactly as build_corpus.py drew it; everything planted is drawn
    from ``plant``, so ``--plain`` reproduces that corpus. Planted HTML responses take the place of page
    copies at random slots; a duplicate's original is a page at an earlier slot, so it is also the earlier
    fetch, and a revisit follows the response it refers to.
    """
    order: list[tuple[int, int]] = []  # (page index, copy number)
    copies = 0
    while len(order) < args.records:
        batch = list(range(n_pages))
        rng.shuffle(batch)
        order.extend((i, copies) for i in batch)
        copies += 1
    slots = [Item("page", page=i, copy=c, slot=n) for n, (i, c) in enumerate(order[: args.records])]
    if args.plain:
        return slots, copies
    free = list(range(1, len(slots)))  # slot 0 stays a page: every duplicate needs an earlier original
    plant.shuffle(free)

    def take(k: int) -> list[int]:
        return [free.pop() for _ in range(min(k, len(free)))]

    n = len(slots)
    for k, s in enumerate(sorted(take(args.pathological_sources * args.pathological_source_pages))):
        host = f"forum.{_SYLLABLES[k % args.pathological_sources]}board.net"
        slots[s] = Item("pathological", detail=plant.choice(["char_run", "phrase_repeat"]), host=host, slot=s)
    for s in take(_count(args.pathological, n)):
        slots[s] = Item("pathological", detail=plant.choice(["char_run", "phrase_repeat", "run_in_article"]), slot=s)
    for kind, rate in (("exact_dup", args.exact_dup), ("near_dup", args.near_dup)):
        for s in take(_count(rate, n)):
            slots[s] = Item(kind, slot=s)
    pages_before: list[int] = []  # slots of pages so far, increasing: a duplicate's original is one of them
    for item in slots:
        if item.kind in ("exact_dup", "near_dup"):
            item.of = plant.choice(pages_before)
        elif item.kind == "page":
            pages_before.append(item.slot)
    extras = ([Item("non_html") for _ in range(_count(args.non_html, n))]
              + [Item("non_200", detail=plant.choice(["404", "301"])) for _ in range(_count(args.non_200, n))]
              + [Item("revisit") for _ in range(_count(args.revisit, n))])
    after: dict[int, list[Item]] = {}
    for item in extras:
        s = plant.randrange(n)
        if item.kind == "revisit":
            item.of = pages_before[plant.randrange(max(1, bisect.bisect_right(pages_before, s)))]
            s = max(s, item.of)
        after.setdefault(s, []).append(item)
    records = []
    for item in slots:
        records.append(item)
        records.extend(after.get(item.slot, []))
    return records, copies


def _rid(rng: random.Random) -> str:
    return f"<urn:uuid:{uuid.UUID(int=rng.getrandbits(128), version=4)}>"


def _digest(body: bytes) -> str:
    return "sha1:" + base64.b32encode(hashlib.sha1(body).digest()).decode()


_NOT_FOUND = b"<html><head><title>404 Not Found</title></head><body><h1>Not Found</h1></body></html>"
_MOVED = b"<html><head><title>301 Moved Permanently</title></head><body></body></html>"


def build(args) -> dict:
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    rng = random.Random(args.seed)
    plant = random.Random(f"{args.seed}:plant")
    pages = load_pages(Path(args.html), args.pages)
    real_other: list[tuple[str, bytes]] = []
    if not args.plain:
        warc, real_other = warc_material(Path(args.warc), args.warc_pages)
        pages += warc + wiki_pages(Path(args.wiki), args.wiki_pages)
    if not pages:
        raise SystemExit(f"no *.html.gz pages under {args.html}")
    filler = [s.strip() for p in pages if "text" in p for s in re.split(r"(?<=[.!?])\s+", p["text"])
              if 40 < len(s.strip()) < 400] or ["The quick brown fox jumps over the lazy dog near the river bank."]
    records, copies = plan(args, len(pages), rng, plant)
    slot_items = {item.slot: item for item in records if item.slot >= 0}
    hosts = Hosts(args.hosts, args.host_zipf, plant) if not args.plain and args.hosts else None

    def page_body(index: int, copy: int) -> tuple[bytes, int]:
        page = pages[index]
        if copy and args.respell:
            return respell(page["body"], page["charset"], random.Random(f"{args.seed}:{index}:{copy}"), args.respell)
        return page["body"], 0

    def page_url(index: int, copy: int, number: int) -> str:
        if copy == 0 or hosts is None:
            return _distinct(pages[index]["url"], copy)
        return hosts.url(hosts.host(), _slug(Path(pages[index]["url"].split("?")[0].rstrip("/")).name), number)

    def synthetic_host(fallback: str) -> str:
        return hosts.host() if hosts else fallback

    def payload(item: Item, number: int) -> dict:
        """What ``item`` writes: url, status, body, charset, content type (None: decided by the HTML draw),
        extra headers and, for the manifest, the edits of a near duplicate."""
        if item.kind == "page":
            body, changed = page_body(item.page, item.copy)
            return {"url": page_url(item.page, item.copy, number), "body": body, "respelled": changed,
                    "charset": pages[item.page]["charset"]}
        if item.kind in ("exact_dup", "near_dup"):
            original = slot_items[item.of]
            body, _ = page_body(original.page, original.copy)
            charset, edits = pages[original.page]["charset"], 0
            if item.kind == "near_dup":
                body, edits = near_edit(body, charset, random.Random(f"{args.seed}:near:{item.slot}"), args.near_edit)
            url = page_url(original.page, 1, number) if hosts else _distinct(pages[original.page]["url"],
                                                                               copies + number)
            return {"url": url, "body": body, "charset": charset, "edits": edits}
        if item.kind == "pathological":
            host = item.host or synthetic_host("pathological.example")
            return {"url": f"https://{host}/viewtopic.php?t={number}",
                    "body": pathological_page(item.detail, plant, filler, f"Thread {number}")}
        if item.kind == "non_html":
            ctype, body = non_html_payload(plant, real_other, filler)
            return {"url": f"https://{synthetic_host('files.example')}/files/{number}", "body": body,
                    "content_type": ctype}
        if item.kind == "non_200":
            host = synthetic_host("moved.example")
            if item.detail == "404":
                return {"url": f"https://{host}/old/{number}", "status": "404 Not Found", "body": _NOT_FOUND,
                        "content_type": "text/html; charset=utf-8"}
            return {"url": f"https://{host}/old/{number}", "status": "301 Moved Permanently", "body": _MOVED,
                    "content_type": "text/html; charset=utf-8",
                    "headers": [("Location", f"https://{host}/new/{number}")]}
        return {"url": by_slot[item.of]["url"], "body": b"", "content_type": "text/html; charset=utf-8"}

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("corpus-*.warc.gz"):
        old.unlink()
    start = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    labels: Counter = Counter()
    planted: dict[str, list] = {k: [] for k in ("exact_duplicates", "near_duplicates", "pathological_pages",
                                                 "non_html", "non_200", "revisits")}
    sources: dict[str, list[str]] = {}
    by_slot: dict[int, dict] = {}  # HTML slot -> what its response was (for revisits and duplicates' ids)
    host_pages: Counter = Counter()
    files = []
    html_bytes = respelled = 0
    per_file = -(-args.records // args.files)
    number = 0  # records written so far: each one's date and unique URL part
    for f in range(args.files):
        chunk = []
        while number + len(chunk) < len(records) and (records[number + len(chunk)].slot < 0
                                                      or records[number + len(chunk)].slot < (f + 1) * per_file):
            chunk.append(records[number + len(chunk)])
        if not chunk:
            break
        path = out / f"corpus-{f:05d}.warc.gz"
        kinds: Counter = Counter()
        html_200 = 0
        with open(path, "wb") as fh:
            writer = WARCWriter(fh, gzip=True, warc_version="1.1")
            info = writer.create_warcinfo_record(path.name, {"software": "curate bench/corpus.py",
                                                             "description": "real pages from shared/data/html"})
            info.rec_headers.replace_header("WARC-Record-ID", _rid(rng))
            info.rec_headers.replace_header("WARC-Date", start.strftime("%Y-%m-%dT%H:%M:%SZ"))
            writer.write_record(info)
            kinds["warcinfo"] += 1
            for item in chunk:
                date = (start + dt.timedelta(seconds=number)).strftime("%Y-%m-%dT%H:%M:%SZ")
                got = payload(item, number)
                number += 1
                url, body = got["url"], got["body"]
                respelled += got.get("respelled", 0)
                host = re.sub(r"^[a-z]+://([^/?#]+).*$", r"\1", url)
                req_id = _rid(rng)
                request = writer.create_warc_record(
                    url, "request", payload=io.BytesIO(
                        f"GET /{url.split('/', 3)[-1] if url.count('/') >= 3 else ''} HTTP/1.1\r\n"
                        f"Host: {host}\r\nUser-Agent: curate-bench/1.0\r\nAccept: text/html\r\n\r\n".encode()),
                    warc_headers_dict={"WARC-Record-ID": req_id, "WARC-Date": date})
                writer.write_record(request)
                kinds["request"] += 1
                headers = [("Date", date), ("Server", "nginx")]
                content_type = got.get("content_type")
                if item.slot >= 0:
                    content_type, label = _content_type(rng, got.get("charset", "utf-8"), args)
                    labels[label] += 1
                    html_bytes += len(body)
                if content_type is not None:
                    headers.append(("Content-Type", content_type))
                record_id = _rid(rng)
                doc_id = record_id.strip("<>")
                if item.kind == "revisit":
                    target = by_slot[item.of]
                    headers.append(("Content-Length", str(target["length"])))
                    record = writer.create_revisit_record(
                        url, target["digest"], url, target["date"],
                        http_headers=StatusAndHeaders("200 OK", headers, protocol="HTTP/1.1"),
                        warc_headers_dict={"WARC-Record-ID": record_id, "WARC-Date": date,
                                           "WARC-Concurrent-To": req_id, "WARC-Refers-To": target["record_id"]})
                    planted["revisits"].append({"id": doc_id, "refers_to": target["id"]})
                else:
                    headers += [*got.get("headers", []), ("Content-Length", str(len(body)))]
                    record = writer.create_warc_record(
                        url, "response", payload=io.BytesIO(body),
                        http_headers=StatusAndHeaders(got.get("status", "200 OK"), headers, protocol="HTTP/1.1"),
                        warc_headers_dict={"WARC-Record-ID": record_id, "WARC-Date": date,
                                           "WARC-Concurrent-To": req_id})
                writer.write_record(record)
                kinds[record.rec_type] += 1
                if item.slot >= 0:
                    host_pages[host] += 1
                    html_200 += 1
                    by_slot[item.slot] = {"id": doc_id, "record_id": record_id, "url": url, "date": date,
                                          "digest": _digest(body), "length": len(body)}
                if item.kind in ("exact_dup", "near_dup"):
                    entry = {"id": doc_id, "duplicate_of": by_slot[item.of]["id"]}
                    if item.kind == "near_dup":
                        planted["near_duplicates"].append(entry | {"edited_words": got["edits"]})
                    else:
                        planted["exact_duplicates"].append(entry)
                elif item.kind == "pathological" and item.host:
                    sources.setdefault(item.host, []).append(doc_id)
                elif item.kind == "pathological":
                    planted["pathological_pages"].append({"id": doc_id, "kind": item.detail})
                elif item.kind == "non_html":
                    planted["non_html"].append({"id": doc_id, "content_type": content_type})
                elif item.kind == "non_200":
                    planted["non_200"].append({"id": doc_id, "status": int(item.detail)})
        files.append({"file": path.name, "responses": html_200, "records": dict(sorted(kinds.items())),
                      "bytes": path.stat().st_size})
    counts = {k: len(v) for k, v in planted.items()}
    counts["pathological_source_pages"] = sum(len(v) for v in sources.values())
    manifest = {
        "seed": args.seed, "records": sum(f["responses"] for f in files), "pages": len(pages), "copies": copies,
        "respell": args.respell, "respelled_words": respelled, "html_bytes": html_bytes,
        "page_sources": dict(Counter(p["source"] for p in pages)),
        "page_charsets": dict(Counter(p["charset"] for p in pages)),
        "content_type": dict(sorted(labels.items())),
        "hosts": {"distinct": len(host_pages), "single_page": sum(1 for v in host_pages.values() if v == 1),
                  "top": host_pages.most_common(10)},
        "rates": {k: getattr(args, k) for k in ("exact_dup", "near_dup", "near_edit", "pathological",
                                                 "pathological_sources", "pathological_source_pages", "non_html",
                                                 "non_200", "revisit", "hosts", "host_zipf", "plain")},
        "counts": counts,
        "planted": planted | {"pathological_sources": [{"host": h, "ids": ids} for h, ids in sorted(sources.items())]},
        "files": files,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return manifest


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--html", default=None,
                    help=f"folder of *.html.gz pages, searched recursively (default {DEFAULT_HTML}; with --smoke "
                    "its scrapinghub-aeb/ English news pages, so that some pass every filter)")
    ap.add_argument("--warc", default=str(DEFAULT_WARC), help="folder of real WARCs whose HTML and other payloads "
                    "are used")
    ap.add_argument("--wiki", default=str(DEFAULT_WIKI), help="Wikipedia articles (JSONL.gz of id, title, text)")
    ap.add_argument("--out", default=None,
                    help=f"default {DEFAULT_OUT.relative_to(REPO)} ({SMOKE_OUT.relative_to(REPO)} with --smoke)")
    ap.add_argument("--records", type=int, default=None,
                    help="number of HTTP 200 HTML response records (default 50,000; 24 with --smoke)")
    ap.add_argument("--files", type=int, default=None, help="WARC files (default 10; 2 with --smoke)")
    ap.add_argument("--pages", type=int, default=None, help="use N html pages spread over all of them (default all)")
    ap.add_argument("--warc-pages", type=int, default=None, help="use N of the WARCs' HTML pages (default all)")
    ap.add_argument("--wiki-pages", type=int, default=None, help="use N Wikipedia articles (default all)")
    ap.add_argument("--respell", type=float, default=0.40,
                    help="share of distinct visible 5+-letter words respelled in each copy after the first")
    ap.add_argument("--plain", action="store_true",
                    help="only the --html pages at ?curate_copy=N URLs, nothing planted (build_corpus.py's corpus)")
    ap.add_argument("--smoke", action="store_true",
                    help="24 HTML responses of 12 news + 2 WARC + 2 Wikipedia pages in 2 files, one planted "
                    "record of each kind and a pathological source of 5 pages")
    ap.add_argument("--seed", type=int, default=20261101)
    ap.add_argument("--wrong-charset", type=float, default=0.10, help="share declaring a wrong charset")
    ap.add_argument("--no-content-type", type=float, default=0.02, help="share without a Content-Type")
    ap.add_argument("--no-charset", type=float, default=0.25, help="share saying text/html without charset")
    ap.add_argument("--hosts", type=int, default=5000, help="synthetic hosts the copies are spread over")
    ap.add_argument("--host-zipf", type=float, default=1.0, help="Zipf exponent of the pages per synthetic host")
    ap.add_argument("--exact-dup", type=float, default=0.03, help="share of HTML responses that are exact duplicates")
    ap.add_argument("--near-dup", type=float, default=0.03, help="share that are near duplicates (small edits)")
    ap.add_argument("--near-edit", type=float, default=0.02, help="share of word occurrences a near duplicate edits")
    ap.add_argument("--pathological", type=float, default=0.01, help="share that are pathological pages")
    ap.add_argument("--pathological-sources", type=int, default=3, help="hosts whose every page is pathological")
    ap.add_argument("--pathological-source-pages", type=int, default=12, help="pages per pathological host")
    ap.add_argument("--non-html", type=float, default=0.02, help="extra non-HTML responses, per HTML response")
    ap.add_argument("--non-200", type=float, default=0.02, help="extra 404/301 responses, per HTML response")
    ap.add_argument("--revisit", type=float, default=0.01, help="extra revisit records, per HTML response")
    args = ap.parse_args(argv)
    args.records = args.records or (24 if args.smoke else 50_000)
    args.files = args.files or (2 if args.smoke else 10)
    if args.smoke:
        args.pages = 12
        args.warc_pages = args.wiki_pages = 2
        args.pathological_sources, args.pathological_source_pages, args.hosts = 1, 5, 20
    args.html = args.html or str(DEFAULT_HTML / "scrapinghub-aeb" if args.smoke else DEFAULT_HTML)
    args.out = args.out or str(SMOKE_OUT if args.smoke else DEFAULT_OUT)
    t0 = time.perf_counter()
    manifest = build(args)
    size = sum(f["bytes"] for f in manifest["files"])
    print(f"{manifest['records']} responses ({manifest['pages']} pages x <= {manifest['copies']} copies, "
          f"{manifest['respelled_words']} words respelled in copies, {manifest['html_bytes'] / 1e6:.0f} MB HTML) "
          f"in {len(manifest['files'])} files, {size / 1e6:.0f} MB gzipped, Content-Type {manifest['content_type']}, "
          f"{time.perf_counter() - t0:.0f} s -> {args.out}")
    if not args.plain:
        print(f"planted {manifest['counts']}; {manifest['hosts']['distinct']} hosts "
              f"({manifest['hosts']['single_page']} with one page, the largest {manifest['hosts']['top'][0][1]})")


if __name__ == "__main__":
    main()
