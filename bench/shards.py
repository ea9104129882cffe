"""Tokens/s of ``curate shards build`` against the bare encoders on the same text, in the same run.

**Corpus.** Real text from the shared data (``SOURCES.md``): English Wikipedia articles split into their
paragraphs (``enwiki-shortened-plaintext``, 3,804 distinct paragraphs, median 355 characters), the WikiText-2
validation articles whole (60, ~18,000 characters each, tokenised text with ``@-@`` and `` <unk> ``), the
20 CCNet pages of Dolma's test data, and the 2015 reddit threads (9,465 distinct comments in 949 runs of
ten). That is 4,833 distinct documents, 4.7 MB of UTF-8 text. They are interleaved by bytes (the next
document comes from the source with the fewest bytes so far) and, to reach ``--mb`` (50 MB), repeated,
each copy with an id of its own; ``--smoke`` takes the first 1.5 MB of the interleaving, all distinct.
Repeating costs nothing in realism here: neither encoder keeps a cache that a repeat could hit and new text
would miss (``tokenizers``' BPE word cache holds 10,000 words and is full within the first pass), and both
sides meet the same text. The documents go round-robin into ``--files`` (4) JSONL files (``{"id", "text",
"url"}``) under ``bench/_work/shards/``.

**Cores.** Each side runs on as many CPUs as it has threads or workers: the limit's T-thread process and
curate's W-worker command (its whole process tree: driver, worker processes, Ray's daemons) are pinned
with ``sched_setaffinity`` to the first T or W CPUs; the limit's pools size themselves from that mask (rayon,
tiktoken), and curate's tokenize encodes on one thread per task (``tokenizer_threads``), so curate runs
exactly as configured, on W cores.

**The limit**, in a child process per thread count T = 1, 2 (``RAYON_NUM_THREADS`` = T as well: the Rust
pool's size is fixed when it first runs, so one process cannot measure both):
``curate.tokenizer.load_tokenizer("cl100k_base")``, then over the same files' non-empty texts, in batches of
``--batch`` (1,000) documents per file, each way timed apart after one untimed batch (first-use costs) and
without the load: (1) its ``tokenizers.Tokenizer`` (the object the tokenizer.json engine encodes with,
special-token matching off) ``encode_batch(texts, add_special_tokens=False)``, the issue's limit, counting
tokens with ``len(encoding)``; (2) the same with ``encode_batch_fast`` (no offsets); (3)
``TrainingTokenizer.encode_batch`` itself, the stage's call, which for the built-in cl100k runs tiktoken's
BPE (same ids, ~4x faster than (1) here) and returns one flat ``uint32`` array and the lengths. The three
must count the same tokens; (3)'s ids, per document (length and CRC-32), are what the shards are checked
against. The goal ratio is against the faster of (1) and (3) -- the fastest way to these ids that curate has,
so a ratio below 1 is the stage's own overhead -- and the ratio against (1) is printed beside it. The limits
run before the curate runs and again after (the difference is drift on a shared machine); the ratios use
the mean of the two passes.

**curate**: ``curate shards build FILES --output OUT --no-progress --workers W --format megatron`` as a
subprocess, W = 1 (curate's local executor: one worker process, no Ray) and W = 2 (an embedded Ray, two
workers). Tokens = ``OUT/shards/manifest.json`` totals.tokens, over (a) the wall seconds of the whole command
(interpreter, imports, Ray's start, ``jsonl_read`` into Parquet, the stage, the ledger) and (b) the tokenize
step alone (``run.json`` profile ``step1_s``: its plan, tokens and manifest rounds, each round's seconds from
its ``[curate]`` log line, and the pass-through of the kept corpus). ``run.json``'s ``start_s`` (Ray's start,
~3-4 s on an idle machine) and ``step0_s`` (the reader) are printed apart, and how much of the stage is not
encoding at the limit's rate. CPU seconds of the command's process tree (psutil, sampled every 100 ms) give
the cores it kept busy. **Checked**: manifest tokens = the limit's tokens + one EOS per non-empty document,
and every shard document (read back with ``curate.shards.formats.open_shard``) is exactly one input document
with the limit's ids and a final EOS; a mismatch means the shards are wrong, and the bench exits 1.

Printed lines: ``limit (tokenizers encode_batch, T thread(s)): ...``, ``limit (TrainingTokenizer.encode_batch,
T thread(s)): ...``, ``curate shards build, W worker(s): ... tok/s end to end, ... tok/s in the tokenize
stage``, ``ratio curate/limit (W worker(s)): end to end 0.xx (stage: 0.xx; goal >= 0.9)``. Usage::

    python bench/shards.py              # 50 MB (11 M tokens), ~3-4 min on 2 cores
    python bench/shards.py --mb 200     # more text: start-up costs shrink against it
    python bench/shards.py --smoke      # 1.5 MB, every code path in well under a minute
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import heapq
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from texts import curate_cmd

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "bench" / "_work" / "shards"
MB = 1e6
#: Comments per reddit document (as bench/texts.py groups them).
REDDIT_COMMENTS = 10
#: A [curate] log line closing a round of the stage: "tokenize tokens: 4 units -> ... in 12.3s".
ROUND_LINE = re.compile(r"\[curate\] tokenize (\w+): .* in (\d+(?:\.\d+)?)s\s*$")


# ---- corpus ------------------------------------------------------------------------------------------

def source_documents(data: Path) -> dict[str, list[tuple[str, str, str]]]:
    """(id, text, url) of the distinct real documents of each source, in file order."""
    text = data / "text"
    out: dict[str, list[tuple[str, str, str]]] = {}
    wiki = out["wiki"] = []
    with gzip.open(text / "enwiki-shortened-plaintext.shared.jsonl.gz", "rt", encoding="utf-8") as f:
        for article in map(json.loads, f):
            url = "https://en.wikipedia.org/wiki/" + article["title"].replace(" ", "_")
            paragraphs = (p.strip() for p in article["text"].split("\n\n"))
            wiki += [(f"wiki/{article['id']}/{k}", p, f"{url}#p{k}") for k, p in enumerate(p for p in paragraphs if p)]
    # WikiText-2: articles start at a top-level heading line " = Title = " (subheadings are " = = x = = ").
    articles = re.split(r"\n(?= = [^=].* = \n)", (text / "wikitext-2.valid.txt").read_text(encoding="utf-8"))
    out["wikitext"] = [(f"wikitext/{i}", a, "https://en.wikipedia.org/wiki/" +
                        a.strip().splitlines()[0].strip(" =").replace(" ", "_"))
                       for i, a in enumerate(articles) if a.strip()]
    ccnet = out["ccnet"] = []
    for path in sorted(text.glob("dolma-ccnet-*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            ccnet += [(f"ccnet/{row['id']}", row["text"], row["id"]) for row in map(json.loads, f)]
    reddit = out["reddit"] = []
    for path in sorted((text / "reddit-2015").glob("*.json.gz")):
        raw = gzip.decompress(path.read_bytes()).decode("utf-8")
        pairs = json.loads("[" + raw[2:] if raw.startswith("[,") else raw)  # upstream bug, see SOURCES.md
        comments = list(dict.fromkeys(t for pair in pairs for t in (pair["question"], pair["answer"])))
        sub = path.name.split("_", 1)[0]
        reddit += [(f"reddit/{sub}/{i // REDDIT_COMMENTS}", "\n\n".join(comments[i:i + REDDIT_COMMENTS]),
                    f"https://www.reddit.com/r/{sub}/comments/bench{i // REDDIT_COMMENTS}/")
                   for i in range(0, len(comments), REDDIT_COMMENTS)]
    missing = [name for name, docs in out.items() if not docs]
    if missing:
        raise SystemExit(f"no documents for {', '.join(missing)} under {text}: the shared data is incomplete")
    return out


def interleave(sources: dict[str, list[tuple[str, str, str]]]) -> list[tuple[str, str, str, str]]:
    """(source, id, text, url) of every distinct document, the next always from the source with the fewest
    bytes so far, so any prefix mixes the sources by bytes."""
    seen: set[str] = set()
    queues = {name: iter(docs) for name, docs in sources.items()}
    heap = [(0, name) for name in sources]
    out = []
    while heap:
        size, name = heapq.heappop(heap)
        doc = next(queues[name], None)
        if doc is None:
            continue
        if doc[1] not in seen:  # exact duplicate texts are dropped, keeping the first
            seen.add(doc[1])
            out.append((name, *doc))
            size += len(doc[1].encode("utf-8"))
        heapq.heappush(heap, (size, name))
    return out


@dataclass
class Corpus:
    files: list[Path]
    docs: int
    distinct: int
    bytes: int
    by_source: dict[str, int]  # UTF-8 bytes per source


def build_corpus(data: Path, target_mb: float, distinct_only: bool, n_files: int, folder: Path) -> Corpus:
    """JSONL files holding documents of the interleaving, repeated (new ids) until ``target_mb`` MB."""
    pool = interleave(source_documents(data))
    target = int(target_mb * MB)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    files = [folder / f"part-{j:03d}.jsonl" for j in range(n_files)]
    total, n, by_source = 0, 0, dict.fromkeys({s for s, *_ in pool}, 0)
    with contextlib.ExitStack() as stack:
        handles = [stack.enter_context(open(path, "w", encoding="utf-8")) for path in files]
        while total < target:
            copy, i = divmod(n, len(pool))
            if copy and distinct_only:
                break
            source, id_, text, url = pool[i]
            size = len(text.encode("utf-8"))
            handles[n % n_files].write(json.dumps({"id": f"{id_}#{copy}", "text": text, "url": url},
                                                  ensure_ascii=False) + "\n")
            total, n = total + size, n + 1
            by_source[source] += size
    return Corpus(files, n, min(n, len(pool)), total, by_source)


# ---- the limit: a child process per thread count -------------------------------------------------------

def read_files(files: list[str]) -> list[list[tuple[str, str]]]:
    out = []
    for path in files:
        with open(path, encoding="utf-8") as f:
            out.append([(row["id"], row["text"]) for row in map(json.loads, f)])
    return out


def cpu_set(n: int) -> set[int]:
    """The first ``n`` CPUs this process may run on (all of them when there are fewer)."""
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    return set(allowed[:n])


#: Runs ``argv[2:]`` on the CPUs listed in ``argv[1]`` (an exec, so the command is the same process).
PIN_EXEC = "import os, sys; os.sched_setaffinity(0, map(int, sys.argv[1].split(','))); os.execv(sys.argv[2], sys.argv[2:])"


def pin(n: int) -> None:
    """Run this process (and what it starts) on ``n`` CPUs: rayon and tiktoken's pools size themselves from the
    affinity mask, so each side gets no more threads than cores."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cpu_set(n))


#: The encoders the limit times: (1) is the issue's limit, (3) what the stage calls.
METHODS = ("encode_batch", "encode_batch_fast", "TrainingTokenizer.encode_batch")


def limit_child(files: list[str], threads: int, batch: int, result: str) -> int:
    """Time the three encoders over the files' texts on ``threads`` CPUs; write their figures and the
    per-document reference (length and CRC-32 of the ids)."""
    pin(threads)  # before any tokenizer exists: their thread pools read the mask once
    per_file = read_files(files)
    docs = [(id_, text) for rows in per_file for id_, text in rows if text]  # the stage skips empty texts
    batches = [[text for _, text in rows[k:k + batch] if text] for rows in per_file for k in range(0, len(rows), batch)]
    t0 = time.perf_counter()
    import curate.tokenizer
    from curate.tokenizer import load_tokenizer

    tokenizer = load_tokenizer("cl100k_base")
    backend = tokenizer._tokenizer()  # the stage's own tokenizers.Tokenizer (special-token matching off)
    load_s = time.perf_counter() - t0
    engine = "tiktoken" if "cl100k_base" in getattr(curate.tokenizer, "TIKTOKEN_ENGINES", {}) else "tokenizers"

    def count(encode):
        return lambda texts: sum(map(len, encode(texts, add_special_tokens=False)))

    kept: list[tuple[np.ndarray, np.ndarray]] = []

    def training(texts):
        kept.append(tokenizer.encode_batch(texts))
        return int(kept[-1][1].sum())

    calls = dict(zip(METHODS, (count(backend.encode_batch), count(backend.encode_batch_fast), training), strict=True))
    timings: dict[str, tuple[int, float]] = {}
    for name, call in calls.items():
        call(batches[0])  # untimed: first-use costs (thread pools, per-thread regexes), paid once per worker too
        kept.clear()
        t0 = time.perf_counter()
        tokens = sum(call(texts) for texts in batches)
        timings[name] = (tokens, time.perf_counter() - t0)

    reference, at = {}, 0
    for flat, lengths in kept:
        ends = np.cumsum(lengths)
        for lo, hi in zip(ends - lengths, ends, strict=True):
            reference[docs[at][0]] = (int(hi - lo), zlib.crc32(flat[lo:hi].tobytes()))
            at += 1
    Path(result).write_text(json.dumps({
        "threads": threads, "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_s": load_s, "docs": len(docs), "eos": tokenizer.eos_id, "engine": engine, "timings": timings,
        "reference": reference}))
    return 0


@dataclass
class Limit:
    threads: int
    load_s: float
    docs: int  # non-empty documents
    eos: int
    engine: str  # what TrainingTokenizer.encode_batch runs for cl100k
    timings: dict[str, tuple[int, float]]  # method -> (tokens, seconds)
    reference: dict[str, tuple[int, int]]  # id -> (tokens, CRC-32 of the uint32 ids)

    @property
    def tokens(self) -> int:
        return self.timings["encode_batch"][0]

    def rate(self, method: str = "encode_batch") -> float:
        tokens, seconds = self.timings[method]
        return tokens / seconds

    def lines(self) -> list[str]:
        t, n = self.timings, f"{self.threads} thread{'s' if self.threads > 1 else ''}"
        return [(f"limit (tokenizers encode_batch, {n}): {self.tokens} tokens, {self.rate():.0f} tok/s "
                 f"({t['encode_batch'][1]:.1f} s; encode_batch_fast {self.rate('encode_batch_fast'):.0f} tok/s; "
                 f"load {self.load_s:.1f} s not counted)"),
                (f"limit (TrainingTokenizer.encode_batch, {n}): {self.tokens} tokens, "
                 f"{self.rate(METHODS[2]):.0f} tok/s ({t[METHODS[2]][1]:.1f} s; the stage's call, {self.engine} "
                 f"for cl100k, ids to one uint32 array)")]


def run_limit(files: list[Path], threads: int, batch: int, folder: Path) -> Limit:
    result = folder / f"limit-{threads}.json"
    env = {**os.environ, "RAYON_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "true"}
    cmd = [sys.executable, __file__, "--limit-child", "--threads", str(threads), "--batch", str(batch), "--result",
           str(result), *map(str, files)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=3600, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"the limit ({threads} threads) exited with {proc.returncode}:\n{proc.stderr[-3000:]}")
    r = json.loads(result.read_text())
    limit = Limit(threads, r["load_s"], r["docs"], r["eos"], r["engine"], {k: tuple(v) for k, v in r["timings"].items()},
                  {k: tuple(v) for k, v in r["reference"].items()})
    counts = {k: v[0] for k, v in limit.timings.items()}
    if len(set(counts.values())) != 1:
        raise SystemExit(f"the encoders disagree on the token count: {counts}")
    return limit


# ---- the curate run ------------------------------------------------------------------------------------

class TreeCpu:
    """CPU seconds (user + system) of a process and all its descendants, sampled every ``interval`` s; a
    process that ends between samples loses at most its last interval."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        import psutil

        self.psutil, self.root, self.interval = psutil, psutil.Process(pid), interval
        self.last: dict[tuple[int, float], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        psutil = self.psutil
        while not self._stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                procs = []
            for p in procs:
                try:
                    t = p.cpu_times()
                    self.last[(p.pid, p.create_time())] = t.user + t.system
                except psutil.Error:
                    pass
            self._stop.wait(self.interval)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return sum(self.last.values())


@dataclass
class CurateRun:
    workers: int
    wall: float
    cpu_s: float
    run: dict
    manifest: dict
    rounds: dict[str, float]  # round -> seconds, from the log
    out: Path

    @property
    def profile(self) -> dict:
        return self.run.get("profile", {})

    @property
    def tokens(self) -> int:
        return self.manifest["totals"]["tokens"]

    @property
    def stage_s(self) -> float:
        return self.profile["step1_s"]

    def line(self) -> str:
        p, w = self.profile, self.workers
        rounds = ", ".join(f"{name} {s:.1f}" for name, s in self.rounds.items()) or "no round lines in the log"
        return (f"curate shards build, {w} worker{'s' if w > 1 else ''}: {self.tokens} tokens, "
                f"{self.tokens / self.wall:.0f} tok/s end to end ({self.wall:.1f} s), "
                f"{self.tokens / self.stage_s:.0f} tok/s in the tokenize stage ({self.stage_s:.1f} s; rounds: {rounds})"
                f"\n  {self.run.get('executor')} executor: start {p.get('start_s', 0):.1f} s, step 0 (jsonl_read) "
                f"{p.get('step0_s', 0):.1f} s, step 1 (tokenize) {self.stage_s:.1f} s, close {p.get('close_s', 0):.1f} s, "
                f"ledger {p.get('ledger_s', 0):.1f} s, outside Runner.run {self.wall - p.get('total_s', 0):.1f} s; "
                f"CPU {self.cpu_s:.1f} s = {self.cpu_s / self.wall:.2f} cores over the command "
                f"({len(self.manifest['shards'])} shards, {self.manifest['format']} {self.manifest['dtype']})")


def run_curate(files: list[Path], out: Path, workers: int, fmt: str) -> CurateRun:
    from curate.shards.formats import read_manifest

    shutil.rmtree(out, ignore_errors=True)
    log = out.with_suffix(".log")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [*curate_cmd(), "shards", "build", *map(str, files), "--output", str(out), "--no-progress",
           "--workers", str(workers), "--format", fmt]
    if hasattr(os, "sched_setaffinity"):  # W workers on W cores, as the W-thread limit
        cmd = [sys.executable, "-I", "-S", "-c", PIN_EXEC, ",".join(map(str, sorted(cpu_set(workers)))), *cmd]
    with open(log, "wb") as fh:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        cpu = TreeCpu(proc.pid)
        try:
            rc = proc.wait(timeout=3600)
        finally:
            cpu_s = cpu.stop()
        wall = time.perf_counter() - t0
    text = log.read_text(errors="replace")
    if rc != 0:
        tail = "\n".join(text.splitlines()[-25:])
        raise SystemExit(f"curate shards build --workers {workers} exited with {rc} after {wall:.1f} s; log {log}:"
                         f"\n{tail}")
    rounds = {m[1]: float(m[2]) for m in map(ROUND_LINE.search, text.splitlines()) if m}
    run = json.loads((out / "run.json").read_text())
    return CurateRun(workers, wall, cpu_s, run, read_manifest(out), rounds, out)


def check_shards(cur: CurateRun, limit: Limit) -> tuple[list[str], bool]:
    """Lines saying whether the shards hold exactly the limit's tokens, and whether they all agree."""
    import pyarrow.parquet as pq

    from curate.shards.formats import open_shard

    expected = limit.tokens + limit.docs
    ok_total = cur.tokens == expected
    who = f"{cur.workers} worker{'s' if cur.workers > 1 else ''}"
    lines = [(f"  tokens, {who}: {cur.tokens} in the manifest {'=' if ok_total else '!='} {limit.tokens} (limit) + "
              f"{limit.docs} EOS (one per non-empty document) = {expected}: {'OK' if ok_total else 'MISMATCH'}")]

    directory = Path(cur.manifest["_dir"])
    seen: dict[str, int] = {}
    wrong: list[str] = []
    for shard in cur.manifest["shards"]:
        reader = open_shard(str(directory / shard["name"]), cur.manifest["format"], cur.manifest["dtype"])
        ids = pq.read_table(directory / f"{shard['name']}.docs.parquet", columns=["id"])["id"].to_pylist()
        for i, id_ in enumerate(ids):
            seen[id_] = seen.get(id_, 0) + 1
            doc = np.asarray(reader.document(i))
            want = limit.reference.get(id_)
            if want is None or doc.size != want[0] + 1 or doc[-1] != limit.eos or \
                    zlib.crc32(doc[:-1].astype(np.uint32).tobytes()) != want[1]:
                wrong.append(id_)
    missing = [id_ for id_ in limit.reference if id_ not in seen]
    repeated = [id_ for id_, n in seen.items() if n > 1]
    good = len(seen) - len(set(wrong))
    ok_docs = not wrong and not missing and not repeated
    lines.append(f"  documents, {who}: {good} of {len(limit.reference)} in the shards once each with the limit's ids + EOS"
                 + ("" if ok_docs else f": MISMATCH ({len(set(wrong))} differ, e.g. {wrong[:2]}; {len(missing)} "
                                         f"missing, e.g. {missing[:2]}; {len(repeated)} repeated)"))
    return lines, ok_total and ok_docs


# ---- main ----------------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=float, default=50.0, help="MB of UTF-8 text (distinct documents repeated to reach it)")
    ap.add_argument("--files", type=int, default=4, help="JSONL input files")
    ap.add_argument("--batch", type=int, default=1000, help="documents per encode_batch call in the limit")
    ap.add_argument("--format", choices=["megatron", "npy"], default="megatron", help="curate shards build --format")
    ap.add_argument("--smoke", action="store_true", help="~1.5 MB of distinct documents: every code path in seconds")
    ap.add_argument("--limit-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    ap.add_argument("inputs", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.limit_child:
        return limit_child(args.inputs, args.threads, args.batch, args.result)
    sys.stdout.reconfigure(line_buffering=True)
    t_start = time.perf_counter()
    from texts import shared_data  # exits when the shared data is missing: the bench measures nothing without it

    if args.smoke:
        args.mb = 1.5
    folder = WORK / ("smoke" if args.smoke else f"mb{args.mb:g}-f{args.files}")
    folder.mkdir(parents=True, exist_ok=True)
    corpus = build_corpus(shared_data(), args.mb, args.smoke, args.files, folder / "input")
    print(f"corpus: {corpus.docs} documents, {corpus.bytes / MB:.1f} MB of text ({corpus.distinct} distinct"
          f"{', repeated with ids of their own' if corpus.docs > corpus.distinct else ''}; "
          + ", ".join(f"{s} {b / MB:.1f} MB" for s, b in sorted(corpus.by_source.items(), key=lambda kv: -kv[1]))
          + f") in {len(corpus.files)} JSONL files")
    print(f"  load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores at the start (a shared machine slows "
          "both sides alike only if the load lasts: compare ratios, not tok/s)")

    if len(cpu_set(2)) < 2:
        print("  WARNING: one CPU only: the 2-thread limit and the 2-worker run share it")

    limits = {t: run_limit(corpus.files, t, args.batch, folder) for t in (1, 2)}
    for limit in limits.values():
        print("\n".join(limit.lines()))
    runs = {w: run_curate(corpus.files, folder / f"out-w{w}", w, args.format) for w in (1, 2)}
    again = {t: run_limit(corpus.files, t, args.batch, folder) for t in (1, 2)}
    for t, limit in again.items():
        print(f"limit again ({t} thread{'s' if t > 1 else ''}, drift check): " + ", ".join(
            f"{m} {limit.rate(m):.0f} tok/s ({limit.rate(m) / limits[t].rate(m) - 1:+.0%} against the first pass)"
            for m in (METHODS[0], METHODS[2])))

    ok = True
    for w, cur in runs.items():
        print(cur.line())
        lines, good = check_shards(cur, limits[1])
        ok &= good
        for line in lines:
            print(line)
        mean = {m: (limits[w].rate(m) + again[w].rate(m)) / 2 for m in METHODS}
        best = max((METHODS[0], METHODS[2]), key=mean.get)  # the limit: the faster way to the same ids
        stage, whole = cur.tokens / cur.stage_s, cur.tokens / cur.wall
        print(f"ratio curate/limit ({w} worker{'s' if w > 1 else ''}): end to end {whole / mean[best]:.2f} (stage: "
              f"{stage / mean[best]:.2f}; goal >= 0.9) against {best} on {w} thread{'s' if w > 1 else ''}, the faster "
              f"limit ({mean[best]:.0f} tok/s, mean of the passes before and after); against tokenizers encode_batch "
              f"({mean[METHODS[0]]:.0f} tok/s): end to end {whole / mean[METHODS[0]]:.2f} (stage: "
              f"{stage / mean[METHODS[0]]:.2f})")
        encode_s, rounds = limits[w].tokens / mean[best], cur.rounds
        if {"tokens", "manifest"} <= rounds.keys():  # a plan round runs only with a host cap
            print(f"  the stage's {cur.stage_s:.1f} s: encoding at that limit's rate {encode_s:.1f} s, the rest "
                  f"{cur.stage_s - encode_s:.1f} s (tokens round beyond encoding {rounds['tokens'] - encode_s:.1f} s: "
                  f"token blobs, shuffle files, sort, shard files; plan + manifest rounds "
                  f"{rounds.get('plan', 0.0) + rounds['manifest']:.1f} s; the step outside its rounds "
                  f"{cur.stage_s - sum(rounds.values()):.1f} s)")
    print(f"total {time.perf_counter() - t_start:.0f} s (load average {os.getloadavg()[0]:.1f} at the end); inputs, "
          f"outputs and curate's logs in {folder}")
    if not ok:
        print("FAILED: the shards do not hold the limit's tokens")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
