"""Independent reference counts for tests (warcio, not our reader)."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

from warcio.archiveiterator import ArchiveIterator


def _is_document(rec) -> bool:
    """What a reader should emit: an HTTP-200 HTML response or a WET conversion."""
    if rec.rec_type == "conversion":
        return True
    if rec.rec_type != "response" or rec.http_headers is None:
        return False
    ctype = (rec.http_headers.get_header("Content-Type") or "").split(";")[0].strip().lower()
    return rec.http_headers.get_statuscode() == "200" and ctype in ("text/html", "application/xhtml+xml")


def warcio_counts(path: Path) -> tuple[Counter, int]:
    """Records by type, and the documents a reader should emit: HTTP-200 HTML responses + WET conversions."""
    by_type: Counter = Counter()
    documents = 0
    with open(path, "rb") as f:
        for rec in ArchiveIterator(f):
            by_type[rec.rec_type] += 1
            documents += _is_document(rec)
    return by_type, documents


def warcio_documents(data: bytes) -> int:
    """Documents warcio reads from ``data`` before it stops (it raises at the first record it cannot parse)."""
    documents = 0
    try:
        for rec in ArchiveIterator(io.BytesIO(data)):
            documents += _is_document(rec)
    except Exception:  # noqa: BLE001 - whatever it raises, that is where warcio stops reading
        pass
    return documents
