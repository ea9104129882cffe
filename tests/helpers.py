"""Independent reference counts for tests (warcio, not our reader)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from warcio.archiveiterator import ArchiveIterator


def warcio_counts(path: Path) -> tuple[Counter, int]:
    """Records by type, and the documents a reader should emit: HTTP-200 HTML responses + WET conversions."""
    by_type: Counter = Counter()
    documents = 0
    with open(path, "rb") as f:
        for rec in ArchiveIterator(f):
            by_type[rec.rec_type] += 1
            if rec.rec_type == "conversion":
                documents += 1
            elif rec.rec_type == "response" and rec.http_headers is not None:
                ctype = (rec.http_headers.get_header("Content-Type") or "").split(";")[0].strip().lower()
                if rec.http_headers.get_statuscode() == "200" and ctype in ("text/html", "application/xhtml+xml"):
                    documents += 1
    return by_type, documents
