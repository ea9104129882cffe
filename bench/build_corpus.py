"""Re-pack the real pages of shared/data/html into a crawl-like WARC corpus for bench/extract.py.

Every ``*.html.gz`` page under ``shared/data/html`` (all subfolders: 528 pages, 77 MB of HTML) is
repeated under distinct URLs and record ids until there are ``--records`` HTTP 200 ``response`` records,
in a seeded shuffled order, split over ``--files`` WARC files written with warcio (one gzip member per
record, like Common Crawl). Each response is preceded by its ``request`` record, and each file opens
with a ``warcinfo`` record.

Copies are made distinct: in every copy after the first, ``--respell`` (40 %) of the distinct visible
words of five or more letters are respelled (two adjacent inner letters swapped, one spelling per word
and page, a fresh draw per copy). A verbatim copy would cost the heuristic filters almost nothing (they
memoise per whitespace chunk), so a corpus of copies would measure a memo hit rate no crawl has. With
the default, in a 2,000-response corpus 10.9 % of the chunks of responses 529-2,000 (all copies) were
new to everything before them, against 11.7 % for the same positions in the distinct shared documents
of ``bench/texts.py`` (shuffled) and 0 % for verbatim copies.

The headers imitate a real crawl rather than a clean one:

* no ``WARC-Identified-Payload-Type`` (readers must look at the HTTP ``Content-Type`` or sniff);
* ``--wrong-charset`` (10 %) of the responses declare the WRONG charset: ``iso-8859-1`` or
  ``windows-1252`` on a UTF-8 page, ``utf-8`` on a windows-1252 page;
* ``--no-content-type`` (2 %) have no ``Content-Type`` header at all;
* 25 % say ``text/html`` without a charset; the rest declare the page's true charset.

Deterministic: the same arguments give byte-identical files (fixed record ids, dates and gzip headers).
Output (gitignored): ``bench/_work/corpus/`` with ``corpus-NNNNN.warc.gz`` and ``manifest.json``.

    python bench/build_corpus.py                 # 20,000 responses in 10 files
    python bench/build_corpus.py --records 2000 --files 2 --out bench/_work/small
    python bench/build_corpus.py --smoke         # 24 responses of 12 news pages, into bench/_work/smoke-corpus
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import io
import json
import random
import re
import time
import uuid
from collections import Counter
from pathlib import Path

from texts import SHARED_DATA

REPO = Path(__file__).resolve().parents[1]
DEFAULT_HTML = SHARED_DATA / "html"
DEFAULT_OUT = REPO / "bench" / "_work" / "corpus"
SMOKE_OUT = REPO / "bench" / "_work" / "smoke-corpus"
#: Markup whose text a reader never sees: tags, comments, scripts and styles are copied unchanged.
_MARKUP = re.compile(r"<script\b.*?</script\s*>|<style\b.*?</style\s*>|<!--.*?-->|<[^>]*>", re.S | re.I)
#: Words that may be respelled: 5+ letters (so never a Gopher stop word) and not an entity name (``&nbsp;``).
_WORD = re.compile(r"(?<![&#\w])[^\W\d_]{5,}")


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


def _slug(path: Path) -> str:
    stem = path.name.removesuffix(".html.gz")
    return re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-").lower() or "page"


def load_pages(html_root: Path, limit: int | None = None) -> list[dict]:
    """Pages with URL, body bytes and true charset: all, or ``limit`` spread evenly over the path order."""
    known = page_urls(html_root)
    pages = []
    paths = sorted(html_root.rglob("*.html.gz"))
    for path in paths[:: max(1, len(paths) // limit)][:limit] if limit else paths:
        body = gzip.decompress(path.read_bytes())
        try:
            body.decode("utf-8")
            charset = "utf-8"
        except UnicodeDecodeError:
            from resiliparse.parse.encoding import detect_encoding

            charset = {"cp1252": "windows-1252"}.get(detect_encoding(body), detect_encoding(body))
        url = (known.get(path) or "").strip().replace(" ", "%20")
        if not re.match(r"^https?://[^/?#\s]+", url):  # gold keys such as 'hard::x.html' are not URLs
            folder = path.parent.parent.name if path.parent.name == "html" else path.parent.name
            url = f"https://{folder}.example/{_slug(path)}"
        pages.append({"path": str(path.relative_to(html_root)), "url": url, "body": body, "charset": charset})
    return pages


def _distinct(url: str, copy: int) -> str:
    if copy == 0:
        return url
    base, _, fragment = url.partition("#")
    return f"{base}{'&' if '?' in base else '?'}curate_copy={copy}" + (f"#{fragment}" if fragment else "")


def respell(body: bytes, charset: str, rng: random.Random, share: float) -> tuple[bytes, int]:
    """``body`` with ``share`` of its distinct visible words respelled (two adjacent inner letters swapped).

    Each word keeps one spelling throughout the page, so its own repetition (boilerplate lines, n-grams)
    is unchanged; only text between tags changes, and only letters move, so markup, length, charset and
    word lengths are the same. Returns the body and how many distinct words were respelled.
    """
    spelling: dict[str, str] = {}

    def new_spelling(word: str) -> str:
        i = rng.randrange(1, len(word) - 2)  # never the first or last letter
        return word[:i] + word[i + 1] + word[i] + word[i + 2:] if rng.random() < share else word

    def swap(match: re.Match) -> str:
        word = match.group()
        if word not in spelling:
            spelling[word] = new_spelling(word)
        return spelling[word]

    html = body.decode(charset, "surrogateescape")  # bytes invalid in the charset survive the round trip
    pieces = _MARKUP.split(html)
    tags = _MARKUP.findall(html)
    out = [_WORD.sub(swap, text) + tag for text, tag in zip(pieces, [*tags, ""], strict=True)]
    return "".join(out).encode(charset, "surrogateescape"), sum(w != s for w, s in spelling.items())


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


def build(args) -> dict:
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    rng = random.Random(args.seed)
    pages = load_pages(Path(args.html), args.pages)
    if not pages:
        raise SystemExit(f"no *.html.gz pages under {args.html}")
    order: list[tuple[int, int]] = []  # (page index, copy number)
    copies = 0
    while len(order) < args.records:
        batch = list(range(len(pages)))
        rng.shuffle(batch)
        order.extend((i, copies) for i in batch)
        copies += 1
    order = order[: args.records]

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("corpus-*.warc.gz"):
        old.unlink()
    start = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
    labels: Counter = Counter()
    files = []
    html_bytes = respelled = 0
    per_file = -(-args.records // args.files)
    for f in range(args.files):
        chunk = order[f * per_file:(f + 1) * per_file]
        if not chunk:
            break
        path = out / f"corpus-{f:05d}.warc.gz"
        with open(path, "wb") as fh:
            writer = WARCWriter(fh, gzip=True, warc_version="1.1")

            def rid() -> str:
                return f"<urn:uuid:{uuid.UUID(int=rng.getrandbits(128), version=4)}>"

            info = writer.create_warcinfo_record(path.name, {"software": "curate bench/build_corpus.py",
                                                             "description": "real pages from shared/data/html"})
            info.rec_headers.replace_header("WARC-Record-ID", rid())
            info.rec_headers.replace_header("WARC-Date", start.strftime("%Y-%m-%dT%H:%M:%SZ"))
            writer.write_record(info)
            for n, (index, copy) in enumerate(chunk):
                page = pages[index]
                url = _distinct(page["url"], copy)
                body = page["body"]
                if copy and args.respell:
                    body, changed = respell(body, page["charset"], random.Random(f"{args.seed}:{index}:{copy}"),
                                            args.respell)
                    respelled += changed
                html_bytes += len(body)
                date = (start + dt.timedelta(seconds=f * per_file + n)).strftime("%Y-%m-%dT%H:%M:%SZ")
                host = re.sub(r"^[a-z]+://([^/?#]+).*$", r"\1", url)
                req_id = rid()
                request = writer.create_warc_record(
                    url, "request", payload=io.BytesIO(
                        f"GET /{url.split('/', 3)[-1] if url.count('/') >= 3 else ''} HTTP/1.1\r\n"
                        f"Host: {host}\r\nUser-Agent: curate-bench/1.0\r\nAccept: text/html\r\n\r\n".encode()),
                    warc_headers_dict={"WARC-Record-ID": req_id, "WARC-Date": date})
                writer.write_record(request)
                content_type, label = _content_type(rng, page["charset"], args)
                labels[label] += 1
                headers = [("Date", date), ("Server", "nginx")]
                if content_type is not None:
                    headers.append(("Content-Type", content_type))
                headers.append(("Content-Length", str(len(body))))
                response = writer.create_warc_record(
                    url, "response", payload=io.BytesIO(body),
                    http_headers=StatusAndHeaders("200 OK", headers, protocol="HTTP/1.1"),
                    warc_headers_dict={"WARC-Record-ID": rid(), "WARC-Date": date, "WARC-Concurrent-To": req_id})
                writer.write_record(response)
        files.append({"file": path.name, "responses": len(chunk), "bytes": path.stat().st_size})
    manifest = {
        "seed": args.seed, "records": len(order), "pages": len(pages), "copies": copies,
        "respell": args.respell, "respelled_words": respelled, "html_bytes": html_bytes,
        "page_charsets": dict(Counter(p["charset"] for p in pages)),
        "content_type": dict(sorted(labels.items())), "files": files,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return manifest


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--html", default=None,
                    help=f"folder of *.html.gz pages, searched recursively (default {DEFAULT_HTML}; with --smoke "
                    "its scrapinghub-aeb/ English news pages, so that some pass every filter)")
    ap.add_argument("--out", default=None,
                    help=f"default {DEFAULT_OUT.relative_to(REPO)} ({SMOKE_OUT.relative_to(REPO)} with --smoke)")
    ap.add_argument("--records", type=int, default=20_000, help="number of HTTP 200 response records")
    ap.add_argument("--files", type=int, default=10)
    ap.add_argument("--pages", type=int, default=None, help="use N pages spread over all of them (default all)")
    ap.add_argument("--respell", type=float, default=0.40,
                    help="share of distinct visible 5+-letter words respelled in each copy after the first")
    ap.add_argument("--smoke", action="store_true", help="24 responses of 12 pages (2 copies each) in 2 files")
    ap.add_argument("--seed", type=int, default=20261101)
    ap.add_argument("--wrong-charset", type=float, default=0.10, help="share declaring a wrong charset")
    ap.add_argument("--no-content-type", type=float, default=0.02, help="share without a Content-Type")
    ap.add_argument("--no-charset", type=float, default=0.25, help="share saying text/html without charset")
    args = ap.parse_args(argv)
    if args.smoke:
        args.records, args.files, args.pages = 24, 2, 12
    args.html = args.html or str(DEFAULT_HTML / "scrapinghub-aeb" if args.smoke else DEFAULT_HTML)
    args.out = args.out or str(SMOKE_OUT if args.smoke else DEFAULT_OUT)
    t0 = time.perf_counter()
    manifest = build(args)
    size = sum(f["bytes"] for f in manifest["files"])
    print(f"{manifest['records']} responses ({manifest['pages']} pages x <= {manifest['copies']} copies, "
          f"{manifest['respelled_words']} words respelled in copies, {manifest['html_bytes'] / 1e6:.0f} MB HTML) "
          f"in {len(manifest['files'])} files, {size / 1e6:.0f} MB gzipped, Content-Type {manifest['content_type']}, "
          f"{time.perf_counter() - t0:.0f} s -> {args.out}")


if __name__ == "__main__":
    main()
