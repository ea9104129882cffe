"""Files through fsspec: local paths and globs, ``s3://``, ``https://``; atomic writes."""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any

import fsspec
from fsspec.core import url_to_fs

_GLOB_CHARS = "*?["
#: Common Crawl lists a snapshot's files in ``warc.paths.gz`` (``wet.paths.gz``, …): one path per line,
#: relative to its data server.
LISTING_SUFFIXES = (".paths", ".paths.gz")
DEFAULT_LISTING_BASE = "https://data.commoncrawl.org/"
_TMP_INFIX = ".tmp-"
_TMP_NAME = re.compile(rf"{re.escape(_TMP_INFIX)}[0-9a-f]{{8}}$")


@dataclass(frozen=True)
class Location:
    """An output folder (local path or URL) and the fsspec options to reach it; picklable for workers."""

    url: str
    storage_options: dict[str, Any] = field(default_factory=dict)

    def resolve(self) -> tuple[fsspec.AbstractFileSystem, str]:
        fs, root = url_to_fs(self.url.rstrip("/"), **self.storage_options)
        return fs, root.rstrip("/")


class InputError(ValueError):
    """A user-named input that does not exist or cannot be listed."""


def expand_inputs(patterns: list[str], storage_options: dict[str, Any] | None = None,
                  listing_base: str = DEFAULT_LISTING_BASE) -> list[str]:
    """Resolve paths, globs, directories and Common Crawl listings to a sorted, de-duplicated list of file
    URIs. A listing's entries are taken as listed (relative ones against ``listing_base``), without a
    request per file: one that is missing is reported as an unreadable input when the run reaches it."""
    found: set[str] = set()
    for pattern in patterns:
        if pattern.endswith(LISTING_SUFFIXES):
            found.update(read_listing(pattern, storage_options, listing_base))
            continue
        if pattern.startswith(("http://", "https://")):
            fs, _ = url_to_fs(pattern, **(storage_options or {}))
            if not fs.exists(pattern):  # HTTP cannot be listed or globbed: one URL is one file
                raise InputError(f"input not found: {pattern}")
            found.add(pattern)
            continue
        fs, path = url_to_fs(pattern, **(storage_options or {}))
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        prefix = "" if protocol == "file" else f"{protocol}://"
        if any(c in path for c in _GLOB_CHARS):
            matches = [m for m in fs.glob(path) if fs.isfile(m)]
        elif fs.isdir(path):
            matches = [m for m in fs.find(path) if not m.rsplit("/", 1)[-1].startswith(".")]
        elif fs.exists(path):
            matches = [path]
        else:
            raise InputError(f"input not found: {pattern}")
        if not matches:
            raise InputError(f"input matches no files: {pattern}")
        found.update(prefix + m for m in matches)
    return sorted(found)


def read_listing(uri: str, storage_options: dict[str, Any] | None = None,
                 listing_base: str = DEFAULT_LISTING_BASE) -> list[str]:
    """The file URIs a listing names, in its order (local, ``s3://`` or ``https://``; gzip by suffix)."""
    try:
        with open_input(uri, storage_options) as raw:
            data = raw.read()
    except FileNotFoundError as exc:
        raise InputError(f"input listing not found: {uri}") from exc
    if uri.endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise InputError(f"input listing {uri}: not gzip ({exc})") from exc
    entries = [line.strip() for line in io.TextIOWrapper(io.BytesIO(data), encoding="utf-8") if line.strip()]
    if not entries:
        raise InputError(f"input listing {uri} names no files")
    base = listing_base.rstrip("/") + "/"
    return [e if "://" in e or e.startswith("/") else base + e for e in entries]


def select_inputs(uris: list[str], shard: tuple[int, int] | None = None, limit: int | None = None) -> list[str]:
    """A deterministic slice: every ``n``-th input from the ``k``-th (``shard=(k, n)``, 0 <= k < n), then
    the first ``limit`` of those; shards 0..n-1 of one list are disjoint and cover it."""
    if shard is not None:
        k, n = shard
        if not 0 <= k < n:
            raise InputError(f"--shard {k}/{n}: expected 0 <= K < N")
        uris = uris[k::n]
    if limit is not None:
        if limit < 1:
            raise InputError(f"--limit {limit}: expected a positive number of inputs")
        uris = uris[:limit]
    if not uris:
        raise InputError("the input selection (--shard/--limit) is empty")
    return uris


def file_id(uri: str) -> str:
    """Stable id of an input (names its output parts and completion marker)."""
    return hashlib.sha1(uri.encode()).hexdigest()[:16]


def open_input(uri: str, storage_options: dict[str, Any] | None = None) -> IO[bytes]:
    """A streaming binary reader: nothing is staged on disk or held whole in memory.

    HTTP(S) uses one sequential GET (``block_size=0``), which works with servers that do not support
    range requests; S3 reads are ranged blocks of ``default_block_size``.
    """
    options = dict(storage_options or {})
    if uri.startswith(("http://", "https://")):
        options["block_size"] = 0
    return fsspec.open(uri, "rb", **options).open()


@contextmanager
def atomic_path(fs: fsspec.AbstractFileSystem, path: str) -> Iterator[str]:
    """Yield a temporary path next to ``path``; rename it into place only if the block succeeds."""
    tmp = f"{path}{_TMP_INFIX}{uuid.uuid4().hex[:8]}"
    try:
        yield tmp
        fs.mv(tmp, path)
    finally:
        if fs.exists(tmp):
            fs.rm(tmp)


def remove_temporaries(fs: fsspec.AbstractFileSystem, folder: str) -> int:
    """Delete the temporary files :func:`atomic_path` left under ``folder`` in a process killed before its
    rename (its ``finally`` never ran); returns how many. Only while nothing writes there."""
    if not fs.exists(folder):
        return 0
    stale = [p for p in fs.find(folder) if _TMP_NAME.search(p.rsplit("/", 1)[-1])]
    for path in stale:
        fs.rm(path)
    return len(stale)


def write_text_atomic(fs: fsspec.AbstractFileSystem, path: str, text: str) -> None:
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with atomic_path(fs, path) as tmp:
        with fs.open(tmp, "w") as f:
            f.write(text)
