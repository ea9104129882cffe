"""``curate audit`` on a run of a million documents: ``grep`` MB/s against GNU grep (or ripgrep), and how long
``summary`` and ``why`` take (they must stay interactive).

**The run.** ``--docs`` documents (1,000,000; ``--smoke``: 5,000) of real text, as JSONL (``{"id", "url",
"text"}``) in ``--files`` files under ``bench/_work/audit/``. The distinct real documents of ``bench/texts.py``
(2,951: web pages' main text, DCLM, Wikipedia, news, speeches, forums, reddit threads; 13.5 MB) are too few,
so each generated document is an excerpt of one of them, as a crawl holds many pages of one site: a run of
consecutive paragraphs from a random paragraph of a random real document (documents drawn in proportion to
their paragraphs, so every paragraph is about as likely a start), of about lognormal(median 150, sigma 1)
words, given a date line (half of them) and site chrome lines (a quarter: share banners, navigation, cookie
notices). ``--copies`` (3 %) are exact copies of an earlier document under another id and URL. Ids are
random UUIDs, as WARC record ids are (so ``why`` cannot prune row groups by id ranges). ``curate run``
(``--workers``, all CPUs) runs ``jsonl_read``, ``gopher_quality`` (its defaults; it removes about half:
forum lines and tokenised WikiText where under 80 % of words have a letter, excerpts under 50 words, the
German pages with too few English stop words) and ``exact_dedup`` (the copies), so the output has ``kept/`` and
``removed/<stage>/`` parts as a crawl's does. The corpus and the run are built once and reused (a new
``--docs``/``--seed``/``--files`` rebuilds them).

**grep.** Three patterns: a rare phrase (five words from the middle of a paragraph of the corpus's middle
document, so in it and the few dozen others that drew that real paragraph), a common word (``the``, in
nearly every document) and an RE2 regex (``[Cc]olou?r``, as ``grep -E``). Each is counted by ``curate audit
grep OUT PATTERN --count --json`` with ``--workers 1`` (this process) and ``--workers W`` (child
processes), and by ripgrep if installed, else ``grep -c -F`` (``-E`` for the regex; ``LC_ALL=C``), over the
same documents exported from the same run's committed parts (kept and removed) as plain files, one
document per line (newlines in the text replaced by spaces), in W files of about equal size: one grep
process over all of them, and one per file at once. Each figure is the best of ``--repeat`` (3) after ``--warmup``
(1) untimed run, so both read from the page cache. MB/s = UTF-8 MB of text / wall seconds: for curate both the scan
it reports (from listing the parts to merged counts) and its whole process (interpreter, imports, the
ledger), for grep its whole process. The ratio is grep's wall over curate's whole process's, at one process
each and at W each (> 1: curate faster). Both must count the same documents (the bench fails otherwise).

**summary and why.** Wall seconds of ``curate audit summary OUT`` (default examples: it reads the removed
parts' reason/score/threshold columns and a few texts) and ``curate audit why OUT ID`` for a kept and a
removed document (a filter on id/url pushed into the Parquet scan of every committed part), each a whole
process, best of ``--repeat``. Usage::

    python bench/audit.py                  # 1,000,000 documents (build: minutes on 2 cores, once)
    python bench/audit.py --docs 200000
    python bench/audit.py --smoke          # 5,000 documents: every code path in seconds
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
from texts import curate_cmd

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "bench" / "_work" / "audit"
#: Bump when the corpus generator or the pipeline changes, so a cached corpus and run are rebuilt.
VERSION = 1
MB = 1e6
PIPELINE = """name: bench_audit
stages:
  - jsonl_read: {}
  - gopher_quality: {}
  - exact_dedup: {}
"""
#: Site chrome that excerpts of crawled pages carry around their text.
CHROME = [
    "Skip to main content", "Home | News | Sport | Business | Contact", "Share this article",
    "Share on Facebook Share on Twitter Share via Email", "Subscribe to our newsletter",
    "We use cookies to improve your experience on our site. By continuing to browse you agree to our use of cookies.",
    "Advertisement", "Related articles", "Read more", "Comments are closed.", "Leave a comment",
    "All rights reserved.", "Privacy Policy | Terms of Use | Sitemap", "Back to top", "Print this page",
]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
HOSTS = {"html": "news.example.com", "dclm": "cc.example.net", "wiki": "en.wikipedia.org", "wikitext":
         "en.wikipedia.org", "lee": "www.abc.net.au", "state_union": "www.presidency.ucsb.edu", "ccnet":
         "cc.example.org", "cs336": "plato.stanford.edu", "webtext": "forum.example.org", "reddit": "www.reddit.com"}


# ---- the corpus and the run ------------------------------------------------------------------------------

def sources() -> list[tuple[str, list[str]]]:
    """(key, paragraphs) of every distinct real document, white space inside a paragraph made single spaces."""
    from texts import distinct_documents

    out = []
    for key, text in distinct_documents():
        paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n|\n", text)]
        paragraphs = [p for p in paragraphs if p]
        if paragraphs:
            out.append((key, paragraphs))
    return out


def excerpt(docs: list[tuple[str, list[str]]], cumulative: list[int], rng: random.Random) -> tuple[str, str]:
    """(source key, text) of one generated document: consecutive real paragraphs, maybe a date and chrome."""
    d = _bisect(cumulative, rng.randrange(cumulative[-1]))
    key, paragraphs = docs[d]
    target = min(3000, max(5, int(rng.lognormvariate(math.log(150), 1.0))))
    start = rng.randrange(len(paragraphs))
    picked, words = [], 0
    for p in paragraphs[start:]:
        picked.append(p)
        words += p.count(" ") + 1
        if words >= target:
            break
    if rng.random() < 0.5:
        y, m, day = rng.randrange(2008, 2027), rng.randrange(12), rng.randrange(1, 29)
        picked.insert(0, rng.choice((f"Posted on {MONTHS[m]} {day}, {y}", f"{y}-{m + 1:02d}-{day:02d}",
                                     f"Updated: {day} {MONTHS[m]} {y}")))
    if rng.random() < 0.25:
        picked.append("\n".join(rng.sample(CHROME, rng.randrange(1, 4))))
    return key, "\n\n".join(picked)


def _bisect(cumulative: list[int], x: int) -> int:
    import bisect

    return bisect.bisect_right(cumulative, x)


def build_corpus(folder: Path, docs: int, files: int, seed: int, copies: float) -> dict:
    """JSONL files of ``docs`` generated documents (cached by ``corpus.json``); returns that manifest."""
    info = folder / "corpus.json"
    want = {"version": VERSION, "docs": docs, "files": files, "seed": seed, "copies": copies}
    if info.is_file() and {k: v for k, v in json.loads(info.read_text()).items() if k in want} == want:
        return json.loads(info.read_text())
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    t0 = time.perf_counter()
    real = sources()
    cumulative, total = [], 0
    for _, paragraphs in real:
        total += len(paragraphs)
        cumulative.append(total)
    rng = random.Random(seed)
    outs = [open(folder / f"part-{k:05d}.jsonl", "wb") for k in range(files)]  # noqa: SIM115 - closed below
    recent: list[str] = []  # texts an exact copy is drawn from
    size = 0
    try:
        for i in range(docs):
            if recent and rng.random() < copies:
                key, text = "copy", rng.choice(recent)
            else:
                key, text = excerpt(real, cumulative, rng)
                recent.append(text) if len(recent) < 10_000 else recent.__setitem__(rng.randrange(10_000), text)
            id_ = f"urn:uuid:{uuid.UUID(int=rng.getrandbits(128), version=4)}"
            host = HOSTS.get(key.split("/", 1)[0], "www.example.com")
            url = f"https://{host}/{key.split('/')[-1][:40]}/{i}"
            outs[i * files // docs].write(orjson.dumps({"id": id_, "url": url, "text": text}) + b"\n")
            size += len(text.encode())
    finally:
        for out in outs:
            out.close()
    manifest = {**want, "text_bytes": size, "real_documents": len(real),
                "real_paragraphs": total, "seconds": round(time.perf_counter() - t0, 1)}
    info.write_text(json.dumps(manifest))
    return manifest


def build_run(corpus: Path, out: Path, manifest: dict, workers: int) -> dict:
    """``curate run`` over the corpus (reused while the corpus and pipeline are the same); returns its info."""
    info = out.parent / "run-info.json"
    want = {"corpus": manifest, "pipeline": PIPELINE}
    if info.is_file() and (out / "run.json").is_file() and json.loads(info.read_text())["want"] == want:
        return json.loads(info.read_text())
    shutil.rmtree(out, ignore_errors=True)
    pipeline = out.parent / "pipeline.yaml"
    pipeline.write_text(PIPELINE)
    log = out.parent / "curate-run.log"
    cmd = [*curate_cmd(), "run", str(pipeline), "-i", *map(str, sorted(corpus.glob("part-*.jsonl"))), "-o", str(out),
           "--workers", str(workers), "--no-progress"]
    t0 = time.perf_counter()
    with open(log, "wb") as fh:
        rc = subprocess.run(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            check=False).returncode
    wall = time.perf_counter() - t0
    if rc != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise SystemExit(f"curate run exited with {rc} after {wall:.1f} s; log {log}:\n{tail}")
    stats = json.loads((out / "stats" / "stats.json").read_text())
    result = {"want": want, "seconds": round(wall, 1), "totals": stats["totals"],
              "stages": {name: s["reasons"] for name, s in stats["stages"].items()}}
    info.write_text(json.dumps(result))
    return result


def export_plain(out: Path, folder: Path, files: int) -> tuple[list[Path], int, int]:
    """The run's committed documents (kept and removed parts, through RunOutput) as ``files`` plain files of
    one document per line; returns the files, documents and text bytes (cached next to the run)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from curate.audit.run import RunOutput

    info = folder / "export.json"
    stamp = (out / "run.json").stat().st_mtime
    if info.is_file() and json.loads(info.read_text())["run_mtime"] == stamp and \
            json.loads(info.read_text())["files"] == files:
        e = json.loads(info.read_text())
        return [Path(p) for p in e["paths"]], e["documents"], e["bytes"]
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    output = RunOutput(str(out))
    parts = output.paths("kept") + output.paths("removed")
    paths = [folder / f"docs-{k:02d}.txt" for k in range(files)]
    handles = [open(p, "wb") for p in paths]  # noqa: SIM115 - closed below
    loads = [0] * files
    documents = size = 0
    try:
        for part in parts:
            k = loads.index(min(loads))
            parquet = pq.ParquetFile(part)
            for batch in parquet.iter_batches(columns=["text"], batch_size=8192):
                text = pc.fill_null(batch.column(0), "")
                documents += len(text)
                size += pc.sum(pc.binary_length(text)).as_py() or 0
                lines = pc.replace_substring(text, "\n", " ").to_pylist()
                data = ("\n".join(lines) + "\n").encode()
                handles[k].write(data)
                loads[k] += len(data)
    finally:
        for h in handles:
            h.close()
    info.write_text(json.dumps({"run_mtime": stamp, "files": files, "paths": [str(p) for p in paths],
                                "documents": documents, "bytes": size}))
    return paths, documents, size


def rare_phrase(corpus: Path) -> str:
    """Five words (ASCII letters) from the middle of a paragraph of 30+ words of the document in the middle
    of the first corpus file: in that document and the few others that drew the same real paragraph."""
    lines = (corpus / "part-00000.jsonl").read_bytes().splitlines()
    for line in lines[len(lines) // 2:]:
        for paragraph in orjson.loads(line)["text"].split("\n\n"):
            words = paragraph.split(" ")
            middle = len(words) // 2
            if len(words) >= 30 and all(w.isascii() and w.isalpha() for w in words[middle:middle + 5]):
                return " ".join(words[middle:middle + 5])
    raise SystemExit(f"no paragraph of 30+ words in the second half of {corpus / 'part-00000.jsonl'}")


# ---- measurements --------------------------------------------------------------------------------------

def timed(cmd: list[str], env: dict | None = None) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, check=False)
    return time.perf_counter() - t0, done


def best(cmd: list[str], repeat: int, warmup: int, ok: tuple[int, ...] = (0, 1)
         ) -> tuple[float, subprocess.CompletedProcess]:
    """Best wall seconds of ``repeat`` runs after ``warmup`` untimed ones, and that run's result."""
    runs = []
    for _ in range(warmup + repeat):
        wall, done = timed(cmd)
        if done.returncode not in ok:
            raise SystemExit(f"{' '.join(cmd)} exited with {done.returncode}:\n{done.stdout[-2000:]}"
                             f"{done.stderr[-3000:]}")
        runs.append((wall, done))
    return min(runs[warmup:], key=lambda r: r[0])


def curate_grep(out: Path, pattern: str, regex: bool, workers: int, repeat: int, warmup: int
                ) -> tuple[int, float, float, str]:
    """(documents matched, scan seconds it reports, process seconds, executor) of ``curate audit grep``."""
    cmd = [*curate_cmd(), "audit", "grep", str(out), pattern, "--count", "--json", "--workers", str(workers)]
    wall, done = best(cmd + (["--regex"] if regex else []), repeat, warmup)
    found = json.loads(done.stdout)
    return found["matched"], found["seconds"], wall, found["executor"]


def system_grep(paths: list[Path], pattern: str, regex: bool, parallel: bool, repeat: int, warmup: int
                ) -> tuple[int, float, str]:
    """(documents matched, process wall seconds, tool) of ripgrep if installed, else GNU grep, counting lines."""
    rg = shutil.which("rg")
    if rg:
        tool = [rg, "--count", "--no-filename", "--no-config", "-j", "1"] + ([] if regex else ["-F"]) + ["-e", pattern]
        name = "rg --count" + ("" if regex else " -F")
    else:
        tool = ["grep", "-c", "-h", "-E" if regex else "-F", "-e", pattern]
        name = "GNU grep -c " + ("-E" if regex else "-F")
    env = {**os.environ, "LC_ALL": "C"}
    if parallel:
        # one process per file at once; a shell waits for all of them, so the wall is the slowest one's
        script = " & ".join(" ".join(map(_quote, [*tool, str(p)])) for p in paths) + " & wait"
        cmd = ["bash", "-c", script]
    else:
        cmd = [*tool, *map(str, paths)]
    runs = []
    for _ in range(warmup + repeat):
        wall, done = timed(cmd, env)
        if done.returncode not in (0, 1):
            raise SystemExit(f"{name} exited with {done.returncode}: {done.stderr[-2000:]}")
        runs.append((wall, sum(int(n) for n in done.stdout.split())))
    wall, count = min(runs[warmup:])
    return count, wall, f"{name}, {len(paths) if parallel else 1} process{'es' if parallel and len(paths) > 1 else ''}"


def _quote(s: str) -> str:
    import shlex

    return shlex.quote(s)


def latency(args: list[str], repeat: int, warmup: int) -> float:
    wall, _ = best([*curate_cmd(), "audit", *args], repeat, warmup, ok=(0,))
    return wall


def pick_ids(out: Path) -> tuple[str, str]:
    """A kept id and a removed id (gopher_quality's), from the middle of the last part of each."""
    import pyarrow.parquet as pq

    from curate.audit.run import RunOutput

    output = RunOutput(str(out))
    kept = pq.read_table(output.paths("kept")[-1], columns=["id"])["id"]
    removed = pq.read_table(output.paths("removed", "gopher_quality")[-1], columns=["id"])["id"]
    return kept[len(kept) // 2].as_py(), removed[len(removed) // 2].as_py()


# ---- main ----------------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=1_000_000, help="documents in the run")
    ap.add_argument("--files", type=int, default=None, help="JSONL input files (default: 1 per 62,500 docs, >= 2)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="curate run/grep workers, grep files")
    ap.add_argument("--copies", type=float, default=0.03, help="share of documents that are exact copies")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3, help="timed runs of each measurement (best shown)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs before them (page cache, imports)")
    ap.add_argument("--smoke", action="store_true", help="5,000 documents: every code path in seconds")
    args = ap.parse_args()
    from texts import shared_data

    shared_data()  # fails without the shared data
    if args.smoke:
        args.docs, args.repeat, args.warmup = 5_000, 1, 0
    files = args.files or max(2, args.docs // 62_500)
    work = WORK / ("smoke" if args.smoke else f"docs-{args.docs}")
    t_start = time.perf_counter()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores at the start")

    manifest = build_corpus(work / "corpus", args.docs, files, args.seed, args.copies)
    print(f"corpus: {manifest['docs']} documents, {manifest['text_bytes'] / MB:.1f} MB of text in {files} JSONL "
          f"files, excerpts of {manifest['real_documents']} real documents ({manifest['real_paragraphs']} "
          f"paragraphs); generated in {manifest['seconds']:.1f} s")
    # the smoke run uses one worker: the local executor, no Ray start-up
    run_workers = 1 if args.smoke else args.workers
    run = build_run(work / "corpus", work / "out", manifest, run_workers)
    totals = run["totals"]
    removed = ", ".join(f"{stage} {sum(r.values())}" for stage, r in run["stages"].items() if r)
    print(f"run: kept {totals.get('kept', 0)}, removed {totals.get('removed', 0)} ({removed}), errors "
          f"{totals.get('errors', 0)}; curate run --workers {run_workers}: {run['seconds']:.1f} s (built once, reused)")

    out = work / "out"
    paths, documents, size = export_plain(out, work / "plain", args.workers)
    print(f"plain export: {documents} documents, {size / MB:.1f} MB of text in {len(paths)} files (one document "
          "per line)")
    if documents != manifest["docs"] - totals.get("errors", 0):
        raise SystemExit(f"the run's committed parts hold {documents} documents, the corpus {manifest['docs']}")

    failures = 0
    patterns = [("rare", rare_phrase(work / "corpus"), False), ("common", "the", False), ("regex", "[Cc]olou?r", True)]
    for label, pattern, regex in patterns:
        results = {}
        for w in sorted({1, args.workers}):
            results[w] = curate_grep(out, pattern, regex, w, args.repeat, args.warmup)
        print(f"grep {label} {pattern!r}:")
        for w, (n, scan, wall, executor) in results.items():
            print(f"  curate audit grep --workers {w}: {n} documents, scan {size / MB / scan:.1f} MB/s ({scan:.2f} s, "
                  f"{executor}), whole process {size / MB / wall:.1f} MB/s ({wall:.2f} s)")
        counts = {}
        for parallel in (False, True):
            n, wall, tool = system_grep(paths, pattern, regex, parallel, args.repeat, args.warmup)
            counts[parallel] = (n, wall)
            print(f"  {tool}: {n} documents, {size / MB / wall:.1f} MB/s ({wall:.2f} s)")
        one, many = results[1], results[args.workers]
        print(f"ratio curate/grep ({label}): 1 process {counts[False][1] / one[2]:.3g}x, {args.workers} processes "
              f"{counts[True][1] / many[2]:.3g}x (whole processes' MB/s; > 1: curate faster)")
        same = {r[0] for r in results.values()} | {c[0] for c in counts.values()}
        if len(same) == 1:
            print(f"same documents ({label}): OK, {one[0]} of {documents}")
        else:
            failures += 1
            print(f"same documents ({label}): MISMATCH, curate {[r[0] for r in results.values()]}, grep "
                  f"{[c[0] for c in counts.values()]}")

    kept_id, removed_id = pick_ids(out)
    summary = latency(["summary", str(out)], args.repeat, args.warmup)
    quick = latency(["summary", str(out), "--examples", "0"], args.repeat, args.warmup)
    why_kept = latency(["why", str(out), kept_id], args.repeat, args.warmup)
    why_removed = latency(["why", str(out), removed_id], args.repeat, args.warmup)
    print(f"summary: {summary:.2f} s (--examples 0: {quick:.2f} s) on {documents} documents")
    print(f"why (kept {kept_id}): {why_kept:.2f} s; why (removed by gopher_quality {removed_id}): {why_removed:.2f} s")
    print(f"total {time.perf_counter() - t_start:.0f} s (load average {os.getloadavg()[0]:.1f} at the end)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
