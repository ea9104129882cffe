"""Distinct real documents from shared/data for the benches, where that data is, and the curate command
they time.

Throughput of the heuristic filters depends on how often a whitespace chunk has been seen before (their
memos), so a bench that repeats documents measures a hit rate no crawl has. Every document here is real
text, and no two are equal: the main-content text of every shared HTML page (Resiliparse), then the
text corpora (DCLM, Wikipedia, WikiText-2 articles, news, State of the Union speeches, CCNet, forum and
dialogue text in chunks, reddit threads). Exact duplicate texts are dropped, keeping the first.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import resource
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CURATE_SHARED_DATA", REPO.parent / "shared" / "data"))

#: Lines per document when a file is one long stream of short lines (forum posts, dialogue, scripts).
CHUNK_LINES = 50


def shared_data() -> Path:
    """The shared data folder; the benches measure nothing meaningful without it, so its absence is fatal."""
    if not (SHARED_DATA / "text").is_dir() or not (SHARED_DATA / "html").is_dir():
        raise SystemExit(f"shared data not found at {SHARED_DATA} (set CURATE_SHARED_DATA): the benches need it")
    return SHARED_DATA


def _latin1_or_utf8(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:  # several nltk files are ISO-8859-1 (SOURCES.md)
        return raw.decode("latin-1")


def _chunks(text: str, size: int = CHUNK_LINES) -> Iterator[str]:
    lines = text.splitlines(keepends=True)
    for i in range(0, len(lines), size):
        yield "".join(lines[i : i + size])


def _html_pages(data: Path) -> Iterator[tuple[str, str]]:
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding

    for path in sorted((data / "html").rglob("*.html.gz")):
        raw = gzip.decompress(path.read_bytes())
        yield f"html/{path.relative_to(data / 'html')}", extract_plain_text(
            bytes_to_str(raw, detect_encoding(raw)), main_content=True
        )


def _text_corpora(data: Path) -> Iterator[tuple[str, str]]:
    text = data / "text"
    with open(text / "dclm-human-quality-labels.shared.jsonl") as f:
        yield from ((f"dclm/{i}", json.loads(line)["text"]) for i, line in enumerate(f))
    with gzip.open(text / "enwiki-shortened-plaintext.shared.jsonl.gz", "rt") as f:
        yield from ((f"wiki/{row['title']}", row["text"]) for row in map(json.loads, f))
    # WikiText-2: articles start at a top-level heading line " = Title = " (subheadings are " = = x = = ").
    articles = re.split(r"\n(?= = [^=].* = \n)", (text / "wikitext-2.valid.txt").read_text(encoding="utf-8"))
    yield from ((f"wikitext/{i}", a) for i, a in enumerate(articles) if a.strip())
    lee = (text / "gensim-lee_background.cor.txt").read_text(encoding="utf-8").splitlines()
    yield from ((f"lee/{i}", line) for i, line in enumerate(lee))
    for path in sorted((text / "nltk-state_union").glob("*.txt")):
        yield f"state_union/{path.name}", _latin1_or_utf8(path)
    for path in sorted(text.glob("dolma-ccnet-*.jsonl.gz")):
        with gzip.open(path, "rt") as f:
            yield from ((f"ccnet/{row['id']}", row["text"]) for row in map(json.loads, f))
    for path in sorted(text.glob("cs336-*.txt")):
        yield f"cs336/{path.name}", path.read_text(encoding="utf-8")
    for path in sorted((text / "nltk-webtext").glob("*.txt")):
        yield from ((f"webtext/{path.name}/{i}", c) for i, c in enumerate(_chunks(_latin1_or_utf8(path))))
    for path in sorted((text / "reddit-2015").glob("*.json.gz")):
        raw = gzip.decompress(path.read_bytes()).decode()
        pairs = json.loads("[" + raw[2:] if raw.startswith("[,") else raw)  # upstream bug, see SOURCES.md
        comments = list(dict.fromkeys(t for pair in pairs for t in (pair["question"], pair["answer"])))
        yield from ((f"reddit/{path.name}/{i // 10}", "\n\n".join(comments[i : i + 10]))
                    for i in range(0, len(comments), 10))


def distinct_documents(limit: int | None = None, max_chars: int | None = None) -> list[tuple[str, str]]:
    """(key, text) of up to ``limit`` distinct, non-blank real documents, in a fixed order.

    With ``limit`` set, documents are taken round-robin over the sources so a small sample still mixes
    web pages, prose, forums and threads; ``max_chars`` skips longer ones (for smoke runs).
    """
    data = shared_data()
    groups: dict[str, list[tuple[str, str]]] = {}
    seen: set[str] = set()
    for key, text in (*_html_pages(data), *_text_corpora(data)):
        if text.strip() and text not in seen and (max_chars is None or len(text) <= max_chars):
            seen.add(text)
            groups.setdefault(key.split("/", 1)[0], []).append((key, text))
    if limit is None:
        return [doc for docs in groups.values() for doc in docs]
    out: list[tuple[str, str]] = []
    queues = [iter(docs) for docs in groups.values()]
    while queues and len(out) < limit:
        for queue in list(queues):
            doc = next(queue, None)
            if doc is None:
                queues.remove(queue)
            elif len(out) < limit:
                out.append(doc)
    return out


def curate_cmd() -> list[str]:
    """The installed ``curate`` entry point next to this interpreter (what a user runs), else ``-c``."""
    script = Path(sys.executable).with_name("curate")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from curate.cli import main; sys.exit(main())"]


def reap(proc: subprocess.Popen, timeout_s: float) -> resource.struct_rusage:
    """Wait for ``proc`` with ``os.wait4`` (the rusage of it and the children it reaped), killing it after
    ``timeout_s``; sets its returncode, as Popen must not wait again."""
    timer = threading.Timer(timeout_s, proc.kill)
    timer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage
