"""HTML → main text, with encoding repair and a per-document time limit.

Resiliparse is the default (DCLM found it ~8x faster than trafilatura with better downstream scores);
trafilatura is selectable per pipeline, and so is ``curate``: resiliparse's main content with the
boilerplate lines it kept dropped by a learned line classifier (:mod:`curate.io.boilerplate`), which adds
``extract_boilerplate_share`` and (``keep_boilerplate``) ``extract_boilerplate``, the cut lines, for the
audit. Decoding and extraction live in :mod:`curate.io.html`.
Extraction runs in a child process so a pathological page that makes a C extension spin can be killed
after ``timeout_s`` (a thread cannot interrupt C code); the page is then removed with reason
``extraction_timeout`` and the worker goes on with a fresh child. The ``curate`` engine's classifier
runs in the worker over the whole batch's lines once the child has found them (numpy, linear in the
lines, so outside the limit; a third of its cost per page is per call, spread over the batch).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import select
import subprocess
import sys
import time
from typing import IO, Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from curate.io.html import Extraction, PageLines, finish_pages, prepare_page, read_frame, write_page
from curate.registry import register
from curate.schema import set_column
from curate.stage import DocumentStage, StageParams

_STARTUP_TIMEOUT_S = 120.0


class ExtractParams(StageParams):
    engine: Literal["resiliparse", "trafilatura", "curate"] = Field(
        "resiliparse", description="curate: resiliparse's main content, then a learned line classifier drops "
        "the boilerplate it kept (see the README's extractor table)")
    timeout_s: float = Field(2.0, ge=0, description="per-document limit; 0 runs in-process without one")
    main_content: bool = Field(True, description="resiliparse: drop navigation/boilerplate blocks")
    favor_precision: bool = Field(True, description="trafilatura: as datatrove's FineWeb recipe")
    min_chars: int = Field(1, ge=0, description="shorter extractions are removed as 'empty_text'")
    model: str | None = Field(None, description="curate engine: a boilerplate model file (default: the one the "
                              "package ships, built by classifiers/boilerplate/train.py)")
    keep_boilerplate: bool = Field(True, description="curate engine: write the cut lines to extract_boilerplate "
                                   "(what `curate audit why` shows); off: only their share")


#: Pipe capacity asked for (Linux): a page then crosses in one write instead of waking each side several
#: times through a 64 KB pipe, which cost ~0.2 ms of CPU per page, a seventh of resiliparse's own 1.45 ms.
_PIPE_BYTES = 1 << 20


def _widen(*pipes: IO[bytes]) -> int:
    """Ask for big pipe buffers (where the system refuses, limits or not Linux, the default still works);
    returns the smallest capacity the pipes got."""
    try:
        for pipe in pipes:
            with contextlib.suppress(OSError):
                fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
        return min(fcntl.fcntl(pipe.fileno(), fcntl.F_GETPIPE_SZ) for pipe in pipes)
    except (AttributeError, OSError):
        return 1 << 16


#: ("ok", an extraction or a curate-engine page still to classify), ("error", message) or ("timeout", None)
Outcome = tuple[str, Extraction | PageLines | str | None]


class _Sandbox:
    """A child process that extracts one page at a time and is replaced when a page exceeds the limit.

    Pages are pipelined: the next page is written while the child works on the current one, so the child
    never waits for the parent to wake up and send it (~0.6 ms a page on a 2-core VM, a fifth of
    resiliparse's time). A page's clock starts when the child can start it: when it was sent to an idle child,
    or when the answer to the page before it arrived.
    """

    def __init__(self, params: ExtractParams) -> None:
        self.params = params
        self._proc: subprocess.Popen | None = None
        self._capacity = 1 << 16

    def _start(self) -> None:
        options = json.dumps(self.params.model_dump(include={"engine", "main_content", "favor_precision", "model"}))
        self._proc = subprocess.Popen([sys.executable, "-m", "curate.io.html", options], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, bufsize=0)
        self._capacity = _widen(self._proc.stdin, self._proc.stdout)
        # The per-document clock starts only once the child has imported its engine: a slow start on a
        # loaded machine must not be mistaken for a pathological page.
        if not self._ready(_STARTUP_TIMEOUT_S) or read_frame(self._proc.stdout.fileno())[0] != "ready":
            self.close()
            raise RuntimeError(f"extraction subprocess did not start within {_STARTUP_TIMEOUT_S}s")

    def _ready(self, timeout: float) -> bool:
        return bool(select.select([self._proc.stdout], [], [], max(timeout, 0.0))[0])

    def run_all(self, pages: list[tuple[bytes, str | None]]) -> list[Outcome]:
        """Every page's outcome, in order."""
        out: list[Outcome] = []
        sent = 0  # pages written to the current child; out holds the answers to those before them
        clock = 0.0
        while len(out) < len(pages):
            if self._proc is None or self._proc.poll() is not None:
                self._start()
                sent = len(out)
            try:
                if sent == len(out):  # the child is idle: its clock starts now
                    write_page(self._proc.stdin.fileno(), *pages[sent])
                    sent, clock = sent + 1, time.monotonic()
                # The next page goes in behind it only if both fit the pipe: a write that blocks while the
                # child blocks writing a big answer would deadlock.
                if sent < len(pages) and sent == len(out) + 1 and \
                        len(pages[sent - 1][0]) + len(pages[sent][0]) + 2048 <= self._capacity:
                    write_page(self._proc.stdin.fileno(), *pages[sent])
                    sent += 1
                if not self._ready(clock + self.params.timeout_s - time.monotonic()):
                    out.append(("timeout", None))
                    self.close()
                    continue
                status, value = read_frame(self._proc.stdout.fileno())
            except (EOFError, BrokenPipeError):
                out.append(("error", "extractor process died"))
                self.close()
                continue
            clock = time.monotonic()  # the child goes on with the page sent behind, if any
            kind = {"ok": Extraction, "lines": PageLines}.get(status)
            out.append(("ok", kind(*value)) if kind else (status, value))
        return out

    def close(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc.stdin.close()
            self._proc.stdout.close()
        self._proc = None


@register
class Extract(DocumentStage):
    """Fills ``text`` from ``html`` (rows that already have text, e.g. WET records, pass through)."""

    name = "extract"
    Params = ExtractParams
    reads = ("html", "charset", "text")

    def setup(self) -> None:
        self._sandbox = _Sandbox(self.params) if self.params.timeout_s > 0 else None

    def teardown(self) -> None:
        if self._sandbox is not None:
            self._sandbox.close()

    def _extract(self, pages: list[tuple[bytes, str | None]]) -> list[Outcome]:
        if self._sandbox is not None:
            return self._sandbox.run_all(pages)
        return [self._in_process(html, declared) for html, declared in pages]

    def _in_process(self, html: bytes, declared: str | None) -> Outcome:
        try:
            return ("ok", prepare_page(html, declared, self.params))
        except Exception as exc:  # noqa: BLE001 - one bad page must not fail its batch
            return ("error", f"{type(exc).__name__}: {exc}")

    def _finish(self, outcomes: list[Outcome]) -> list[Outcome]:
        """The prepared pages finished together (the curate engine's classifier runs over the batch); if
        that fails, page by page, so that only the page at fault becomes an error."""
        ready = [i for i, (status, _) in enumerate(outcomes) if status == "ok"]
        try:
            done = [("ok", e) for e in finish_pages([outcomes[i][1] for i in ready], self.params)]
        except Exception:  # noqa: BLE001 - isolate the page, below
            done = [self._finish_one(outcomes[i][1]) for i in ready]
        out = list(outcomes)
        for i, outcome in zip(ready, done, strict=True):
            out[i] = outcome
        return out

    def _finish_one(self, prepared: Extraction | PageLines) -> Outcome:
        try:
            return ("ok", finish_pages([prepared], self.params)[0])
        except Exception as exc:  # noqa: BLE001 - one bad page must not fail its batch
            return ("error", f"{type(exc).__name__}: {exc}")

    def process(self, batch: pa.Table) -> pa.Table:
        params: ExtractParams = self.params  # type: ignore[assignment]
        htmls = batch["html"].to_pylist()
        charsets = batch["charset"].to_pylist()
        texts = batch["text"].to_pylist()
        n = batch.num_rows
        encodings: list[str | None] = [None] * n
        timeouts: list[bool] = [False] * n
        errors: list[str | None] = [None] * n
        cut: list[str | None] = [None] * n
        shares: list[float | None] = [None] * n
        rows = [i for i, html in enumerate(htmls) if html is not None]  # WET conversion records arrive as text
        outcomes = self._finish(self._extract([(htmls[i], charsets[i]) for i in rows]))
        for i, (status, value) in zip(rows, outcomes, strict=True):
            if status == "ok":
                texts[i], encodings[i], cut[i], shares[i] = value
            else:
                texts[i] = None
                timeouts[i] = status == "timeout"
                errors[i] = value if status == "error" else None
        text = pa.array(texts, pa.string())
        batch = set_column(batch, "text", text)
        batch = set_column(batch, "extract_encoding", pa.array(encodings, pa.string()))
        if params.engine == "curate":  # what the line classifier cut, for the audit
            batch = set_column(batch, "extract_boilerplate_share", pa.array(shares, pa.float64()))
            if params.keep_boilerplate:
                batch = set_column(batch, "extract_boilerplate", pa.array(cut, pa.string()))
        lengths = pc.fill_null(pc.utf8_length(text), 0)
        batch = set_column(batch, "extract_chars", lengths)
        error = pa.array(errors, pa.string())
        batch = self.fail(batch, pc.is_valid(error), error)
        timed_out = pa.array(timeouts, pa.bool_())
        batch = self.remove(batch, timed_out, "extraction_timeout", params.timeout_s, params.timeout_s)
        too_short = pc.less(lengths, params.min_chars)
        return self.remove(batch, too_short, "empty_text", pc.cast(lengths, pa.float64()), float(params.min_chars))
