"""Decode and extract one HTML page; run as ``python -m curate.io.html`` it is the extraction child.

The child speaks length-prefixed pickles over stdin/stdout. It is a plain subprocess rather than a
``multiprocessing`` one because spawn/forkserver re-import the parent's ``__main__``: a user's script or
notebook calling ``run_file`` without an ``if __name__ == "__main__"`` guard would run again in the child.
It imports only this module, so it starts in well under a second.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import struct
import sys
from typing import IO, Any, NamedTuple, Protocol

_META_CHARSET = re.compile(rb"<meta[^>]{0,200}?charset\s*=\s*[\"']?\s*([\w.:-]+)", re.IGNORECASE)
_HEADER = struct.Struct("<Q")
_PAGE = struct.Struct("<Qi")  # html bytes, declared-charset bytes (-1: none declared)


class EngineOptions(Protocol):
    engine: str
    main_content: bool
    favor_precision: bool
    model: str | None


class Extraction(NamedTuple):
    """One page's extraction; the boilerplate fields are set by the ``curate`` engine only."""

    text: str
    encoding: str
    boilerplate: str | None = None  # the lines its classifier cut, in page order
    boilerplate_share: float | None = None  # their share of the main-content characters


class PageLines(NamedTuple):
    """A ``curate``-engine page between its two steps: :func:`prepare_page` found the lines its classifier
    reads (in the time-limited child), :func:`finish_pages` scores them with other pages' lines (numpy's
    per-call cost spread over a batch). Lines are newline-joined: two strings cross the pipe faster than
    two lists, and no line holds a newline (:func:`curate.io.boilerplate.page_lines`)."""

    raws: str
    texts: str
    whole_page: bool
    encoding: str

    def lines(self) -> tuple[list[str], list[str], bool]:
        if not self.texts:
            return [], [], self.whole_page
        return self.raws.split("\n"), self.texts.split("\n"), self.whole_page


def decode_html(html: bytes, declared: str | None) -> tuple[str, str]:
    """Decode a page whose declared charset may lie; return (text, encoding used).

    Order: valid UTF-8 wins (a page that decodes as UTF-8 is UTF-8 far more often than the latin-1 its
    header claims), then the HTTP charset, then a ``<meta charset>``, then byte-level detection.
    """
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding, map_encoding_to_html5

    try:
        return html.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    meta = _META_CHARSET.search(html[:4096])
    for label in (declared, meta.group(1).decode("ascii", "ignore") if meta else None):
        encoding = map_encoding_to_html5(label) if label else None
        if encoding and encoding != "utf-8":
            try:
                return html.decode(encoding), encoding
            except (UnicodeDecodeError, LookupError):
                pass
    encoding = detect_encoding(html) or "cp1252"
    return bytes_to_str(html, encoding, errors="replace"), encoding


def extract_text(html: bytes, declared: str | None, options: EngineOptions) -> tuple[str, str]:
    """(text, encoding) of one page with the configured engine."""
    extraction = extract_page(html, declared, options)
    return extraction.text, extraction.encoding


def extract_page(html: bytes, declared: str | None, options: EngineOptions) -> Extraction:
    """One page with the configured engine (for many, :func:`prepare_page` each, then :func:`finish_pages`)."""
    return finish_pages([prepare_page(html, declared, options)], options)[0]


def prepare_page(html: bytes, declared: str | None, options: EngineOptions) -> Extraction | PageLines:
    """The per-page work of the configured engine, what the time limit covers: ``resiliparse`` (main
    content or the whole page) and ``trafilatura`` extract the text; ``curate`` reads resiliparse's main
    content as lines for its classifier (:mod:`curate.io.boilerplate`), which :func:`finish_pages` runs."""
    page, encoding = decode_html(html, declared)
    if options.engine == "curate":
        from curate.io.boilerplate import page_lines

        raws, texts, whole_page = page_lines(page)
        return PageLines("\n".join(raws), "\n".join(texts), whole_page, encoding)
    if options.engine == "resiliparse":
        from resiliparse.extract.html2text import extract_plain_text

        text = extract_plain_text(page, main_content=options.main_content, alt_texts=False,
                                  preserve_formatting=True, noscript=False)
    else:
        import trafilatura

        text = trafilatura.extract(page, favor_precision=options.favor_precision, include_comments=False,
                                   deduplicate=True) or ""
    return Extraction(text.strip(), encoding)


def finish_pages(prepared: list[Extraction | PageLines], options: EngineOptions) -> list[Extraction]:
    """:func:`prepare_page` results as extractions: the ``curate`` engine's lines classified together
    (linear in their number; the classifier drops the boilerplate resiliparse kept)."""
    lines = [i for i, value in enumerate(prepared) if isinstance(value, PageLines)]
    if not lines:
        return list(prepared)
    from curate.io.boilerplate import classify_pages, load_model

    scored = classify_pages([prepared[i].lines() for i in lines], load_model(options.model))
    out = list(prepared)
    for i, (text, cut, share) in zip(lines, scored, strict=True):
        out[i] = Extraction(text.strip(), prepared[i].encoding, cut, share)
    return out


def write_frame(stream: IO[bytes], value: Any) -> None:
    payload = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(payload)) + payload)
    stream.flush()


def write_page(fd: int, html: bytes, declared: str | None) -> None:
    """An extraction request as raw bytes (no pickle): a page is copied into the pipe once, not three times."""
    label = b"" if declared is None else declared.encode("utf-8", "surrogateescape")
    chunks = [memoryview(c) for c in (_PAGE.pack(len(html), -1 if declared is None else len(label)), label, html)
              if len(c)]
    while chunks:  # a pipe write can be partial: go on from where it stopped
        written = os.writev(fd, chunks)
        while chunks and written >= len(chunks[0]):
            written -= len(chunks.pop(0))
        if chunks:
            chunks[0] = chunks[0][written:]


def read_page(fd: int) -> tuple[bytes, str | None]:
    """What :func:`write_page` sent: (html, declared charset)."""
    size, label_size = _PAGE.unpack(read_exact(fd, _PAGE.size))
    declared = None if label_size < 0 else read_exact(fd, label_size).decode("utf-8", "surrogateescape")
    return read_exact(fd, size), declared


def read_exact(fd: int, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise EOFError("child process closed its pipe")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int) -> Any:
    (size,) = _HEADER.unpack(read_exact(fd, _HEADER.size))
    return pickle.loads(read_exact(fd, size))


class _Options:
    def __init__(self, values: dict[str, Any]) -> None:
        self.engine = values["engine"]
        self.main_content = values["main_content"]
        self.favor_precision = values["favor_precision"]
        self.model = values.get("model")


def serve(options: EngineOptions) -> None:
    """Answer :func:`write_page` requests with ``("ok", Extraction fields)``, ``("lines", PageLines
    fields)`` or ``("error", message)`` frames."""
    protocol = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything a library prints goes to stderr, never into the protocol
    prepare_page(b"<html><body><p>warm-up</p></body></html>", None, options)  # import the engine first
    write_frame(protocol, ("ready", None))
    stdin = sys.stdin.buffer.fileno()
    while True:
        try:
            html, declared = read_page(stdin)
        except EOFError:
            return
        try:
            value = prepare_page(html, declared, options)  # sent as a tuple: this module is __main__ here
            write_frame(protocol, ("lines" if isinstance(value, PageLines) else "ok", tuple(value)))
        except Exception as exc:  # noqa: BLE001 - reported per document, the child stays alive
            write_frame(protocol, ("error", f"{type(exc).__name__}: {exc}"))


if __name__ == "__main__":
    serve(_Options(json.loads(sys.argv[1])))
