"""``curate audit grep OUT PATTERN``: the documents whose text contains a phrase (or matches an RE2 regex),
counted by where they ended up (kept, or removed by which stage and reason), and the first matches with a
snippet around the match: "was the article about X kept, and if not, which rule removed it?".

Every committed part is scanned, part by part, a record batch of its ``text`` column at a time, with
pyarrow's vectorised RE2 matcher (``match_substring_regex``; a literal is escaped, see :class:`Pattern`:
C++ over the Arrow buffers, no per-document Python). The other columns (``removed_by``, ``reason``; ``id``
and ``url`` while first matches are still wanted) are read only for the row groups that hold a match, so
memory is bounded by one batch whatever the corpus size.

Parallel over parts: on this machine, one child process per group of parts (``--workers``; by default as
many as the output's size pays for, at most one per CPU, since a child takes about half a second to start;
a plain subprocess speaking pickles, as ``curate.worker``, not ``multiprocessing``, which would re-import
the caller's ``__main__``); on a Ray cluster when the output is there (``--ray-address``,
``$RAY_ADDRESS`` or the profile's ``ray_address``), one Ray task per group of parts. Each group returns
counts and its first matches; nothing but those crosses a process boundary. The scan rate (MB of text per
second, wall clock) goes to stderr. Exit status as grep: 0 when a document matched, 1 when none did.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

if TYPE_CHECKING:  # the scanning child imports this module: only pyarrow, not the dataset and config layers
    from curate.audit.run import RunOutput

HELP = "documents whose text contains a phrase (or RE2 regex): counts kept / removed by stage and reason, and " \
       "the first matches with a snippet"
WHERE = ("kept", "removed", "all")
#: Rows per record batch of ``text`` (a few MB of web text): the scan's memory bound per process.
BATCH_ROWS = 2048
#: Bytes of context either side of the first match in a snippet.
CONTEXT = 80
#: RE2's metacharacters: escaped, every other character of a literal stands for itself.
_RE2_SPECIAL = frozenset("\\.+*?()|[]{}^$")
#: Parquet bytes per child process when ``--workers`` is not given: about a second of scanning, against the
#: half second a child takes to start (importing pyarrow); a smaller output is scanned in this process.
PROCESS_BYTES = 192 << 20
#: Joins a match's stage and reason into one key for ``value_counts`` (no stage or reason name holds it).
_KEY_SEPARATOR = "\x1f"


class ScanError(RuntimeError):
    """A part could not be scanned (unreadable, or its worker process died)."""


@dataclass(frozen=True)
class Pattern:
    """What to look for; ``regex`` is RE2 syntax (pyarrow's), not Python's ``re``.

    A literal is matched as an escaped RE2 pattern, not by Arrow's literal ``match_substring``: on web text
    here RE2 ran at 2-14 GB/s for phrases of several characters where ``match_substring`` (a byte-by-byte
    search) ran at 0.4-0.7 GB/s, slower than reading the Parquet column; the two agree on every string.
    """

    text: str
    regex: bool = False
    ignore_case: bool = False

    @property
    def re2(self) -> str:
        return self.text if self.regex else "".join("\\" + c if c in _RE2_SPECIAL else c for c in self.text)

    def matches(self, strings: pa.Array) -> pa.Array:
        return pc.fill_null(pc.match_substring_regex(strings, self.re2, ignore_case=self.ignore_case), False)

    def spans(self, strings: pa.Array) -> tuple[list[int], list[int]]:
        """Byte offset and byte length of the first match in each string (all of which match)."""
        starts = pc.find_substring_regex(strings, self.re2, ignore_case=self.ignore_case)
        # the match's length, by RE2 itself: the bytes one replacement of the first match by nothing removes
        shorter = pc.replace_substring_regex(strings, f"(?i){self.re2}" if self.ignore_case else self.re2, "",
                                             max_replacements=1)
        lengths = pc.subtract(pc.binary_length(strings), pc.binary_length(shorter))
        return starts.to_pylist(), lengths.to_pylist()

    def check(self) -> None:
        """Raise ValueError for a pattern RE2 rejects, before any worker starts."""
        try:
            self.matches(pa.array([""]))
        except pa.ArrowInvalid as exc:
            raise ValueError(f"invalid RE2 pattern {self.text!r}: {exc}") from exc

    def describe(self) -> str:
        return f"{self.text!r} ({'RE2 regex' if self.regex else 'literal'}" \
               f"{', ignoring case' if self.ignore_case else ''})"


@dataclass(frozen=True)
class Part:
    index: int  # position in the scan order (kept, then removed by stage in pipeline order): fixes the output
    kind: str  # kept | removed
    stage: str | None  # the removing stage of a removed part
    path: str
    size: int  # bytes of the Parquet file: balances the groups


@dataclass
class PartResult:
    index: int
    documents: int = 0
    bytes: int = 0
    matched: int = 0
    reasons: Counter = field(default_factory=Counter)  # (stage, reason) -> matches, removed parts only
    first: list[dict[str, Any]] = field(default_factory=list)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pattern", help="the words to find (a literal substring of the text unless --regex)")
    parser.add_argument("--in", dest="where", choices=WHERE, default="all",
                        help="search the kept corpus, the removed documents or both (default)")
    parser.add_argument("--regex", action="store_true", help="PATTERN is an RE2 regular expression")
    parser.add_argument("--ignore-case", "-i", action="store_true", help="match regardless of case")
    parser.add_argument("--count", action="store_true", help="only the counts, no matches shown")
    parser.add_argument("-n", dest="limit", type=int, default=20, help="matches shown (default 20)")
    parser.add_argument("--json", action="store_true", help="print counts and matches as JSON")
    parser.add_argument("--workers", type=int, default=None, help="parallel scans (default here: one process "
                        "per 192 MB of Parquet, at most one per CPU; on Ray: two tasks per cluster CPU)")
    parser.add_argument("--ray-address", default=None, help="scan on this Ray cluster (default: $RAY_ADDRESS, "
                        "else the profile's ray_address, else processes on this machine)")


def run(args: argparse.Namespace, output: RunOutput) -> int:
    from curate.config import load_profile

    profile = load_profile(getattr(args, "config", None))
    address = args.ray_address or os.environ.get("RAY_ADDRESS") or profile.ray_address
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers: expected a positive integer, got {args.workers}")
    pattern = Pattern(args.pattern, regex=args.regex, ignore_case=args.ignore_case)
    try:
        found = grep(output, pattern, where=args.where, limit=0 if args.count else max(args.limit, 0),
                     workers=args.workers or profile.workers, ray_address=address)
    except ScanError as exc:
        print(f"curate: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(found, indent=1) if args.json else format_grep(found))
    rate = found["bytes"] / 1e6 / found["seconds"] if found["seconds"] else 0.0
    print(f"grep: scanned {found['bytes'] / 1e6:,.1f} MB of text ({found['documents']:,} documents in "
          f"{found['parts']} parts) in {found['seconds']:.2f} s: {rate:,.1f} MB/s ({found['executor']})",
          file=sys.stderr)
    return 0 if found["matched"] else 1


def grep(output: RunOutput, pattern: Pattern, where: str = "all", limit: int = 20, workers: int | None = None,
         ray_address: str | None = None) -> dict[str, Any]:
    """Counts of matching documents by where they are, and the first ``limit`` matches, as plain data.

    ``ray_address`` scans with Ray tasks (an already initialised Ray in this process is used as it is);
    otherwise ``workers`` child processes (default: every CPU; 1 scans in this process).
    """
    if where not in WHERE:
        raise ValueError(f"where {where!r}: one of {', '.join(WHERE)}")
    pattern.check()
    t0 = time.perf_counter()
    parts = _parts(output, where)
    if ray_address:
        results, executor = _scan_on_ray(parts, pattern, limit, output.filesystem, ray_address, workers)
    else:
        if workers is None:  # a child pays for itself only with enough to read
            workers = min(os.cpu_count() or 1, -(-sum(p.size for p in parts) // PROCESS_BYTES))
        results, executor = _scan_here(parts, pattern, limit, output.filesystem, workers)
    seconds = time.perf_counter() - t0
    return _merge(output, pattern, where, parts, results, limit, seconds, executor)


def _parts(output: RunOutput, where: str) -> list[Part]:
    found: list[tuple[str, str | None, str]] = []
    if where in ("kept", "all"):
        found += [("kept", None, p) for p in output.paths("kept")]
    if where in ("removed", "all"):
        found += [("removed", stage, p) for stage in output.stages() for p in output.paths("removed", stage)]
    sizes = [info.size or 0 for info in output.filesystem.get_file_info([path for _, _, path in found])]
    return [Part(i, kind, stage, path, size) for i, ((kind, stage, path), size) in enumerate(zip(found, sizes,
                                                                                                 strict=True))]


# ---- the scan (runs in a child process, a Ray task, or here) -----------------------------------------------


def scan_part(part: Part, pattern: Pattern, limit: int, filesystem: pafs.FileSystem) -> PartResult:
    """One part, a record batch of ``text`` (and of a removed part's ``removed_by``, ``reason``, dictionary
    encoded and cheap to decode) at a time; ``id`` and ``url`` only of the row groups with a first match."""
    result = PartResult(part.index)
    columns = ["text", "removed_by", "reason"] if part.kind == "removed" else ["text"]
    first: dict[int, dict[str, Any]] = {}  # row of the part -> its snippet (and stage, reason), while wanted
    with filesystem.open_input_file(part.path) as f:
        parquet = pq.ParquetFile(f)
        row = 0
        # one reader over every row group: a removed part has one small row group per batch of the run
        for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=columns):
            text = batch.column(0)
            result.documents += len(text)
            result.bytes += pc.sum(pc.binary_length(text)).as_py() or 0
            found = pc.indices_nonzero(pattern.matches(text))
            if len(found):
                result.matched += len(found)
                if part.kind == "removed":
                    keys = pc.binary_join_element_wise(batch.column(1).take(found), batch.column(2).take(found),
                                                       _KEY_SEPARATOR)
                    for entry in pc.value_counts(keys).to_pylist():
                        result.reasons[tuple(entry["values"].split(_KEY_SEPARATOR, 1))] += entry["counts"]
                wanted = limit - len(first)
                if wanted > 0:
                    picked = found.slice(0, wanted)
                    strings = text.take(picked)
                    starts, lengths = pattern.spans(strings)
                    for i, s, start, length in zip(picked.to_pylist(), strings.to_pylist(), starts, lengths,
                                                   strict=True):
                        where = {"status": "kept"} if part.kind == "kept" else {
                            "status": "removed", "stage": batch.column(1)[i].as_py(),
                            "reason": batch.column(2)[i].as_py()}
                        first[row + i] = {**where, **_snippet(s, start, length)}
            row += len(text)
        if first:
            result.first = _with_ids(parquet, first)
    return result


def _with_ids(parquet: pq.ParquetFile, first: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """The first matches (by row of the part) with their ``id`` and ``url``, read from their row groups only."""
    starts, at = [], 0
    for g in range(parquet.metadata.num_row_groups):
        starts.append(at)
        at += parquet.metadata.row_group(g).num_rows
    groups = sorted({bisect.bisect_right(starts, row) - 1 for row in first})
    table = parquet.read_row_groups(groups, columns=["id", "url"])
    offset, position = 0, {}
    for g in groups:  # where each selected row group begins in ``table``
        position[g] = offset
        offset += parquet.metadata.row_group(g).num_rows
    out = []
    for row, match in first.items():
        g = bisect.bisect_right(starts, row) - 1
        i = position[g] + row - starts[g]
        out.append({"id": table["id"][i].as_py(), "url": table["url"][i].as_py(), **match})
    return out


def _snippet(text: str, start: int, length: int) -> dict[str, Any]:
    """The match and the words around it (offsets are UTF-8 bytes, as Arrow's; a cut character is dropped)."""
    raw = text.encode()
    before = raw[max(0, start - CONTEXT):start].decode("utf-8", "ignore")
    match = raw[start:start + length].decode("utf-8", "ignore")
    after = raw[start + length:start + length + CONTEXT].decode("utf-8", "ignore")
    return {"match": match, "before": " ".join(before.split()), "after": " ".join(after.split()),
            "offset": len(raw[:start].decode("utf-8", "ignore"))}


def scan_group(parts: list[Part], pattern: Pattern, limit: int, filesystem: pafs.FileSystem) -> list[PartResult]:
    """What one worker does: its parts in scan order. A later part's matches come after an earlier one's, so
    once the group holds ``limit`` first matches its later parts are only counted."""
    results = []
    for part in parts:
        wanted = max(limit - sum(len(r.first) for r in results), 0)
        try:
            results.append(scan_part(part, pattern, wanted, filesystem))
        except (OSError, pa.ArrowException) as exc:  # a damaged or vanished part: say which
            raise ScanError(f"{part.path}: {type(exc).__name__}: {exc}") from exc
    return results


def _groups(parts: list[Part], n: int) -> list[list[Part]]:
    """``n`` groups of about equal bytes (largest part first to the lightest group), each in scan order."""
    groups: list[list[Part]] = [[] for _ in range(min(n, len(parts)))]
    loads = [0] * len(groups)
    for part in sorted(parts, key=lambda p: -p.size):
        lightest = loads.index(min(loads))
        groups[lightest].append(part)
        loads[lightest] += part.size
    return [sorted(g, key=lambda p: p.index) for g in groups if g]


def _scan_here(parts: list[Part], pattern: Pattern, limit: int, filesystem: pafs.FileSystem, workers: int
               ) -> tuple[list[PartResult], str]:
    if workers <= 1 or len(parts) <= 1:
        return scan_group(parts, pattern, limit, filesystem), "1 process"
    groups = _groups(parts, workers)
    # The children import what this process can (as curate.worker's child does).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    children = []
    from curate.io.html import read_frame, write_frame

    try:
        for group in groups:
            child = subprocess.Popen([sys.executable, "-c", "from curate.audit.grep import serve; serve()"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0, env=env)
            children.append(child)
            write_frame(child.stdin, (group, pattern, limit, filesystem))
            child.stdin.close()
        results: list[PartResult] = []
        for child, group in zip(children, groups, strict=True):
            try:
                status, value = read_frame(child.stdout.fileno())
            except EOFError:
                raise ScanError(f"the process scanning {group[0].path} (and {len(group) - 1} more parts) exited "
                                f"with code {child.wait()}") from None
            if status != "ok":
                raise ScanError(value)
            results += value
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
            child.wait()
            child.stdout.close()
    return results, f"{len(groups)} processes"


def serve() -> None:
    """The child: one ``(parts, pattern, limit, filesystem)`` frame in, one ``(status, results)`` frame out."""
    from curate.io.html import read_frame, write_frame

    protocol = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # nothing printed here may reach the protocol
    parts, pattern, limit, filesystem = read_frame(sys.stdin.buffer.fileno())
    try:
        write_frame(protocol, ("ok", scan_group(parts, pattern, limit, filesystem)))
    except ScanError as exc:
        write_frame(protocol, ("error", str(exc)))
    except Exception as exc:  # noqa: BLE001 - any other failure is reported to the parent, which raises it
        write_frame(protocol, ("error", f"{type(exc).__name__}: {exc}"))


def _scan_on_ray(parts: list[Part], pattern: Pattern, limit: int, filesystem: pafs.FileSystem, address: str,
                 workers: int | None) -> tuple[list[PartResult], str]:
    """One Ray task per group of parts, on the cluster at ``address`` (or the Ray this process already has)."""
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, logging_level="WARNING")
    try:
        n = workers or 2 * int(ray.cluster_resources().get("CPU", 1))
        groups = _groups(parts, n)
        task = ray.remote(num_cpus=1)(scan_group)
        results = [r for rs in ray.get([task.remote(g, pattern, limit, filesystem) for g in groups]) for r in rs]
    finally:
        if started_here:
            ray.shutdown()
    return results, f"{len(groups)} Ray tasks"


# ---- the answer ---------------------------------------------------------------------------------------------


def _merge(output: RunOutput, pattern: Pattern, where: str, parts: list[Part], results: list[PartResult],
           limit: int, seconds: float, executor: str) -> dict[str, Any]:
    by_index = {r.index: r for r in results}
    order = {name: i for i, name in enumerate(output.stages())}
    kept = {"documents": 0, "matched": 0}
    stages: dict[str, dict[str, Any]] = {}
    first: list[dict[str, Any]] = []
    for part in parts:
        r = by_index[part.index]
        if part.kind == "kept":
            entry = kept
        else:
            entry = stages.setdefault(part.stage, {"documents": 0, "matched": 0, "reasons": Counter()})
            for (stage, reason), n in r.reasons.items():  # a removed/<stage>/ part's removed_by is that stage
                entry["reasons"][reason if stage == part.stage else f"{stage}: {reason}"] += n
        entry["documents"] += r.documents
        entry["matched"] += r.matched
        first += r.first[: max(limit - len(first), 0)]
    removed = {stage: {"documents": s["documents"], "matched": s["matched"],
                       "reasons": dict(s["reasons"].most_common())}
               for stage, s in sorted(stages.items(), key=lambda kv: order.get(kv[0], len(order)))}
    documents = kept["documents"] + sum(s["documents"] for s in removed.values())
    return {"output": output.out.url, "pattern": pattern.text, "regex": pattern.regex,
            "ignore_case": pattern.ignore_case, "in": where, "documents": documents,
            "matched": kept["matched"] + sum(s["matched"] for s in removed.values()),
            "kept": kept if where != "removed" else None, "removed": removed if where != "kept" else None,
            "matches": first, "bytes": sum(r.bytes for r in results), "parts": len(parts),
            "seconds": round(seconds, 3), "executor": executor}


def format_grep(found: dict[str, Any]) -> str:
    share = found["matched"] / found["documents"] if found["documents"] else 0.0
    scope = {"all": "kept + removed", "kept": "kept", "removed": "removed"}[found["in"]]
    lines = [f"{_describe(found)} in {found['output']} ({scope}): {found['matched']:,} of {found['documents']:,} "
             f"documents ({share:.2%})", f"  {'':<44} {'matched':>10} {'of':>10}"]
    if found["kept"] is not None:
        lines.append(f"  {'kept':<44} {found['kept']['matched']:>10,} {found['kept']['documents']:>10,}")
    for stage, s in (found["removed"] or {}).items():
        lines.append(f"  {'removed by ' + stage:<44} {s['matched']:>10,} {s['documents']:>10,}")
        lines += [f"      {reason:<40} {n:>10,}" for reason, n in s["reasons"].items()]
    if found["matches"]:
        lines.append(f"\nfirst {len(found['matches'])} matches:")
    for m in found["matches"]:
        where = "KEPT" if m["status"] == "kept" else f"REMOVED by {m['stage']}: {m['reason']}"
        lines.append(f"  {m['id']}  {m['url'] or ''}\n    {where}\n    “…{m['before']} «{m['match']}» {m['after']}…”")
    return "\n".join(lines)


def _describe(found: dict[str, Any]) -> str:
    return Pattern(found["pattern"], found["regex"], found["ignore_case"]).describe()
