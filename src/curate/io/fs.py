"""Files through fsspec: local paths and globs, ``s3://``, ``https://``; atomic writes."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any

import fsspec
from fsspec.core import url_to_fs

_GLOB_CHARS = "*?["


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


def expand_inputs(patterns: list[str], storage_options: dict[str, Any] | None = None) -> list[str]:
    """Resolve paths, globs and directories to a sorted, de-duplicated list of file URIs."""
    found: set[str] = set()
    for pattern in patterns:
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
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        yield tmp
        fs.mv(tmp, path)
    finally:
        if fs.exists(tmp):
            fs.rm(tmp)


def write_text_atomic(fs: fsspec.AbstractFileSystem, path: str, text: str) -> None:
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with atomic_path(fs, path) as tmp:
        with fs.open(tmp, "w") as f:
            f.write(text)
