"""A supervised worker subprocess: the executor of runs that need no Ray (one input, or ``--workers 1``).

Starting an embedded Ray costs seconds of fixed time (its GCS, raylet, agents and prestarted workers
each import Ray), more than a small run's documents take. A single ``python -m curate.worker`` child
runs the same jobs as a Ray actor would, so a unit still runs in a process of its own: a stage that
kills its process (an OOM kill, a segfault) costs a fresh child and a retry, not the run. It is a plain
subprocess speaking length-prefixed pickles (as the extraction child does), not ``multiprocessing``,
which would re-import a caller's ``__main__``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import traceback
from typing import Any

from curate.console import log, progress
from curate.io.html import read_frame, write_frame


class ProcessPool:
    """The :class:`curate.runner.Pool` contract on one child process: ``run(job, units, label, docs_of, what)``."""

    def __init__(self, attempts: int, show_progress: bool) -> None:
        self.attempts, self.show_progress = attempts, show_progress
        self._proc: subprocess.Popen | None = None
        self._job: Any = None

    def _start(self) -> None:
        # The child imports what this process can (plug-in stages found through sys.path, not only installed).
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self._proc = subprocess.Popen([sys.executable, "-m", "curate.worker"], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, bufsize=0, env=env)
        self._send(("load", self._job))

    def _send(self, message: tuple[str, Any]) -> None:
        write_frame(self._proc.stdin, message)

    def _call(self, unit: Any) -> tuple[str, Any]:
        """("ok", result) | ("error", message) | ("died", message)."""
        if self._proc is None or self._proc.poll() is not None:
            self._start()
        try:
            self._send(("run", unit))
            return read_frame(self._proc.stdout.fileno())
        except (EOFError, BrokenPipeError, OSError):
            code = self._proc.wait()
            self._proc = None
            return "died", f"worker process exited with code {code}"

    def run(self, job: Any, units: list[Any], label: str, docs_of=None, what: str = "docs"
            ) -> tuple[dict[str, Any], dict[str, str]]:
        self._job = job
        if self._proc is not None and self._proc.poll() is None:
            self._send(("load", job))
        results: dict[str, Any] = {}
        failed: dict[str, str] = {}
        bar = progress(len(units), label, self.show_progress)
        docs, t0 = 0, time.time()
        try:
            for unit in units:
                for attempt in range(1, self.attempts + 1):
                    status, value = self._call(unit)
                    if status == "ok":
                        results[unit.unit] = value
                        break
                    why = f"worker died: {value}" if status == "died" else value
                    if attempt < self.attempts:
                        log(f"{unit.unit}: attempt {attempt} of {self.attempts} failed ({why}); retrying")
                    else:
                        failed[unit.unit] = f"failed {attempt} times; last: {why}"
                bar.update(1)
                if docs_of and unit.unit in results:
                    docs += docs_of(results[unit.unit])
                    bar.set_postfix_str(f"{docs} {what}, {docs / max(time.time() - t0, 1e-9):.0f} {what}/s")
        finally:
            bar.close()
        return results, failed

    def close(self) -> None:
        """Let the child tear its job down (an extraction child, a model), then make sure it is gone."""
        if self._proc is None:
            return
        proc, self._proc = self._proc, None
        # A blocking wait, not Popen.wait(timeout=...), which polls in sleeps; a timer kills a child stuck in
        # its teardown.
        guard = threading.Timer(30, proc.kill)
        guard.start()
        try:
            proc.stdin.close()
            proc.wait()
        finally:
            guard.cancel()
            proc.stdout.close()


def serve() -> None:
    """Answer ``("load", job)`` (no reply) and ``("run", unit)`` frames with ``(status, value)`` frames."""
    protocol = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything a stage prints goes to stderr, never into the protocol
    stdin = sys.stdin.buffer.fileno()
    job, load_error = None, None
    try:
        while True:
            try:
                kind, value = read_frame(stdin)
            except EOFError:
                return
            except Exception as exc:  # noqa: BLE001 - a job that cannot be unpickled here: say why per unit
                kind, value, load_error = "broken", None, _describe(exc)
            if kind in ("load", "broken"):
                if job is not None:
                    job.close()
                job = value
                load_error = load_error if kind == "broken" else None
                continue
            if load_error is not None:
                write_frame(protocol, ("error", f"the job could not be loaded in the worker: {load_error}"))
                continue
            try:
                write_frame(protocol, ("ok", job.run(value)))
            except Exception as exc:  # noqa: BLE001 - the unit failed; the runner retries or reports it
                write_frame(protocol, ("error", _describe(exc)))
    finally:
        if job is not None:
            job.close()


def _describe(exc: Exception) -> str:
    frames = traceback.format_exc(limit=-1).strip().splitlines()
    return f"{type(exc).__name__}: {exc}"[:500] + (f" | {frames[-2].strip()}" if len(frames) > 1 else "")


if __name__ == "__main__":
    serve()
    os._exit(0)  # not the interpreter's teardown, where pyarrow may abort (see curate.cli.entry)
