"""A local filesystem under an fsspec protocol of its own (``faultdisk://``) that fails as a full or a read-only
disk does, for the fault tests of an unwritable output (tests/test_faults.py).

A real full disk needs a mount, and chmod cannot make a folder read-only for root (as CI runs): this fails
the same calls with the same errors instead. The test registers it in every process of a run (the CLI, its
Ray workers, its worker subprocess) with a ``sitecustomize`` on their PYTHONPATH; ``CURATE_TEST_DISK`` says
how it fails: ``full:<bytes>:<folder>`` (a write fails with ENOSPC once the files under ``folder`` would
exceed ``bytes``) or ``readonly`` (every change fails with EROFS).
"""

from __future__ import annotations

import errno
import os
from typing import Any

from fsspec.implementations.local import LocalFileOpener, LocalFileSystem

PROTOCOL = "faultdisk"
ENV = "CURATE_TEST_DISK"
SITECUSTOMIZE = f"import fsspec\nfsspec.register_implementation({PROTOCOL!r}, 'fault_fs.FaultDisk')\n"


def _mode() -> tuple[str, int, str]:
    kind, _, rest = os.environ[ENV].partition(":")
    if kind == "readonly":
        return kind, 0, ""
    capacity, _, folder = rest.partition(":")
    return kind, int(capacity), folder


def _used(folder: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(folder) for f in files)


def _refuse(path: str) -> None:
    raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)


class _FillingFile(LocalFileOpener):
    """A file on the full disk: a write that would pass its capacity fails, as ``write(2)`` would."""

    def write(self, data: Any) -> int:
        _, capacity, folder = _mode()
        if _used(folder) + len(data) > capacity:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.path)
        return super().write(data)


class FaultDisk(LocalFileSystem):
    protocol = PROTOCOL

    @classmethod
    def _strip_protocol(cls, path: Any) -> str:
        return super()._strip_protocol(str(path).removeprefix(f"{PROTOCOL}://"))

    def _open(self, path: str, mode: str = "rb", block_size: int | None = None, **kwargs: Any):
        path = self._strip_protocol(path)
        if not any(c in mode for c in "wax+"):
            return super()._open(path, mode, block_size, **kwargs)
        if _mode()[0] == "readonly":
            _refuse(path)
        return _FillingFile(path, mode, fs=self, **kwargs)

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        if _mode()[0] == "readonly" and not (exist_ok and self.isdir(path)):
            _refuse(self._strip_protocol(path))
        super().makedirs(path, exist_ok)

    def mv(self, path1: str, path2: str, recursive: bool = True, **kwargs: Any) -> None:
        if _mode()[0] == "readonly":
            _refuse(self._strip_protocol(path2))
        super().mv(path1, path2, recursive, **kwargs)

    def rm(self, path: Any, recursive: bool = False, maxdepth: int | None = None) -> None:
        if _mode()[0] == "readonly":
            _refuse(self._strip_protocol(path if isinstance(path, str) else path[0]))
        super().rm(path, recursive, maxdepth)
